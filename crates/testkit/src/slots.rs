//! How many store clusters run at once on this machine, across test processes.
//!
//! `cargo test` runs the tests of one binary on threads of one process, `cargo nextest` runs
//! each test in its own process; either way a 2-core CI machine running several 3-member
//! clusters side by side turns timing-sensitive tests (elections, failover) into flaky ones.
//! So a cluster first takes one of `KL_TEST_MAX_CLUSTERS` (default 1) slots: a lock file
//! created exclusively in the temp dir, holding the owner's pid. A slot whose owner died without
//! cleaning up (SIGKILL of the test process) is taken over.

use std::{
    fs::OpenOptions,
    io::{ErrorKind, Write},
    path::PathBuf,
    time::Duration,
};

use anyhow::Context;

/// Longest wait for a slot; only a stuck test on the same machine makes it run out.
const SLOT_WAIT: Duration = Duration::from_secs(30 * 60);

/// A held slot; dropping it frees the slot.
#[derive(Debug)]
pub struct ClusterSlot {
    path: PathBuf,
}

impl Drop for ClusterSlot {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn max_clusters() -> usize {
    std::env::var("KL_TEST_MAX_CLUSTERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n: &usize| *n > 0)
        .unwrap_or(1)
}

fn slot_dir() -> PathBuf {
    std::env::temp_dir().join("kl-testkit-slots")
}

/// Whether the process that wrote a slot file is gone.
fn stale(path: &std::path::Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    match text.trim().parse::<u32>() {
        Ok(pid) => !PathBuf::from(format!("/proc/{pid}")).exists(),
        // Written but not yet filled in by its owner: not stale.
        Err(_) => false,
    }
}

/// Waits for a free slot (polling) and takes it.
pub async fn acquire() -> anyhow::Result<ClusterSlot> {
    let dir = slot_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let n = max_clusters();
    let deadline = tokio::time::Instant::now() + SLOT_WAIT;
    let mut announced = false;
    loop {
        for i in 0..n {
            let path = dir.join(format!("slot-{i}.lock"));
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    writeln!(f, "{}", std::process::id())?;
                    return Ok(ClusterSlot { path });
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    if stale(&path) {
                        let _ = std::fs::remove_file(&path);
                    }
                }
                Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
            }
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no free test-cluster slot in {} after {SLOT_WAIT:?} (KL_TEST_MAX_CLUSTERS={n})",
            dir.display()
        );
        if !announced {
            eprintln!(
                "testkit: waiting for one of {n} test-cluster slot(s) ({})",
                dir.display()
            );
            announced = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

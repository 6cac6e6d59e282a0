//! Running a command-line tool (etcdctl, kubectl-lite) from a test: bounded in time, killed
//! when it overruns, both output streams captured.

use std::{process::Stdio, time::Duration};

use anyhow::Context;
use tokio::{io::AsyncWriteExt, process::Command};

/// What a command run printed and how it ended.
#[derive(Clone, Debug)]
pub struct CmdOutput {
    pub stdout: String,
    pub stderr: String,
    /// The exit code (`None` when killed by a signal).
    pub code: Option<i32>,
}

impl CmdOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The output, or an error carrying both streams when the exit code was not 0.
    pub fn ok(self) -> anyhow::Result<Self> {
        anyhow::ensure!(
            self.success(),
            "the command exited with {:?}\nstdout: {}\nstderr: {}",
            self.code,
            self.stdout,
            self.stderr
        );
        Ok(self)
    }
}

/// Runs `cmd` (stdout and stderr piped, killed on drop), writing `stdin` to it first (then
/// closing it), and waits at most `timeout`; `what` names it in errors.
pub async fn run_bounded(
    mut cmd: Command,
    stdin: Option<&str>,
    timeout: Duration,
    what: &str,
) -> anyhow::Result<CmdOutput> {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .kill_on_drop(true);
    let mut child = cmd.spawn().with_context(|| format!("starting {what}"))?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().context("stdin")?;
        pipe.write_all(input.as_bytes()).await?;
        drop(pipe);
    }
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .with_context(|| format!("{what} did not finish in {timeout:?}"))??;
    Ok(CmdOutput {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code(),
    })
}

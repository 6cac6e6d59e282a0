//! One child process of a test: stdout and stderr appended to a log file, signals by name, and
//! SIGKILL when dropped so that no test leaves a process behind.

use std::{
    fs::OpenOptions,
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context;

/// A running (or exited, not yet dropped) child process.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    /// Where its stdout and stderr go (appended, so a restart keeps the earlier run's lines).
    pub log_path: PathBuf,
}

impl Proc {
    /// Starts `bin args...`, appending its output to `log_path` after a header line naming
    /// the command.
    pub fn spawn(bin: &Path, args: &[String], log_path: &Path) -> anyhow::Result<Self> {
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        writeln!(
            log,
            "===== testkit: starting {} {}",
            bin.display(),
            args.join(" ")
        )?;
        let err = log.try_clone()?;
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Proc {
            child,
            log_path: log_path.to_path_buf(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has not exited yet (a stopped process counts as running).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends a signal by name (`TERM`, `STOP`, `CONT`, `KILL`, ...).
    pub fn signal(&mut self, sig: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args(["-s", sig, &self.pid().to_string()])
            .status()
            .context("running kill(1)")?;
        anyhow::ensure!(status.success(), "kill -s {sig} {} failed", self.pid());
        Ok(())
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Peak resident set size (VmHWM from /proc/PID/status) in KiB, while the process lives.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        peak_rss_kib(self.pid())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// VmHWM of a process in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The last `lines` lines of a file (empty if it cannot be read).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The state letter of /proc/PID/stat (R, S, T, Z, ...).
    fn state(pid: u32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(") ")?.1.chars().next()
    }

    #[test]
    fn signals_logs_and_kill_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("p.log");
        let mut p = Proc::spawn(
            Path::new("/bin/sh"),
            &["-c".into(), "echo hello; exec sleep 30".into()],
            &log,
        )
        .unwrap();
        let pid = p.pid();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !tail(&log, 5).contains("hello") {
            assert!(Instant::now() < deadline, "no output in {}", log.display());
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(tail(&log, 5).starts_with("===== testkit: starting /bin/sh"));
        assert!(p.peak_rss_kib().is_some_and(|k| k > 0));

        p.signal("STOP").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while state(pid) != Some('T') {
            assert!(Instant::now() < deadline, "not stopped: {:?}", state(pid));
            std::thread::sleep(Duration::from_millis(20));
        }
        p.signal("CONT").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while state(pid) == Some('T') {
            assert!(Instant::now() < deadline, "not continued");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(p.is_running());
        drop(p);
        assert!(state(pid).is_none(), "killed and reaped on drop");
    }

    #[test]
    fn sigterm_and_wait_exit() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Proc::spawn(
            Path::new("/bin/sleep"),
            &["30".into()],
            &dir.path().join("s.log"),
        )
        .unwrap();
        p.signal("TERM").unwrap();
        let st = p.wait_exit(Duration::from_secs(10)).expect("exited");
        assert!(!st.success());
        assert!(!p.is_running());
    }
}

//! The per-container shim (`kubelet-lite shim <spec.json>`), like containerd's shim or conmon:
//! the process that owns one container attempt from its start to its recorded exit, so that the
//! container outlives a kubelet restart.
//!
//! Interface: one argument, the path of the attempt's `N.spec.json` (written by the kubelet:
//! argv, env, cwd, log path and limits, where to write the state and exit records). One line
//! on stdout answers: `{"started":{"pid":1234}}` or `{"failed":{"message":"exec: ..."}}`.
//! Everything after that goes through files, so the kubelet may die at any point.
//!
//! What it does, in order:
//! 1. catches and drops SIGTERM, SIGINT and SIGHUP (it must outlive its container to record the
//!    exit; the kubelet signals the container's process group, never the shim). Caught, not
//!    blocked or ignored: a blocked mask and ignored dispositions are inherited through `exec`,
//!    while handlers are reset to the default, so the container gets the signals normally;
//! 2. reads its `ShimSpec`, opens the log file, checks the working directory and resolves
//!    the command against the container's own `PATH`, so start errors carry upstream's
//!    messages (`exec: "nosuch": executable file not found in $PATH`, ...);
//! 3. starts the container in its own process group, stdin `/dev/null`, stdout and stderr
//!    piped, writes `N.json` (`AttemptState`) and tells the kubelet one `Handshake` line on
//!    its stdout (a start error writes `N.exit.json` with exit code 128 instead);
//! 4. copies both pipes into the CRI log (`LogWriter`);
//! 5. when the container exits, kills what is left of its process group (as the end of a
//!    container's pid 1 ends the container), drains the pipes (bounded), reaps the container's
//!    orphans (the shim is a child subreaper), and writes `N.exit.json` (`ExitRecord`)
//!    atomically: exit code, or 128 + signal.
//!
//! Nothing here may panic on bad input: every failure ends up in the handshake or the exit
//! record.
use std::{
    io::{self, Read, Write},
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    sync::{mpsc, Arc},
    time::{Duration, SystemTime},
};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use parking_lot::Mutex;

use super::logs::{LineSplitter, LogWriter};
use super::state::{
    errno_text, format_time, proc_stat, read_json, write_json, AttemptState, ExitRecord, Handshake,
    ShimSpec,
};

/// Exit code of a container that could not start (containerd's).
pub const START_ERROR_EXIT_CODE: i32 = 128;

/// How long the pipes may stay open after the container's process group was killed (a process
/// that left the group with `setsid` can hold them forever).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The shim's entry point: `args` are the arguments after `shim`, i.e. the path of the
/// attempt's `N.spec.json`. Exits 0 once the exit is recorded, 1 when the container could not
/// start, 2 when the arguments or the spec are unusable.
pub fn main(args: Vec<String>) -> ExitCode {
    // Kept for the shim's whole life: the handlers stay installed while it runs.
    let _signals = ignore_signals();

    let [spec_path] = args.as_slice() else {
        handshake(&Handshake::Failed {
            message: format!("usage: shim <spec.json>, got {args:?}"),
        });
        return ExitCode::from(2);
    };
    let spec: ShimSpec = match read_json(Path::new(spec_path)) {
        Ok(Some(spec)) => spec,
        Ok(None) => {
            handshake(&Handshake::Failed {
                message: format!("shim spec {spec_path} does not exist"),
            });
            return ExitCode::from(2);
        }
        Err(e) => {
            handshake(&Handshake::Failed {
                message: format!("reading shim spec {spec_path}: {e}"),
            });
            return ExitCode::from(2);
        }
    };
    run(&spec)
}

/// Installs handlers that swallow SIGTERM, SIGINT and SIGHUP (through tokio's signal driver,
/// which needs no `unsafe` here). The returned runtime and streams keep them installed.
fn ignore_signals() -> Option<(tokio::runtime::Runtime, Vec<tokio::signal::unix::Signal>)> {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let streams = {
        let _in_runtime = rt.enter();
        [
            SignalKind::terminate(),
            SignalKind::interrupt(),
            SignalKind::hangup(),
        ]
        .into_iter()
        .filter_map(|k| signal(k).ok())
        .collect()
    };
    Some((rt, streams))
}

/// Prints the one handshake line. Errors are ignored: a kubelet that went away reads the state
/// files instead.
fn handshake(h: &Handshake) {
    if let Ok(line) = serde_json::to_string(h) {
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

fn start_error(spec: &ShimSpec, message: String) -> ExitCode {
    let rec = ExitRecord {
        exit_code: START_ERROR_EXIT_CODE,
        signal: None,
        reason: "StartError".into(),
        message: message.clone(),
        started_at: None,
        finished_at: format_time(SystemTime::now()),
    };
    let _ = write_json(&spec.exit_path, &rec);
    handshake(&Handshake::Failed { message });
    ExitCode::from(1)
}

fn run(spec: &ShimSpec) -> ExitCode {
    let writer = match LogWriter::open(&spec.log_path, spec.log_max_size, spec.log_max_files) {
        Ok(w) => Arc::new(Mutex::new(w)),
        Err(e) => {
            return start_error(
                spec,
                format!("opening log file {}: {e}", spec.log_path.display()),
            )
        }
    };
    let Some(argv0) = spec.argv.first() else {
        return start_error(spec, "no command specified".into());
    };
    if let Err(e) = check_cwd(&spec.cwd) {
        return start_error(
            spec,
            format!(
                "chdir to cwd ({:?}) set in config.json failed: {}",
                spec.cwd.display().to_string(),
                errno_text(&e)
            ),
        );
    }
    let path_var = spec
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str());
    let exe = match resolve(argv0, path_var, &spec.cwd) {
        Ok(exe) => exe,
        Err(message) => return start_error(spec, message),
    };

    // Orphans of the container (a backgrounded child whose parent exited) are re-parented to
    // the shim rather than to init, so the shim reaps them instead of leaving zombies.
    let _ = nix::sys::prctl::set_child_subreaper(true);
    let mut cmd = Command::new(&exe);
    cmd.arg0(argv0)
        .args(&spec.argv[1..])
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.cwd)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return start_error(spec, format!("exec: {argv0:?}: {}", errno_text(&e))),
    };
    let started_at = SystemTime::now();
    let pid = child.id();

    let me = std::process::id();
    let state = AttemptState {
        pid,
        pid_start_time: proc_stat(pid).map(|(s, _)| s).unwrap_or_default(),
        shim_pid: me,
        shim_start_time: proc_stat(me).map(|(s, _)| s).unwrap_or_default(),
        started_at: format_time(started_at),
    };
    if let Err(e) = write_json(&spec.state_path, &state) {
        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        let _ = child.wait();
        return start_error(spec, format!("writing {}: {e}", spec.state_path.display()));
    }
    handshake(&Handshake::Started { pid });

    let (done_tx, done_rx) = mpsc::channel();
    if let Some(out) = child.stdout.take() {
        copy_stream(out, "stdout", writer.clone(), done_tx.clone());
    }
    if let Some(err) = child.stderr.take() {
        copy_stream(err, "stderr", writer.clone(), done_tx.clone());
    }
    drop(done_tx);

    // Not `child.wait()`: reaping every child here also reaps the container's orphans while it
    // runs.
    let status = wait_container(pid);
    let finished_at = SystemTime::now();
    // The container is over: so is anything it left running in its group.
    let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
    let deadline = std::time::Instant::now() + DRAIN_TIMEOUT;
    loop {
        reap_orphans();
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match done_rx.recv_timeout(left.min(Duration::from_millis(100))) {
            Ok(()) => continue,
            Err(mpsc::RecvTimeoutError::Timeout) if !left.is_zero() => continue,
            // Both copiers are done (every sender dropped), or the drain timed out.
            Err(_) => break,
        }
    }
    reap_orphans();

    let (exit_code, signal) = match &status {
        Ok(exit) => *exit,
        Err(_) => (255, None),
    };
    let rec = ExitRecord {
        exit_code,
        signal,
        reason: if exit_code == 0 { "Completed" } else { "Error" }.into(),
        message: match &status {
            Err(e) => format!("waiting for the container: {e}"),
            Ok(_) => String::new(),
        },
        started_at: Some(format_time(started_at)),
        finished_at: format_time(finished_at),
    };
    match write_json(&spec.exit_path, &rec) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(3),
    }
}

/// Waits for the container (`pid`) to end, reaping any other child (orphans) meanwhile; its
/// exit code, or 128 + the signal that killed it, and that signal.
fn wait_container(pid: u32) -> nix::Result<(i32, Option<i32>)> {
    use nix::sys::wait::{waitpid, WaitStatus};
    let pid = Pid::from_raw(pid as i32);
    // Ends when the container does: every round reaps one child, and the container is one.
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(p, code)) if p == pid => return Ok((code, None)),
            Ok(WaitStatus::Signaled(p, sig, _)) if p == pid => {
                return Ok((128 + sig as i32, Some(sig as i32)))
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Reaps every exited child without waiting (the container's orphans, see the subreaper).
fn reap_orphans() {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    // Bounded: each round reaps one exited child; a live or absent one ends it.
    for _ in 0..10_000 {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Copies one of the container's pipes into the log on a thread; signals `done` at EOF (by
/// dropping its sender after a final message).
fn copy_stream(
    mut pipe: impl Read + Send + 'static,
    stream: &'static str,
    writer: Arc<Mutex<LogWriter>>,
    done: mpsc::Sender<()>,
) {
    std::thread::spawn(move || {
        let mut splitter = LineSplitter::default();
        let mut buf = vec![0u8; 32 * 1024];
        let mut emit = |content: &[u8], partial: bool| -> io::Result<()> {
            // A full disk loses log lines but must not stop the copy: the container would block
            // on a full pipe.
            let _ = writer.lock().write_record(stream, partial, content);
            Ok(())
        };
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let _ = splitter.feed(&buf[..n], &mut emit);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let _ = splitter.finish(&mut emit);
        let _ = done.send(());
    });
}

/// Checks the working directory as runc's `chdir` would fail on it.
fn check_cwd(cwd: &Path) -> io::Result<()> {
    let meta = std::fs::metadata(cwd)?;
    if !meta.is_dir() {
        return Err(io::Error::from_raw_os_error(
            nix::errno::Errno::ENOTDIR as i32,
        ));
    }
    Ok(())
}

/// Resolves the command as Go's `exec.LookPath` does inside the container: a name with a `/`
/// is a path (relative to the working directory), anything else is searched in `PATH`. The
/// error is the message of the start error.
pub(crate) fn resolve(argv0: &str, path_var: Option<&str>, cwd: &Path) -> Result<PathBuf, String> {
    if argv0.contains('/') {
        let p = cwd.join(argv0);
        return match executable(&p) {
            Ok(()) => Ok(p),
            Err(Lookup::Stat(e)) => {
                Err(format!("exec: {argv0:?}: stat {argv0}: {}", errno_text(&e)))
            }
            Err(Lookup::Other(why)) => Err(format!("exec: {argv0:?}: {why}")),
        };
    }
    if !argv0.is_empty() {
        for dir in path_var.unwrap_or_default().split(':') {
            let dir = if dir.is_empty() { "." } else { dir };
            let p = cwd.join(dir).join(argv0);
            if executable(&p).is_ok() {
                return Ok(p);
            }
        }
    }
    Err(format!(
        "exec: {argv0:?}: executable file not found in $PATH"
    ))
}

enum Lookup {
    Stat(io::Error),
    Other(&'static str),
}

fn executable(p: &Path) -> Result<(), Lookup> {
    let meta = std::fs::metadata(p).map_err(Lookup::Stat)?;
    if meta.is_dir() {
        return Err(Lookup::Other("is a directory"));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(Lookup::Other("permission denied"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_like_go_lookpath() {
        let cwd = Path::new("/");
        assert_eq!(
            resolve("sh", Some("/nonexistent:/bin:/usr/bin"), cwd).unwrap(),
            PathBuf::from("/bin/sh")
        );
        assert_eq!(
            resolve("nosuch", Some("/bin:/usr/bin"), cwd).unwrap_err(),
            r#"exec: "nosuch": executable file not found in $PATH"#
        );
        assert_eq!(
            resolve("sh", None, cwd).unwrap_err(),
            r#"exec: "sh": executable file not found in $PATH"#
        );
        assert_eq!(
            resolve("/no/such", None, cwd).unwrap_err(),
            r#"exec: "/no/such": stat /no/such: no such file or directory"#
        );
        assert_eq!(
            resolve("/tmp", None, cwd).unwrap_err(),
            r#"exec: "/tmp": is a directory"#
        );
        assert_eq!(
            resolve("/etc/passwd", None, cwd).unwrap_err(),
            r#"exec: "/etc/passwd": permission denied"#
        );
    }

    #[test]
    fn cwd_errors_read_like_runc() {
        let e = check_cwd(Path::new("/nope")).unwrap_err();
        assert_eq!(errno_text(&e), "no such file or directory");
        let e = check_cwd(Path::new("/etc/passwd")).unwrap_err();
        assert_eq!(errno_text(&e), "not a directory");
    }
}

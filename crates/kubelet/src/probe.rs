//! Container probes: `exec`, `tcpSocket` and `httpGet`, one at a time ([`probe_once`]) and as
//! the kubelet's per-container probe workers ([`spawn_prober`]).
//!
//! Pods share the host's network, so a probe dials the given host address (the pod IP, which
//! is the node IP). Failure messages use upstream's wording, so events and `kubectl describe`
//! read the same: `dial tcp 127.0.0.1:8080: connect: connection refused`,
//! `HTTP probe failed with statuscode: 500`, the exec command's output.
//!
//! Limits, documented rather than hidden:
//! * `httpGet` speaks plain HTTP/1.1 only; scheme `HTTPS` fails with `unsupported scheme`
//!   (upstream probes HTTPS without verifying the certificate, which kube-lite's one TLS helper
//!   deliberately cannot do). Redirects are not followed: any 2xx or 3xx status is a success.
//! * `exec` runs the command on the host with the container's environment and working
//!   directory (there is no container to enter), in its own process group, killed at the
//!   timeout.
//!
//! This module decides nothing about restarts or readiness conditions: it publishes a state
//! and the pod workers act on it.
use std::{
    net::{IpAddr, SocketAddr},
    os::unix::process::{CommandExt, ExitStatusExt},
    path::PathBuf,
    process::Stdio,
    time::Duration,
};

use nix::{
    sys::signal::{killpg, Signal},
    unistd::Pid,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::watch,
};
use tokio_util::sync::CancellationToken;

use crate::runtime::{container_env, shim::resolve, state::errno_text};

/// Upstream's defaults for fields left at 0.
const DEFAULT_PERIOD_SECONDS: i32 = 10;
const DEFAULT_TIMEOUT_SECONDS: i32 = 1;
const DEFAULT_FAILURE_THRESHOLD: i32 = 3;
const DEFAULT_SUCCESS_THRESHOLD: i32 = 1;

/// How much of an exec probe's output becomes its failure message (upstream's
/// `maxReadLength`).
const MAX_EXEC_OUTPUT: usize = 10 * 1024;

/// How much of an HTTP response is read to find its status line.
const MAX_HTTP_HEAD: usize = 16 * 1024;

/// The `User-Agent` of HTTP probes (upstream sends `kube-probe/<major>.<minor>`).
const USER_AGENT: &str = "kube-probe/1.31";

/// Which probe a worker runs; it decides the initial state and the message prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// Healthy until `failureThreshold` failures in a row; the kubelet restarts the container
    /// when it turns unhealthy.
    Liveness,
    /// Not ready until `successThreshold` successes in a row.
    Readiness,
}

impl ProbeKind {
    /// `Liveness` / `Readiness`, as in upstream's event messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        }
    }
}

impl std::fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a probe runs against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeTarget {
    /// The address `tcpSocket` and `httpGet` dial (the pod IP = the node IP).
    pub host: IpAddr,
    /// The working directory of `exec` commands (the container's).
    pub working_dir: PathBuf,
    /// The environment of `exec` commands (the container's; the kubelet's `PATH` is added
    /// when it has none, as for the container).
    pub env: Vec<(String, String)>,
}

/// The outcome of one probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeResult {
    /// The check passed.
    Success,
    /// The check failed; why, in upstream's words (without the `Liveness probe failed: `
    /// prefix).
    Failure(String),
}

/// What a probe worker publishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeState {
    /// Liveness: alive (starts true). Readiness: ready (starts false).
    pub healthy: bool,
    /// The last failure, e.g. `Liveness probe failed: HTTP probe failed with statuscode: 500`;
    /// empty until a probe fails.
    pub message: String,
    /// Failed probes so far (each one is an `Unhealthy` event upstream).
    pub failures_total: u64,
}

/// A probe's timing and thresholds with upstream's defaults applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Timing {
    initial_delay: Duration,
    period: Duration,
    timeout: Duration,
    failure_threshold: u32,
    success_threshold: u32,
}

impl Timing {
    fn of(p: &kl_api::Probe) -> Self {
        let or = |v: i32, d: i32| if v > 0 { v } else { d };
        Timing {
            initial_delay: Duration::from_secs(p.initial_delay_seconds.max(0) as u64),
            period: Duration::from_secs(or(p.period_seconds, DEFAULT_PERIOD_SECONDS) as u64),
            timeout: Duration::from_secs(or(p.timeout_seconds, DEFAULT_TIMEOUT_SECONDS) as u64),
            failure_threshold: or(p.failure_threshold, DEFAULT_FAILURE_THRESHOLD) as u32,
            success_threshold: or(p.success_threshold, DEFAULT_SUCCESS_THRESHOLD) as u32,
        }
    }
}

/// The thresholds' state machine, apart from time so it can be tested alone.
#[derive(Debug)]
struct Counter {
    kind: ProbeKind,
    timing: Timing,
    successes: u32,
    failures: u32,
}

impl Counter {
    /// Applies one result to the published state.
    fn record(&mut self, result: ProbeResult, state: &mut ProbeState) {
        match result {
            ProbeResult::Success => {
                self.failures = 0;
                self.successes = self.successes.saturating_add(1);
                if self.successes >= self.timing.success_threshold {
                    state.healthy = true;
                }
            }
            ProbeResult::Failure(why) => {
                self.successes = 0;
                self.failures = self.failures.saturating_add(1);
                state.failures_total += 1;
                state.message = format!("{} probe failed: {why}", self.kind);
                if self.failures >= self.timing.failure_threshold {
                    state.healthy = false;
                }
            }
        }
    }
}

/// Runs a probe once, bounded by `timeout` (a timeout is a failure).
pub async fn probe_once(
    probe: &kl_api::Probe,
    target: &ProbeTarget,
    timeout: Duration,
) -> ProbeResult {
    if let Some(exec) = &probe.exec {
        exec_probe(&exec.command, target, timeout).await
    } else if let Some(tcp) = &probe.tcp_socket {
        match port(tcp.port) {
            Ok(port) => tcp_probe(SocketAddr::new(target.host, port), timeout).await,
            Err(f) => f,
        }
    } else if let Some(http) = &probe.http_get {
        match port(http.port) {
            Ok(port) => {
                http_probe(
                    SocketAddr::new(target.host, port),
                    &http.path,
                    &http.scheme,
                    timeout,
                )
                .await
            }
            Err(f) => f,
        }
    } else {
        ProbeResult::Failure("missing probe handler".into())
    }
}

fn port(p: i32) -> Result<u16, ProbeResult> {
    u16::try_from(p)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| ProbeResult::Failure(format!("invalid port number: {p}")))
}

/// Runs until `cancel` (or until nobody holds the receiver): waits `initialDelaySeconds`,
/// then probes every `periodSeconds` and publishes the state. Liveness starts healthy and
/// turns unhealthy after `failureThreshold` consecutive failures; readiness starts not ready,
/// turns ready after `successThreshold` consecutive successes and not ready after
/// `failureThreshold` failures. Every failure updates `message` and `failures_total`.
pub fn spawn_prober(
    kind: ProbeKind,
    probe: kl_api::Probe,
    target: ProbeTarget,
    cancel: CancellationToken,
) -> watch::Receiver<ProbeState> {
    let (tx, rx) = watch::channel(ProbeState {
        healthy: kind == ProbeKind::Liveness,
        message: String::new(),
        failures_total: 0,
    });
    let timing = Timing::of(&probe);
    let mut counter = Counter {
        kind,
        timing,
        successes: 0,
        failures: 0,
    };
    tokio::spawn(async move {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tx.closed() => return,
            _ = tokio::time::sleep(timing.initial_delay) => {}
        }
        loop {
            let result = tokio::select! {
                _ = cancel.cancelled() => return,
                r = probe_once(&probe, &target, timing.timeout) => r,
            };
            if let ProbeResult::Failure(why) = &result {
                tracing::debug!(probe = %kind, reason = %why, "probe failed");
            }
            tx.send_if_modified(|state| {
                let before = state.clone();
                counter.record(result, state);
                *state != before
            });
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tx.closed() => return,
                _ = tokio::time::sleep(timing.period) => {}
            }
        }
    });
    rx
}

/// `exec`: success when the command exits 0. Its output (or its exit code, when it printed
/// nothing) is the failure message.
async fn exec_probe(command: &[String], target: &ProbeTarget, timeout: Duration) -> ProbeResult {
    let Some(argv0) = command.first() else {
        return ProbeResult::Failure("exec probe: no command specified".into());
    };
    let env = container_env(&target.env);
    let path_var = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str());
    let exe = match resolve(argv0, path_var, &target.working_dir) {
        Ok(exe) => exe,
        Err(message) => return ProbeResult::Failure(message),
    };
    let mut cmd = tokio::process::Command::new(exe);
    cmd.as_std_mut().arg0(argv0);
    cmd.args(&command[1..])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(&target.working_dir)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return ProbeResult::Failure(format!("exec: {argv0:?}: {}", errno_text(&e)));
        }
    };
    let pid = child.id();
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) => {
            if out.status.success() {
                return ProbeResult::Success;
            }
            let code = out
                .status
                .code()
                .or_else(|| out.status.signal().map(|s| 128 + s))
                .unwrap_or(-1);
            let mut output = out.stdout;
            output.extend_from_slice(&out.stderr);
            output.truncate(MAX_EXEC_OUTPUT);
            let text = String::from_utf8_lossy(&output).trim_end().to_string();
            if text.is_empty() {
                ProbeResult::Failure(format!(
                    "command {:?} exited with {code}",
                    command.join(" ")
                ))
            } else {
                ProbeResult::Failure(text)
            }
        }
        Ok(Err(e)) => ProbeResult::Failure(format!("exec probe: {e}")),
        Err(_) => {
            // The child itself is killed on drop; its group may hold more.
            if let Some(pid) = pid {
                let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
            ProbeResult::Failure(format!("command {:?} timed out", command.join(" ")))
        }
    }
}

/// `tcpSocket`: success when a connection opens.
async fn tcp_probe(addr: SocketAddr, timeout: Duration) -> ProbeResult {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(_)) => ProbeResult::Success,
        Ok(Err(e)) => ProbeResult::Failure(format!("dial tcp {addr}: connect: {}", errno_text(&e))),
        Err(_) => ProbeResult::Failure(format!("dial tcp {addr}: i/o timeout")),
    }
}

/// `httpGet`: `GET path` over HTTP/1.1; a 2xx or 3xx status is a success.
async fn http_probe(addr: SocketAddr, path: &str, scheme: &str, timeout: Duration) -> ProbeResult {
    if !scheme.is_empty() && !scheme.eq_ignore_ascii_case("http") {
        return ProbeResult::Failure(format!(
            "unsupported scheme {scheme:?}: kubelet-lite probes speak plain HTTP only"
        ));
    }
    let path = match path {
        "" => "/".to_string(),
        p if p.starts_with('/') => p.to_string(),
        p => format!("/{p}"),
    };
    let url = format!("http://{addr}{path}");
    let attempt = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("Get {url:?}: dial tcp {addr}: connect: {}", errno_text(&e)))?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: {USER_AGENT}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("Get {url:?}: {}", errno_text(&e)))?;
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(2).any(|w| w == b"\r\n") && head.len() < MAX_HTTP_HEAD {
            let n = stream
                .read(&mut buf)
                .await
                .map_err(|e| format!("Get {url:?}: {}", errno_text(&e)))?;
            if n == 0 {
                return Err(format!("Get {url:?}: EOF"));
            }
            head.extend_from_slice(&buf[..n]);
        }
        let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
        let line = String::from_utf8_lossy(line);
        let mut parts = line.split_whitespace();
        match (
            parts.next(),
            parts.next().and_then(|c| c.parse::<u16>().ok()),
        ) {
            (Some(v), Some(code)) if v.starts_with("HTTP/") => Ok(code),
            _ => Err(format!(
                "Get {url:?}: malformed HTTP response {:?}",
                line.trim_end()
            )),
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(code)) if (200..400).contains(&code) => ProbeResult::Success,
        Ok(Ok(code)) => ProbeResult::Failure(format!("HTTP probe failed with statuscode: {code}")),
        Ok(Err(why)) => ProbeResult::Failure(why),
        Err(_) => ProbeResult::Failure(format!(
            "Get {url:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn target() -> ProbeTarget {
        ProbeTarget {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            working_dir: std::env::temp_dir(),
            env: vec![("GREETING".into(), "hi".into())],
        }
    }

    fn exec(cmd: &[&str]) -> kl_api::Probe {
        kl_api::Probe {
            exec: Some(kl_api::ExecAction {
                command: cmd.iter().map(|s| s.to_string()).collect(),
            }),
            ..Default::default()
        }
    }

    fn tcp(port: u16) -> kl_api::Probe {
        kl_api::Probe {
            tcp_socket: Some(kl_api::TcpSocketAction { port: port.into() }),
            ..Default::default()
        }
    }

    fn http(port: u16, path: &str) -> kl_api::Probe {
        kl_api::Probe {
            http_get: Some(kl_api::HttpGetAction {
                path: path.into(),
                port: port.into(),
                scheme: "HTTP".into(),
            }),
            ..Default::default()
        }
    }

    const SECOND: Duration = Duration::from_secs(1);

    /// A port nothing listens on: bound, then closed.
    fn closed_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn exec_probes_report_output_exit_code_and_timeout() {
        let t = target();
        assert_eq!(
            probe_once(&exec(&["true"]), &t, SECOND).await,
            ProbeResult::Success
        );
        assert_eq!(
            probe_once(&exec(&["sh", "-c", "test \"$GREETING\" = hi"]), &t, SECOND).await,
            ProbeResult::Success,
            "the container's environment is given"
        );
        assert_eq!(
            probe_once(&exec(&["sh", "-c", "exit 1"]), &t, SECOND).await,
            ProbeResult::Failure(r#"command "sh -c exit 1" exited with 1"#.into())
        );
        assert_eq!(
            probe_once(&exec(&["false"]), &t, SECOND).await,
            ProbeResult::Failure(r#"command "false" exited with 1"#.into())
        );
        assert_eq!(
            probe_once(&exec(&["sh", "-c", "echo not ready; exit 2"]), &t, SECOND).await,
            ProbeResult::Failure("not ready".into())
        );
        assert_eq!(
            probe_once(&exec(&["nosuch-probe-cmd"]), &t, SECOND).await,
            ProbeResult::Failure(
                r#"exec: "nosuch-probe-cmd": executable file not found in $PATH"#.into()
            )
        );
        let started = std::time::Instant::now();
        assert_eq!(
            probe_once(&exec(&["sleep", "30"]), &t, Duration::from_millis(300)).await,
            ProbeResult::Failure(r#"command "sleep 30" timed out"#.into())
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn tcp_probes_connect_or_say_why_not() {
        let t = target();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(
            probe_once(&tcp(port), &t, SECOND).await,
            ProbeResult::Success
        );
        drop(listener);
        let closed = closed_port();
        assert_eq!(
            probe_once(&tcp(closed), &t, SECOND).await,
            ProbeResult::Failure(format!(
                "dial tcp 127.0.0.1:{closed}: connect: connection refused"
            ))
        );
        assert_eq!(
            probe_once(&tcp(0), &t, SECOND).await,
            ProbeResult::Failure("invalid port number: 0".into())
        );
    }

    /// A one-request-at-a-time HTTP server answering `status` to every request, recording the
    /// request lines it saw.
    async fn http_server(
        status: u16,
    ) -> (
        u16,
        tokio::task::JoinHandle<()>,
        tokio::sync::mpsc::UnboundedReceiver<String>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let _ = tx.send(req.lines().next().unwrap_or_default().to_string());
                let resp = format!(
                    "HTTP/1.1 {status} Whatever\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                );
                let _ = s.write_all(resp.as_bytes()).await;
            }
        });
        (port, task, rx)
    }

    #[tokio::test]
    async fn http_probes_judge_the_status_code() {
        let t = target();
        let (port, ok_server, mut seen) = http_server(200).await;
        assert_eq!(
            probe_once(&http(port, "healthz"), &t, SECOND).await,
            ProbeResult::Success
        );
        assert_eq!(seen.recv().await.unwrap(), "GET /healthz HTTP/1.1");
        let (port302, redirect_server, _) = http_server(302).await;
        assert_eq!(
            probe_once(&http(port302, "/"), &t, SECOND).await,
            ProbeResult::Success
        );
        let (port500, bad_server, _) = http_server(500).await;
        assert_eq!(
            probe_once(&http(port500, "/"), &t, SECOND).await,
            ProbeResult::Failure("HTTP probe failed with statuscode: 500".into())
        );
        let closed = closed_port();
        assert_eq!(
            probe_once(&http(closed, "/x"), &t, SECOND).await,
            ProbeResult::Failure(format!(
                "Get \"http://127.0.0.1:{closed}/x\": dial tcp 127.0.0.1:{closed}: connect: connection refused"
            ))
        );
        // A server that accepts but never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sport = silent.local_addr().unwrap().port();
        assert_eq!(
            probe_once(&http(sport, "/"), &t, Duration::from_millis(300)).await,
            ProbeResult::Failure(format!(
                "Get \"http://127.0.0.1:{sport}/\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            ))
        );
        let mut https = http(port, "/");
        https.http_get.as_mut().unwrap().scheme = "HTTPS".into();
        assert!(matches!(
            probe_once(&https, &t, SECOND).await,
            ProbeResult::Failure(m) if m.starts_with("unsupported scheme \"HTTPS\"")
        ));
        for s in [ok_server, redirect_server, bad_server] {
            s.abort();
        }
    }

    #[test]
    fn thresholds_flip_the_state() {
        let p = kl_api::Probe {
            failure_threshold: 2,
            success_threshold: 2,
            ..Default::default()
        };
        let timing = Timing::of(&p);
        assert_eq!(timing.period, Duration::from_secs(10));
        assert_eq!(timing.timeout, Duration::from_secs(1));
        let mut c = Counter {
            kind: ProbeKind::Readiness,
            timing,
            successes: 0,
            failures: 0,
        };
        let mut s = ProbeState {
            healthy: false,
            message: String::new(),
            failures_total: 0,
        };
        c.record(ProbeResult::Success, &mut s);
        assert!(!s.healthy, "one success of two");
        c.record(ProbeResult::Success, &mut s);
        assert!(s.healthy);
        c.record(ProbeResult::Failure("boom".into()), &mut s);
        assert!(s.healthy, "one failure of two");
        assert_eq!(s.message, "Readiness probe failed: boom");
        c.record(ProbeResult::Success, &mut s);
        c.record(ProbeResult::Failure("boom".into()), &mut s);
        assert!(s.healthy, "the success reset the count");
        c.record(ProbeResult::Failure("bang".into()), &mut s);
        assert!(!s.healthy);
        assert_eq!(s.failures_total, 3);
        assert_eq!(s.message, "Readiness probe failed: bang");
        assert_eq!(Timing::of(&kl_api::Probe::default()).failure_threshold, 3);
    }

    #[tokio::test]
    async fn liveness_worker_turns_unhealthy_and_stops_when_cancelled() {
        let closed = closed_port();
        let mut probe = tcp(closed);
        probe.period_seconds = 1;
        probe.failure_threshold = 2;
        let cancel = CancellationToken::new();
        let mut rx = spawn_prober(ProbeKind::Liveness, probe, target(), cancel.clone());
        assert!(rx.borrow().healthy, "liveness starts healthy");
        let state = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| !s.healthy))
            .await
            .expect("unhealthy after two failures")
            .unwrap()
            .clone();
        assert_eq!(state.failures_total, 2);
        assert_eq!(
            state.message,
            format!(
                "Liveness probe failed: dial tcp 127.0.0.1:{closed}: connect: connection refused"
            )
        );
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), async {
            while rx.changed().await.is_ok() {}
        })
        .await
        .expect("the worker ends when cancelled");
    }

    #[tokio::test]
    async fn initial_delay_holds_the_first_probe_back() {
        // Each run of the probe leaves a line in a file: whether it ran is seen directly.
        let dir = tempfile::tempdir().unwrap();
        let mut probe = exec(&["sh", "-c", "echo ran >> runs"]);
        probe.initial_delay_seconds = 3;
        probe.period_seconds = 1;
        let t = ProbeTarget {
            working_dir: dir.path().to_path_buf(),
            ..target()
        };
        let cancel = CancellationToken::new();
        let started = std::time::Instant::now();
        let mut rx = spawn_prober(ProbeKind::Readiness, probe, t, cancel.clone());
        tokio::time::sleep(SECOND).await;
        assert!(
            !dir.path().join("runs").exists() && !rx.borrow().healthy,
            "probed during the initial delay"
        );
        tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|s| s.healthy))
            .await
            .expect("ready once the delay is over")
            .unwrap();
        assert!(started.elapsed() >= Duration::from_secs(3));
        assert!(dir.path().join("runs").exists());
        cancel.cancel();
    }

    #[tokio::test]
    async fn timeout_seconds_bounds_each_probe() {
        // Two seconds: a failure under the default one-second timeout, a success under five.
        let slow = || {
            let mut p = exec(&["sleep", "2"]);
            p.period_seconds = 1;
            p.failure_threshold = 1;
            p
        };
        let cancel = CancellationToken::new();
        let patient = kl_api::Probe {
            timeout_seconds: 5,
            ..slow()
        };
        let mut patient = spawn_prober(ProbeKind::Readiness, patient, target(), cancel.clone());
        let mut hasty = spawn_prober(ProbeKind::Liveness, slow(), target(), cancel.clone());
        tokio::time::timeout(Duration::from_secs(20), patient.wait_for(|s| s.healthy))
            .await
            .expect("a 2 s probe passes with timeoutSeconds 5")
            .unwrap();
        let state = tokio::time::timeout(Duration::from_secs(20), hasty.wait_for(|s| !s.healthy))
            .await
            .expect("a 2 s probe fails with the default timeout")
            .unwrap()
            .clone();
        assert_eq!(
            state.message,
            r#"Liveness probe failed: command "sleep 2" timed out"#
        );
        cancel.cancel();
    }

    #[tokio::test]
    async fn readiness_worker_turns_ready() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut probe = tcp(listener.local_addr().unwrap().port());
        probe.period_seconds = 1;
        let cancel = CancellationToken::new();
        let mut rx = spawn_prober(ProbeKind::Readiness, probe, target(), cancel.clone());
        assert!(!rx.borrow().healthy, "readiness starts not ready");
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| s.healthy))
            .await
            .expect("ready after one success")
            .unwrap();
        cancel.cancel();
    }
}

//! The container runtime: pods are plain OS processes (no namespaces, no cgroups, no images),
//! one process group per container, each watched by its own shim process.
//!
//! Design (containerd's shim / conmon, reduced to what a process needs):
//! * [`Runtime::start_container`] writes the attempt's spec and starts `<shim_exe> shim
//!   <spec.json>` in its own process group. The shim ([`shim`]) starts the container, answers
//!   one handshake line (pid, or a start error with upstream's message), copies the output to
//!   CRI-format log files (`logs`) and records the exit atomically. It ignores the signals a
//!   terminal or a dying kubelet would send, so containers survive a kubelet restart.
//! * Everything lives on disk under `root_dir`, so a restarted kubelet finds its containers
//!   ([`Runtime::pods`]) and adopts the running ones ([`Runtime::adopt_all`]): a container is
//!   recognised by its pid *and* the process start time (field 22 of `/proc/<pid>/stat`), so a
//!   reused pid is never mistaken for it.
//! * Exits are reported on a channel: from waiting on the shim (containers this runtime
//!   started) and from a one-second poll (adopted ones, or a container whose shim died).
//!
//! Disk layout under `root_dir` (the kubelet's `--root-dir`):
//! ```text
//! pods/<uid>/pod.json                          {namespace, name, uid}
//! pods/<uid>/<container>/                      the container's default working directory
//! pods/<uid>/.runtime/<container>/N.spec.json  attempt N: what the shim was asked to run
//! pods/<uid>/.runtime/<container>/N.json       attempt N: pid, start times (written by the shim)
//! pods/<uid>/.runtime/<container>/N.exit.json  attempt N: how it ended
//! logs/<namespace>_<name>_<uid>/<container>/N.log[.<unix-nanos>]   CRI logs (/var/log/pods)
//! ```
//! Only the current and the previous attempt of each container are kept.
//!
//! This module never decides *whether* a container should run (restart policy, back-off):
//! that is the pod workers' job. It starts, stops, reports and forgets.
use std::{
    collections::{BTreeSet, HashMap},
    io,
    path::{Path, PathBuf},
    pin::Pin,
    process::Stdio,
    sync::{Arc, Weak},
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use futures::Stream;
use nix::{
    sys::signal::{killpg, Signal},
    unistd::Pid,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    sync::mpsc,
};

mod logs;
pub mod shim;
pub(crate) mod state;

pub use logs::{LogOptions, MAX_LINE};
use state::{
    format_time, parse_time, process_alive, read_json, write_json, AttemptState, ExitRecord,
    Handshake, ShimSpec,
};

/// The kubelet's default `--container-log-max-size` (10Mi).
pub const DEFAULT_LOG_MAX_SIZE: u64 = 10 * 1024 * 1024;

/// The kubelet's default `--container-log-max-files`.
pub const DEFAULT_LOG_MAX_FILES: usize = 5;

/// `PATH` of a container whose pod sets none, when the kubelet has none either (Docker's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The message of an attempt whose shim and container are both gone with no exit record.
pub const SHIM_LOST_MESSAGE: &str = "container's shim exited without recording the exit";

/// Exit code reported for an attempt whose real exit is unknown (as if SIGKILLed).
pub const UNKNOWN_EXIT_CODE: i32 = 137;

/// How long the shim may take to start the container and answer.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// How often adopted containers are checked for exit.
const ADOPT_POLL: Duration = Duration::from_secs(1);

/// How often a stop or a removal checks whether the container is gone.
const STOP_POLL: Duration = Duration::from_millis(50);

/// How long after SIGKILL a container may take to be gone before stopping it is an error.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the runtime keeps its state and how it starts shims.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// The kubelet's `--root-dir`: `pods/` and `logs/` live here.
    pub root_dir: PathBuf,
    /// The binary started as `<shim_exe> shim <spec.json>` (kubelet-lite itself).
    pub shim_exe: PathBuf,
    /// Rotate a container's log file before it grows past this many bytes
    /// (`--container-log-max-size`).
    pub log_max_size: u64,
    /// Keep at most this many log files per attempt, the live one included
    /// (`--container-log-max-files`).
    pub log_max_files: usize,
}

impl RuntimeConfig {
    /// A config with the kubelet's default log limits (10Mi, 5 files).
    pub fn new(root_dir: impl Into<PathBuf>, shim_exe: impl Into<PathBuf>) -> Self {
        RuntimeConfig {
            root_dir: root_dir.into(),
            shim_exe: shim_exe.into(),
            log_max_size: DEFAULT_LOG_MAX_SIZE,
            log_max_files: DEFAULT_LOG_MAX_FILES,
        }
    }
}

/// Which pod a container belongs to; `pod.json` on disk.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PodRef {
    /// The pod's namespace (part of the log directory's name, and how logs are looked up).
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// The pod's UID: the key of everything on disk, so a re-created pod of the same name never
    /// sees the old one's containers.
    pub uid: String,
}

/// What to run: the process part of a pod's container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerSpec {
    /// The container's name, unique in its pod.
    pub name: String,
    /// The executable and its first arguments (`command`); `command[0]` is looked up in the
    /// container's `PATH` unless it contains a `/`.
    pub command: Vec<String>,
    /// More arguments (`args`).
    pub args: Vec<String>,
    /// The whole environment; the kubelet's `PATH` is added when it has none.
    pub env: Vec<(String, String)>,
    /// `workingDir`; `None` (or empty) means the container's own directory
    /// `pods/<uid>/<container>/`.
    pub working_dir: Option<PathBuf>,
}

/// Where an attempt is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContainerState {
    /// The process is alive (or just exited and its shim is still recording the exit).
    Running {
        /// When the process started.
        started_at: SystemTime,
    },
    /// The attempt is over.
    Exited {
        /// Exit status; 128 + signal when killed by one (137 SIGKILL, 143 SIGTERM); 128 for a
        /// start error; 137 when the exit is unknown.
        exit_code: i32,
        /// The signal that killed it.
        signal: Option<i32>,
        /// `Completed` (exit 0), `Error`, or `StartError`.
        reason: String,
        /// The start error, or why the exit is unknown; empty otherwise.
        message: String,
        /// When the process started (`None` if it never did).
        started_at: Option<SystemTime>,
        /// When the exit was seen.
        finished_at: SystemTime,
    },
}

/// One attempt of one container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerInfo {
    /// The pod's UID.
    pub pod_uid: String,
    /// The container's name.
    pub container: String,
    /// The attempt number (the restart count when it was started).
    pub attempt: u32,
    /// The container's pid (also its process group), once it started.
    pub pid: Option<u32>,
    /// Running or exited.
    pub state: ContainerState,
}

/// A container this runtime started or adopted has exited; its [`Runtime::container`] now
/// says how.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ContainerExited {
    /// The pod's UID.
    pub pod_uid: String,
    /// The container's name.
    pub container: String,
    /// The attempt that exited.
    pub attempt: u32,
}

/// Why logs could not be served; each message is what the user sees (`kubectl logs`).
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// No pod of that namespace and name is on this node.
    #[error("pod \"{pod}\" does not exist in namespace \"{namespace}\" on this node")]
    PodNotFound {
        /// The namespace asked for.
        namespace: String,
        /// The pod asked for.
        pod: String,
    },
    /// The pod has no container of that name (yet).
    #[error(
        "container \"{container}\" is not valid for pod \"{pod}\", choose one of: [{}]",
        containers.join(" ")
    )]
    ContainerNotFound {
        /// The pod.
        pod: String,
        /// The container asked for.
        container: String,
        /// The containers this node has seen for the pod.
        containers: Vec<String>,
    },
    /// `previous=true` but the container has not restarted (or that log is gone).
    #[error("previous terminated container \"{container}\" in pod \"{pod}\" not found")]
    NoPrevious {
        /// The pod.
        pod: String,
        /// The container.
        container: String,
    },
    /// Reading the log files failed.
    #[error("reading container logs: {0}")]
    Io(#[from] io::Error),
}

/// A container's log output, as `kubectl logs` prints it.
pub type LogStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send + 'static>>;

/// The container runtime. Cheap to clone; all clones share the same state.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

/// (pod uid, container, attempt).
type Key = (String, String, u32);

/// How an attempt's exit is noticed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Watch {
    /// A task waits on the shim, our child.
    Child,
    /// The adoption poll checks it every second.
    Poll,
}

struct Inner {
    cfg: RuntimeConfig,
    /// Where exits are reported.
    exited: mpsc::UnboundedSender<ContainerExited>,
    /// Attempts whose exit is still to be reported. An attempt forgotten here (its pod was
    /// removed) is never reported.
    watched: Mutex<HashMap<Key, Watch>>,
    /// Whether the adoption poll task runs.
    poller: Mutex<bool>,
}

impl Runtime {
    /// Creates `pods/` and `logs/` under the root directory. The receiver yields whenever a
    /// container this runtime started or adopted exits (from waiting on the shim, and from a
    /// one-second poll of adopted ones).
    pub fn new(
        cfg: RuntimeConfig,
    ) -> io::Result<(Runtime, mpsc::UnboundedReceiver<ContainerExited>)> {
        std::fs::create_dir_all(cfg.root_dir.join("pods"))?;
        std::fs::create_dir_all(cfg.root_dir.join("logs"))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Inner {
            cfg,
            exited: tx,
            watched: Mutex::new(HashMap::new()),
            poller: Mutex::new(false),
        };
        Ok((
            Runtime {
                inner: Arc::new(inner),
            },
            rx,
        ))
    }

    /// The configuration this runtime was created with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.cfg
    }

    /// A container's default working directory, `pods/<uid>/<container>/` (created when the
    /// container is started).
    pub fn container_dir(&self, pod_uid: &str, container: &str) -> PathBuf {
        self.inner.pod_dir(pod_uid).join(container)
    }

    /// Creates the pod's directories and `pod.json` (kept as is when already right).
    pub fn ensure_pod(&self, pod: &PodRef) -> io::Result<()> {
        check_name("pod uid", &pod.uid)?;
        check_name("namespace", &pod.namespace)?;
        check_name("pod name", &pod.name)?;
        let dir = self.inner.pod_dir(&pod.uid);
        std::fs::create_dir_all(dir.join(".runtime"))?;
        std::fs::create_dir_all(self.inner.pod_logs_dir(pod))?;
        let path = dir.join("pod.json");
        if read_json::<PodRef>(&path).ok().flatten().as_ref() != Some(pod) {
            write_json(&path, pod)?;
        }
        Ok(())
    }

    /// Starts attempt `attempt` (the restart count) of a container. A container that cannot
    /// start (command not found, bad working directory, ...) is `Ok` in state `Exited` with
    /// reason `StartError` and upstream's message, so the kubelet treats it as upstream does;
    /// `Err` is only for the kubelet's own failures (disk, spawning the shim) or an attempt
    /// started while the container still runs. Files of attempts other than this one and the
    /// previous one are deleted.
    pub async fn start_container(
        &self,
        pod: &PodRef,
        spec: &ContainerSpec,
        attempt: u32,
    ) -> io::Result<ContainerInfo> {
        let inner = &self.inner;
        check_name("container name", &spec.name)?;
        self.ensure_pod(pod)?;
        let (uid, name) = (pod.uid.as_str(), spec.name.as_str());
        if let Some(info) = self.container(uid, name) {
            if matches!(info.state, ContainerState::Running { .. }) {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "container {name:?} of pod {uid} is still running (attempt {})",
                        info.attempt
                    ),
                ));
            }
        }
        let rdir = inner.runtime_dir(uid, name);
        let ldir = inner.pod_logs_dir(pod).join(name);
        let workdir = inner.pod_dir(uid).join(name);
        for d in [&rdir, &ldir, &workdir] {
            std::fs::create_dir_all(d)?;
        }
        let keep = attempt.checked_sub(1);
        remove_attempts(&rdir, keep)?;
        remove_attempts(&ldir, keep)?;

        let cwd = match &spec.working_dir {
            Some(d) if !d.as_os_str().is_empty() => d.clone(),
            _ => workdir,
        };
        let shim_spec = ShimSpec {
            argv: spec.command.iter().chain(&spec.args).cloned().collect(),
            env: container_env(&spec.env),
            cwd,
            log_path: ldir.join(format!("{attempt}.log")),
            log_max_size: inner.cfg.log_max_size,
            log_max_files: inner.cfg.log_max_files,
            state_path: rdir.join(format!("{attempt}.json")),
            exit_path: rdir.join(format!("{attempt}.exit.json")),
        };
        let spec_path = rdir.join(format!("{attempt}.spec.json"));
        write_json(&spec_path, &shim_spec)?;

        let mut child = tokio::process::Command::new(&inner.cfg.shim_exe)
            .arg("shim")
            .arg(&spec_path)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("starting shim {}: {e}", inner.cfg.shim_exe.display()),
                )
            })?;
        let shim_pid = child.id();
        let line = match child.stdout.take() {
            Some(out) => {
                let mut line = String::new();
                let mut out = BufReader::new(out);
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, out.read_line(&mut line)).await {
                    Ok(Ok(_)) => Ok(line),
                    Ok(Err(e)) => Err(format!("reading the shim's answer: {e}")),
                    Err(_) => Err(format!(
                        "the shim did not answer within {}s",
                        HANDSHAKE_TIMEOUT.as_secs()
                    )),
                }
            }
            None => Err("the shim has no stdout".to_string()),
        };
        let key: Key = (uid.to_string(), name.to_string(), attempt);
        let answer = line.and_then(|l| {
            serde_json::from_str::<Handshake>(l.trim()).map_err(|_| {
                if l.trim().is_empty() {
                    "the shim exited without answering".to_string()
                } else {
                    format!("unexpected answer from the shim: {}", l.trim())
                }
            })
        });
        match answer {
            Ok(Handshake::Started { pid }) => {
                tracing::debug!(pod = %uid, container = %name, attempt, pid, "container started");
                inner.watched.lock().insert(key.clone(), Watch::Child);
                inner.spawn_waiter(key, child);
            }
            Ok(Handshake::Failed { message }) => {
                let _ = child.wait().await;
                inner.record_start_error(&shim_spec, &message);
            }
            Err(why) => {
                if let Some(pid) = shim_pid {
                    let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
                }
                let _ = child.wait().await;
                match read_json::<AttemptState>(&shim_spec.state_path) {
                    // It did start; only the answer was lost.
                    Ok(Some(_)) => {
                        inner.watched.lock().insert(key, Watch::Poll);
                        inner.ensure_poller();
                    }
                    _ => inner.record_start_error(&shim_spec, &why),
                }
            }
        }
        inner.attempt_info(uid, name, attempt).ok_or_else(|| {
            io::Error::other(format!(
                "attempt {attempt} of container {name:?} of pod {uid} left no state"
            ))
        })
    }

    /// The latest attempt of a container, from disk and a liveness check of its processes.
    pub fn container(&self, pod_uid: &str, container: &str) -> Option<ContainerInfo> {
        if check_name("", pod_uid).is_err() || check_name("", container).is_err() {
            return None;
        }
        let rdir = self.inner.runtime_dir(pod_uid, container);
        let latest = *attempts_in(&rdir).last()?;
        self.inner.attempt_info(pod_uid, container, latest)
    }

    /// Stops the latest attempt of a container: SIGTERM to its process group, up to `grace`
    /// for it to exit, then SIGKILL to the group. Returns once the exit is recorded; an error
    /// if the container is still there 10s after SIGKILL. Stopping an exited (or unknown)
    /// container is a no-op.
    pub async fn stop_container(
        &self,
        pod_uid: &str,
        container: &str,
        grace: Duration,
    ) -> io::Result<()> {
        let Some(info) = self.container(pod_uid, container) else {
            return Ok(());
        };
        if !matches!(info.state, ContainerState::Running { .. }) {
            return Ok(());
        }
        let inner = &self.inner;
        let n = info.attempt;
        let state_path = inner
            .runtime_dir(pod_uid, container)
            .join(format!("{n}.json"));
        let Some(st) = read_json::<AttemptState>(&state_path)? else {
            return Ok(());
        };
        let exited = || {
            !matches!(
                inner.attempt_info(pod_uid, container, n),
                Some(ContainerInfo {
                    state: ContainerState::Running { .. },
                    ..
                })
            )
        };
        signal_group(&st, Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < deadline {
            if exited() {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            tokio::time::sleep(left.min(STOP_POLL)).await;
        }
        if exited() {
            return Ok(());
        }
        tracing::debug!(pod = %pod_uid, container, grace_secs = grace.as_secs_f64(), "grace period over, killing");
        signal_group(&st, Signal::SIGKILL);
        let deadline = tokio::time::Instant::now() + KILL_TIMEOUT;
        loop {
            if exited() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "container {container:?} of pod {pod_uid} (pid {}) is still running {}s after SIGKILL",
                        st.pid,
                        KILL_TIMEOUT.as_secs()
                    ),
                ));
            }
            tokio::time::sleep(STOP_POLL).await;
        }
    }

    /// Every pod directory on disk with the latest attempt of each of its containers (for
    /// adoption and clean-up at start). A pod whose `pod.json` is missing has an empty
    /// namespace and name.
    pub fn pods(&self) -> Vec<(PodRef, Vec<ContainerInfo>)> {
        let mut out = Vec::new();
        for uid in dir_names(&self.inner.cfg.root_dir.join("pods")) {
            let pod = self.inner.pod_ref(&uid).unwrap_or_else(|| PodRef {
                namespace: String::new(),
                name: String::new(),
                uid: uid.clone(),
            });
            let containers = dir_names(&self.inner.pod_dir(&uid).join(".runtime"))
                .into_iter()
                .filter_map(|c| self.container(&uid, &c))
                .collect();
            out.push((pod, containers));
        }
        out
    }

    /// Starts watching for the exit of every running container found on disk (the ones a
    /// previous kubelet started); their exits then arrive on the channel like any other. Call
    /// once at start, inside the tokio runtime.
    pub fn adopt_all(&self) {
        let mut adopted = 0;
        {
            let mut watched = self.inner.watched.lock();
            for (_, containers) in self.pods() {
                for c in containers {
                    if matches!(c.state, ContainerState::Running { .. }) {
                        watched
                            .entry((c.pod_uid, c.container, c.attempt))
                            .or_insert(Watch::Poll);
                        adopted += 1;
                    }
                }
            }
        }
        if adopted > 0 {
            tracing::info!(containers = adopted, "adopted running containers");
            self.inner.ensure_poller();
        }
    }

    /// Kills every container of the pod (SIGKILL to each process group), waits for them to be
    /// gone (up to 10s, else an error and nothing is deleted), then deletes the pod's
    /// directories and logs. Their exits are not reported. Removing an unknown pod is a no-op.
    pub async fn remove_pod(&self, pod_uid: &str) -> io::Result<()> {
        check_name("pod uid", pod_uid)?;
        let inner = &self.inner;
        let pod_dir = inner.pod_dir(pod_uid);
        let containers = dir_names(&pod_dir.join(".runtime"));
        inner.watched.lock().retain(|(uid, _, _), _| uid != pod_uid);
        let running = |c: &str| {
            matches!(
                self.container(pod_uid, c),
                Some(ContainerInfo {
                    state: ContainerState::Running { .. },
                    ..
                })
            )
        };
        for c in &containers {
            if running(c) {
                if let Some(n) = attempts_in(&inner.runtime_dir(pod_uid, c)).last() {
                    let path = inner.runtime_dir(pod_uid, c).join(format!("{n}.json"));
                    if let Ok(Some(st)) = read_json::<AttemptState>(&path) {
                        signal_group(&st, Signal::SIGKILL);
                    }
                }
            }
        }
        let deadline = tokio::time::Instant::now() + KILL_TIMEOUT;
        while let Some(c) = containers.iter().find(|c| running(c)) {
            if tokio::time::Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "container {c:?} of pod {pod_uid} is still running {}s after SIGKILL",
                        KILL_TIMEOUT.as_secs()
                    ),
                ));
            }
            tokio::time::sleep(STOP_POLL).await;
        }
        let mut log_dirs = Vec::new();
        if let Some(pod) = inner.pod_ref(pod_uid) {
            log_dirs.push(inner.pod_logs_dir(&pod));
        }
        let suffix = format!("_{pod_uid}");
        let logs_root = inner.cfg.root_dir.join("logs");
        for d in dir_names(&logs_root) {
            if d.ends_with(&suffix) {
                log_dirs.push(logs_root.join(d));
            }
        }
        for d in log_dirs.iter().chain([&pod_dir]) {
            match std::fs::remove_dir_all(d) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The logs of a container, found by namespace and pod name (the newest pod UID when
    /// several pods of that name are on disk): the latest attempt, or the one before with
    /// `previous`. With `follow` the stream goes on until that attempt has exited and its log
    /// is read to the end.
    pub async fn logs(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        opts: LogOptions,
    ) -> Result<LogStream, LogError> {
        let inner = &self.inner;
        let Some(pod_ref) = inner.find_pod(namespace, pod) else {
            return Err(LogError::PodNotFound {
                namespace: namespace.to_string(),
                pod: pod.to_string(),
            });
        };
        let containers = inner.containers_of(&pod_ref);
        if !containers.iter().any(|c| c == container) {
            return Err(LogError::ContainerNotFound {
                pod: pod.to_string(),
                container: container.to_string(),
                containers,
            });
        }
        let ldir = inner.pod_logs_dir(&pod_ref).join(container);
        let rdir = inner.runtime_dir(&pod_ref.uid, container);
        let latest = attempts_in(&rdir)
            .last()
            .copied()
            .into_iter()
            .chain(log_attempts_in(&ldir).last().copied())
            .max();
        let no_previous = || LogError::NoPrevious {
            pod: pod.to_string(),
            container: container.to_string(),
        };
        let attempt = match (latest, opts.previous) {
            (Some(n), false) => n,
            (Some(n), true) => {
                let prev = n.checked_sub(1).ok_or_else(no_previous)?;
                if !log_attempts_in(&ldir).contains(&prev) {
                    return Err(no_previous());
                }
                prev
            }
            (None, false) => 0,
            (None, true) => return Err(no_previous()),
        };
        let path = ldir.join(format!("{attempt}.log"));
        let finished: logs::Finished = Box::new(move || attempt_over(&rdir, attempt));
        Ok(Box::pin(logs::read_logs(path, opts, finished)))
    }

    /// The container names this node has seen for a pod (by namespace and name), for error
    /// messages; `None` when the pod is not on this node.
    pub fn pod_containers(&self, namespace: &str, pod: &str) -> Option<Vec<String>> {
        let pod = self.inner.find_pod(namespace, pod)?;
        Some(self.inner.containers_of(&pod))
    }
}

impl Inner {
    fn pod_dir(&self, uid: &str) -> PathBuf {
        self.cfg.root_dir.join("pods").join(uid)
    }

    fn runtime_dir(&self, uid: &str, container: &str) -> PathBuf {
        self.pod_dir(uid).join(".runtime").join(container)
    }

    fn pod_logs_dir(&self, pod: &PodRef) -> PathBuf {
        self.cfg
            .root_dir
            .join("logs")
            .join(format!("{}_{}_{}", pod.namespace, pod.name, pod.uid))
    }

    fn pod_ref(&self, uid: &str) -> Option<PodRef> {
        read_json(&self.pod_dir(uid).join("pod.json"))
            .ok()
            .flatten()
    }

    /// The pod of that namespace and name; the newest `pod.json` when there are several.
    fn find_pod(&self, namespace: &str, name: &str) -> Option<PodRef> {
        let mut best: Option<(SystemTime, PodRef)> = None;
        for uid in dir_names(&self.cfg.root_dir.join("pods")) {
            let path = self.pod_dir(&uid).join("pod.json");
            let Some(pod) = read_json::<PodRef>(&path).ok().flatten() else {
                continue;
            };
            if pod.namespace != namespace || pod.name != name {
                continue;
            }
            let mtime = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            if best.as_ref().is_none_or(|(t, _)| mtime >= *t) {
                best = Some((mtime, pod));
            }
        }
        best.map(|(_, p)| p)
    }

    /// Containers that have a runtime or a log directory, sorted.
    fn containers_of(&self, pod: &PodRef) -> Vec<String> {
        let mut names: BTreeSet<String> = dir_names(&self.pod_dir(&pod.uid).join(".runtime"))
            .into_iter()
            .collect();
        names.extend(dir_names(&self.pod_logs_dir(pod)));
        names.into_iter().collect()
    }

    /// Attempt `n` of a container, from its records and a liveness check. An attempt whose
    /// container and shim are both gone without an exit record gets one now
    /// ([`SHIM_LOST_MESSAGE`]), so that later calls agree on when it ended.
    fn attempt_info(&self, uid: &str, container: &str, n: u32) -> Option<ContainerInfo> {
        let rdir = self.runtime_dir(uid, container);
        let state_path = rdir.join(format!("{n}.json"));
        let exit_path = rdir.join(format!("{n}.exit.json"));
        let state = read_json::<AttemptState>(&state_path).ok().flatten();
        let info = |state: ContainerState| ContainerInfo {
            pod_uid: uid.to_string(),
            container: container.to_string(),
            attempt: n,
            pid: state_pid(&state_path),
            state,
        };
        if let Some(rec) = read_json::<ExitRecord>(&exit_path).ok().flatten() {
            return Some(info(exited_state(&rec)));
        }
        let st = state?;
        if process_alive(st.pid, st.pid_start_time)
            || process_alive(st.shim_pid, st.shim_start_time)
        {
            return Some(info(ContainerState::Running {
                started_at: parse_time(&st.started_at).unwrap_or(SystemTime::UNIX_EPOCH),
            }));
        }
        // Both gone. The shim may have written the record just now.
        if let Some(rec) = read_json::<ExitRecord>(&exit_path).ok().flatten() {
            return Some(info(exited_state(&rec)));
        }
        let rec = ExitRecord {
            exit_code: UNKNOWN_EXIT_CODE,
            signal: None,
            reason: "Error".into(),
            message: SHIM_LOST_MESSAGE.into(),
            started_at: Some(st.started_at.clone()),
            finished_at: format_time(SystemTime::now()),
        };
        tracing::warn!(pod = %uid, container, attempt = n, pid = st.pid, "{SHIM_LOST_MESSAGE}");
        if let Err(e) = write_json(&exit_path, &rec) {
            tracing::warn!(pod = %uid, container, error = %e, "recording the lost exit");
        }
        Some(info(exited_state(&rec)))
    }

    /// Records a start error the shim could not record itself.
    fn record_start_error(&self, spec: &ShimSpec, message: &str) {
        if spec.exit_path.exists() {
            return;
        }
        let rec = ExitRecord {
            exit_code: shim::START_ERROR_EXIT_CODE,
            signal: None,
            reason: "StartError".into(),
            message: message.to_string(),
            started_at: None,
            finished_at: format_time(SystemTime::now()),
        };
        if let Err(e) = write_json(&spec.exit_path, &rec) {
            tracing::warn!(path = %spec.exit_path.display(), error = %e, "recording a start error");
        }
    }

    /// Waits on a shim we started; reports the exit, or hands the attempt to the poll when
    /// the shim died and left its container running.
    fn spawn_waiter(self: &Arc<Self>, key: Key, mut child: tokio::process::Child) {
        let inner = Arc::downgrade(self);
        tokio::spawn(async move {
            let _ = child.wait().await;
            if let Some(inner) = inner.upgrade() {
                inner.check_exit(&key, true);
            }
        });
    }

    /// Reports `key`'s exit if it is over; with `shim_gone`, moves a still running one to the
    /// poll.
    fn check_exit(self: &Arc<Self>, key: &Key, shim_gone: bool) {
        let info = self.attempt_info(&key.0, &key.1, key.2);
        let running = matches!(
            info,
            Some(ContainerInfo {
                state: ContainerState::Running { .. },
                ..
            })
        );
        let mut watched = self.watched.lock();
        if !watched.contains_key(key) {
            return;
        }
        if running {
            if shim_gone {
                watched.insert(key.clone(), Watch::Poll);
                drop(watched);
                self.ensure_poller();
            }
            return;
        }
        watched.remove(key);
        drop(watched);
        if info.is_some() {
            tracing::debug!(pod = %key.0, container = %key.1, attempt = key.2, "container exited");
            let _ = self.exited.send(ContainerExited {
                pod_uid: key.0.clone(),
                container: key.1.clone(),
                attempt: key.2,
            });
        }
    }

    /// Starts the adoption poll unless it runs. It holds only a weak reference, so it ends
    /// with the runtime (or when nobody listens for exits any more).
    fn ensure_poller(self: &Arc<Self>) {
        let mut started = self.poller.lock();
        if *started {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("no tokio runtime: adopted containers are not watched for exit");
            return;
        };
        *started = true;
        let weak: Weak<Inner> = Arc::downgrade(self);
        handle.spawn(async move {
            let mut tick = tokio::time::interval(ADOPT_POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                if inner.exited.is_closed() {
                    *inner.poller.lock() = false;
                    break;
                }
                let polled: Vec<Key> = inner
                    .watched
                    .lock()
                    .iter()
                    .filter(|(_, w)| **w == Watch::Poll)
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in polled {
                    inner.check_exit(&key, false);
                }
            }
        });
    }
}

/// The container's environment: the pod's variables, plus the kubelet's `PATH` (or
/// [`DEFAULT_PATH`]) when the pod sets none. Also what exec probes run with.
pub fn container_env(env: &[(String, String)]) -> Vec<(String, String)> {
    let mut env = env.to_vec();
    if !env.iter().any(|(k, _)| k == "PATH") {
        let path = std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.to_string());
        env.push(("PATH".to_string(), path));
    }
    env
}

fn exited_state(rec: &ExitRecord) -> ContainerState {
    ContainerState::Exited {
        exit_code: rec.exit_code,
        signal: rec.signal,
        reason: rec.reason.clone(),
        message: rec.message.clone(),
        started_at: rec.started_at.as_deref().and_then(parse_time),
        finished_at: parse_time(&rec.finished_at).unwrap_or(SystemTime::UNIX_EPOCH),
    }
}

fn state_pid(state_path: &Path) -> Option<u32> {
    read_json::<AttemptState>(state_path)
        .ok()
        .flatten()
        .map(|s| s.pid)
}

/// Whether attempt `n` is over as far as its log is concerned: its exit is recorded, or
/// nobody is left to write it (for a log follower; never writes anything).
fn attempt_over(rdir: &Path, n: u32) -> bool {
    if rdir.join(format!("{n}.exit.json")).exists() {
        return true;
    }
    match read_json::<AttemptState>(&rdir.join(format!("{n}.json"))) {
        Ok(Some(st)) => {
            !process_alive(st.pid, st.pid_start_time)
                && !process_alive(st.shim_pid, st.shim_start_time)
        }
        // Not started (yet): over unless a start is under way (a spec younger than the
        // handshake timeout), so that a follower never waits on a start that died.
        _ => std::fs::metadata(rdir.join(format!("{n}.spec.json")))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_none_or(|age| age > HANDSHAKE_TIMEOUT),
    }
}

/// Sends `sig` to the container's process group, if its leader is still the container.
fn signal_group(st: &AttemptState, sig: Signal) {
    if process_alive(st.pid, st.pid_start_time) {
        if let Err(e) = killpg(Pid::from_raw(st.pid as i32), sig) {
            tracing::debug!(pid = st.pid, signal = %sig, error = %e, "signalling the container");
        }
    }
}

/// Attempts with a state or an exit record in a runtime directory, ascending.
fn attempts_in(dir: &Path) -> Vec<u32> {
    let mut out: Vec<u32> = file_names(dir)
        .iter()
        .filter_map(|f| {
            let n = f
                .strip_suffix(".exit.json")
                .or_else(|| f.strip_suffix(".json").filter(|s| !s.ends_with(".spec")))?;
            n.parse().ok()
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Attempts with a live log file in a container's log directory, ascending.
fn log_attempts_in(dir: &Path) -> Vec<u32> {
    let mut out: Vec<u32> = file_names(dir)
        .iter()
        .filter_map(|f| f.strip_suffix(".log")?.parse().ok())
        .collect();
    out.sort_unstable();
    out
}

/// Deletes the files of every attempt but `keep` (`N.*` files) in a runtime or log directory.
fn remove_attempts(dir: &Path, keep: Option<u32>) -> io::Result<()> {
    for f in file_names(dir) {
        let Some(n) = f.split('.').next().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if Some(n) == keep {
            continue;
        }
        match std::fs::remove_file(dir.join(&f)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn entries(dir: &Path, want_dir: bool) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir() == want_dir))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .collect();
    out.sort();
    out
}

fn dir_names(dir: &Path) -> Vec<String> {
    entries(dir, true)
}

fn file_names(dir: &Path) -> Vec<String> {
    entries(dir, false)
}

/// Refuses names that would escape their directory.
fn check_name(what: &str, name: &str) -> io::Result<()> {
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.starts_with('.')
        || name.contains(['/', '\0'])
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid {what} {name:?}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_files_are_listed_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "0.json",
            "0.exit.json",
            "0.spec.json",
            "1.spec.json",
            "2.json",
            ".2.exit.json.tmp7",
        ] {
            std::fs::write(dir.path().join(f), "{}").unwrap();
        }
        assert_eq!(attempts_in(dir.path()), [0, 2]);
        remove_attempts(dir.path(), Some(2)).unwrap();
        assert_eq!(file_names(dir.path()), ["2.json"]);

        let logs = tempfile::tempdir().unwrap();
        for f in ["0.log", "0.log.123", "1.log", "1.log.5", "3.log"] {
            std::fs::write(logs.path().join(f), "").unwrap();
        }
        assert_eq!(log_attempts_in(logs.path()), [0, 1, 3]);
        remove_attempts(logs.path(), Some(1)).unwrap();
        assert_eq!(file_names(logs.path()), ["1.log", "1.log.5"]);
    }

    #[test]
    fn names_cannot_escape() {
        for bad in ["", ".", "..", "a/b", ".runtime"] {
            assert!(check_name("x", bad).is_err(), "{bad:?}");
        }
        assert!(check_name("x", "web-1").is_ok());
    }

    #[test]
    fn path_is_added_only_when_missing() {
        let env = container_env(&[("A".into(), "1".into())]);
        assert!(env.iter().any(|(k, _)| k == "PATH"));
        let env = container_env(&[("PATH".into(), "/x".into())]);
        assert_eq!(env, [("PATH".to_string(), "/x".to_string())]);
    }
}

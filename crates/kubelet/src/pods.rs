//! The pod workers: one task per pod bound to this node, as upstream's `podWorkers`.
//!
//! A worker owns its pod's containers: it starts them through the [`Runtime`], restarts them
//! per `restartPolicy` with CrashLoopBackOff, runs their probes, kills them on a failed
//! liveness probe, terminates them gracefully when the pod is deleted and then confirms the
//! deletion, and reports the pod's status as the kubelet does (phase, conditions,
//! containerStatuses). It wakes on a change of the pod, a container's exit, a probe result, a
//! back-off deadline, or every [`RESYNC`].
//!
//! [`run_pods`] feeds the workers from an informer on `spec.nodeName=<node>`; at start it
//! removes what belongs to pods no longer bound here and adopts the containers still running,
//! so a restarted kubelet neither duplicates nor loses a pod. Stopping the kubelet stops the
//! workers, not the containers (as upstream: pods outlive a kubelet restart).
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kl_api::{
    ContainerState as ApiContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, Pod, PodCondition, PodStatus,
};
use kl_client::informer::{Event, Informer, InformerConfig};
use kl_client::{Api, ApiError, Client, DeleteParams};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::node::rfc3339;
use crate::probe::{spawn_prober, ProbeKind, ProbeState, ProbeTarget};
use crate::runtime::{
    ContainerExited, ContainerInfo, ContainerSpec, ContainerState, PodRef, Runtime,
};

/// How often a worker looks at its pod even when nothing woke it.
pub const RESYNC: Duration = Duration::from_secs(10);
/// CrashLoopBackOff: the first delay, doubled after each crash up to the cap.
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(10);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A container that ran this long has its back-off reset (upstream: 2 × the cap).
pub const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// The grace of a pod whose spec sets none (upstream's default).
const DEFAULT_GRACE: i64 = 30;

/// What every worker shares.
pub struct Ctx {
    pub client: Client,
    pub node_name: String,
    pub node_ip: IpAddr,
    pub runtime: Runtime,
    pub metrics: Arc<crate::run::Metrics>,
    /// Events about pods (`source.component` kubelet, host the node), as upstream records.
    pub recorder: kl_client::events::Recorder,
}

/// Runs the pod workers of this node until cancelled.
pub async fn run_pods(
    ctx: Arc<Ctx>,
    mut exits: mpsc::UnboundedReceiver<ContainerExited>,
    cancel: CancellationToken,
) {
    let api = Api::<Pod>::all(ctx.client.clone());
    let informer = Informer::new(
        api,
        InformerConfig::default().fields(&format!("spec.nodeName={}", ctx.node_name)),
    );
    let store = informer.store();
    let mut events = informer.subscribe();
    let informer_task = tokio::spawn(informer.run(cancel.child_token()));

    tokio::select! {
        _ = cancel.cancelled() => { let _ = informer_task.await; return; }
        _ = store.wait_synced() => {}
    }
    // What a previous kubelet left: pods no longer bound here go; running containers of pods
    // still bound here are adopted.
    let bound: std::collections::HashSet<String> = store
        .list()
        .iter()
        .filter_map(|p| p.metadata.as_ref().map(|m| m.uid.clone()))
        .collect();
    for (pod, _) in ctx.runtime.pods() {
        if !bound.contains(&pod.uid) {
            info!(pod = %format!("{}/{}", pod.namespace, pod.name), uid = %pod.uid, "removing a pod no longer bound to this node");
            if let Err(e) = ctx.runtime.remove_pod(&pod.uid).await {
                warn!(uid = %pod.uid, error = %e, "removing an orphaned pod failed");
            }
        }
    }
    ctx.runtime.adopt_all();

    let mut workers: HashMap<String, WorkerHandle> = HashMap::new();
    for pod in store.list() {
        upsert(&ctx, &mut workers, pod, &cancel);
    }
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(ev) = events.recv() => match ev {
                Event::Added(p) | Event::Updated { new: p, .. } => upsert(&ctx, &mut workers, p, &cancel),
                Event::Deleted(p) => {
                    if let Some(w) = workers.get(&uid_of(&p)) {
                        w.gone.cancel();
                    }
                }
            },
            Some(ex) = exits.recv() => {
                if let Some(w) = workers.get(&ex.pod_uid) {
                    let _ = w.exits.send(ex.container);
                }
            }
        }
        workers.retain(|_, w| !w.task.is_finished());
        ctx.metrics.running_pods.set(workers.len() as i64);
    }
    for (_, w) in workers.drain() {
        let _ = w.task.await;
    }
    let _ = informer_task.await;
}

struct WorkerHandle {
    pod: watch::Sender<Arc<Pod>>,
    exits: mpsc::UnboundedSender<String>,
    /// Cancelled when the pod is gone from the apiserver.
    gone: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn uid_of(p: &Pod) -> String {
    p.metadata
        .as_ref()
        .map(|m| m.uid.clone())
        .unwrap_or_default()
}

fn upsert(
    ctx: &Arc<Ctx>,
    workers: &mut HashMap<String, WorkerHandle>,
    pod: Arc<Pod>,
    cancel: &CancellationToken,
) {
    let uid = uid_of(&pod);
    if uid.is_empty() {
        return;
    }
    if let Some(w) = workers.get(&uid) {
        let _ = w.pod.send(pod);
        return;
    }
    let (pod_tx, pod_rx) = watch::channel(pod);
    let (exit_tx, exit_rx) = mpsc::unbounded_channel();
    let gone = CancellationToken::new();
    let task = tokio::spawn(
        Worker::new(
            ctx.clone(),
            pod_rx,
            exit_rx,
            gone.clone(),
            cancel.child_token(),
        )
        .run(),
    );
    workers.insert(
        uid,
        WorkerHandle {
            pod: pod_tx,
            exits: exit_tx,
            gone,
            task,
        },
    );
}

/// One container's life as its worker tracks it.
#[derive(Default)]
struct Tracked {
    /// Crashes since the last reset: the next delay is 0 for the first, then 10 s doubling.
    crashes: u32,
    /// The attempt whose exit was last handled (restart decided), and when to restart.
    handled_exit: Option<u32>,
    restart_at: Option<SystemTime>,
    /// The delay of the pending restart (for the CrashLoopBackOff message).
    delay: Duration,
    /// The previous attempt's end, for `lastState`.
    last_terminated: Option<ContainerStateTerminated>,
    /// Probes of the running attempt.
    probes: Option<Probes>,
}

struct Probes {
    attempt: u32,
    cancel: CancellationToken,
    liveness: Option<watch::Receiver<ProbeState>>,
    readiness: Option<watch::Receiver<ProbeState>>,
}

impl Drop for Probes {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

struct Worker {
    ctx: Arc<Ctx>,
    pod: watch::Receiver<Arc<Pod>>,
    exits: mpsc::UnboundedReceiver<String>,
    gone: CancellationToken,
    stop: CancellationToken,
    containers: HashMap<String, Tracked>,
    /// The status last written and the resourceVersion of the pod it was computed from: a
    /// write is skipped when the pod already shows this status, or when nothing changed the
    /// pod since this status was written (the informer may lag behind our own write).
    posted: Option<(PodStatus, String)>,
    /// Set once the deletion has been confirmed to the apiserver.
    deletion_confirmed: bool,
    /// Wakes the loop when any probe result changes.
    probe_changed: mpsc::UnboundedSender<()>,
    probe_rx: mpsc::UnboundedReceiver<()>,
}

impl Worker {
    fn new(
        ctx: Arc<Ctx>,
        pod: watch::Receiver<Arc<Pod>>,
        exits: mpsc::UnboundedReceiver<String>,
        gone: CancellationToken,
        stop: CancellationToken,
    ) -> Worker {
        let (probe_changed, probe_rx) = mpsc::unbounded_channel();
        let posted = None;
        Worker {
            ctx,
            pod,
            exits,
            gone,
            stop,
            containers: HashMap::new(),
            posted,
            deletion_confirmed: false,
            probe_changed,
            probe_rx,
        }
    }

    fn pod_ref(&self) -> PodRef {
        let p = self.pod.borrow();
        let m = p.metadata.clone().unwrap_or_default();
        PodRef {
            namespace: m.namespace,
            name: m.name,
            uid: m.uid,
        }
    }

    /// Records an Event about this pod.
    async fn event(&self, type_: &str, reason: &str, message: &str) {
        let pod = self.pod.borrow().clone();
        self.ctx
            .recorder
            .record_for(pod.as_ref(), type_, reason, message)
            .await;
    }

    async fn run(mut self) {
        let pr = self.pod_ref();
        let name = format!("{}/{}", pr.namespace, pr.name);
        debug!(pod = %name, uid = %pr.uid, "pod worker started");
        loop {
            if self.gone.is_cancelled() {
                self.remove().await;
                return;
            }
            let wake = self.sync().await;
            let sleep = wake
                .and_then(|t| t.duration_since(SystemTime::now()).ok())
                .unwrap_or(RESYNC)
                .min(RESYNC);
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = self.gone.cancelled() => {}
                r = self.pod.changed() => if r.is_err() { return },
                Some(_) = self.exits.recv() => {}
                Some(_) = self.probe_rx.recv() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// The pod is gone from the apiserver: its containers are stopped (if a force deletion
    /// left any running) and its files removed.
    async fn remove(&mut self) {
        let pr = self.pod_ref();
        let grace = self.grace(false);
        self.containers.clear();
        self.stop_all(grace).await;
        if let Err(e) = self.ctx.runtime.remove_pod(&pr.uid).await {
            warn!(uid = %pr.uid, error = %e, "removing the pod's files failed");
        }
        info!(pod = %format!("{}/{}", pr.namespace, pr.name), "pod removed");
    }

    /// The grace period: the deletion's when one is pending, else the spec's.
    fn grace(&self, deleting: bool) -> Duration {
        let p = self.pod.borrow();
        let meta = p.metadata.clone().unwrap_or_default();
        let spec_grace = p
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(DEFAULT_GRACE);
        let secs = if deleting {
            meta.deletion_grace_period_seconds.unwrap_or(spec_grace)
        } else {
            spec_grace
        };
        Duration::from_secs(secs.max(0) as u64)
    }

    async fn stop_all(&self, grace: Duration) {
        let pr = self.pod_ref();
        let names: Vec<String> = self
            .pod
            .borrow()
            .spec
            .as_ref()
            .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default();
        let stops = names.iter().map(|c| {
            let rt = self.ctx.runtime.clone();
            let uid = pr.uid.clone();
            async move {
                if let Err(e) = rt.stop_container(&uid, c, grace).await {
                    warn!(uid = %uid, container = %c, error = %e, "stopping a container failed");
                }
            }
        });
        futures::future::join_all(stops).await;
    }

    /// One pass: act on the pod's containers, then post its status. Returns the next moment
    /// something is due (a restart after back-off).
    async fn sync(&mut self) -> Option<SystemTime> {
        let pod = self.pod.borrow_and_update().clone();
        let pr = self.pod_ref();
        let meta = pod.metadata.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();

        if !meta.deletion_timestamp.is_empty() {
            if !self.deletion_confirmed {
                info!(pod = %format!("{}/{}", pr.namespace, pr.name), grace = ?self.grace(true), "terminating pod");
                for c in &spec.containers {
                    if self
                        .ctx
                        .runtime
                        .container(&pr.uid, &c.name)
                        .is_some_and(|i| matches!(i.state, ContainerState::Running { .. }))
                    {
                        self.event(
                            "Normal",
                            "Killing",
                            &format!("Stopping container {}", c.name),
                        )
                        .await;
                    }
                }
                self.containers.clear(); // stops probes
                self.stop_all(self.grace(true)).await;
                self.post_status(&pod, true).await;
                self.confirm_deletion(&pr).await;
            }
            return None;
        }

        if let Err(e) = self.ctx.runtime.ensure_pod(&pr) {
            warn!(uid = %pr.uid, error = %e, "preparing the pod's directories failed");
            return Some(SystemTime::now() + Duration::from_secs(1));
        }
        let terminal = matches!(
            pod.status.as_ref().map(|s| s.phase.as_str()),
            Some("Succeeded") | Some("Failed")
        );
        let mut next: Option<SystemTime> = None;
        for c in &spec.containers {
            let info = self.ctx.runtime.container(&pr.uid, &c.name);
            let due = self.sync_container(&pod, &pr, c, info, terminal).await;
            next = match (next, due) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        self.post_status(&pod, false).await;
        next
    }

    async fn sync_container(
        &mut self,
        pod: &Pod,
        pr: &PodRef,
        c: &kl_api::Container,
        info: Option<ContainerInfo>,
        terminal: bool,
    ) -> Option<SystemTime> {
        let policy = pod
            .spec
            .as_ref()
            .map(|s| s.restart_policy.clone())
            .unwrap_or_default();
        let Some(info) = info else {
            if terminal {
                return None;
            }
            self.start(pr, c, 0).await;
            return None;
        };
        match &info.state {
            ContainerState::Running { .. } => {
                self.ensure_probes(pod, c, info.attempt);
                let failed = self
                    .containers
                    .get(&c.name)
                    .and_then(|t| t.probes.as_ref())
                    .and_then(|p| p.liveness.as_ref())
                    .map(|l| l.borrow().clone())
                    .filter(|s| !s.healthy);
                if let Some(state) = failed {
                    info!(pod = %pr.name, container = %c.name, message = %state.message, "liveness probe failed; killing the container");
                    self.ctx.metrics.liveness_restarts.inc();
                    self.event("Warning", "Unhealthy", &state.message).await;
                    self.event(
                        "Normal",
                        "Killing",
                        &format!(
                            "Container {} failed liveness probe, will be restarted",
                            c.name
                        ),
                    )
                    .await;
                    if let Some(t) = self.containers.get_mut(&c.name) {
                        t.probes = None;
                    }
                    let grace = self.grace(false);
                    if let Err(e) = self
                        .ctx
                        .runtime
                        .stop_container(&pr.uid, &c.name, grace)
                        .await
                    {
                        warn!(container = %c.name, error = %e, "stopping the unhealthy container failed");
                    }
                }
                None
            }
            ContainerState::Exited {
                started_at,
                finished_at,
                ..
            } => {
                let t = self.containers.entry(c.name.clone()).or_default();
                t.probes = None;
                if terminal {
                    return None;
                }
                let restart = match policy.as_str() {
                    "Never" => false,
                    "OnFailure" => exit_code_of(&info) != 0,
                    _ => true,
                };
                if !restart {
                    return None;
                }
                let mut backoff_event = None;
                if t.handled_exit != Some(info.attempt) {
                    let ran = started_at
                        .and_then(|s| finished_at.duration_since(s).ok())
                        .unwrap_or_default();
                    (t.delay, t.crashes) = next_backoff(t.crashes, ran);
                    t.handled_exit = Some(info.attempt);
                    t.restart_at = Some(*finished_at + t.delay);
                    if !t.delay.is_zero() {
                        backoff_event = Some(format!(
                            "Back-off restarting failed container {} in pod {}_{}({})",
                            c.name, pr.name, pr.namespace, pr.uid
                        ));
                    }
                }
                let at = t.restart_at.unwrap_or_else(SystemTime::now);
                let due = SystemTime::now() >= at;
                if due {
                    t.last_terminated = terminated_of(&info);
                }
                if let Some(msg) = backoff_event {
                    self.event("Warning", "BackOff", &msg).await;
                }
                if due {
                    self.start(pr, c, info.attempt + 1).await;
                    None
                } else {
                    Some(at)
                }
            }
        }
    }

    async fn start(&mut self, pr: &PodRef, c: &kl_api::Container, attempt: u32) {
        let spec = ContainerSpec {
            name: c.name.clone(),
            command: c.command.clone(),
            args: c.args.clone(),
            env: c
                .env
                .iter()
                .map(|e| (e.name.clone(), e.value.clone()))
                .collect(),
            working_dir: (!c.working_dir.is_empty()).then(|| c.working_dir.clone().into()),
        };
        match self.ctx.runtime.start_container(pr, &spec, attempt).await {
            Ok(info) => {
                if let ContainerState::Exited {
                    reason, message, ..
                } = &info.state
                {
                    warn!(pod = %pr.name, container = %c.name, %reason, %message, "container failed to start");
                    self.event("Warning", "Failed", &format!("Error: {message}"))
                        .await;
                } else {
                    info!(pod = %format!("{}/{}", pr.namespace, pr.name), container = %c.name, attempt, pid = ?info.pid, "container started");
                    self.ctx.metrics.containers_started.inc();
                    self.event(
                        "Normal",
                        "Started",
                        &format!("Started container {}", c.name),
                    )
                    .await;
                }
            }
            Err(e) => {
                warn!(pod = %pr.name, container = %c.name, error = %e, "starting the container failed")
            }
        }
    }

    fn ensure_probes(&mut self, pod: &Pod, c: &kl_api::Container, attempt: u32) {
        let t = self.containers.entry(c.name.clone()).or_default();
        if t.probes.as_ref().is_some_and(|p| p.attempt == attempt) {
            return;
        }
        let cancel = CancellationToken::new();
        let pr_uid = pod
            .metadata
            .as_ref()
            .map(|m| m.uid.clone())
            .unwrap_or_default();
        let working_dir = if c.working_dir.is_empty() {
            self.ctx.runtime.container_dir(&pr_uid, &c.name)
        } else {
            c.working_dir.clone().into()
        };
        let target = ProbeTarget {
            host: self.ctx.node_ip,
            working_dir,
            env: c
                .env
                .iter()
                .map(|e| (e.name.clone(), e.value.clone()))
                .collect(),
        };
        let spawn = |kind: ProbeKind, probe: &Option<kl_api::Probe>| {
            probe.clone().map(|p| {
                let rx = spawn_prober(kind, p, target.clone(), cancel.clone());
                // Forward every change of the probe's state as a wake-up of this worker.
                let (mut watch_rx, tx, cancel) = (rx.clone(), self.probe_changed.clone(), cancel.clone());
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            r = watch_rx.changed() => if r.is_err() || tx.send(()).is_err() { return },
                        }
                    }
                });
                rx
            })
        };
        let liveness = spawn(ProbeKind::Liveness, &c.liveness_probe);
        let readiness = spawn(ProbeKind::Readiness, &c.readiness_probe);
        t.probes = Some(Probes {
            attempt,
            cancel,
            liveness,
            readiness,
        });
    }

    /// Upstream's status manager: delete with grace 0 and the pod's uid as precondition, once
    /// every container has stopped.
    async fn confirm_deletion(&mut self, pr: &PodRef) {
        let api = Api::<Pod>::namespaced(self.ctx.client.clone(), &pr.namespace);
        match api
            .delete(
                &pr.name,
                &DeleteParams::default()
                    .grace_period(0)
                    .precondition_uid(&pr.uid),
            )
            .await
        {
            Ok(_) => {
                info!(pod = %format!("{}/{}", pr.namespace, pr.name), "pod terminated; deletion confirmed");
                self.deletion_confirmed = true;
            }
            Err(e) if e.is_not_found() || e.is_conflict() => self.deletion_confirmed = true,
            Err(e) => warn!(pod = %pr.name, error = %e, "confirming the deletion failed; retrying"),
        }
    }

    /// Computes the pod's status and writes it when it changed.
    async fn post_status(&mut self, pod: &Pod, terminating: bool) {
        let pr = self.pod_ref();
        let mut statuses = Vec::new();
        let spec = pod.spec.clone().unwrap_or_default();
        for c in &spec.containers {
            let info = self.ctx.runtime.container(&pr.uid, &c.name);
            let t = self.containers.get(&c.name);
            statuses.push(container_status(c, info.as_ref(), t, &pr, terminating));
        }
        let status = pod_status(pod, statuses, self.ctx.node_ip, SystemTime::now());
        let rv = pod
            .metadata
            .as_ref()
            .map(|m| m.resource_version.clone())
            .unwrap_or_default();
        // Someone else (the node-lifecycle controller marking pods NotReady) may have changed
        // the status: compare with the pod as it is, not only with what was last written.
        if pod.status.as_ref() == Some(&status)
            || self.posted.as_ref() == Some(&(status.clone(), rv.clone()))
        {
            return;
        }
        match write_status(&self.ctx.client, pod, &status).await {
            Ok(()) => self.posted = Some((status, rv)),
            Err(e) if e.is_not_found() => {}
            Err(e) => warn!(pod = %pr.name, error = %e, "updating pod status failed"),
        }
    }
}

/// The exit code of an exited container (0 for a running one).
fn exit_code_of(info: &ContainerInfo) -> i32 {
    match &info.state {
        ContainerState::Exited { exit_code, .. } => *exit_code,
        ContainerState::Running { .. } => 0,
    }
}

/// The delay before restarting a container that ran for `ran` after `crashes` earlier
/// crashes, and the crash count after this one: a container that ran [`BACKOFF_RESET`] starts
/// over, as if it had never crashed.
pub fn next_backoff(crashes: u32, ran: Duration) -> (Duration, u32) {
    let crashes = if ran >= BACKOFF_RESET { 0 } else { crashes };
    (crash_delay(crashes), crashes.saturating_add(1))
}

/// CrashLoopBackOff's delay before restart number `crashes + 1`: none for the first crash,
/// then 10 s doubling to 5 m (upstream restarts at once after the first exit).
pub fn crash_delay(crashes: u32) -> Duration {
    if crashes == 0 {
        return Duration::ZERO;
    }
    let factor = 1u32 << (crashes - 1).min(10);
    (BACKOFF_INITIAL * factor).min(BACKOFF_MAX)
}

fn terminated_of(info: &ContainerInfo) -> Option<ContainerStateTerminated> {
    match &info.state {
        ContainerState::Exited {
            exit_code,
            reason,
            message,
            started_at,
            finished_at,
            ..
        } => Some(ContainerStateTerminated {
            exit_code: *exit_code,
            reason: reason.clone(),
            message: message.clone(),
            started_at: started_at.map(rfc3339).unwrap_or_default(),
            finished_at: rfc3339(*finished_at),
        }),
        ContainerState::Running { .. } => None,
    }
}

/// One container's status, as upstream's `convertToAPIContainerStatuses`.
fn container_status(
    c: &kl_api::Container,
    info: Option<&ContainerInfo>,
    t: Option<&Tracked>,
    pr: &PodRef,
    terminating: bool,
) -> ContainerStatus {
    let last_state = t
        .and_then(|t| t.last_terminated.clone())
        .map(|term| ApiContainerState {
            terminated: Some(term),
            ..Default::default()
        });
    let Some(info) = info else {
        return ContainerStatus {
            name: c.name.clone(),
            ready: false,
            restart_count: 0,
            state: Some(ApiContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: "ContainerCreating".into(),
                    message: String::new(),
                }),
                ..Default::default()
            }),
            last_state,
        };
    };
    let restart_count = info.attempt as i32;
    match &info.state {
        ContainerState::Running { started_at } => {
            let ready = !terminating
                && match t.and_then(|t| t.probes.as_ref()) {
                    Some(p) if p.attempt == info.attempt => {
                        p.readiness.as_ref().is_none_or(|r| r.borrow().healthy)
                    }
                    // Probes not set up yet: ready only without a readiness probe.
                    _ => c.readiness_probe.is_none(),
                };
            ContainerStatus {
                name: c.name.clone(),
                ready,
                restart_count,
                state: Some(ApiContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: rfc3339(*started_at),
                    }),
                    ..Default::default()
                }),
                last_state,
            }
        }
        ContainerState::Exited { .. } => {
            let term = terminated_of(info);
            let backing_off = t.and_then(|t| {
                (t.handled_exit == Some(info.attempt) && t.restart_at.is_some() && !terminating)
                    .then_some(t.delay)
            });
            match backing_off {
                Some(delay) if !delay.is_zero() => ContainerStatus {
                    name: c.name.clone(),
                    ready: false,
                    restart_count,
                    state: Some(ApiContainerState {
                        waiting: Some(ContainerStateWaiting {
                            reason: "CrashLoopBackOff".into(),
                            message: format!(
                                "back-off {} restarting failed container={} pod={}_{}({})",
                                kl_cli_like_duration(delay),
                                c.name,
                                pr.name,
                                pr.namespace,
                                pr.uid
                            ),
                        }),
                        ..Default::default()
                    }),
                    last_state: term.map(|term| ApiContainerState {
                        terminated: Some(term),
                        ..Default::default()
                    }),
                },
                _ => ContainerStatus {
                    name: c.name.clone(),
                    ready: false,
                    restart_count,
                    state: Some(ApiContainerState {
                        terminated: term,
                        ..Default::default()
                    }),
                    last_state,
                },
            }
        }
    }
}

/// Go's duration text for whole seconds and minutes (`10s`, `1m20s`, `5m0s`).
fn kl_cli_like_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{s}s")
    } else {
        format!("{}m{}s", s / 60, s % 60)
    }
}

/// Upstream's `getPhase` for a pod without init containers.
pub fn pod_phase(restart_policy: &str, statuses: &[ContainerStatus]) -> &'static str {
    let (mut running, mut waiting, mut stopped, mut succeeded, mut unknown) = (0, 0, 0, 0, 0);
    for s in statuses {
        let state = s.state.clone().unwrap_or_default();
        if state.running.is_some() {
            running += 1;
        } else if let Some(t) = &state.terminated {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if state.waiting.is_some() {
            let last_terminated = s
                .last_state
                .as_ref()
                .is_some_and(|l| l.terminated.is_some());
            if last_terminated {
                stopped += 1;
            } else {
                waiting += 1;
            }
        } else {
            unknown += 1;
        }
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 && unknown == 0 {
        "Running"
    } else if running == 0 && stopped > 0 && unknown == 0 {
        if restart_policy == "Always" {
            "Running"
        } else if stopped == succeeded {
            "Succeeded"
        } else if restart_policy == "Never" {
            "Failed"
        } else {
            "Running"
        }
    } else {
        "Pending"
    }
}

/// The pod's whole status: phase, conditions (keeping PodScheduled and unchanged
/// transition times), container statuses, IPs.
pub fn pod_status(
    pod: &Pod,
    statuses: Vec<ContainerStatus>,
    node_ip: IpAddr,
    now: SystemTime,
) -> PodStatus {
    let old = pod.status.clone().unwrap_or_default();
    let policy = pod
        .spec
        .as_ref()
        .map(|s| s.restart_policy.as_str())
        .unwrap_or("Always");
    let phase = pod_phase(policy, &statuses);
    let now_text = rfc3339(now);
    let unready: Vec<&str> = statuses
        .iter()
        .filter(|s| !s.ready)
        .map(|s| s.name.as_str())
        .collect();
    let condition = |ty: &str, ok: bool, reason: &str, message: String| {
        let status = if ok { "True" } else { "False" };
        let transition = old
            .conditions
            .iter()
            .find(|c| c.r#type == ty && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now_text.clone());
        PodCondition {
            r#type: ty.into(),
            status: status.into(),
            reason: if ok { String::new() } else { reason.into() },
            message: if ok { String::new() } else { message },
            last_probe_time: String::new(),
            last_transition_time: transition,
        }
    };
    let (reason, message) = if phase == "Succeeded" || phase == "Failed" {
        ("PodCompleted", String::new())
    } else {
        (
            "ContainersNotReady",
            format!("containers with unready status: [{}]", unready.join(" ")),
        )
    };
    let ready = unready.is_empty() && phase == "Running";
    let mut conditions = vec![condition("Initialized", true, "", String::new())];
    conditions.push(condition("Ready", ready, reason, message.clone()));
    conditions.push(condition("ContainersReady", ready, reason, message));
    match old.conditions.iter().find(|c| c.r#type == "PodScheduled") {
        Some(c) => conditions.push(c.clone()),
        None => conditions.push(condition("PodScheduled", true, "", String::new())),
    }
    PodStatus {
        phase: phase.into(),
        conditions,
        container_statuses: statuses,
        pod_ip: node_ip.to_string(),
        host_ip: node_ip.to_string(),
        start_time: if old.start_time.is_empty() {
            now_text
        } else {
            old.start_time
        },
        message: String::new(),
        reason: String::new(),
    }
}

/// Writes `status` to the pod, pinned to the version seen; on a Conflict re-reads the pod and
/// writes again if it is still the same pod (same uid).
async fn write_status(client: &Client, pod: &Pod, status: &PodStatus) -> Result<(), ApiError> {
    let meta = pod.metadata.clone().unwrap_or_default();
    let api = Api::<Pod>::namespaced(client.clone(), &meta.namespace);
    let mut current = pod.clone();
    for _ in 0..3 {
        current.status = Some(status.clone());
        match api.update_status(current.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_conflict() => {
                let fresh = api.get(&meta.name).await?;
                if fresh.metadata.as_ref().map(|m| m.uid.as_str()) != Some(meta.uid.as_str()) {
                    return Ok(()); // a new pod of the same name: not ours to write
                }
                current = fresh;
            }
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::Unexpected {
        message: "pod status: conflicts on three attempts".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(name: &str, ready: bool) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            ready,
            state: Some(ApiContainerState {
                running: Some(ContainerStateRunning::default()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn exited(name: &str, code: i32) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            state: Some(ApiContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: code,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn backing_off(name: &str) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            state: Some(ApiContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: "CrashLoopBackOff".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            last_state: Some(ApiContainerState {
                terminated: Some(ContainerStateTerminated::default()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn phase_follows_upstream_get_phase() {
        assert_eq!(pod_phase("Always", &[running("a", true)]), "Running");
        assert_eq!(pod_phase("Never", &[exited("a", 0)]), "Succeeded");
        assert_eq!(pod_phase("Never", &[exited("a", 1)]), "Failed");
        assert_eq!(pod_phase("OnFailure", &[exited("a", 1)]), "Running");
        assert_eq!(pod_phase("OnFailure", &[exited("a", 0)]), "Succeeded");
        assert_eq!(pod_phase("Always", &[exited("a", 0)]), "Running");
        assert_eq!(pod_phase("Always", &[backing_off("a")]), "Running");
        let creating = ContainerStatus {
            name: "a".into(),
            state: Some(ApiContainerState {
                waiting: Some(ContainerStateWaiting::default()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            pod_phase("Always", &[creating, running("b", true)]),
            "Pending"
        );
        assert_eq!(
            pod_phase("Never", &[running("a", true), exited("b", 1)]),
            "Running"
        );
    }

    #[test]
    fn a_container_not_started_yet_is_creating() {
        let c = kl_api::Container {
            name: "main".into(),
            ..Default::default()
        };
        let pr = PodRef {
            namespace: "default".into(),
            name: "web".into(),
            uid: "u1".into(),
        };
        let s = container_status(&c, None, None, &pr, false);
        let waiting = s.state.clone().and_then(|st| st.waiting);
        assert_eq!(
            (
                s.name.as_str(),
                s.ready,
                s.restart_count,
                waiting.map(|w| w.reason)
            ),
            ("main", false, 0, Some("ContainerCreating".to_string()))
        );
        assert!(s.last_state.is_none());
        assert_eq!(pod_phase("Always", std::slice::from_ref(&s)), "Pending");
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let st = pod_status(&Pod::default(), vec![s], ip, SystemTime::UNIX_EPOCH);
        let ready = st.conditions.iter().find(|c| c.r#type == "Ready").unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "ContainersNotReady")
        );
    }

    #[test]
    fn crash_loop_back_off_doubles_to_five_minutes() {
        let secs: Vec<u64> = (0..8).map(|n| crash_delay(n).as_secs()).collect();
        assert_eq!(secs, [0, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(crash_delay(u32::MAX), BACKOFF_MAX);
        // Quick crashes climb; ten minutes of running start over.
        let quick = Duration::from_secs(1);
        let (mut crashes, mut delays) = (0, Vec::new());
        for _ in 0..4 {
            let (d, c) = next_backoff(crashes, quick);
            delays.push(d.as_secs());
            crashes = c;
        }
        assert_eq!(delays, [0, 10, 20, 40]);
        assert_eq!(next_backoff(crashes, BACKOFF_RESET), (Duration::ZERO, 1));
        assert_eq!(next_backoff(1, BACKOFF_RESET - quick).0, BACKOFF_INITIAL);
    }

    #[test]
    fn ready_condition_names_unready_containers_and_keeps_transition_times() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let t1 = t0 + Duration::from_secs(5);
        let mut pod = Pod {
            spec: Some(kl_api::PodSpec {
                restart_policy: "Always".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let s0 = pod_status(&pod, vec![running("a", true), running("b", false)], ip, t0);
        let ready = |s: &PodStatus| {
            s.conditions
                .iter()
                .find(|c| c.r#type == "Ready")
                .unwrap()
                .clone()
        };
        assert_eq!(ready(&s0).status, "False");
        assert_eq!(ready(&s0).message, "containers with unready status: [b]");
        assert_eq!(s0.pod_ip, "127.0.0.1");
        pod.status = Some(s0.clone());
        let s1 = pod_status(&pod, vec![running("a", true), running("b", false)], ip, t1);
        assert_eq!(s0, s1, "nothing changed, nothing to write");
        let s2 = pod_status(&pod, vec![running("a", true), running("b", true)], ip, t1);
        assert_eq!(ready(&s2).status, "True");
        assert_eq!(ready(&s2).last_transition_time, rfc3339(t1));
        assert!(s2
            .conditions
            .iter()
            .any(|c| c.r#type == "PodScheduled" && c.status == "True"));
    }
}

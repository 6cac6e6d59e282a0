//! The scheduler proper: the [`State`] the informers feed (cache and queue), and the loop that,
//! while this process leads, pops a pod, runs the [`Algorithm`], assumes the pod on the chosen
//! node and binds it in the background (upstream's scheduling and binding cycles).
//!
//! Every write (Bind, UpdateStatus, Event) goes through a [`Writer`] carrying the leader's
//! fencing token, so an ex-leader that wakes up late cannot change anything. The loop owns its
//! binding tasks: aborting the loop (lease lost, shutdown) aborts them at once.
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use kl_api::{FencingToken, Node, Pod, PodCondition};
use kl_client::{Api, ApiError, Client};
use parking_lot::Mutex;
use rand::SeedableRng;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::algorithm::{Algorithm, ScheduleError};
use crate::cache::{is_terminal, is_terminating, pod_key, Cache};
use crate::config::SCHEDULER_NAME;
use crate::metrics::Metrics;
use crate::queue::SchedulingQueue;

/// What the informers keep up to date and the scheduling loop reads.
pub struct State {
    pub cache: Mutex<Cache>,
    pub queue: Mutex<SchedulingQueue>,
    /// Woken when the queue may have a pod to pop.
    wake: Notify,
    pub metrics: Arc<Metrics>,
}

/// Whether a node changed in a way that may make a pod fit (anything but heartbeats).
fn node_changed(old: &Node, new: &Node) -> bool {
    let strip = |n: &Node| {
        let mut n = n.clone();
        if let Some(m) = n.metadata.as_mut() {
            m.resource_version.clear();
            m.generation = 0;
        }
        if let Some(s) = n.status.as_mut() {
            for c in &mut s.conditions {
                c.last_heartbeat_time.clear();
            }
        }
        n
    };
    strip(old) != strip(new)
}

impl State {
    pub fn new(metrics: Arc<Metrics>) -> Arc<State> {
        Arc::new(State {
            cache: Mutex::new(Cache::new()),
            queue: Mutex::new(SchedulingQueue::new()),
            wake: Notify::new(),
            metrics,
        })
    }

    /// A pod was added or changed (from the informer of all pods).
    pub fn pod_upserted(&self, pod: &Pod) {
        let key = pod_key(pod);
        let bound = pod.spec.as_ref().is_some_and(|s| !s.node_name.is_empty());
        let now = Instant::now();
        if bound || is_terminal(pod) {
            let was_on = self.cache.lock().pod_node(&key).map(str::to_string);
            self.cache.lock().update_pod(pod);
            self.queue.lock().delete(&key);
            if is_terminal(pod) && was_on.is_some() {
                // Its resources are free again.
                self.queue.lock().move_all(now);
            }
        } else if is_terminating(pod) {
            self.queue.lock().delete(&key);
        } else {
            // A pending pod. One this scheduler has assumed is on its way to being bound: its
            // updates (our own status write, say) must not queue it again.
            let cache = self.cache.lock();
            if !cache.is_assumed(&key) {
                drop(cache);
                self.queue.lock().add_or_update(pod.clone(), now);
            }
        }
        self.wake.notify_one();
        self.update_gauges();
    }

    /// A pod was deleted.
    pub fn pod_deleted(&self, pod: &Pod) {
        let key = pod_key(pod);
        let was_on = {
            let mut cache = self.cache.lock();
            let was_on = cache.pod_node(&key).is_some();
            cache.remove_pod(&key);
            was_on
        };
        let mut q = self.queue.lock();
        q.delete(&key);
        if was_on {
            q.move_all(Instant::now());
        }
        drop(q);
        self.wake.notify_one();
        self.update_gauges();
    }

    /// A node was added or changed.
    pub fn node_upserted(&self, node: &Node) {
        let name = node.metadata.as_ref().map_or("", |m| m.name.as_str());
        let relevant = {
            let mut cache = self.cache.lock();
            let relevant = match cache.node(name).and_then(|i| i.node.as_ref()) {
                Some(old) => node_changed(old, node),
                None => true,
            };
            cache.set_node(node.clone());
            relevant
        };
        if relevant {
            self.queue.lock().move_all(Instant::now());
            self.wake.notify_one();
        }
        self.update_gauges();
    }

    pub fn node_deleted(&self, node: &Node) {
        let name = node.metadata.as_ref().map_or("", |m| m.name.as_str());
        self.cache.lock().remove_node(name);
    }

    /// Leadership ended: abandon what was assumed; those binds that landed come back through
    /// the watch, the rest are pending again.
    pub fn reset_assumed(&self, pending: impl IntoIterator<Item = Pod>) {
        self.cache.lock().forget_all_assumed();
        let now = Instant::now();
        let mut q = self.queue.lock();
        for p in pending {
            if !q.contains(&pod_key(&p)) {
                q.add_or_update(p, now);
            }
        }
    }

    fn update_gauges(&self) {
        let c = self.queue.lock().counts();
        let g = &self.metrics.pending;
        g.with_label_values(&["active"]).set(c.active as i64);
        g.with_label_values(&["backoff"]).set(c.backoff as i64);
        g.with_label_values(&["unschedulable"])
            .set(c.unschedulable as i64);
    }

    /// Waits for a pod to try: pops at once if one is active, else sleeps until the next
    /// backoff ends or something is added.
    async fn pop(&self) -> crate::queue::QueuedPod {
        loop {
            let notified = self.wake.notified();
            let next = {
                let mut q = self.queue.lock();
                if let Some(p) = q.pop(Instant::now()) {
                    return p;
                }
                q.next_backoff()
            };
            // At most a second: also runs the unschedulable leftover flush.
            let wait = next
                .map(|t| t.saturating_duration_since(Instant::now()))
                .unwrap_or(std::time::Duration::from_secs(1))
                .min(std::time::Duration::from_secs(1));
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// The writes of one leadership term, fenced by its token.
#[derive(Clone)]
pub struct Writer {
    pub client: Client,
    /// None when leader election is off.
    pub fencing: Option<FencingToken>,
    /// `source.host` of events.
    pub host: String,
}

impl Writer {
    fn pods(&self, ns: &str) -> Api<Pod> {
        let api = Api::namespaced(self.client.clone(), ns);
        match &self.fencing {
            Some(t) => api.with_fencing(t.clone()),
            None => api,
        }
    }

    /// Records an Event about `pod` (best effort, as upstream's recorder), fenced like every
    /// other write of this term.
    async fn event(&self, pod: &Pod, type_: &str, reason: &str, message: &str) {
        kl_client::events::Recorder::new(self.client.clone(), SCHEDULER_NAME, &self.host)
            .with_fencing(self.fencing.clone())
            .record_for(pod, type_, reason, message)
            .await;
    }

    /// Sets `PodScheduled=False, reason Unschedulable` with `message` on the pod (when it
    /// differs), retrying on a Conflict with a fresh read.
    async fn mark_unschedulable(&self, pod: &Pod, message: &str) -> Result<(), ApiError> {
        let meta = pod.metadata.clone().unwrap_or_default();
        let api = self.pods(&meta.namespace);
        let mut current = pod.clone();
        for _ in 0..3 {
            if current
                .spec
                .as_ref()
                .is_some_and(|s| !s.node_name.is_empty())
                || current.metadata.as_ref().map(|m| &m.uid) != Some(&meta.uid)
            {
                return Ok(());
            }
            if !set_unschedulable_condition(&mut current, message) {
                return Ok(());
            }
            match api.update_status(current.clone()).await {
                Ok(_) => return Ok(()),
                Err(e) if e.is_conflict() => match api.get_opt(&meta.name).await? {
                    Some(p) => current = p,
                    None => return Ok(()),
                },
                Err(e) if e.is_not_found() => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Sets the PodScheduled condition (upstream's `UpdatePodCondition`): returns whether anything
/// but the timestamps changed; the transition time moves only when the status does.
pub fn set_unschedulable_condition(pod: &mut Pod, message: &str) -> bool {
    let status = pod.status.get_or_insert_with(Default::default);
    let now = rfc3339(SystemTime::now());
    let new = PodCondition {
        r#type: "PodScheduled".into(),
        status: "False".into(),
        reason: "Unschedulable".into(),
        message: message.into(),
        last_probe_time: String::new(),
        last_transition_time: now,
    };
    match status
        .conditions
        .iter_mut()
        .find(|c| c.r#type == "PodScheduled")
    {
        Some(c) => {
            if c.status == new.status && c.reason == new.reason && c.message == new.message {
                return false;
            }
            let transition = if c.status == new.status {
                c.last_transition_time.clone()
            } else {
                new.last_transition_time.clone()
            };
            *c = PodCondition {
                last_transition_time: transition,
                ..new
            };
        }
        None => status.conditions.push(new),
    }
    if status.phase.is_empty() {
        status.phase = "Pending".into();
    }
    true
}

/// `2024-01-02T03:04:05Z`, as Kubernetes writes times.
pub fn rfc3339(t: SystemTime) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::from(t).format(&f).unwrap_or_default()
}

/// How many Binds may be in flight at once.
const MAX_INFLIGHT_BINDS: usize = 64;

/// Schedules pods until aborted (the caller aborts it when leadership ends or on shutdown).
pub async fn schedule_loop(state: Arc<State>, writer: Writer, mut algorithm: Algorithm) {
    let mut binds: JoinSet<()> = JoinSet::new();
    let mut rng = rand::rngs::StdRng::from_entropy();
    info!("scheduling");
    loop {
        while binds.try_join_next().is_some() {}
        if binds.len() >= MAX_INFLIGHT_BINDS {
            binds.join_next().await;
            continue;
        }
        let qp = tokio::select! {
            qp = state.pop() => qp,
            Some(_) = binds.join_next(), if !binds.is_empty() => continue,
        };
        let key = pod_key(&qp.pod);
        let started = Instant::now();
        let result = {
            let cache = state.cache.lock();
            algorithm.schedule(&qp.pod, &cache, &mut rng)
        };
        let elapsed = started.elapsed().as_secs_f64();
        match result {
            Ok(decision) => {
                state.cache.lock().assume(&qp.pod, &decision.node);
                state.queue.lock().done(&key);
                observe(&state, "scheduled", elapsed);
                let (state, writer, pod) = (state.clone(), writer.clone(), qp.pod.clone());
                binds.spawn(bind(state, writer, pod, decision.node, qp.attempts));
            }
            Err(err) => {
                let message = err.to_string();
                state.queue.lock().unschedulable(&key, Instant::now());
                observe(&state, "unschedulable", elapsed);
                info!(pod = %key, attempts = qp.attempts, reason = %message, "unschedulable");
                let (writer, pod) = (writer.clone(), qp.pod.clone());
                binds.spawn(async move {
                    if let Err(e) = writer.mark_unschedulable(&pod, &message).await {
                        warn!(pod = %pod_key(&pod), error = %e, "updating the PodScheduled condition");
                        if e.is_fenced() {
                            return;
                        }
                    }
                    writer.event(&pod, "Warning", "FailedScheduling", &message).await;
                });
                if matches!(err, ScheduleError::NoNodes) {
                    debug!("no nodes yet");
                }
            }
        }
    }
}

fn observe(state: &State, result: &str, secs: f64) {
    let m = &state.metrics;
    m.attempts
        .with_label_values(&[result, SCHEDULER_NAME])
        .inc();
    m.attempt_duration
        .with_label_values(&[result, SCHEDULER_NAME])
        .observe(secs);
    state.update_gauges();
}

/// The binding cycle of one pod.
async fn bind(state: Arc<State>, writer: Writer, pod: Pod, node: String, attempts: u32) {
    let meta = pod.metadata.clone().unwrap_or_default();
    let key = pod_key(&pod);
    match writer
        .pods(&meta.namespace)
        .bind(&meta.name, &node, Some(&meta.uid))
        .await
    {
        Ok(_) => {
            info!(pod = %key, node = %node, attempts, "bound");
            let msg = format!(
                "Successfully assigned {}/{} to {node}",
                meta.namespace, meta.name
            );
            writer.event(&pod, "Normal", "Scheduled", &msg).await;
        }
        Err(e) if e.is_conflict() || e.is_not_found() => {
            // Someone bound it first, or it is gone: nothing to retry.
            info!(pod = %key, error = %e, "not bound: already bound or deleted");
            state.cache.lock().forget(&key);
        }
        Err(e) => {
            warn!(pod = %key, node = %node, error = %e, "bind failed");
            state.cache.lock().forget(&key);
            if !e.is_fenced() {
                let mut q = state.queue.lock();
                q.add_after_error(pod, attempts, Instant::now());
            }
            state.wake.notify_one();
        }
    }
}

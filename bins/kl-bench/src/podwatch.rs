//! What `kl-bench pods` and `kl-bench sched` observe: one watch of a namespace's pods (kl-client's
//! informer, the path every component watches through) that stamps, per pod, when it was first
//! seen bound (`spec.nodeName` set), first seen Running (`status.phase`), and seen deleted.
//!
//! A stamp is the time the event reached this process, so a latency measured against it is
//! "observed by a watch", as upstream's pod startup SLO defines it. Also shared: the kl-client
//! connection helpers (a client per connection) and the bench pod.

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use kl_api::{Container, Namespace, ObjectMeta, Pod, PodSpec, ResourceRequirements};
use kl_client::{
    informer::{Event, Informer, InformerConfig},
    Api, Client, ClientOptions,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// What was seen of one pod.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// First event with `spec.nodeName` set.
    pub bound: Option<Instant>,
    pub node: String,
    /// First event with phase Running.
    pub running: Option<Instant>,
    /// Its DELETED event.
    pub deleted: Option<Instant>,
}

/// Every pod seen, and how many reached each stage.
#[derive(Debug, Default)]
pub struct Tracker {
    pub pods: HashMap<String, Seen>,
    pub bound: usize,
    pub running: usize,
    pub deleted: usize,
}

impl Tracker {
    fn observe(&mut self, pod: &Pod, deleted: bool, now: Instant) {
        let Some(name) = pod.metadata.as_ref().map(|m| m.name.clone()) else {
            return;
        };
        let seen = self.pods.entry(name).or_default();
        let node = pod.spec.as_ref().map_or("", |s| s.node_name.as_str());
        if !node.is_empty() && seen.bound.is_none() {
            seen.bound = Some(now);
            seen.node = node.to_string();
            self.bound += 1;
        }
        let phase = pod.status.as_ref().map_or("", |s| s.phase.as_str());
        if phase == "Running" && seen.running.is_none() {
            seen.running = Some(now);
            self.running += 1;
        }
        if deleted && seen.deleted.is_none() {
            seen.deleted = Some(now);
            self.deleted += 1;
        }
    }

    /// Pods per node, of those seen bound.
    pub fn per_node(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for s in self.pods.values().filter(|s| s.bound.is_some()) {
            *out.entry(s.node.clone()).or_insert(0) += 1;
        }
        out
    }
}

/// A running watch of one namespace's pods.
pub struct PodWatch {
    pub tracker: Arc<Mutex<Tracker>>,
    changed: Arc<Notify>,
    cancel: CancellationToken,
    tasks: tokio::task::JoinSet<()>,
}

impl PodWatch {
    /// Starts the informer on `namespace` and returns once its first list is in, so that what
    /// is created afterwards is seen as it happens.
    pub async fn start(
        client: &Client,
        namespace: &str,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let informer = Informer::new(
            Api::<Pod>::namespaced(client.clone().with_request_timeout(None), namespace),
            InformerConfig::default(),
        );
        let store = informer.store();
        let mut events = informer.subscribe();
        let (tracker, changed, cancel) = (
            Arc::new(Mutex::new(Tracker::default())),
            Arc::new(Notify::new()),
            CancellationToken::new(),
        );
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(informer.run(cancel.child_token()));
        let (t, n) = (tracker.clone(), changed.clone());
        tasks.spawn(async move {
            while let Some(ev) = events.recv().await {
                let now = Instant::now();
                {
                    let mut t = t.lock().unwrap();
                    match ev {
                        Event::Added(p) => t.observe(&p, false, now),
                        Event::Updated { new, .. } => t.observe(&new, false, now),
                        Event::Deleted(p) => t.observe(&p, true, now),
                    }
                }
                n.notify_waiters();
            }
        });
        let deadline = Instant::now() + timeout;
        tokio::time::timeout(timeout, store.wait_synced())
            .await
            .with_context(|| {
                format!("the watch of namespace {namespace} did not sync within {timeout:?}")
            })?;
        let watch = PodWatch {
            tracker,
            changed,
            cancel,
            tasks,
        };
        // The listed pods reach the tracker through the subscription: wait for them too, so
        // that the tracker is complete when this returns.
        let listed = store.len();
        if !watch.wait_for(deadline, |t| t.pods.len() >= listed).await {
            anyhow::bail!(
                "the watch of namespace {namespace} did not report its {listed} listed pods within {timeout:?}"
            );
        }
        Ok(watch)
    }

    /// Waits until `done` holds for the tracker or `deadline` passes; returns whether it held.
    pub async fn wait_for(&self, deadline: Instant, done: impl Fn(&Tracker) -> bool) -> bool {
        loop {
            let notified = self.changed.notified();
            if done(&self.tracker.lock().unwrap()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
        }
    }

    pub async fn stop(mut self) {
        self.cancel.cancel();
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// `conns` clients from the kubeconfig, each its own connection (clones of one client share
/// its channel), with `request_timeout` per call and kl-client's default retries.
pub fn clients(
    kubeconfig: &Path,
    conns: usize,
    request_timeout: Duration,
) -> anyhow::Result<Vec<Client>> {
    (0..conns.max(1))
        .map(|_| {
            Ok(Client::from_kubeconfig(Some(kubeconfig), None)
                .with_context(|| format!("--kubeconfig {}", kubeconfig.display()))?
                .with(ClientOptions::default().request_timeout(Some(request_timeout))))
        })
        .collect()
}

/// Creates the namespace unless it exists.
pub async fn ensure_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let ns = Namespace {
        api_version: "v1".into(),
        kind: "Namespace".into(),
        metadata: Some(ObjectMeta {
            name: name.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    match Api::<Namespace>::all(client.clone()).create(ns).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_already_exists() => Ok(()),
        Err(e) => Err(anyhow::anyhow!("creating namespace {name}: {e}")),
    }
}

/// A bench pod: one container running `command`, with the given requests (none when empty).
pub fn pod(namespace: &str, name: &str, command: &[String], requests: &[(&str, &str)]) -> Pod {
    Pod {
        api_version: "v1".into(),
        kind: "Pod".into(),
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: namespace.into(),
            labels: BTreeMap::from([("app".to_string(), "kl-bench".to_string())]),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "main".into(),
                command: command.to_vec(),
                resources: (!requests.is_empty()).then(|| ResourceRequirements {
                    requests: requests
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Milliseconds since the Unix epoch of `at`, an instant of this process.
pub fn unix_ms(at: Instant) -> f64 {
    let now_i = Instant::now();
    let now_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
        * 1000.0;
    if at <= now_i {
        now_s - (now_i - at).as_secs_f64() * 1000.0
    } else {
        now_s + (at - now_i).as_secs_f64() * 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kl_api::PodStatus;

    fn p(name: &str, node: &str, phase: &str) -> Pod {
        let mut p = pod("ns", name, &["sleep".into(), "1".into()], &[]);
        p.spec.as_mut().unwrap().node_name = node.into();
        p.status = Some(PodStatus {
            phase: phase.into(),
            ..Default::default()
        });
        p
    }

    #[test]
    fn stamps_each_stage_once() {
        let mut t = Tracker::default();
        let t0 = Instant::now();
        t.observe(&p("a", "", "Pending"), false, t0);
        assert_eq!((t.bound, t.running), (0, 0));
        let t1 = t0 + Duration::from_millis(5);
        t.observe(&p("a", "n1", "Pending"), false, t1);
        t.observe(
            &p("a", "n1", "Running"),
            false,
            t1 + Duration::from_millis(5),
        );
        t.observe(
            &p("a", "n1", "Running"),
            false,
            t1 + Duration::from_millis(9),
        );
        t.observe(&p("b", "n1", "Running"), false, t1);
        assert_eq!((t.bound, t.running, t.deleted), (2, 2, 0));
        assert_eq!(t.pods["a"].bound, Some(t1));
        assert_eq!(t.pods["a"].running, Some(t1 + Duration::from_millis(5)));
        assert_eq!(t.per_node(), BTreeMap::from([("n1".to_string(), 2)]));
        t.observe(&p("a", "n1", "Running"), true, t1);
        assert_eq!(t.deleted, 1);
        let requested = pod("ns", "x", &[], &[("cpu", "100m")]);
        let c = &requested.spec.unwrap().containers[0];
        assert_eq!(c.resources.as_ref().unwrap().requests["cpu"], "100m");
        assert!(pod("ns", "y", &[], &[]).spec.unwrap().containers[0]
            .resources
            .is_none());
    }
}

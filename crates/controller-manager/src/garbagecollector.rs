//! The garbage collector (upstream's `pkg/controller/garbagecollector`), for the ownership
//! kube-lite has: pods owned by ReplicaSets.
//!
//! * **Background cascade**: a pod whose every ReplicaSet owner is gone is deleted. "Gone" is
//!   decided by a live read of each owner (absent, or present with another uid), never by the
//!   cache alone: a ReplicaSet created a moment ago may not be in this informer yet while its
//!   first pods already are. Owners of kinds kube-lite does not serve are left alone.
//! * **Orphan** (`propagationPolicy: Orphan`, kubectl's `--cascade=orphan`): the apiserver
//!   gave the owner the `orphan` finalizer and a deletionTimestamp. The collector removes the
//!   owner's references from every dependent, then the finalizer; the apiserver then removes
//!   the owner, and the dependents live on without it.
//!
//! Work items are `pod:<ns>/<name>` and `rs:<ns>/<name>` keys on one rate-limited queue.
//! Every write is fenced and goes through [`Ctx::write`].
use std::sync::Arc;

use kl_api::{Pod, ReplicaSet};
use kl_client::informer::{key_of, split_key, Event};
use kl_client::{DeleteParams, WorkQueue};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::context::{Ctx, SyncError};

/// The finalizer an orphaning delete puts on the owner (upstream's
/// `metav1.FinalizerOrphanDependents`).
pub const FINALIZER_ORPHAN: &str = "orphan";

/// Workers: deletes are independent, a few in parallel keep a large cascade quick.
const WORKERS: usize = 4;

struct Collector {
    ctx: Ctx,
    queue: WorkQueue<String>,
}

/// Runs until the term ends.
pub async fn run(
    ctx: Ctx,
    mut rs_events: UnboundedReceiver<Event<ReplicaSet>>,
    mut pod_events: UnboundedReceiver<Event<Pod>>,
) {
    let cancel = ctx.cancel.clone();
    tokio::select! {
        _ = cancel.cancelled() => return,
        _ = async {
            ctx.caches.replicasets.wait_synced().await;
            ctx.caches.pods.wait_synced().await;
        } => {}
    }
    info!("garbage collector started");
    let c = Arc::new(Collector {
        ctx,
        queue: WorkQueue::default(),
    });
    let mut tasks = JoinSet::new();
    for _ in 0..WORKERS {
        let c = c.clone();
        tasks.spawn(async move { c.worker().await });
    }
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            ev = rs_events.recv() => match ev {
                Some(ev) => c.on_rs_event(ev),
                None => break,
            },
            ev = pod_events.recv() => match ev {
                Some(Event::Deleted(_)) => {}
                Some(ev) => {
                    if has_rs_owner(ev.object()) {
                        c.queue.add(format!("pod:{}", ev.key()));
                    }
                }
                None => break,
            },
        }
    }
    c.queue.shut_down();
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

fn has_rs_owner(p: &Pod) -> bool {
    p.metadata
        .as_ref()
        .is_some_and(|m| m.owner_references.iter().any(|r| r.kind == "ReplicaSet"))
}

impl Collector {
    fn on_rs_event(&self, ev: Event<ReplicaSet>) {
        let rs = ev.object().clone();
        let meta = rs.metadata.clone().unwrap_or_default();
        match ev {
            Event::Deleted(_) => {
                // Its dependents may now be garbage.
                for p in self.dependents(&meta.namespace, &meta.uid) {
                    self.queue.add(format!("pod:{}", key_of(p.as_ref())));
                }
            }
            _ => {
                if !meta.deletion_timestamp.is_empty()
                    && meta.finalizers.iter().any(|f| f == FINALIZER_ORPHAN)
                {
                    self.queue.add(format!("rs:{}", key_of(rs.as_ref())));
                }
            }
        }
    }

    /// Cached pods of `namespace` with an ownerReference to `uid`.
    fn dependents(&self, namespace: &str, uid: &str) -> Vec<Arc<Pod>> {
        self.ctx
            .caches
            .pods
            .list_namespace(namespace)
            .into_iter()
            .filter(|p| {
                p.metadata
                    .as_ref()
                    .is_some_and(|m| m.owner_references.iter().any(|r| r.uid == uid))
            })
            .collect()
    }

    async fn worker(&self) {
        while let Some(item) = self.queue.get().await {
            let r = match item.split_once(':') {
                Some(("pod", key)) => self.collect_pod(key).await,
                Some(("rs", key)) => self.orphan_dependents(key).await,
                _ => Ok(()),
            };
            let result = if r.is_ok() { "success" } else { "error" };
            self.ctx
                .metrics
                .syncs
                .with_label_values(&["garbagecollector", result])
                .inc();
            match r {
                Ok(()) => self.queue.forget(&item),
                Err(SyncError::Stopped) => {
                    self.queue.done(&item);
                    return;
                }
                Err(e) => {
                    debug!(item = %item, error = %e, "garbage collection failed; requeued");
                    self.queue.add_rate_limited(item.clone());
                }
            }
            self.queue.done(&item);
        }
    }

    /// Deletes the pod if every ReplicaSet owner of it is gone (live reads).
    async fn collect_pod(&self, key: &str) -> Result<(), SyncError> {
        let Some(pod) = self.ctx.caches.pods.get(key) else {
            return Ok(());
        };
        let meta = pod.metadata.clone().unwrap_or_default();
        if !meta.deletion_timestamp.is_empty() || meta.owner_references.is_empty() {
            return Ok(());
        }
        let (ns, name) = split_key(key);
        let rs_api = self.ctx.api::<ReplicaSet>(ns);
        for r in &meta.owner_references {
            if r.kind != "ReplicaSet" {
                // An owner kube-lite cannot look up: never collect on a guess.
                return Ok(());
            }
            // The cache seeing the owner is enough to keep the pod; only its absence is
            // confirmed live.
            let cached = self.ctx.caches.replicasets.get_named(ns, &r.name);
            if cached.is_some_and(|o| o.metadata.as_ref().is_some_and(|m| m.uid == r.uid)) {
                return Ok(());
            }
            let owner = rs_api.get_opt(&r.name).await?;
            let same = owner.is_some_and(|o| o.metadata.is_some_and(|m| m.uid == r.uid));
            if same {
                return Ok(());
            }
        }
        let api = self.ctx.api::<Pod>(ns);
        let dp = DeleteParams::default().precondition_uid(&meta.uid);
        match self
            .ctx
            .write("delete dependent", api.delete(name, &dp))
            .await
        {
            Ok(_) => {
                info!(pod = %key, "deleted: every owner is gone (background cascade)");
                Ok(())
            }
            Err(SyncError::Api(e)) if e.is_not_found() || e.is_conflict() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Removes the deleting ReplicaSet's references from its dependents, then its `orphan`
    /// finalizer.
    async fn orphan_dependents(&self, key: &str) -> Result<(), SyncError> {
        let (ns, name) = split_key(key);
        let rs_api = self.ctx.api::<ReplicaSet>(ns);
        // Live: the finalizer may be gone already, and the uid decides which references go.
        let Some(rs) = rs_api.get_opt(name).await? else {
            return Ok(());
        };
        let meta = rs.metadata.clone().unwrap_or_default();
        if meta.deletion_timestamp.is_empty()
            || !meta.finalizers.iter().any(|f| f == FINALIZER_ORPHAN)
        {
            return Ok(());
        }
        let pod_api = self.ctx.api::<Pod>(ns);
        // The cache may lag pods created just before the delete: list live.
        let pods = pod_api.list_all(&Default::default()).await?;
        for p in pods.items {
            let refs = p.metadata.as_ref().map_or(0, |m| {
                m.owner_references
                    .iter()
                    .filter(|r| r.uid == meta.uid)
                    .count()
            });
            if refs == 0 {
                continue;
            }
            let pod_name = p
                .metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default();
            let mut next = p;
            if let Some(m) = next.metadata.as_mut() {
                m.owner_references.retain(|r| r.uid != meta.uid);
            }
            match self
                .ctx
                .write("orphan dependent", pod_api.update(next))
                .await
            {
                Ok(_) => info!(pod = %pod_name, owner = %key, "orphaned"),
                Err(SyncError::Api(e)) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        let mut next = rs;
        if let Some(m) = next.metadata.as_mut() {
            m.finalizers.retain(|f| f != FINALIZER_ORPHAN);
        }
        match self
            .ctx
            .write("remove orphan finalizer", rs_api.update(next))
            .await
        {
            Ok(_) => {
                info!(rs = %key, "dependents orphaned; orphan finalizer removed");
                Ok(())
            }
            Err(SyncError::Api(e)) if e.is_not_found() => Ok(()),
            Err(e) => {
                warn!(rs = %key, error = %e, "removing the orphan finalizer failed");
                Err(e)
            }
        }
    }
}

//! The ReplicaSet controller (upstream's `pkg/controller/replicaset`): keeps exactly
//! `spec.replicas` active pods (not terminating, not finished) matching each ReplicaSet's
//! selector.
//!
//! * **Ownership, as upstream's ControllerRefManager**: a pod whose controller ownerReference
//!   names the ReplicaSet (by uid) is its own while it matches the selector, and is released
//!   (the reference removed) when it no longer does; an active matching pod with no
//!   controller is adopted (the reference added), after a live read confirms the ReplicaSet
//!   is not being deleted; a pod controlled by anything else is left alone.
//! * **Creating**: from the template, with `generateName: <rs>-` and a controller
//!   ownerReference (`controller: true`, `blockOwnerDeletion: true`), in slow-start batches
//!   (1, 2, 4, ...) so that a failing create does not fail 500 times. **Deleting** surplus
//!   pods: unscheduled first, then pending, then not ready, then most restarted, then newest.
//! * **Expectations** ([`crate::expectations`]): after asking for n creates or deletes, the
//!   ReplicaSet is not managed again until the informer has shown all of them (or 5 minutes
//!   passed), so a lagging watch never causes a double create.
//! * **Status** (UpdateStatus): replicas, readyReplicas, availableReplicas (minReadySeconds 0:
//!   ready = available), observedGeneration.
//!
//! Every write is fenced and goes through [`Ctx::write`].
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::join_all;
use kl_api::validation::selector_matches;
use kl_api::{ObjectMeta, OwnerReference, Pod, ReplicaSet, ReplicaSetStatus};
use kl_client::informer::{key_of, make_key, split_key, Event};
use kl_client::{DeleteParams, WorkQueue};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinSet;

/// The Events' source, as upstream's controller names itself.
const COMPONENT: &str = "replicaset-controller";
use tracing::{debug, info, info_span, warn, Instrument};

use crate::context::{controller_ref, pod_is_active, pod_is_ready, Ctx, SyncError};
use crate::expectations::Expectations;

/// At most this many creates or deletes per sync (upstream's `BurstReplicas`).
pub const BURST_REPLICAS: usize = 500;

/// The controller's state for one term.
pub struct ReplicaSetController {
    ctx: Ctx,
    queue: WorkQueue<String>,
    expectations: Expectations,
}

/// Runs the controller until the term ends: one task turns informer events into queued
/// ReplicaSet keys, `--concurrent-replicaset-syncs` workers sync them.
pub async fn run(
    ctx: Ctx,
    mut rs_events: UnboundedReceiver<Event<ReplicaSet>>,
    mut pod_events: UnboundedReceiver<Event<Pod>>,
) {
    let c = Arc::new(ReplicaSetController {
        queue: WorkQueue::default(),
        expectations: Expectations::default(),
        ctx,
    });
    let cancel = c.ctx.cancel.clone();
    // Managing from a partial cache would create pods that exist: wait for both lists.
    tokio::select! {
        _ = cancel.cancelled() => return,
        _ = async {
            c.ctx.caches.replicasets.wait_synced().await;
            c.ctx.caches.pods.wait_synced().await;
        } => {}
    }
    info!(
        workers = c.ctx.config.concurrent_replicaset_syncs,
        "replicaset controller started"
    );
    let mut tasks = JoinSet::new();
    for _ in 0..c.ctx.config.concurrent_replicaset_syncs {
        let c = c.clone();
        tasks.spawn(async move { c.worker().await });
    }
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            ev = rs_events.recv() => match ev {
                Some(ev) => c.queue.add(ev.key()),
                None => break,
            },
            ev = pod_events.recv() => match ev {
                Some(ev) => c.on_pod_event(ev),
                None => break,
            },
        }
    }
    c.queue.shut_down();
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

impl ReplicaSetController {
    async fn worker(&self) {
        while let Some(key) = self.queue.get().await {
            let span = info_span!("sync replicaset", rs = %key);
            let r = self.sync(&key).instrument(span).await;
            let result = if r.is_ok() { "success" } else { "error" };
            self.ctx
                .metrics
                .syncs
                .with_label_values(&["replicaset", result])
                .inc();
            match r {
                Ok(()) => self.queue.forget(&key),
                Err(SyncError::Stopped) => {
                    self.queue.done(&key);
                    return;
                }
                Err(e) => {
                    if e.is_conflict() {
                        debug!(rs = %key, error = %e, "sync conflicted; requeued");
                    } else {
                        warn!(rs = %key, error = %e, "sync failed; requeued with backoff");
                    }
                    self.queue.add_rate_limited(key.clone());
                }
            }
            self.queue.done(&key);
        }
    }

    /// The ReplicaSet (cached) that `r` names, if it still is that one (uid).
    fn resolve(&self, namespace: &str, r: &OwnerReference) -> Option<Arc<ReplicaSet>> {
        if r.kind != "ReplicaSet" {
            return None;
        }
        let rs = self.ctx.caches.replicasets.get_named(namespace, &r.name)?;
        (rs.metadata.as_ref().map(|m| m.uid.as_str()) == Some(r.uid.as_str())).then_some(rs)
    }

    /// Every cached ReplicaSet of the pod's namespace whose selector matches it.
    fn matching_sets(&self, pod: &Pod) -> Vec<String> {
        let meta = pod.metadata.clone().unwrap_or_default();
        self.ctx
            .caches
            .replicasets
            .list_namespace(&meta.namespace)
            .iter()
            .filter(|rs| selects(rs, &meta.labels))
            .map(|rs| key_of(rs.as_ref()))
            .collect()
    }

    fn on_pod_event(&self, ev: Event<Pod>) {
        match ev {
            Event::Added(p) => {
                if is_terminating(&p) {
                    return self.on_pod_gone(&p);
                }
                let ns = namespace(&p);
                match controller_ref(p.metadata.as_ref()) {
                    Some(r) => {
                        if let Some(rs) = self.resolve(&ns, r) {
                            let k = key_of(rs.as_ref());
                            self.expectations.creation_observed(&k);
                            self.queue.add(k);
                        }
                    }
                    None => {
                        for k in self.matching_sets(&p) {
                            self.queue.add(k);
                        }
                    }
                }
            }
            Event::Updated { old, new } => {
                let ns = namespace(&new);
                if is_terminating(&new) && !is_terminating(&old) {
                    // Upstream: a pod marked for deletion counts as deleted now.
                    self.on_pod_gone(&new);
                }
                let old_ref = controller_ref(old.metadata.as_ref()).cloned();
                let new_ref = controller_ref(new.metadata.as_ref()).cloned();
                if old_ref != new_ref {
                    if let Some(rs) = old_ref.as_ref().and_then(|r| self.resolve(&ns, r)) {
                        self.queue.add(key_of(rs.as_ref()));
                    }
                }
                match new_ref {
                    Some(r) => {
                        if let Some(rs) = self.resolve(&ns, &r) {
                            self.queue.add(key_of(rs.as_ref()));
                        }
                    }
                    None => {
                        let labels_changed = old.metadata.as_ref().map(|m| &m.labels)
                            != new.metadata.as_ref().map(|m| &m.labels);
                        if labels_changed || old_ref.is_some() || rv(&old) == rv(&new) {
                            for k in self.matching_sets(&new) {
                                self.queue.add(k);
                            }
                        }
                    }
                }
            }
            Event::Deleted(p) => self.on_pod_gone(&p),
        }
    }

    /// A pod was deleted or marked for deletion: a deletion its owner may expect.
    fn on_pod_gone(&self, p: &Pod) {
        let ns = namespace(p);
        if let Some(rs) = controller_ref(p.metadata.as_ref()).and_then(|r| self.resolve(&ns, r)) {
            let k = key_of(rs.as_ref());
            self.expectations.deletion_observed(&k, &key_of(p));
            self.queue.add(k);
        }
    }

    /// One reconcile of the ReplicaSet `key`.
    async fn sync(&self, key: &str) -> Result<(), SyncError> {
        let Some(rs) = self.ctx.caches.replicasets.get(key) else {
            self.expectations.delete(key);
            return Ok(());
        };
        let (ns, name) = split_key(key);
        let meta = rs.metadata.clone().unwrap_or_default();
        let deleting = !meta.deletion_timestamp.is_empty();
        let needs_sync = self.expectations.satisfied(key);

        let mut owned: Vec<Arc<Pod>> = Vec::new();
        let mut can_adopt: Option<bool> = None;
        for pod in self.ctx.caches.pods.list_namespace(ns) {
            let labels = pod
                .metadata
                .as_ref()
                .map(|m| m.labels.clone())
                .unwrap_or_default();
            let matches = selects(&rs, &labels);
            match controller_ref(pod.metadata.as_ref()) {
                Some(r) if r.uid == meta.uid => {
                    if matches {
                        owned.push(pod);
                    } else if !deleting {
                        self.release(&pod, &meta.uid).await?;
                    }
                }
                Some(_) => {}
                None if matches && pod_is_active(&pod) && !deleting => {
                    if can_adopt.is_none() {
                        can_adopt = Some(self.can_adopt(ns, name, &meta.uid).await?);
                    }
                    if can_adopt == Some(true) {
                        if let Some(p) = self.adopt(&pod, &rs).await? {
                            owned.push(Arc::new(p));
                        }
                    }
                }
                None => {}
            }
        }
        let active: Vec<Arc<Pod>> = owned.into_iter().filter(|p| pod_is_active(p)).collect();
        let managed = if needs_sync && !deleting {
            self.manage(key, &rs, &active).await
        } else {
            Ok(())
        };
        // Status is written even when managing failed, as upstream.
        let status = self.update_status(&rs, &active).await;
        managed.and(status)
    }

    /// Upstream's `canAdoptFunc`: a live read (not the cache) says the ReplicaSet is still
    /// this one and not being deleted.
    async fn can_adopt(&self, ns: &str, name: &str, uid: &str) -> Result<bool, SyncError> {
        let fresh = self.ctx.api::<ReplicaSet>(ns).get_opt(name).await?;
        Ok(fresh.is_some_and(|rs| {
            rs.metadata
                .as_ref()
                .is_some_and(|m| m.uid == uid && m.deletion_timestamp.is_empty())
        }))
    }

    async fn adopt(&self, pod: &Pod, rs: &ReplicaSet) -> Result<Option<Pod>, SyncError> {
        let mut p = pod.clone();
        p.metadata
            .get_or_insert_with(Default::default)
            .owner_references
            .push(owner_ref(rs));
        let ns = namespace(pod);
        let api = self.ctx.api::<Pod>(&ns);
        match self.ctx.write("adopt pod", api.update(p)).await {
            Ok(p) => {
                info!(pod = %key_of(pod), "adopted");
                Ok(Some(p))
            }
            Err(e) if e.is_conflict() => Ok(None),
            Err(SyncError::Api(e)) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn release(&self, pod: &Pod, uid: &str) -> Result<(), SyncError> {
        let mut p = pod.clone();
        if let Some(m) = p.metadata.as_mut() {
            m.owner_references.retain(|r| r.uid != uid);
        }
        let api = self.ctx.api::<Pod>(&namespace(pod));
        match self.ctx.write("release pod", api.update(p)).await {
            Ok(_) => {
                info!(pod = %key_of(pod), "released: no longer matches the selector");
                Ok(())
            }
            Err(SyncError::Api(e)) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Creates or deletes pods so that `active` reaches `spec.replicas`.
    async fn manage(
        &self,
        key: &str,
        rs: &ReplicaSet,
        active: &[Arc<Pod>],
    ) -> Result<(), SyncError> {
        let want = rs
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(1)
            .max(0) as usize;
        let have = active.len();
        let ns = namespace_of(rs.metadata.as_ref());
        let api = self.ctx.api::<Pod>(&ns);
        if have < want {
            let n = (want - have).min(BURST_REPLICAS);
            info!(have, want, creating = n, "too few replicas");
            self.expectations.expect_creations(key, n);
            let template = pod_from_template(rs);
            let mut remaining = n;
            let mut batch = 1;
            while remaining > 0 {
                let size = batch.min(remaining);
                let results = join_all((0..size).map(|_| {
                    let api = api.clone();
                    let pod = template.clone();
                    async move { self.ctx.write("create pod", api.create(pod)).await }
                }))
                .await;
                remaining -= size;
                let mut first_err = None;
                for r in results {
                    match r {
                        Ok(p) => {
                            debug!(pod = %key_of(&p), "created");
                            let name = p.metadata.as_ref().map_or("", |m| m.name.as_str());
                            self.ctx
                                .event(
                                    COMPONENT,
                                    rs,
                                    "Normal",
                                    "SuccessfulCreate",
                                    &format!("Created pod: {name}"),
                                )
                                .await;
                        }
                        Err(SyncError::Api(e))
                            if e.is_transport()
                                || matches!(e, kl_client::ApiError::Timeout { .. }) =>
                        {
                            // It may have been created: the informer will say (upstream treats
                            // a timeout the same way).
                            warn!(error = %e, "pod create outcome unknown; waiting for the watch");
                            first_err.get_or_insert(SyncError::Api(e));
                        }
                        Err(e) => {
                            self.expectations.creation_observed(key);
                            if let SyncError::Api(api_err) = &e {
                                self.ctx
                                    .event(
                                        COMPONENT,
                                        rs,
                                        "Warning",
                                        "FailedCreate",
                                        &format!("Error creating: {api_err}"),
                                    )
                                    .await;
                            }
                            first_err.get_or_insert(e);
                        }
                    }
                }
                if let Some(e) = first_err {
                    // The creates never sent will not be observed either.
                    for _ in 0..remaining {
                        self.expectations.creation_observed(key);
                    }
                    return Err(e);
                }
                batch *= 2;
            }
        } else if have > want {
            let n = (have - want).min(BURST_REPLICAS);
            let mut ranked: Vec<&Arc<Pod>> = active.iter().collect();
            ranked.sort_by(|a, b| deletion_order(a, b));
            let victims: Vec<&Arc<Pod>> = ranked.into_iter().take(n).collect();
            info!(have, want, deleting = n, "too many replicas");
            self.expectations
                .expect_deletions(key, victims.iter().map(|p| key_of(p.as_ref())));
            let results = join_all(victims.iter().map(|p| {
                let api = api.clone();
                let meta = p.metadata.clone().unwrap_or_default();
                async move {
                    let dp = DeleteParams::default().precondition_uid(&meta.uid);
                    (
                        make_key(&meta.namespace, &meta.name),
                        self.ctx
                            .write("delete pod", api.delete(&meta.name, &dp))
                            .await,
                    )
                }
            }))
            .await;
            let mut first_err = None;
            for (pod_key, r) in results {
                match r {
                    Ok(_) => {
                        debug!(pod = %pod_key, "deleted");
                        let name = pod_key.rsplit('/').next().unwrap_or_default();
                        self.ctx
                            .event(
                                COMPONENT,
                                rs,
                                "Normal",
                                "SuccessfulDelete",
                                &format!("Deleted pod: {name}"),
                            )
                            .await;
                    }
                    Err(SyncError::Api(e)) if e.is_not_found() => {
                        self.expectations.deletion_observed(key, &pod_key)
                    }
                    Err(e) => {
                        self.expectations.deletion_observed(key, &pod_key);
                        first_err.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = first_err {
                return Err(e);
            }
        }
        Ok(())
    }

    async fn update_status(&self, rs: &ReplicaSet, active: &[Arc<Pod>]) -> Result<(), SyncError> {
        let ready = active.iter().filter(|p| pod_is_ready(p)).count() as i32;
        let status = ReplicaSetStatus {
            replicas: active.len() as i32,
            ready_replicas: ready,
            available_replicas: ready,
            observed_generation: rs.metadata.as_ref().map_or(0, |m| m.generation),
        };
        if rs.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let meta = rs.metadata.clone().unwrap_or_default();
        let api = self.ctx.api::<ReplicaSet>(&meta.namespace);
        let mut next = rs.clone();
        next.status = Some(status);
        match self
            .ctx
            .write("update status", api.update_status(next))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_conflict() => {
                // Upstream retries once on a fresh copy.
                let Some(mut fresh) = api.get_opt(&meta.name).await? else {
                    return Ok(());
                };
                if fresh.metadata.as_ref().map(|m| &m.uid) != Some(&meta.uid) {
                    return Ok(());
                }
                fresh.status = Some(status);
                self.ctx
                    .write("update status", api.update_status(fresh))
                    .await
                    .map(|_| ())
            }
            Err(SyncError::Api(e)) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn namespace_of(meta: Option<&ObjectMeta>) -> String {
    meta.map(|m| m.namespace.clone()).unwrap_or_default()
}

fn namespace(p: &Pod) -> String {
    namespace_of(p.metadata.as_ref())
}

fn rv(p: &Pod) -> &str {
    p.metadata
        .as_ref()
        .map_or("", |m| m.resource_version.as_str())
}

fn is_terminating(p: &Pod) -> bool {
    p.metadata
        .as_ref()
        .is_some_and(|m| !m.deletion_timestamp.is_empty())
}

/// Whether `rs` selects these labels. An empty selector selects nothing (apps/v1 requires
/// one; this guards against adopting every pod of a namespace).
pub fn selects(rs: &ReplicaSet, labels: &BTreeMap<String, String>) -> bool {
    match rs.spec.as_ref().and_then(|s| s.selector.as_ref()) {
        Some(sel) if !sel.match_labels.is_empty() || !sel.match_expressions.is_empty() => {
            selector_matches(sel, labels)
        }
        _ => false,
    }
}

/// The controller reference a ReplicaSet puts on its pods.
pub fn owner_ref(rs: &ReplicaSet) -> OwnerReference {
    let meta = rs.metadata.clone().unwrap_or_default();
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: "ReplicaSet".into(),
        name: meta.name,
        uid: meta.uid,
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A new pod of `rs`: its template, `generateName: <rs>-`, its controller reference.
pub fn pod_from_template(rs: &ReplicaSet) -> Pod {
    let meta = rs.metadata.clone().unwrap_or_default();
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    Pod {
        metadata: Some(ObjectMeta {
            generate_name: format!("{}-", meta.name),
            namespace: meta.namespace.clone(),
            labels: tmeta.labels,
            annotations: tmeta.annotations,
            finalizers: tmeta.finalizers,
            owner_references: vec![owner_ref(rs)],
            ..Default::default()
        }),
        spec: template.spec,
        ..Default::default()
    }
}

/// Which surplus pod goes first (upstream's `ActivePods` order, the parts kube-lite has):
/// unscheduled before scheduled, Pending before Unknown before Running, not ready before
/// ready, more restarts before fewer, newer before older.
pub fn deletion_order(a: &Pod, b: &Pod) -> Ordering {
    let node = |p: &Pod| p.spec.as_ref().is_none_or(|s| s.node_name.is_empty());
    let phase = |p: &Pod| match p.status.as_ref().map_or("", |s| s.phase.as_str()) {
        "Pending" | "" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 3,
    };
    let restarts = |p: &Pod| {
        p.status.as_ref().map_or(0, |s| {
            s.container_statuses
                .iter()
                .map(|c| c.restart_count)
                .max()
                .unwrap_or(0)
        })
    };
    let created = |p: &Pod| {
        p.metadata
            .as_ref()
            .map(|m| m.creation_timestamp.clone())
            .unwrap_or_default()
    };
    // Unscheduled (true) first.
    node(b)
        .cmp(&node(a))
        .then(phase(a).cmp(&phase(b)))
        .then(pod_is_ready(a).cmp(&pod_is_ready(b)))
        .then(restarts(b).cmp(&restarts(a)))
        .then(created(b).cmp(&created(a)))
}

#[cfg(test)]
mod tests {
    use kl_api::{LabelSelector, PodCondition, PodSpec, PodStatus, ReplicaSetSpec};

    use super::*;

    fn pod(name: &str, node: &str, phase: &str, ready: bool, created: &str) -> Pod {
        Pod {
            metadata: Some(ObjectMeta {
                name: name.into(),
                creation_timestamp: created.into(),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                node_name: node.into(),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: phase.into(),
                conditions: vec![PodCondition {
                    r#type: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn surplus_pods_go_unscheduled_then_not_ready_then_newest() {
        let mut pods = [
            pod("old-ready", "n1", "Running", true, "2024-01-01T00:00:00Z"),
            pod("new-ready", "n1", "Running", true, "2024-01-02T00:00:00Z"),
            pod("not-ready", "n1", "Running", false, "2024-01-01T00:00:00Z"),
            pod("unscheduled", "", "Pending", false, "2023-01-01T00:00:00Z"),
            pod("pending", "n2", "Pending", false, "2023-01-01T00:00:00Z"),
        ];
        pods.sort_by(deletion_order);
        let names: Vec<&str> = pods
            .iter()
            .map(|p| p.metadata.as_ref().unwrap().name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "unscheduled",
                "pending",
                "not-ready",
                "new-ready",
                "old-ready"
            ]
        );
    }

    #[test]
    fn templates_become_owned_pods_and_empty_selectors_select_nothing() {
        let mut rs = ReplicaSet {
            metadata: Some(ObjectMeta {
                name: "web".into(),
                namespace: "default".into(),
                uid: "u1".into(),
                ..Default::default()
            }),
            spec: Some(ReplicaSetSpec {
                replicas: Some(2),
                selector: Some(LabelSelector {
                    match_labels: [("app".to_string(), "web".to_string())].into(),
                    ..Default::default()
                }),
                template: Some(kl_api::PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: [("app".to_string(), "web".to_string())].into(),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec::default()),
                }),
            }),
            ..Default::default()
        };
        let p = pod_from_template(&rs);
        let m = p.metadata.as_ref().unwrap();
        assert_eq!(m.generate_name, "web-");
        assert_eq!(m.owner_references[0].uid, "u1");
        assert_eq!(m.owner_references[0].controller, Some(true));
        assert_eq!(m.owner_references[0].block_owner_deletion, Some(true));
        assert!(selects(&rs, &m.labels));
        rs.spec.as_mut().unwrap().selector = Some(LabelSelector::default());
        assert!(!selects(&rs, &m.labels));
    }
}

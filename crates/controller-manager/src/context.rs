//! What every controller of one leadership term shares: the client, the term's fencing token
//! and cancellation, the shared informers' stores, and the one way to write ([`Ctx::write`]).
//!
//! A term's writes all go through [`Ctx::api`] (every write carries the fencing token) and
//! [`Ctx::write`] (no write starts once the term has ended, and one in flight is abandoned
//! the moment it ends). A `Fenced` answer ends the term at once: another leader exists.
use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use kl_api::{FencingToken, Lease, Node, OwnerReference, Pod, ReplicaSet, Resource};
use kl_client::{Api, ApiError, Client, Store};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::config::Config;
use crate::metrics::Metrics;

/// Why a sync did not finish.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("the leadership term ended")]
    Stopped,
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl SyncError {
    pub fn is_conflict(&self) -> bool {
        matches!(self, SyncError::Api(e) if e.is_conflict())
    }
}

/// The informer caches a term shares between its controllers.
#[derive(Clone)]
pub struct Caches {
    pub pods: Store<Pod>,
    pub replicasets: Store<ReplicaSet>,
    pub nodes: Store<Node>,
    /// Node Leases (namespace kube-node-lease).
    pub node_leases: Store<Lease>,
}

/// One term's context. Cheap to clone.
#[derive(Clone)]
pub struct Ctx {
    pub client: Client,
    /// Carried by every write; None when leader election is off.
    pub fencing: Option<FencingToken>,
    /// Cancelled when the term ends (or a write was fenced).
    pub cancel: CancellationToken,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub caches: Caches,
}

impl Ctx {
    /// Records an Event about `obj` from `component` (upstream's source names, e.g.
    /// `replicaset-controller`), best effort and fenced like every write of the term; nothing
    /// is recorded once the term has ended.
    pub async fn event<K: Resource>(
        &self,
        component: &str,
        obj: &K,
        type_: &str,
        reason: &str,
        message: &str,
    ) {
        if self.cancel.is_cancelled() {
            return;
        }
        // The host part of the election identity (`hostname_uuid`), as the Event's source.
        let host = self
            .config
            .leader_election
            .identity
            .split('_')
            .next()
            .unwrap_or_default()
            .to_owned();
        kl_client::events::Recorder::new(self.client.clone(), component, &host)
            .with_fencing(self.fencing.clone())
            .record_for(obj, type_, reason, message)
            .await;
    }

    /// The fenced API of kind `K` in `namespace` ("" for cluster-scoped kinds).
    pub fn api<K: Resource>(&self, namespace: &str) -> Api<K> {
        let api = Api::namespaced(self.client.clone(), namespace);
        match &self.fencing {
            Some(t) => api.with_fencing(t.clone()),
            None => api,
        }
    }

    /// Runs one write of this term: refused once the term has ended, abandoned if it ends
    /// meanwhile. A `Fenced` answer ends the term.
    pub async fn write<T>(
        &self,
        what: &str,
        fut: impl Future<Output = Result<T, ApiError>>,
    ) -> Result<T, SyncError> {
        if self.cancel.is_cancelled() {
            return Err(SyncError::Stopped);
        }
        let r = tokio::select! {
            biased;
            _ = self.cancel.cancelled() => return Err(SyncError::Stopped),
            r = fut => r,
        };
        match r {
            Err(e) if e.is_fenced() => {
                self.metrics.fenced_writes.inc();
                warn!(write = what, error = %e, "write refused (Fenced): another leader holds the lease; stopping every controller");
                self.cancel.cancel();
                Err(SyncError::Api(e))
            }
            r => r.map_err(SyncError::Api),
        }
    }
}

/// The ownerReference that is the object's controller, if any.
pub fn controller_ref(meta: Option<&kl_api::ObjectMeta>) -> Option<&OwnerReference> {
    meta?
        .owner_references
        .iter()
        .find(|r| r.controller == Some(true))
}

/// A pod counts toward its ReplicaSet (upstream's `IsPodActive`): not terminating, not
/// finished.
pub fn pod_is_active(p: &Pod) -> bool {
    let terminating = p
        .metadata
        .as_ref()
        .is_some_and(|m| !m.deletion_timestamp.is_empty());
    let phase = p.status.as_ref().map_or("", |s| s.phase.as_str());
    !terminating && phase != "Succeeded" && phase != "Failed"
}

/// Whether the pod's Ready condition is True.
pub fn pod_is_ready(p: &Pod) -> bool {
    p.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.r#type == "Ready" && c.status == "True")
    })
}

/// Kubernetes' Time text (`2006-01-02T15:04:05Z`), UTC.
pub fn rfc3339(t: SystemTime) -> String {
    let micro = kl_client::leader_election::micro_time(t);
    format!("{}Z", &micro[..19])
}

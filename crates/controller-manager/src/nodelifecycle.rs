//! The node-lifecycle controller (upstream's `pkg/controller/nodelifecycle`, with the
//! pod-eviction-timeout behaviour of its pre-taint-manager days).
//!
//! Every `--node-monitor-period` it looks at every node:
//!
//! * **Heartbeats, on this process's clock**: a node is alive when its Lease
//!   (`kube-node-lease/<node>`) or its Ready condition's lastHeartbeatTime *changed* since the
//!   last look. The time of the last observed change is taken from the local monotonic clock,
//!   never from the timestamps inside (clock skew between a kubelet and the masters does not
//!   matter). A node first seen counts as just heard from (upstream does the same), so a new
//!   leader gives every node a full grace period.
//! * **Silent for `--node-monitor-grace-period`**: every node condition becomes Unknown (Ready:
//!   reason `NodeStatusUnknown`, message `Kubelet stopped posting node status.`) and the node
//!   gets the `node.kubernetes.io/unreachable:NoExecute` taint.
//!   Its pods' Ready condition becomes False (upstream's `MarkPodsNotReady`); their kubelet
//!   sets it back when it reports again.
//! * **Unknown for `--pod-eviction-timeout`**: the node's pods are deleted (gracefully), so
//!   their ReplicaSets replace them elsewhere. A pod tolerating the unreachable NoExecute taint
//!   stays for its tolerationSeconds (forever without one).
//! * **Heard from again**: the taint is removed; the kubelet sets Ready itself.
//!
//! Every write is fenced and goes through [`Ctx::write`]; a failed write is retried at the
//! next period.
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use kl_api::{Node, NodeCondition, Pod, Taint};
use kl_client::informer::key_of;
use kl_client::DeleteParams;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::context::{rfc3339, Ctx, SyncError};

/// The taint a silent node gets.
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// Where kubelets keep their node Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// What this controller last saw of one node.
#[derive(Debug)]
struct Health {
    /// The Lease's renewTime (and resourceVersion) and the Ready heartbeat, as last seen.
    signature: (String, String),
    /// When `signature` last changed (local clock).
    heard: Instant,
    /// Since when this controller has considered the node Unknown.
    unknown_since: Option<Instant>,
}

/// Runs until the term ends.
pub async fn run(ctx: Ctx) {
    let cancel = ctx.cancel.clone();
    tokio::select! {
        _ = cancel.cancelled() => return,
        _ = async {
            ctx.caches.nodes.wait_synced().await;
            ctx.caches.node_leases.wait_synced().await;
            ctx.caches.pods.wait_synced().await;
        } => {}
    }
    info!(
        period = ?ctx.config.node_monitor_period,
        grace = ?ctx.config.node_monitor_grace_period,
        eviction = ?ctx.config.pod_eviction_timeout,
        "node lifecycle controller started"
    );
    let mut health: HashMap<String, Health> = HashMap::new();
    let mut tick = tokio::time::interval(ctx.config.node_monitor_period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        match monitor(&ctx, &mut health).await {
            Ok(()) => {}
            Err(SyncError::Stopped) => return,
            Err(e) => warn!(error = %e, "node monitoring failed; retrying next period"),
        }
    }
}

fn signature(ctx: &Ctx, node: &Node) -> (String, String) {
    let name = node.metadata.as_ref().map_or("", |m| m.name.as_str());
    let lease = ctx
        .caches
        .node_leases
        .get_named(NODE_LEASE_NAMESPACE, name)
        .map(|l| {
            let renew = l.spec.as_ref().map_or("", |s| s.renew_time.as_str());
            let rv = l
                .metadata
                .as_ref()
                .map_or("", |m| m.resource_version.as_str());
            format!("{renew}@{rv}")
        })
        .unwrap_or_default();
    let heartbeat = ready_condition(node)
        .map(|c| c.last_heartbeat_time.clone())
        .unwrap_or_default();
    (lease, heartbeat)
}

fn ready_condition(node: &Node) -> Option<&NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.r#type == "Ready")
}

fn has_unreachable_taint(node: &Node) -> bool {
    node.spec.as_ref().is_some_and(|s| {
        s.taints
            .iter()
            .any(|t| t.key == TAINT_UNREACHABLE && t.effect == "NoExecute")
    })
}

/// One look at every node.
async fn monitor(ctx: &Ctx, health: &mut HashMap<String, Health>) -> Result<(), SyncError> {
    let now = Instant::now();
    let grace = ctx.config.node_monitor_grace_period;
    let nodes = ctx.caches.nodes.list();
    health.retain(|name, _| nodes.iter().any(|n| key_of(n.as_ref()) == *name));
    let mut first_err = None;
    for node in nodes {
        let name = key_of(node.as_ref());
        let sig = signature(ctx, &node);
        let h = health.entry(name.clone()).or_insert_with(|| Health {
            signature: sig.clone(),
            heard: now,
            unknown_since: None,
        });
        if h.signature != sig {
            h.signature = sig;
            h.heard = now;
        }
        let silent = now.duration_since(h.heard) >= grace;
        let r = if silent {
            let since = *h.unknown_since.get_or_insert(now);
            let marked = match mark_unknown(ctx, &node).await {
                Ok(()) => mark_pods_not_ready(ctx, &name).await,
                Err(e) => Err(e),
            };
            marked.and(
                if now.duration_since(since) >= ctx.config.pod_eviction_timeout {
                    evict_pods(ctx, &name, now.duration_since(since)).await
                } else {
                    Ok(())
                },
            )
        } else {
            h.unknown_since = None;
            if has_unreachable_taint(&node) {
                remove_taint(ctx, &node).await
            } else {
                Ok(())
            }
        };
        match r {
            Err(SyncError::Stopped) => return Err(SyncError::Stopped),
            Err(e) => {
                first_err.get_or_insert(e);
            }
            Ok(()) => {}
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Ready (and every other condition) Unknown, and the unreachable taint, if not yet so.
async fn mark_unknown(ctx: &Ctx, node: &Node) -> Result<(), SyncError> {
    let name = key_of(node);
    let api = ctx.api::<Node>("");
    let now = rfc3339(SystemTime::now());
    let ready_unknown = ready_condition(node).is_some_and(|c| c.status == "Unknown");
    let mut current = node.clone();
    if !ready_unknown {
        let status = current.status.get_or_insert_with(Default::default);
        let mut saw_ready = false;
        for c in &mut status.conditions {
            if c.r#type == "Ready" {
                saw_ready = true;
            }
            if c.status != "Unknown" {
                c.status = "Unknown".into();
                c.last_transition_time = now.clone();
                c.reason = "NodeStatusUnknown".into();
                c.message = "Kubelet stopped posting node status.".into();
            }
        }
        if !saw_ready {
            status.conditions.push(NodeCondition {
                r#type: "Ready".into(),
                status: "Unknown".into(),
                reason: "NodeStatusNeverUpdated".into(),
                message: "Kubelet never posted node status.".into(),
                last_heartbeat_time: String::new(),
                last_transition_time: now.clone(),
            });
        }
        current = ctx
            .write("node status unknown", api.update_status(current))
            .await?;
        warn!(node = %name, "node stopped posting status: Ready=Unknown");
    }
    if !has_unreachable_taint(&current) {
        current
            .spec
            .get_or_insert_with(Default::default)
            .taints
            .push(Taint {
                key: TAINT_UNREACHABLE.into(),
                value: String::new(),
                effect: "NoExecute".into(),
                time_added: now,
            });
        ctx.write("taint node", api.update(current)).await?;
        info!(node = %name, taint = TAINT_UNREACHABLE, "tainted");
    }
    Ok(())
}

/// Upstream's `MarkPodsNotReady`: the pods of a node that stopped reporting are not Ready
/// (their endpoints would be taken out), until their kubelet reports them again.
async fn mark_pods_not_ready(ctx: &Ctx, node: &str) -> Result<(), SyncError> {
    let pods = ctx.caches.pods.filter(|p| {
        p.spec.as_ref().is_some_and(|s| s.node_name == node)
            && p.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.r#type == "Ready" && c.status == "True")
            })
    });
    let now = rfc3339(SystemTime::now());
    for pod in pods {
        let mut p = (*pod).clone();
        for c in p
            .status
            .get_or_insert_with(Default::default)
            .conditions
            .iter_mut()
        {
            if c.r#type == "Ready" {
                c.status = "False".into();
                c.last_transition_time = now.clone();
            }
        }
        let meta = p.metadata.clone().unwrap_or_default();
        let api = ctx.api::<Pod>(&meta.namespace);
        match ctx.write("mark pod not ready", api.update_status(p)).await {
            Ok(_) => {
                info!(pod = %key_of(pod.as_ref()), node, "marked NotReady: its node stopped reporting")
            }
            Err(SyncError::Api(e)) if e.is_not_found() || e.is_conflict() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn remove_taint(ctx: &Ctx, node: &Node) -> Result<(), SyncError> {
    let mut n = node.clone();
    if let Some(spec) = n.spec.as_mut() {
        spec.taints.retain(|t| t.key != TAINT_UNREACHABLE);
    }
    ctx.write("untaint node", ctx.api::<Node>("").update(n))
        .await?;
    info!(node = %key_of(node), taint = TAINT_UNREACHABLE, "node heard from again: taint removed");
    Ok(())
}

/// How long a pod may stay on an unreachable node: None = forever (it tolerates the taint
/// without a limit), else its tolerationSeconds, else the eviction timeout (already passed).
fn tolerated_for(pod: &Pod) -> Option<Option<Duration>> {
    let tolerations = pod.spec.as_ref().map(|s| s.tolerations.as_slice())?;
    tolerations
        .iter()
        .find(|t| {
            (t.key == TAINT_UNREACHABLE || (t.key.is_empty() && t.operator == "Exists"))
                && (t.effect.is_empty() || t.effect == "NoExecute")
        })
        .map(|t| {
            t.toleration_seconds
                .map(|s| Duration::from_secs(s.max(0) as u64))
        })
}

async fn evict_pods(ctx: &Ctx, node: &str, unknown_for: Duration) -> Result<(), SyncError> {
    let pods = ctx.caches.pods.filter(|p| {
        p.spec.as_ref().is_some_and(|s| s.node_name == node)
            && p.metadata
                .as_ref()
                .is_some_and(|m| m.deletion_timestamp.is_empty())
    });
    for pod in pods {
        match tolerated_for(&pod) {
            Some(None) => continue,
            Some(Some(limit)) if unknown_for < limit => continue,
            _ => {}
        }
        let meta = pod.metadata.clone().unwrap_or_default();
        let api = ctx.api::<Pod>(&meta.namespace);
        let dp = DeleteParams::default().precondition_uid(&meta.uid);
        match ctx.write("evict pod", api.delete(&meta.name, &dp)).await {
            Ok(_) => info!(pod = %key_of(pod.as_ref()), node, "evicted from an unreachable node"),
            Err(SyncError::Api(e)) if e.is_not_found() || e.is_conflict() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

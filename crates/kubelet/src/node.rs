//! The node's presence in the cluster: registration, the node Lease, node status.
//!
//! As upstream's kubelet with node leases:
//! * **Registration**: create the Node (labels, `--register-with-taints`, capacity); when it
//!   already exists (a restarted kubelet), keep its spec (cordon, taints set by others) and
//!   add this kubelet's labels.
//! * **Lease** `kube-node-lease/<node>`: renewed every quarter of `--node-lease-duration-seconds`
//!   (10 s for 40). This is the heartbeat the node-lifecycle controller watches.
//! * **Status**: computed every `--node-status-update-frequency`, posted when it changed or
//!   when `--node-status-report-frequency` passed, so an idle node does not write every 10 s.
//!
//! The same code serves one real node and each hollow node ([`crate::hollow`]); this module
//! never touches pods.
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use kl_api::{
    DaemonEndpoint, Lease, LeaseSpec, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints,
    NodeSpec, NodeStatus, ObjectMeta, OwnerReference, Taint,
};
use kl_client::leader_election::micro_time;
use kl_client::{Api, ApiError, Client};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Where kubelets keep their node Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// What a node says about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeIdentity {
    pub name: String,
    pub ip: IpAddr,
    /// This kubelet's HTTPS port (`status.daemonEndpoints.kubeletEndpoint.Port`).
    pub port: u16,
    /// `--node-labels` (the well-known ones are added by [`node_labels`]).
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    /// cpu, memory, pods.
    pub capacity: BTreeMap<String, String>,
}

/// The labels upstream's kubelet puts on its Node, plus `--node-labels`.
pub fn node_labels(id: &NodeIdentity) -> BTreeMap<String, String> {
    let mut labels = id.labels.clone();
    labels.insert("kubernetes.io/hostname".into(), id.name.clone());
    labels.insert("kubernetes.io/os".into(), std::env::consts::OS.into());
    labels.insert("kubernetes.io/arch".into(), go_arch().into());
    labels
}

/// GOARCH's spelling of this machine's architecture.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The Node this kubelet registers.
pub fn node_object(id: &NodeIdentity) -> Node {
    Node {
        api_version: "v1".into(),
        kind: "Node".into(),
        metadata: Some(ObjectMeta {
            name: id.name.clone(),
            labels: node_labels(id),
            ..Default::default()
        }),
        spec: Some(NodeSpec {
            unschedulable: false,
            taints: id.taints.clone(),
        }),
        status: Some(NodeStatus {
            capacity: id.capacity.clone(),
            allocatable: id.capacity.clone(),
            ..Default::default()
        }),
    }
}

/// Creates this node's Node, or adopts the existing one (adding this kubelet's labels). Returns
/// the Node's uid (for the Lease's owner reference).
pub async fn register(api: &Api<Node>, id: &NodeIdentity) -> Result<String, ApiError> {
    match api.create(node_object(id)).await {
        Ok(n) => {
            info!(node = %id.name, "registered node");
            Ok(uid_of(&n))
        }
        Err(e) if e.is_already_exists() => {
            let mut node = api.get(&id.name).await?;
            let meta = node.metadata.get_or_insert_with(Default::default);
            let wanted = node_labels(id);
            if wanted.iter().any(|(k, v)| meta.labels.get(k) != Some(v)) {
                meta.labels.extend(wanted);
                node = api.update(node).await?;
            }
            info!(node = %id.name, "node already registered; adopted it");
            Ok(uid_of(&node))
        }
        Err(e) => Err(e),
    }
}

fn uid_of(n: &Node) -> String {
    n.metadata
        .as_ref()
        .map(|m| m.uid.clone())
        .unwrap_or_default()
}

/// The node's status as this kubelet sees it now. `ready` is (ready, reason, message);
/// `previous` carries the conditions' lastTransitionTime over when their status is unchanged.
pub fn node_status(
    id: &NodeIdentity,
    ready: &(bool, String, String),
    previous: Option<&NodeStatus>,
    now: SystemTime,
) -> NodeStatus {
    let now_text = rfc3339(now);
    let (ok, reason, message) = ready;
    let status = if *ok { "True" } else { "False" };
    let transition = previous
        .and_then(|p| p.conditions.iter().find(|c| c.r#type == "Ready"))
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now_text.clone());
    let mut conditions = Vec::new();
    for (ty, reason, message) in [
        (
            "MemoryPressure",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        (
            "DiskPressure",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
        ),
        (
            "PIDPressure",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
    ] {
        let transition = previous
            .and_then(|p| p.conditions.iter().find(|c| c.r#type == ty))
            .filter(|c| c.status == "False")
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now_text.clone());
        conditions.push(NodeCondition {
            r#type: ty.into(),
            status: "False".into(),
            reason: reason.into(),
            message: message.into(),
            last_heartbeat_time: now_text.clone(),
            last_transition_time: transition,
        });
    }
    conditions.push(NodeCondition {
        r#type: "Ready".into(),
        status: status.into(),
        reason: reason.clone(),
        message: message.clone(),
        last_heartbeat_time: now_text.clone(),
        last_transition_time: transition,
    });
    NodeStatus {
        capacity: id.capacity.clone(),
        allocatable: id.capacity.clone(),
        conditions,
        addresses: vec![
            NodeAddress {
                r#type: "InternalIP".into(),
                address: id.ip.to_string(),
            },
            NodeAddress {
                r#type: "Hostname".into(),
                address: id.name.clone(),
            },
        ],
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(id.port),
            }),
        }),
        node_info: Some(node_info()),
    }
}

/// `status.nodeInfo`: what this machine and kubelet are.
fn node_info() -> kl_api::NodeSystemInfo {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let os_image = read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_default();
    kl_api::NodeSystemInfo {
        machine_id: read("/etc/machine-id"),
        boot_id: read("/proc/sys/kernel/random/boot_id"),
        kernel_version: read("/proc/sys/kernel/osrelease"),
        os_image,
        container_runtime_version: format!("kubelet-lite-process://{}", env!("CARGO_PKG_VERSION")),
        kubelet_version: format!("v{}", env!("CARGO_PKG_VERSION")),
        operating_system: std::env::consts::OS.into(),
        architecture: go_arch().into(),
        ..Default::default()
    }
}

/// The status minus heartbeat times: what decides whether a new post is needed.
fn status_signature(s: &NodeStatus) -> NodeStatus {
    let mut s = s.clone();
    for c in &mut s.conditions {
        c.last_heartbeat_time.clear();
    }
    s
}

/// Kubernetes' Time text (`2006-01-02T15:04:05Z`), UTC.
pub fn rfc3339(t: SystemTime) -> String {
    let micro = micro_time(t);
    format!("{}Z", &micro[..19])
}

/// The node Lease as its kubelet holds it.
pub fn lease_object(name: &str, node_uid: &str, duration_secs: u32, now: SystemTime) -> Lease {
    let owner = (!node_uid.is_empty()).then(|| OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: name.into(),
        uid: node_uid.into(),
        controller: None,
        block_owner_deletion: None,
    });
    Lease {
        api_version: "coordination.k8s.io/v1".into(),
        kind: "Lease".into(),
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: NODE_LEASE_NAMESPACE.into(),
            owner_references: owner.into_iter().collect(),
            ..Default::default()
        }),
        spec: Some(LeaseSpec {
            holder_identity: name.into(),
            lease_duration_seconds: Some(duration_secs as i32),
            renew_time: micro_time(now),
            ..Default::default()
        }),
    }
}

/// Renews (or creates) the node's Lease once. `last` is the Lease as this kubelet last wrote
/// it: as upstream's lease controller, a renewal is one Update of that copy, and only a
/// Conflict or a missing copy costs a Get first.
pub async fn renew_lease(
    api: &Api<Lease>,
    name: &str,
    node_uid: &str,
    duration_secs: u32,
    last: &mut Option<Lease>,
) -> Result<(), ApiError> {
    let now = SystemTime::now();
    let base = match last.take() {
        Some(l) => Some(l),
        None => api.get_opt(name).await?,
    };
    let written = match base {
        None => {
            api.create(lease_object(name, node_uid, duration_secs, now))
                .await?
        }
        Some(mut lease) => {
            let renewed = |lease: &mut Lease| {
                let spec = lease.spec.get_or_insert_with(Default::default);
                spec.holder_identity = name.into();
                spec.lease_duration_seconds = Some(duration_secs as i32);
                spec.renew_time = micro_time(now);
            };
            renewed(&mut lease);
            match api.update(lease).await {
                Ok(l) => l,
                Err(e) if e.is_conflict() || e.is_not_found() => {
                    // Changed or deleted by someone else: start again from the stored one.
                    match api.get_opt(name).await? {
                        None => {
                            api.create(lease_object(name, node_uid, duration_secs, now))
                                .await?
                        }
                        Some(mut fresh) => {
                            renewed(&mut fresh);
                            api.update(fresh).await?
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
    };
    *last = Some(written);
    Ok(())
}

/// How a heartbeat loop runs (the config's durations).
#[derive(Debug, Clone)]
pub struct Heartbeat {
    pub lease_duration_secs: u32,
    /// How often the Lease is renewed ([`crate::Config::lease_renew_interval`]).
    pub lease_renew_interval: Duration,
    pub status_update_frequency: Duration,
    pub status_report_frequency: Duration,
}

/// What the node says about its readiness: (ready, reason, message).
pub type ReadyFn = std::sync::Arc<dyn Fn() -> (bool, String, String) + Send + Sync>;

/// Registers the node, then keeps its Lease and status fresh until cancelled. Failures are
/// logged and retried at the next tick: a kubelet never gives up on its apiserver.
pub async fn run_heartbeat(
    client: Client,
    id: NodeIdentity,
    hb: Heartbeat,
    ready: ReadyFn,
    cancel: CancellationToken,
) {
    let nodes = Api::<Node>::all(client.clone());
    let leases = Api::<Lease>::namespaced(client, NODE_LEASE_NAMESPACE);
    let mut backoff = Duration::from_millis(200);
    let uid = loop {
        match register(&nodes, &id).await {
            Ok(uid) => break uid,
            Err(e) => {
                warn!(node = %id.name, error = %e, "registering the node failed; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(7));
            }
        }
    };
    let renew_every = hb.lease_renew_interval;
    let mut next_lease = Instant::now();
    let mut next_status = Instant::now();
    let mut posted: Option<(NodeStatus, Instant)> = None;
    let mut lease: Option<Lease> = None;
    loop {
        let now = Instant::now();
        if now >= next_lease {
            if let Err(e) =
                renew_lease(&leases, &id.name, &uid, hb.lease_duration_secs, &mut lease).await
            {
                warn!(node = %id.name, error = %e, "renewing the node lease failed");
                // As upstream: retry sooner than a full interval after a failure.
                next_lease = Instant::now() + renew_every.min(Duration::from_millis(200) * 5);
            } else {
                next_lease = Instant::now() + renew_every;
            }
        }
        if now >= next_status {
            next_status = now + hb.status_update_frequency;
            let status = node_status(
                &id,
                &ready(),
                posted.as_ref().map(|(s, _)| s),
                SystemTime::now(),
            );
            let due = match &posted {
                None => true,
                Some((prev, at)) => {
                    status_signature(prev) != status_signature(&status)
                        || at.elapsed() >= hb.status_report_frequency
                }
            };
            if due {
                match post_status(&nodes, &id, &status).await {
                    Ok(()) => posted = Some((status, Instant::now())),
                    Err(e) => warn!(node = %id.name, error = %e, "updating node status failed"),
                }
            }
        }
        let wake = next_lease.min(next_status);
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}

/// Writes the node's status (unconditionally: the kubelet owns it, as upstream's patch does).
async fn post_status(
    api: &Api<Node>,
    id: &NodeIdentity,
    status: &NodeStatus,
) -> Result<(), ApiError> {
    let node = Node {
        api_version: "v1".into(),
        kind: "Node".into(),
        metadata: Some(ObjectMeta {
            name: id.name.clone(),
            ..Default::default()
        }),
        spec: None,
        status: Some(status.clone()),
    };
    match api.update_status(node).await {
        Ok(_) => Ok(()),
        // Deleted under us (kubectl delete node): register again, as upstream does.
        Err(e) if e.is_not_found() => register(api, id).await.map(|_| ()),
        Err(e) => Err(e),
    }
}

/// This machine's capacity (cpu cores, memory in Ki as upstream reports it), with overrides.
pub fn machine_capacity(
    cpu: Option<&str>,
    memory: Option<&str>,
    max_pods: u32,
) -> BTreeMap<String, String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(1024 * 1024);
    BTreeMap::from([
        (
            "cpu".to_string(),
            cpu.map_or_else(|| cores.to_string(), str::to_string),
        ),
        (
            "memory".to_string(),
            memory.map_or_else(|| format!("{mem_kib}Ki"), str::to_string),
        ),
        ("pods".to_string(), max_pods.to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> NodeIdentity {
        NodeIdentity {
            name: "worker1".into(),
            ip: "127.0.0.1".parse().unwrap(),
            port: 10250,
            labels: BTreeMap::from([("zone".into(), "a".into())]),
            taints: vec![],
            capacity: machine_capacity(Some("4"), None, 110),
        }
    }

    #[test]
    fn node_carries_upstream_labels_and_capacity() {
        let n = node_object(&id());
        let labels = &n.metadata.as_ref().unwrap().labels;
        assert_eq!(labels["kubernetes.io/hostname"], "worker1");
        assert_eq!(labels["zone"], "a");
        let st = n.status.unwrap();
        assert_eq!(st.capacity["cpu"], "4");
        assert_eq!(st.capacity["pods"], "110");
        assert!(st.capacity["memory"].ends_with("Ki"));
    }

    #[test]
    fn status_keeps_transition_time_until_ready_flips() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let t1 = t0 + Duration::from_secs(10);
        let ready = (
            true,
            "KubeletReady".to_string(),
            "kubelet is posting ready status".to_string(),
        );
        let s0 = node_status(&id(), &ready, None, t0);
        let s1 = node_status(&id(), &ready, Some(&s0), t1);
        let r = |s: &NodeStatus| {
            s.conditions
                .iter()
                .find(|c| c.r#type == "Ready")
                .unwrap()
                .clone()
        };
        assert_eq!(r(&s1).last_transition_time, rfc3339(t0));
        assert_eq!(r(&s1).last_heartbeat_time, rfc3339(t1));
        assert_eq!(
            status_signature(&s0),
            status_signature(&s1),
            "only heartbeats differ"
        );
        let down = (false, "KubeletNotReady".to_string(), "x".to_string());
        let s2 = node_status(&id(), &down, Some(&s1), t1);
        assert_eq!(r(&s2).status, "False");
        assert_eq!(r(&s2).last_transition_time, rfc3339(t1));
        assert_eq!(
            s2.daemon_endpoints.unwrap().kubelet_endpoint.unwrap().port,
            10250
        );
    }
}

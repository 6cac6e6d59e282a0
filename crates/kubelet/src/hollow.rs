//! Hollow nodes: `--hollow-nodes N` runs N simulated nodes in one process, as kubemark does.
//!
//! Each hollow node registers, renews its Lease and posts its status exactly as a real node
//! does (the same [`crate::node`] code), so the control plane sees N ordinary nodes. Pods bound
//! to them start no process: a hollow node reports each one Running and Ready at once, and
//! confirms its deletion at once. They are for load: `scripts/bench hollow` (their footprint)
//! and `scripts/bench scheduler` run on them.
//!
//! One process, one API connection, one pod informer for all the nodes (upstream's kubemark
//! runs a whole kubelet per hollow node; this is far cheaper, and the apiserver sees the same
//! writes: a Lease renewal per node every 10 s, a status per pod).
use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use kl_api::{ContainerState, ContainerStateRunning, ContainerStatus, Pod};
use kl_client::informer::{Event, Informer, InformerConfig};
use kl_client::{Api, Client, DeleteParams};
use rand::Rng;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::node::{self, ReadyFn};
use crate::pods::pod_status;
use crate::run::{heartbeat, identity};

/// How many pod writes the hollow nodes have in flight at once.
const WRITERS: usize = 32;

/// The name of hollow node `i`: `<--hostname-override>-<i>` (default prefix `hollow-node`).
pub fn hollow_name(prefix: &str, i: u32) -> String {
    format!("{prefix}-{i}")
}

/// Runs `config.hollow_nodes` hollow nodes until `shutdown` completes.
pub async fn run(
    client: Client,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let names: Arc<HashSet<String>> = Arc::new(
        (0..config.hollow_nodes)
            .map(|i| hollow_name(&config.node_name, i))
            .collect(),
    );
    let hb = heartbeat(&config);
    let ready: ReadyFn = Arc::new(|| {
        (
            true,
            "KubeletReady".to_string(),
            "kubelet is posting ready status".to_string(),
        )
    });
    let spread = hb.lease_renew_interval;
    for name in names.iter() {
        let (client, id, hb, ready, cancel) = (
            client.clone(),
            identity(&config, name),
            hb.clone(),
            ready.clone(),
            stop.child_token(),
        );
        // Spread the nodes over one renew interval, so their writes do not come in bursts.
        let delay = spread.mul_f64(rand::thread_rng().gen_range(0.0..1.0));
        tasks.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            node::run_heartbeat(client, id, hb, ready, cancel).await;
        });
    }
    tasks.spawn(run_pods(
        client,
        names.clone(),
        config.node_ip,
        stop.child_token(),
    ));
    info!(nodes = names.len(), prefix = %config.node_name, "hollow nodes started");

    shutdown.await;
    info!("shutting down hollow nodes");
    stop.cancel();
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Reports pods bound to a hollow node Running, and confirms their deletions.
async fn run_pods(
    client: Client,
    names: Arc<HashSet<String>>,
    ip: std::net::IpAddr,
    cancel: CancellationToken,
) {
    let informer = Informer::new(
        Api::<Pod>::all(client.clone()),
        InformerConfig::default().fields("spec.nodeName!="),
    );
    let mut events = informer.subscribe();
    let informer_task = tokio::spawn(informer.run(cancel.child_token()));
    let writers = Arc::new(Semaphore::new(WRITERS));
    loop {
        let pod = tokio::select! {
            _ = cancel.cancelled() => break,
            ev = events.recv() => match ev {
                Some(Event::Added(p)) | Some(Event::Updated { new: p, .. }) => p,
                Some(Event::Deleted(_)) => continue,
                None => break,
            },
        };
        let node = pod
            .spec
            .as_ref()
            .map(|s| s.node_name.as_str())
            .unwrap_or("");
        if !names.contains(node) || !needs_write(&pod) {
            continue;
        }
        let Ok(permit) = writers.clone().acquire_owned().await else {
            break;
        };
        let client = client.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = act(&client, &pod, ip).await {
                warn!(pod = %pod.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or(""), error = %e, "hollow pod write failed");
            }
        });
    }
    let _ = informer_task.await;
}

/// Whether a pod still needs its hollow node: a deletion to confirm, or a status to report.
fn needs_write(pod: &Pod) -> bool {
    let meta = pod.metadata.as_ref();
    if meta.is_some_and(|m| !m.deletion_timestamp.is_empty()) {
        return true;
    }
    let status = pod.status.as_ref();
    !status.is_some_and(|s| s.phase == "Running" && !s.host_ip.is_empty())
}

async fn act(client: &Client, pod: &Pod, ip: std::net::IpAddr) -> Result<(), kl_client::ApiError> {
    let meta = pod.metadata.clone().unwrap_or_default();
    let api = Api::<Pod>::namespaced(client.clone(), &meta.namespace);
    if !meta.deletion_timestamp.is_empty() {
        return match api
            .delete(
                &meta.name,
                &DeleteParams::default()
                    .grace_period(0)
                    .precondition_uid(&meta.uid),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
            Err(e) => Err(e),
        };
    }
    let now = SystemTime::now();
    let statuses = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|c| ContainerStatus {
            name: c.name.clone(),
            ready: true,
            restart_count: 0,
            state: Some(ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: node::rfc3339(now),
                }),
                ..Default::default()
            }),
            last_state: None,
        })
        .collect();
    let mut p = pod.clone();
    p.status = Some(pod_status(pod, statuses, ip, now));
    match api.update_status(p).await {
        Ok(_) => Ok(()),
        // Changed meanwhile: the informer brings the new version, which is handled then.
        Err(e) if e.is_conflict() || e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unreported_or_deleted_pods_need_a_write() {
        let mut p = Pod::default();
        assert!(needs_write(&p));
        p.status = Some(kl_api::PodStatus {
            phase: "Running".into(),
            host_ip: "127.0.0.1".into(),
            ..Default::default()
        });
        assert!(!needs_write(&p));
        p.metadata = Some(kl_api::ObjectMeta {
            deletion_timestamp: "2026-01-01T00:00:00Z".into(),
            ..Default::default()
        });
        assert!(needs_write(&p));
        assert_eq!(hollow_name("hollow-node", 7), "hollow-node-7");
    }
}

//! Wiring and lifetime: the client, the runtime, the HTTPS port, the heartbeat and the pod
//! workers (or, with `--hollow-nodes`, the hollow nodes instead).
//!
//! On SIGTERM/SIGINT the kubelet stops its own tasks and leaves the containers running, as
//! upstream: the next kubelet adopts them. Deleting a pod, not stopping a kubelet, stops a
//! pod's processes.
use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use kl_client::Client;
use prometheus::{Encoder, IntCounter, IntGauge, Registry, TextEncoder};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::node::{self, Heartbeat, NodeIdentity, ReadyFn};
use crate::pods::{self, Ctx};
use crate::runtime::{Runtime, RuntimeConfig};
use crate::{hollow, server};

/// The kubelet's Prometheus metrics, under upstream's names where upstream has them.
pub struct Metrics {
    registry: Registry,
    /// `kubelet_running_pods`: pods with a worker on this node.
    pub running_pods: IntGauge,
    /// `kubelet_started_containers_total`.
    pub containers_started: IntCounter,
    /// `kubelet_container_liveness_kills_total`: containers killed by a failed liveness probe.
    pub liveness_restarts: IntCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let running_pods = IntGauge::new(
            "kubelet_running_pods",
            "Number of pods that have a running pod sandbox",
        )
        .expect("static metric");
        let containers_started = IntCounter::new(
            "kubelet_started_containers_total",
            "Cumulative number of containers started",
        )
        .expect("static metric");
        let liveness_restarts = IntCounter::new(
            "kubelet_container_liveness_kills_total",
            "Cumulative number of containers killed because their liveness probe failed",
        )
        .expect("static metric");
        for c in [
            Box::new(running_pods.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(containers_started.clone()),
            Box::new(liveness_restarts.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Metrics {
            registry,
            running_pods,
            containers_started,
            liveness_restarts,
        }
    }

    /// Prometheus text.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Runs the kubelet until SIGTERM or SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    run_until(config, kl_cli::shutdown_signal()).await
}

/// The node's identity from the flags.
pub fn identity(config: &Config, name: &str) -> NodeIdentity {
    NodeIdentity {
        name: name.to_string(),
        ip: config.node_ip,
        port: config.port,
        labels: config.node_labels.clone(),
        taints: config.register_with_taints.clone(),
        capacity: node::machine_capacity(
            config.cpu.as_deref(),
            config.memory.as_deref(),
            config.max_pods,
        ),
    }
}

/// The heartbeat's timing from the flags.
pub fn heartbeat(config: &Config) -> Heartbeat {
    Heartbeat {
        lease_duration_secs: config.node_lease_duration_seconds,
        lease_renew_interval: config.lease_renew_interval(),
        status_update_frequency: config.node_status_update_frequency,
        status_report_frequency: config.node_status_report_frequency,
    }
}

/// The node's Ready condition: Ready while the runtime can write under `--root-dir` (where
/// every container's state and logs go), else NotReady with the reason, as upstream reports
/// `container runtime is down`.
fn runtime_ready(root: &std::path::Path) -> (bool, String, String) {
    let probe = root.join(".ready-probe");
    match std::fs::write(&probe, b"ok").and_then(|()| std::fs::remove_file(&probe)) {
        Ok(()) => (
            true,
            "KubeletReady".to_string(),
            "kubelet is posting ready status".to_string(),
        ),
        Err(e) => (
            false,
            "KubeletNotReady".to_string(),
            format!(
                "container runtime is down: cannot write under --root-dir {}: {e}",
                root.display()
            ),
        ),
    }
}

/// Runs the kubelet until `shutdown` completes.
pub async fn run_until(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    let client = Client::from_kubeconfig(config.kubeconfig.as_deref(), None)
        .context("--kubeconfig: building the API client")?;
    if config.hollow_nodes > 0 {
        return hollow::run(client, config, shutdown).await;
    }
    let metrics = Arc::new(Metrics::new());
    let (runtime, exits) = Runtime::new(RuntimeConfig {
        root_dir: config.root_dir.clone(),
        shim_exe: config.shim_exe.clone(),
        log_max_size: config.container_log_max_size,
        log_max_files: config.container_log_max_files,
    })
    .with_context(|| {
        format!(
            "--root-dir {}: preparing the runtime",
            config.root_dir.display()
        )
    })?;

    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();

    if let Some(addr) = config.server_addr() {
        let tls = kl_tls::secure_port_config(
            config.tls_cert_file.as_deref(),
            config.tls_private_key_file.as_deref(),
            config.client_ca_file.as_deref(),
        )?;
        let m = metrics.clone();
        let cfg = server::ServerConfig {
            addr,
            tls,
            runtime: runtime.clone(),
            metrics: Arc::new(move || m.render()),
            health: Arc::new(|| None),
        };
        let listener = server::bind(&cfg)
            .await
            .with_context(|| format!("--port: binding {addr}"))?;
        info!(addr = %addr, "serving logs, /healthz and /metrics");
        let s = stop.clone();
        tasks.spawn(async move {
            if let Err(e) = server::serve_on(listener, cfg, s).await {
                warn!(error = %e, "HTTPS port stopped");
            }
        });
    }

    let id = identity(&config, &config.node_name);
    let root = config.root_dir.clone();
    let ready: ReadyFn = Arc::new(move || runtime_ready(&root));
    tasks.spawn(node::run_heartbeat(
        client.clone(),
        id,
        heartbeat(&config),
        ready,
        stop.child_token(),
    ));
    let recorder = kl_client::events::Recorder::new(client.clone(), "kubelet", &config.node_name);
    let ctx = Arc::new(Ctx {
        recorder,
        client,
        node_name: config.node_name.clone(),
        node_ip: config.node_ip,
        runtime,
        metrics,
    });
    tasks.spawn(pods::run_pods(ctx, exits, stop.child_token()));
    info!(node = %config.node_name, root_dir = %config.root_dir.display(), "kubelet started");

    shutdown.await;
    info!("shutting down; containers keep running for the next kubelet to adopt");
    stop.cancel();
    while tasks.join_next().await.is_some() {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heartbeat_renews_the_lease_every_quarter_of_it() {
        let config = Config {
            node_lease_duration_seconds: 8,
            node_status_update_frequency: std::time::Duration::from_secs(1),
            ..Config::default()
        };
        let hb = heartbeat(&config);
        assert_eq!(hb.lease_duration_secs, 8);
        assert_eq!(hb.lease_renew_interval, std::time::Duration::from_secs(2));
        assert_eq!(
            hb.status_update_frequency,
            std::time::Duration::from_secs(1)
        );
    }
}

//! Wiring and lifetime: the client, the informers feeding [`State`], the secure port, and
//! leader election deciding when [`schedule_loop`] runs.
//!
//! As kube-scheduler: informers start first and every standby keeps its cache warm, so a
//! takeover schedules at once; only the leader schedules, with its term's fencing token on
//! every write. When a term ends (lease lost or shutdown) the loop and its in-flight binds are
//! dropped at once, assumed pods are forgotten (binds that landed come back through the
//! watch), and a lost lease sends the process back to standing by. On SIGTERM/SIGINT the
//! leader stops scheduling, then releases the Lease so a standby takes over within one retry
//! period.
use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use kl_api::{Node, Pod};
use kl_client::informer::{Event, Informer, InformerConfig};
use kl_client::leader_election::{default_identity, RunOutcome, HEALTHZ_TOLERANCE};
use kl_client::{Api, Client, LeaderElector};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::algorithm::Algorithm;
use crate::config::Config;
use crate::http;
use crate::metrics::Metrics;
use crate::scheduler::{schedule_loop, State, Writer};

/// Runs the scheduler until SIGTERM or SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    run_until(config, kl_cli::shutdown_signal()).await
}

/// Runs the scheduler until `shutdown` completes.
pub async fn run_until(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    let client = Client::from_kubeconfig(config.kubeconfig.as_deref(), None)
        .context("--kubeconfig: building the API client")?;
    let identity = default_identity();
    let metrics = Arc::new(Metrics::new());
    let state = State::new(metrics.clone());

    let elector = if config.leader_election.enabled {
        let e = LeaderElector::new(client.clone(), config.leader_election_config(&identity))?;
        e.register_metrics(metrics.registry())?;
        Some(e)
    } else {
        None
    };

    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();

    // The secure port, bound now so that a taken port fails the start.
    if let Some(addr) = config.secure_addr() {
        let tls = http::server_tls(
            config.tls_cert_file.as_deref(),
            config.tls_private_key_file.as_deref(),
            config.client_ca_file.as_deref(),
        )?;
        let health: http::HealthCheck = match elector.clone() {
            Some(e) => Arc::new(move || e.check(HEALTHZ_TOLERANCE).err()),
            None => Arc::new(|| None),
        };
        let s = stop.clone();
        let (local, server) = http::serve(
            addr,
            tls,
            config.client_ca_file.is_some(),
            metrics.clone(),
            health,
            async move { s.cancelled().await },
        )
        .await?;
        info!(addr = %local, "serving /healthz and /metrics");
        tasks.spawn(async move {
            if let Err(e) = server.await {
                warn!(error = %e, "secure port stopped");
            }
        });
    }

    // Informers: every pod (pending ones to schedule, bound ones to account) and every node.
    let pods = Informer::new(Api::<Pod>::all(client.clone()), InformerConfig::default());
    let nodes = Informer::new(Api::<Node>::all(client.clone()), InformerConfig::default());
    let (pod_store, node_store) = (pods.store(), nodes.store());
    let (mut pod_events, mut node_events) = (pods.subscribe(), nodes.subscribe());
    tasks.spawn(pods.run(stop.child_token()));
    tasks.spawn(nodes.run(stop.child_token()));
    let feeder_state = state.clone();
    let feeder_stop = stop.clone();
    tasks.spawn(async move {
        loop {
            tokio::select! {
                _ = feeder_stop.cancelled() => break,
                Some(ev) = node_events.recv() => match ev {
                    Event::Added(n) | Event::Updated { new: n, .. } => feeder_state.node_upserted(&n),
                    Event::Deleted(n) => feeder_state.node_deleted(&n),
                },
                Some(ev) = pod_events.recv() => match ev {
                    Event::Added(p) | Event::Updated { new: p, .. } => feeder_state.pod_upserted(&p),
                    Event::Deleted(p) => feeder_state.pod_deleted(&p),
                },
                else => break,
            }
        }
    });

    let shutting_down = CancellationToken::new();
    {
        let s = shutting_down.clone();
        tasks.spawn(async move {
            shutdown.await;
            info!("shutting down");
            s.cancel();
        });
    }

    // upstream's WaitForCacheSync, before taking part in the election.
    tokio::select! {
        _ = shutting_down.cancelled() => {}
        _ = async { pod_store.wait_synced().await; node_store.wait_synced().await } => {
            info!(pods = pod_store.len(), nodes = node_store.len(), "caches synced");
        }
    }

    let host = identity.split('_').next().unwrap_or_default().to_string();
    let percentage = config.percentage_of_nodes_to_score;
    match &elector {
        None => {
            let writer = Writer {
                client: client.clone(),
                fencing: None,
                host,
            };
            tokio::select! {
                _ = shutting_down.cancelled() => {}
                _ = schedule_loop(state.clone(), writer, Algorithm::new(percentage)) => {}
            }
        }
        Some(elector) => {
            while !shutting_down.is_cancelled() {
                let (state2, client2, host2) = (state.clone(), client.clone(), host.clone());
                let outcome = elector
                    .run(shutting_down.clone(), move |lead| async move {
                        let writer = Writer {
                            client: client2,
                            fencing: Some(lead.token().clone()),
                            host: host2,
                        };
                        info!(token = ?lead.token(), "leading: scheduling");
                        // Dropping the loop drops its binds: no write after the term ends.
                        tokio::select! {
                            _ = lead.cancelled() => {}
                            _ = schedule_loop(state2, writer, Algorithm::new(percentage)) => {}
                        }
                    })
                    .await;
                let pending = pod_store
                    .filter(|p| p.spec.as_ref().is_some_and(|s| s.node_name.is_empty()))
                    .into_iter()
                    .map(|p| (*p).clone());
                state.reset_assumed(pending);
                match outcome {
                    RunOutcome::Shutdown => break,
                    RunOutcome::Lost => warn!("leader election lost; standing by"),
                    RunOutcome::WorkFinished => warn!("scheduling stopped by itself; standing by"),
                }
            }
        }
    }

    stop.cancel();
    while tasks.join_next().await.is_some() {}
    info!("scheduler stopped");
    Ok(())
}

//! Wiring and lifetime: the client, the leader elector, the health/metrics server, and the
//! terms of leadership during which the controllers run.
//!
//! ```text
//!  standby ──acquire──▶ term: informers + controllers, every write fenced with the term's token
//!     ▲                   │ lease lost / a write Fenced: cancel everything, at once
//!     └───────────────────┘ (upstream exits here and is restarted; kube-lite stands by again
//!                            with nothing carried over: the next term starts from fresh lists)
//!  SIGTERM/SIGINT: stop the controllers, then release the Lease (empty holder), then exit 0.
//! ```
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kl_api::{FencingToken, Lease, Node, Pod, ReplicaSet};
use kl_client::informer::{Informer, InformerConfig};
use kl_client::leader_election::{LeaderElector, RunOutcome};
use kl_client::{Api, Client};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::{Config, ControllerName};
use crate::context::{Caches, Ctx};
use crate::metrics::Metrics;
use crate::nodelifecycle::NODE_LEASE_NAMESPACE;
use crate::serve;

/// How often every cached ReplicaSet and pod is handed to the controllers again, so that
/// a missed change is corrected without waiting for the next event.
const RESYNC: Duration = Duration::from_secs(30);

/// Runs until SIGTERM or SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let work = run_until(config, shutdown.clone(), |_| {});
    tokio::pin!(work);
    tokio::select! {
        r = &mut work => return r,
        _ = wait_for_signal() => shutdown.cancel(),
    }
    work.await
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => info!("received SIGTERM, shutting down"),
                _ = int.recv() => info!("received SIGINT, shutting down"),
            }
        }
        _ => std::future::pending().await,
    }
}

/// Runs until `shutdown` fires (then stops the controllers, releases the Lease and returns);
/// `bound` is told the serving address (tests bind port 0).
pub async fn run_until(
    config: Config,
    shutdown: CancellationToken,
    bound: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    config.validate()?;
    let config = Arc::new(config);
    let client = Client::from_kubeconfig(config.kubeconfig.as_deref(), None)
        .context("loading the kubeconfig (--kubeconfig)")?;
    let metrics = Arc::new(Metrics::new());
    let elector = if config.leader_elect {
        // As kube-controller-manager: the election's calls time out at half the renew
        // deadline, so one hung call cannot eat the whole deadline.
        let le_client = client
            .clone()
            .with_request_timeout(Some(config.leader_election.renew_deadline / 2));
        let e = LeaderElector::new(le_client, config.leader_election.clone())?;
        e.register_metrics(&metrics.registry)
            .context("registering the leader election metric")?;
        Some(e)
    } else {
        None
    };

    let tls = match (&config.tls_cert_file, &config.tls_private_key_file) {
        (Some(c), Some(k)) => Some(
            kl_tls::ServerTls::load(c, k, None, false)
                .context("loading --tls-cert-file / --tls-private-key-file")?,
        ),
        _ => None,
    };
    let listener = TcpListener::bind(config.serving_addr())
        .await
        .with_context(|| {
            format!(
                "binding {} (--bind-address, --secure-port)",
                config.serving_addr()
            )
        })?;
    let addr = listener.local_addr()?;
    bound(addr);
    info!(
        %addr,
        scheme = if tls.is_some() { "https" } else { "http (no --tls-cert-file given)" },
        identity = %config.leader_election.identity,
        leader_elect = config.leader_elect,
        controllers = ?config.controllers.0,
        "controller-manager serving /healthz and /metrics"
    );
    let router = serve::router(serve::HealthState {
        elector: elector.clone(),
        metrics: metrics.clone(),
    });
    let server_stop = CancellationToken::new();
    let server = serve::serve(listener, tls, router, server_stop.clone());
    let main = async {
        match &elector {
            None => {
                run_term(&client, &config, &metrics, None, shutdown.child_token()).await;
            }
            Some(e) => loop {
                let outcome = e
                    .run(shutdown.clone(), |lead| {
                        run_term(
                            &client,
                            &config,
                            &metrics,
                            Some(lead.token().clone()),
                            lead.cancellation().child_token(),
                        )
                    })
                    .await;
                if outcome == RunOutcome::Shutdown || shutdown.is_cancelled() {
                    break;
                }
                info!(
                    ?outcome,
                    "leadership ended; standing by for the next election"
                );
            },
        }
        server_stop.cancel();
    };
    let (served, ()) = tokio::join!(server, main);
    info!("controller-manager stopped");
    served
}

/// One term: the shared informers and the enabled controllers, until `cancel` fires.
fn run_term(
    client: &Client,
    config: &Arc<Config>,
    metrics: &Arc<Metrics>,
    fencing: Option<FencingToken>,
    cancel: CancellationToken,
) -> impl Future<Output = ()> {
    let client = client.clone();
    let config = config.clone();
    let metrics = metrics.clone();
    async move {
        let informer = |resync: Option<Duration>| InformerConfig::default().resync(resync);
        let pods = Informer::new(Api::<Pod>::all(client.clone()), informer(Some(RESYNC)));
        let replicasets = Informer::new(
            Api::<ReplicaSet>::all(client.clone()),
            informer(Some(RESYNC)),
        );
        let nodes = Informer::new(Api::<Node>::all(client.clone()), informer(None));
        let node_leases = Informer::new(
            Api::<Lease>::namespaced(client.clone(), NODE_LEASE_NAMESPACE),
            informer(None),
        );
        let ctx = Ctx {
            client: client.clone(),
            fencing,
            cancel: cancel.clone(),
            config: config.clone(),
            metrics,
            caches: Caches {
                pods: pods.store(),
                replicasets: replicasets.store(),
                nodes: nodes.store(),
                node_leases: node_leases.store(),
            },
        };
        let mut tasks = JoinSet::new();
        let on = |c| config.controllers.enabled(c);
        if on(ControllerName::ReplicaSet) {
            let (r, p) = (replicasets.subscribe(), pods.subscribe());
            tasks.spawn(crate::replicaset::run(ctx.clone(), r, p));
        }
        if on(ControllerName::GarbageCollector) {
            let (r, p) = (replicasets.subscribe(), pods.subscribe());
            tasks.spawn(crate::garbagecollector::run(ctx.clone(), r, p));
        }
        if on(ControllerName::NodeLifecycle) {
            tasks.spawn(crate::nodelifecycle::run(ctx.clone()));
            tasks.spawn(nodes.run(cancel.clone()));
            tasks.spawn(node_leases.run(cancel.clone()));
        }
        tasks.spawn(pods.run(cancel.clone()));
        tasks.spawn(replicasets.run(cancel.clone()));
        info!(
            fenced = ctx.fencing.is_some(),
            transitions = ctx.fencing.as_ref().map_or(0, |t| t.lease_transitions),
            "controllers starting"
        );
        cancel.cancelled().await;
        // Nothing of this term may act any more: abort at the next await point.
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        info!("controllers stopped");
    }
}

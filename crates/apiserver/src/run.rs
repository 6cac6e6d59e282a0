//! Wiring and lifetime: builds every part from a [`Config`], serves gRPC and HTTPS on one TLS
//! port, and stops gracefully.
//!
//! Shutdown (SIGTERM/SIGINT, or the `shutdown` future of [`run_until`]), as kube-apiserver:
//! 1. `/readyz` fails at once (the lb stops sending new connections) and the gRPC health
//!    service reports NOT_SERVING;
//! 2. everything keeps serving for `--shutdown-delay-duration`;
//! 3. then the listener stops accepting, open watches end cleanly (status OK), in-flight
//!    requests drain (bounded by [`DRAIN_TIMEOUT`]), background tasks stop, and `run` returns
//!    Ok (the binary exits 0).

use std::{
    future::Future,
    net::SocketAddr,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use anyhow::Context;
use kl_api::api_server::ApiServer;
use tokio::{net::TcpListener, sync::watch};
use tonic::service::Routes;

use crate::{
    bootstrap, compaction,
    config::Config,
    etcd::{Etcd, EtcdOptions},
    http::{self, Health},
    metrics::Metrics,
    registry::Registry,
    service::{ApiService, Inflight, MAX_REQUEST_BYTES},
    storage::Store,
    watch_cache::Caches,
};

/// How long in-flight requests may take to finish once the server stops.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Resolves once `stop` turns true (or its sender is gone). Cancel-safe.
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Runs the apiserver until SIGTERM or SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    run_until(config, wait_for_signal(), |_| {}).await
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("received SIGTERM, shutting down"),
                _ = int.recv() => tracing::info!("received SIGINT, shutting down"),
            }
        }
        _ => std::future::pending().await,
    }
}

/// Runs the apiserver until `shutdown` completes; `bound` is told the listening address
/// (tests bind port 0).
pub async fn run_until(
    config: Config,
    shutdown: impl Future<Output = ()>,
    bound: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    config.validate().map_err(anyhow::Error::msg)?;
    // validate() made sure these are set.
    let (cert, key, ca) = (
        config.tls_cert_file.clone().unwrap_or_default(),
        config.tls_private_key_file.clone().unwrap_or_default(),
        config.client_ca_file.clone().unwrap_or_default(),
    );
    // The CA is trusted for client certificates but a certificate is not demanded at the
    // handshake, so that /livez and /readyz stay open; gRPC calls without one are refused.
    let server_tls = kl_tls::ServerTls::load(&cert, &key, Some(&ca), false)
        .context("--tls-cert-file / --tls-private-key-file / --client-ca-file")?
        .rustls_config()?;
    let etcd_tls = match &config.etcd_cafile {
        Some(ca) => {
            let identity = match (&config.etcd_certfile, &config.etcd_keyfile) {
                (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
                _ => None,
            };
            Some(
                kl_tls::ClientTls::load(ca, identity)
                    .context("--etcd-cafile / --etcd-certfile / --etcd-keyfile")?
                    .tonic_config(),
            )
        }
        None => None,
    };

    let metrics = Arc::new(Metrics::new());
    let etcd = Arc::new(
        Etcd::connect(
            EtcdOptions {
                endpoints: config.etcd_servers.clone(),
                tls: etcd_tls,
                attempt_timeout: config.etcd_attempt_timeout,
                call_timeout: config.etcd_call_timeout,
            },
            metrics.clone(),
        )
        .await?,
    );
    let store = Store {
        etcd: etcd.clone(),
        prefix: config.prefix(),
    };
    let caches = Caches::new(config.watch_cache_size, metrics.clone());
    let registry = Registry {
        store: store.clone(),
        caches: caches.clone(),
    };
    let server_id = config.server_id();
    let (stop_tx, stop_rx) = watch::channel(false);

    let addr = SocketAddr::new(config.bind_address, config.secure_port);
    let listener = TcpListener::bind(addr).await.with_context(|| {
        format!("listening on {addr} (--bind-address / --secure-port): is the port in use?")
    })?;
    let local = listener.local_addr()?;
    bound(local);

    let mut tasks = tokio::task::JoinSet::new();
    for cache in caches.0.values() {
        tasks.spawn(cache.clone().run(store.clone(), stop_rx.clone()));
    }
    let health = Arc::new(Health {
        etcd: etcd.clone(),
        caches: caches.clone(),
        metrics: metrics.clone(),
        bootstrapped: Default::default(),
        shutting_down: Default::default(),
    });
    {
        let h = health.clone();
        tasks.spawn(bootstrap::run(
            registry.clone(),
            server_id.clone(),
            move || h.bootstrapped.store(true, Ordering::Release),
            stop_rx.clone(),
        ));
    }
    tasks.spawn(compaction::run(
        etcd.clone(),
        config.etcd_compaction_interval,
        stop_rx.clone(),
    ));

    let kubelets = crate::kubelet::from_config(&config)?;
    let service = ApiService {
        registry,
        metrics: metrics.clone(),
        inflight: Inflight::new(config.max_requests_inflight, metrics.clone()),
        etcd: etcd.clone(),
        server_id: server_id.clone(),
        etcd_prefix: config.etcd_prefix.clone(),
        kubelets,
        stop: stop_rx.clone(),
        authorization_mode: config.authorization_mode,
    };
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<ApiServer<ApiService>>().await;
    let api = ApiServer::new(service)
        // Over the limit by a little: the service answers with a clear error naming the limit;
        // far over it, tonic refuses to decode.
        .max_decoding_message_size(MAX_REQUEST_BYTES * 4)
        .max_encoding_message_size(usize::MAX);
    let grpc = Routes::builder()
        .add_service(api)
        .add_service(health_service)
        .clone()
        .routes();
    let router = grpc
        .into_axum_router()
        .layer(axum::middleware::from_fn(crate::deadline::scope))
        .merge(http::router(health.clone()));
    let mut server_stop = stop_rx.clone();
    let server = tonic::transport::Server::builder()
        .accept_http1(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_concurrent_streams(config.max_concurrent_streams())
        .add_routes(Routes::from(router))
        .serve_with_incoming_shutdown(
            kl_tls::incoming_with(
                listener,
                server_tls,
                kl_tls::ConnLimits::with_max_connections(config.max_connections),
            ),
            async move { stopped(&mut server_stop).await },
        );
    let mut server = tokio::spawn(server);
    tracing::info!(addr = %local, server = %server_id, etcd = ?config.etcd_servers, "apiserver serving");

    tokio::select! {
        _ = shutdown => {}
        r = &mut server => {
            let _ = stop_tx.send(true);
            return match r {
                Ok(Ok(())) => Err(anyhow::anyhow!("the server stopped on its own")),
                Ok(Err(e)) => Err(anyhow::Error::from(e).context("serving")),
                Err(e) => Err(anyhow::Error::from(e).context("the server task")),
            };
        }
    }
    health.shutting_down.store(true, Ordering::Release);
    health_reporter
        .set_not_serving::<ApiServer<ApiService>>()
        .await;
    tracing::info!(delay = ?config.shutdown_delay, "not ready; serving on for --shutdown-delay-duration");
    tokio::time::sleep(config.shutdown_delay).await;
    tracing::info!("stopping: no new connections, ending watches, draining requests");
    let _ = stop_tx.send(true);
    match tokio::time::timeout(DRAIN_TIMEOUT, &mut server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "server error while draining"),
        Ok(Err(e)) => tracing::warn!(error = %e, "server task failed while draining"),
        Err(_) => {
            tracing::warn!(timeout = ?DRAIN_TIMEOUT, "requests still in flight after the drain timeout; stopping anyway");
            server.abort();
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    tracing::info!("apiserver stopped");
    Ok(())
}

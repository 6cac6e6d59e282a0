//! The secure port (10259): `/healthz` and `/metrics` over HTTPS, as kube-scheduler serves them.
//!
//! * `/healthz` (also `/livez`, `/readyz`): 200 `ok`; 500 when leader election reports this
//!   scheduler wedged (it holds the lease but has not renewed it past the lease duration plus
//!   a grace period: client-go's `HealthzAdaptor.Check`).
//! * `/metrics`: Prometheus text; when `--client-ca-file` is given, only for clients presenting
//!   a certificate it signed (401 otherwise).
//!
//! Without `--tls-cert-file` the port serves a self-signed certificate, as upstream does.
use std::net::SocketAddr;
use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{header, StatusCode},
    response::IntoResponse,
    routing::get,
    Router,
};
use tonic::service::Routes;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::metrics::Metrics;

/// What the health check asks: why the scheduler is unhealthy, or None.
pub type HealthCheck = Arc<dyn Fn() -> Option<String> + Send + Sync>;

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: HealthCheck,
    /// Whether /metrics needs a verified client certificate.
    metrics_need_cert: bool,
}

/// The TLS material of the secure port (see [`kl_tls::secure_port_config`]).
pub fn server_tls(
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
    client_ca: Option<&std::path::Path>,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    Ok(kl_tls::secure_port_config(cert, key, client_ca)?)
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(healthz))
        .route("/readyz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn healthz(State(s): State<AppState>) -> impl IntoResponse {
    match (s.health)() {
        None => (StatusCode::OK, "ok".to_string()),
        Some(why) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("[-]leaderElection failed: {why}\nhealthz check failed\n"),
        ),
    }
}

async fn metrics(State(s): State<AppState>, req: Request) -> impl IntoResponse {
    let has_cert = req
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|i| i.peer_certs())
        .is_some_and(|c| !c.is_empty());
    if s.metrics_need_cert && !has_cert {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "text/plain")],
            "Unauthorized: /metrics needs a client certificate signed by --client-ca-file\n"
                .to_string(),
        );
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        s.metrics.render(),
    )
}

/// Binds the secure port now (so a taken port fails at start) and returns the server future,
/// which runs until `shutdown` completes, and the bound address.
pub async fn serve(
    addr: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    metrics_need_cert: bool,
    metrics: Arc<Metrics>,
    health: HealthCheck,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(
    SocketAddr,
    impl std::future::Future<Output = Result<(), tonic::transport::Error>>,
)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("--secure-port: binding {addr}: {e}"))?;
    let local = listener.local_addr()?;
    let app = router(AppState {
        metrics,
        health,
        metrics_need_cert,
    });
    let server = tonic::transport::Server::builder()
        .accept_http1(true)
        // hyper's own default; tonic's is no cap.
        .max_concurrent_streams(200)
        .add_routes(Routes::from(app))
        .serve_with_incoming_shutdown(
            kl_tls::incoming_with(listener, tls, kl_tls::ConnLimits::component()),
            shutdown,
        );
    Ok((local, server))
}

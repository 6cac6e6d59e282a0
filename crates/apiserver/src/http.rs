//! The plain HTTPS paths served on the API port beside gRPC (HTTP/1.1 and HTTP/2):
//!
//! * `/livez` (and `/healthz`): 200 while the process serves.
//! * `/readyz`: 200 when the apiserver can serve: its start-up work is done (system
//!   namespaces, every watch cache listed), an etcd member answered in the last
//!   [`ETCD_FRESH`] (watch progress counts) or answers a probe now, and it is not shutting
//!   down. 503 otherwise, from the moment SIGTERM arrives. Both are open to anonymous clients,
//!   as upstream's defaults allow.
//! * `/metrics`: Prometheus text; needs a verified client certificate (401 without).
//!
//! Bodies follow kube-apiserver's (`ok`, or `[-]check failed: reason` lines).

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{
    extract::{Request, State},
    http::{header, StatusCode},
    response::IntoResponse,
    routing::get,
    Router,
};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::etcd::Etcd;
use crate::metrics::Metrics;
use crate::watch_cache::Caches;

/// An etcd answer this recent makes `/readyz` skip its probe.
pub const ETCD_FRESH: Duration = Duration::from_secs(3);
/// How long the `/readyz` etcd probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// What the probes look at.
pub struct Health {
    pub etcd: Arc<Etcd>,
    pub caches: Caches,
    pub metrics: Arc<Metrics>,
    /// Set once the system namespaces exist.
    pub bootstrapped: AtomicBool,
    /// Set when SIGTERM/SIGINT arrives.
    pub shutting_down: AtomicBool,
}

impl Health {
    /// Why the apiserver is not ready, or None.
    pub async fn not_ready(&self) -> Option<String> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Some(
                "[-]shutdown failed: reason withheld (the apiserver is shutting down)".into(),
            );
        }
        if !self.bootstrapped.load(Ordering::Acquire) {
            return Some("[-]poststarthook/bootstrap-namespaces failed: not finished".into());
        }
        if !self.caches.all_ready() {
            return Some("[-]informer-sync failed: watch caches not initialized".into());
        }
        let fresh = self
            .etcd
            .last_ok()
            .is_some_and(|t| t.elapsed() < ETCD_FRESH);
        if !fresh && !self.probe_etcd().await {
            return Some("[-]etcd failed: no etcd member answered".into());
        }
        None
    }

    /// Any member answering a serializable read counts.
    async fn probe_etcd(&self) -> bool {
        let probes = self.etcd.members().iter().map(|m| {
            let mut c = m.client.clone();
            Box::pin(async move {
                let opts = etcd_client::GetOptions::new()
                    .with_serializable()
                    .with_count_only();
                match tokio::time::timeout(PROBE_TIMEOUT, c.get("health", Some(opts))).await {
                    Ok(Ok(_)) => Ok(()),
                    _ => Err(()),
                }
            })
        });
        let ok = futures::future::select_ok(probes).await.is_ok();
        if ok {
            self.etcd.mark_ok();
        }
        ok
    }
}

/// The router of the plain HTTPS paths.
pub fn router(health: Arc<Health>) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/healthz", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health)
}

async fn livez() -> impl IntoResponse {
    (StatusCode::OK, "ok")
}

async fn readyz(State(h): State<Arc<Health>>) -> impl IntoResponse {
    match h.not_ready().await {
        None => (StatusCode::OK, "ok".to_string()),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{why}\nreadyz check failed\n"),
        ),
    }
}

/// Whether the request came with a verified client certificate.
fn has_client_cert(req: &Request) -> bool {
    req.extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|i| i.peer_certs())
        .is_some_and(|c| !c.is_empty())
}

async fn metrics(State(h): State<Arc<Health>>, req: Request) -> impl IntoResponse {
    if !has_client_cert(&req) {
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
        h.metrics.render(),
    )
}

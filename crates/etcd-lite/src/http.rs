//! `/health` and `/metrics` on `--listen-metrics-urls`, as etcd serves them.
//!
//! * `GET /health`: etcd 3.5's answer and format: 200 `{"health":"true","reason":""}`, or 503
//!   with `RAFT NO LEADER` when this member knows no leader, or `RANGE ERROR:...` when a
//!   linearizable read cannot complete. `?serializable=true` skips both (the member only has
//!   to be up), as in etcd.
//! * `GET /metrics`: the Prometheus text of this member's registry, with the store gauges
//!   refreshed just before rendering.
//!
//! This module only reads the member's state; it must never change it.

use std::{future::Future, net::SocketAddr, pin::Pin, sync::Arc};

use axum::{
    extract::State,
    http::{header, StatusCode, Uri},
    response::IntoResponse,
    routing::get,
    Router,
};
use futures::{Stream, StreamExt};
use tokio::net::TcpListener;
use tokio_rustls::rustls;

use crate::error::EtcdError;
use crate::node::Node;

/// Serves `/health` and `/metrics` on `listener` until `shutdown` completes. With `tls`, over
/// HTTPS (HTTP/1.1), with the same client-certificate rule as the config says.
pub async fn serve_metrics(
    node: Arc<Node>,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let local = listener.local_addr()?;
    let app = router(node);
    tracing::info!(addr = %local, tls = tls.is_some(), "serving /health and /metrics");
    match tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await?
        }
        Some(config) => {
            // This server speaks HTTP/1.1 only: do not let ALPN pick h2.
            let mut config = (*config).clone();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let listener = TlsListener {
                incoming: Box::pin(kl_tls::incoming_with(
                    listener,
                    Arc::new(config),
                    kl_tls::ConnLimits::component(),
                )),
                local,
            };
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await?
        }
    }
    tracing::info!(addr = %local, "metrics server stopped");
    Ok(())
}

fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(node)
}

async fn health(State(node): State<Arc<Node>>, uri: Uri) -> impl IntoResponse {
    let serializable = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .any(|kv| kv == "serializable=true");
    let (code, body) = match check_health(&node, serializable).await {
        Ok(()) => (StatusCode::OK, health_json(true, "")),
        Err(reason) => {
            tracing::warn!(%reason, "/health: unhealthy");
            (StatusCode::SERVICE_UNAVAILABLE, health_json(false, &reason))
        }
    };
    (code, [(header::CONTENT_TYPE, "application/json")], body)
}

/// etcd's checks, in etcd's order: a leader, then a read through it.
async fn check_health(node: &Node, serializable: bool) -> Result<(), String> {
    if serializable {
        return Ok(());
    }
    if !node.has_leader() {
        return Err("RAFT NO LEADER".into());
    }
    match tokio::time::timeout(node.request_timeout(), node.read_barrier()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("RANGE ERROR:{e}")),
        Err(_) => Err(format!("RANGE ERROR:{}", EtcdError::Timeout)),
    }
}

/// `{"health":"true","reason":""}`: etcd reports the boolean as a string.
fn health_json(healthy: bool, reason: &str) -> String {
    serde_json::json!({
        "health": if healthy { "true" } else { "false" },
        "reason": reason,
    })
    .to_string()
}

async fn metrics(State(node): State<Arc<Node>>) -> impl IntoResponse {
    let status = node.status();
    let revision = node.store().read().revision();
    let m = node.metrics();
    m.db_total_size
        .set(i64::try_from(status.db_size).unwrap_or(i64::MAX));
    m.mvcc_revision.set(revision);
    m.has_leader.set(i64::from(status.leader.is_some()));
    m.is_leader
        .set(i64::from(status.leader == Some(status.member_id)));
    (
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        m.render(),
    )
}

/// TLS connections (handshakes done off the accept loop by [`kl_tls::incoming`]) as an axum
/// listener.
struct TlsListener {
    incoming: Pin<Box<dyn Stream<Item = std::io::Result<kl_tls::TlsConn>> + Send>>,
    local: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = kl_tls::TlsConn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.incoming.next().await {
                Some(Ok(stream)) => {
                    let peer = stream
                        .get_ref()
                        .get_ref()
                        .0
                        .peer_addr()
                        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                    return (stream, peer);
                }
                Some(Err(e)) => tracing::debug!(error = %e, "metrics accept failed"),
                // The accept loop is gone; serve what is open until shutdown.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_body_is_etcds() {
        assert_eq!(health_json(true, ""), r#"{"health":"true","reason":""}"#);
        assert_eq!(
            health_json(false, "RAFT NO LEADER"),
            r#"{"health":"false","reason":"RAFT NO LEADER"}"#
        );
    }
}

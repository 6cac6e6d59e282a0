//! `/healthz` and `/metrics` on `--secure-port` (10257): HTTPS with `--tls-cert-file` and
//! `--tls-private-key-file`, plain HTTP without them (kube-lite generates no self-signed
//! certificate; the log says which it serves).
//!
//! * `/healthz` (and `/livez`): 200 `ok`, unless this process leads and has not renewed its
//!   Lease for lease duration + 20 s (client-go's `HealthzAdaptor` check: the leader is wedged
//!   and should have stopped): then 500 with upstream's check lines.
//! * `/metrics`: Prometheus text, `leader_election_master_status{name=...}` included. Open to
//!   anyone who can reach the port (kube-lite has no delegated authorization).
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use futures::{Stream, StreamExt};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use kl_client::leader_election::{LeaderElector, HEALTHZ_TOLERANCE};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// What the endpoints look at.
#[derive(Clone)]
pub struct HealthState {
    pub elector: Option<LeaderElector>,
    pub metrics: Arc<Metrics>,
}

pub fn router(state: HealthState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn healthz(State(s): State<HealthState>) -> impl IntoResponse {
    let check = s
        .elector
        .as_ref()
        .map_or(Ok(()), |e| e.check(HEALTHZ_TOLERANCE));
    match check {
        Ok(()) => (StatusCode::OK, "ok".to_string()),
        Err(why) => {
            tracing::warn!(reason = %why, "healthz: leaderElection check failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "[+]ping ok\n[-]leaderElection failed: reason withheld\nhealthz check failed\n"
                    .to_string(),
            )
        }
    }
}

async fn metrics(State(s): State<HealthState>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        s.metrics.render(),
    )
}

/// Serves `router` on `listener` (TLS when `tls` is given) until `shutdown` fires; open
/// connections are then dropped.
pub async fn serve(
    listener: TcpListener,
    tls: Option<kl_tls::ServerTls>,
    router: Router,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    match tls {
        Some(tls) => {
            let incoming = kl_tls::incoming_with(
                listener,
                tls.rustls_config()?,
                kl_tls::ConnLimits::component(),
            );
            serve_stream(incoming, router, shutdown).await
        }
        None => {
            serve_stream(
                kl_tls::incoming_plain(listener, kl_tls::ConnLimits::component()),
                router,
                shutdown,
            )
            .await
        }
    }
    Ok(())
}

async fn serve_stream<S, IO, E>(incoming: S, router: Router, shutdown: CancellationToken)
where
    S: Stream<Item = Result<IO, E>> + Send,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    E: std::fmt::Display,
{
    let mut incoming = std::pin::pin!(incoming);
    let mut conns = JoinSet::new();
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => break,
            // Reap finished connections as we go.
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            n = incoming.next() => n,
        };
        let io = match next {
            Some(Ok(io)) => io,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "accept failed");
                continue;
            }
            None => break,
        };
        let svc = TowerToHyperService::new(router.clone());
        conns.spawn(async move {
            let mut builder = Builder::new(TokioExecutor::new());
            // A timer turns on hyper's HTTP/1 header-read timeout (30 s).
            builder.http1().timer(TokioTimer::new());
            let _ = builder.serve_connection(TokioIo::new(io), svc).await;
        });
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}

//! The stats listener: `/` a plain-text table of the backends, `/metrics` Prometheus text.
//!
//! Metric names follow HAProxy's Prometheus exporter so existing dashboards read them; labels
//! are `proxy="lb"` and `server="<the --backend value>"`:
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `haproxy_server_status` | gauge | 1 up, 0 down |
//! | `haproxy_server_current_sessions` | gauge | open proxied connections |
//! | `haproxy_server_sessions_total` | counter | proxied connections established |
//! | `haproxy_server_bytes_in_total` | counter | bytes from clients to the backend |
//! | `haproxy_server_bytes_out_total` | counter | bytes from the backend to clients |
//! | `haproxy_server_connection_errors_total` | counter | failed connects (passive check) |
//! | `haproxy_server_check_failures_total` | counter | failed active checks |
//! | `haproxy_server_check_successes_total` | counter | passed active checks (not in HAProxy) |
//! | `haproxy_server_check_up_down_total` | counter | up→down transitions |
//! | `haproxy_frontend_current_sessions` | gauge | open client connections |
//! | `haproxy_frontend_sessions_total` | counter | accepted client connections |
//! | `haproxy_frontend_denied_connections_total` | counter | refused at `--max-connections` |
//! | `haproxy_backend_connection_errors_total` | counter | connections no backend accepted |
//!
//! It reads counters only; it never changes backend state.

use std::{fmt::Write as _, sync::atomic::Ordering, sync::Arc};

use axum::{extract::State, http::header, response::IntoResponse, routing::get, Router};
use tokio::{net::TcpListener, sync::watch};

use crate::{backend::Pool, stopped};

/// Serves the stats endpoints until `stop`.
pub async fn serve(listener: TcpListener, pool: Arc<Pool>, mut stop: watch::Receiver<bool>) {
    let app = Router::new()
        .route("/", get(page))
        .route("/metrics", get(metrics))
        .with_state(pool);
    let shutdown = async move { stopped(&mut stop).await };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "stats server failed");
    }
}

async fn page(State(pool): State<Arc<Pool>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        render_page(&pool),
    )
}

async fn metrics(State(pool): State<Arc<Pool>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        render_metrics(&pool),
    )
}

/// The human page: one line per backend.
pub fn render_page(pool: &Pool) -> String {
    let fe = &pool.frontend;
    let mut out = format!(
        "lb: balance {:?}; frontend current {} total {} denied {} no-backend {}\n\n",
        pool.balance,
        fe.current.load(Ordering::Relaxed),
        fe.total.load(Ordering::Relaxed),
        fe.denied.load(Ordering::Relaxed),
        fe.no_backend.load(Ordering::Relaxed),
    );
    let _ = writeln!(
        out,
        "{:<30} {:<5} {:>8} {:>10} {:>14} {:>14} {:>9} {:>9} {:>9}",
        "BACKEND",
        "STATE",
        "CURRENT",
        "TOTAL",
        "BYTES_IN",
        "BYTES_OUT",
        "CHECK_OK",
        "CHECK_ERR",
        "CONN_ERR"
    );
    for b in &pool.backends {
        let c = &b.counters;
        let _ = writeln!(
            out,
            "{:<30} {:<5} {:>8} {:>10} {:>14} {:>14} {:>9} {:>9} {:>9}",
            b.addr,
            if b.is_up() { "UP" } else { "DOWN" },
            c.current.load(Ordering::Relaxed),
            c.total.load(Ordering::Relaxed),
            c.bytes_in.load(Ordering::Relaxed),
            c.bytes_out.load(Ordering::Relaxed),
            c.check_successes.load(Ordering::Relaxed),
            c.check_failures.load(Ordering::Relaxed),
            c.connect_errors.load(Ordering::Relaxed),
        );
    }
    out
}

/// Prometheus text exposition of every counter.
pub fn render_metrics(pool: &Pool) -> String {
    let mut out = String::new();
    let server_metrics: [(&str, &str, &str); 9] = [
        (
            "haproxy_server_status",
            "gauge",
            "Current health status of the server: 1 up, 0 down.",
        ),
        (
            "haproxy_server_current_sessions",
            "gauge",
            "Current number of active sessions.",
        ),
        (
            "haproxy_server_sessions_total",
            "counter",
            "Total number of sessions.",
        ),
        (
            "haproxy_server_bytes_in_total",
            "counter",
            "Current total of incoming bytes (from clients).",
        ),
        (
            "haproxy_server_bytes_out_total",
            "counter",
            "Current total of outgoing bytes (to clients).",
        ),
        (
            "haproxy_server_connection_errors_total",
            "counter",
            "Total number of connection errors.",
        ),
        (
            "haproxy_server_check_failures_total",
            "counter",
            "Total number of failed health checks.",
        ),
        (
            "haproxy_server_check_successes_total",
            "counter",
            "Total number of passed health checks.",
        ),
        (
            "haproxy_server_check_up_down_total",
            "counter",
            "Total number of UP->DOWN transitions.",
        ),
    ];
    for (name, kind, help) in server_metrics {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for b in &pool.backends {
            let c = &b.counters;
            let v = match name {
                "haproxy_server_status" => u64::from(b.is_up()),
                "haproxy_server_current_sessions" => c.current.load(Ordering::Relaxed),
                "haproxy_server_sessions_total" => c.total.load(Ordering::Relaxed),
                "haproxy_server_bytes_in_total" => c.bytes_in.load(Ordering::Relaxed),
                "haproxy_server_bytes_out_total" => c.bytes_out.load(Ordering::Relaxed),
                "haproxy_server_connection_errors_total" => {
                    c.connect_errors.load(Ordering::Relaxed)
                }
                "haproxy_server_check_failures_total" => c.check_failures.load(Ordering::Relaxed),
                "haproxy_server_check_successes_total" => c.check_successes.load(Ordering::Relaxed),
                _ => c.downs.load(Ordering::Relaxed),
            };
            let _ = writeln!(
                out,
                "{name}{{proxy=\"lb\",server=\"{}\"}} {v}",
                escape(&b.addr)
            );
        }
    }
    let fe = &pool.frontend;
    let frontend: [(&str, &str, &str, u64); 4] = [
        (
            "haproxy_frontend_current_sessions",
            "gauge",
            "Current number of active sessions.",
            fe.current.load(Ordering::Relaxed),
        ),
        (
            "haproxy_frontend_sessions_total",
            "counter",
            "Total number of sessions.",
            fe.total.load(Ordering::Relaxed),
        ),
        (
            "haproxy_frontend_denied_connections_total",
            "counter",
            "Connections refused at --max-connections.",
            fe.denied.load(Ordering::Relaxed),
        ),
        (
            "haproxy_backend_connection_errors_total",
            "counter",
            "Connections closed because no backend accepted them.",
            fe.no_backend.load(Ordering::Relaxed),
        ),
    ];
    for (name, kind, help, v) in frontend {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{proxy=\"lb\"}} {v}"
        );
    }
    out
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Balance;

    #[test]
    fn metrics_name_every_backend() {
        let pool = Pool::new(&["a:1".into(), "b:2".into()], Balance::RoundRobin).unwrap();
        pool.backends[1].observe_check(false, 1, 1);
        let m = render_metrics(&pool);
        assert!(
            m.contains("haproxy_server_status{proxy=\"lb\",server=\"a:1\"} 1"),
            "{m}"
        );
        assert!(
            m.contains("haproxy_server_status{proxy=\"lb\",server=\"b:2\"} 0"),
            "{m}"
        );
        assert!(m.contains("haproxy_server_check_failures_total{proxy=\"lb\",server=\"b:2\"} 1"));
        assert!(render_page(&pool).contains("DOWN"));
    }
}

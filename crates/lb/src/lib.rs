//! `lb`: the TCP load balancer in front of the apiservers (HAProxy in `mode tcp`).
//!
//! Layout:
//! * [`backend`]: one backend's address, its up/down state machine (rise/fall counters) and its
//!   counters; the [`backend::Pool`] that picks backends (round-robin or leastconn).
//! * [`proxy`]: the accept loop and the byte pump of each connection (half-close, idle
//!   timeout, connection cap, cut when the backend goes down, retry on a failed connect).
//! * [`checker`]: one active health-check task per backend (`GET /readyz`, HTTPS when a CA is
//!   given).
//! * [`stats`]: the stats page and `/metrics` (Prometheus text, HAProxy exporter names).
//!
//! TLS passes through untouched: `lb` never terminates the client's TLS, so the apiserver sees
//! the client certificate. [`run`] owns every task and stops them all when its shutdown future
//! completes.
#![forbid(unsafe_code)]

pub mod backend;
pub mod checker;
pub mod proxy;
pub mod stats;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::watch, task::JoinSet};

pub use backend::{Balance, Pool};

/// Everything `lb` can fail with at start; each message names the flag to fix.
#[derive(Debug, thiserror::Error)]
pub enum LbError {
    #[error("--backend {0:?}: expected HOST:PORT (e.g. apiserver-0:6443 or 10.0.0.5:6443)")]
    Backend(String),
    #[error("no --backend given: at least one HOST:PORT is required")]
    NoBackends,
    #[error("{flag}: {detail}")]
    Invalid { flag: &'static str, detail: String },
    #[error("{flag} {addr}: cannot listen: {source}")]
    Bind {
        flag: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("health-check TLS: {0}")]
    Tls(#[from] kl_tls::TlsError),
}

/// Active health-check settings (HAProxy's `inter`, `timeout check`, `rise`, `fall`).
#[derive(Clone, Debug)]
pub struct CheckConfig {
    /// Time between two checks of one backend.
    pub interval: Duration,
    /// Bound on one check: connect, TLS handshake, request and status line.
    pub timeout: Duration,
    /// Consecutive successes that bring a down backend up.
    pub rise: u32,
    /// Consecutive failures that take an up backend down (and cut its connections).
    pub fall: u32,
    /// The HTTP path asked (`/readyz`); a 2xx or 3xx answer is a success, as in HAProxy.
    pub path: String,
    /// TLS for the check; `None` means a plain-HTTP check.
    pub tls: Option<kl_tls::ClientTls>,
}

/// The whole configuration of one `lb`.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where clients connect (the frontend).
    pub bind: SocketAddr,
    /// `HOST:PORT` of each backend; names are re-resolved on every connect and check.
    pub backends: Vec<String>,
    pub balance: Balance,
    pub check: CheckConfig,
    /// Stats page and `/metrics`.
    pub stats_bind: SocketAddr,
    /// A connection with no byte in either direction for this long is closed (HAProxy's
    /// `timeout client`/`timeout server`); generous because watches are quiet for long.
    pub idle_timeout: Duration,
    /// Bound on one connect to one backend before trying the next.
    pub connect_timeout: Duration,
    /// Open client connections beyond this are closed at once (HAProxy's `maxconn`).
    pub max_connections: usize,
    /// On shutdown, how long open connections may continue before they are cut.
    pub drain_timeout: Duration,
}

impl Config {
    /// A configuration with the defaults of the `lb` binary.
    pub fn new(bind: SocketAddr, backends: Vec<String>) -> Self {
        Config {
            bind,
            backends,
            balance: Balance::RoundRobin,
            check: CheckConfig {
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
                rise: 2,
                fall: 2,
                path: "/readyz".into(),
                tls: None,
            },
            stats_bind: SocketAddr::from(([127, 0, 0, 1], 8404)),
            idle_timeout: Duration::from_secs(3600),
            connect_timeout: Duration::from_secs(5),
            max_connections: 10_000,
            drain_timeout: Duration::from_secs(5),
        }
    }

    /// Checks the values that no type can: called by [`run`].
    pub fn validate(&self) -> Result<(), LbError> {
        if self.backends.is_empty() {
            return Err(LbError::NoBackends);
        }
        for b in &self.backends {
            backend::split_host_port(b)?;
        }
        let invalid = |flag, detail: &str| {
            Err(LbError::Invalid {
                flag,
                detail: detail.to_string(),
            })
        };
        if self.check.rise == 0 {
            return invalid("--rise", "must be at least 1");
        }
        if self.check.fall == 0 {
            return invalid("--fall", "must be at least 1");
        }
        if self.check.interval.is_zero() {
            return invalid("--check-interval", "must be greater than 0");
        }
        if self.check.timeout.is_zero() {
            return invalid("--check-timeout", "must be greater than 0");
        }
        if self.connect_timeout.is_zero() {
            return invalid("--connect-timeout", "must be greater than 0");
        }
        if self.idle_timeout.is_zero() {
            return invalid("--idle-timeout", "must be greater than 0");
        }
        if self.max_connections == 0 {
            return invalid("--max-connections", "must be at least 1");
        }
        if !self.check.path.starts_with('/') {
            return invalid("--check-path", "must start with /");
        }
        Ok(())
    }
}

/// Runs the load balancer until `shutdown` completes: then stops accepting, lets open
/// connections run for [`Config::drain_timeout`], cuts the rest and returns.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), LbError> {
    config.validate()?;
    let listener = TcpListener::bind(config.bind)
        .await
        .map_err(|source| LbError::Bind {
            flag: "--bind",
            addr: config.bind,
            source,
        })?;
    let stats_listener = TcpListener::bind(config.stats_bind)
        .await
        .map_err(|source| LbError::Bind {
            flag: "--stats-bind",
            addr: config.stats_bind,
            source,
        })?;
    let tls = match &config.check.tls {
        Some(t) => Some(tokio_rustls::TlsConnector::from(t.rustls_config()?)),
        None => None,
    };
    let pool = Arc::new(Pool::new(&config.backends, config.balance)?);
    tracing::info!(
        bind = %config.bind,
        stats = %config.stats_bind,
        backends = ?config.backends,
        balance = ?config.balance,
        check_tls = tls.is_some(),
        "lb listening"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tasks.spawn(proxy::serve(
        listener,
        pool.clone(),
        proxy::ProxyConfig::from(&config),
        stop_rx.clone(),
    ));
    tasks.spawn(checker::run_all(
        pool.clone(),
        config.check.clone(),
        tls,
        stop_rx.clone(),
    ));
    tasks.spawn(stats::serve(stats_listener, pool, stop_rx));

    shutdown.await;
    tracing::info!(drain = ?config.drain_timeout, "shutting down: no new connections");
    let _ = stop_tx.send(true);
    // The proxy drains for `drain_timeout` and then cuts; the bound below only guards against
    // a stats client that holds its connection open.
    let all_done = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(config.drain_timeout + Duration::from_secs(5), all_done)
        .await
        .is_err()
    {
        tracing::warn!("tasks still running after the drain: aborting them");
        tasks.shutdown().await;
    }
    tracing::info!("lb stopped");
    Ok(())
}

/// Resolves when `rx` says stop (or its sender is gone). Cancellation-safe.
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_flag() {
        let bind = SocketAddr::from(([127, 0, 0, 1], 0));
        assert!(matches!(
            Config::new(bind, vec![]).validate(),
            Err(LbError::NoBackends)
        ));
        let e = Config::new(bind, vec!["nope".into()])
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("HOST:PORT"), "{e}");
        let mut c = Config::new(bind, vec!["a:1".into()]);
        c.check.fall = 0;
        assert!(c.validate().unwrap_err().to_string().contains("--fall"));
    }
}

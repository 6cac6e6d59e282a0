//! The TCP proxy: accept, pick a backend, pump bytes both ways.
//!
//! * Bytes pass through untouched (TLS stays end to end).
//! * Half-close: when one side ends its writes, the other side's write half is shut down and
//!   the opposite direction keeps flowing until it ends too.
//! * A failed connect marks the backend down and the next candidate is tried, so a dead
//!   backend costs the client nothing but the connect time.
//! * A connection ends when both directions are done, on an I/O error, after
//!   `idle_timeout` without a byte, or when its backend is taken down by checks.
//! * Beyond `max_connections` open connections, a new one is closed at once.
//!
//! Every connection task lives in the accept loop's `JoinSet`; on shutdown the loop stops
//! accepting, waits up to `drain_timeout`, then aborts what is left.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        tcp::{OwnedReadHalf, OwnedWriteHalf},
        TcpListener, TcpStream,
    },
    sync::watch,
    task::JoinSet,
    time::Instant,
};

use crate::{
    backend::{Backend, Pool, Transition},
    stopped, Config,
};

/// Size of each direction's copy buffer.
const BUF_SIZE: usize = 16 * 1024;

/// The proxy's share of [`Config`].
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_connections: usize,
    pub drain_timeout: Duration,
}

impl From<&Config> for ProxyConfig {
    fn from(c: &Config) -> Self {
        ProxyConfig {
            idle_timeout: c.idle_timeout,
            connect_timeout: c.connect_timeout,
            max_connections: c.max_connections,
            drain_timeout: c.drain_timeout,
        }
    }
}

/// Decrements a gauge when dropped, so that aborted tasks count down too.
struct Gauge<'a>(&'a AtomicU64);

impl<'a> Gauge<'a> {
    fn up(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Gauge(counter)
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The accept loop; returns after shutdown once every connection has ended or been cut.
pub async fn serve(
    listener: TcpListener,
    pool: Arc<Pool>,
    cfg: ProxyConfig,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let (client, peer) = match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        // EMFILE and friends: back off rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let fe = &pool.frontend;
                if fe.current.load(Ordering::Relaxed) >= cfg.max_connections as u64 {
                    fe.denied.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, max = cfg.max_connections, "connection refused: at --max-connections");
                    drop(client);
                    continue;
                }
                fe.total.fetch_add(1, Ordering::Relaxed);
                // Counted here, not in the task, so the cap holds before the task first runs.
                fe.current.fetch_add(1, Ordering::Relaxed);
                let pool = pool.clone();
                let cfg = cfg.clone();
                conns.spawn(async move {
                    let _live = Gauge(&pool.frontend.current);
                    handle(client, peer, &pool, &cfg).await;
                });
            }
        }
    }
    drop(listener);
    let open = conns.len();
    if open > 0 {
        tracing::info!(open, drain = ?cfg.drain_timeout, "draining connections");
        let drained = tokio::time::timeout(cfg.drain_timeout, async {
            while conns.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::info!(left = conns.len(), "drain timeout: cutting connections");
        }
    }
    conns.shutdown().await;
}

/// Tries the candidates in order; a failed connect marks that backend down.
async fn connect_any(pool: &Pool, timeout: Duration) -> Option<(TcpStream, Arc<Backend>)> {
    for backend in pool.candidates() {
        match backend.connect(timeout).await {
            Ok(stream) => return Some((stream, backend)),
            Err(e) => {
                if backend.connect_failed() == Some(Transition::Down) {
                    tracing::warn!(backend = %backend.addr, error = %e, "backend DOWN: connect failed (passive check)");
                } else {
                    tracing::debug!(backend = %backend.addr, error = %e, "connect failed");
                }
            }
        }
    }
    None
}

async fn handle(client: TcpStream, peer: SocketAddr, pool: &Pool, cfg: &ProxyConfig) {
    let _ = client.set_nodelay(true);
    let Some((server, backend)) = connect_any(pool, cfg.connect_timeout).await else {
        pool.frontend.no_backend.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%peer, "no backend accepted the connection; closing it");
        return;
    };
    let mut cut = backend.cut_signal();
    let c = &backend.counters;
    c.total.fetch_add(1, Ordering::Relaxed);
    let _active = Gauge::up(&c.current);
    tracing::debug!(%peer, backend = %backend.addr, "connected");

    let last_activity = AtomicU64::new(0);
    let started = Instant::now();
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let both = async {
        tokio::try_join!(
            pump(cr, sw, &c.bytes_in, &last_activity, started),
            pump(sr, cw, &c.bytes_out, &last_activity, started),
        )
    };
    let idle = async {
        loop {
            let last = started + Duration::from_millis(last_activity.load(Ordering::Relaxed));
            let deadline = last + cfg.idle_timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };
    tokio::select! {
        r = both => {
            if let Err(e) = r {
                tracing::debug!(%peer, backend = %backend.addr, error = %e, "connection ended with an error");
            }
        }
        _ = idle => tracing::debug!(%peer, backend = %backend.addr, "idle timeout: closing"),
        _ = cut.changed() => tracing::debug!(%peer, backend = %backend.addr, "backend went down: cutting its connection"),
    }
}

/// Copies one direction until EOF, then shuts the write half down (half-close).
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    bytes: &AtomicU64,
    last_activity: &AtomicU64,
    started: Instant,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            to.shutdown().await?;
            return Ok(());
        }
        to.write_all(&buf[..n]).await?;
        bytes.fetch_add(n as u64, Ordering::Relaxed);
        last_activity.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

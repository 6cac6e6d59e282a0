//! Active health checks: one task per backend sends `GET <path>` every `interval` (HTTPS when
//! a CA is configured, plain HTTP otherwise) and feeds the result to the backend's state
//! machine. A 2xx or 3xx status line within `timeout` is a success (HAProxy's `httpchk`);
//! anything else, including a refused connect or a TLS failure, is a failure.
//!
//! The tasks never touch connections themselves: a transition to down bumps the backend's cut
//! signal and the proxy acts on it.

use std::sync::Arc;

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    sync::watch,
    task::JoinSet,
    time::MissedTickBehavior,
};
use tokio_rustls::{rustls::pki_types::ServerName, TlsConnector};

use crate::{
    backend::{Backend, Pool, Transition},
    stopped, CheckConfig,
};

/// Longest status line read from a check answer.
const MAX_STATUS_LINE: usize = 1024;

/// Why one check failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
    #[error("TLS: {0}")]
    Tls(#[source] std::io::Error),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("no HTTP status line in the answer")]
    BadAnswer,
    #[error("status {0}")]
    Status(u16),
    #[error("timed out")]
    Timeout,
}

/// Runs one checker per backend until `stop`.
pub async fn run_all(
    pool: Arc<Pool>,
    cfg: CheckConfig,
    tls: Option<TlsConnector>,
    stop: watch::Receiver<bool>,
) {
    let mut tasks = JoinSet::new();
    for b in &pool.backends {
        tasks.spawn(check_loop(
            b.clone(),
            cfg.clone(),
            tls.clone(),
            stop.clone(),
        ));
    }
    while tasks.join_next().await.is_some() {}
}

async fn check_loop(
    backend: Arc<Backend>,
    cfg: CheckConfig,
    tls: Option<TlsConnector>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = tick.tick() => {}
        }
        let result = tokio::select! {
            _ = stopped(&mut stop) => return,
            r = check_once(&backend, &cfg, tls.as_ref()) => r,
        };
        let ok = result.is_ok();
        match backend.observe_check(ok, cfg.rise, cfg.fall) {
            Some(Transition::Down) => tracing::warn!(
                backend = %backend.addr,
                error = %result.as_ref().err().map(ToString::to_string).unwrap_or_default(),
                fall = cfg.fall,
                open = backend.counters.current.load(std::sync::atomic::Ordering::Relaxed),
                "backend DOWN: health check failed; cutting its connections"
            ),
            Some(Transition::Up) => {
                tracing::info!(backend = %backend.addr, rise = cfg.rise, "backend UP: health check passed")
            }
            None => {
                if let Err(e) = &result {
                    tracing::debug!(backend = %backend.addr, error = %e, "health check failed");
                }
            }
        }
    }
}

/// One check, bounded by `cfg.timeout`.
pub async fn check_once(
    backend: &Backend,
    cfg: &CheckConfig,
    tls: Option<&TlsConnector>,
) -> Result<(), CheckError> {
    let attempt = async {
        let tcp = backend
            .connect(cfg.timeout)
            .await
            .map_err(CheckError::Connect)?;
        let host_header = if backend.host.contains(':') {
            format!("[{}]", backend.host)
        } else {
            backend.host.clone()
        };
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: kube-lite-lb\r\nAccept: */*\r\nConnection: close\r\n\r\n",
            cfg.path
        );
        match tls {
            Some(connector) => {
                let name = ServerName::try_from(backend.host.clone())
                    .map_err(|_| CheckError::ServerName(backend.host.clone()))?;
                let stream = connector
                    .connect(name, tcp)
                    .await
                    .map_err(CheckError::Tls)?;
                exchange(stream, &request).await
            }
            None => exchange(tcp, &request).await,
        }
    };
    match tokio::time::timeout(cfg.timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(CheckError::Timeout),
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &str,
) -> Result<(), CheckError> {
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    let mut buf = Vec::with_capacity(128);
    let mut chunk = [0u8; 256];
    while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < MAX_STATUS_LINE {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let status = parse_status(&buf).ok_or(CheckError::BadAnswer)?;
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(CheckError::Status(status))
    }
}

/// The status code of an `HTTP/1.x NNN ...` status line.
fn parse_status(answer: &[u8]) -> Option<u16> {
    let line = answer.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            parse_status(b"HTTP/1.0 503 Service Unavailable\r\nx"),
            Some(503)
        );
        assert_eq!(parse_status(b"SSH-2.0\r\n"), None);
        assert_eq!(parse_status(b""), None);
    }
}

//! `kl-bench lb`: the TCP load of `scripts/bench lb`, the same through `lb`, through HAProxy
//! and straight to the backends.
//!
//! * `backend`: a TLS echo server. A first line `GET /readyz ...` gets `200 OK` (the health
//!   check); any other first line is echoed back with everything after it.
//! * `load`: `--clients` concurrent clients, each opening TLS connections (round-robin over
//!   `--targets`) and doing `--per-conn` echo round trips of `--msg-size` bytes on each;
//!   latency is per round trip (the first one includes connect and TLS handshake). Bounded by
//!   `--total` round trips and `--max-duration`. Prints one JSON line.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use clap::{Args, Subcommand};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinSet,
};
use tokio_rustls::{rustls::pki_types::ServerName, TlsAcceptor, TlsConnector};

use crate::stats::Latencies;

#[derive(Subcommand, Debug)]
pub enum LbBench {
    /// A TLS echo backend that also answers GET /readyz.
    Backend(BackendArgs),
    /// Echo round trips through a target (lb, haproxy or the backends themselves).
    Load(LoadArgs),
}

#[derive(Args, Debug)]
pub struct BackendArgs {
    #[arg(long)]
    listen: SocketAddr,
    #[arg(long)]
    cert: PathBuf,
    #[arg(long)]
    key: PathBuf,
}

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Comma-separated HOST:PORT targets; connection i goes to target i mod n.
    #[arg(long, value_delimiter = ',', required = true)]
    targets: Vec<SocketAddr>,
    /// CA that signed the backends.
    #[arg(long)]
    cacert: PathBuf,
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Round trips in total.
    #[arg(long, default_value_t = 20_000)]
    total: usize,
    /// Round trips per connection (1: a new connection per request).
    #[arg(long, default_value_t = 100)]
    per_conn: usize,
    #[arg(long, default_value_t = 256)]
    msg_size: usize,
    /// Per round-trip timeout; a timed-out or failed round trip is an error (and ends its
    /// connection).
    #[arg(long, value_parser = kl_cli::duration, default_value = "5s")]
    request_timeout: Duration,
    #[arg(long, value_parser = kl_cli::duration, default_value = "120s")]
    max_duration: Duration,
    #[arg(long, default_value = "")]
    label: String,
}

pub async fn run(bench: LbBench) -> anyhow::Result<Option<String>> {
    match bench {
        LbBench::Backend(a) => {
            backend(a).await?;
            Ok(None)
        }
        LbBench::Load(a) => Ok(Some(load(a).await?)),
    }
}

async fn backend(a: BackendArgs) -> anyhow::Result<()> {
    let tls = kl_tls::ServerTls::load(&a.cert, &a.key, None, false)?;
    let acceptor = TlsAcceptor::from(tls.rustls_config()?);
    let listener = TcpListener::bind(a.listen).await?;
    let mut conns = JoinSet::new();
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        conns.spawn(async move {
            if let Ok(Ok(s)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            {
                let _ = serve_conn(s).await;
            }
        });
        while conns.try_join_next().is_some() {}
    }
}

async fn serve_conn<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> std::io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    let n = s.read(&mut buf).await?;
    if n == 0 {
        return Ok(());
    }
    if buf[..n].starts_with(b"GET /readyz") {
        s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .await?;
        return s.shutdown().await;
    }
    s.write_all(&buf[..n]).await?;
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return s.shutdown().await;
        }
        s.write_all(&buf[..n]).await?;
    }
}

async fn load(a: LoadArgs) -> anyhow::Result<String> {
    anyhow::ensure!(
        a.per_conn > 0 && a.clients > 0,
        "--per-conn and --clients must be > 0"
    );
    let connector = TlsConnector::from(kl_tls::ClientTls::load(&a.cacert, None)?.rustls_config()?);
    let a = Arc::new(a);
    let issued = Arc::new(AtomicUsize::new(0));
    let next_target = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + a.max_duration;
    let mut tasks = JoinSet::new();
    for _ in 0..a.clients {
        let (a, issued, next_target, connector) = (
            a.clone(),
            issued.clone(),
            next_target.clone(),
            connector.clone(),
        );
        tasks.spawn(async move {
            let mut lat = Latencies::with_capacity(a.total / a.clients + 1);
            let mut errors = 0usize;
            let msg: Vec<u8> = (0..a.msg_size).map(|i| b'a' + (i % 26) as u8).collect();
            let mut back = vec![0u8; a.msg_size];
            'outer: while Instant::now() < deadline {
                let target =
                    a.targets[next_target.fetch_add(1, Ordering::Relaxed) % a.targets.len()];
                let t0 = Instant::now();
                if issued.fetch_add(1, Ordering::Relaxed) >= a.total {
                    break;
                }
                let conn = tokio::time::timeout(a.request_timeout, async {
                    let tcp = TcpStream::connect(target).await?;
                    let _ = tcp.set_nodelay(true);
                    connector
                        .connect(ServerName::try_from("127.0.0.1").expect("IP name"), tcp)
                        .await
                })
                .await;
                let mut s = match conn {
                    Ok(Ok(s)) => s,
                    _ => {
                        errors += 1;
                        continue;
                    }
                };
                for i in 0..a.per_conn {
                    let t = if i == 0 { t0 } else { Instant::now() };
                    if i > 0 && issued.fetch_add(1, Ordering::Relaxed) >= a.total {
                        break 'outer;
                    }
                    let rt = tokio::time::timeout(a.request_timeout, async {
                        s.write_all(&msg).await?;
                        s.read_exact(&mut back).await?;
                        std::io::Result::Ok(())
                    })
                    .await;
                    match rt {
                        Ok(Ok(())) if back == msg => lat.record(t.elapsed()),
                        _ => {
                            errors += 1;
                            break;
                        }
                    }
                    if Instant::now() >= deadline {
                        break 'outer;
                    }
                }
                let _ = s.shutdown().await;
            }
            (lat, errors)
        });
    }
    let mut lat = Latencies::with_capacity(a.total);
    let mut errors = 0;
    while let Some(r) = tasks.join_next().await {
        let (l, e) = r?;
        lat.merge(l);
        errors += e;
    }
    let secs = started.elapsed().as_secs_f64();
    let ok = lat.len();
    Ok(serde_json::json!({
        "label": a.label,
        "ok": ok,
        "errors": errors,
        "seconds": secs,
        "throughput": ok as f64 / secs,
        "p50_ms": lat.percentile_ms(50.0),
        "p99_ms": lat.percentile_ms(99.0),
    })
    .to_string())
}

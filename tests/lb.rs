//! Multi-process tests of `lb`: the real binary in front of small mutual-TLS backends written
//! here. Each backend answers `GET /readyz` with 200 or 503 (switchable), and a connection
//! that starts with the line `ECHO` gets the backend's name on a line, then an echo of what it
//! sends: so a test sees which backend served a TLS connection made through the lb. The
//! backends serve with the test PKI's etcd serving certificate and trust its etcd CA, and the
//! lb's health checks and the test's clients use that CA too: any one CA shows what the lb
//! does, and the store's comes with a ready-made serving certificate.
//!
//! Needs `cargo build --workspace --bins` first (the `lb` binary).

use std::{
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::Context;
use testkit::{bin_path, free_port, process::Proc, wait_until, TestPki};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinSet,
};
use tokio_rustls::{client::TlsStream, rustls::pki_types::ServerName, TlsConnector};

const WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);

/// One in-test backend; its server task (and every connection) ends when this is dropped.
struct Backend {
    name: String,
    port: u16,
    ready: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

async fn start_backend(name: &str, pki: &TestPki) -> anyhow::Result<Backend> {
    let tls = kl_tls::ServerTls::load(&pki.server_cert, &pki.server_key, Some(&pki.etcd_ca), true)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.rustls_config()?);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let ready = Arc::new(AtomicBool::new(true));
    let (r, n) = (ready.clone(), name.to_string());
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, ready, name) = (acceptor.clone(), r.clone(), n.clone());
            conns.spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(line) = read_line(&mut s).await else {
                    return;
                };
                if line.starts_with("GET ") {
                    let answer = if ready.load(Ordering::SeqCst) {
                        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                    } else {
                        "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    };
                    let _ = s.write_all(answer.as_bytes()).await;
                    let _ = s.shutdown().await;
                } else if line == "ECHO" {
                    let _ = s.write_all(format!("{name}\n").as_bytes()).await;
                    let mut buf = [0u8; 4096];
                    while let Ok(k) = s.read(&mut buf).await {
                        if k == 0 || s.write_all(&buf[..k]).await.is_err() {
                            break;
                        }
                    }
                    let _ = s.shutdown().await;
                }
            });
            while conns.try_join_next().is_some() {}
        }
    });
    Ok(Backend {
        name: name.to_string(),
        port,
        ready,
        task,
    })
}

/// Reads one `\n`-terminated line (without `\r\n`), at most 1 KiB.
async fn read_line<S: AsyncRead + Unpin>(s: &mut S) -> anyhow::Result<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < 1024 {
        if s.read(&mut b).await? == 0 {
            anyhow::bail!(
                "EOF before end of line (got {:?})",
                String::from_utf8_lossy(&line)
            );
        }
        if b[0] == b'\n' {
            break;
        }
        line.push(b[0]);
    }
    Ok(String::from_utf8_lossy(&line)
        .trim_end_matches('\r')
        .to_string())
}

/// A running lb and the things to talk to it.
struct Lb {
    proc: Proc,
    port: u16,
    stats_port: u16,
    connector: TlsConnector,
}

async fn start_lb(
    pki: &TestPki,
    dir: &Path,
    backends: &[String],
    extra: &[&str],
) -> anyhow::Result<Lb> {
    let (port, stats_port) = (free_port(), free_port());
    let mut args = vec![
        format!("--bind=127.0.0.1:{port}"),
        format!("--stats-bind=127.0.0.1:{stats_port}"),
        format!("--check-ca-file={}", pki.etcd_ca.display()),
        format!("--check-cert-file={}", pki.etcd_admin_cert.display()),
        format!("--check-key-file={}", pki.etcd_admin_key.display()),
    ];
    for b in backends {
        args.push(format!("--backend={b}"));
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let proc = Proc::spawn(&bin_path("lb"), &args, &dir.join(format!("lb-{port}.log")))
        .context("run `cargo build --workspace --bins` first")?;
    let lb = Lb {
        proc,
        port,
        stats_port,
        connector: TlsConnector::from(pki.client_tls()?.rustls_config()?),
    };
    wait_until("lb stats to answer", WAIT, POLL, || async {
        Ok(lb.get("/metrics").await.ok().map(|_| ()))
    })
    .await?;
    Ok(lb)
}

impl Lb {
    /// An HTTP/1.0 GET on the stats port; the body.
    async fn get(&self, path: &str) -> anyhow::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.stats_port)).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        anyhow::ensure!(
            out.starts_with("HTTP/1.1 200") || out.starts_with("HTTP/1.0 200"),
            "{out}"
        );
        Ok(out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default())
    }

    /// A metric's value for one backend.
    async fn server_metric(&self, name: &str, backend: &Backend) -> anyhow::Result<u64> {
        let body = self.get("/metrics").await?;
        let prefix = format!("{name}{{proxy=\"lb\",server=\"{}\"}} ", backend.addr());
        let line = body
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .with_context(|| format!("no {prefix} in\n{body}"))?;
        Ok(line.trim().parse()?)
    }

    async fn frontend_metric(&self, name: &str) -> anyhow::Result<u64> {
        let body = self.get("/metrics").await?;
        let prefix = format!("{name}{{proxy=\"lb\"}} ");
        let line = body
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .with_context(|| format!("no {prefix} in\n{body}"))?;
        Ok(line.trim().parse()?)
    }

    /// Waits until the lb reports `backend` up (1) or down (0).
    async fn wait_status(&self, backend: &Backend, up: bool) -> anyhow::Result<()> {
        let what = format!("{} to be {}", backend.name, if up { "UP" } else { "DOWN" });
        wait_until(&what, WAIT, POLL, || async {
            let v = self.server_metric("haproxy_server_status", backend).await?;
            Ok((v == u64::from(up)).then_some(()))
        })
        .await
    }

    /// A mutual-TLS connection through the lb that asked for ECHO: the backend's name and the
    /// open stream.
    async fn echo(&self) -> anyhow::Result<(String, TlsStream<TcpStream>)> {
        let tcp = TcpStream::connect(("127.0.0.1", self.port)).await?;
        let name = ServerName::try_from("127.0.0.1")?;
        let mut s = tokio::time::timeout(WAIT, self.connector.connect(name, tcp))
            .await
            .context("TLS handshake through the lb timed out")??;
        s.write_all(b"ECHO\n").await?;
        let who = tokio::time::timeout(WAIT, read_line(&mut s))
            .await
            .context("no backend name within the wait")??;
        Ok((who, s))
    }
}

fn setup() -> anyhow::Result<(tempfile::TempDir, TestPki)> {
    let dir = tempfile::tempdir()?;
    let pki = TestPki::generate(&dir.path().join("pki"))?;
    Ok((dir, pki))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_stats_and_sigterm() -> anyhow::Result<()> {
    let (dir, pki) = setup()?;
    let bs = [
        start_backend("b0", &pki).await?,
        start_backend("b1", &pki).await?,
        start_backend("b2", &pki).await?,
    ];
    let addrs: Vec<String> = bs.iter().map(Backend::addr).collect();
    let mut lb = start_lb(&pki, dir.path(), &addrs, &["--check-interval=100ms"]).await?;

    let mut seen = Vec::new();
    for _ in 0..6 {
        let (who, mut s) = lb.echo().await?;
        // The echo path works end to end, both directions, through the lb.
        s.write_all(b"ping\n").await?;
        assert_eq!(read_line(&mut s).await?, "ping");
        seen.push(who);
    }
    for b in &bs {
        let n = seen.iter().filter(|w| **w == b.name).count();
        assert_eq!(n, 2, "round-robin over 3 backends, 6 connections: {seen:?}");
        assert_eq!(lb.server_metric("haproxy_server_status", b).await?, 1);
        assert_eq!(
            lb.server_metric("haproxy_server_sessions_total", b).await?,
            2
        );
        assert!(lb.server_metric("haproxy_server_bytes_in_total", b).await? > 0);
        assert!(
            lb.server_metric("haproxy_server_bytes_out_total", b)
                .await?
                > 0
        );
        assert!(
            lb.server_metric("haproxy_server_check_successes_total", b)
                .await?
                > 0
        );
    }
    let page = lb.get("/").await?;
    for b in &bs {
        assert!(
            page.lines()
                .any(|l| l.starts_with(&b.addr()) && l.contains("UP")),
            "{page}"
        );
    }

    lb.proc.signal("TERM")?;
    let st = lb
        .proc
        .wait_exit(Duration::from_secs(15))
        .context("lb did not exit after SIGTERM")?;
    assert!(st.success(), "lb exit status after SIGTERM: {st}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_readyz_takes_backend_out_cuts_streams_and_rise_brings_it_back(
) -> anyhow::Result<()> {
    let (dir, pki) = setup()?;
    let bs = [
        start_backend("b0", &pki).await?,
        start_backend("b1", &pki).await?,
    ];
    let addrs: Vec<String> = bs.iter().map(Backend::addr).collect();
    let lb = start_lb(
        &pki,
        dir.path(),
        &addrs,
        &["--check-interval=100ms", "--fall=2", "--rise=2"],
    )
    .await?;

    // A long-lived stream on b0 (a watch, in real life).
    let mut held = None;
    for _ in 0..4 {
        let (who, s) = lb.echo().await?;
        if who == "b0" {
            held = Some(s);
            break;
        }
    }
    let mut held = held.context("no connection reached b0")?;

    bs[0].ready.store(false, Ordering::SeqCst);
    lb.wait_status(&bs[0], false).await?;
    assert!(
        lb.server_metric("haproxy_server_check_failures_total", &bs[0])
            .await?
            >= 2
    );
    assert_eq!(
        lb.server_metric("haproxy_server_check_up_down_total", &bs[0])
            .await?,
        1
    );

    // The stream was cut by the lb: EOF or an abrupt end, within the wait.
    let mut buf = [0u8; 64];
    match tokio::time::timeout(WAIT, held.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("unexpected bytes on a cut stream: {:?}", &buf[..n]),
        Err(_) => panic!("the stream to the down backend was not cut"),
    }

    for _ in 0..4 {
        assert_eq!(
            lb.echo().await?.0,
            "b1",
            "no new connection to a DOWN backend"
        );
    }

    bs[0].ready.store(true, Ordering::SeqCst);
    lb.wait_status(&bs[0], true).await?;
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(lb.echo().await?.0);
    }
    assert!(
        seen.iter().any(|w| w == "b0"),
        "b0 back after rise: {seen:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_connect_is_retried_on_another_backend() -> anyhow::Result<()> {
    let (dir, pki) = setup()?;
    let b0 = start_backend("b0", &pki).await?;
    let b1 = start_backend("b1", &pki).await?;
    // A backend whose port nothing listens on (a crashed apiserver).
    let dead = Backend {
        name: "dead".into(),
        port: free_port(),
        ready: Arc::new(AtomicBool::new(false)),
        task: tokio::spawn(async {}),
    };
    let addrs = vec![b0.addr(), dead.addr(), b1.addr()];
    // Active checks practically off: only the passive check can notice.
    let lb = start_lb(
        &pki,
        dir.path(),
        &addrs,
        &["--check-interval=1h", "--fall=100"],
    )
    .await?;
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(lb.echo().await?.0);
    }
    assert!(seen.iter().all(|w| w == "b0" || w == "b1"), "{seen:?}");
    assert!(
        lb.server_metric("haproxy_server_connection_errors_total", &dead)
            .await?
            >= 1
    );
    assert_eq!(lb.server_metric("haproxy_server_status", &dead).await?, 0);
    assert_eq!(
        lb.server_metric("haproxy_server_sessions_total", &dead)
            .await?,
        0
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leastconn_picks_the_idle_backend() -> anyhow::Result<()> {
    let (dir, pki) = setup()?;
    let bs = [
        start_backend("b0", &pki).await?,
        start_backend("b1", &pki).await?,
    ];
    let addrs: Vec<String> = bs.iter().map(Backend::addr).collect();
    let lb = start_lb(&pki, dir.path(), &addrs, &["--balance=leastconn"]).await?;
    let (busy, _held) = lb.echo().await?;
    let idle = bs.iter().find(|b| b.name != busy).context("two backends")?;
    for _ in 0..3 {
        let (who, s) = lb.echo().await?;
        assert_eq!(
            who, idle.name,
            "leastconn goes to the backend without a connection"
        );
        drop(s);
        wait_until(
            "the closed connection to be counted out",
            WAIT,
            POLL,
            || async {
                let v = lb
                    .server_metric("haproxy_server_current_sessions", idle)
                    .await?;
                Ok((v == 0).then_some(()))
            },
        )
        .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_refused() -> anyhow::Result<()> {
    let (dir, pki) = setup()?;
    let b0 = start_backend("b0", &pki).await?;
    let lb = start_lb(&pki, dir.path(), &[b0.addr()], &["--max-connections=2"]).await?;
    let (_, first) = lb.echo().await?;
    let (_, _second) = lb.echo().await?;
    assert!(
        lb.echo().await.is_err(),
        "a third connection must be refused"
    );
    assert!(
        lb.frontend_metric("haproxy_frontend_denied_connections_total")
            .await?
            >= 1
    );
    drop(first);
    wait_until("a slot to free up", WAIT, POLL, || async {
        Ok(lb.echo().await.ok().map(|_| ()))
    })
    .await?;
    Ok(())
}

#[test]
fn bad_flags_give_a_clear_error() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin_path("lb"))
            .args(args)
            .output()
            .expect("run `cargo build --workspace --bins` first");
        assert!(!out.status.success(), "lb {args:?} should fail");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let e = run(&["--bind=127.0.0.1:0"]);
    assert!(e.contains("--backend"), "{e}");
    let e = run(&["--backend=nope", "--bind=127.0.0.1:0"]);
    assert!(e.contains("HOST:PORT"), "{e}");
    let e = run(&["--backend=a:1", "--check-interval=10"]);
    assert!(e.contains("Go notation"), "{e}");
    let e = run(&[
        "--backend=a:1",
        "--check-cert-file=/x",
        "--check-key-file=/y",
    ]);
    assert!(e.contains("--check-ca-file"), "{e}");
    let e = run(&["--backend=a:1", "--rise=0"]);
    assert!(e.contains("--rise"), "{e}");
    let e = run(&["--backend=a:1", "--check-ca-file=/does/not/exist"]);
    assert!(e.contains("/does/not/exist"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_backend_and_idle_timeout() -> anyhow::Result<()> {
    let (dir, pki) = setup()?;
    let b0 = start_backend("b0", &pki).await?;
    // A name, resolved at each connect and check; the HTTPS check verifies the certificate
    // for that name.
    let named = format!("localhost:{}", b0.port);
    let lb = start_lb(
        &pki,
        dir.path(),
        std::slice::from_ref(&named),
        &["--check-interval=100ms", "--idle-timeout=500ms"],
    )
    .await?;
    wait_until(
        "a passed check of the named backend",
        WAIT,
        POLL,
        || async {
            let body = lb.get("/metrics").await?;
            let prefix =
                format!("haproxy_server_check_successes_total{{proxy=\"lb\",server=\"{named}\"}} ");
            let v: u64 = body
                .lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .with_context(|| format!("no {prefix} in\n{body}"))?
                .trim()
                .parse()?;
            Ok((v > 0).then_some(()))
        },
    )
    .await?;
    let (who, mut s) = lb.echo().await?;
    assert_eq!(who, "b0");
    // Quiet for longer than --idle-timeout: the lb closes the connection.
    let mut buf = [0u8; 16];
    match tokio::time::timeout(WAIT, s.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("unexpected bytes: {:?}", &buf[..n]),
        Err(_) => panic!("an idle connection was not closed"),
    }
    Ok(())
}

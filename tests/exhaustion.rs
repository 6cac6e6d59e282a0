//! Resource exhaustion: clients that hold a server's resources without using them.
//!
//! * A slow-loris client that connects and says nothing, before or after TLS, is dropped by
//!   every server (the store's client and peer ports, the apiserver, the scheduler, the
//!   controller-manager, the kubelet), while a client that sent its HTTP/2 preface in time
//!   keeps its connection.
//! * Each server advertises its HTTP/2 stream cap (`--http2-max-streams-per-connection` on the
//!   apiserver, `--max-concurrent-streams` on the store), and the cap holds: with the
//!   apiserver's streams of one connection all taken by watches, one more call on it waits until
//!   a watch ends.
//! * A connection beyond `--max-connections` is closed at once; the clients already connected
//!   keep working, and the slots come back when connections close.
//!
//! (The apiserver's RESOURCE_EXHAUSTED under `--max-requests-inflight` and its request size
//! limit are in tests/apiserver.rs; the lb's cap and idle timeout in tests/lb.rs.)
//!
//! Needs `cargo build --workspace --bins` first.

use std::{
    net::SocketAddr,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use kl_api::{Namespace, Pod};
use kl_client::{Api, Client, ClientOptions, RetryPolicy, WatchParams};
use testkit::{
    components::{ComponentKind, Components},
    kubelet::Kubelets,
    ApiCluster, ApiOpts, EtcdOpts,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::{client::TlsStream, rustls, TlsConnector};

/// The HTTP/2 client preface followed by an empty SETTINGS frame, as every HTTP/2 client
/// starts.
const H2_PREFACE_AND_SETTINGS: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

/// Well past every server's handshake and first-bytes timeouts (10 s each).
const DROP_WITHIN: Duration = Duration::from_secs(45);

/// One server port and how to reach it with TLS.
struct Port {
    name: &'static str,
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
}

fn port(
    name: &'static str,
    url_or_addr: &str,
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> anyhow::Result<Port> {
    let addr = url_or_addr
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .parse()
        .with_context(|| format!("{name}: {url_or_addr}"))?;
    let tls = kl_tls::ClientTls::load(ca, Some((cert, key)))?.rustls_config()?;
    Ok(Port { name, addr, tls })
}

async fn tls_connect(p: &Port) -> anyhow::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(p.addr).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?.to_owned();
    let tls = tokio::time::timeout(
        Duration::from_secs(10),
        TlsConnector::from(p.tls.clone()).connect(name, tcp),
    )
    .await
    .with_context(|| format!("{}: TLS handshake timed out", p.name))?
    .with_context(|| format!("{}: TLS handshake", p.name))?;
    Ok(tls)
}

/// Reads (and discards) until the server closes the connection or `limit` passes; returns
/// when it was closed, measured from `since`.
async fn closed_at(
    mut s: impl AsyncRead + Unpin,
    since: Instant,
    limit: Duration,
) -> Option<Duration> {
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return since.elapsed(),
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, read_all).await.ok()
}

/// What happened to one port's three connections.
#[derive(Debug)]
struct Outcome {
    name: &'static str,
    /// Plain TCP, nothing sent: when the server closed it.
    tcp_silent: Option<Duration>,
    /// TLS finished, nothing sent: when the server closed it.
    tls_silent: Option<Duration>,
    /// TLS finished and the HTTP/2 preface sent at once: when (if ever) the server closed it.
    tls_talking: Option<Duration>,
    /// TLS finished, an HTTP/1.1 request line and one header sent, the headers never ended
    /// (ports that speak HTTP/1.1 only): when the server closed it.
    http1_unfinished: Option<Option<Duration>>,
}

async fn slow_loris(p: Port, http1: bool) -> anyhow::Result<Outcome> {
    let start = Instant::now();
    let tcp = TcpStream::connect(p.addr).await?;
    let silent = tls_connect(&p).await?;
    let mut talking = tls_connect(&p).await?;
    talking.write_all(H2_PREFACE_AND_SETTINGS).await?;
    talking.flush().await?;
    let unfinished = async {
        if !http1 {
            return anyhow::Ok(None);
        }
        let mut s = tls_connect(&p).await?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .await?;
        s.flush().await?;
        Ok(Some(closed_at(s, start, DROP_WITHIN).await))
    };
    let (tcp_silent, tls_silent, tls_talking, http1_unfinished) = tokio::join!(
        closed_at(tcp, start, DROP_WITHIN),
        closed_at(silent, start, DROP_WITHIN),
        // The talking one is watched a little longer than the silent ones may take.
        closed_at(talking, start, DROP_WITHIN + Duration::from_secs(5)),
        unfinished,
    );
    Ok(Outcome {
        name: p.name,
        tcp_silent,
        tls_silent,
        tls_talking,
        http1_unfinished: http1_unfinished?,
    })
}

/// Runs a test body for at most 3 minutes; a failure panics with the cluster's log tails.
async fn bounded(c: &ApiCluster, body: impl std::future::Future<Output = anyhow::Result<()>>) {
    if let Err(e) = tokio::time::timeout(Duration::from_secs(180), body)
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out")))
    {
        c.dump_logs(30);
        panic!("{e:#}");
    }
}

fn small(etcd_args: &[&str], apiserver_args: &[&str]) -> ApiOpts {
    ApiOpts {
        etcd_members: 1,
        etcd: EtcdOpts {
            extra_args: etcd_args.iter().map(|s| s.to_string()).collect(),
            ..EtcdOpts::fast()
        },
        apiservers: 1,
        apiserver_args: apiserver_args.iter().map(|s| s.to_string()).collect(),
        ..ApiOpts::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_are_dropped_by_every_server() {
    let c = ApiCluster::start(small(&[], &[])).await.unwrap();
    let sched = Components::start(&c, ComponentKind::Scheduler, 1, &["--leader-elect=false"])
        .expect("scheduler");
    let cm = Components::start(
        &c,
        ComponentKind::ControllerManager,
        1,
        &["--leader-elect=false"],
    )
    .expect("controller-manager");
    let kubelets = Kubelets::start(&c, &["worker1"], &[]).expect("kubelet");
    let client = Client::new(&c.resolved_admin().unwrap()).unwrap();
    kubelets
        .wait_ready(&client, Duration::from_secs(60))
        .await
        .expect("kubelet ready");

    let body = async {
        let pki = c.etcd.pki().clone();
        let (admin_cert, admin_key) = (pki.admin_cert.clone(), pki.admin_key.clone());
        let local = |port: u16| format!("127.0.0.1:{port}");
        let cluster =
            |name, addr: String| port(name, &addr, &pki.cluster_ca, &admin_cert, &admin_key);
        // (name, whether it speaks HTTP/1.1 too: the store's ports are gRPC only)
        let ports = vec![
            (
                port(
                    "etcd client port",
                    &c.etcd.client_url(0),
                    &pki.etcd_ca,
                    &pki.etcd_admin_cert,
                    &pki.etcd_admin_key,
                )?,
                false,
            ),
            (
                port(
                    "etcd peer port",
                    &c.etcd.peer_url(0),
                    &pki.etcd_ca,
                    &pki.peer_cert,
                    &pki.peer_key,
                )?,
                false,
            ),
            (cluster("apiserver", local(c.apiserver_port(0)))?, true),
            (cluster("scheduler", local(sched.items[0].port))?, true),
            (
                cluster("controller-manager", local(cm.items[0].port))?,
                true,
            ),
            (cluster("kubelet", local(kubelets.items[0].port))?, true),
        ];
        let outcomes =
            futures::future::join_all(ports.into_iter().map(|(p, h1)| slow_loris(p, h1))).await;
        for o in outcomes {
            let o = o?;
            eprintln!("{o:?}");
            let silent = o.tls_silent.with_context(|| {
                format!("{}: a TLS client that sent nothing was not dropped", o.name)
            })?;
            anyhow::ensure!(
                o.tcp_silent.is_some(),
                "{}: a TCP client that never started TLS was not dropped",
                o.name
            );
            // The talking client, on the same certificate, outlived the silent one: silence is
            // what got the other dropped. (It may be closed later by a keepalive ping it never
            // answers.)
            anyhow::ensure!(
                o.tls_talking.is_none_or(|t| t > silent + Duration::from_secs(2)),
                "{}: the client that sent its preface was dropped too ({:?}, silent one {silent:?})",
                o.name,
                o.tls_talking
            );
            // Headers that never end: hyper's header-read timeout (30 s) drops them.
            anyhow::ensure!(
                o.http1_unfinished.is_none_or(|t| t.is_some()),
                "{}: an HTTP/1.1 request whose headers never ended was not dropped",
                o.name
            );
        }
        // And they all still serve.
        client.version().await?;
        anyhow::Ok(())
    };
    bounded(&c, body).await;
}

/// The server's SETTINGS_MAX_CONCURRENT_STREAMS, read from its first SETTINGS frame.
async fn advertised_max_streams(p: &Port) -> anyhow::Result<Option<u32>> {
    let mut s = tls_connect(p).await?;
    s.write_all(H2_PREFACE_AND_SETTINGS).await?;
    let read = async {
        loop {
            let mut head = [0u8; 9];
            s.read_exact(&mut head).await?;
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let (kind, flags) = (head[3], head[4]);
            let mut payload = vec![0u8; len];
            s.read_exact(&mut payload).await?;
            // SETTINGS (0x4) without ACK (0x1): entries of a 16-bit id and a 32-bit value.
            if kind == 0x4 && flags & 0x1 == 0 {
                let streams = payload.chunks_exact(6).find_map(|e| {
                    (u16::from_be_bytes([e[0], e[1]]) == 0x3)
                        .then(|| u32::from_be_bytes([e[2], e[3], e[4], e[5]]))
                });
                return anyhow::Ok(streams);
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .context("no SETTINGS frame")?
}

/// Opens up to `n` raw TCP connections to `addr`, one after the other, and returns how many
/// the server closed at once (before any handshake could time out) and the open ones.
async fn fill(addr: SocketAddr, n: usize) -> anyhow::Result<(usize, Vec<TcpStream>)> {
    let mut conns = Vec::new();
    for _ in 0..n {
        conns.push(TcpStream::connect(addr).await?);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Handshakes time out after 10 s: anything closed by now was refused at the cap.
    let mut open = Vec::new();
    let mut closed = 0;
    for mut s in conns {
        let mut b = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(50), s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
            _ => open.push(s),
        }
    }
    Ok((closed, open))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_and_stream_caps_hold() {
    let c = ApiCluster::start(small(
        // (Not much lower: the apiserver keeps one watch stream per resource open on the store.)
        &["--max-connections=4", "--max-concurrent-streams=64"],
        &[
            "--max-connections=4",
            "--http2-max-streams-per-connection=7",
        ],
    ))
    .await
    .unwrap();
    let body = async {
        let pki = c.etcd.pki().clone();
        let (admin_cert, admin_key) = (pki.admin_cert.clone(), pki.admin_key.clone());
        let api_addr = format!("127.0.0.1:{}", c.apiserver_port(0));
        let api = port(
            "apiserver",
            &api_addr,
            &pki.cluster_ca,
            &admin_cert,
            &admin_key,
        )?;
        let etcd = port(
            "etcd client port",
            &c.etcd.client_url(0),
            &pki.etcd_ca,
            &pki.etcd_admin_cert,
            &pki.etcd_admin_key,
        )?;

        // Streams: each advertises its cap...
        anyhow::ensure!(
            advertised_max_streams(&api).await? == Some(7),
            "the apiserver advertises --http2-max-streams-per-connection"
        );
        anyhow::ensure!(
            advertised_max_streams(&etcd).await? == Some(64),
            "etcd-lite advertises --max-concurrent-streams"
        );
        // ...and it holds: 7 watches on one connection take every stream; one more call on
        // that connection waits until a watch ends.
        let direct = c.kubeconfig_for_apiserver(0)?;
        let client = Client::from_kubeconfig(Some(&direct), None)?.with(ClientOptions {
            request_timeout: Some(Duration::from_secs(3)),
            retry: RetryPolicy::none(),
            ..ClientOptions::default()
        });
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let mut watches = Vec::new();
        for _ in 0..7 {
            watches.push(pods.watch(&WatchParams::default(), "").await?);
        }
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let blocked = namespaces.get("default").await;
        anyhow::ensure!(
            blocked.is_err(),
            "an 8th stream on a connection capped at 7 went through: {blocked:?}"
        );
        eprintln!("8th stream waited: {}", blocked.unwrap_err());
        watches.pop();
        namespaces
            .get("default")
            .await
            .context("a freed stream takes the next call")?;
        drop(watches);
        drop(namespaces);
        drop(pods);
        drop(client);

        // Connections: the apiserver closes those beyond its cap at once...
        let (closed, open) = fill(api.addr, 8).await?;
        anyhow::ensure!(
            (4..=8).contains(&closed) && open.len() <= 4,
            "apiserver at --max-connections=4: {closed} of 8 closed at once, {} open",
            open.len()
        );
        drop(open);
        // ...and the slots come back.
        let fresh = Client::from_kubeconfig(Some(&direct), None)?;
        testkit::wait_until(
            "a new connection to the apiserver once the others closed",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || async { Ok(fresh.version().await.ok().map(|_| ())) },
        )
        .await?;

        // The store too; the apiserver's own connection, made before, keeps working.
        let (closed, open) = fill(etcd.addr, 8).await?;
        anyhow::ensure!(
            closed >= 4 && open.len() <= 4,
            "etcd-lite at --max-connections=4: {closed} of 8 closed at once, {} open",
            open.len()
        );
        // (Straight to the apiserver: the lb's checks may have found it full a moment ago.)
        let ns: Api<Namespace> = Api::all(fresh.clone());
        let n = Namespace {
            metadata: Some(kl_api::ObjectMeta {
                name: "written-while-the-store-is-full".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        ns.create(n)
            .await
            .context("the apiserver's store connection outlives the cap")?;
        drop(open);

        for (log, what) in [
            (c.apiserver_log(0), "apiserver"),
            (std::fs::read_to_string(c.etcd.log_path(0))?, "etcd-lite"),
        ] {
            anyhow::ensure!(log.contains("connection limit"), "{what} logs the refusals");
        }
        anyhow::Ok(())
    };
    bounded(&c, body).await;
}

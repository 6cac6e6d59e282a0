//! pods/log end to end against fake kubelets (HTTPS servers speaking the kubelet's
//! `/containerLogs` API, demanding a client certificate): the apiserver's choice of container,
//! node address and port, mutual TLS both ways (a kubelet certificate valid for the node's name
//! or its address), the kubelet's errors relayed, streaming, and a cancelled client reaching
//! the kubelet. The real kubelet is tested in the workspace's tests/logs.rs.
//!
//! Needs `target/debug/etcd-lite` (`cargo build -p etcd-lite-bin`).

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{
    extract::{Path, RawQuery, State},
    response::{IntoResponse, Response},
    routing::get,
};
use futures::StreamExt;
use kl_api::{
    api_client::ApiClient, Container, CreateRequest, DaemonEndpoint, LogChunk, Node, NodeAddress,
    NodeDaemonEndpoints, NodeStatus, ObjectMeta, Pod, PodLogsRequest, PodSpec, Resource,
};
use kl_pki::{LeafSpec, San, Usage};
use testkit::{api::raw_api_client, etcd::EtcdCluster, EtcdOpts};
use tokio::sync::oneshot;
use tonic::{transport::Channel, Code, Status};

/// What a fake kubelet saw and did.
#[derive(Default)]
struct Seen {
    /// The query of the last request.
    query: parking_lot::Mutex<String>,
    /// Set when a follow stream was dropped (its connection closed).
    follow_dropped: AtomicBool,
}

struct SetOnDrop(Arc<Seen>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.follow_dropped.store(true, Ordering::SeqCst);
    }
}

async fn container_logs(
    State(seen): State<Arc<Seen>>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    *seen.query.lock() = format!("{ns}/{pod}/{container}?{query}");
    match container.as_str() {
        "waiting" => (
            http::StatusCode::BAD_REQUEST,
            format!(
                "container \"waiting\" in pod \"{pod}\" is waiting to start: ContainerCreating"
            ),
        )
            .into_response(),
        "gone" => (
            http::StatusCode::NOT_FOUND,
            format!("pod \"{ns}/{pod}\" not found on this node"),
        )
            .into_response(),
        "endless" => {
            let guard = SetOnDrop(seen.clone());
            let ticks = futures::stream::unfold(0u64, move |i| {
                let _keep = &guard;
                async move {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Some((Ok::<_, std::io::Error>(format!("tick {i}\n")), i + 1))
                }
            });
            axum::body::Body::from_stream(ticks).into_response()
        }
        _ => {
            let lines = ["hello\n", "world\n"];
            let tail = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("tailLines="))
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(lines.len())
                .min(lines.len());
            lines[lines.len() - tail..].concat().into_response()
        }
    }
}

/// A fake kubelet on a free port whose serving certificate is valid for `sans` only, and
/// which refuses clients without a certificate from the cluster CA.
async fn fake_kubelet(pki: &testkit::pki::TestPki, file: &str, sans: &[&str]) -> (u16, Arc<Seen>) {
    let ca = kl_pki::CertificateAuthority::load(&pki.dir, kl_pki::Authority::Cluster)
        .unwrap()
        .unwrap();
    let issued = ca
        .issue(&LeafSpec {
            common_name: file.to_string(),
            organization: None,
            usage: Usage::Server,
            sans: sans.iter().map(|s| San::parse(s).unwrap()).collect(),
        })
        .unwrap();
    let cert = pki.dir.join(format!("{file}.crt"));
    let key = pki.dir.join(format!("{file}.key"));
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    std::fs::write(&key, &issued.key_pem).unwrap();
    let tls = kl_tls::ServerTls::load(&cert, &key, Some(&pki.cluster_ca), true)
        .unwrap()
        .rustls_config()
        .unwrap();
    let seen = Arc::new(Seen::default());
    let router = axum::Router::new()
        .route("/containerLogs/{ns}/{pod}/{container}", get(container_logs))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .accept_http1(true)
            .add_routes(tonic::service::Routes::from(router))
            .serve_with_incoming(kl_tls::incoming(listener, tls)),
    );
    (port, seen)
}

struct Server {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn start_apiserver(etcd: &EtcdCluster, kubelet_client: (PathBuf, PathBuf)) -> Server {
    let pki = etcd.pki();
    let config = apiserver::Config {
        etcd_servers: (0..etcd.len()).map(|i| etcd.client_url(i)).collect(),
        etcd_cafile: Some(pki.etcd_ca.clone()),
        etcd_certfile: Some(pki.apiserver_etcd_cert.clone()),
        etcd_keyfile: Some(pki.apiserver_etcd_key.clone()),
        bind_address: "127.0.0.1".parse().unwrap(),
        secure_port: testkit::ports::free_port(),
        tls_cert_file: Some(pki.apiserver_cert.clone()),
        tls_private_key_file: Some(pki.apiserver_key.clone()),
        client_ca_file: Some(pki.cluster_ca.clone()),
        kubelet_client_certificate: Some(kubelet_client.0),
        kubelet_client_key: Some(kubelet_client.1),
        kubelet_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (addr_tx, addr_rx) = oneshot::channel();
    tokio::spawn(apiserver::run_until(
        config,
        async move {
            let _ = stop_rx.await;
        },
        move |a| {
            let _ = addr_tx.send(a);
        },
    ));
    let addr = addr_rx.await.expect("the apiserver binds");
    let ca = pki.cluster_ca.clone();
    testkit::wait_until(
        "the apiserver to be ready",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || {
            let ca = ca.clone();
            async move {
                Ok(matches!(
                    testkit::api::https_get(&ca, None, addr.port(), "/readyz").await,
                    Ok((200, _))
                )
                .then_some(()))
            }
        },
    )
    .await
    .expect("ready");
    Server {
        addr,
        _stop: stop_tx,
    }
}

fn node(name: &str, addresses: &[(&str, &str)], port: u16) -> Node {
    Node {
        metadata: Some(ObjectMeta {
            name: name.into(),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            addresses: addresses
                .iter()
                .map(|(t, a)| NodeAddress {
                    r#type: t.to_string(),
                    address: a.to_string(),
                })
                .collect(),
            daemon_endpoints: Some(NodeDaemonEndpoints {
                kubelet_endpoint: Some(DaemonEndpoint { port: port.into() }),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pod(name: &str, node: &str, containers: &[&str]) -> Pod {
    Pod {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            node_name: node.into(),
            containers: containers
                .iter()
                .map(|c| Container {
                    name: c.to_string(),
                    command: vec!["sleep".into(), "1".into()],
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn create<K: Resource>(api: &mut ApiClient<Channel>, k: K) {
    api.create(CreateRequest {
        object: Some(k.into_object().into_typed()),
        fencing: None,
    })
    .await
    .expect("create");
}

fn req(pod: &str, container: &str) -> PodLogsRequest {
    PodLogsRequest {
        namespace: "default".into(),
        name: pod.into(),
        container: container.into(),
        ..Default::default()
    }
}

/// The whole log, or the status the call (or the stream) ended with.
async fn read_all(api: &mut ApiClient<Channel>, r: PodLogsRequest) -> Result<String, Status> {
    let mut stream = api.pod_logs(r).await?.into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("a chunk or the end within 20s")
    {
        let LogChunk { data } = chunk?;
        out.extend_from_slice(&data);
    }
    Ok(String::from_utf8(out).unwrap())
}

fn reason(s: &Status) -> &str {
    s.metadata()
        .get("kl-reason")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_logs_are_relayed_from_the_kubelet() {
    let etcd = EtcdCluster::start(1, EtcdOpts::fast())
        .await
        .expect("etcd cluster");
    let pki = etcd.pki();
    let kubelet_client = pki
        .issue(
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            None,
            false,
        )
        .unwrap();
    // worker1: a certificate for its address; worker2: for its name only; worker4: for
    // another name.
    let (port1, seen1) = fake_kubelet(pki, "worker1", &["127.0.0.1"]).await;
    let (port2, _) = fake_kubelet(pki, "worker2", &["worker2"]).await;
    let (port4, _) = fake_kubelet(pki, "worker4", &["someone-else"]).await;
    let closed_port = testkit::ports::free_port();
    let server = start_apiserver(&etcd, kubelet_client).await;
    let mut api = raw_api_client(
        &pki.cluster_ca,
        Some((&pki.admin_cert, &pki.admin_key)),
        &format!("https://127.0.0.1:{}", server.addr.port()),
    )
    .await
    .expect("client");

    // InternalIP wins over Hostname (kubeadm's preference); the port is the reported one.
    create(
        &mut api,
        node(
            "worker1",
            &[("Hostname", "nowhere.invalid"), ("InternalIP", "127.0.0.1")],
            port1,
        ),
    )
    .await;
    create(
        &mut api,
        node("worker2", &[("InternalIP", "127.0.0.1")], port2),
    )
    .await;
    create(
        &mut api,
        node("worker3", &[("InternalIP", "127.0.0.1")], closed_port),
    )
    .await;
    create(
        &mut api,
        node("worker4", &[("InternalIP", "127.0.0.1")], port4),
    )
    .await;
    create(&mut api, pod("web", "worker1", &["web"])).await;
    create(
        &mut api,
        pod(
            "multi",
            "worker1",
            &["a", "b", "waiting", "gone", "endless"],
        ),
    )
    .await;
    create(&mut api, pod("pending", "", &["web"])).await;
    create(&mut api, pod("on2", "worker2", &["web"])).await;
    create(&mut api, pod("on3", "worker3", &["web"])).await;
    create(&mut api, pod("on4", "worker4", &["web"])).await;

    // The only container by default; options reach the kubelet under upstream's names.
    assert_eq!(
        read_all(&mut api, req("web", "")).await.unwrap(),
        "hello\nworld\n"
    );
    assert_eq!(*seen1.query.lock(), "default/web/web?");
    let mut r = req("web", "web");
    r.tail_lines = Some(1);
    r.timestamps = true;
    r.limit_bytes = Some(100);
    assert_eq!(read_all(&mut api, r).await.unwrap(), "world\n");
    assert_eq!(
        *seen1.query.lock(),
        "default/web/web?tailLines=1&timestamps=true&limitBytes=100"
    );

    // A certificate valid for the node's name (not its address) is accepted.
    assert_eq!(
        read_all(&mut api, req("on2", "")).await.unwrap(),
        "hello\nworld\n"
    );

    // Upstream's refusals, before any kubelet is asked.
    let expect_err = |r: Result<String, Status>, code: Code, why: &str, msg: &str| {
        let s = r.expect_err("an error");
        assert_eq!((s.code(), reason(&s)), (code, why), "{s:?}");
        assert!(
            s.message().contains(msg),
            "{:?} does not contain {msg:?}",
            s.message()
        );
        s
    };
    expect_err(
        read_all(&mut api, req("multi", "")).await,
        Code::InvalidArgument,
        "BadRequest",
        "a container name must be specified for pod multi, choose one of: [a b waiting gone endless]",
    );
    expect_err(
        read_all(&mut api, req("web", "nope")).await,
        Code::InvalidArgument,
        "BadRequest",
        "container nope is not valid for pod web",
    );
    expect_err(
        read_all(&mut api, req("pending", "")).await,
        Code::InvalidArgument,
        "BadRequest",
        "pod \"pending\" is not scheduled to a node yet",
    );
    expect_err(
        read_all(&mut api, req("missing", "")).await,
        Code::NotFound,
        "NotFound",
        "pods \"missing\" not found",
    );
    let mut bad = req("web", "");
    bad.tail_lines = Some(-1);
    expect_err(
        read_all(&mut api, bad).await,
        Code::InvalidArgument,
        "BadRequest",
        "tailLines: Invalid value: -1: must be greater than or equal to 0",
    );

    // The kubelet's own refusals keep their meaning and words.
    expect_err(
        read_all(&mut api, req("multi", "waiting")).await,
        Code::InvalidArgument,
        "BadRequest",
        "container \"waiting\" in pod \"multi\" is waiting to start: ContainerCreating",
    );
    expect_err(
        read_all(&mut api, req("multi", "gone")).await,
        Code::NotFound,
        "NotFound",
        "pod \"default/multi\" not found on this node",
    );

    // Unreachable kubelets: Unavailable naming the node and the address, no retry hint.
    let s = expect_err(
        read_all(&mut api, req("on3", "")).await,
        Code::Unavailable,
        "ServiceUnavailable",
        &format!("unable to reach the kubelet of node \"worker3\" at 127.0.0.1:{closed_port}"),
    );
    assert!(s.metadata().get("retry-after").is_none());
    expect_err(
        read_all(&mut api, req("on4", "")).await,
        Code::Unavailable,
        "ServiceUnavailable",
        "TLS handshake",
    );

    // Follow: chunks as they come; a client that goes away closes the kubelet connection.
    let mut r = req("multi", "endless");
    r.follow = true;
    let mut stream = api.pod_logs(r).await.unwrap().into_inner();
    for i in 0..3 {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("a tick within 10s")
            .expect("open")
            .expect("no error");
        assert_eq!(chunk.data.as_ref(), format!("tick {i}\n").as_bytes());
    }
    assert_eq!(*seen1.query.lock(), "default/multi/endless?follow=true");
    drop(stream);
    testkit::wait_until(
        "the kubelet's follow stream to be dropped",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            let done = seen1.follow_dropped.load(Ordering::SeqCst);
            async move { Ok(done.then_some(())) }
        },
    )
    .await
    .expect("the apiserver closed its kubelet connection");
}

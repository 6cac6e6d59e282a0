//! kl-client against an in-process fake of the kube-lite API over mutual TLS: errors read from
//! `kl-reason`, reads retried and writes not, timeouts, paging, watches, logs, and a dead
//! server.
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use kl_api::api_server::{Api as ApiService, ApiServer};
use kl_api::*;
use kl_client::{
    Api, ApiError, Client, ClientOptions, ListParams, LogParams, Reason, ResolvedConfig,
    RetryPolicy, TransportFailure, WatchEvent, WatchParams,
};
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Response, Status};

fn status(code: Code, reason: &str, msg: &str) -> Status {
    let mut s = Status::new(code, msg);
    s.metadata_mut()
        .insert("kl-reason", MetadataValue::try_from(reason).unwrap());
    s
}

fn pod(name: &str, rv: &str) -> Pod {
    Pod {
        api_version: "v1".into(),
        kind: "Pod".into(),
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            resource_version: rv.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[derive(Default)]
struct Fake {
    gets: AtomicU32,
    creates: AtomicU32,
    /// The first this-many gets answer ServiceUnavailable.
    unavailable_gets: u32,
    logs_calls: AtomicU32,
    /// Set when an endless log stream is dropped (the client went away).
    endless_dropped: Arc<AtomicBool>,
}

type EventStream = Pin<Box<dyn Stream<Item = Result<kl_api::WatchEvent, Status>> + Send>>;
type ChunkStream = Pin<Box<dyn Stream<Item = Result<LogChunk, Status>> + Send>>;

/// Sets its flag when dropped.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn chunk(s: &str) -> Result<LogChunk, Status> {
    Ok(LogChunk {
        data: s.to_string().into(),
    })
}

#[tonic::async_trait]
impl ApiService for Fake {
    async fn create(&self, _r: Request<CreateRequest>) -> Result<Response<TypedObject>, Status> {
        self.creates.fetch_add(1, Ordering::SeqCst);
        Err(status(
            Code::Unavailable,
            "ServiceUnavailable",
            "etcd is down",
        ))
    }

    async fn get(&self, r: Request<GetRequest>) -> Result<Response<TypedObject>, Status> {
        let n = self.gets.fetch_add(1, Ordering::SeqCst) + 1;
        if n <= self.unavailable_gets {
            return Err(status(
                Code::Unavailable,
                "ServiceUnavailable",
                "etcd is down",
            ));
        }
        let r = r.into_inner();
        match r.name.as_str() {
            "missing" => Err(status(
                Code::NotFound,
                "NotFound",
                &format!("pods \"{}\" not found", r.name),
            )),
            "slow" => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(Response::new(pod("slow", "1").into_object().into_typed()))
            }
            "node" => Ok(Response::new(Node::default().into_object().into_typed())),
            name => Ok(Response::new(pod(name, "1").into_object().into_typed())),
        }
    }

    async fn list(&self, r: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        // Three pods, one per page when a limit is given.
        let r = r.into_inner();
        let all = ["a", "b", "c"];
        let start: usize = r.r#continue.parse().unwrap_or(0);
        let end = if r.limit > 0 { (start + 1).min(3) } else { 3 };
        Ok(Response::new(ListResponse {
            items: all[start..end]
                .iter()
                .map(|n| pod(n, "5").into_object().into_typed())
                .collect(),
            resource_version: "5".into(),
            r#continue: if end < 3 {
                end.to_string()
            } else {
                String::new()
            },
            remaining_item_count: None,
        }))
    }

    async fn update(&self, _r: Request<UpdateRequest>) -> Result<Response<TypedObject>, Status> {
        Err(status(
            Code::Aborted,
            "Conflict",
            "the object has been modified",
        ))
    }

    async fn update_status(
        &self,
        _r: Request<UpdateRequest>,
    ) -> Result<Response<TypedObject>, Status> {
        Err(status(
            Code::FailedPrecondition,
            "Fenced",
            "stale fencing token",
        ))
    }

    async fn delete(&self, _r: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        Ok(Response::new(DeleteResponse {
            object: Some(pod("a", "6").into_object().into_typed()),
            deleted: false,
        }))
    }

    type WatchStream = EventStream;

    async fn watch(&self, r: Request<WatchRequest>) -> Result<Response<EventStream>, Status> {
        let r = r.into_inner();
        if r.resource_version == "1" {
            return Err(status(
                Code::OutOfRange,
                "Expired",
                "too old resource version: 1",
            ));
        }
        let ev = |t: &str, p: Pod| kl_api::WatchEvent {
            r#type: t.into(),
            object: Some(p.into_object().into_typed()),
        };
        let events = vec![
            Ok(ev("ADDED", pod("a", "6"))),
            Ok(ev("MODIFIED", pod("a", "7"))),
            Ok(ev("BOOKMARK", pod("", "8"))),
            Ok(ev("DELETED", pod("a", "9"))),
            Err(status(Code::OutOfRange, "Expired", "compacted")),
        ];
        Ok(Response::new(Box::pin(futures::stream::iter(events))))
    }

    async fn bind(&self, _r: Request<BindRequest>) -> Result<Response<TypedObject>, Status> {
        Err(Status::unimplemented("bind"))
    }

    type PodLogsStream = ChunkStream;

    async fn pod_logs(&self, r: Request<PodLogsRequest>) -> Result<Response<ChunkStream>, Status> {
        self.logs_calls.fetch_add(1, Ordering::SeqCst);
        let r = r.into_inner();
        match r.name.as_str() {
            // What the apiserver answers when the kubelet cannot be reached: no retry-after.
            "down" => Err(status(
                Code::Unavailable,
                "ServiceUnavailable",
                "unable to reach the kubelet of node \"worker1\" at 127.0.0.1:10250",
            )),
            "broken" => Ok(Response::new(Box::pin(futures::stream::iter(vec![
                chunk("partial"),
                Err(status(
                    Code::Unavailable,
                    "ServiceUnavailable",
                    "the connection to the kubelet broke",
                )),
            ])))),
            "endless" => {
                let guard = SetOnDrop(self.endless_dropped.clone());
                let s = futures::stream::repeat_with(move || {
                    let _keep = &guard;
                    chunk("tick\n")
                })
                .then(|c| async {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    c
                });
                Ok(Response::new(Box::pin(s)))
            }
            _ => Ok(Response::new(Box::pin(futures::stream::iter(vec![
                chunk(&format!(
                    "{}/{} container={} follow={} tail={:?} previous={} timestamps={} limit={:?}\n",
                    r.namespace,
                    r.name,
                    r.container,
                    r.follow,
                    r.tail_lines,
                    r.previous,
                    r.timestamps,
                    r.limit_bytes
                )),
                chunk("hello\n"),
                chunk("world\n"),
            ])))),
        }
    }

    async fn version(&self, _r: Request<VersionRequest>) -> Result<Response<VersionInfo>, Status> {
        Ok(Response::new(VersionInfo {
            git_version: "v0.1.0".into(),
            platform: "linux/amd64".into(),
            server: "fake".into(),
        }))
    }

    async fn cluster_info(
        &self,
        _r: Request<ClusterInfoRequest>,
    ) -> Result<Response<ClusterInfoResponse>, Status> {
        Err(Status::unimplemented("cluster_info"))
    }
}

/// A fake server on a free port with the PKI of `dir`, and a kubeconfig context for it.
async fn serve(fake: Fake, dir: &std::path::Path) -> (ResolvedConfig, Arc<Fake>) {
    let generated = kl_pki::generate(&kl_pki::PkiSpec::new(), dir).unwrap();
    let pki = dir;
    let tls = kl_tls::ServerTls::load(
        &kl_pki::paths::APISERVER.cert_in(pki),
        &kl_pki::paths::APISERVER.key_in(pki),
        Some(&kl_pki::paths::CA.cert_in(pki)),
        true,
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let fake = Arc::new(fake);
    let svc = ApiServer::from_arc(fake.clone());
    let incoming = kl_tls::incoming(listener, tls.rustls_config().unwrap());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(incoming)
            .await
    });
    (config(&generated, port), fake)
}

fn config(generated: &kl_pki::Generated, port: u16) -> ResolvedConfig {
    let admin = &generated.identities[0];
    kl_client::Kubeconfig::embedded(
        "kube-lite",
        &format!("https://127.0.0.1:{port}"),
        generated.ca_pem.as_bytes(),
        &admin.user,
        admin.cert_pem.as_bytes(),
        admin.key_pem.as_bytes(),
    )
    .resolve(None)
    .unwrap()
}

fn fast_retries() -> ClientOptions {
    ClientOptions::default().retry(RetryPolicy {
        max_attempts: 5,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
    })
}

#[tokio::test]
async fn errors_reads_writes_and_watches_against_a_fake_apiserver() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, fake) = serve(
        Fake {
            unavailable_gets: 2,
            ..Default::default()
        },
        dir.path(),
    )
    .await;
    let client = Client::with_options(&cfg, fast_retries()).unwrap();
    let pods: Api<Pod> = Api::default_namespaced(client.clone());

    // A read rides out two ServiceUnavailable answers.
    let p = pods.get("web").await.unwrap();
    assert_eq!(p.metadata.unwrap().name, "web");
    assert_eq!(fake.gets.load(Ordering::SeqCst), 3);

    // Answers are errors with their reason, printed as kubectl.
    let e = pods.get("missing").await.unwrap_err();
    assert!(e.is_not_found());
    assert_eq!(
        e.to_string(),
        "Error from server (NotFound): pods \"missing\" not found"
    );
    assert_eq!(pods.get_opt("missing").await.unwrap(), None);
    let e = pods.update(pod("a", "1")).await.unwrap_err();
    assert!(e.is_conflict(), "{e:?}");
    let e = pods.update_status(pod("a", "1")).await.unwrap_err();
    assert!(e.is_fenced(), "{e:?}");

    // A write answered ServiceUnavailable may have been applied: sent once only.
    let e = pods.create(pod("new", "")).await.unwrap_err();
    assert_eq!(e.reason(), Some(&Reason::ServiceUnavailable));
    assert_eq!(fake.creates.load(Ordering::SeqCst), 1);

    // An object of another kind than asked is a contract breach, not a panic.
    let e = pods.get("node").await.unwrap_err();
    assert!(matches!(e, ApiError::Unexpected { .. }), "{e:?}");

    // Pages, and list_all following continue tokens.
    let page = pods.list(&ListParams::default().limit(1)).await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.continue_token, "1");
    let all = pods
        .list_all(&ListParams::default().limit(1))
        .await
        .unwrap();
    let names: Vec<String> = all
        .items
        .iter()
        .map(|p| p.metadata.clone().unwrap().name)
        .collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(all.resource_version, "5");

    let out = pods.delete("a", &Default::default()).await.unwrap();
    assert!(!out.deleted);

    // The request timeout bounds each attempt.
    let slow = Api::<Pod>::default_namespaced(
        client
            .clone()
            .with_request_timeout(Some(Duration::from_millis(200))),
    );
    let e = slow.get("slow").await.unwrap_err();
    assert!(matches!(e, ApiError::Timeout { .. }), "{e:?}");

    // Watches: typed events, bookmarks, and Expired as an error ending the stream.
    let e = pods
        .watch(&WatchParams::default(), "1")
        .await
        .err()
        .unwrap();
    assert!(e.is_expired(), "{e:?}");
    let events: Vec<_> = pods
        .watch(&WatchParams::default(), "5")
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(events.len(), 5, "{events:?}");
    assert!(matches!(events[0], Ok(WatchEvent::Added(_))));
    assert!(matches!(events[1], Ok(WatchEvent::Modified(_))));
    assert_eq!(
        events[2].as_ref().unwrap(),
        &WatchEvent::Bookmark {
            resource_version: "8".into()
        }
    );
    assert_eq!(events[3].as_ref().unwrap().resource_version(), "9");
    assert!(events[4].as_ref().unwrap_err().is_expired());

    let v = client.version().await.unwrap();
    assert_eq!(v.git_version, "v0.1.0");
}

#[tokio::test]
async fn a_dead_server_is_a_transport_error_after_bounded_retries() {
    let dir = tempfile::tempdir().unwrap();
    let generated = kl_pki::generate(&kl_pki::PkiSpec::new(), dir.path()).unwrap();
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let client = Client::with_options(&config(&generated, port), fast_retries()).unwrap();
    let started = std::time::Instant::now();
    let e = client.version().await.unwrap_err();
    match &e {
        ApiError::Transport { failure, .. } => assert_eq!(*failure, TransportFailure::Connect),
        other => panic!("{other:?}"),
    }
    assert!(
        e.to_string()
            .starts_with("Unable to connect to the server: "),
        "{e}"
    );
    // Four waits of at least 5, 10, 20, 25 ms (jittered halves of 10, 20, 40, 50).
    assert!(started.elapsed() >= Duration::from_millis(60));
    // A create that never reached a server is retried too, and fails the same way.
    let e = Api::<Pod>::default_namespaced(client)
        .create(pod("x", ""))
        .await
        .unwrap_err();
    assert!(e.is_transport());
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_a_permanent_tls_error() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let (cfg, fake) = serve(Fake::default(), dir.path()).await;
    let foreign = kl_pki::generate(&kl_pki::PkiSpec::new(), other.path()).unwrap();
    let port: u16 = cfg.server.rsplit(':').next().unwrap().parse().unwrap();
    let client = Client::with_options(&config(&foreign, port), fast_retries()).unwrap();
    let e = client.version().await.unwrap_err();
    assert!(
        matches!(
            e,
            ApiError::Transport {
                failure: TransportFailure::Tls,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(fake.gets.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_client_without_a_certificate_is_unauthorized() {
    let dir = tempfile::tempdir().unwrap();
    let (mut cfg, _fake) = serve(Fake::default(), dir.path()).await;
    cfg.client_cert_pem = None;
    cfg.client_key_pem = None;
    let client = Client::with_options(&cfg, fast_retries()).unwrap();
    let e = client.version().await.unwrap_err();
    assert_eq!(e.reason(), Some(&Reason::Unauthorized), "{e:?}");
    assert!(e.to_string().contains("Unauthorized"), "{e}");
}

#[tokio::test]
async fn logs_stream_chunks_and_end_with_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, fake) = serve(Fake::default(), dir.path()).await;
    let client = Client::with_options(&cfg, fast_retries()).unwrap();
    let pods: Api<Pod> = Api::namespaced(client, "ns1");

    // Chunks in order; every option reaches the server.
    let lp = LogParams::default()
        .container("c")
        .follow(true)
        .tail_lines(3)
        .previous(true)
        .timestamps(true)
        .limit_bytes(100);
    let chunks: Vec<_> = pods.logs("web", &lp).await.unwrap().collect().await;
    let text: Vec<u8> = chunks
        .into_iter()
        .flat_map(|c| c.unwrap().to_vec())
        .collect();
    assert_eq!(
        String::from_utf8(text).unwrap(),
        "ns1/web container=c follow=true tail=Some(3) previous=true timestamps=true limit=Some(100)\nhello\nworld\n"
    );

    // An unreachable kubelet is not asked again and again.
    let before = fake.logs_calls.load(Ordering::SeqCst);
    let e = pods
        .logs("down", &LogParams::default())
        .await
        .err()
        .unwrap();
    assert_eq!(e.reason(), Some(&Reason::ServiceUnavailable), "{e:?}");
    assert_eq!(fake.logs_calls.load(Ordering::SeqCst), before + 1);

    // A stream that breaks ends with the error, after what came before it.
    let items: Vec<_> = pods
        .logs("broken", &LogParams::default())
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].as_ref().unwrap().as_ref(), b"partial");
    assert!(items[1]
        .as_ref()
        .unwrap_err()
        .to_string()
        .contains("the connection to the kubelet broke"));

    // Dropping the stream cancels the call on the server.
    let mut endless = pods
        .logs("endless", &LogParams::default().follow(true))
        .await
        .unwrap();
    assert_eq!(endless.next().await.unwrap().unwrap().as_ref(), b"tick\n");
    drop(endless);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !fake.endless_dropped.load(Ordering::SeqCst) {
        assert!(
            std::time::Instant::now() < deadline,
            "the server kept streaming after the client went away"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

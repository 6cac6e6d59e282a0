//! The apiserver end to end, in-process, on a real 3-member store (etcd-lite, or real etcd with
//! `KL_ETCD_BIN=/usr/bin/etcd`), over mutual TLS: every verb, watches, fencing, failover
//! between store members, authentication and a clean shutdown.
//!
//! Needs `target/debug/etcd-lite` (`cargo build -p etcd-lite-bin`).

use std::{net::SocketAddr, time::Duration};

use futures::StreamExt;
use kl_api::{
    api_client::ApiClient, BindRequest, Container, CreateRequest, DeleteRequest, FencingToken,
    GetRequest, Lease, LeaseSpec, ListRequest, Object, ObjectMeta, Pod, PodSpec, Resource,
    TypedObject, UpdateRequest, VersionRequest, WatchEvent, WatchRequest,
};
use testkit::{api::raw_api_client, etcd::EtcdCluster, EtcdOpts};
use tokio::sync::oneshot;
use tonic::{transport::Channel, Code, Status};

type Api = ApiClient<Channel>;

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start_apiserver(etcd: &EtcdCluster, extra: impl FnOnce(&mut apiserver::Config)) -> Server {
    let pki = etcd.pki();
    let mut config = apiserver::Config {
        etcd_servers: (0..etcd.len()).map(|i| etcd.client_url(i)).collect(),
        etcd_cafile: Some(pki.etcd_ca.clone()),
        etcd_certfile: Some(pki.apiserver_etcd_cert.clone()),
        etcd_keyfile: Some(pki.apiserver_etcd_key.clone()),
        bind_address: "127.0.0.1".parse().unwrap(),
        secure_port: testkit::ports::free_port(),
        tls_cert_file: Some(pki.apiserver_cert.clone()),
        tls_private_key_file: Some(pki.apiserver_key.clone()),
        client_ca_file: Some(pki.cluster_ca.clone()),
        ..Default::default()
    };
    extra(&mut config);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (addr_tx, addr_rx) = oneshot::channel();
    let task = tokio::spawn(apiserver::run_until(
        config,
        async move {
            let _ = stop_rx.await;
        },
        move |a| {
            let _ = addr_tx.send(a);
        },
    ));
    let addr = addr_rx.await.expect("the apiserver binds");
    let s = Server {
        addr,
        stop: Some(stop_tx),
        task,
    };
    // Ready: /readyz answers 200.
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
    s
}

async fn client(etcd: &EtcdCluster, s: &Server, with_cert: bool) -> Api {
    let pki = etcd.pki();
    let id = with_cert.then_some((pki.admin_cert.as_path(), pki.admin_key.as_path()));
    raw_api_client(
        &pki.cluster_ca,
        id,
        &format!("https://127.0.0.1:{}", s.addr.port()),
    )
    .await
    .expect("client")
}

fn pod(name: &str, app: &str) -> Pod {
    Pod {
        metadata: Some(ObjectMeta {
            name: name.into(),
            labels: [("app".to_string(), app.to_string())].into(),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                command: vec!["sleep".into(), "1".into()],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn typed<K: Resource>(k: K) -> Option<TypedObject> {
    Some(k.into_object().into_typed())
}

fn untyped<K: Resource>(t: TypedObject) -> K {
    K::from_object(Object::from_typed(t).unwrap()).unwrap()
}

async fn create<K: Resource>(
    api: &mut Api,
    k: K,
    fencing: Option<FencingToken>,
) -> Result<K, Status> {
    Ok(untyped(
        api.create(CreateRequest {
            object: typed(k),
            fencing,
        })
        .await?
        .into_inner(),
    ))
}

fn reason(s: &Status) -> &str {
    s.metadata()
        .get("kl-reason")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

async fn next(w: &mut tonic::Streaming<WatchEvent>) -> (String, String) {
    loop {
        let e = tokio::time::timeout(Duration::from_secs(20), w.next())
            .await
            .expect("an event within 20s")
            .expect("stream open")
            .expect("no error");
        if e.r#type == "BOOKMARK" {
            continue;
        }
        let o = Object::from_typed(e.object.unwrap()).unwrap();
        return (e.r#type, o.name().to_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbs_watch_fencing_failover_and_shutdown() {
    let mut etcd = EtcdCluster::start(3, EtcdOpts::fast())
        .await
        .expect("etcd cluster");
    let mut server = start_apiserver(&etcd, |_| {}).await;
    let mut api = client(&etcd, &server, true).await;

    // No certificate: Unauthorized.
    let mut anon = client(&etcd, &server, false).await;
    let s = anon.version(VersionRequest {}).await.unwrap_err();
    assert_eq!(
        (s.code(), reason(&s)),
        (Code::Unauthenticated, "Unauthorized")
    );
    let v = api.version(VersionRequest {}).await.unwrap().into_inner();
    assert_eq!(v.server, format!("127.0.0.1:{}", server.addr.port()));

    // The identity Lease, as kubectl-lite cluster-info reads it.
    let leases = api
        .list(ListRequest {
            resource: "leases".into(),
            namespace: "kube-system".into(),
            label_selector: "apiserver.kubernetes.io/identity=kube-apiserver".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let holders: Vec<String> = leases
        .items
        .into_iter()
        .map(|t| untyped::<Lease>(t).spec.unwrap_or_default().holder_identity)
        .collect();
    assert_eq!(holders, std::slice::from_ref(&v.server));

    // Watch everything in default from now.
    let mut w = api
        .watch(WatchRequest {
            resource: "pods".into(),
            namespace: "default".into(),
            resource_version: "0".into(),
            allow_watch_bookmarks: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    let p = create(&mut api, pod("a", "web"), None).await.unwrap();
    assert_eq!(p.status.as_ref().unwrap().phase, "Pending");
    assert_eq!(next(&mut w).await, ("ADDED".into(), "a".into()));
    let s = create(&mut api, pod("a", "web"), None).await.unwrap_err();
    assert_eq!(s.message(), "pods \"a\" already exists");

    // The stored form is Kubernetes JSON without resourceVersion, readable with etcdctl.
    let mut kv = etcd.client().await.unwrap();
    let raw = kv.get("/registry/pods/default/a", None).await.unwrap();
    let text = String::from_utf8(raw.kvs()[0].value().to_vec()).unwrap();
    assert!(
        text.contains("\"apiVersion\":\"v1\"") && !text.contains("resourceVersion"),
        "{text}"
    );
    assert_eq!(
        raw.kvs()[0].mod_revision().to_string(),
        p.metadata.as_ref().unwrap().resource_version
    );

    // Update with a stale version: Conflict; with the current one: a new version.
    let mut stale = p.clone();
    let mut fresh = p.clone();
    fresh.meta_mut().annotations.insert("x".into(), "1".into());
    let fresh: Pod = untyped(
        api.update(UpdateRequest {
            object: typed(fresh),
            fencing: None,
        })
        .await
        .unwrap()
        .into_inner(),
    );
    assert_eq!(next(&mut w).await, ("MODIFIED".into(), "a".into()));
    stale.meta_mut().annotations.insert("x".into(), "2".into());
    let s = api
        .update(UpdateRequest {
            object: typed(stale),
            fencing: None,
        })
        .await
        .unwrap_err();
    assert_eq!((s.code(), reason(&s)), (Code::Aborted, "Conflict"));

    // Paging with a continue token.
    for i in 0..5 {
        create(&mut api, pod(&format!("p{i}"), "page"), None)
            .await
            .unwrap();
    }
    let mut req = ListRequest {
        resource: "pods".into(),
        namespace: "default".into(),
        label_selector: "app=page".into(),
        limit: 2,
        ..Default::default()
    };
    let mut names = Vec::new();
    loop {
        let l = api.list(req.clone()).await.unwrap().into_inner();
        assert!(l.items.len() <= 2);
        names.extend(
            l.items
                .into_iter()
                .map(|t| Object::from_typed(t).unwrap().name().to_string()),
        );
        if l.r#continue.is_empty() {
            break;
        }
        req.r#continue = l.r#continue;
    }
    assert_eq!(names, ["p0", "p1", "p2", "p3", "p4"]);
    for _ in 0..5 {
        next(&mut w).await;
    }

    // Fencing: a Lease held by "me" at transition 2.
    let lease = Lease {
        metadata: Some(ObjectMeta {
            name: "leader".into(),
            namespace: "kube-system".into(),
            ..Default::default()
        }),
        spec: Some(LeaseSpec {
            holder_identity: "me".into(),
            lease_transitions: Some(2),
            ..Default::default()
        }),
        ..Default::default()
    };
    create(&mut api, lease, None).await.unwrap();
    let token = |holder: &str, t: i32| FencingToken {
        lease_namespace: "kube-system".into(),
        lease_name: "leader".into(),
        lease_transitions: t,
        holder_identity: holder.into(),
    };
    create(&mut api, pod("fenced-ok", "f"), Some(token("me", 2)))
        .await
        .unwrap();
    for bad in [token("me", 1), token("other", 2)] {
        let s = create(&mut api, pod("fenced-no", "f"), Some(bad))
            .await
            .unwrap_err();
        assert_eq!(
            (s.code(), reason(&s)),
            (Code::FailedPrecondition, "Fenced"),
            "{s:?}"
        );
    }
    let s = api
        .bind(BindRequest {
            namespace: "default".into(),
            name: "fenced-ok".into(),
            node_name: "n1".into(),
            fencing: Some(token("me", 1)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&s), "Fenced");
    api.bind(BindRequest {
        namespace: "default".into(),
        name: "fenced-ok".into(),
        node_name: "n1".into(),
        fencing: Some(token("me", 2)),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(next(&mut w).await, ("ADDED".into(), "fenced-ok".into()));
    assert_eq!(next(&mut w).await, ("MODIFIED".into(), "fenced-ok".into()));

    // A store member dies (the one the apiserver talks to, most likely the first): every verb
    // keeps working, and so does the watch.
    etcd.kill9(0);
    for i in 0..5 {
        create(&mut api, pod(&format!("after-kill-{i}"), "k"), None)
            .await
            .unwrap();
        api.get(GetRequest {
            resource: "pods".into(),
            namespace: "default".into(),
            name: format!("after-kill-{i}"),
        })
        .await
        .unwrap();
        assert_eq!(
            next(&mut w).await,
            ("ADDED".into(), format!("after-kill-{i}"))
        );
    }
    let d = api
        .delete(DeleteRequest {
            resource: "pods".into(),
            namespace: "default".into(),
            name: fresh.metadata.as_ref().unwrap().name.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(d.deleted, "an unbound pod goes at once");
    assert_eq!(next(&mut w).await, ("DELETED".into(), "a".into()));
    let info = api
        .cluster_info(kl_api::ClusterInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.etcd_members.len(), 3);
    assert!(!info.etcd_members[0].healthy && !info.etcd_members[0].error.is_empty());
    assert_eq!(
        info.etcd_members.iter().filter(|m| m.is_leader).count(),
        1,
        "{info:?}"
    );
    etcd.restart(0).unwrap();

    // Shutdown: the watch ends cleanly, run_until returns Ok.
    let _ = server.stop.take().unwrap().send(());
    let end = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match w.next().await {
                None => return Ok(()),
                Some(Err(s)) => return Err(s),
                Some(Ok(_)) => continue,
            }
        }
    })
    .await
    .expect("the watch ends on shutdown");
    assert!(end.is_ok(), "the watch ends with OK: {end:?}");
    let r = tokio::time::timeout(Duration::from_secs(40), &mut server.task)
        .await
        .expect("stops in time")
        .unwrap();
    assert!(r.is_ok(), "{r:?}");
}

/// Two apiservers' compactors: per interval only the one whose compare-and-swap on
/// `compact_rev_key` wins compacts, and only up to the revision recorded one interval before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_is_coordinated_through_compact_rev_key() {
    use apiserver::compaction::compact_once;
    use apiserver::etcd::{Etcd, EtcdOptions};
    let mut etcd = EtcdCluster::start(3, EtcdOpts::fast())
        .await
        .expect("etcd cluster");
    let pki = etcd.pki();
    let opts = EtcdOptions {
        endpoints: (0..etcd.len()).map(|i| etcd.client_url(i)).collect(),
        tls: Some(
            kl_tls::ClientTls::load(
                &pki.etcd_ca,
                Some((&pki.apiserver_etcd_cert, &pki.apiserver_etcd_key)),
            )
            .unwrap()
            .tonic_config(),
        ),
        attempt_timeout: Duration::from_secs(3),
        call_timeout: Duration::from_secs(20),
    };
    let metrics = std::sync::Arc::new(apiserver::metrics::Metrics::new());
    let a = Etcd::connect(opts.clone(), metrics.clone()).await.unwrap();
    let b = Etcd::connect(opts, metrics).await.unwrap();
    let mut kv = etcd.client().await.unwrap();
    kv.put("k", "1", None).await.unwrap();

    // Interval 1: A records a revision, B loses the race; nothing is compacted.
    let (va, ra, ca) = compact_once(&a, 0, 0).await.unwrap();
    let (vb, rb, cb) = compact_once(&b, 0, 0).await.unwrap();
    assert_eq!((va, vb, ca, cb), (1, 1, false, false));
    for i in 0..3 {
        kv.put("k", i.to_string(), None).await.unwrap();
    }
    // Interval 2: A wins again and compacts up to what it recorded; B does nothing.
    let (va, _, ca) = compact_once(&a, va, ra).await.unwrap();
    let (vb, _, cb) = compact_once(&b, vb, rb).await.unwrap();
    assert!(ca && !cb, "only one compacts: {ca} {cb}");
    assert_eq!((va, vb), (2, 2));
    let old = kv
        .get(
            "k",
            Some(etcd_client::GetOptions::new().with_revision(ra - 1)),
        )
        .await;
    assert!(
        matches!(&old, Err(e) if e.to_string().contains("compacted")),
        "{old:?}"
    );
    kv.get("k", Some(etcd_client::GetOptions::new().with_revision(ra)))
        .await
        .expect("the recorded revision itself is kept");
}

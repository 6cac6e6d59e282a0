//! Writes that start from a stale watch-cache copy. Update, UpdateStatus and Bind start from
//! the watch cache's copy of the object, as upstream's Cacher does (GuaranteedUpdate's
//! `cachedExistingObject`); the cache may lag etcd, and then nothing may be lost or decided
//! wrongly: the compare-and-swap on the copy's revision fails and the write is decided again
//! on etcd's object.
//!
//! The registry runs here over a real store with its watch caches *not* fed from etcd, so the
//! copy is stale exactly when the test makes it so.
//!
//! Needs `target/debug/etcd-lite` (`cargo build -p etcd-lite-bin`).

use std::{sync::Arc, time::Duration};

use apiserver::{
    etcd::{Etcd, EtcdOptions},
    metrics::Metrics,
    registry::Registry,
    storage::Store,
    strategy::UpdateMode,
    watch_cache::Caches,
    ApiError,
};
use kl_api::{
    BindRequest, Container, Kind, Namespace, Object, ObjectMeta, Pod, PodSpec, PodStatus, Resource,
};
use testkit::{etcd::EtcdCluster, EtcdOpts};

fn meta(name: &str, ns: &str) -> Option<ObjectMeta> {
    Some(ObjectMeta {
        name: name.into(),
        namespace: ns.into(),
        ..Default::default()
    })
}

fn pod(name: &str) -> Pod {
    Pod {
        metadata: meta(name, "default"),
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

fn rv(o: &Object) -> i64 {
    o.metadata().unwrap().resource_version.parse().unwrap()
}

fn as_pod(o: Object) -> Pod {
    Pod::from_object(o).unwrap()
}

struct Fixture {
    registry: Registry,
    _etcd: EtcdCluster,
}

impl Fixture {
    async fn start() -> Fixture {
        let etcd = EtcdCluster::start(1, EtcdOpts::fast()).await.unwrap();
        let pki = etcd.pki();
        let tls = kl_tls::ClientTls::load(
            &pki.etcd_ca,
            Some((&pki.apiserver_etcd_cert, &pki.apiserver_etcd_key)),
        )
        .unwrap()
        .tonic_config();
        let metrics = Arc::new(Metrics::new());
        let client = Etcd::connect(
            EtcdOptions {
                endpoints: vec![etcd.client_url(0)],
                tls: Some(tls),
                attempt_timeout: Duration::from_secs(3),
                call_timeout: Duration::from_secs(20),
            },
            metrics.clone(),
        )
        .await
        .unwrap();
        let registry = Registry {
            store: Store {
                etcd: Arc::new(client),
                prefix: "/registry".into(),
            },
            caches: Caches::new(100, metrics),
        };
        let mut ns = Namespace {
            metadata: meta("default", ""),
            ..Default::default()
        }
        .into_object();
        registry.create_object(&mut ns, None).await.unwrap();
        Fixture {
            registry,
            _etcd: etcd,
        }
    }

    fn key(&self, name: &str) -> String {
        self.registry.store.key(Kind::Pod, "default", name)
    }

    /// Creates pod `name` and puts etcd's copy in the watch cache, as the cache would have seen it.
    async fn create_cached(&self, name: &str) -> Object {
        let mut o = pod(name).into_object();
        self.registry.create_object(&mut o, None).await.unwrap();
        self.registry
            .caches
            .get(Kind::Pod)
            .apply(&self.key(name), rv(&o), Some(o.clone()));
        o
    }

    /// The cache's copy's revision.
    fn cached_rv(&self, name: &str) -> i64 {
        rv(&self
            .registry
            .caches
            .get(Kind::Pod)
            .get(&self.key(name))
            .unwrap())
    }

    async fn get(&self, name: &str) -> Pod {
        as_pod(self.registry.get("pods", "default", name).await.unwrap())
    }

    async fn update(&self, p: Pod, mode: UpdateMode) -> Result<Object, ApiError> {
        self.registry
            .update(Some(p.into_object().into_typed()), None, mode)
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_from_a_stale_cache_copy_lose_nothing() {
    let f = Fixture::start().await;
    let created = f.create_cached("p").await;
    let r1 = rv(&created);

    // etcd moves on (a label), the cache stays at r1.
    let mut labelled = f.get("p").await;
    labelled
        .metadata
        .as_mut()
        .unwrap()
        .labels
        .insert("app".into(), "web".into());
    let r2 = rv(&f.update(labelled, UpdateMode::Main).await.unwrap());
    assert!(r2 > r1);
    assert_eq!(f.cached_rv("p"), r1, "the cache is stale");

    // UpdateStatus decided on the stale copy would carry r1's metadata: the label must stay.
    let mut status = pod("p");
    status.status = Some(PodStatus {
        phase: "Running".into(),
        ..Default::default()
    });
    let r3 = rv(&f.update(status, UpdateMode::Status).await.unwrap());
    assert!(r3 > r2);
    let now = f.get("p").await;
    assert_eq!(
        now.metadata
            .as_ref()
            .unwrap()
            .labels
            .get("app")
            .map(String::as_str),
        Some("web"),
        "a status update from a stale copy dropped a label written after it"
    );
    assert_eq!(now.status.as_ref().unwrap().phase, "Running");

    // Pinned to etcd's current revision while the cache still holds r1: not a conflict.
    let mut pinned = now.clone();
    pinned.metadata.as_mut().unwrap().resource_version = r3.to_string();
    pinned
        .metadata
        .as_mut()
        .unwrap()
        .labels
        .insert("tier".into(), "front".into());
    let r4 = rv(&f
        .update(pinned, UpdateMode::Main)
        .await
        .expect("an update pinned to etcd's revision succeeds whatever the cache holds"));
    assert!(r4 > r3);
    // Pinned to an old revision that only the cache still holds: a conflict, as it must be.
    let mut old = now.clone();
    old.metadata.as_mut().unwrap().resource_version = r1.to_string();
    let err = f.update(old, UpdateMode::Main).await.unwrap_err();
    assert!(matches!(err, ApiError::Conflict { .. }), "{err:?}");

    // A status equal to the stale copy's is no no-op against etcd's (Running): it is written.
    assert_eq!(f.cached_rv("p"), r1, "still stale");
    let phase = |p: &Pod| {
        p.status
            .as_ref()
            .map(|s| s.phase.clone())
            .unwrap_or_default()
    };
    let stale = as_pod(created);
    assert_ne!(phase(&stale), "Running");
    let mut same = stale.clone();
    same.metadata.as_mut().unwrap().resource_version.clear();
    let back = f.update(same, UpdateMode::Status).await.unwrap();
    assert!(rv(&back) > r4, "the write happened");
    let now = f.get("p").await;
    assert_eq!(
        phase(&now),
        phase(&stale),
        "the status was judged unchanged on the cache's copy instead of etcd's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bind_from_a_stale_cache_copy_cannot_bind_twice() {
    let f = Fixture::start().await;
    let created = f.create_cached("q").await;
    let bind = |node: &str| BindRequest {
        namespace: "default".into(),
        name: "q".into(),
        node_name: node.into(),
        ..Default::default()
    };
    f.registry.bind(&bind("node-a")).await.unwrap();
    assert_eq!(
        f.cached_rv("q"),
        rv(&created),
        "the cache still has q unbound"
    );

    // The stale copy says unbound; etcd says node-a: the bind must fail as upstream's does.
    let err = f.registry.bind(&bind("node-b")).await.unwrap_err();
    assert!(matches!(err, ApiError::Conflict { .. }), "{err:?}");
    assert!(err.to_string().contains("node-a"), "{err}");
    let now = f.get("q").await;
    assert_eq!(now.spec.unwrap().node_name, "node-a");
}

//! `kl-bench api`: the load of `scripts/bench api`, through the kube-lite API (the generated
//! `kubelite.v1.Api` gRPC client, mutual TLS from a kubeconfig).
//!
//! * `create`: `--clients` concurrent clients create `--total` pods in `--namespace`, over
//!   `--conns` connections (through the lb, connection i lands on the lb's next backend).
//!   Latency is per Create call.
//! * `list`: lists `--namespace` whole (no limit) `--repeat` times, one list at a time, and
//!   reports the latency and the item count of the last list.
//! * `watch`: `--watchers` watches of the pods of `--namespace` on one apiserver, over
//!   `--conns` connections; then `--writes` creates, one at a time. The latency of a delivery
//!   is the time from the Create's answer (the write's ack) to a watcher receiving the ADDED
//!   event (0 when the event came first).
//!
//! Each run prints one JSON line. Every loop is bounded by a count and by `--max-duration`
//! (`watch`: by `--deliver-timeout` per write).

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::{Args, Subcommand};
use kl_api::{
    api_client::ApiClient, typed_object, Container, CreateRequest, ListRequest, Namespace,
    ObjectMeta, Pod, PodSpec, ResourceRequirements, TypedObject, WatchRequest,
};
use tokio::{sync::mpsc, task::JoinSet};
use tonic::{transport::Channel, Code};

use crate::stats::Latencies;

type Api = ApiClient<Channel>;

#[derive(Subcommand, Debug)]
pub enum ApiBench {
    /// Creates `--total` pods from `--clients` concurrent clients.
    Create(CreateArgs),
    /// Lists a namespace's pods, one list at a time.
    List(ListArgs),
    /// Watch fan-out: many watchers, one writer.
    Watch(WatchArgs),
}

/// Where and as whom to connect.
#[derive(Args, Debug, Clone)]
pub struct ApiConn {
    /// The kubeconfig: CA, client identity and (unless --server) the server URL.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Another server than the kubeconfig's (e.g. one apiserver, bypassing the lb); the
    /// certificate is still checked against the kubeconfig's server name.
    #[arg(long)]
    server: Option<String>,
    /// Per-request timeout (not applied to watches).
    #[arg(long, value_parser = kl_cli::duration, default_value = "30s")]
    request_timeout: Duration,
    /// gRPC connections; clients (or watchers) share them round-robin.
    #[arg(long, default_value_t = 1)]
    conns: usize,
    /// Namespace of the pods (created if missing).
    #[arg(long, default_value = "bench")]
    namespace: String,
    /// Free text copied into the JSON output (e.g. which store is under the apiservers).
    #[arg(long, default_value = "")]
    label: String,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    #[command(flatten)]
    conn: ApiConn,
    /// Concurrent clients, each with one Create in flight.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Pods in total.
    #[arg(long, default_value_t = 1000)]
    total: usize,
    /// Pod names are PREFIX-<n>.
    #[arg(long, default_value = "pod")]
    name_prefix: String,
    /// Upper bound of the run; pods not created by then are not created.
    #[arg(long, value_parser = kl_cli::duration, default_value = "300s")]
    max_duration: Duration,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    conn: ApiConn,
    /// Lists, one after the other.
    #[arg(long, default_value_t = 20)]
    repeat: usize,
    /// Upper bound of the run.
    #[arg(long, value_parser = kl_cli::duration, default_value = "300s")]
    max_duration: Duration,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    conn: ApiConn,
    /// Concurrent watches.
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
    /// Measured writes (pod creates), one at a time.
    #[arg(long, default_value_t = 50)]
    writes: usize,
    /// Pause between two measured writes.
    #[arg(long, value_parser = kl_cli::duration, default_value = "50ms")]
    interval: Duration,
    /// How long a write's event may take to reach every watcher before it counts as missed.
    #[arg(long, value_parser = kl_cli::duration, default_value = "10s")]
    deliver_timeout: Duration,
    /// How long the watchers may take to be established (warm-up writes until each has
    /// received one event).
    #[arg(long, value_parser = kl_cli::duration, default_value = "60s")]
    setup_timeout: Duration,
}

pub async fn run(bench: ApiBench) -> anyhow::Result<serde_json::Value> {
    match bench {
        ApiBench::Create(a) => create(&a).await,
        ApiBench::List(a) => list(&a).await,
        ApiBench::Watch(a) => watch(&a).await,
    }
}

/// `--conns` channels to the server, each its own TCP (and TLS) connection.
async fn connect(c: &ApiConn) -> anyhow::Result<Vec<Api>> {
    let cfg = kl_client::Kubeconfig::load(&c.kubeconfig)?.resolve(None)?;
    let server = c.server.clone().unwrap_or_else(|| cfg.server.clone());
    let tls = cfg
        .client_tls()?
        .tonic_config()
        .domain_name(cfg.tls_server_name.clone());
    let mut out = Vec::new();
    for _ in 0..c.conns.max(1) {
        let channel = tonic::transport::Endpoint::from_shared(server.clone())?
            .tls_config(tls.clone())?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .with_context(|| format!("connecting to {server}"))?;
        // A list of 10,000 pods is several MiB: lift tonic's 4 MiB default.
        out.push(ApiClient::new(channel).max_decoding_message_size(1 << 30));
    }
    Ok(out)
}

fn with_timeout<T>(msg: T, timeout: Option<Duration>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(t) = timeout {
        r.set_timeout(t);
    }
    r
}

/// Creates the namespace unless it exists.
async fn ensure_namespace(api: &mut Api, name: &str, timeout: Duration) -> anyhow::Result<()> {
    let ns = Namespace {
        api_version: "v1".into(),
        kind: "Namespace".into(),
        metadata: Some(ObjectMeta {
            name: name.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let req = CreateRequest {
        object: Some(TypedObject {
            object: Some(typed_object::Object::Namespace(ns)),
        }),
        fencing: None,
    };
    match api.create(with_timeout(req, Some(timeout))).await {
        Ok(_) => Ok(()),
        Err(s) if s.code() == Code::AlreadyExists => Ok(()),
        Err(s) => Err(anyhow::anyhow!("creating namespace {name}: {s}")),
    }
}

/// A pod as a controller would write it: labels, one container with a command and requests.
fn pod(namespace: &str, name: &str) -> CreateRequest {
    let pod = Pod {
        api_version: "v1".into(),
        kind: "Pod".into(),
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: namespace.into(),
            labels: BTreeMap::from([
                ("app".to_string(), "bench".to_string()),
                ("tier".to_string(), "load".to_string()),
            ]),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "main".into(),
                command: vec!["sleep".into(), "3600".into()],
                resources: Some(ResourceRequirements {
                    requests: [("cpu", "100m"), ("memory", "64Mi")]
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    CreateRequest {
        object: Some(TypedObject {
            object: Some(typed_object::Object::Pod(pod)),
        }),
        fencing: None,
    }
}

/// The name of the pod in a watch event, if it is one.
fn pod_name(t: &Option<TypedObject>) -> Option<&str> {
    match t.as_ref()?.object.as_ref()? {
        typed_object::Object::Pod(p) => p.metadata.as_ref().map(|m| m.name.as_str()),
        _ => None,
    }
}

async fn create(a: &CreateArgs) -> anyhow::Result<serde_json::Value> {
    let c = &a.conn;
    let apis = connect(c).await?;
    ensure_namespace(&mut apis[0].clone(), &c.namespace, c.request_timeout).await?;
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let started = Instant::now();
    let deadline = started + a.max_duration;
    let mut tasks = JoinSet::new();
    for i in 0..a.clients.max(1) {
        let mut api = apis[i % apis.len()].clone();
        let (next, errors, first_error) = (next.clone(), errors.clone(), first_error.clone());
        let (ns, prefix, total, timeout) = (
            c.namespace.clone(),
            a.name_prefix.clone(),
            a.total,
            c.request_timeout,
        );
        tasks.spawn(async move {
            let mut lat = Latencies::with_capacity(total / 4 + 1);
            while Instant::now() < deadline {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                let req = pod(&ns, &format!("{prefix}-{n}"));
                let t0 = Instant::now();
                match api.create(with_timeout(req, Some(timeout))).await {
                    Ok(_) => lat.record(t0.elapsed()),
                    Err(s) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error
                            .lock()
                            .unwrap()
                            .get_or_insert_with(|| s.to_string());
                    }
                }
            }
            lat
        });
    }
    let mut lat = Latencies::with_capacity(a.total);
    while let Some(r) = tasks.join_next().await {
        lat.merge(r?);
    }
    let secs = started.elapsed().as_secs_f64();
    let ok = lat.len();
    Ok(serde_json::json!({
        "bench": "api-create",
        "label": c.label,
        "clients": a.clients,
        "conns": c.conns,
        "total": a.total,
        "ok": ok,
        "errors": errors.load(Ordering::Relaxed),
        "first_error": *first_error.lock().unwrap(),
        "seconds": secs,
        "throughput": ok as f64 / secs,
        "p50_ms": lat.percentile_ms(50.0),
        "p99_ms": lat.percentile_ms(99.0),
        "max_ms": lat.percentile_ms(100.0),
    }))
}

async fn list(a: &ListArgs) -> anyhow::Result<serde_json::Value> {
    let c = &a.conn;
    let mut api = connect(c).await?.remove(0);
    let started = Instant::now();
    let deadline = started + a.max_duration;
    let mut lat = Latencies::with_capacity(a.repeat);
    let (mut items, mut bytes, mut errors) = (0usize, 0usize, 0usize);
    let mut first_error = None;
    for _ in 0..a.repeat {
        if Instant::now() >= deadline {
            break;
        }
        let req = ListRequest {
            resource: "pods".into(),
            namespace: c.namespace.clone(),
            ..Default::default()
        };
        let t0 = Instant::now();
        match api.list(with_timeout(req, Some(c.request_timeout))).await {
            Ok(r) => {
                lat.record(t0.elapsed());
                let r = r.into_inner();
                items = r.items.len();
                bytes = prost::Message::encoded_len(&r);
            }
            Err(s) => {
                errors += 1;
                first_error.get_or_insert_with(|| s.to_string());
            }
        }
    }
    Ok(serde_json::json!({
        "bench": "api-list",
        "label": c.label,
        "namespace": c.namespace,
        "lists": lat.len(),
        "items": items,
        "response_bytes": bytes,
        "errors": errors,
        "first_error": first_error,
        "p50_ms": lat.percentile_ms(50.0),
        "p99_ms": lat.percentile_ms(99.0),
        "max_ms": lat.percentile_ms(100.0),
    }))
}

/// What a watcher tells the collector: watcher `.0` received pod `.1` at `.2`.
type Delivery = (usize, String, Instant);

async fn watch(a: &WatchArgs) -> anyhow::Result<serde_json::Value> {
    let c = &a.conn;
    let apis = connect(c).await?;
    let mut writer = apis[0].clone();
    ensure_namespace(&mut writer, &c.namespace, c.request_timeout).await?;
    let rv = writer
        .list(with_timeout(
            ListRequest {
                resource: "pods".into(),
                namespace: c.namespace.clone(),
                limit: 1,
                ..Default::default()
            },
            Some(c.request_timeout),
        ))
        .await
        .context("listing the namespace before watching")?
        .into_inner()
        .resource_version;

    let (tx, mut rx) = mpsc::unbounded_channel::<Delivery>();
    let broken = Arc::new(AtomicUsize::new(0));
    let mut watchers = JoinSet::new();
    for w in 0..a.watchers {
        let mut api = apis[w % apis.len()].clone();
        let (tx, broken) = (tx.clone(), broken.clone());
        let req = WatchRequest {
            resource: "pods".into(),
            namespace: c.namespace.clone(),
            resource_version: rv.clone(),
            ..Default::default()
        };
        watchers.spawn(async move {
            let mut stream = match api.watch(req).await {
                Ok(s) => s.into_inner(),
                Err(_) => {
                    broken.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            loop {
                match stream.message().await {
                    Ok(Some(ev)) => {
                        if ev.r#type == "ADDED" {
                            if let Some(name) = pod_name(&ev.object) {
                                let _ = tx.send((w, name.to_string(), Instant::now()));
                            }
                        }
                    }
                    Ok(None) | Err(_) => {
                        broken.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
        });
    }
    drop(tx);

    // Warm-up: write until every watcher has received something, so that every watch is
    // established before the measured writes.
    let setup_deadline = Instant::now() + a.setup_timeout;
    let mut warmed = vec![false; a.watchers];
    let mut warm_count = 0;
    let mut warm_writes = 0;
    let run_id = std::process::id();
    while warm_count < a.watchers {
        anyhow::ensure!(
            Instant::now() < setup_deadline,
            "only {warm_count} of {} watchers received an event within {:?} ({} streams ended)",
            a.watchers,
            a.setup_timeout,
            broken.load(Ordering::Relaxed)
        );
        let name = format!("warm-{run_id}-{warm_writes}");
        warm_writes += 1;
        writer
            .create(with_timeout(
                pod(&c.namespace, &name),
                Some(c.request_timeout),
            ))
            .await
            .with_context(|| format!("warm-up write {name}"))?;
        let until = Instant::now() + Duration::from_millis(500);
        while let Ok(Some((w, _, _))) = tokio::time::timeout_at(until.into(), rx.recv()).await {
            if !warmed[w] {
                warmed[w] = true;
                warm_count += 1;
            }
        }
    }
    // Drain what the warm-up still has in flight.
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {}

    let mut from_ack = Latencies::with_capacity(a.writes * a.watchers);
    let mut from_send = Latencies::with_capacity(a.writes * a.watchers);
    let mut write_lat = Latencies::with_capacity(a.writes);
    let (mut missed, mut write_errors) = (0usize, 0usize);
    for n in 0..a.writes {
        let name = format!("watch-{run_id}-{n}");
        let sent = Instant::now();
        let res = writer
            .create(with_timeout(
                pod(&c.namespace, &name),
                Some(c.request_timeout),
            ))
            .await;
        let acked = Instant::now();
        if res.is_err() {
            write_errors += 1;
            continue;
        }
        write_lat.record(acked - sent);
        let mut got = vec![false; a.watchers];
        let mut count = 0;
        let until = acked + a.deliver_timeout;
        while count < a.watchers {
            match tokio::time::timeout_at(until.into(), rx.recv()).await {
                Ok(Some((w, got_name, at))) if got_name == name && !got[w] => {
                    got[w] = true;
                    count += 1;
                    from_ack.record(at.saturating_duration_since(acked));
                    from_send.record(at.saturating_duration_since(sent));
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        missed += a.watchers - count;
        tokio::time::sleep(a.interval).await;
    }
    watchers.abort_all();
    Ok(serde_json::json!({
        "bench": "api-watch",
        "label": c.label,
        "watchers": a.watchers,
        "conns": c.conns,
        "writes": a.writes,
        "warmup_writes": warm_writes,
        "deliveries": from_ack.len(),
        "missed": missed,
        "write_errors": write_errors,
        "streams_ended": broken.load(Ordering::Relaxed),
        "p50_ms": from_ack.percentile_ms(50.0),
        "p99_ms": from_ack.percentile_ms(99.0),
        "max_ms": from_ack.percentile_ms(100.0),
        "p99_from_send_ms": from_send.percentile_ms(99.0),
        "write_p50_ms": write_lat.percentile_ms(50.0),
    }))
}

#[cfg(test)]
mod tests {
    //! The three loads against a stand-in API server (in memory, the real TLS and kubeconfig
    //! path): the bookkeeping is checked here, the apiserver's speed by `scripts/bench api`.

    use std::{pin::Pin, sync::Mutex};

    use futures::Stream;
    use kl_api::{
        api_server::{Api as ApiService, ApiServer},
        BindRequest, ClusterInfoRequest, ClusterInfoResponse, DeleteRequest, DeleteResponse,
        GetRequest, ListResponse, UpdateRequest, VersionInfo, VersionRequest, WatchEvent,
    };
    use tokio::sync::broadcast;
    use tokio_stream::{wrappers::BroadcastStream, StreamExt};
    use tonic::{Request, Response, Status};

    use super::*;

    /// Pods by namespace, and a broadcast of every created pod.
    struct Mock {
        pods: Mutex<Vec<TypedObject>>,
        events: broadcast::Sender<TypedObject>,
    }

    type Res<T> = Result<Response<T>, Status>;

    #[tonic::async_trait]
    impl ApiService for Mock {
        async fn create(&self, r: Request<CreateRequest>) -> Res<TypedObject> {
            let obj = r.into_inner().object.unwrap_or_default();
            if pod_name(&Some(obj.clone())).is_some() {
                self.pods.lock().unwrap().push(obj.clone());
                let _ = self.events.send(obj.clone());
            }
            Ok(Response::new(obj))
        }
        async fn list(&self, _: Request<ListRequest>) -> Res<ListResponse> {
            Ok(Response::new(ListResponse {
                items: self.pods.lock().unwrap().clone(),
                resource_version: "1".into(),
                ..Default::default()
            }))
        }
        type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, Status>> + Send>>;
        async fn watch(&self, _: Request<WatchRequest>) -> Res<Self::WatchStream> {
            let s = BroadcastStream::new(self.events.subscribe()).filter_map(|o| {
                o.ok().map(|o| {
                    Ok(WatchEvent {
                        r#type: "ADDED".into(),
                        object: Some(o),
                    })
                })
            });
            Ok(Response::new(Box::pin(s)))
        }
        async fn get(&self, _: Request<GetRequest>) -> Res<TypedObject> {
            Err(Status::unimplemented("get"))
        }
        async fn update(&self, _: Request<UpdateRequest>) -> Res<TypedObject> {
            Err(Status::unimplemented("update"))
        }
        async fn update_status(&self, _: Request<UpdateRequest>) -> Res<TypedObject> {
            Err(Status::unimplemented("update_status"))
        }
        async fn delete(&self, _: Request<DeleteRequest>) -> Res<DeleteResponse> {
            Err(Status::unimplemented("delete"))
        }
        async fn bind(&self, _: Request<BindRequest>) -> Res<TypedObject> {
            Err(Status::unimplemented("bind"))
        }
        async fn version(&self, _: Request<VersionRequest>) -> Res<VersionInfo> {
            Err(Status::unimplemented("version"))
        }
        async fn cluster_info(&self, _: Request<ClusterInfoRequest>) -> Res<ClusterInfoResponse> {
            Err(Status::unimplemented("cluster_info"))
        }
        type PodLogsStream = Pin<Box<dyn Stream<Item = Result<kl_api::LogChunk, Status>> + Send>>;
        async fn pod_logs(&self, _: Request<kl_api::PodLogsRequest>) -> Res<Self::PodLogsStream> {
            Err(Status::unimplemented("pod_logs"))
        }
    }

    /// Serves the mock with the generated apiserver certificate; returns the admin kubeconfig.
    async fn serve(dir: &std::path::Path) -> PathBuf {
        let pki = dir.join("pki");
        let out = kl_pki::generate(&kl_pki::PkiSpec::new(), &pki).unwrap();
        let tls = kl_tls::ServerTls::load(
            &kl_pki::paths::APISERVER.cert_in(&pki),
            &kl_pki::paths::APISERVER.key_in(&pki),
            Some(&kl_pki::paths::CA.cert_in(&pki)),
            true,
        )
        .unwrap()
        .rustls_config()
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mock = Mock {
            pods: Mutex::new(Vec::new()),
            events: broadcast::channel(4096).0,
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ApiServer::new(mock))
                .serve_with_incoming(kl_tls::incoming(listener, tls)),
        );
        let admin = &out.identities[0];
        let path = dir.join("admin.kubeconfig");
        kl_client::Kubeconfig::embedded(
            "kube-lite",
            &format!("https://127.0.0.1:{}", addr.port()),
            out.ca_pem.as_bytes(),
            &admin.user,
            admin.cert_pem.as_bytes(),
            admin.key_pem.as_bytes(),
        )
        .write(&path)
        .unwrap();
        path
    }

    fn conn(kubeconfig: PathBuf, conns: usize) -> ApiConn {
        ApiConn {
            kubeconfig,
            server: None,
            request_timeout: Duration::from_secs(10),
            conns,
            namespace: "bench".into(),
            label: "mock".into(),
        }
    }

    #[tokio::test]
    async fn create_list_and_watch_count_what_they_measure() {
        let dir = tempfile::tempdir().unwrap();
        let kc = serve(dir.path()).await;

        let created = create(&CreateArgs {
            conn: conn(kc.clone(), 3),
            clients: 8,
            total: 200,
            name_prefix: "p".into(),
            max_duration: Duration::from_secs(60),
        })
        .await
        .unwrap();
        assert_eq!(created["ok"], 200, "{created}");
        assert_eq!(created["errors"], 0, "{created}");
        assert!(created["throughput"].as_f64().unwrap() > 0.0);

        let listed = list(&ListArgs {
            conn: conn(kc.clone(), 1),
            repeat: 3,
            max_duration: Duration::from_secs(60),
        })
        .await
        .unwrap();
        assert_eq!(listed["lists"], 3, "{listed}");
        assert_eq!(listed["items"], 200, "{listed}");

        let watched = watch(&WatchArgs {
            conn: conn(kc, 4),
            watchers: 50,
            writes: 5,
            interval: Duration::from_millis(1),
            deliver_timeout: Duration::from_secs(10),
            setup_timeout: Duration::from_secs(30),
        })
        .await
        .unwrap();
        assert_eq!(watched["deliveries"], 250, "{watched}");
        assert_eq!(watched["missed"], 0, "{watched}");
        assert_eq!(watched["write_errors"], 0, "{watched}");
    }
}

//! The gRPC service `kubelite.v1.Api`: what every request goes through before and after its
//! verb, in one place ([`ApiService::serve`]):
//!
//! 1. authentication: the verified client certificate (CN = user, O = groups); none →
//!    `UNAUTHENTICATED` / `Unauthorized`;
//! 2. authorization (`--authorization-mode`, [`crate::authz`]): denied → `PERMISSION_DENIED` /
//!    `Forbidden` naming the user, the verb, the resource and why;
//! 3. the inflight limit (`--max-requests-inflight`, watches and logs excluded): over it →
//!    `RESOURCE_EXHAUSTED` / `TooManyRequests` with `retry-after: 1`, at once;
//! 4. the request size limit ([`MAX_REQUEST_BYTES`], kube-apiserver's 3 MiB);
//! 5. one tracing span (verb, resource, namespace, name, user) and the request metrics.
//!
//! The verbs themselves are `registry.rs`'s.

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use futures::{Stream, StreamExt};
use kl_api::{
    api_server::Api, BindRequest, ClusterInfoRequest, ClusterInfoResponse, CreateRequest,
    DeleteRequest, DeleteResponse, EtcdMemberInfo, GetRequest, ListRequest, ListResponse, LogChunk,
    PodLogsRequest, TypedObject, UpdateRequest, VersionInfo, VersionRequest, WatchEvent,
    WatchRequest,
};
use prost::Message;
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use tracing::{field, Instrument};

use crate::authz;
use crate::error::{ApiError, ApiResult};
use crate::etcd::Etcd;
use crate::kubelet::KubeletClient;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::strategy::UpdateMode;

/// The largest request accepted: kube-apiserver's limit on a request body (3 MiB). Bigger
/// ones get `RESOURCE_EXHAUSTED` / `RequestEntityTooLarge` naming the limit.
pub const MAX_REQUEST_BYTES: usize = 3 * 1024 * 1024;

/// Counts requests in flight against `--max-requests-inflight`.
pub struct Inflight {
    max: usize,
    current: AtomicUsize,
    metrics: Arc<Metrics>,
}

/// One admitted request; dropping it frees its slot.
pub struct Slot {
    inflight: Arc<Inflight>,
    kind: &'static str,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.inflight.current.fetch_sub(1, Ordering::AcqRel);
        self.inflight
            .metrics
            .inflight
            .with_label_values(&[self.kind])
            .dec();
    }
}

impl Inflight {
    /// `max` 0 means no limit (as upstream).
    pub fn new(max: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Inflight {
            max,
            current: AtomicUsize::new(0),
            metrics,
        })
    }

    /// A slot, or TooManyRequests at once when all are taken.
    pub fn acquire(self: &Arc<Self>, mutating: bool) -> ApiResult<Slot> {
        let n = self.current.fetch_add(1, Ordering::AcqRel);
        if self.max > 0 && n >= self.max {
            self.current.fetch_sub(1, Ordering::AcqRel);
            return Err(ApiError::TooManyRequests {
                message: format!(
                    "Too many requests, please try again later: more than {} requests in flight (--max-requests-inflight)",
                    self.max
                ),
                retry_after_seconds: Some(1),
            });
        }
        let kind = if mutating { "mutating" } else { "readOnly" };
        self.metrics.inflight.with_label_values(&[kind]).inc();
        Ok(Slot {
            inflight: self.clone(),
            kind,
        })
    }
}

/// What a request names, for authorization, its span and metrics.
struct Target<'a> {
    verb: &'static str,
    resource: &'a str,
    namespace: &'a str,
    name: &'a str,
    mutating: bool,
    /// A list's or watch's field selector (authorization of nodes' pod watches).
    field_selector: &'a str,
}

impl Target<'_> {
    fn attributes(&self) -> Option<authz::Attributes<'_>> {
        let verb = match self.verb {
            "GET" => authz::Verb::Get,
            "LIST" => authz::Verb::List,
            "WATCH" => authz::Verb::Watch,
            "POST" => authz::Verb::Create,
            "PUT" => authz::Verb::Update,
            "DELETE" => authz::Verb::Delete,
            _ => return None,
        };
        Some(authz::Attributes {
            verb,
            resource: self.resource,
            namespace: self.namespace,
            name: self.name,
            field_selector: self.field_selector,
        })
    }
}

/// The service: the verbs behind the per-request checks.
#[derive(Clone)]
pub struct ApiService {
    pub registry: Registry,
    pub metrics: Arc<Metrics>,
    pub inflight: Arc<Inflight>,
    pub etcd: Arc<Etcd>,
    /// `<advertise-address>:<secure-port>`: answers Version and ClusterInfo.
    pub server_id: String,
    pub etcd_prefix: String,
    /// Reaches kubelets for pods/log.
    pub kubelets: Arc<KubeletClient>,
    /// Turns true when the server stops: open watches end (cleanly), log streams end with
    /// ServiceUnavailable.
    pub stop: watch::Receiver<bool>,
    /// `--authorization-mode`.
    pub authorization_mode: authz::Mode,
}

impl ApiService {
    fn authenticate<T>(req: &Request<T>) -> ApiResult<kl_tls::PeerIdentity> {
        kl_tls::peer_identity(req).ok_or_else(|| {
            ApiError::Unauthorized(
                "a client certificate signed by the cluster CA (--client-ca-file) is required"
                    .into(),
            )
        })
    }

    /// Authorizes `t` for `who` (module doc, step 2). A decision that depends on the pod
    /// ("bound to this node") is checked against the stored pod: the status strategy keeps
    /// `spec.nodeName` as stored, so the stored one is what an update can touch.
    async fn authorize(&self, who: &kl_tls::PeerIdentity, t: &Target<'_>) -> ApiResult<()> {
        // /version is open to every authenticated client (upstream's system:discovery).
        if t.resource == "version" {
            return Ok(());
        }
        let Some(a) = t.attributes() else {
            return Ok(());
        };
        let denied = match authz::authorize(self.authorization_mode, who, &a) {
            authz::Decision::Allow => None,
            authz::Decision::Deny(why) => Some(why),
            authz::Decision::IfBoundTo(node) => {
                let stored = self.registry.get("pods", t.namespace, t.name).await?;
                let bound = match &stored {
                    kl_api::Object::Pod(p) => p.spec.as_ref().is_some_and(|s| s.node_name == node),
                    _ => false,
                };
                (!bound).then(|| {
                    format!(
                        "node \"{node}\" can only {} pods bound to it",
                        a.verb.as_str()
                    )
                })
            }
        };
        let decision = if denied.is_some() {
            "denied"
        } else {
            "allowed"
        };
        self.metrics
            .authorization_decisions
            .with_label_values(&[decision])
            .inc();
        match denied {
            None => Ok(()),
            Some(why) => {
                let message = authz::denial_message(who, &a, &why);
                tracing::warn!(user = %who.common_name, groups = %who.organizations.join(","), reason = %message, "request denied");
                Err(ApiError::Forbidden {
                    resource: authz::qualified(t.resource),
                    name: t.name.to_string(),
                    why: message,
                })
            }
        }
    }

    fn record(&self, t: &Target<'_>, started: Instant, result: Result<(), &ApiError>) {
        let code = match result {
            Ok(()) if t.verb == "POST" => 201,
            Ok(()) => 200,
            Err(e) => e.http_code(),
        };
        self.metrics
            .requests
            .with_label_values(&[t.verb, t.resource, &code.to_string()])
            .inc();
        self.metrics
            .request_duration
            .with_label_values(&[t.verb, t.resource])
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => tracing::debug!(code, "request done"),
            Err(e) if code >= 500 => {
                tracing::warn!(code, reason = e.reason(), error = %e, "request failed")
            }
            Err(e) => tracing::info!(code, reason = e.reason(), error = %e, "request refused"),
        }
    }

    /// Runs one unary request through the checks of the module doc, then `f`.
    async fn serve<Req, T, F, Fut>(
        &self,
        t: Target<'_>,
        req: Request<Req>,
        f: F,
    ) -> Result<Response<T>, Status>
    where
        Req: Message,
        F: FnOnce(Req) -> Fut,
        Fut: std::future::Future<Output = ApiResult<T>>,
    {
        let started = Instant::now();
        let span = tracing::info_span!(
            "request",
            verb = t.verb,
            resource = %t.resource,
            ns = %t.namespace,
            name = %t.name,
            user = field::Empty,
            groups = field::Empty,
        );
        let result = async {
            let who = Self::authenticate(&req)?;
            tracing::Span::current().record("user", who.common_name.as_str());
            tracing::Span::current().record("groups", who.organizations.join(",").as_str());
            self.authorize(&who, &t).await?;
            let _slot = self.inflight.acquire(t.mutating)?;
            let size = req.get_ref().encoded_len();
            if size > MAX_REQUEST_BYTES {
                return Err(ApiError::RequestTooLarge(format!(
                    "the request is too large: {size} bytes, the limit is {MAX_REQUEST_BYTES} bytes (3 MiB, as kube-apiserver's)"
                )));
            }
            f(req.into_inner()).await
        }
        .instrument(span.clone())
        .await;
        let _enter = span.enter();
        self.record(&t, started, result.as_ref().map(|_| ()));
        result.map(Response::new).map_err(ApiError::into_status)
    }
}

/// The resource, namespace and name a request's object names (read in place: the object
/// itself is not copied).
fn object_target(o: &Option<TypedObject>) -> (String, String, String) {
    use kl_api::{typed_object::Object as Typed, Kind};
    let (kind, meta) = match o.as_ref().and_then(|t| t.object.as_ref()) {
        Some(Typed::Namespace(o)) => (Kind::Namespace, o.metadata.as_ref()),
        Some(Typed::Node(o)) => (Kind::Node, o.metadata.as_ref()),
        Some(Typed::Pod(o)) => (Kind::Pod, o.metadata.as_ref()),
        Some(Typed::ReplicaSet(o)) => (Kind::ReplicaSet, o.metadata.as_ref()),
        Some(Typed::Lease(o)) => (Kind::Lease, o.metadata.as_ref()),
        Some(Typed::Event(o)) => (Kind::Event, o.metadata.as_ref()),
        None => return (String::new(), String::new(), String::new()),
    };
    let (ns, name) = meta
        .map(|m| (m.namespace.as_str(), m.name.as_str()))
        .unwrap_or_default();
    (kind.plural().to_string(), ns.to_string(), name.to_string())
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, Status>> + Send + 'static>>;
type LogStream = Pin<Box<dyn Stream<Item = Result<LogChunk, Status>> + Send + 'static>>;

/// Keeps `apiserver_longrunning_requests` right for as long as a watch or log stream lives.
struct Longrunning {
    metrics: Arc<Metrics>,
    verb: &'static str,
    resource: String,
}

impl Longrunning {
    fn start(metrics: &Arc<Metrics>, verb: &'static str, resource: &str) -> Longrunning {
        metrics
            .longrunning
            .with_label_values(&[verb, resource])
            .inc();
        Longrunning {
            metrics: metrics.clone(),
            verb,
            resource: resource.to_string(),
        }
    }
}

impl Drop for Longrunning {
    fn drop(&mut self) {
        self.metrics
            .longrunning
            .with_label_values(&[self.verb, &self.resource])
            .dec();
    }
}

#[tonic::async_trait]
impl Api for ApiService {
    async fn create(&self, req: Request<CreateRequest>) -> Result<Response<TypedObject>, Status> {
        let (resource, ns, name) = object_target(&req.get_ref().object);
        let t = Target {
            verb: "POST",
            resource: &resource,
            namespace: &ns,
            name: &name,
            mutating: true,
            field_selector: "",
        };
        self.serve(t, req, |r| async move {
            Ok(self.registry.create(r).await?.into_typed())
        })
        .await
    }

    async fn get(&self, req: Request<GetRequest>) -> Result<Response<TypedObject>, Status> {
        let r = req.get_ref().clone();
        let t = Target {
            verb: "GET",
            resource: &r.resource,
            namespace: &r.namespace,
            name: &r.name,
            mutating: false,
            field_selector: "",
        };
        self.serve(t, req, |r| async move {
            Ok(self
                .registry
                .get(&r.resource, &r.namespace, &r.name)
                .await?
                .into_typed())
        })
        .await
    }

    async fn list(&self, req: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let (resource, ns, fields) = (
            req.get_ref().resource.clone(),
            req.get_ref().namespace.clone(),
            req.get_ref().field_selector.clone(),
        );
        let t = Target {
            verb: "LIST",
            resource: &resource,
            namespace: &ns,
            name: "",
            mutating: false,
            field_selector: &fields,
        };
        self.serve(t, req, |r| async move {
            let (_, page) = self.registry.list(&r).await?;
            Ok(ListResponse {
                items: page.items.into_iter().map(|o| o.into_typed()).collect(),
                resource_version: page.revision.to_string(),
                r#continue: page.continue_token,
                remaining_item_count: page.remaining,
            })
        })
        .await
    }

    async fn update(&self, req: Request<UpdateRequest>) -> Result<Response<TypedObject>, Status> {
        let (resource, ns, name) = object_target(&req.get_ref().object);
        let t = Target {
            verb: "PUT",
            resource: &resource,
            namespace: &ns,
            name: &name,
            mutating: true,
            field_selector: "",
        };
        self.serve(t, req, |r| async move {
            Ok(self
                .registry
                .update(r.object, r.fencing.as_ref(), UpdateMode::Main)
                .await?
                .into_typed())
        })
        .await
    }

    async fn update_status(
        &self,
        req: Request<UpdateRequest>,
    ) -> Result<Response<TypedObject>, Status> {
        let (resource, ns, name) = object_target(&req.get_ref().object);
        let resource = format!("{resource}/status");
        let t = Target {
            verb: "PUT",
            resource: &resource,
            namespace: &ns,
            name: &name,
            mutating: true,
            field_selector: "",
        };
        self.serve(t, req, |r| async move {
            Ok(self
                .registry
                .update(r.object, r.fencing.as_ref(), UpdateMode::Status)
                .await?
                .into_typed())
        })
        .await
    }

    async fn delete(
        &self,
        req: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let r = req.get_ref().clone();
        let t = Target {
            verb: "DELETE",
            resource: &r.resource,
            namespace: &r.namespace,
            name: &r.name,
            mutating: true,
            field_selector: "",
        };
        self.serve(t, req, |r| async move {
            let (obj, deleted) = self.registry.delete(&r).await?;
            Ok(DeleteResponse {
                object: Some(obj.into_typed()),
                deleted,
            })
        })
        .await
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let started = Instant::now();
        let r = req.get_ref().clone();
        let t = Target {
            verb: "WATCH",
            resource: &r.resource,
            namespace: &r.namespace,
            name: "",
            mutating: false,
            field_selector: &r.field_selector,
        };
        let span = tracing::info_span!(
            "request",
            verb = "WATCH",
            resource = %r.resource,
            ns = %r.namespace,
            rv = %r.resource_version,
            user = field::Empty,
        );
        let result = async {
            let who = Self::authenticate(&req)?;
            tracing::Span::current().record("user", who.common_name.as_str());
            self.authorize(&who, &t).await?;
            self.registry.watch(&r).await
        }
        .instrument(span.clone())
        .await;
        {
            let _enter = span.enter();
            self.record(&t, started, result.as_ref().map(|_| ()));
        }
        let (kind, sub) = result.map_err(ApiError::into_status)?;
        let guard = Longrunning::start(&self.metrics, "WATCH", kind.plural());
        let mut stop = self.stop.clone();
        let stopped = async move { crate::run::stopped(&mut stop).await };
        let live = tokio_stream::wrappers::ReceiverStream::new(sub.rx);
        let stream = futures::stream::iter(sub.initial.into_iter().map(Ok))
            .chain(live)
            // On shutdown the stream ends: the client sees a clean end (OK) and re-watches.
            .take_until(Box::pin(stopped))
            .map(move |e| {
                let _keep = &guard;
                e
            });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn bind(&self, req: Request<BindRequest>) -> Result<Response<TypedObject>, Status> {
        let r = req.get_ref().clone();
        let t = Target {
            verb: "POST",
            resource: "pods/binding",
            namespace: &r.namespace,
            name: &r.name,
            mutating: true,
            field_selector: "",
        };
        self.serve(t, req, |r| async move {
            Ok(self.registry.bind(&r).await?.into_typed())
        })
        .await
    }

    type PodLogsStream = LogStream;

    /// pods/log: a long-running request like a watch (outside the inflight limit, counted in
    /// `apiserver_longrunning_requests`). The kubelet's answer is relayed as it arrives: the
    /// next chunk is read from the kubelet only when gRPC flow control lets the previous one
    /// go, so a slow client slows the kubelet down instead of filling memory. A client that
    /// goes away drops the stream, and with it the connection to the kubelet.
    async fn pod_logs(
        &self,
        req: Request<PodLogsRequest>,
    ) -> Result<Response<Self::PodLogsStream>, Status> {
        let started = Instant::now();
        let r = req.get_ref().clone();
        let t = Target {
            verb: "GET",
            resource: "pods/log",
            namespace: &r.namespace,
            name: &r.name,
            mutating: false,
            field_selector: "",
        };
        let span = tracing::info_span!(
            "request",
            verb = "GET",
            resource = "pods/log",
            ns = %r.namespace,
            name = %r.name,
            container = %r.container,
            follow = r.follow,
            user = field::Empty,
        );
        let result = async {
            let who = Self::authenticate(&req)?;
            tracing::Span::current().record("user", who.common_name.as_str());
            self.authorize(&who, &t).await?;
            crate::logs::open(&self.registry, &self.kubelets, &r).await
        }
        .instrument(span.clone())
        .await;
        {
            let _enter = span.enter();
            self.record(&t, started, result.as_ref().map(|_| ()));
        }
        let body = result.map_err(ApiError::into_status)?;
        let guard = Longrunning::start(&self.metrics, "GET", "pods/log");
        Ok(Response::new(Box::pin(log_stream(
            body,
            self.stop.clone(),
            guard,
        ))))
    }

    async fn version(&self, req: Request<VersionRequest>) -> Result<Response<VersionInfo>, Status> {
        let t = Target {
            verb: "GET",
            resource: "version",
            namespace: "",
            name: "",
            mutating: false,
            field_selector: "",
        };
        self.serve(t, req, |_| async move {
            Ok(VersionInfo {
                git_version: format!("v{}", env!("CARGO_PKG_VERSION")),
                platform: platform(),
                server: self.server_id.clone(),
            })
        })
        .await
    }

    async fn cluster_info(
        &self,
        req: Request<ClusterInfoRequest>,
    ) -> Result<Response<ClusterInfoResponse>, Status> {
        let t = Target {
            verb: "GET",
            resource: "clusterinfo",
            namespace: "",
            name: "",
            mutating: false,
            field_selector: "",
        };
        self.serve(t, req, |_| async move {
            Ok(ClusterInfoResponse {
                server: self.server_id.clone(),
                etcd_members: etcd_members(&self.etcd).await,
                etcd_prefix: self.etcd_prefix.clone(),
            })
        })
        .await
    }
}

/// The kubelet's chunks as LogChunks, until the kubelet ends the log, its connection breaks
/// (one last error), or the apiserver stops (one last ServiceUnavailable: unlike a watch, a
/// log cut short must not look complete).
fn log_stream(
    body: crate::kubelet::Body,
    stop: watch::Receiver<bool>,
    guard: Longrunning,
) -> impl Stream<Item = Result<LogChunk, Status>> + Send + 'static {
    futures::stream::unfold(Some((body, stop, guard)), |state| async move {
        let (mut body, mut stop, guard) = state?;
        tokio::select! {
            biased;
            _ = crate::run::stopped(&mut stop) => Some((
                Err(ApiError::ServiceUnavailable(
                    "the apiserver is shutting down; the log stream ended early".into(),
                )
                .into_status()),
                None,
            )),
            item = body.next() => match item {
                None => None,
                Some(Ok(data)) => Some((Ok(LogChunk { data }), Some((body, stop, guard)))),
                Some(Err(e)) => Some((Err(e.into_status()), None)),
            },
        }
    })
}

/// `linux/amd64`, Go's spelling.
fn platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    format!("{}/{arch}", std::env::consts::OS)
}

/// Every member of --etcd-servers as this apiserver sees it: etcd Status per member, named
/// from a MemberList of any member that answers.
pub async fn etcd_members(etcd: &Etcd) -> Vec<EtcdMemberInfo> {
    let timeout = Duration::from_secs(2);
    let statuses = futures::future::join_all(etcd.members().iter().map(|m| {
        let mut c = m.client.clone();
        async move { tokio::time::timeout(timeout, c.status()).await }
    }))
    .await;
    let mut list = None;
    for (m, s) in etcd.members().iter().zip(&statuses) {
        if matches!(s, Ok(Ok(_))) {
            let mut c = m.client.clone();
            if let Ok(Ok(l)) = tokio::time::timeout(timeout, c.member_list()).await {
                list = Some(l);
                break;
            }
        }
    }
    etcd.members()
        .iter()
        .zip(statuses)
        .map(|(m, s)| match s {
            Ok(Ok(st)) => {
                let id = st.header().map(|h| h.member_id()).unwrap_or_default();
                let member = list
                    .as_ref()
                    .and_then(|l| l.members().iter().find(|x| x.id() == id));
                EtcdMemberInfo {
                    name: member.map(|x| x.name().to_string()).unwrap_or_default(),
                    id: format!("{id:x}"),
                    client_urls: member
                        .map(|x| x.client_urls().to_vec())
                        .unwrap_or_else(|| vec![m.url.clone()]),
                    healthy: st.leader() != 0 && st.errors().is_empty(),
                    is_leader: st.leader() != 0 && st.leader() == id,
                    error: st.errors().join("; "),
                    version: st.version().to_string(),
                    raft_term: st.raft_term() as i64,
                }
            }
            Ok(Err(e)) => EtcdMemberInfo {
                client_urls: vec![m.url.clone()],
                error: e.to_string(),
                ..Default::default()
            },
            Err(_) => EtcdMemberInfo {
                client_urls: vec![m.url.clone()],
                error: format!("no answer within {timeout:?}"),
                ..Default::default()
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inflight_limit_refuses_at_once_and_frees_on_drop() {
        let l = Inflight::new(2, Arc::new(Metrics::new()));
        let a = l.acquire(false).unwrap();
        let _b = l.acquire(true).unwrap();
        let e = match l.acquire(false) {
            Err(e) => e,
            Ok(_) => panic!("a third request must be refused"),
        };
        assert_eq!(e.reason(), "TooManyRequests");
        let s = e.into_status();
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        assert!(s.metadata().get("retry-after").is_some());
        drop(a);
        assert!(l.acquire(false).is_ok());
        let unlimited = Inflight::new(0, Arc::new(Metrics::new()));
        let _many: Vec<_> = (0..10).map(|_| unlimited.acquire(true).unwrap()).collect();
        assert_eq!(platform().split('/').count(), 2);
    }
}

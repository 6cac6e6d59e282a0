//! Helpers of the apiserver test binaries: building objects, calling the raw API, asserting on
//! the exact status a call ended with.

use std::{collections::BTreeMap, future::Future, time::Duration};

use kl_api::{
    api_client::ApiClient, Container, CreateRequest, DeleteRequest, DeleteResponse, GetRequest,
    ListRequest, ListResponse, Object, ObjectMeta, Pod, PodSpec, Resource, TypedObject,
    UpdateRequest,
};
use testkit::{ApiCluster, ApiOpts};
use tonic::{transport::Channel, Code, Status};

pub type Api = ApiClient<Channel>;

/// Upper bound of one test body once its cluster is up; only turns a hang into a failure.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(300);

/// Starts a cluster or panics with the reason (e.g. the binaries to build).
pub async fn start_api(opts: ApiOpts) -> ApiCluster {
    match ApiCluster::start(opts).await {
        Ok(c) => c,
        Err(e) => panic!("{e:#}"),
    }
}

/// Runs a test body with [`TEST_TIMEOUT`]; an error or a timeout panics while the cluster is
/// still alive, so its Drop prints the log tails.
pub async fn run_api<'a, F, Fut>(c: &'a mut ApiCluster, body: F)
where
    F: FnOnce(&'a mut ApiCluster) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + 'a,
{
    match tokio::time::timeout(TEST_TIMEOUT, body(c)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{e:#}"),
        Err(_) => panic!("test body did not finish within {TEST_TIMEOUT:?}"),
    }
}

/// A pod running `sleep 3600`, with labels.
pub fn pod(name: &str, labels: &[(&str, &str)]) -> Pod {
    Pod {
        metadata: Some(ObjectMeta {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "main".into(),
                command: vec!["sleep".into(), "3600".into()],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn typed<K: Resource>(k: K) -> Option<TypedObject> {
    let mut o = k.into_object();
    o.set_type_meta();
    Some(o.into_typed())
}

/// The object of kind K in an API answer.
pub fn untyped<K: Resource>(t: TypedObject) -> anyhow::Result<K> {
    let o = Object::from_typed(t).ok_or_else(|| anyhow::anyhow!("answer carries no object"))?;
    let kind = o.kind();
    K::from_object(o).ok_or_else(|| anyhow::anyhow!("answer is a {kind}, not a {}", K::KIND))
}

pub fn meta<K: Resource>(k: &K) -> ObjectMeta {
    k.meta().cloned().unwrap_or_default()
}

pub async fn create<K: Resource>(api: &mut Api, k: K) -> Result<K, Status> {
    let t = api
        .create(CreateRequest {
            object: typed(k),
            fencing: None,
        })
        .await?
        .into_inner();
    untyped(t).map_err(|e| Status::internal(e.to_string()))
}

pub async fn get<K: Resource>(api: &mut Api, ns: &str, name: &str) -> Result<K, Status> {
    let t = api
        .get(GetRequest {
            resource: K::KIND.plural().into(),
            namespace: ns.into(),
            name: name.into(),
        })
        .await?
        .into_inner();
    untyped(t).map_err(|e| Status::internal(e.to_string()))
}

pub async fn update<K: Resource>(api: &mut Api, k: K) -> Result<K, Status> {
    let t = api
        .update(UpdateRequest {
            object: typed(k),
            fencing: None,
        })
        .await?
        .into_inner();
    untyped(t).map_err(|e| Status::internal(e.to_string()))
}

pub async fn update_status<K: Resource>(api: &mut Api, k: K) -> Result<K, Status> {
    let t = api
        .update_status(UpdateRequest {
            object: typed(k),
            fencing: None,
        })
        .await?
        .into_inner();
    untyped(t).map_err(|e| Status::internal(e.to_string()))
}

pub async fn list(api: &mut Api, req: ListRequest) -> Result<ListResponse, Status> {
    Ok(api.list(req).await?.into_inner())
}

/// The names in a list answer, in order.
pub fn names(l: &ListResponse) -> Vec<String> {
    l.items
        .iter()
        .filter_map(|t| Object::from_typed(t.clone()))
        .map(|o| o.name().to_string())
        .collect()
}

pub async fn delete(
    api: &mut Api,
    resource: &str,
    ns: &str,
    name: &str,
    grace: Option<i64>,
) -> Result<DeleteResponse, Status> {
    Ok(api
        .delete(DeleteRequest {
            resource: resource.into(),
            namespace: ns.into(),
            name: name.into(),
            grace_period_seconds: grace,
            preconditions: None,
            fencing: None,
            ..Default::default()
        })
        .await?
        .into_inner())
}

/// The `kl-reason` of a status (the Kubernetes reason), "" if absent.
pub fn reason(s: &Status) -> String {
    s.metadata()
        .get("kl-reason")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// Asserts a call failed with `code`, Kubernetes reason `why`, and a message containing `msg`.
pub fn expect_err<T: std::fmt::Debug>(
    r: Result<T, Status>,
    code: Code,
    why: &str,
    msg: &str,
) -> anyhow::Result<Status> {
    let s = match r {
        Ok(v) => anyhow::bail!("expected {code:?} ({why}: {msg}), got Ok({v:?})"),
        Err(s) => s,
    };
    anyhow::ensure!(
        s.code() == code && reason(&s) == why && s.message().contains(msg),
        "expected {code:?} ({why}) containing {msg:?}, got {:?} ({}) {:?}",
        s.code(),
        reason(&s),
        s.message()
    );
    Ok(s)
}

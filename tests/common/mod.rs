//! Helpers shared by the store test binaries (each file in tests/ is its own binary and pulls
//! this in with `mod common;`). Cluster handling itself lives in `testkit`.
#![allow(dead_code)]

use std::{future::Future, time::Duration};

use etcd_client::{GetResponse, KeyValue};
use testkit::{
    grpc::{status_of, Code},
    EtcdCluster, EtcdOpts,
};

/// Upper bound of one test body once its cluster is up. Generous: it only turns a hang into a
/// failure with logs, it never measures speed.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(240);

/// How long a cluster may take to settle after a disruption (election, catch-up).
pub const SETTLE: Duration = Duration::from_secs(30);

/// Starts an n-member cluster or panics with the reason (e.g. the binary to build).
pub async fn start(n: usize, opts: EtcdOpts) -> EtcdCluster {
    match EtcdCluster::start(n, opts).await {
        Ok(c) => c,
        Err(e) => panic!("{e:#}"),
    }
}

/// Runs a test body against a cluster with [`TEST_TIMEOUT`]; an error or a timeout panics
/// while the cluster is still alive, so its Drop prints the members' log tails.
pub async fn run<'a, F, Fut>(c: &'a mut EtcdCluster, body: F)
where
    F: FnOnce(&'a mut EtcdCluster) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + 'a,
{
    match tokio::time::timeout(TEST_TIMEOUT, body(c)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{e:#}"),
        Err(_) => panic!("test body did not finish within {TEST_TIMEOUT:?}"),
    }
}

/// The current leader and one follower.
pub async fn leader_and_follower(c: &mut EtcdCluster) -> anyhow::Result<(usize, usize)> {
    let l = c.wait_for_leader(SETTLE).await?;
    let f = c
        .running_indices()
        .into_iter()
        .find(|&i| i != l)
        .ok_or_else(|| anyhow::anyhow!("no follower"))?;
    Ok((l, f))
}

/// The server version the cluster reports (Status.version).
pub async fn server_version(c: &EtcdCluster, member: usize) -> anyhow::Result<String> {
    Ok(c.status(member).await?.version().to_string())
}

/// Keys of a range response, as strings.
pub fn keys(r: &GetResponse) -> Vec<String> {
    r.kvs().iter().map(kv_key).collect()
}

/// Values of a range response, as strings.
pub fn values(r: &GetResponse) -> Vec<String> {
    r.kvs().iter().map(kv_value).collect()
}

pub fn kv_key(kv: &KeyValue) -> String {
    String::from_utf8_lossy(kv.key()).into_owned()
}

pub fn kv_value(kv: &KeyValue) -> String {
    String::from_utf8_lossy(kv.value()).into_owned()
}

/// The revision in a response header.
pub fn rev(h: Option<&etcd_client::ResponseHeader>) -> anyhow::Result<i64> {
    Ok(
        h.ok_or_else(|| anyhow::anyhow!("response without a header"))?
            .revision(),
    )
}

/// Retries a membership change while etcd's strict reconfiguration check refuses it
/// ("etcdserver: unhealthy cluster" until the leader has been connected to every voter for
/// 5 s, which is the case right after a start; "not enough started members" until a killed
/// member is seen as down). A server without that check simply succeeds at once.
pub async fn retry_unhealthy<T, F, Fut>(
    what: &str,
    client: &etcd_client::Client,
    f: F,
) -> anyhow::Result<T>
where
    F: Fn(etcd_client::Client) -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        match f(client.clone()).await {
            Ok(v) => return Ok(v),
            Err(e)
                if status_of(&e).is_some_and(|s| {
                    (s.code() == Code::Unavailable
                        && s.message() == "etcdserver: unhealthy cluster")
                        || (s.code() == Code::FailedPrecondition
                            && s.message()
                                == "etcdserver: re-configuration failed due to not enough started members")
                }) && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(anyhow::anyhow!("{what}: {e}")),
        }
    }
}

/// A plain HTTP/1.0 GET of `url` (`http://host:port/path`), bounded; returns the status code
/// and the body. Enough for etcd's /health and /metrics without an HTTP client dependency.
pub async fn http_get(url: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("{url}: only http:// URLs"))?;
    let (hostport, path) = rest.split_once('/').unwrap_or((rest, ""));
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(hostport).await?;
        s.write_all(format!("GET /{path} HTTP/1.0\r\nHost: {hostport}\r\n\r\n").as_bytes())
            .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        anyhow::Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    let text = tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .map_err(|_| anyhow::anyhow!("GET {url}: no answer in 10s"))??;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("GET {url}: bad status line in {head:?}"))?;
    Ok((code, body.to_string()))
}
pub mod api;
pub mod docker;

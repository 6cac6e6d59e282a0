//! The etcd v3 gRPC services, over [`Node`].
//!
//! Layout (one file per etcd service):
//! * [`kv`]: Range, Put, DeleteRange, Txn, Compact (and RangeStream, as one chunk).
//! * [`watch`]: the Watch stream: one task per watch, all owned by their stream.
//! * [`lease`]: Grant, Revoke, the KeepAlive stream, TimeToLive, Leases.
//! * [`cluster`]: MemberList, MemberAdd, MemberRemove, MemberPromote.
//! * [`maintenance`]: Status and Alarm (list); the rest is `UNIMPLEMENTED`.
//! * [`auth`]: every Auth RPC is `UNIMPLEMENTED` with a message naming it.
//! * [`authority`]: repairs the invalid `:authority` etcd 3.4 clients send on plaintext
//!   connections, which h2 would refuse.
//!
//! This module owns the translation between etcd's wire API and [`Node`]: validation, request
//! size limits, read paths (serializable vs ReadIndex), response headers, and the per-RPC
//! metric. It must never touch Raft or sled directly, and must never hold the store lock
//! across an `.await`.

use std::{future::Future, sync::Arc, time::Duration};

use etcd_client::proto::{
    PbClusterServer, PbKvServer, PbLeaseServer, PbMaintenanceServer, PbWatchServer,
};
use futures::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::watch as signal;
use tokio_rustls::rustls;
use tonic::{Code, Response, Status};
use tracing::Instrument;

use crate::error::EtcdError;
use crate::node::Node;

pub mod auth;
pub mod authority;
pub mod cluster;
pub mod kv;
pub mod lease;
pub mod maintenance;
pub mod watch;

pub use maintenance::ETCD_API_VERSION;

/// etcd's `grpcOverheadBytes`: the gRPC receive limit is `--max-request-bytes` plus this, so a
/// request just over the limit reaches the server and gets etcd's own "request is too large".
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// Settings of the client-facing server that are not part of [`crate::Config`] (they do not
/// affect the store, only how it is served).
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// How often a watch created with `progress_notify` gets an empty response carrying the
    /// current revision, when it had no events (etcd's
    /// `--experimental-watch-progress-notify-interval`, default 10m).
    pub watch_progress_notify_interval: Duration,
    /// Responses buffered per Watch stream before the watches of that stream wait for the
    /// client to read (bounds memory per slow client).
    pub watch_stream_buffer: usize,
    /// Events fetched from the store per step of one watch (a revision is never split).
    pub watch_batch_events: usize,
    /// A watch response is split (between revisions) once it reaches about this size, so that
    /// clients with gRPC's default 4 MiB receive limit can replay large histories.
    pub watch_response_bytes: usize,
    /// HTTP/2 keepalive ping interval (etcd's `--grpc-keepalive-interval`, default 2h).
    pub grpc_keepalive_interval: Duration,
    /// How long to wait for a keepalive ping's ack before closing the connection (etcd's
    /// `--grpc-keepalive-timeout`, default 20s).
    pub grpc_keepalive_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            watch_progress_notify_interval: Duration::from_secs(10 * 60),
            watch_stream_buffer: 128,
            watch_batch_events: 256,
            watch_response_bytes: 1024 * 1024,
            grpc_keepalive_interval: Duration::from_secs(2 * 60 * 60),
            grpc_keepalive_timeout: Duration::from_secs(20),
        }
    }
}

/// Serves the etcd v3 API on `listener` until `shutdown` completes. With `tls`, every
/// connection is TLS (mutual when the config demands client certificates); without, plaintext.
///
/// On shutdown, open Watch and LeaseKeepAlive streams end with `etcdserver: server stopped`
/// (so clients move to another member) and the server waits for in-flight unary requests.
pub async fn serve_client(
    node: Arc<Node>,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    opts: ServerOptions,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let local = listener.local_addr()?;
    let limits = kl_tls::ConnLimits::with_max_connections(node.config().max_connections);
    let (stop_tx, stop_rx) = signal::channel(false);
    let stopping = Stopping(stop_rx);
    let max_recv = node.config().max_request_bytes + GRPC_OVERHEAD_BYTES;
    // etcd sends with math.MaxInt32 as its limit.
    let max_send = i32::MAX as usize;

    let kv = PbKvServer::new(kv::KvService::new(node.clone()))
        .max_decoding_message_size(max_recv)
        .max_encoding_message_size(max_send);
    let watch = PbWatchServer::new(watch::WatchService::new(
        node.clone(),
        opts.clone(),
        stopping.clone(),
    ))
    .max_decoding_message_size(max_recv)
    .max_encoding_message_size(max_send);
    let lease = PbLeaseServer::new(lease::LeaseService::new(node.clone(), stopping.clone()))
        .max_decoding_message_size(max_recv)
        .max_encoding_message_size(max_send);
    let cluster = PbClusterServer::new(cluster::ClusterService::new(node.clone()))
        .max_decoding_message_size(max_recv)
        .max_encoding_message_size(max_send);
    let maintenance = PbMaintenanceServer::new(maintenance::MaintenanceService::new(node.clone()))
        .max_decoding_message_size(max_recv)
        .max_encoding_message_size(max_send);

    let router = tonic::transport::Server::builder()
        .layer(tower::util::MapResponseLayer::new(oversize_as_grpc_go))
        .http2_keepalive_interval(Some(opts.grpc_keepalive_interval))
        .http2_keepalive_timeout(Some(opts.grpc_keepalive_timeout))
        .max_concurrent_streams(node.config().max_concurrent_streams)
        .add_service(kv)
        .add_service(watch)
        .add_service(lease)
        .add_service(cluster)
        .add_service(maintenance)
        .add_service(auth::AuthService::new(node.clone()));

    let signal = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    tracing::info!(addr = %local, tls = tls.is_some(), "serving etcd v3 API");
    match tls {
        Some(config) => {
            router
                .serve_with_incoming_shutdown(
                    kl_tls::incoming_with(listener, config, limits),
                    signal,
                )
                .await?
        }
        None => {
            router
                .serve_with_incoming_shutdown(
                    kl_tls::incoming_plain(listener, limits)
                        .map(|conn| conn.map(authority::AuthorityFix::new)),
                    signal,
                )
                .await?
        }
    }
    tracing::info!(addr = %local, "etcd v3 API server stopped");
    Ok(())
}

/// Becomes ready when the server is shutting down: streams select on it so that a graceful
/// shutdown is not held up by Watch and KeepAlive streams, which never end by themselves.
#[derive(Clone, Debug)]
pub struct Stopping(signal::Receiver<bool>);

impl Stopping {
    /// Resolves once shutdown has begun (or the server is gone). Cancel-safe.
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stopping| *stopping).await;
    }
}

/// grpc-go's name of a status code, as `grpc_server_handled_total{grpc_code}` shows it.
pub fn grpc_code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// Counts one finished RPC.
pub(crate) fn record(node: &Node, method: &str, code: Code) {
    node.metrics()
        .grpc_handled
        .with_label_values(&[method, grpc_code_name(code)])
        .inc();
}

/// Runs one unary RPC in its span and counts it.
pub(crate) async fn unary<T, E: Into<Status>>(
    node: &Node,
    method: &'static str,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<Response<T>, Status> {
    let span = tracing::debug_span!("grpc", method);
    let res = fut.instrument(span.clone()).await;
    match res {
        Ok(resp) => {
            record(node, method, Code::Ok);
            Ok(Response::new(resp))
        }
        Err(e) => {
            let status: Status = e.into();
            record(node, method, status.code());
            span.in_scope(|| {
                tracing::debug!(code = ?status.code(), error = status.message(), "request failed")
            });
            Err(status)
        }
    }
}

/// Counts a streaming RPC when it ends, however it ends: a stream dropped before finishing
/// (the client went away) counts as `Canceled`.
pub(crate) struct StreamRecord {
    node: Arc<Node>,
    method: &'static str,
    code: Option<Code>,
}

impl StreamRecord {
    pub(crate) fn new(node: Arc<Node>, method: &'static str) -> Self {
        StreamRecord {
            node,
            method,
            code: None,
        }
    }

    pub(crate) fn finish(&mut self, code: Code) {
        self.code = Some(code);
    }
}

impl Drop for StreamRecord {
    fn drop(&mut self) {
        record(
            &self.node,
            self.method,
            self.code.unwrap_or(Code::Cancelled),
        );
    }
}

/// The error for a command whose response has the wrong shape: a bug, not a client error.
pub(crate) fn unexpected(what: &str, resp: &crate::command::CommandResponse) -> EtcdError {
    EtcdError::Internal(format!("unexpected response to {what}: {resp:?}"))
}

/// tonic refuses a message over the receive limit with `OutOfRange` ("Error, decoded message
/// length too large: found N bytes, the limit is: M bytes"); etcd (grpc-go) answers
/// `ResourceExhausted` "grpc: received message larger than max (N vs. M)". Clients match on
/// the code, so rewrite it to grpc-go's.
fn oversize_as_grpc_go<B>(mut resp: http::Response<B>) -> http::Response<B> {
    let headers = resp.headers_mut();
    if headers.get("grpc-status").and_then(|v| v.to_str().ok()) != Some("11") {
        return resp;
    }
    let Some(message) = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .map(|m| {
            m.replace("%20", " ")
                .replace("%3A", ":")
                .replace("%2C", ",")
        })
    else {
        return resp;
    };
    if !message.starts_with("Error, decoded message length too large") {
        return resp;
    }
    let numbers: Vec<&str> = message
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .collect();
    let text = match numbers.as_slice() {
        [found, limit, ..] => {
            format!("grpc: received message larger than max ({found} vs. {limit})")
        }
        _ => "grpc: received message larger than max".to_string(),
    };
    let encoded = text.replace(' ', "%20").replace(':', "%3A");
    if let Ok(v) = http::HeaderValue::from_str(&encoded) {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
        headers.insert("grpc-message", v);
    }
    resp
}

#[cfg(test)]
mod oversize_tests {
    use super::*;

    #[test]
    fn tonic_oversize_becomes_grpc_go_resource_exhausted() {
        let resp = http::Response::builder()
            .header("grpc-status", "11")
            .header(
                "grpc-message",
                "Error,%20decoded%20message%20length%20too%20large%3A%20found%20679953%20bytes,%20the%20limit%20is%3A%20589824%20bytes",
            )
            .body(())
            .unwrap();
        let resp = oversize_as_grpc_go(resp);
        assert_eq!(resp.headers()["grpc-status"], "8");
        assert_eq!(
            resp.headers()["grpc-message"],
            "grpc%3A%20received%20message%20larger%20than%20max%20(679953%20vs.%20589824)"
        );
        let other = http::Response::builder()
            .header("grpc-status", "11")
            .header("grpc-message", "etcdserver%3A%20mvcc")
            .body(())
            .unwrap();
        assert_eq!(oversize_as_grpc_go(other).headers()["grpc-status"], "11");
    }
}

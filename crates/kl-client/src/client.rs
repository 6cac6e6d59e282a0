//! [`Client`]: one TLS channel to the apiserver (in a cluster, to the lb), and the one place
//! where a call gets its timeout and its retries.
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use kl_api::api_client::ApiClient;
use kl_api::{ClusterInfoRequest, ClusterInfoResponse, VersionInfo, VersionRequest};
use tonic::transport::{Channel, Endpoint};
use tracing::debug;

use crate::error::ApiError;
use crate::kubeconfig::{Kubeconfig, KubeconfigError, ResolvedConfig};
use crate::retry::{Idempotency, RetryPolicy};

/// Why a [`Client`] could not be built (before any connection is tried).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Kubeconfig(#[from] KubeconfigError),
    #[error(transparent)]
    Tls(#[from] kl_tls::TlsError),
    #[error("server {server:?}: {message}")]
    Server { server: String, message: String },
}

/// How a [`Client`] connects and how long it waits. Builder-style:
///
/// ```
/// use std::time::Duration;
/// let opts = kl_client::ClientOptions::default()
///     .request_timeout(Some(Duration::from_secs(5)))
///     .retry(kl_client::RetryPolicy::none());
/// assert_eq!(opts.request_timeout, Some(Duration::from_secs(5)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientOptions {
    /// Bound on making a connection (TCP + TLS), so that a dead lb fails fast.
    pub connect_timeout: Duration,
    /// Bound on each attempt of a unary call, and on setting up a watch (kubectl's
    /// `--request-timeout`). None: no bound. Also sent as `grpc-timeout`, so the server can
    /// give up too.
    pub request_timeout: Option<Duration>,
    /// HTTP/2 PING interval, sent even when idle: a connection whose peer died (an apiserver
    /// killed behind the lb, a half-open TCP connection) is noticed within interval + timeout,
    /// and the next call reconnects. Watches depend on it.
    pub keepalive_interval: Duration,
    /// How long a PING may go unanswered before the connection is dropped.
    pub keepalive_timeout: Duration,
    /// Retries of transient failures (see [`crate::retry`]).
    pub retry: RetryPolicy,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Some(Duration::from_secs(30)),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
        }
    }
}

impl ClientOptions {
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    pub fn request_timeout(mut self, d: Option<Duration>) -> Self {
        self.request_timeout = d;
        self
    }

    pub fn keepalive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keepalive_interval = interval;
        self.keepalive_timeout = timeout;
        self
    }

    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
}

/// A client of the kube-lite API. Cheap to clone: clones share one lazily connected channel,
/// which reconnects by itself after a failure.
#[derive(Clone, Debug)]
pub struct Client {
    raw: ApiClient<Channel>,
    /// The URL dialled (kubectl's "control plane is running at").
    server: String,
    /// The kubeconfig context's namespace: where namespaced calls go by default.
    namespace: String,
    opts: ClientOptions,
}

impl Client {
    /// A client for a resolved kubeconfig context, with default options. Does not connect:
    /// the first call does. Must be called within a Tokio runtime (the channel's background
    /// task is spawned here).
    pub fn new(config: &ResolvedConfig) -> Result<Client, ConfigError> {
        Client::with_options(config, ClientOptions::default())
    }

    pub fn with_options(
        config: &ResolvedConfig,
        opts: ClientOptions,
    ) -> Result<Client, ConfigError> {
        let bad = |message: String| ConfigError::Server {
            server: config.server.clone(),
            message,
        };
        if !config.server.starts_with("https://") {
            return Err(bad(
                "must be an https:// URL (kube-lite always uses TLS)".into()
            ));
        }
        let tls = config
            .client_tls()?
            .tonic_config()
            .domain_name(config.tls_server_name.clone());
        let endpoint = Endpoint::from_shared(config.server.clone())
            .map_err(|e| bad(e.to_string()))?
            .tls_config(tls)
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(opts.connect_timeout)
            .http2_keep_alive_interval(opts.keepalive_interval)
            .keep_alive_timeout(opts.keepalive_timeout)
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
        Ok(Client {
            // A list of every pod of a big cluster is one answer: accept up to 1 GiB, as
            // client-go has no answer size limit either.
            raw: ApiClient::new(endpoint.connect_lazy()).max_decoding_message_size(1 << 30),
            server: config.server.clone(),
            namespace: config.namespace.clone(),
            opts,
        })
    }

    /// Loads a kubeconfig (`explicit`, else `KUBECONFIG`, else `~/.kube/config`), resolves
    /// `context` (else the current one) and builds a client for it.
    pub fn from_kubeconfig(
        explicit: Option<&Path>,
        context: Option<&str>,
    ) -> Result<Client, ConfigError> {
        let config = Kubeconfig::load_default(explicit)?.resolve(context)?;
        Client::new(&config)
    }

    /// The same client (same channel) with other options.
    pub fn with(mut self, opts: ClientOptions) -> Client {
        self.opts = opts;
        self
    }

    /// The same client with the given per-attempt timeout.
    pub fn with_request_timeout(mut self, timeout: Option<Duration>) -> Client {
        self.opts.request_timeout = timeout;
        self
    }

    /// The server URL this client dials.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The kubeconfig context's namespace (`default` when it names none).
    pub fn default_namespace(&self) -> &str {
        &self.namespace
    }

    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }

    /// The generated gRPC client, for what this crate does not wrap (tests of the wire
    /// protocol). It has no timeout or retry of its own.
    pub fn raw(&self) -> ApiClient<Channel> {
        self.raw.clone()
    }

    /// The apiserver's version (and which apiserver answered).
    pub async fn version(&self) -> Result<VersionInfo, ApiError> {
        self.call(
            "version",
            Idempotency::Idempotent,
            |mut c, req| async move { c.version(req.request(VersionRequest {})).await },
        )
        .await
    }

    /// The etcd members as one apiserver sees them.
    pub async fn cluster_info(&self) -> Result<ClusterInfoResponse, ApiError> {
        self.call(
            "cluster_info",
            Idempotency::Idempotent,
            |mut c, req| async move { c.cluster_info(req.request(ClusterInfoRequest {})).await },
        )
        .await
    }

    /// Runs one unary call with the request timeout and the retry policy. `f` gets a channel
    /// clone and a function that wraps a message into a request carrying the timeout; it is
    /// called once per attempt.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        op: &'static str,
        idem: Idempotency,
        f: F,
    ) -> Result<T, ApiError>
    where
        F: FnMut(ApiClient<Channel>, RequestFn) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call_bounded(op, idem, true, f).await
    }

    /// [`Client::call`], where `deadline_header` says whether the server is told the timeout:
    /// not for a watch, whose stream must outlive the set-up bound.
    pub(crate) async fn call_bounded<T, F, Fut>(
        &self,
        op: &'static str,
        idem: Idempotency,
        deadline_header: bool,
        mut f: F,
    ) -> Result<T, ApiError>
    where
        F: FnMut(ApiClient<Channel>, RequestFn) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let timeout = self.opts.request_timeout;
        let header = if deadline_header { timeout } else { None };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let fut = f(self.raw.clone(), RequestFn { timeout: header });
            let result = match timeout {
                Some(t) => match tokio::time::timeout(t, fut).await {
                    Ok(r) => r.map_err(|s| match ApiError::from(s) {
                        // tonic enforced the grpc-timeout header a moment before we did.
                        ApiError::Timeout { .. } => ApiError::Timeout { after: t },
                        e => e,
                    }),
                    Err(_) => Err(ApiError::Timeout { after: t }),
                },
                None => fut.await.map_err(ApiError::from),
            };
            match result {
                Ok(response) => return Ok(response.into_inner()),
                Err(e) => match self.opts.retry.next_delay(&e, idem, attempt) {
                    Some(delay) => {
                        debug!(op, attempt, ?delay, error = %e, "retrying");
                        tokio::time::sleep(delay).await;
                    }
                    None => return Err(e),
                },
            }
        }
    }
}

/// Wraps a message into a `tonic::Request` carrying the call's timeout (`grpc-timeout`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RequestFn {
    timeout: Option<Duration>,
}

impl RequestFn {
    pub(crate) fn request<M>(self, message: M) -> tonic::Request<M> {
        let mut r = tonic::Request::new(message);
        if let Some(t) = self.timeout {
            r.set_timeout(t);
        }
        r
    }
}

//! The kubelet's HTTPS port (10250).
//!
//! * `/healthz`: 200 `ok`, or 500 with the reason; no client certificate needed.
//! * `/metrics`: Prometheus text; needs a verified client certificate (401 without).
//! * `GET /containerLogs/<namespace>/<pod>/<container>?follow=&tailLines=&previous=&timestamps=&limitBytes=`:
//!   the container's log as `kubectl logs` prints it, streamed (chunked, each piece sent as it
//!   is read, so `follow` works). Only the apiserver's kubelet-client identity (CN
//!   `kube-apiserver-kubelet-client`) and `system:masters` may read logs: 401 without a
//!   certificate, 403 with upstream's message for anyone else (a node, say). 404 with the
//!   runtime's message for an unknown pod or container, 400 naming a bad query parameter.
//!
//! Served with tokio-rustls and hyper directly (not tonic) because authorization needs the
//! peer certificate of each connection. The TLS configuration comes from the caller (client
//! certificates optional, verified against `--client-ca-file` when presented).
//!
//! This module never reads log files itself: the runtime owns them.
use std::{convert::Infallible, io, net::SocketAddr, sync::Arc};

use axum::body::Body;
use futures::StreamExt;
use hyper::{
    header::{HeaderValue, CONTENT_TYPE},
    Method, Request, Response, StatusCode,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use kl_tls::PeerIdentity;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::runtime::{LogError, LogOptions, Runtime};

/// The user name of the apiserver's client certificate towards kubelets (kubeadm's).
pub const APISERVER_KUBELET_CLIENT: &str = "kube-apiserver-kubelet-client";

/// The group that may do anything.
pub const SYSTEM_MASTERS: &str = "system:masters";

/// What the health check asks: why the kubelet is unhealthy, or `None`.
pub type HealthCheck = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// Renders the Prometheus text of `/metrics`.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// Everything the port serves.
#[derive(Clone)]
pub struct ServerConfig {
    /// Where to listen (`--address`:`--port`).
    pub addr: SocketAddr,
    /// The serving certificate, and the CA that client certificates are verified against
    /// (client authentication optional, so `/healthz` works without one).
    pub tls: Arc<rustls::ServerConfig>,
    /// Where container logs come from.
    pub runtime: Runtime,
    /// `/metrics`' body.
    pub metrics: MetricsRender,
    /// `/healthz`' check.
    pub health: HealthCheck,
}

/// Binds the port now, so that a taken port fails at start; the listener's `local_addr` is
/// the real port when `addr` had port 0.
pub async fn bind(cfg: &ServerConfig) -> io::Result<TcpListener> {
    TcpListener::bind(cfg.addr).await
}

/// Binds and serves until `cancel`.
pub async fn serve(cfg: ServerConfig, cancel: CancellationToken) -> io::Result<()> {
    let listener = bind(&cfg).await?;
    serve_on(listener, cfg, cancel).await
}

/// Serves on a bound listener until `cancel`; open connections (log followers included) are
/// closed then.
pub async fn serve_on(
    listener: TcpListener,
    cfg: ServerConfig,
    cancel: CancellationToken,
) -> io::Result<()> {
    let mut incoming = std::pin::pin!(kl_tls::incoming_with(
        listener,
        cfg.tls.clone(),
        kl_tls::ConnLimits::component(),
    ));
    let cfg = Arc::new(cfg);
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let tls = tokio::select! {
            _ = cancel.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            next = incoming.next() => match next {
                Some(Ok(tls)) => tls,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "accept failed");
                    continue;
                }
                None => break,
            },
        };
        let peer = tls.get_ref().get_ref().0.peer_addr().ok();
        let (cfg, cancel) = (cfg.clone(), cancel.clone());
        conns.spawn(async move {
            // The verifier checked the chain during the handshake: a certificate here is
            // trusted.
            let identity = tls
                .get_ref()
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| kl_tls::identity_of(c.as_ref()));
            let service = hyper::service::service_fn(move |req| {
                let (cfg, identity) = (cfg.clone(), identity.clone());
                async move { Ok::<_, Infallible>(handle(&cfg, identity.as_ref(), req).await) }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            // A timer turns on hyper's HTTP/1 header-read timeout (30 s).
            builder.http1().timer(TokioTimer::new());
            let conn = builder.serve_connection(TokioIo::new(tls), service);
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!(?peer, error = %e, "connection ended");
                },
                _ = cancel.cancelled() => {}
            }
        });
    }
    conns.shutdown().await;
    Ok(())
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    let mut resp = Response::new(Body::from(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

async fn handle(
    cfg: &ServerConfig,
    identity: Option<&PeerIdentity>,
    req: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let path = req.uri().path();
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "405: Method Not Allowed\n");
    }
    if path == "/healthz" || path.starts_with("/healthz/") {
        return match (cfg.health)() {
            None => text(StatusCode::OK, "ok"),
            Some(why) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("[-]{why}\nhealthz check failed\n"),
            ),
        };
    }
    if path == "/metrics" {
        if identity.is_none() {
            return text(StatusCode::UNAUTHORIZED, "Unauthorized\n");
        }
        let mut resp = text(StatusCode::OK, (cfg.metrics)());
        resp.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        return resp;
    }
    if let Some(rest) = path.strip_prefix("/containerLogs/") {
        let Some(id) = identity else {
            return text(StatusCode::UNAUTHORIZED, "Unauthorized\n");
        };
        if id.common_name != APISERVER_KUBELET_CLIENT
            && !id.organizations.iter().any(|o| o == SYSTEM_MASTERS)
        {
            return text(
                StatusCode::FORBIDDEN,
                format!(
                    "Forbidden (user={}, verb=get, resource=nodes, subresource=proxy)\n",
                    id.common_name
                ),
            );
        }
        return container_logs(cfg, id, rest, req.uri().query().unwrap_or_default()).await;
    }
    text(StatusCode::NOT_FOUND, "404 page not found\n")
}

async fn container_logs(
    cfg: &ServerConfig,
    id: &PeerIdentity,
    rest: &str,
    query: &str,
) -> Response<Body> {
    let parts: Vec<String> = rest.split('/').map(percent_decode).collect();
    let [namespace, pod, container] = parts.as_slice() else {
        return text(
            StatusCode::BAD_REQUEST,
            "the path must be /containerLogs/<namespace>/<pod>/<container>\n",
        );
    };
    if namespace.is_empty() || pod.is_empty() || container.is_empty() {
        return text(
            StatusCode::BAD_REQUEST,
            "the path must be /containerLogs/<namespace>/<pod>/<container>\n",
        );
    }
    let opts = match parse_log_query(query) {
        Ok(o) => o,
        Err(why) => return text(StatusCode::BAD_REQUEST, format!("{why}\n")),
    };
    tracing::debug!(user = %id.common_name, %namespace, %pod, %container, ?opts, "containerLogs");
    match cfg.runtime.logs(namespace, pod, container, opts).await {
        Ok(stream) => {
            let mut resp = Response::new(Body::from_stream(stream));
            resp.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            resp
        }
        Err(LogError::Io(e)) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{}\n", LogError::Io(e)),
        ),
        Err(e) => text(StatusCode::NOT_FOUND, format!("{e}\n")),
    }
}

/// `follow`, `tailLines`, `previous`, `timestamps`, `limitBytes`; other parameters (such as
/// `sinceSeconds`) are ignored. A bad value is an error naming the parameter.
fn parse_log_query(query: &str) -> Result<LogOptions, String> {
    let mut opts = LogOptions::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(key);
        let value = percent_decode(value);
        let bad = |want: &str| {
            format!("invalid value {value:?} for query parameter {key:?}: must be {want}")
        };
        match key.as_str() {
            "follow" => opts.follow = parse_bool(&value).ok_or_else(|| bad("true or false"))?,
            "previous" => opts.previous = parse_bool(&value).ok_or_else(|| bad("true or false"))?,
            "timestamps" => {
                opts.timestamps = parse_bool(&value).ok_or_else(|| bad("true or false"))?
            }
            "tailLines" => {
                opts.tail_lines = Some(
                    value
                        .parse::<u64>()
                        .map_err(|_| bad("a non-negative integer"))?,
                )
            }
            "limitBytes" => {
                opts.limit_bytes = Some(
                    value
                        .parse::<u64>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| bad("a positive integer"))?,
                )
            }
            _ => {}
        }
    }
    Ok(opts)
}

/// Go's `strconv.ParseBool`.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Decodes `%XX` escapes and `+` (query strings); invalid escapes are kept as they are.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{
        state::{format_time, proc_stat, write_json, AttemptState, ExitRecord},
        PodRef, RuntimeConfig,
    };
    use std::time::{Duration, SystemTime};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn query_parameters() {
        let o = parse_log_query(
            "follow=true&tailLines=10&previous=1&timestamps=True&limitBytes=5&sinceSeconds=3",
        )
        .unwrap();
        assert_eq!(
            o,
            LogOptions {
                follow: true,
                tail_lines: Some(10),
                previous: true,
                timestamps: true,
                limit_bytes: Some(5),
            }
        );
        assert_eq!(parse_log_query("").unwrap(), LogOptions::default());
        assert_eq!(
            parse_log_query("tailLines=-1").unwrap_err(),
            r#"invalid value "-1" for query parameter "tailLines": must be a non-negative integer"#
        );
        assert!(parse_log_query("follow=yes")
            .unwrap_err()
            .contains("\"follow\""));
        assert!(parse_log_query("limitBytes=0")
            .unwrap_err()
            .contains("\"limitBytes\""));
        assert_eq!(percent_decode("a%2Fb+c%zz%"), "a/b c%zz%");
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        pki: std::path::PathBuf,
        addr: SocketAddr,
        cancel: CancellationToken,
        server: tokio::task::JoinHandle<io::Result<()>>,
    }

    /// A kubelet port over a runtime whose disk holds pod default/web (uid u1), container
    /// `app`, attempt 0 exited with two log lines.
    async fn start(healthy: bool) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        kl_pki::generate(&kl_pki::PkiSpec::new().node("worker1"), &pki).unwrap();
        let serving = kl_pki::paths::node_serving("worker1");
        let tls = kl_tls::ServerTls::load(
            &serving.cert_in(&pki),
            &serving.key_in(&pki),
            Some(&pki.join(kl_pki::paths::CA.cert)),
            false,
        )
        .unwrap()
        .rustls_config()
        .unwrap();
        let root = dir.path().join("root");
        let (runtime, _exits) =
            Runtime::new(RuntimeConfig::new(&root, "/nonexistent-shim")).unwrap();
        let pod = PodRef {
            namespace: "default".into(),
            name: "web".into(),
            uid: "u1".into(),
        };
        runtime.ensure_pod(&pod).unwrap();
        let logs = root.join("logs/default_web_u1/app");
        std::fs::create_dir_all(&logs).unwrap();
        std::fs::write(
            logs.join("0.log"),
            "2026-12-07T09:15:01.000000000Z stdout F hello\n\
             2026-12-07T09:15:02.000000000Z stderr F world\n",
        )
        .unwrap();
        let rdir = root.join("pods/u1/.runtime/app");
        std::fs::create_dir_all(&rdir).unwrap();
        write_json(
            &rdir.join("0.exit.json"),
            &ExitRecord {
                exit_code: 0,
                signal: None,
                reason: "Completed".into(),
                message: String::new(),
                started_at: None,
                finished_at: format_time(SystemTime::now()),
            },
        )
        .unwrap();
        let cfg = ServerConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            tls,
            runtime,
            metrics: Arc::new(|| "kubelet_running_pods 1\n".to_string()),
            health: Arc::new(move || (!healthy).then(|| "syncloop stalled".to_string())),
        };
        let listener = bind(&cfg).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        let server = tokio::spawn(serve_on(listener, cfg, cancel.clone()));
        Fixture {
            _dir: dir,
            pki,
            addr,
            cancel,
            server,
        }
    }

    impl Fixture {
        async fn stop(self) {
            self.cancel.cancel();
            tokio::time::timeout(Duration::from_secs(10), self.server)
                .await
                .expect("the server stops when cancelled")
                .unwrap()
                .unwrap();
        }

        /// GET `path` with the client certificate `files` (or none); status and body.
        async fn get(
            &self,
            path: &str,
            files: Option<kl_pki::paths::NamedCertFiles>,
        ) -> (u16, String) {
            let ca = self.pki.join(kl_pki::paths::CA.cert);
            let cert_paths = files.map(|f| (f.cert_in(&self.pki), f.key_in(&self.pki)));
            let tls = kl_tls::ClientTls::load(
                &ca,
                cert_paths.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
            )
            .unwrap()
            .rustls_config()
            .unwrap();
            let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let mut s = tokio_rustls::TlsConnector::from(tls)
                .connect(name, tcp)
                .await
                .unwrap();
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
            let mut raw = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
                .await
                .expect("response within 10s");
            parse_response(&raw)
        }
    }

    /// Status and (de-chunked) body of an HTTP/1.1 response.
    fn parse_response(raw: &[u8]) -> (u16, String) {
        let text = String::from_utf8_lossy(raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").expect("a whole response head");
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        if !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            return (status, body.to_string());
        }
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            out.push_str(&after[..n]);
            rest = &after[n + 2..];
        }
        (status, out)
    }

    fn files(f: kl_pki::paths::CertFiles) -> Option<kl_pki::paths::NamedCertFiles> {
        Some(f.into())
    }

    #[tokio::test]
    async fn container_logs_are_for_the_apiserver_and_masters_only() {
        let fx = start(true).await;
        let apiserver = || files(kl_pki::paths::APISERVER_KUBELET_CLIENT);
        let logs = "/containerLogs/default/web/app";
        assert_eq!(
            fx.get(logs, apiserver()).await,
            (200, "hello\nworld\n".into())
        );
        assert_eq!(
            fx.get(&format!("{logs}?tailLines=1&timestamps=true"), apiserver())
                .await,
            (200, "2026-12-07T09:15:02.000000000Z world\n".into())
        );
        assert_eq!(
            fx.get(&format!("{logs}?follow=true"), files(kl_pki::paths::ADMIN))
                .await,
            (200, "hello\nworld\n".into()),
            "system:masters may; follow ends as the container has exited"
        );
        assert_eq!(
            fx.get(logs, Some(kl_pki::paths::node_client("worker1"))).await,
            (
                403,
                "Forbidden (user=system:node:worker1, verb=get, resource=nodes, subresource=proxy)\n"
                    .into()
            )
        );
        assert_eq!(fx.get(logs, None).await.0, 401);
        assert_eq!(
            fx.get("/containerLogs/default/nope/app", apiserver()).await,
            (
                404,
                "pod \"nope\" does not exist in namespace \"default\" on this node\n".into()
            )
        );
        assert_eq!(
            fx.get("/containerLogs/default/web/db", apiserver()).await,
            (
                404,
                "container \"db\" is not valid for pod \"web\", choose one of: [app]\n".into()
            )
        );
        assert_eq!(
            fx.get(&format!("{logs}?previous=true"), apiserver()).await,
            (
                404,
                "previous terminated container \"app\" in pod \"web\" not found\n".into()
            )
        );
        let (status, body) = fx.get(&format!("{logs}?tailLines=x"), apiserver()).await;
        assert_eq!(status, 400);
        assert!(body.contains("\"tailLines\""), "{body}");
        assert_eq!(
            fx.get("/containerLogs/default/web", apiserver()).await.0,
            400
        );
        fx.stop().await;
    }

    /// Reads from `s` until `raw` contains `needle`.
    async fn read_until(
        s: &mut (impl tokio::io::AsyncRead + Unpin),
        raw: &mut Vec<u8>,
        needle: &str,
    ) {
        let mut buf = [0u8; 4096];
        tokio::time::timeout(Duration::from_secs(10), async {
            while !String::from_utf8_lossy(raw).contains(needle) {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "EOF before {needle:?}");
                raw.extend_from_slice(&buf[..n]);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{needle:?} not streamed within 10s"));
    }

    #[tokio::test]
    async fn follow_streams_each_line_as_it_is_written() {
        let fx = start(true).await;
        // A running attempt: its "container" and "shim" are this test process.
        let root = fx._dir.path().join("root");
        let logs = root.join("logs/default_web_u1/live");
        let rdir = root.join("pods/u1/.runtime/live");
        std::fs::create_dir_all(&logs).unwrap();
        std::fs::create_dir_all(&rdir).unwrap();
        let me = std::process::id();
        let start_time = proc_stat(me).unwrap().0;
        write_json(
            &rdir.join("0.json"),
            &AttemptState {
                pid: me,
                pid_start_time: start_time,
                shim_pid: me,
                shim_start_time: start_time,
                started_at: format_time(SystemTime::now()),
            },
        )
        .unwrap();
        let record = |text: &str| {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(logs.join("0.log"))
                .unwrap();
            writeln!(f, "{} stdout F {text}", format_time(SystemTime::now())).unwrap();
        };
        record("first");

        let ca = fx.pki.join(kl_pki::paths::CA.cert);
        let files = kl_pki::paths::APISERVER_KUBELET_CLIENT;
        let (cert, key) = (files.cert_in(&fx.pki), files.key_in(&fx.pki));
        let tls = kl_tls::ClientTls::load(&ca, Some((&cert, &key)))
            .unwrap()
            .rustls_config()
            .unwrap();
        let tcp = tokio::net::TcpStream::connect(fx.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut s = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .unwrap();
        s.write_all(
            b"GET /containerLogs/default/web/live?follow=true HTTP/1.1\r\nHost: localhost\r\n\r\n",
        )
        .await
        .unwrap();
        let mut raw = Vec::new();
        read_until(&mut s, &mut raw, "first\n").await;
        record("second");
        read_until(&mut s, &mut raw, "second\n").await;
        // The attempt ends: the stream ends with the last chunk.
        write_json(
            &rdir.join("0.exit.json"),
            &ExitRecord {
                exit_code: 0,
                signal: None,
                reason: "Completed".into(),
                message: String::new(),
                started_at: None,
                finished_at: format_time(SystemTime::now()),
            },
        )
        .unwrap();
        read_until(&mut s, &mut raw, "\r\n0\r\n\r\n").await;
        let (status, body) = parse_response(&raw);
        assert_eq!((status, body.as_str()), (200, "first\nsecond\n"));
        fx.stop().await;
    }

    #[tokio::test]
    async fn healthz_needs_no_certificate_and_metrics_does() {
        let fx = start(true).await;
        assert_eq!(fx.get("/healthz", None).await, (200, "ok".into()));
        assert_eq!(fx.get("/metrics", None).await.0, 401);
        assert_eq!(
            fx.get("/metrics", Some(kl_pki::paths::node_client("worker1")))
                .await,
            (200, "kubelet_running_pods 1\n".into())
        );
        assert_eq!(fx.get("/nope", None).await.0, 404);
        fx.stop().await;

        let sick = start(false).await;
        assert_eq!(
            sick.get("/healthz", None).await,
            (500, "[-]syncloop stalled\nhealthz check failed\n".into())
        );
        sick.stop().await;
    }
}

//! The apiserver's client of kubelets (kube-apiserver's `--kubelet-*` flags), for the
//! subresources a kubelet serves (pods/log):
//!
//! * [`location`]: which of a Node's `status.addresses` to dial
//!   (`--kubelet-preferred-address-types`, upstream's `GetPreferredNodeAddress`) and at which port
//!   (`status.daemonEndpoints.kubeletEndpoint.Port`, else 10250);
//! * [`KubeletClient::get`]: one HTTPS GET over mutual TLS: the apiserver presents
//!   `--kubelet-client-certificate`; the kubelet's certificate must chain to
//!   `--kubelet-certificate-authority` and be valid for the address dialled (upstream's check)
//!   **or for the node's name** (kl-pki issues `nodes/<node>` for the name and loopback only,
//!   and a node's addresses may change, e.g. a container's IP);
//! * [`Body`]: the answer's body as a stream of chunks as they arrive, never buffered whole. The
//!   connection belongs to the stream: dropping it (the client went away) closes the
//!   connection to the kubelet;
//! * [`status_error`] / the connect errors: what the kubelet said, or why it could not be
//!   reached, as an [`ApiError`] naming the node and the address.
//!
//! It never reads the store: callers hand it the Node.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures::Stream;
use hyper::body::{Body as _, Bytes, Incoming};
use kl_api::Node;
use tokio::{net::TcpStream, task::JoinHandle};
use tokio_rustls::rustls::{
    self,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    client::WebPkiServerVerifier,
    pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime},
    DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_rustls::TlsConnector;

use crate::error::ApiError;

/// Every address type a Node may report (upstream's `NodeAddressType`).
pub const ADDRESS_TYPES: [&str; 5] = [
    "Hostname",
    "InternalIP",
    "ExternalIP",
    "InternalDNS",
    "ExternalDNS",
];

/// `--kubelet-preferred-address-types`' default: kubeadm's.
pub const DEFAULT_ADDRESS_TYPES: [&str; 3] = ["InternalIP", "ExternalIP", "Hostname"];

/// The kubelet's port when its Node reports none (upstream's `--kubelet-port` default).
pub const DEFAULT_KUBELET_PORT: u16 = 10250;

/// The label whose value stands in for a missing `Hostname` address, as upstream.
const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// The most of a kubelet's error answer kept for the message.
const MAX_ERROR_BODY: usize = 16 * 1024;

/// Where a node's kubelet is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The node's name: what the kubelet's certificate must be valid for.
    pub node: String,
    /// The address picked from the Node (an IP or a DNS name).
    pub host: String,
    pub port: u16,
}

impl Location {
    /// `host:port`, an IPv6 address in brackets.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Where `node`'s kubelet listens: the first address whose type comes first in `preferred`
/// (a missing `Hostname` falls back to the `kubernetes.io/hostname` label, as upstream), and
/// the port the kubelet reported.
pub fn location(node: &Node, preferred: &[String]) -> Result<Location, ApiError> {
    let name = node
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    let status = node.status.clone().unwrap_or_default();
    let port = status
        .daemon_endpoints
        .as_ref()
        .and_then(|d| d.kubelet_endpoint.as_ref())
        .map(|e| e.port)
        .filter(|p| *p > 0)
        .map_or(Ok(DEFAULT_KUBELET_PORT), |p| {
            u16::try_from(p).map_err(|_| {
                unavailable(format!(
                    "node {name:?} reports kubelet port {p} (status.daemonEndpoints.kubeletEndpoint.Port), which is not a port"
                ))
            })
        })?;
    for t in preferred {
        if let Some(a) = status
            .addresses
            .iter()
            .find(|a| &a.r#type == t && !a.address.is_empty())
        {
            return Ok(Location {
                node: name,
                host: a.address.clone(),
                port,
            });
        }
        if t == "Hostname" {
            if let Some(h) = node
                .metadata
                .as_ref()
                .and_then(|m| m.labels.get(HOSTNAME_LABEL))
                .filter(|h| !h.is_empty())
            {
                return Ok(Location {
                    node: name,
                    host: h.clone(),
                    port,
                });
            }
        }
    }
    let known: Vec<String> = status
        .addresses
        .iter()
        .map(|a| format!("{} {}", a.r#type, a.address))
        .collect();
    Err(unavailable(format!(
        "no preferred addresses found for node {name:?} (--kubelet-preferred-address-types={}); known addresses: [{}]",
        preferred.join(","),
        known.join(", ")
    )))
}

fn unavailable(message: String) -> ApiError {
    ApiError::Kubelet {
        status: 503,
        message,
    }
}

/// A kubelet's error answer as the apiserver's: its status kept (404 NotFound, 400
/// BadRequest, ...), its text as the message. 401/403 mean the kubelet refused the
/// apiserver's own identity: the message says which flag to look at.
pub fn status_error(loc: &Location, status: u16, body: &str) -> ApiError {
    let text = body.trim();
    let text = if text.is_empty() {
        format!("the kubelet answered {status}")
    } else {
        text.to_string()
    };
    match status {
        400 | 404 => ApiError::Kubelet {
            status,
            message: text,
        },
        401 | 403 => ApiError::Kubelet {
            status: 403,
            message: format!(
                "the kubelet of node {:?} refused the apiserver ({status}: {text}); check --kubelet-client-certificate / --kubelet-client-key",
                loc.node
            ),
        },
        _ => ApiError::Kubelet {
            status: 500,
            message: format!(
                "the kubelet of node {:?} at {} answered {status}: {text}",
                loc.node,
                loc.authority()
            ),
        },
    }
}

/// Keeps the task that drives one connection to a kubelet, and closes the connection when
/// dropped.
struct ConnectionTask(JoinHandle<()>);

impl Drop for ConnectionTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The body of a kubelet's 200 answer: chunks as they arrive. Ends when the kubelet ends it;
/// a broken connection is one last error item.
pub struct Body {
    body: Incoming,
    location: Location,
    done: bool,
    /// Owned here so that dropping the stream closes the connection.
    _connection: ConnectionTask,
}

impl Stream for Body {
    type Item = Result<Bytes, ApiError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    self.done = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if data.is_empty() => continue,
                    Ok(data) => return Poll::Ready(Some(Ok(data))),
                    // Trailers: nothing to relay.
                    Err(_) => continue,
                },
                Poll::Ready(Some(Err(e))) => {
                    self.done = true;
                    let loc = &self.location;
                    return Poll::Ready(Some(Err(unavailable(format!(
                        "the connection to the kubelet of node {:?} at {} broke: {e}",
                        loc.node,
                        loc.authority()
                    )))));
                }
            }
        }
    }
}

/// Accepts a kubelet's certificate when it is valid for the address dialled (upstream's
/// check) or for the node's name. Either way it must chain to the kubelet CA.
#[derive(Debug)]
struct NodeVerifier {
    inner: Arc<WebPkiServerVerifier>,
    node: Option<ServerName<'static>>,
}

impl ServerCertVerifier for NodeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let first = match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        match &self.node {
            Some(node) if node != server_name => self
                .inner
                .verify_server_cert(end_entity, intermediates, node, ocsp_response, now)
                .map_err(|_| first),
            _ => Err(first),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Dials kubelets. Cheap to clone.
#[derive(Clone)]
pub struct KubeletClient {
    /// The apiserver's client side (its identity); the verifier is set per node.
    base: Arc<rustls::ClientConfig>,
    /// Chains to `--kubelet-certificate-authority`, checks validity and names.
    verifier: Arc<WebPkiServerVerifier>,
    /// `--kubelet-preferred-address-types`.
    pub preferred_address_types: Vec<String>,
    /// `--kubelet-timeout`: bound on TCP + TLS + the answer's head.
    timeout: Duration,
}

impl KubeletClient {
    /// `tls` holds the kubelet CA (`ca_pem`, its PEM) and the identity presented to kubelets.
    pub fn new(
        tls: &kl_tls::ClientTls,
        ca_pem: &[u8],
        preferred_address_types: Vec<String>,
        timeout: Duration,
    ) -> Result<KubeletClient, kl_tls::TlsError> {
        let bad = |e: String| kl_tls::TlsError::Config(format!("kubelet CA: {e}"));
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_pem) {
            roots
                .add(c.map_err(|e| bad(e.to_string()))?)
                .map_err(|e| bad(e.to_string()))?;
        }
        let verifier = WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .map_err(|e| bad(e.to_string()))?;
        Ok(KubeletClient {
            base: tls.rustls_config()?,
            verifier,
            preferred_address_types,
            timeout,
        })
    }

    /// The TLS connector for one kubelet: names it may be valid for are its address (the
    /// server name given at connect) and `node`.
    fn connector(&self, node: &str) -> TlsConnector {
        let mut config = (*self.base).clone();
        config
            .dangerous()
            .set_certificate_verifier(Arc::new(NodeVerifier {
                inner: self.verifier.clone(),
                node: ServerName::try_from(node.to_string()).ok(),
            }));
        TlsConnector::from(Arc::new(config))
    }

    /// Where `node`'s kubelet is reached, by this client's address preference.
    pub fn location(&self, node: &Node) -> Result<Location, ApiError> {
        location(node, &self.preferred_address_types)
    }

    /// `GET https://<loc><path_and_query>`: the body of a 200 answer as a stream, any other
    /// answer or failure as an error.
    pub async fn get(&self, loc: &Location, path_and_query: &str) -> Result<Body, ApiError> {
        let connecting = self.connect_and_send(loc, path_and_query);
        let (response, connection) = tokio::time::timeout(self.timeout, connecting)
            .await
            .map_err(|_| {
                unavailable(format!(
                    "unable to reach the kubelet of node {:?} at {}: no answer within {:?} (--kubelet-timeout)",
                    loc.node,
                    loc.authority(),
                    self.timeout
                ))
            })??;
        let status = response.status().as_u16();
        let mut body = Body {
            body: response.into_body(),
            location: loc.clone(),
            done: false,
            _connection: connection,
        };
        if status == 200 {
            return Ok(body);
        }
        let text = tokio::time::timeout(self.timeout, read_some(&mut body))
            .await
            .unwrap_or_default();
        Err(status_error(loc, status, &text))
    }

    async fn connect_and_send(
        &self,
        loc: &Location,
        path_and_query: &str,
    ) -> Result<(http::Response<Incoming>, ConnectionTask), ApiError> {
        let unreachable = |what: &str, e: &dyn std::fmt::Display| {
            unavailable(format!(
                "unable to reach the kubelet of node {:?} at {}: {what}: {e}",
                loc.node,
                loc.authority()
            ))
        };
        let tcp = TcpStream::connect((loc.host.as_str(), loc.port))
            .await
            .map_err(|e| unreachable("connecting", &e))?;
        let _ = tcp.set_nodelay(true);
        let server_name = ServerName::try_from(loc.host.clone())
            .or_else(|_| ServerName::try_from(loc.node.clone()))
            .map_err(|e| unreachable("TLS", &e))?;
        let tls = self
            .connector(&loc.node)
            .connect(server_name, tcp)
            .await
            .map_err(|e| {
                unreachable(
                    "TLS handshake (the kubelet's certificate must be issued by --kubelet-certificate-authority for the node's name or address)",
                    &e,
                )
            })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| unreachable("HTTP", &e))?;
        let connection = ConnectionTask(tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "kubelet connection ended");
            }
        }));
        let request = http::Request::get(path_and_query)
            .header(http::header::HOST, loc.authority())
            .header(
                http::header::USER_AGENT,
                concat!("kube-lite-apiserver/", env!("CARGO_PKG_VERSION")),
            )
            .body(axum::body::Body::empty())
            .map_err(|e| unreachable("building the request", &e))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| unreachable("sending the request", &e))?;
        Ok((response, connection))
    }
}

/// Up to [`MAX_ERROR_BODY`] bytes of an error answer, as text.
async fn read_some(body: &mut Body) -> String {
    use futures::StreamExt;
    let mut buf = Vec::new();
    while buf.len() < MAX_ERROR_BODY {
        match body.next().await {
            Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
            _ => break,
        }
    }
    buf.truncate(MAX_ERROR_BODY);
    String::from_utf8_lossy(&buf).into_owned()
}

/// Percent-encodes one path segment (names are DNS labels, but a request must never be able
/// to change the kubelet path it asks for).
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Builds a [`KubeletClient`] for the apiserver's configuration.
pub fn from_config(config: &crate::Config) -> anyhow::Result<Arc<KubeletClient>> {
    use anyhow::Context;
    let ca = config.kubelet_ca().context(
        "--kubelet-certificate-authority (or --client-ca-file) is needed to verify kubelets",
    )?;
    let identity = match (
        &config.kubelet_client_certificate,
        &config.kubelet_client_key,
    ) {
        (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
        _ => None,
    };
    let flags =
        "--kubelet-certificate-authority / --kubelet-client-certificate / --kubelet-client-key";
    let tls = kl_tls::ClientTls::load(ca, identity).context(flags)?;
    let ca_pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
    Ok(Arc::new(
        KubeletClient::new(
            &tls,
            &ca_pem,
            config.kubelet_preferred_address_types.clone(),
            config.kubelet_timeout,
        )
        .context(flags)?,
    ))
}

#[cfg(test)]
mod tests {
    use kl_api::{DaemonEndpoint, NodeAddress, NodeDaemonEndpoints, NodeStatus, ObjectMeta};

    use super::*;

    fn node(addresses: &[(&str, &str)], port: Option<i32>) -> Node {
        Node {
            metadata: Some(ObjectMeta {
                name: "worker1".into(),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: addresses
                    .iter()
                    .map(|(t, a)| NodeAddress {
                        r#type: t.to_string(),
                        address: a.to_string(),
                    })
                    .collect(),
                daemon_endpoints: port.map(|p| NodeDaemonEndpoints {
                    kubelet_endpoint: Some(DaemonEndpoint { port: p }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn prefs(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_first_preferred_address_type_present_wins() {
        let defaults = prefs(&DEFAULT_ADDRESS_TYPES);
        let n = node(
            &[
                ("Hostname", "worker1"),
                ("ExternalIP", "203.0.113.7"),
                ("InternalIP", "10.0.0.7"),
            ],
            Some(20250),
        );
        assert_eq!(
            location(&n, &defaults).unwrap(),
            Location {
                node: "worker1".into(),
                host: "10.0.0.7".into(),
                port: 20250
            }
        );
        let l = location(&n, &prefs(&["Hostname", "InternalIP"])).unwrap();
        assert_eq!((l.host.as_str(), l.port), ("worker1", 20250));
        let n = node(
            &[("Hostname", "worker1"), ("ExternalIP", "203.0.113.7")],
            None,
        );
        let l = location(&n, &defaults).unwrap();
        assert_eq!(
            (l.host.as_str(), l.port),
            ("203.0.113.7", DEFAULT_KUBELET_PORT)
        );
        assert_eq!(l.authority(), "203.0.113.7:10250");
    }

    #[test]
    fn hostname_falls_back_to_the_label_and_no_match_names_what_is_known() {
        let mut n = node(&[("InternalDNS", "w1.internal")], Some(0));
        let e = location(&n, &prefs(&DEFAULT_ADDRESS_TYPES)).unwrap_err();
        assert_eq!(e.reason(), "ServiceUnavailable");
        assert_eq!(
            e.to_string(),
            "no preferred addresses found for node \"worker1\" (--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname); known addresses: [InternalDNS w1.internal]"
        );
        let s = e.into_status();
        assert_eq!(s.code(), tonic::Code::Unavailable);
        // Not the apiserver's own unavailability: no hint that retrying soon helps.
        assert!(s.metadata().get("retry-after").is_none());
        n.metadata
            .as_mut()
            .unwrap()
            .labels
            .insert(HOSTNAME_LABEL.into(), "worker1.lan".into());
        let l = location(&n, &prefs(&DEFAULT_ADDRESS_TYPES)).unwrap();
        assert_eq!(l.host, "worker1.lan");
        let v6 = node(&[("InternalIP", "fd00::7")], Some(10250));
        assert_eq!(
            location(&v6, &prefs(&["InternalIP"])).unwrap().authority(),
            "[fd00::7]:10250"
        );
        let bad = node(&[("InternalIP", "10.0.0.7")], Some(70000));
        assert!(location(&bad, &prefs(&["InternalIP"]))
            .unwrap_err()
            .to_string()
            .contains("kubelet port 70000"));
    }

    #[test]
    fn kubelet_answers_keep_their_meaning() {
        let loc = Location {
            node: "worker1".into(),
            host: "127.0.0.1".into(),
            port: 10250,
        };
        let s =
            status_error(&loc, 404, "pod \"default/web\" not found on this node\n").into_status();
        assert_eq!(
            (s.code(), s.message()),
            (
                tonic::Code::NotFound,
                "pod \"default/web\" not found on this node"
            )
        );
        assert_eq!(
            s.metadata().get("kl-reason").unwrap().to_str().unwrap(),
            "NotFound"
        );
        let e = status_error(
            &loc,
            400,
            "container \"web\" in pod \"web\" is waiting to start: ContainerCreating",
        );
        assert_eq!(e.reason(), "BadRequest");
        assert_eq!(e.http_code(), 400);
        assert_eq!(e.into_status().code(), tonic::Code::InvalidArgument);
        let e = status_error(&loc, 401, "");
        assert_eq!(e.reason(), "Forbidden");
        assert!(
            e.to_string().contains("--kubelet-client-certificate"),
            "{e}"
        );
        assert!(e.to_string().contains("the kubelet answered 401"), "{e}");
        let e = status_error(&loc, 502, "boom");
        assert_eq!(e.reason(), "InternalError");
        assert_eq!(
            e.to_string(),
            "the kubelet of node \"worker1\" at 127.0.0.1:10250 answered 502: boom"
        );
    }

    #[test]
    fn path_segments_cannot_escape() {
        assert_eq!(path_segment("web-1.a_b"), "web-1.a_b");
        assert_eq!(path_segment("../x?y"), "..%2Fx%3Fy");
    }
}

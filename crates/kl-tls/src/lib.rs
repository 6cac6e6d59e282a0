//! The one TLS helper of kube-lite. Every server and every client in the project gets its TLS
//! configuration here, from PEM files laid out by `kubectl-lite certs generate`.
//!
//! The rule is etcd's: when certificate files are given, the connection is TLS and (when a CA
//! is given to a server with client auth on) *mutual* TLS; when none are given, it is plaintext.
//! There is no third mode and no "insecure skip verify".
//!
//! What lives here:
//! * [`ServerTls`] / [`ClientTls`]: the files a side needs, loaded and checked once at start so
//!   that a wrong path or a bad PEM is an error naming the flag, not a handshake failure later.
//! * [`ServerTls::rustls_config`]: a `rustls::ServerConfig` (ALPN `h2` and `http/1.1`).
//! * [`ClientTls::tonic_config`]: a tonic `ClientTlsConfig` (also etcd-client's `TlsOptions`).
//! * [`ClientTls::rustls_config`]: a `rustls::ClientConfig`, for plain HTTPS clients.
//! * [`incoming`] (module `conn`): turns a `TcpListener` into a stream of TLS connections for
//!   `tonic::transport::Server::serve_with_incoming`, under a connection cap and handshake and
//!   first-bytes timeouts ([`ConnLimits`]); slow or failed handshakes never stall the accept loop.
//! * [`peer_identity`]: the CN and O of the verified client certificate of a tonic request.
//! * [`http_get`] (module [`http`]): the one HTTP(S) GET, for health checks and tests.
//!
//! It must never decide *who may do what*: that is authorization, elsewhere.
#![forbid(unsafe_code)]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

mod conn;
pub mod http;

pub use conn::{
    allowing_cn, incoming, incoming_plain, incoming_with, Conn, ConnLimits, TlsConn,
    HANDSHAKE_TIMEOUT, PREFACE_BYTES,
};

pub use http::{http_get, http_get_via, HttpGetError, HttpResponse};

use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    server::WebPkiClientVerifier,
    RootCertStore,
};

/// A TLS set-up error; each names the file (and through it, the flag) that was wrong.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {what} from {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no {what} found in the PEM file (is it the right file?)")]
    Empty { what: &'static str, path: PathBuf },
    #[error("{path}: invalid PEM: {detail}")]
    Pem { path: PathBuf, detail: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        what: "certificates",
        path: path.to_path_buf(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what: "certificate",
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        what: "private key",
        path: path.to_path_buf(),
        source,
    })?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Pem {
        path: path.to_path_buf(),
        detail: format!("no private key: {e}"),
    })
}

fn read_pem(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server's certificate, key and (for mutual TLS) the CA its clients' certificates must chain to.
#[derive(Clone, Debug)]
pub struct ServerTls {
    certs: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
    client_ca: Option<Vec<CertificateDer<'static>>>,
    /// Whether a client certificate is required (etcd's `--client-cert-auth`). When false but a
    /// CA is given, a certificate is verified if presented but not demanded.
    require_client_cert: bool,
}

impl ServerTls {
    /// Loads a server's files. `client_ca` is the trusted CA for client certificates;
    /// `require_client_cert` refuses clients that present none.
    pub fn load(
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
        require_client_cert: bool,
    ) -> Result<Self, TlsError> {
        let certs = read_certs(cert)?;
        let key = read_key(key)?;
        let client_ca = client_ca.map(read_certs).transpose()?;
        if require_client_cert && client_ca.is_none() {
            return Err(TlsError::Config(
                "client certificate auth is on but no trusted CA file was given".into(),
            ));
        }
        warn_if_expiring(&cert.display().to_string(), &certs);
        let tls = ServerTls {
            certs,
            key: Arc::new(key),
            client_ca,
            require_client_cert,
        };
        // Build once now so that a key that does not match its certificate fails at start.
        tls.rustls_config()?;
        Ok(tls)
    }

    /// A rustls server config with ALPN `h2` then `http/1.1`.
    pub fn rustls_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for c in ca {
                    roots
                        .add(c.clone())
                        .map_err(|e| TlsError::Config(format!("trusted CA: {e}")))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
                let verifier = if self.require_client_cert {
                    verifier.build()
                } else {
                    verifier.allow_unauthenticated().build()
                }
                .map_err(|e| TlsError::Config(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(self.certs.clone(), self.key.clone_key())
            .map_err(|e| TlsError::Config(format!("certificate and key do not match: {e}")))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The TLS config of a component's secure port (kube-scheduler's 10259, the kubelet's 10250),
/// as upstream serves it: the given certificate, or a self-signed one for `localhost` and
/// `127.0.0.1` when none is given; client certificates from `client_ca` are verified when
/// presented but not demanded (each route decides what it needs). The flag names in the errors
/// are upstream's.
pub fn secure_port_config(
    cert: Option<&Path>,
    key: Option<&Path>,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    match (cert, key) {
        (Some(cert), Some(key)) => ServerTls::load(cert, key, client_ca, false)?.rustls_config(),
        (None, None) => {
            if client_ca.is_some() {
                return Err(TlsError::Config(
                    "--client-ca-file needs --tls-cert-file and --tls-private-key-file".into(),
                ));
            }
            let ck = rcgen::generate_simple_self_signed(vec![
                "localhost".to_string(),
                "127.0.0.1".to_string(),
            ])
            .map_err(|e| TlsError::Config(format!("self-signed certificate: {e}")))?;
            let key = PrivateKeyDer::try_from(ck.signing_key.serialize_der())
                .map_err(|e| TlsError::Config(format!("self-signed key: {e}")))?;
            let mut c = rustls::ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| TlsError::Config(e.to_string()))?
                .with_no_client_auth()
                .with_single_cert(vec![ck.cert.der().clone()], key)
                .map_err(|e| TlsError::Config(e.to_string()))?;
            c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            Ok(Arc::new(c))
        }
        _ => Err(TlsError::Config(
            "--tls-cert-file and --tls-private-key-file go together".into(),
        )),
    }
}

/// What a client presents and trusts: the CA that signed the server, and its own identity.
#[derive(Clone, Debug)]
pub struct ClientTls {
    ca_pem: Vec<u8>,
    identity_pem: Option<(Vec<u8>, Vec<u8>)>,
}

impl ClientTls {
    /// Loads a client's files: the CA that signs the servers, and optionally a certificate and
    /// key to present (mutual TLS).
    pub fn load(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<Self, TlsError> {
        read_certs(ca)?;
        let ca_pem = read_pem(ca, "CA certificate")?;
        let identity_pem = match identity {
            Some((cert, key)) => {
                warn_if_expiring(&cert.display().to_string(), &read_certs(cert)?);
                read_key(key)?;
                Some((
                    read_pem(cert, "certificate")?,
                    read_pem(key, "private key")?,
                ))
            }
            None => None,
        };
        Ok(ClientTls {
            ca_pem,
            identity_pem,
        })
    }

    /// A client from PEM bytes already in memory (a kubeconfig's `*-data` fields). `what` names
    /// their source in errors, e.g. `kubeconfig user "admin"`.
    pub fn from_pem(
        ca_pem: Vec<u8>,
        identity_pem: Option<(Vec<u8>, Vec<u8>)>,
        what: &str,
    ) -> Result<Self, TlsError> {
        let bad = |detail: String| TlsError::Config(format!("{what}: {detail}"));
        let cas = CertificateDer::pem_slice_iter(&ca_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("certificate authority: {e}")))?;
        if cas.is_empty() {
            return Err(bad("no certificate authority in the PEM data".into()));
        }
        if let Some((cert, key)) = &identity_pem {
            let certs = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(format!("client certificate: {e}")))?;
            if certs.is_empty() {
                return Err(bad("no client certificate in the PEM data".into()));
            }
            warn_if_expiring(what, &certs);
            PrivateKeyDer::from_pem_slice(key).map_err(|e| bad(format!("client key: {e}")))?;
        }
        Ok(ClientTls {
            ca_pem,
            identity_pem,
        })
    }

    /// A tonic client TLS config. It is also `etcd_client::TlsOptions`.
    pub fn tonic_config(&self) -> tonic::transport::ClientTlsConfig {
        let mut cfg = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca_pem));
        if let Some((cert, key)) = &self.identity_pem {
            cfg = cfg.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        cfg
    }

    /// A rustls client config (for HTTPS health checks and the like).
    pub fn rustls_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&self.ca_pem) {
            let c = c.map_err(|e| TlsError::Config(format!("CA: {e}")))?;
            roots
                .add(c)
                .map_err(|e| TlsError::Config(format!("CA: {e}")))?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots);
        let config = match &self.identity_pem {
            Some((cert, key)) => {
                let certs = CertificateDer::pem_slice_iter(cert)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| TlsError::Config(format!("client certificate: {e}")))?;
                let key = PrivateKeyDer::from_pem_slice(key)
                    .map_err(|e| TlsError::Config(format!("client key: {e}")))?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| TlsError::Config(e.to_string()))?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }
}

/// The identity in a verified client certificate: CN is the user, each O a group (as in
/// Kubernetes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    pub common_name: String,
    pub organizations: Vec<String>,
}

/// Parses CN and O from a DER certificate.
pub fn identity_of(cert: &[u8]) -> Option<PeerIdentity> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    let subject = parsed.subject();
    let common_name = subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .unwrap_or_default()
        .to_string();
    let organizations = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok())
        .map(str::to_string)
        .collect();
    Some(PeerIdentity {
        common_name,
        organizations,
    })
}

/// The verified client identity of a tonic request served over [`incoming`], if any.
pub fn peer_identity<T>(request: &tonic::Request<T>) -> Option<PeerIdentity> {
    let certs = request.peer_certs()?;
    identity_of(certs.first()?.as_ref())
}

/// Seconds since the Unix epoch at which a certificate expires.
fn not_after_unix(cert: &CertificateDer<'_>) -> Option<i64> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(parsed.validity().not_after.timestamp())
}

/// A certificate with fewer days than this left is warned about when loaded.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// The warning for a certificate (`what`: its file, or the kubeconfig user) that has fewer
/// than [`EXPIRY_WARNING_DAYS`] left at `now` (Unix seconds), or None.
pub fn expiry_warning(what: &str, cert: &CertificateDer<'_>, now: i64) -> Option<String> {
    let not_after = not_after_unix(cert)?;
    let days = (not_after - now).div_euclid(86400);
    if days >= EXPIRY_WARNING_DAYS {
        return None;
    }
    Some(if not_after <= now {
        format!("{what}: the certificate has expired: renew it with kubectl-lite certs generate (the CA is kept) and restart")
    } else {
        format!("{what}: the certificate expires in {days} days: renew it with kubectl-lite certs generate (the CA is kept); kubectl-lite certs check-expiration lists every certificate")
    })
}

/// Logs [`expiry_warning`] for the first certificate of `certs`, now. Every server and client
/// identity kl-tls loads goes through it, so every component warns at start.
fn warn_if_expiring(what: &str, certs: &[CertificateDer<'_>]) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if let Some(w) = certs.first().and_then(|c| expiry_warning(what, c, now)) {
        tracing::warn!("{w}");
    }
}

/// Parses `host:port` out of a URL such as `https://127.0.0.1:2379` and resolves it.
pub fn url_socket_addr(url: &str) -> std::io::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    let hostport = url.split("://").nth(1).unwrap_or(url).trim_end_matches('/');
    hostport.to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{url}: no address"),
        )
    })
}

/// Whether a URL asks for TLS (`https://`).
pub fn is_tls_url(url: &str) -> bool {
    url.starts_with("https://")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate valid until `y-m-d` 00:00 UTC.
    fn cert_until(y: i32, m: u8, d: u8) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::new(vec!["example".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(y, m, d);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn certificates_near_their_end_are_warned_about() {
        let now = rcgen::date_time_ymd(2030, 1, 1).unix_timestamp();
        assert_eq!(expiry_warning("a.crt", &cert_until(2030, 6, 1), now), None);
        assert_eq!(expiry_warning("a.crt", &cert_until(2030, 1, 31), now), None);
        let soon = expiry_warning("a.crt", &cert_until(2030, 1, 30), now).unwrap();
        assert!(
            soon.starts_with("a.crt: the certificate expires in 29 days"),
            "{soon}"
        );
        assert!(soon.contains("kubectl-lite certs generate"), "{soon}");
        let gone = expiry_warning("a.crt", &cert_until(2029, 12, 1), now).unwrap();
        assert!(gone.contains("has expired"), "{gone}");
    }
}

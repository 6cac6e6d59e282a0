//! The one HTTP(S) GET of kube-lite: a single HTTP/1.1 request with `Connection: close`, for
//! health checks (`<binary> healthcheck URL`) and tests that read `/readyz`, `/healthz` or
//! `/metrics`. `https://` verifies the server against a [`ClientTls`]'s CA (and presents its
//! identity, if it has one: mutual TLS); `http://` is plaintext. Nothing here skips
//! verification.
//!
//! It is deliberately small: no redirects, no keep-alive, no proxy. A chunked body is decoded;
//! the body is returned as (lossy) UTF-8 text.

use std::{sync::Arc, time::Duration};

use rustls::pki_types::ServerName;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::TlsConnector;

use crate::{ClientTls, TlsError};

/// What a GET answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code (`200`, `503`, ...).
    pub status: u16,
    /// The body, decoded as UTF-8 (invalid sequences replaced).
    pub body: String,
}

/// Why a GET got no HTTP answer; each message names the URL.
#[derive(Debug, thiserror::Error)]
pub enum HttpGetError {
    #[error("{url}: invalid URL: {reason}")]
    Url { url: String, reason: &'static str },
    #[error("{url}: https needs a CA to verify the server (e.g. --cacert)")]
    NoCa { url: String },
    #[error("{url}: {source}")]
    Tls {
        url: String,
        #[source]
        source: TlsError,
    },
    #[error("{url}: connecting to {addr}: {source}")]
    Connect {
        url: String,
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{url}: TLS handshake: {source}")]
    Handshake {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{url}: {source}")]
    Io {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{url}: no answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url}: not an HTTP answer: {detail}")]
    Malformed { url: String, detail: String },
}

/// The parts of an `http://` or `https://` URL a GET needs.
#[derive(Debug, PartialEq, Eq)]
struct Target<'a> {
    tls: bool,
    /// Host as written, without IPv6 brackets: the TLS server name and the connect host.
    host: &'a str,
    port: u16,
    /// `Host:` header value (host and port as written).
    authority: &'a str,
    /// Path and query, `/` when empty.
    path: &'a str,
}

fn parse_url(url: &str) -> Result<Target<'_>, HttpGetError> {
    let bad = |reason| HttpGetError::Url {
        url: url.to_string(),
        reason,
    };
    let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(bad("expected http:// or https://"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(bad("expected scheme://host[:port]/path"));
    }
    let default_port = if tls { 443 } else { 80 };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
        match after.strip_prefix(':') {
            Some(p) => (host, p.parse().map_err(|_| bad("bad port"))?),
            None if after.is_empty() => (host, default_port),
            None => return Err(bad("junk after ']'")),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| bad("bad port"))?),
            None => (authority, default_port),
        }
    };
    if host.is_empty() {
        return Err(bad("empty host"));
    }
    Ok(Target {
        tls,
        host,
        port,
        authority,
        path,
    })
}

/// `GET url`: connects to the URL's host and port (names resolved as usual), verifies an
/// `https://` server for the URL's host against `tls`'s CA, and returns the status and body.
/// The whole exchange is bounded by `timeout`.
pub async fn http_get(
    url: &str,
    tls: Option<&ClientTls>,
    timeout: Duration,
) -> Result<HttpResponse, HttpGetError> {
    http_get_via(None, url, tls, timeout).await
}

/// [`http_get`], but connecting to `connect_to` (`host:port`) instead of the URL's host, like
/// curl's `--connect-to`: the TLS server name and `Host:` header still come from the URL. Tests
/// use it to reach `127.0.0.1` while verifying a certificate issued for `localhost`.
pub async fn http_get_via(
    connect_to: Option<&str>,
    url: &str,
    tls: Option<&ClientTls>,
    timeout: Duration,
) -> Result<HttpResponse, HttpGetError> {
    match tokio::time::timeout(timeout, get(connect_to, url, tls)).await {
        Ok(result) => result,
        Err(_) => Err(HttpGetError::Timeout {
            url: url.to_string(),
            timeout,
        }),
    }
}

async fn get(
    connect_to: Option<&str>,
    url: &str,
    tls: Option<&ClientTls>,
) -> Result<HttpResponse, HttpGetError> {
    let target = parse_url(url)?;
    let connector = if target.tls {
        let tls = tls.ok_or_else(|| HttpGetError::NoCa {
            url: url.to_string(),
        })?;
        let mut cfg = (*tls.rustls_config().map_err(|source| HttpGetError::Tls {
            url: url.to_string(),
            source,
        })?)
        .clone();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Some(TlsConnector::from(Arc::new(cfg)))
    } else {
        None
    };
    let addr = match connect_to {
        Some(a) => a.to_string(),
        None if target.host.contains(':') => format!("[{}]:{}", target.host, target.port),
        None => format!("{}:{}", target.host, target.port),
    };
    let tcp = TcpStream::connect(addr.as_str())
        .await
        .map_err(|source| HttpGetError::Connect {
            url: url.to_string(),
            addr: addr.clone(),
            source,
        })?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: kube-lite\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        target.path, target.authority
    );
    let raw = match connector {
        Some(connector) => {
            let name =
                ServerName::try_from(target.host.to_string()).map_err(|_| HttpGetError::Url {
                    url: url.to_string(),
                    reason: "the host is not a valid TLS server name",
                })?;
            let stream =
                connector
                    .connect(name, tcp)
                    .await
                    .map_err(|source| HttpGetError::Handshake {
                        url: url.to_string(),
                        source,
                    })?;
            exchange(stream, &request, url).await?
        }
        None => exchange(tcp, &request, url).await?,
    };
    parse_response(&raw).map_err(|detail| HttpGetError::Malformed {
        url: url.to_string(),
        detail,
    })
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &str,
    url: &str,
) -> Result<Vec<u8>, HttpGetError> {
    let io = |source| HttpGetError::Io {
        url: url.to_string(),
        source,
    };
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    stream.flush().await.map_err(io)?;
    let mut out = Vec::new();
    // A server that closes without close_notify (common for `Connection: close`) is fine:
    // keep what was read; a truncated answer shows up as a parse error below.
    if let Err(e) = stream.read_to_end(&mut out).await {
        if out.is_empty() {
            return Err(io(e));
        }
    }
    Ok(out)
}

/// Status and body of a raw HTTP/1.x answer (the connection closed after it).
fn parse_response(raw: &[u8]) -> Result<HttpResponse, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            format!(
                "no end of headers in {:?}",
                String::from_utf8_lossy(&raw[..raw.len().min(200)])
            )
        })?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    let status = parts
        .next()
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|_| version.starts_with("HTTP/1."))
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let chunked = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.to_ascii_lowercase().contains("chunked")
        })
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok(HttpResponse {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunked body")?;
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn urls() {
        let t = parse_url("https://lb:6443/readyz?verbose").unwrap();
        assert_eq!(
            t,
            Target {
                tls: true,
                host: "lb",
                port: 6443,
                authority: "lb:6443",
                path: "/readyz?verbose"
            }
        );
        let t = parse_url("http://[::1]:2381").unwrap();
        assert_eq!((t.host, t.port, t.path), ("::1", 2381, "/"));
        assert_eq!(parse_url("http://example").unwrap().port, 80);
        assert!(parse_url("ftp://x/").is_err());
        assert!(parse_url("http://:80/").is_err());
        assert!(parse_url("http://x:port/").is_err());
    }

    #[test]
    fn responses() {
        let r =
            parse_response(b"HTTP/1.1 503 Service Unavailable\r\nA: b\r\n\r\nnot ready").unwrap();
        assert_eq!((r.status, r.body.as_str()), (503, "not ready"));
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n3;x=y\r\n!!!\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "ok!!!"));
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n").is_err());
    }

    /// One connection: reads the request head, answers `answer`, closes.
    async fn serve_once_plain(answer: &'static str) -> (u16, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let head = read_head(&mut s).await;
            s.write_all(answer.as_bytes()).await.unwrap();
            s.shutdown().await.unwrap();
            head
        });
        (port, task)
    }

    async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> String {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            if s.read(&mut byte).await.unwrap() == 0 {
                break;
            }
            buf.push(byte[0]);
        }
        String::from_utf8(buf).unwrap()
    }

    #[tokio::test]
    async fn plain_get() {
        let (port, server) =
            serve_once_plain("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
        let url = format!("http://127.0.0.1:{port}/healthz");
        let r = http_get(&url, None, Duration::from_secs(5)).await.unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
        let head = server.await.unwrap();
        assert!(head.starts_with("GET /healthz HTTP/1.1\r\n"), "{head}");
        assert!(
            head.contains(&format!("Host: 127.0.0.1:{port}\r\n")),
            "{head}"
        );
    }

    #[tokio::test]
    async fn errors_name_the_url() {
        // Nothing listens on a port just freed.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = format!("http://127.0.0.1:{port}/x");
        let e = http_get(&url, None, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(e, HttpGetError::Connect { .. }), "{e}");
        assert!(e.to_string().contains(&url), "{e}");
        let e = http_get("https://127.0.0.1:1/", None, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(e, HttpGetError::NoCa { .. }), "{e}");
        // A server that accepts and never answers.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let e = http_get(&url, None, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(e, HttpGetError::Timeout { .. }), "{e}");
    }

    #[tokio::test]
    async fn mutual_tls_get() {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path();
        kl_pki::generate(&kl_pki::PkiSpec::new().node("worker1"), pki).unwrap();
        let serving = kl_pki::paths::node_serving("worker1");
        // Client certificates required: only a GET presenting one gets an answer.
        let server = crate::ServerTls::load(
            &serving.cert_in(pki),
            &serving.key_in(pki),
            Some(&kl_pki::paths::CA.cert_in(pki)),
            true,
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(server.rustls_config().unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut s) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let head = read_head(&mut s).await;
                    let user = s
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| crate::identity_of(c[0].as_ref()))
                        .map(|id| id.common_name)
                        .unwrap_or_default();
                    let body = format!("{} as {user}", head.lines().next().unwrap_or_default());
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(answer.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        let ca = kl_pki::paths::CA.cert_in(pki);
        let admin = kl_pki::paths::ADMIN;
        let (cert, key) = (admin.cert_in(pki), admin.key_in(pki));
        let tls = ClientTls::load(&ca, Some((&cert, &key))).unwrap();
        let url = format!("https://localhost:{port}/healthz");
        let r = http_get_via(
            Some(&format!("127.0.0.1:{port}")),
            &url,
            Some(&tls),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, "GET /healthz HTTP/1.1 as kubernetes-admin");
        // By IP: the node certificate carries 127.0.0.1 too.
        let url = format!("https://127.0.0.1:{port}/x");
        let r = http_get(&url, Some(&tls), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        // Without a client certificate the server refuses the handshake.
        let anonymous = ClientTls::load(&ca, None).unwrap();
        assert!(http_get(&url, Some(&anonymous), Duration::from_secs(5))
            .await
            .is_err());
        // A CA that did not sign the server: refused.
        let other = tempfile::tempdir().unwrap();
        kl_pki::generate(&kl_pki::PkiSpec::new(), other.path()).unwrap();
        let stranger = ClientTls::load(&kl_pki::paths::CA.cert_in(other.path()), None).unwrap();
        let e = http_get(&url, Some(&stranger), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(e, HttpGetError::Handshake { .. }), "{e}");
    }
}

//! Every server's accept loop: TCP connections in, finished (TLS) connections out, with the
//! limits that keep a hostile or broken client from pinning a server.
//!
//! * **Connection cap** ([`ConnLimits::max_connections`]): a connection beyond the cap is closed
//!   at once, before its TLS handshake, as HAProxy's `maxconn` and the lb's `--max-connections`
//!   do. The slot is held from accept until the connection is dropped (handshakes included), so
//!   a flood of half-open clients fills the cap, never the file-descriptor table that the
//!   server's own outbound connections (Raft peers, etcd) need.
//! * **Handshake timeout** ([`HANDSHAKE_TIMEOUT`]): a client that does not finish TLS in time is
//!   dropped.
//! * **First-bytes timeout** ([`ConnLimits::first_bytes_timeout`]): after the handshake, a
//!   client must send its first [`PREFACE_BYTES`] bytes (the HTTP/2 client preface is exactly
//!   that long; an HTTP/1 request line is longer) in time, or its connection fails with
//!   `TimedOut` and the server drops it. A slow-loris client that connects, or even finishes
//!   TLS, and then says nothing holds its slot for seconds, not forever. After the preface the
//!   HTTP layer takes over: HTTP/1 headers have hyper's header-read timeout, HTTP/2 streams are
//!   capped by `SETTINGS_MAX_CONCURRENT_STREAMS` (each server's flag), and keepalive pings drop
//!   a peer that stopped answering.
//!
//! Handshakes run off the accept loop, so a slow one never delays the next client.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::Stream;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Sleep,
};
use tokio_rustls::{server::TlsStream, TlsAcceptor};

use crate::identity_of;

/// How long a client may take to finish its TLS handshake before the connection is dropped, so
/// a slow-loris client cannot pin a connection slot.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many bytes a client must send within [`ConnLimits::first_bytes_timeout`]: the length of
/// the HTTP/2 client preface (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`).
pub const PREFACE_BYTES: usize = 24;

/// The limits of one listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnLimits {
    /// Open connections (handshakes in progress included) beyond this are closed at once.
    pub max_connections: usize,
    /// How long after its TLS handshake (or, in plaintext, its accept) a client has to send its
    /// first [`PREFACE_BYTES`] bytes.
    pub first_bytes_timeout: Duration,
}

impl ConnLimits {
    /// The default cap of a component's own port (the kubelet's 10250, the controller-manager's
    /// 10257, the scheduler's 10259, etcd-lite's metrics): a handful of scrapers, probes and
    /// the apiserver's log proxy use them.
    pub const COMPONENT_MAX_CONNECTIONS: usize = 1_000;

    /// The default cap of a store or API port, where every client of the cluster connects
    /// (the lb's `--max-connections` default).
    pub const SERVER_MAX_CONNECTIONS: usize = 10_000;

    /// The default first-bytes timeout: as long as the TLS handshake may take.
    pub const FIRST_BYTES_TIMEOUT: Duration = HANDSHAKE_TIMEOUT;

    /// The limits of a component's own port.
    pub fn component() -> Self {
        Self::with_max_connections(Self::COMPONENT_MAX_CONNECTIONS)
    }

    /// A cap of `max_connections` with the default first-bytes timeout.
    pub fn with_max_connections(max_connections: usize) -> Self {
        Self {
            max_connections,
            first_bytes_timeout: Self::FIRST_BYTES_TIMEOUT,
        }
    }
}

/// One accepted connection: the stream, its slot under the cap, and the first-bytes deadline
/// until the client has sent [`PREFACE_BYTES`] bytes. It reads and writes as the stream does
/// (tonic's `Connected` included, so the client certificate reaches requests unchanged).
pub struct Conn<S> {
    inner: S,
    _slot: OwnedSemaphorePermit,
    preface: Option<Preface>,
}

struct Preface {
    got: usize,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<S> Conn<S> {
    fn new(inner: S, slot: OwnedSemaphorePermit, first_bytes_timeout: Duration) -> Self {
        Self {
            inner,
            _slot: slot,
            preface: Some(Preface {
                got: 0,
                timeout: first_bytes_timeout,
                deadline: Box::pin(tokio::time::sleep(first_bytes_timeout)),
            }),
        }
    }

    /// The stream under the limits (e.g. a `TlsStream`, for its peer certificates).
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Conn<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if let Some(p) = &mut this.preface {
                    p.got += buf.filled().len() - before;
                    if p.got >= PREFACE_BYTES {
                        this.preface = None;
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let Some(p) = this.preface.as_mut() else {
                    return Poll::Pending;
                };
                if p.deadline.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the client sent {} of the first {PREFACE_BYTES} bytes within {:?}",
                        p.got, p.timeout
                    ),
                )))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Conn<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for Conn<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// A TLS connection under the limits.
pub type TlsConn = Conn<TlsStream<TcpStream>>;

/// [`incoming_with`] under a server port's default limits
/// ([`ConnLimits::SERVER_MAX_CONNECTIONS`], [`ConnLimits::FIRST_BYTES_TIMEOUT`]).
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> impl Stream<Item = Result<TlsConn, io::Error>> + Send + 'static {
    incoming_with(
        listener,
        config,
        ConnLimits::with_max_connections(ConnLimits::SERVER_MAX_CONNECTIONS),
    )
}

/// Accepts TCP connections under `limits` and completes TLS handshakes concurrently, yielding
/// finished connections. A connection over the cap is closed at once; a handshake that fails or
/// takes longer than [`HANDSHAKE_TIMEOUT`] is dropped (logged at debug) without disturbing
/// other connections.
pub fn incoming_with(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    limits: ConnLimits,
) -> impl Stream<Item = Result<TlsConn, io::Error>> + Send + 'static {
    let acceptor = TlsAcceptor::from(config);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Refusals::new(limits.max_connections);
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let Some((tcp, peer)) = accept(&listener).await else {
                continue;
            };
            if tx.is_closed() {
                break;
            }
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                refusals.refused(peer);
                continue;
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let conn = Conn::new(stream, slot, limits.first_bytes_timeout);
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Plain TCP connections under `limits`, for servers started without certificates.
pub fn incoming_plain(
    listener: TcpListener,
    limits: ConnLimits,
) -> impl Stream<Item = Result<Conn<TcpStream>, io::Error>> + Send + 'static {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Refusals::new(limits.max_connections);
    futures::stream::unfold(listener, move |listener| {
        let (slots, refusals) = (slots.clone(), refusals.clone());
        async move {
            loop {
                let Some((tcp, peer)) = accept(&listener).await else {
                    continue;
                };
                match slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        let conn = Conn::new(tcp, slot, limits.first_bytes_timeout);
                        return Some((Ok(conn), listener));
                    }
                    Err(_) => refusals.refused(peer),
                }
            }
        }
    })
}

/// One accept, with Nagle off; `None` after a failed accept (EMFILE and friends), after a short
/// back-off rather than a spin.
async fn accept(listener: &TcpListener) -> Option<(TcpStream, std::net::SocketAddr)> {
    match listener.accept().await {
        Ok((tcp, peer)) => {
            let _ = tcp.set_nodelay(true);
            Some((tcp, peer))
        }
        Err(e) => {
            tracing::warn!(error = %e, "accept failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

/// Counts connections refused at the cap and logs them: the first at once, then at most one
/// line every ten seconds with the count since, so a flood cannot flood the log too.
#[derive(Clone)]
struct Refusals(Arc<RefusalsInner>);

struct RefusalsInner {
    max: usize,
    since_log: AtomicU64,
    last_log: std::sync::Mutex<Option<Instant>>,
}

impl Refusals {
    const LOG_EVERY: Duration = Duration::from_secs(10);

    fn new(max: usize) -> Self {
        Self(Arc::new(RefusalsInner {
            max,
            since_log: AtomicU64::new(0),
            last_log: std::sync::Mutex::new(None),
        }))
    }

    fn refused(&self, peer: std::net::SocketAddr) {
        let n = self.0.since_log.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.0.last_log.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < Self::LOG_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        self.0.since_log.store(0, Ordering::Relaxed);
        tracing::warn!(
            %peer,
            refused = n,
            max_connections = self.0.max,
            "connection closed: the server is at its connection limit (--max-connections)"
        );
    }
}

/// Keeps only the connections of [`incoming`] whose verified client certificate has CN
/// `allowed` (etcd's `--peer-cert-allowed-cn`); any other is closed at once and logged, as
/// etcd refuses it. `None` keeps every connection.
pub fn allowing_cn(
    incoming: impl Stream<Item = Result<TlsConn, io::Error>> + Send + 'static,
    allowed: Option<String>,
) -> impl Stream<Item = Result<TlsConn, io::Error>> + Send + 'static {
    use futures::StreamExt;
    incoming.filter(move |conn| {
        let keep = match (conn, &allowed) {
            (Ok(conn), Some(cn)) => {
                let (tcp, session) = conn.get_ref().get_ref();
                let who = session
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| identity_of(c.as_ref()));
                let ok = who.as_ref().is_some_and(|w| &w.common_name == cn);
                if !ok {
                    tracing::warn!(
                        peer = ?tcp.peer_addr().ok(),
                        common_name = who.as_ref().map_or("<none>", |w| w.common_name.as_str()),
                        allowed = %cn,
                        "rejected connection: CommonName authentication failed"
                    );
                }
                ok
            }
            _ => true,
        };
        std::future::ready(keep)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn listener() -> (TcpListener, std::net::SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        (l, a)
    }

    /// True when the server closed (EOF or reset) the client's connection within `within`.
    async fn closed_by_server(c: &mut TcpStream, within: Duration) -> bool {
        let mut b = [0u8; 16];
        matches!(
            tokio::time::timeout(within, c.read(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_closed_and_slots_come_back() {
        let (l, addr) = listener().await;
        let limits = ConnLimits {
            max_connections: 2,
            first_bytes_timeout: Duration::from_secs(60),
        };
        let mut incoming = Box::pin(incoming_plain(l, limits));
        let mut a = TcpStream::connect(addr).await.unwrap();
        let mut b = TcpStream::connect(addr).await.unwrap();
        let ca = incoming.next().await.unwrap().unwrap();
        let _cb = incoming.next().await.unwrap().unwrap();
        // The third is over the cap: closed at once, never yielded.
        let mut c = TcpStream::connect(addr).await.unwrap();
        let accept_next = tokio::spawn(async move {
            let conn = incoming.next().await.unwrap().unwrap();
            (conn, incoming)
        });
        assert!(closed_by_server(&mut c, Duration::from_secs(10)).await);
        // The first two are still open.
        a.write_all(b"x").await.unwrap();
        b.write_all(b"x").await.unwrap();
        // Dropping one frees its slot for the next client.
        drop(ca);
        let mut d = TcpStream::connect(addr).await.unwrap();
        let (mut cd, _incoming) = tokio::time::timeout(Duration::from_secs(10), accept_next)
            .await
            .expect("a freed slot takes a new connection")
            .unwrap();
        d.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        cd.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
    }

    #[tokio::test]
    async fn a_client_that_says_nothing_times_out_and_a_talking_one_does_not() {
        let (l, addr) = listener().await;
        let limits = ConnLimits {
            max_connections: 10,
            first_bytes_timeout: Duration::from_millis(300),
        };
        let mut incoming = Box::pin(incoming_plain(l, limits));
        // Silent: sends 23 of the 24 bytes, then nothing.
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut silent_conn = incoming.next().await.unwrap().unwrap();
        silent.write_all(&[b'x'; PREFACE_BYTES - 1]).await.unwrap();
        let mut buf = vec![0u8; 64];
        let mut got = 0;
        let err = loop {
            match silent_conn.read(&mut buf).await {
                Ok(n) => got += n,
                Err(e) => break e,
            }
        };
        assert_eq!(got, PREFACE_BYTES - 1);
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(
            err.to_string().contains("23 of the first 24 bytes"),
            "{err}"
        );

        // Talking: the preface in time, then silence far past the timeout is fine.
        let mut talking = TcpStream::connect(addr).await.unwrap();
        let mut talking_conn = incoming.next().await.unwrap().unwrap();
        talking.write_all(&[b'y'; PREFACE_BYTES]).await.unwrap();
        let mut b = [0u8; PREFACE_BYTES];
        talking_conn.read_exact(&mut b).await.unwrap();
        let later = tokio::time::timeout(Duration::from_secs(1), talking_conn.read(&mut b)).await;
        assert!(later.is_err(), "no timeout after the preface: {later:?}");
    }
}

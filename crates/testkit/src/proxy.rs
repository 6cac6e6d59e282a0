//! [`PeerProxies`]: a TCP proxy in front of each store member's peer port, so that a test can
//! partition members from each other on loopback (cut and heal each directed link), without
//! root, iptables or network namespaces.
//!
//! Member `j` listens for peers on one port (`--listen-peer-urls`) and advertises its proxy's
//! port (`--initial-advertise-peer-urls`, and the `--initial-cluster` every member gets). Peer
//! URLs travel in the Raft membership, the same for every member, so every member reaches `j`
//! through `j`'s one proxy: Raft RPCs, and the forwarded proposals and read-index calls too. The
//! proxy tells its links apart by the connecting socket: `/proc/net/tcp` gives the inode of the
//! socket bound to the connection's source port, and the member process holding that inode in
//! `/proc/<pid>/fd` is the source. A link is thus (source member, destination member).
//!
//! The proxy is layer 4: the peer TLS (mutual) passes through untouched, and since the dialer
//! still dials `127.0.0.1`, the member certificate's IP SAN verifies as without the proxy.
//!
//! [`PeerProxies::cut`] closes every connection the source has open through the destination's
//! proxy and blackholes the new ones (accepted, never forwarded: the dialer's handshake or
//! request times out, as behind a dead network) until [`PeerProxies::heal`], which also closes
//! the blackholed ones so that the dialer reconnects at once. A connection whose source cannot
//! be told (the socket is gone, or it is no member's) is treated as coming from a cut member
//! while any link into that destination is cut: a partition is never leakier than asked.
//!
//! The proxies run on their own one-thread runtime, so a test body that blocks its own runtime
//! (waiting for a killed process, say) does not stall the members' traffic. Everything is
//! bounded: at most [`MAX_CONNECTIONS`] forwarded and as many blackholed connections per proxy.

use std::{
    collections::{HashMap, HashSet},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use anyhow::Context;
use tokio::{
    net::{TcpListener, TcpStream},
    runtime::Runtime,
    sync::watch,
    task::AbortHandle,
};

/// Connections per proxy beyond which new ones are closed at once (the members open a few each).
pub const MAX_CONNECTIONS: usize = 256;
/// How long the proxy gives its connect to the member behind it.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A blackholed connection is closed after this long even if its link stays cut.
const BLACKHOLE_LIMIT: Duration = Duration::from_secs(120);

/// What each proxy has done so far (see [`PeerProxies::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections passed through to the member.
    pub forwarded: u64,
    /// Open connections closed by a cut.
    pub cut: u64,
    /// New connections accepted on a cut link and never forwarded.
    pub blackholed: u64,
    /// Connections whose source member could not be told.
    pub unidentified: u64,
}

impl std::ops::AddAssign for ProxyStats {
    fn add_assign(&mut self, o: Self) {
        self.forwarded += o.forwarded;
        self.cut += o.cut;
        self.blackholed += o.blackholed;
        self.unidentified += o.unidentified;
    }
}

/// One forwarded connection, so that a cut can close it.
struct Conn {
    from: Option<usize>,
    to: usize,
    task: AbortHandle,
}

#[derive(Default)]
struct State {
    /// Cut links, (from, to).
    cut: HashSet<(usize, usize)>,
    /// The live process of each member, by index, for telling sources apart.
    pids: Vec<Option<u32>>,
    /// Open forwarded connections by id.
    conns: HashMap<u64, Conn>,
    /// Blackholed connections held now, per destination.
    held: HashMap<usize, usize>,
    next_id: u64,
    stats: Vec<ProxyStats>,
}

impl State {
    fn blocked(&self, from: Option<usize>, to: usize) -> bool {
        match from {
            Some(f) => self.cut.contains(&(f, to)),
            None => self.cut.iter().any(|&(_, t)| t == to),
        }
    }

    fn open_to(&self, to: usize) -> usize {
        self.conns.values().filter(|c| c.to == to).count()
    }
}

struct Shared {
    state: Mutex<State>,
    /// Bumped by every heal: blackholed connections watch it and close.
    healed: watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The peer proxies of one store cluster: proxy `i` stands in front of member `i`.
pub struct PeerProxies {
    shared: Arc<Shared>,
    /// (listen port, upstream port) of each proxy.
    ports: Vec<(u16, u16)>,
    /// Declared last: shut down when the proxies are dropped, which ends every task.
    runtime: Option<Runtime>,
}

impl PeerProxies {
    /// No proxies yet; [`Self::add`] makes one per member.
    pub fn new() -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kl-peer-proxy")
            .enable_all()
            .build()
            .context("starting the peer proxies' runtime")?;
        Ok(PeerProxies {
            shared: Arc::new(Shared {
                state: Mutex::default(),
                healed: watch::channel(0).0,
            }),
            ports: Vec::new(),
            runtime: Some(runtime),
        })
    }

    /// Starts the proxy of the next member (index [`Self::len`]): it listens on a free
    /// `127.0.0.1` port, which it returns (the member's advertised peer port), and forwards to
    /// `upstream`, the port the member listens on.
    pub fn add(&mut self, upstream: u16) -> anyhow::Result<u16> {
        let to = self.ports.len();
        let port = crate::ports::free_port();
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .with_context(|| format!("binding the peer proxy of member {to} on port {port}"))?;
        listener.set_nonblocking(true)?;
        let runtime = self.runtime.as_ref().expect("runtime lives until drop");
        let listener = {
            let _guard = runtime.enter();
            TcpListener::from_std(listener)?
        };
        {
            let mut st = self.shared.lock();
            st.pids.resize(to + 1, None);
            st.stats.resize(to + 1, ProxyStats::default());
        }
        runtime.spawn(accept_loop(self.shared.clone(), listener, to, upstream));
        self.ports.push((port, upstream));
        Ok(port)
    }

    /// Number of proxies (members).
    pub fn len(&self) -> usize {
        self.ports.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    /// The port proxy `i` listens on (member `i`'s advertised peer port).
    pub fn port(&self, i: usize) -> u16 {
        self.ports[i].0
    }

    /// The port proxy `i` forwards to (member `i`'s own peer listener).
    pub fn upstream(&self, i: usize) -> u16 {
        self.ports[i].1
    }

    /// Records member `i`'s live process (`None` once it is gone), so that its connections
    /// are told apart from the others'.
    pub fn set_pid(&self, i: usize, pid: Option<u32>) {
        let mut st = self.shared.lock();
        if st.pids.len() <= i {
            st.pids.resize(i + 1, None);
        }
        st.pids[i] = pid;
    }

    /// Cuts the link `from` → `to`: closes what `from` has open to `to` (and what came from an
    /// unknown source) and blackholes what it opens next, until healed.
    pub fn cut(&self, from: usize, to: usize) {
        let mut st = self.shared.lock();
        st.cut.insert((from, to));
        let doomed: Vec<u64> = st
            .conns
            .iter()
            .filter(|(_, c)| c.to == to && c.from.is_none_or(|f| f == from))
            .map(|(&id, _)| id)
            .collect();
        for id in doomed {
            if let Some(c) = st.conns.remove(&id) {
                c.task.abort();
                st.stats[to].cut += 1;
            }
        }
    }

    /// Cuts every link between member `i` and the others, both ways.
    pub fn isolate(&self, i: usize) {
        for j in (0..self.len()).filter(|&j| j != i) {
            self.cut(i, j);
            self.cut(j, i);
        }
    }

    /// Heals the link `from` → `to`.
    pub fn heal(&self, from: usize, to: usize) {
        self.shared.lock().cut.remove(&(from, to));
        self.shared.healed.send_modify(|g| *g += 1);
    }

    /// Heals every link.
    pub fn heal_all(&self) {
        self.shared.lock().cut.clear();
        self.shared.healed.send_modify(|g| *g += 1);
    }

    /// The links cut now, (from, to), sorted.
    pub fn cut_links(&self) -> Vec<(usize, usize)> {
        let mut v: Vec<_> = self.shared.lock().cut.iter().copied().collect();
        v.sort_unstable();
        v
    }

    /// What proxy `i` has done so far.
    pub fn stats(&self, i: usize) -> ProxyStats {
        self.shared.lock().stats[i]
    }

    /// What all proxies have done so far.
    pub fn total_stats(&self) -> ProxyStats {
        let mut total = ProxyStats::default();
        for s in &self.shared.lock().stats {
            total += *s;
        }
        total
    }
}

impl Drop for PeerProxies {
    fn drop(&mut self) {
        // Not `drop(runtime)`: that blocks, which a runtime refuses inside an async test.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for PeerProxies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerProxies")
            .field("ports", &self.ports)
            .field("cut", &self.cut_links())
            .finish()
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, to: usize, upstream: u16) {
    let listen_port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    loop {
        let Ok((sock, source)) = listener.accept().await else {
            // Out of file descriptors and the like: try again shortly, never spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let pids: Vec<(usize, u32)> = {
            let st = shared.lock();
            st.pids
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.map(|p| (i, p)))
                .collect()
        };
        let from = tokio::task::spawn_blocking(move || source_member(source, listen_port, &pids))
            .await
            .ok()
            .flatten();
        let mut st = shared.lock();
        if from.is_none() {
            st.stats[to].unidentified += 1;
        }
        if st.blocked(from, to) {
            let held = st.held.entry(to).or_default();
            if *held >= MAX_CONNECTIONS {
                continue; // closes `sock`
            }
            *held += 1;
            st.stats[to].blackholed += 1;
            tokio::spawn(blackhole(shared.clone(), sock, to));
            continue;
        }
        if st.open_to(to) >= MAX_CONNECTIONS {
            continue;
        }
        st.stats[to].forwarded += 1;
        let id = st.next_id;
        st.next_id += 1;
        // Spawned under the lock, so that a cut cannot slip between the check and the record.
        let task = tokio::spawn(forward(shared.clone(), id, sock, upstream)).abort_handle();
        st.conns.insert(id, Conn { from, to, task });
    }
}

/// Passes bytes both ways until either side closes (or a cut aborts the task).
async fn forward(shared: Arc<Shared>, id: u64, mut sock: TcpStream, upstream: u16) {
    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, upstream);
    if let Ok(Ok(mut up)) =
        tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(addr)).await
    {
        let _ = up.set_nodelay(true);
        let _ = sock.set_nodelay(true);
        let _ = tokio::io::copy_bidirectional(&mut sock, &mut up).await;
    }
    shared.lock().conns.remove(&id);
}

/// Holds a connection without reading or forwarding, until the next heal (or the limit).
async fn blackhole(shared: Arc<Shared>, sock: TcpStream, to: usize) {
    let mut healed = shared.healed.subscribe();
    let _ = tokio::time::timeout(BLACKHOLE_LIMIT, healed.changed()).await;
    drop(sock);
    if let Some(n) = shared.lock().held.get_mut(&to) {
        *n = n.saturating_sub(1);
    }
}

/// The member whose process owns the socket that connected from `source` to
/// `127.0.0.1:listen_port`, if any.
fn source_member(source: SocketAddr, listen_port: u16, pids: &[(usize, u32)]) -> Option<usize> {
    let inode = socket_inode(source, listen_port)?;
    let needle = format!("socket:[{inode}]");
    pids.iter().find_map(|&(i, pid)| {
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
        fds.flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == needle.as_str()))
            .then_some(i)
    })
}

/// The inode of the IPv4 socket whose local address is `source` and whose remote address is
/// `127.0.0.1:listen_port`, from `/proc/net/tcp`.
fn socket_inode(source: SocketAddr, listen_port: u16) -> Option<u64> {
    let SocketAddr::V4(source) = source else {
        return None;
    };
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let remote = SocketAddrV4::new(Ipv4Addr::LOCALHOST, listen_port);
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (local, rem, inode) = (f.get(1)?, f.get(2)?, f.get(9)?);
        (parse_addr(local)? == source && parse_addr(rem)? == remote)
            .then(|| inode.parse().ok())
            .flatten()
            .filter(|&i| i != 0)
    })
}

/// `0100007F:1F90` (the address as the kernel holds it, in native byte order; the port in host
/// order) as `127.0.0.1:8080`.
fn parse_addr(text: &str) -> Option<SocketAddrV4> {
    let (ip, port) = text.split_once(':')?;
    let ip = u32::from_str_radix(ip, 16).ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some(SocketAddrV4::new(Ipv4Addr::from(ip.to_ne_bytes()), port))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    fn proc_net_tcp_addresses_parse() {
        let want = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080);
        if cfg!(target_endian = "little") {
            assert_eq!(parse_addr("0100007F:1F90"), Some(want));
        }
        assert_eq!(parse_addr("nonsense"), None);
    }

    /// An echo server on a free port; it serves until the test's runtime ends.
    async fn echo_server() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        port
    }

    /// Writes a line and reads its echo, within a bound.
    async fn echoes(s: &mut TcpStream, within: Duration) -> bool {
        if s.write_all(b"ping").await.is_err() {
            return false;
        }
        let mut buf = [0u8; 4];
        matches!(
            tokio::time::timeout(within, s.read_exact(&mut buf)).await,
            Ok(Ok(_)) if &buf == b"ping"
        )
    }

    #[tokio::test]
    async fn a_cut_link_closes_and_blackholes_until_healed() {
        let upstream = echo_server().await;
        let mut proxies = PeerProxies::new().unwrap();
        let port = proxies.add(upstream).unwrap();
        // This test process plays member 1, connecting to member 0.
        proxies.set_pid(1, Some(std::process::id()));
        let connect = || TcpStream::connect(("127.0.0.1", port));

        let mut open = connect().await.unwrap();
        assert!(echoes(&mut open, Duration::from_secs(10)).await);
        assert_eq!(proxies.stats(0).forwarded, 1);
        assert_eq!(proxies.stats(0).unidentified, 0, "the source is told");

        // A cut of another link changes nothing for this one.
        proxies.cut(2, 0);
        assert!(echoes(&mut open, Duration::from_secs(10)).await);

        proxies.cut(1, 0);
        let mut buf = [0u8; 4];
        let closed = tokio::time::timeout(Duration::from_secs(10), open.read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
        assert_eq!(proxies.stats(0).cut, 1);

        // A new connection is accepted and never answered.
        let mut held = connect().await.unwrap();
        assert!(!echoes(&mut held, Duration::from_millis(500)).await);
        assert_eq!(proxies.stats(0).blackholed, 1);

        // Healed: the held connection is closed, a new one goes through.
        proxies.heal(1, 0);
        let closed = tokio::time::timeout(Duration::from_secs(10), held.read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
        let mut again = connect().await.unwrap();
        assert!(echoes(&mut again, Duration::from_secs(10)).await);
        assert_eq!(proxies.cut_links(), vec![(2, 0)]);

        // A source that is no member's is blackholed while any link into the proxy is cut.
        proxies.set_pid(1, None);
        let mut unknown = connect().await.unwrap();
        assert!(!echoes(&mut unknown, Duration::from_millis(500)).await);
        proxies.heal_all();
        let mut unknown = connect().await.unwrap();
        assert!(echoes(&mut unknown, Duration::from_secs(10)).await);
        assert!(proxies.stats(0).unidentified >= 2);
    }
}

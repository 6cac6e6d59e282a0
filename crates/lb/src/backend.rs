//! Backends: the up/down state machine of each, its counters, and the [`Pool`] that picks one
//! for a new connection.
//!
//! State machine (HAProxy's): a backend starts **up**. While up, `fall` consecutive failed
//! checks take it **down**; while down, `rise` consecutive successful checks bring it back up.
//! A failed connect by the proxy (passive check) takes it down at once; then it needs `rise`
//! good checks like any down backend. Going down by checks cuts its open connections (through
//! [`Backend::cut_signal`]) so long-lived watches reconnect to a live apiserver.
//!
//! This module never does I/O except name resolution in [`Backend::connect`].

use std::{
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::{net::TcpStream, sync::watch};

use crate::LbError;

/// How the next backend is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Balance {
    /// Each new connection goes to the next up backend in turn.
    RoundRobin,
    /// Each new connection goes to the up backend with the fewest open connections (ties in
    /// round-robin order).
    LeastConn,
}

/// A change of state that the caller must act on (log, cut connections).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Up,
    Down,
}

/// The rise/fall state machine of one backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    pub up: bool,
    /// Consecutive successful checks (reset by a failure).
    pub successes: u32,
    /// Consecutive failed checks (reset by a success).
    pub failures: u32,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            up: true,
            successes: 0,
            failures: 0,
        }
    }
}

impl Health {
    /// Feeds one active check result.
    pub fn observe(&mut self, ok: bool, rise: u32, fall: u32) -> Option<Transition> {
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if !self.up && self.successes >= rise {
                self.up = true;
                return Some(Transition::Up);
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.up && self.failures >= fall {
                self.up = false;
                return Some(Transition::Down);
            }
        }
        None
    }

    /// A connect by the proxy failed: down at once.
    pub fn connect_failed(&mut self) -> Option<Transition> {
        self.successes = 0;
        if self.up {
            self.up = false;
            return Some(Transition::Down);
        }
        None
    }
}

/// Splits `HOST:PORT` (`[v6]:PORT` too) into host (brackets removed) and port.
pub fn split_host_port(text: &str) -> Result<(String, u16), LbError> {
    let err = || LbError::Backend(text.to_string());
    let (host, port) = text.rsplit_once(':').ok_or_else(err)?;
    let port: u16 = port.parse().map_err(|_| err())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 {
        return Err(err());
    }
    Ok((host.to_string(), port))
}

/// Counters of one backend, exported by the stats module.
#[derive(Debug, Default)]
pub struct Counters {
    /// Open proxied connections.
    pub current: AtomicU64,
    /// Proxied connections ever established.
    pub total: AtomicU64,
    /// Bytes from clients to this backend.
    pub bytes_in: AtomicU64,
    /// Bytes from this backend to clients.
    pub bytes_out: AtomicU64,
    /// Failed connects by the proxy (each one retried on another backend).
    pub connect_errors: AtomicU64,
    pub check_successes: AtomicU64,
    pub check_failures: AtomicU64,
    /// Up→down transitions.
    pub downs: AtomicU64,
}

/// One backend.
#[derive(Debug)]
pub struct Backend {
    /// As given on the command line; also the `server` label in metrics.
    pub addr: String,
    /// Host part, for the check's `Host:` header and TLS server name.
    pub host: String,
    health: Mutex<Health>,
    pub counters: Counters,
    /// Bumped each time checks take the backend down; every proxied connection watches it.
    cut: watch::Sender<u64>,
}

impl Backend {
    pub fn new(addr: &str) -> Result<Self, LbError> {
        let (host, _) = split_host_port(addr)?;
        Ok(Backend {
            addr: addr.to_string(),
            host,
            health: Mutex::new(Health::default()),
            counters: Counters::default(),
            cut: watch::channel(0).0,
        })
    }

    pub fn health(&self) -> Health {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn is_up(&self) -> bool {
        self.health().up
    }

    /// Feeds an active check result; on a transition to down, cuts open connections.
    pub fn observe_check(&self, ok: bool, rise: u32, fall: u32) -> Option<Transition> {
        let counter = if ok {
            &self.counters.check_successes
        } else {
            &self.counters.check_failures
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let t = self
            .health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe(ok, rise, fall);
        if t == Some(Transition::Down) {
            self.counters.downs.fetch_add(1, Ordering::Relaxed);
            self.cut.send_modify(|epoch| *epoch += 1);
        }
        t
    }

    /// A connect failed: down at once. Open connections are left alone (they fail by
    /// themselves if the backend is really gone).
    pub fn connect_failed(&self) -> Option<Transition> {
        self.counters.connect_errors.fetch_add(1, Ordering::Relaxed);
        let t = self
            .health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .connect_failed();
        if t.is_some() {
            self.counters.downs.fetch_add(1, Ordering::Relaxed);
        }
        t
    }

    /// A receiver that changes when the backend's connections must be cut.
    pub fn cut_signal(&self) -> watch::Receiver<u64> {
        self.cut.subscribe()
    }

    /// Resolves the address now (names may move) and connects to the first address that
    /// answers, within `timeout` in all.
    pub async fn connect(&self, timeout: Duration) -> std::io::Result<TcpStream> {
        let attempt = async {
            let mut last = None;
            for addr in tokio::net::lookup_host(self.addr.as_str()).await? {
                match TcpStream::connect(addr).await {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        return Ok(s);
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, "name resolved to no address")
            }))
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("connect timed out after {timeout:?}"),
            )),
        }
    }
}

/// Frontend counters.
#[derive(Debug, Default)]
pub struct Frontend {
    pub current: AtomicU64,
    pub total: AtomicU64,
    /// Refused by `--max-connections`.
    pub denied: AtomicU64,
    /// Closed because no backend accepted the connection.
    pub no_backend: AtomicU64,
}

/// All backends and the choice among them.
#[derive(Debug)]
pub struct Pool {
    pub backends: Vec<Arc<Backend>>,
    pub balance: Balance,
    pub frontend: Frontend,
    next: AtomicUsize,
}

impl Pool {
    pub fn new(addrs: &[String], balance: Balance) -> Result<Self, LbError> {
        if addrs.is_empty() {
            return Err(LbError::NoBackends);
        }
        let backends = addrs
            .iter()
            .map(|a| Backend::new(a).map(Arc::new))
            .collect::<Result<_, _>>()?;
        Ok(Pool {
            backends,
            balance,
            frontend: Frontend::default(),
            next: AtomicUsize::new(0),
        })
    }

    /// The order in which to try backends for one new connection: up backends by the balance
    /// rule, then down ones as a last resort (checks may lag behind a recovered backend, and
    /// refusing outright would turn a stale view into an outage).
    pub fn candidates(&self) -> Vec<Arc<Backend>> {
        let n = self.backends.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let rotated = (0..n).map(|i| self.backends[(start + i) % n].clone());
        let (mut up, down): (Vec<_>, Vec<_>) = rotated.partition(|b| b.is_up());
        if self.balance == Balance::LeastConn {
            // Stable sort: ties keep the rotation, so equal backends still take turns.
            up.sort_by_key(|b| b.counters.current.load(Ordering::Relaxed));
        }
        up.extend(down);
        up
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rise_and_fall() {
        let mut h = Health::default();
        assert!(h.up);
        assert_eq!(h.observe(false, 2, 2), None);
        assert_eq!(
            h.observe(true, 2, 2),
            None,
            "a success resets the fall count"
        );
        assert_eq!(h.observe(false, 2, 2), None);
        assert_eq!(h.observe(false, 2, 2), Some(Transition::Down));
        assert_eq!(h.observe(false, 2, 2), None);
        assert_eq!(h.observe(true, 2, 2), None);
        assert_eq!(h.observe(true, 2, 2), Some(Transition::Up));
        assert_eq!(h.connect_failed(), Some(Transition::Down));
        assert_eq!(h.connect_failed(), None);
        assert_eq!(h.observe(true, 2, 2), None);
        assert_eq!(h.observe(true, 2, 2), Some(Transition::Up));
    }

    #[test]
    fn host_port() {
        assert_eq!(split_host_port("a:1").unwrap(), ("a".into(), 1));
        assert_eq!(split_host_port("[::1]:443").unwrap(), ("::1".into(), 443));
        assert!(split_host_port("a").is_err());
        assert!(split_host_port("a:x").is_err());
        assert!(split_host_port(":1").is_err());
    }

    #[test]
    fn round_robin_then_leastconn() {
        let addrs: Vec<String> = ["a:1", "b:1", "c:1"].map(String::from).to_vec();
        let pool = Pool::new(&addrs, Balance::RoundRobin).unwrap();
        let firsts: Vec<String> = (0..3).map(|_| pool.candidates()[0].addr.clone()).collect();
        assert_eq!(firsts, ["a:1", "b:1", "c:1"]);
        pool.backends[1].observe_check(false, 1, 1);
        let c = pool.candidates();
        assert_eq!(c.last().unwrap().addr, "b:1", "down backends come last");

        let pool = Pool::new(&addrs, Balance::LeastConn).unwrap();
        pool.backends[0]
            .counters
            .current
            .store(5, Ordering::Relaxed);
        pool.backends[2]
            .counters
            .current
            .store(1, Ordering::Relaxed);
        assert_eq!(pool.candidates()[0].addr, "b:1");
    }
}

//! A member's configuration: one field per etcd flag, with etcd's names and defaults. The
//! binary parses flags into this; nothing else reads the command line.

use std::{path::PathBuf, time::Duration};

/// One member of `--initial-cluster`: `name=peerURL[,name=peerURL...]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitialMember {
    pub name: String,
    pub peer_urls: Vec<String>,
}

/// `--initial-cluster-state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterState {
    New,
    Existing,
}

/// TLS files of one side (client or peer), as etcd's `--cert-file` / `--key-file` /
/// `--trusted-ca-file` / `--client-cert-auth` (or their `--peer-` twins).
#[derive(Clone, Debug, Default)]
pub struct TlsFlags {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub trusted_ca_file: Option<PathBuf>,
    pub client_cert_auth: bool,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub name: String,
    pub data_dir: PathBuf,
    pub listen_client_urls: Vec<String>,
    pub advertise_client_urls: Vec<String>,
    pub listen_peer_urls: Vec<String>,
    pub initial_advertise_peer_urls: Vec<String>,
    pub initial_cluster: Vec<InitialMember>,
    pub initial_cluster_state: ClusterState,
    pub initial_cluster_token: String,
    pub listen_metrics_urls: Vec<String>,
    pub heartbeat_interval: Duration,
    pub election_timeout: Duration,
    pub snapshot_count: u64,
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    /// `--max-concurrent-streams`: HTTP/2 streams one client connection may have open at once
    /// on the client port.
    pub max_concurrent_streams: u32,
    /// `--max-connections` (kube-lite's; etcd has no such cap): open connections on the client
    /// port beyond this are closed at once.
    pub max_connections: usize,
    pub client_tls: TlsFlags,
    pub peer_tls: TlsFlags,
    /// `--peer-cert-allowed-cn`: the CN a peer's certificate must have (None: any).
    pub peer_cert_allowed_cn: Option<String>,
    /// sled's page cache bound, in bytes.
    pub cache_capacity: u64,
}

impl Config {
    /// etcd's defaults for a single member named `default`.
    pub fn new(name: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        let name = name.into();
        Config {
            initial_cluster: vec![InitialMember {
                name: name.clone(),
                peer_urls: vec!["http://localhost:2380".into()],
            }],
            name,
            data_dir: data_dir.into(),
            listen_client_urls: vec!["http://localhost:2379".into()],
            advertise_client_urls: vec!["http://localhost:2379".into()],
            listen_peer_urls: vec!["http://localhost:2380".into()],
            initial_advertise_peer_urls: vec!["http://localhost:2380".into()],
            initial_cluster_state: ClusterState::New,
            initial_cluster_token: "etcd-cluster".into(),
            listen_metrics_urls: vec![],
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
            snapshot_count: 100_000,
            max_request_bytes: 1536 * 1024,
            max_txn_ops: 128,
            // etcd's default is math.MaxUint32, which is no cap at all; kube-lite caps streams
            // as kube-apiserver does (--http2-max-streams-per-connection=1000).
            max_concurrent_streams: 1000,
            max_connections: kl_tls::ConnLimits::SERVER_MAX_CONNECTIONS,
            client_tls: TlsFlags::default(),
            peer_tls: TlsFlags::default(),
            peer_cert_allowed_cn: None,
            cache_capacity: 64 * 1024 * 1024,
        }
    }

    /// Parses `--initial-cluster` (`a=https://h:2380,b=https://h2:2380`; a name may repeat to
    /// give several peer URLs, as in etcd).
    pub fn parse_initial_cluster(text: &str) -> Result<Vec<InitialMember>, String> {
        let mut out: Vec<InitialMember> = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, url) = part.split_once('=').ok_or_else(|| {
                format!("--initial-cluster: {part:?} is not name=peerURL (e.g. infra0=https://10.0.1.10:2380)")
            })?;
            kl_cli::parse_url_list(url).map_err(|e| format!("--initial-cluster: {e}"))?;
            match out.iter_mut().find(|m| m.name == name) {
                Some(m) => m.peer_urls.push(url.to_string()),
                None => out.push(InitialMember {
                    name: name.to_string(),
                    peer_urls: vec![url.to_string()],
                }),
            }
        }
        if out.is_empty() {
            return Err("--initial-cluster: empty".into());
        }
        Ok(out)
    }

    /// Checks what etcd checks at start; the message names the flag and the fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("--name must not be empty".into());
        }
        if self.peer_cert_allowed_cn.is_some() && !self.peer_tls.client_cert_auth {
            return Err("--peer-cert-allowed-cn needs --peer-client-cert-auth (with --peer-cert-file, --peer-key-file and --peer-trusted-ca-file): without client certificates there is no CN to check".into());
        }
        if self.election_timeout < self.heartbeat_interval * 5 {
            return Err(format!(
                "--election-timeout[{}ms] should be at least as 5 times as --heartbeat-interval[{}ms]",
                self.election_timeout.as_millis(),
                self.heartbeat_interval.as_millis()
            ));
        }
        let me = self
            .initial_cluster
            .iter()
            .find(|m| m.name == self.name)
            .ok_or_else(|| {
                format!(
                    "--initial-cluster has no member named {:?} (--name); add {}={}",
                    self.name,
                    self.name,
                    self.initial_advertise_peer_urls.join(",")
                )
            })?;
        let mut mine = me.peer_urls.clone();
        let mut adv = self.initial_advertise_peer_urls.clone();
        mine.sort();
        adv.sort();
        if mine != adv {
            return Err(format!(
                "--initial-cluster has {}={:?} but --initial-advertise-peer-urls is {:?}: they must match",
                self.name, me.peer_urls, self.initial_advertise_peer_urls
            ));
        }
        if self.snapshot_count == 0 {
            return Err("--snapshot-count must be greater than 0".into());
        }
        if self.max_concurrent_streams == 0 {
            return Err("--max-concurrent-streams must be at least 1 (etcd's default, unlimited, is 4294967295; kube-lite's is 1000)".into());
        }
        if self.max_connections == 0 {
            return Err("--max-connections must be at least 1 (default 10000)".into());
        }
        if self.max_txn_ops == 0 {
            return Err("--max-txn-ops must be greater than 0".into());
        }
        Ok(())
    }
}

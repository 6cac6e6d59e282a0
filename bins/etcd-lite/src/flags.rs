//! etcd's command line: the flags' names, meanings and defaults are etcd's, and each flag can
//! also come from its `ETCD_*` environment variable (`--data-dir` → `ETCD_DATA_DIR`); a flag
//! given on the command line wins over the variable, and an empty variable counts as unset (as
//! in etcd). Booleans take `--flag`, `--flag=true` and `--flag true` ([`kl_cli::bool_flag`]).

use std::{path::PathBuf, time::Duration};

use clap::{ArgAction, Parser, ValueEnum};
use etcd_lite::config::{ClusterState, Config, TlsFlags};
use etcd_lite::server::ServerOptions;

/// etcd's `DefaultName`.
const DEFAULT_NAME: &str = "default";
/// etcd's default `--initial-cluster`: the default name with the default peer URL.
const DEFAULT_INITIAL_CLUSTER: &str = "default=http://localhost:2380";

#[derive(Parser, Debug)]
#[command(
    name = "etcd-lite",
    about = "A Raft-replicated, sled-backed key-value store that speaks the etcd v3 API."
)]
pub struct Flags {
    /// Human-readable name for this member.
    #[arg(long, env = "ETCD_NAME", default_value = DEFAULT_NAME)]
    pub name: String,

    /// Path to the data directory [default: ${name}.etcd].
    #[arg(long, env = "ETCD_DATA_DIR", value_name = "DIR", value_parser = path)]
    pub data_dir: Option<PathBuf>,

    /// List of URLs to listen on for client traffic.
    #[arg(long, env = "ETCD_LISTEN_CLIENT_URLS", default_value = "http://localhost:2379", value_parser = urls)]
    pub listen_client_urls: Urls,

    /// List of this member's client URLs to advertise to the public.
    #[arg(long, env = "ETCD_ADVERTISE_CLIENT_URLS", default_value = "http://localhost:2379", value_parser = urls)]
    pub advertise_client_urls: Urls,

    /// List of URLs to listen on for peer traffic.
    #[arg(long, env = "ETCD_LISTEN_PEER_URLS", default_value = "http://localhost:2380", value_parser = urls)]
    pub listen_peer_urls: Urls,

    /// List of this member's peer URLs to advertise to the rest of the cluster.
    #[arg(long, env = "ETCD_INITIAL_ADVERTISE_PEER_URLS", default_value = "http://localhost:2380", value_parser = urls)]
    pub initial_advertise_peer_urls: Urls,

    /// Initial cluster configuration for bootstrapping (name=peerURL,...). When left at its
    /// default and --name is set, it becomes name=--initial-advertise-peer-urls, as in etcd.
    #[arg(long, env = "ETCD_INITIAL_CLUSTER", default_value = DEFAULT_INITIAL_CLUSTER)]
    pub initial_cluster: String,

    /// Initial cluster state ('new' or 'existing').
    #[arg(
        long,
        env = "ETCD_INITIAL_CLUSTER_STATE",
        value_enum,
        default_value = "new"
    )]
    pub initial_cluster_state: ClusterStateFlag,

    /// Initial cluster token for the etcd cluster during bootstrap.
    #[arg(
        long,
        env = "ETCD_INITIAL_CLUSTER_TOKEN",
        default_value = "etcd-cluster"
    )]
    pub initial_cluster_token: String,

    /// List of URLs to listen on for the /metrics and /health endpoints.
    #[arg(long, env = "ETCD_LISTEN_METRICS_URLS", default_value = "", value_parser = urls)]
    pub listen_metrics_urls: Urls,

    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(
        long,
        env = "ETCD_HEARTBEAT_INTERVAL",
        default_value_t = 100,
        value_name = "MS"
    )]
    pub heartbeat_interval: u64,

    /// Time (in milliseconds) for an election to timeout.
    #[arg(
        long,
        env = "ETCD_ELECTION_TIMEOUT",
        default_value_t = 1000,
        value_name = "MS"
    )]
    pub election_timeout: u64,

    /// Number of committed transactions to trigger a snapshot to disk.
    #[arg(long, env = "ETCD_SNAPSHOT_COUNT", default_value_t = 100_000)]
    pub snapshot_count: u64,

    /// Maximum client request size in bytes the server will accept.
    #[arg(long, env = "ETCD_MAX_REQUEST_BYTES", default_value_t = 1_572_864)]
    pub max_request_bytes: usize,

    /// Maximum number of operations permitted in a transaction.
    #[arg(long, env = "ETCD_MAX_TXN_OPS", default_value_t = 128)]
    pub max_txn_ops: usize,

    /// Maximum concurrent streams that each client can open at a time (HTTP/2
    /// SETTINGS_MAX_CONCURRENT_STREAMS). etcd's default is 4294967295 (no cap); kube-lite's is
    /// kube-apiserver's.
    #[arg(long, env = "ETCD_MAX_CONCURRENT_STREAMS", default_value_t = 1000)]
    pub max_concurrent_streams: u32,

    /// Maximum open connections on the client port; one more is closed at once (kube-lite's;
    /// etcd has no such cap, HAProxy calls it maxconn).
    #[arg(long, env = "ETCD_MAX_CONNECTIONS", default_value_t = kl_tls::ConnLimits::SERVER_MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// Path to the client server TLS cert file.
    #[arg(long, env = "ETCD_CERT_FILE", value_name = "FILE", value_parser = path)]
    pub cert_file: Option<PathBuf>,

    /// Path to the client server TLS key file.
    #[arg(long, env = "ETCD_KEY_FILE", value_name = "FILE", value_parser = path)]
    pub key_file: Option<PathBuf>,

    /// Path to the client server TLS trusted CA cert file.
    #[arg(long, env = "ETCD_TRUSTED_CA_FILE", value_name = "FILE", value_parser = path)]
    pub trusted_ca_file: Option<PathBuf>,

    /// Enable client cert authentication.
    #[arg(long, env = "ETCD_CLIENT_CERT_AUTH", default_value_t = false, num_args = 0..=1,
          default_missing_value = "true", action = ArgAction::Set, value_parser = go_bool)]
    pub client_cert_auth: bool,

    /// Path to the peer server TLS cert file.
    #[arg(long, env = "ETCD_PEER_CERT_FILE", value_name = "FILE", value_parser = path)]
    pub peer_cert_file: Option<PathBuf>,

    /// Path to the peer server TLS key file.
    #[arg(long, env = "ETCD_PEER_KEY_FILE", value_name = "FILE", value_parser = path)]
    pub peer_key_file: Option<PathBuf>,

    /// Path to the peer server TLS trusted CA file.
    #[arg(long, env = "ETCD_PEER_TRUSTED_CA_FILE", value_name = "FILE", value_parser = path)]
    pub peer_trusted_ca_file: Option<PathBuf>,

    /// Enable peer client cert authentication.
    #[arg(long, env = "ETCD_PEER_CLIENT_CERT_AUTH", default_value_t = false, num_args = 0..=1,
          default_missing_value = "true", action = ArgAction::Set, value_parser = go_bool)]
    pub peer_client_cert_auth: bool,

    /// Allowed CN for inter peer authentication: a peer certificate with another CN is refused
    /// (etcd's flag). The etcd CA that --peer-trusted-ca-file names also signs the store's
    /// clients (the apiserver's, etcdctl's), so this is what keeps them off the Raft port;
    /// kube-lite's peers' CN is kube-etcd-peer.
    #[arg(
        long,
        env = "ETCD_PEER_CERT_ALLOWED_CN",
        value_name = "CN",
        default_value = ""
    )]
    pub peer_cert_allowed_cn: String,

    /// Duration of periodic watch progress notifications (Go notation, e.g. 10m, 30s).
    #[arg(long, env = "ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL", default_value = "10m",
          value_parser = kl_cli::duration, value_name = "DURATION")]
    pub experimental_watch_progress_notify_interval: Duration,

    /// Frequency duration of server-to-client pings to check if a connection is alive.
    #[arg(long, env = "ETCD_GRPC_KEEPALIVE_INTERVAL", default_value = "2h",
          value_parser = kl_cli::duration, value_name = "DURATION")]
    pub grpc_keepalive_interval: Duration,

    /// Additional duration of wait before closing a non-responsive connection.
    #[arg(long, env = "ETCD_GRPC_KEEPALIVE_TIMEOUT", default_value = "20s",
          value_parser = kl_cli::duration, value_name = "DURATION")]
    pub grpc_keepalive_timeout: Duration,

    /// Print the version and exit.
    #[arg(long)]
    pub version: bool,
}

/// `--initial-cluster-state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ClusterStateFlag {
    New,
    Existing,
}

/// A comma-separated URL list flag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Urls(pub Vec<String>);

fn urls(text: &str) -> Result<Urls, String> {
    kl_cli::url_list(text).map(Urls)
}

/// Go's `strconv.ParseBool`, which etcd's boolean flags and variables go through.
fn go_bool(text: &str) -> Result<bool, String> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("invalid boolean {text:?}: expected true or false")),
    }
}

/// A path flag. Empty is accepted, and means "not given", as in etcd.
fn path(text: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(text))
}

/// An etcd file flag: empty means not given.
fn file(path: &Option<PathBuf>) -> Option<PathBuf> {
    path.clone().filter(|p| !p.as_os_str().is_empty())
}

impl Flags {
    /// Parses the process's arguments and `ETCD_*` variables; exits on a bad flag (status 2,
    /// as etcd). Call it before starting any thread: it edits the environment.
    pub fn from_process() -> Self {
        ignore_empty_etcd_vars();
        kl_cli::bool_flag(Flags::parse())
    }

    /// The member's configuration, checked as etcd checks it at start. The error names the
    /// flag.
    pub fn config(&self) -> Result<Config, String> {
        let data_dir =
            file(&self.data_dir).unwrap_or_else(|| PathBuf::from(format!("{}.etcd", self.name)));
        let mut config = Config::new(self.name.clone(), data_dir);
        config.listen_client_urls = self.listen_client_urls.0.clone();
        config.advertise_client_urls = self.advertise_client_urls.0.clone();
        config.listen_peer_urls = self.listen_peer_urls.0.clone();
        config.initial_advertise_peer_urls = self.initial_advertise_peer_urls.0.clone();
        config.initial_cluster = Config::parse_initial_cluster(&self.initial_cluster_text())?;
        config.initial_cluster_state = match self.initial_cluster_state {
            ClusterStateFlag::New => ClusterState::New,
            ClusterStateFlag::Existing => ClusterState::Existing,
        };
        config.initial_cluster_token = self.initial_cluster_token.clone();
        config.listen_metrics_urls = self.listen_metrics_urls.0.clone();
        config.heartbeat_interval = Duration::from_millis(self.heartbeat_interval);
        config.election_timeout = Duration::from_millis(self.election_timeout);
        config.snapshot_count = self.snapshot_count;
        config.max_request_bytes = self.max_request_bytes;
        config.max_txn_ops = self.max_txn_ops;
        config.max_concurrent_streams = self.max_concurrent_streams;
        config.max_connections = self.max_connections;
        config.client_tls = TlsFlags {
            cert_file: file(&self.cert_file),
            key_file: file(&self.key_file),
            trusted_ca_file: file(&self.trusted_ca_file),
            client_cert_auth: self.client_cert_auth,
        };
        config.peer_tls = TlsFlags {
            cert_file: file(&self.peer_cert_file),
            key_file: file(&self.peer_key_file),
            trusted_ca_file: file(&self.peer_trusted_ca_file),
            client_cert_auth: self.peer_client_cert_auth,
        };
        config.peer_cert_allowed_cn =
            Some(self.peer_cert_allowed_cn.clone()).filter(|cn| !cn.is_empty());
        config.validate()?;
        Ok(config)
    }

    /// etcd's `UpdateDefaultClusterFromName`: `etcd --name abc` alone bootstraps a one-member
    /// cluster `abc=<--initial-advertise-peer-urls>`, not one with a member named "default".
    fn initial_cluster_text(&self) -> String {
        if self.name != DEFAULT_NAME && self.initial_cluster == DEFAULT_INITIAL_CLUSTER {
            self.initial_advertise_peer_urls
                .0
                .iter()
                .map(|url| format!("{}={url}", self.name))
                .collect::<Vec<_>>()
                .join(",")
        } else {
            self.initial_cluster.clone()
        }
    }

    pub fn server_options(&self) -> ServerOptions {
        ServerOptions {
            watch_progress_notify_interval: self.experimental_watch_progress_notify_interval,
            grpc_keepalive_interval: self.grpc_keepalive_interval,
            grpc_keepalive_timeout: self.grpc_keepalive_timeout,
            ..ServerOptions::default()
        }
    }
}

/// etcd skips an `ETCD_*` variable whose value is empty; clap would take it as an (invalid)
/// empty value, so they are removed before parsing.
fn ignore_empty_etcd_vars() {
    let empty: Vec<_> = std::env::vars_os()
        .filter(|(k, v)| k.to_string_lossy().starts_with("ETCD_") && v.is_empty())
        .map(|(k, _)| k)
        .collect();
    for key in empty {
        std::env::remove_var(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Flags {
        let mut argv = vec!["etcd-lite"];
        argv.extend_from_slice(args);
        kl_cli::bool_flag(Flags::try_parse_from(argv).expect("flags parse"))
    }

    /// Every test that reads a flag's default, or sets an `ETCD_*` variable, is in here:
    /// the environment is process-wide and tests run in parallel.
    #[test]
    fn defaults_and_environment_as_etcd() {
        let f = parse(&[]);
        assert_eq!(f.name, "default");
        let c = f.config().expect("defaults are valid");
        assert_eq!(c.data_dir, PathBuf::from("default.etcd"));
        assert_eq!(c.listen_client_urls, vec!["http://localhost:2379"]);
        assert_eq!(c.advertise_client_urls, vec!["http://localhost:2379"]);
        assert_eq!(c.listen_peer_urls, vec!["http://localhost:2380"]);
        assert_eq!(c.initial_advertise_peer_urls, vec!["http://localhost:2380"]);
        assert_eq!(c.initial_cluster.len(), 1);
        assert_eq!(c.initial_cluster[0].name, "default");
        assert_eq!(c.initial_cluster_state, ClusterState::New);
        assert_eq!(c.initial_cluster_token, "etcd-cluster");
        assert!(c.listen_metrics_urls.is_empty());
        assert_eq!(c.heartbeat_interval, Duration::from_millis(100));
        assert_eq!(c.election_timeout, Duration::from_millis(1000));
        assert_eq!(c.snapshot_count, 100_000);
        assert_eq!(c.max_request_bytes, 1_572_864);
        assert_eq!(c.max_txn_ops, 128);
        assert_eq!(c.max_concurrent_streams, 1000);
        assert_eq!(c.max_connections, 10_000);
        assert!(c.client_tls.cert_file.is_none());
        assert!(!c.client_tls.client_cert_auth);
        assert!(!c.peer_tls.client_cert_auth);
        let opts = f.server_options();
        assert_eq!(
            opts.watch_progress_notify_interval,
            Duration::from_secs(600)
        );
        assert_eq!(opts.grpc_keepalive_timeout, Duration::from_secs(20));

        // ETCD_* variables, as etcd reads them; a flag beats its variable.
        std::env::set_var("ETCD_NAME", "infra9");
        std::env::set_var("ETCD_MAX_TXN_OPS", "7");
        std::env::set_var("ETCD_CLIENT_CERT_AUTH", "true");
        std::env::set_var("ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL", "1s");
        std::env::set_var("ETCD_DATA_DIR", "");
        std::env::set_var("ETCD_SNAPSHOT_COUNT", "");
        ignore_empty_etcd_vars();
        assert!(std::env::var_os("ETCD_SNAPSHOT_COUNT").is_none());
        let env = parse(&[]);
        let flag_wins = parse(&["--max-txn-ops", "9", "--client-cert-auth=false"]);
        for key in [
            "ETCD_NAME",
            "ETCD_MAX_TXN_OPS",
            "ETCD_CLIENT_CERT_AUTH",
            "ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL",
            "ETCD_DATA_DIR",
        ] {
            std::env::remove_var(key);
        }
        assert_eq!(env.name, "infra9");
        assert_eq!(env.max_txn_ops, 7);
        assert!(env.client_cert_auth);
        assert_eq!(
            env.experimental_watch_progress_notify_interval,
            Duration::from_secs(1)
        );
        // An empty variable means "not set", as in etcd.
        assert_eq!(env.snapshot_count, 100_000);
        let c = env.config().expect("valid");
        assert_eq!(c.data_dir, PathBuf::from("infra9.etcd"));
        assert_eq!(flag_wins.max_txn_ops, 9);
        assert!(!flag_wins.client_cert_auth);
    }

    #[test]
    fn zero_stream_or_connection_caps_are_refused_naming_the_flag() {
        let e = parse(&["--max-concurrent-streams=0"]).config().unwrap_err();
        assert!(
            e.starts_with("--max-concurrent-streams must be at least 1"),
            "{e}"
        );
        let e = parse(&["--max-connections=0"]).config().unwrap_err();
        assert!(e.starts_with("--max-connections must be at least 1"), "{e}");
        let c = parse(&["--max-concurrent-streams=64", "--max-connections=4"]).config();
        let c = c.expect("valid");
        assert_eq!((c.max_concurrent_streams, c.max_connections), (64, 4));
    }

    #[test]
    fn peer_cert_allowed_cn_needs_peer_client_certificates() {
        let f = parse(&["--peer-cert-allowed-cn=kube-etcd-peer"]);
        let e = f.config().unwrap_err();
        assert!(
            e.contains("--peer-cert-allowed-cn needs --peer-client-cert-auth"),
            "{e}"
        );
        let f = parse(&[
            "--peer-cert-allowed-cn=kube-etcd-peer",
            "--peer-client-cert-auth",
            "--peer-cert-file=/p.crt",
            "--peer-key-file=/p.key",
            "--peer-trusted-ca-file=/ca.crt",
        ]);
        let c = f.config().unwrap();
        assert_eq!(c.peer_cert_allowed_cn.as_deref(), Some("kube-etcd-peer"));
        assert_eq!(parse(&[]).config().unwrap().peer_cert_allowed_cn, None);
    }

    #[test]
    fn boolean_flags_take_every_go_form() {
        for args in [
            vec!["--client-cert-auth"],
            vec!["--client-cert-auth=true"],
            vec!["--client-cert-auth", "true"],
            vec!["--client-cert-auth=1"],
        ] {
            assert!(parse(&args).client_cert_auth, "{args:?}");
        }
        for args in [
            vec!["--client-cert-auth=false"],
            vec!["--client-cert-auth", "false"],
        ] {
            assert!(!parse(&args).client_cert_auth, "{args:?}");
        }
        let f = parse(&[
            "--peer-client-cert-auth",
            "--client-cert-auth",
            "--name",
            "x",
        ]);
        assert!(f.peer_client_cert_auth && f.client_cert_auth);
        assert_eq!(f.name, "x");
        assert!(Flags::try_parse_from(["etcd-lite", "--client-cert-auth=maybe"]).is_err());
        // An empty path is "not given", as in etcd.
        let f = parse(&["--cert-file", "", "--data-dir="]);
        assert!(f.config().expect("valid").client_tls.cert_file.is_none());
    }

    #[test]
    fn a_three_member_cluster_as_a_script_starts_etcd() {
        let f = parse(&[
            "--name",
            "infra1",
            "--data-dir",
            "/var/lib/etcd/infra1",
            "--listen-client-urls",
            "https://127.0.0.1:2379",
            "--advertise-client-urls",
            "https://127.0.0.1:2379",
            "--listen-peer-urls",
            "https://127.0.0.1:2380",
            "--initial-advertise-peer-urls",
            "https://127.0.0.1:2380",
            "--initial-cluster",
            "infra1=https://127.0.0.1:2380,infra2=https://127.0.0.1:12380,infra3=https://127.0.0.1:22380",
            "--initial-cluster-state",
            "existing",
            "--listen-metrics-urls",
            "http://127.0.0.1:2381",
            "--heartbeat-interval",
            "50",
            "--election-timeout",
            "500",
            "--cert-file",
            "server.crt",
            "--key-file",
            "server.key",
            "--trusted-ca-file",
            "ca.crt",
            "--client-cert-auth",
            "--peer-cert-file=peer.crt",
            "--peer-key-file=peer.key",
            "--peer-trusted-ca-file=ca.crt",
            "--peer-client-cert-auth=true",
            "--experimental-watch-progress-notify-interval",
            "5s",
        ]);
        let c = f.config().expect("valid");
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/etcd/infra1"));
        assert_eq!(c.initial_cluster.len(), 3);
        assert_eq!(c.initial_cluster_state, ClusterState::Existing);
        assert_eq!(c.listen_metrics_urls, vec!["http://127.0.0.1:2381"]);
        assert_eq!(c.heartbeat_interval, Duration::from_millis(50));
        assert_eq!(c.client_tls.cert_file, Some(PathBuf::from("server.crt")));
        assert!(c.client_tls.client_cert_auth);
        assert_eq!(c.peer_tls.trusted_ca_file, Some(PathBuf::from("ca.crt")));
        assert!(c.peer_tls.client_cert_auth);
        assert_eq!(
            f.server_options().watch_progress_notify_interval,
            Duration::from_secs(5)
        );
    }

    #[test]
    fn a_name_alone_names_the_initial_cluster() {
        let f = parse(&[
            "--name",
            "solo",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:2380",
            "--listen-peer-urls",
            "http://127.0.0.1:2380",
        ]);
        let c = f.config().expect("valid, as `etcd --name solo` is");
        assert_eq!(c.initial_cluster.len(), 1);
        assert_eq!(c.initial_cluster[0].name, "solo");
        assert_eq!(
            c.initial_cluster[0].peer_urls,
            vec!["http://127.0.0.1:2380"]
        );
    }

    #[test]
    fn bad_values_name_the_flag() {
        let err = Flags::try_parse_from(["etcd-lite", "--listen-client-urls", "127.0.0.1:2379"])
            .expect_err("not a URL");
        assert!(err.to_string().contains("--listen-client-urls"), "{err}");
        assert!(Flags::try_parse_from(["etcd-lite", "--initial-cluster-state", "old"]).is_err());
        assert!(Flags::try_parse_from([
            "etcd-lite",
            "--experimental-watch-progress-notify-interval",
            "10"
        ])
        .is_err());

        let f = parse(&["--heartbeat-interval", "500"]);
        let err = f.config().expect_err("election timeout below 5 heartbeats");
        assert!(err.contains("--election-timeout"), "{err}");

        let f = parse(&[
            "--name",
            "a",
            "--initial-cluster",
            "b=http://127.0.0.1:2380",
        ]);
        let err = f.config().expect_err("--name not in --initial-cluster");
        assert!(err.contains("--initial-cluster"), "{err}");
    }
}

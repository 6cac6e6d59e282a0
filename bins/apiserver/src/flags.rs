//! kube-apiserver's command line: the flags' names, meanings and defaults are upstream's
//! (only the ones kube-lite has a use for). Durations use Go's notation (`5m`, `70s`).

use std::{net::IpAddr, path::PathBuf, time::Duration};

use apiserver::Config;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "apiserver",
    about = "The kube-lite API server: the kubelite.v1 API over mutual TLS, stored in etcd.",
    version
)]
pub struct Flags {
    /// List of etcd servers to connect with (scheme://ip:port), comma separated.
    #[arg(long, value_name = "URLS", value_parser = urls)]
    pub etcd_servers: Option<Urls>,

    /// SSL Certificate Authority file used to secure etcd communication.
    #[arg(long, value_name = "FILE")]
    pub etcd_cafile: Option<PathBuf>,

    /// SSL certification file used to secure etcd communication.
    #[arg(long, value_name = "FILE")]
    pub etcd_certfile: Option<PathBuf>,

    /// SSL key file used to secure etcd communication.
    #[arg(long, value_name = "FILE")]
    pub etcd_keyfile: Option<PathBuf>,

    /// The prefix to prepend to all resource paths in etcd.
    #[arg(long, default_value = "/registry")]
    pub etcd_prefix: String,

    /// The port on which to serve HTTPS (gRPC API, /livez, /readyz, /metrics).
    #[arg(long, default_value_t = 6443)]
    pub secure_port: u16,

    /// The IP address on which to listen for the --secure-port port.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind_address: IpAddr,

    /// The IP address on which to advertise the apiserver to members of the cluster. If blank,
    /// the --bind-address is used (127.0.0.1 when that is 0.0.0.0).
    #[arg(long)]
    pub advertise_address: Option<IpAddr>,

    /// File containing the default x509 Certificate for HTTPS.
    #[arg(long, value_name = "FILE")]
    pub tls_cert_file: Option<PathBuf>,

    /// File containing the default x509 private key matching --tls-cert-file.
    #[arg(long, value_name = "FILE")]
    pub tls_private_key_file: Option<PathBuf>,

    /// A client certificate signed by this CA authenticates its holder (CN = user, O = groups).
    #[arg(long, value_name = "FILE")]
    pub client_ca_file: Option<PathBuf>,

    /// Time to delay the termination: /readyz fails at once, serving goes on this long.
    #[arg(long, default_value = "0s", value_parser = kl_cli::duration)]
    pub shutdown_delay_duration: Duration,

    /// The maximum number of non-watch requests in flight at a given time; beyond it requests
    /// are rejected (429 / RESOURCE_EXHAUSTED). Zero for no limit.
    #[arg(long, default_value_t = 400)]
    pub max_requests_inflight: usize,

    /// The limit that the server gives to clients for the maximum number of streams in an
    /// HTTP/2 connection. Zero means to use golang's default (250).
    #[arg(long, default_value_t = 1000)]
    pub http2_max_streams_per_connection: u32,

    /// Open client connections beyond this are closed at once, before TLS (kube-lite's; the
    /// lb's flag of the same name, HAProxy's maxconn).
    #[arg(long, default_value_t = kl_tls::ConnLimits::SERVER_MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// Events kept per resource by the watch cache (how far back a watch can resume).
    #[arg(long, default_value_t = apiserver::watch_cache::DEFAULT_WINDOW)]
    pub default_watch_cache_size: usize,

    /// The interval of compaction requests. If 0, compaction from the apiserver is disabled.
    #[arg(long, default_value = "5m", value_parser = kl_cli::duration)]
    pub etcd_compaction_interval: Duration,

    /// List of the preferred NodeAddressTypes to use for kubelet connections (Hostname,
    /// InternalIP, ExternalIP, InternalDNS, ExternalDNS), comma separated. Default: kubeadm's.
    #[arg(
        long,
        value_name = "TYPES",
        value_delimiter = ',',
        default_value = "InternalIP,ExternalIP,Hostname"
    )]
    pub kubelet_preferred_address_types: Vec<String>,

    /// Path to a client cert file for TLS towards kubelets (kubectl-lite certs generate writes
    /// apiserver-kubelet-client.crt).
    #[arg(long, value_name = "FILE")]
    pub kubelet_client_certificate: Option<PathBuf>,

    /// Path to a client key file for TLS towards kubelets.
    #[arg(long, value_name = "FILE")]
    pub kubelet_client_key: Option<PathBuf>,

    /// Path to a cert file for the certificate authority that signs kubelets' serving
    /// certificates. Default: --client-ca-file (kube-lite's cluster CA signs both). Kubelets are
    /// always verified.
    #[arg(long, value_name = "FILE")]
    pub kubelet_certificate_authority: Option<PathBuf>,

    /// Timeout for reaching a kubelet (connection, TLS, the answer's head).
    #[arg(long, default_value = "5s", value_parser = kl_cli::duration)]
    pub kubelet_timeout: Duration,

    /// Ordered list of plug-ins to do authorization on the secure port: AlwaysAllow, or
    /// Node,RBAC (upstream's built-in roles and the Node authorizer with NodeRestriction, as
    /// kubeadm sets; see docs/SECURITY.md).
    #[arg(long, default_value = "AlwaysAllow", value_name = "MODES")]
    pub authorization_mode: apiserver::authz::Mode,
}

/// A comma-separated URL list as one flag value.
#[derive(Clone, Debug)]
pub struct Urls(pub Vec<String>);

fn urls(text: &str) -> Result<Urls, String> {
    kl_cli::url_list(text).map(Urls)
}

impl Flags {
    pub fn config(&self) -> Config {
        Config {
            etcd_servers: self.etcd_servers.clone().map(|u| u.0).unwrap_or_default(),
            etcd_cafile: self.etcd_cafile.clone(),
            etcd_certfile: self.etcd_certfile.clone(),
            etcd_keyfile: self.etcd_keyfile.clone(),
            etcd_prefix: self.etcd_prefix.clone(),
            bind_address: self.bind_address,
            secure_port: self.secure_port,
            advertise_address: self.advertise_address,
            tls_cert_file: self.tls_cert_file.clone(),
            tls_private_key_file: self.tls_private_key_file.clone(),
            client_ca_file: self.client_ca_file.clone(),
            shutdown_delay: self.shutdown_delay_duration,
            max_requests_inflight: self.max_requests_inflight,
            http2_max_streams_per_connection: self.http2_max_streams_per_connection,
            max_connections: self.max_connections,
            watch_cache_size: self.default_watch_cache_size,
            etcd_compaction_interval: self.etcd_compaction_interval,
            kubelet_preferred_address_types: self
                .kubelet_preferred_address_types
                .iter()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .collect(),
            kubelet_client_certificate: self.kubelet_client_certificate.clone(),
            kubelet_client_key: self.kubelet_client_key.clone(),
            kubelet_certificate_authority: self.kubelet_certificate_authority.clone(),
            kubelet_timeout: self.kubelet_timeout,
            authorization_mode: self.authorization_mode,
            ..Config::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_defaults_and_forms() {
        let f = Flags::parse_from(["apiserver"]);
        let c = f.config();
        assert_eq!(c.secure_port, 6443);
        assert_eq!(c.etcd_prefix, "/registry");
        assert_eq!(c.max_requests_inflight, 400);
        assert_eq!(c.shutdown_delay, Duration::ZERO);
        assert_eq!(c.etcd_compaction_interval, Duration::from_secs(300));
        assert_eq!(
            c.kubelet_preferred_address_types,
            ["InternalIP", "ExternalIP", "Hostname"]
        );
        assert_eq!(c.kubelet_timeout, Duration::from_secs(5));
        assert_eq!(c.kubelet_certificate_authority, None);
        assert_eq!(c.authorization_mode, apiserver::authz::Mode::AlwaysAllow);
        let c = Flags::parse_from(["apiserver", "--authorization-mode=Node,RBAC"]).config();
        assert_eq!(c.authorization_mode, apiserver::authz::Mode::NodeRbac);
        let e = Flags::try_parse_from(["apiserver", "--authorization-mode=ABAC"]).unwrap_err();
        assert!(e.to_string().contains("Node,RBAC"), "{e}");
        let c = Flags::parse_from([
            "apiserver",
            "--kubelet-preferred-address-types=Hostname,InternalIP",
            "--kubelet-client-certificate=/pki/apiserver-kubelet-client.crt",
            "--kubelet-client-key",
            "/pki/apiserver-kubelet-client.key",
            "--kubelet-timeout=2s",
        ])
        .config();
        assert_eq!(
            c.kubelet_preferred_address_types,
            ["Hostname", "InternalIP"]
        );
        assert!(c.kubelet_client_key.is_some() && c.kubelet_client_certificate.is_some());
        assert_eq!(c.kubelet_timeout, Duration::from_secs(2));
        let f = Flags::parse_from([
            "apiserver",
            "--etcd-servers=https://127.0.0.1:2379,https://127.0.0.1:2380",
            "--shutdown-delay-duration",
            "3s",
            "--etcd-compaction-interval=0",
        ]);
        let c = f.config();
        assert_eq!(c.etcd_servers.len(), 2);
        assert_eq!(c.shutdown_delay, Duration::from_secs(3));
        assert!(c.etcd_compaction_interval.is_zero());
        assert!(Flags::try_parse_from(["apiserver", "--etcd-servers=127.0.0.1:2379"]).is_err());
        assert!(Flags::try_parse_from(["apiserver", "--shutdown-delay-duration=3"]).is_err());
    }
}

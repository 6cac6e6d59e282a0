//! The apiserver's configuration: what kube-apiserver's flags say, checked once at start so
//! that a wrong value is an error naming the flag and the fix, never a failure later.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use crate::watch_cache::DEFAULT_WINDOW;

/// Everything `run` needs. The binary builds it from flags; tests build it directly.
#[derive(Clone, Debug)]
pub struct Config {
    /// `--etcd-servers`: every member's client URL; the apiserver fails over between them.
    pub etcd_servers: Vec<String>,
    /// `--etcd-cafile`: the CA that signed the etcd members' serving certificates.
    pub etcd_cafile: Option<PathBuf>,
    /// `--etcd-certfile` / `--etcd-keyfile`: the apiserver's client certificate for etcd.
    pub etcd_certfile: Option<PathBuf>,
    pub etcd_keyfile: Option<PathBuf>,
    /// `--etcd-prefix`: the root of every key (`/registry`).
    pub etcd_prefix: String,
    /// `--bind-address` and `--secure-port`: where gRPC and HTTPS are served.
    pub bind_address: IpAddr,
    pub secure_port: u16,
    /// `--advertise-address`: how other components reach this apiserver (its identity Lease,
    /// Version's `server`). Defaults to the bind address, or 127.0.0.1 when binding all.
    pub advertise_address: Option<IpAddr>,
    /// `--tls-cert-file` / `--tls-private-key-file`: the serving certificate.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_private_key_file: Option<PathBuf>,
    /// `--client-ca-file`: the CA client certificates must chain to (they are the identity).
    pub client_ca_file: Option<PathBuf>,
    /// `--shutdown-delay-duration`: how long to keep serving after SIGTERM, /readyz failing.
    pub shutdown_delay: Duration,
    /// `--max-requests-inflight`: concurrent non-watch requests beyond which requests are
    /// refused (0: no limit).
    pub max_requests_inflight: usize,
    /// `--http2-max-streams-per-connection`: the HTTP/2 streams one client connection may have
    /// open at once (SETTINGS_MAX_CONCURRENT_STREAMS); 0 means Go's default, 250.
    pub http2_max_streams_per_connection: u32,
    /// `--max-connections` (kube-lite's; kube-apiserver has no such cap): open connections
    /// beyond this are closed at once, before TLS.
    pub max_connections: usize,
    /// `--default-watch-cache-size`: events kept per resource for watch resumption.
    pub watch_cache_size: usize,
    /// `--etcd-compaction-interval`: how often etcd is compacted (0: never).
    pub etcd_compaction_interval: Duration,
    /// How long one etcd attempt on one member may take before the next member is tried.
    pub etcd_attempt_timeout: Duration,
    /// How long one etcd call may take across members and retries.
    pub etcd_call_timeout: Duration,
    /// `--kubelet-preferred-address-types`: which of a Node's `status.addresses` the apiserver
    /// dials its kubelet at (pods/log), the first type present winning. kubeadm's order.
    pub kubelet_preferred_address_types: Vec<String>,
    /// `--kubelet-client-certificate` / `--kubelet-client-key`: the apiserver's identity towards
    /// kubelets (kl-pki's `apiserver-kubelet-client`). Without them kubelets refuse it.
    pub kubelet_client_certificate: Option<PathBuf>,
    pub kubelet_client_key: Option<PathBuf>,
    /// `--kubelet-certificate-authority`: the CA kubelets' serving certificates must chain to.
    /// Unset: `--client-ca-file` (the cluster CA, which signs the kubelets' serving
    /// certificates). Upstream then skips verification; kube-lite never does.
    pub kubelet_certificate_authority: Option<PathBuf>,
    /// `--kubelet-timeout`: bound on reaching a kubelet (TCP, TLS) and on its answer's head.
    pub kubelet_timeout: Duration,
    /// `--authorization-mode`: AlwaysAllow (kube-apiserver's default) or Node,RBAC.
    pub authorization_mode: crate::authz::Mode,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            etcd_servers: Vec::new(),
            etcd_cafile: None,
            etcd_certfile: None,
            etcd_keyfile: None,
            etcd_prefix: "/registry".into(),
            bind_address: IpAddr::from([0, 0, 0, 0]),
            secure_port: 6443,
            advertise_address: None,
            tls_cert_file: None,
            tls_private_key_file: None,
            client_ca_file: None,
            shutdown_delay: Duration::ZERO,
            max_requests_inflight: 400,
            http2_max_streams_per_connection: 1000,
            max_connections: kl_tls::ConnLimits::SERVER_MAX_CONNECTIONS,
            watch_cache_size: DEFAULT_WINDOW,
            etcd_compaction_interval: Duration::from_secs(300),
            etcd_attempt_timeout: Duration::from_secs(3),
            etcd_call_timeout: Duration::from_secs(20),
            kubelet_preferred_address_types: crate::kubelet::DEFAULT_ADDRESS_TYPES
                .iter()
                .map(|t| t.to_string())
                .collect(),
            kubelet_client_certificate: None,
            kubelet_client_key: None,
            kubelet_certificate_authority: None,
            kubelet_timeout: Duration::from_secs(5),
            authorization_mode: crate::authz::Mode::AlwaysAllow,
        }
    }
}

/// A configuration that cannot work; the message names the flag and the fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Go's http2 server default, which `--http2-max-streams-per-connection=0` asks for.
    pub const GO_HTTP2_MAX_STREAMS: u32 = 250;

    /// The SETTINGS_MAX_CONCURRENT_STREAMS the server advertises.
    pub fn max_concurrent_streams(&self) -> u32 {
        match self.http2_max_streams_per_connection {
            0 => Self::GO_HTTP2_MAX_STREAMS,
            n => n,
        }
    }

    /// Checks what can be checked without touching the network.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: String| Err(ConfigError(m));
        if self.etcd_servers.is_empty() {
            return err("--etcd-servers is required: the client URLs of every etcd member, e.g. --etcd-servers=https://10.0.0.1:2379,https://10.0.0.2:2379".into());
        }
        for u in &self.etcd_servers {
            if kl_tls::is_tls_url(u) && self.etcd_cafile.is_none() {
                return err(format!("--etcd-servers has https URL {u} but --etcd-cafile is not set: give the CA that signed the etcd members' certificates"));
            }
        }
        if self.etcd_certfile.is_some() != self.etcd_keyfile.is_some() {
            return err("--etcd-certfile and --etcd-keyfile must be given together".into());
        }
        if !self.etcd_prefix.starts_with('/') || self.etcd_prefix.len() < 2 {
            return err(format!(
                "--etcd-prefix {:?} must start with '/' and name a path, e.g. /registry",
                self.etcd_prefix
            ));
        }
        for (flag, v) in [
            ("--tls-cert-file", &self.tls_cert_file),
            ("--tls-private-key-file", &self.tls_private_key_file),
            ("--client-ca-file", &self.client_ca_file),
        ] {
            if v.is_none() {
                return err(format!("{flag} is required: the apiserver serves only mutual TLS (run `kubectl-lite certs generate` for a PKI)"));
            }
        }
        if self.secure_port == 0 {
            return err("--secure-port must be between 1 and 65535".into());
        }
        if self.max_connections == 0 {
            return err("--max-connections must be at least 1 (default 10000)".into());
        }
        if self.watch_cache_size == 0 {
            return err("--default-watch-cache-size must be at least 1".into());
        }
        if self.kubelet_client_certificate.is_some() != self.kubelet_client_key.is_some() {
            return err(
                "--kubelet-client-certificate and --kubelet-client-key must be given together"
                    .into(),
            );
        }
        if self.kubelet_preferred_address_types.is_empty() {
            return err(format!(
                "--kubelet-preferred-address-types must name at least one address type, e.g. {}",
                crate::kubelet::DEFAULT_ADDRESS_TYPES.join(",")
            ));
        }
        for t in &self.kubelet_preferred_address_types {
            if !crate::kubelet::ADDRESS_TYPES.contains(&t.as_str()) {
                return err(format!(
                    "--kubelet-preferred-address-types: unknown address type {t:?}, use {}",
                    crate::kubelet::ADDRESS_TYPES.join(", ")
                ));
            }
        }
        if self.kubelet_timeout.is_zero() {
            return err("--kubelet-timeout must be greater than 0, e.g. 5s".into());
        }
        Ok(())
    }

    /// The CA kubelets' serving certificates must chain to: `--kubelet-certificate-authority`,
    /// else `--client-ca-file`.
    pub fn kubelet_ca(&self) -> Option<&std::path::Path> {
        self.kubelet_certificate_authority
            .as_deref()
            .or(self.client_ca_file.as_deref())
    }

    /// The prefix without a trailing slash.
    pub fn prefix(&self) -> String {
        self.etcd_prefix.trim_end_matches('/').to_string()
    }

    /// `<advertise-address>:<secure-port>`: this apiserver's identity.
    pub fn server_id(&self) -> String {
        let ip = self
            .advertise_address
            .unwrap_or(if self.bind_address.is_unspecified() {
                IpAddr::from([127, 0, 0, 1])
            } else {
                self.bind_address
            });
        match ip {
            IpAddr::V6(v6) => format!("[{v6}]:{}", self.secure_port),
            IpAddr::V4(v4) => format!("{v4}:{}", self.secure_port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Config {
        Config {
            etcd_servers: vec!["https://127.0.0.1:2379".into()],
            etcd_cafile: Some("ca.crt".into()),
            tls_cert_file: Some("s.crt".into()),
            tls_private_key_file: Some("s.key".into()),
            client_ca_file: Some("ca.crt".into()),
            ..Default::default()
        }
    }

    #[test]
    fn bad_configs_name_their_flag() {
        assert_eq!(good().validate(), Ok(()));
        let mut c = good();
        c.etcd_servers.clear();
        assert!(c
            .validate()
            .unwrap_err()
            .0
            .starts_with("--etcd-servers is required"));
        let mut c = good();
        c.etcd_cafile = None;
        assert!(c.validate().unwrap_err().0.contains("--etcd-cafile"));
        let mut c = good();
        c.etcd_certfile = Some("x".into());
        assert!(c.validate().unwrap_err().0.contains("--etcd-keyfile"));
        let mut c = good();
        c.client_ca_file = None;
        assert!(c
            .validate()
            .unwrap_err()
            .0
            .starts_with("--client-ca-file is required"));
        let mut c = good();
        c.etcd_prefix = "registry".into();
        assert!(c.validate().unwrap_err().0.starts_with("--etcd-prefix"));
        let mut c = good();
        c.kubelet_client_key = Some("k".into());
        assert!(c
            .validate()
            .unwrap_err()
            .0
            .starts_with("--kubelet-client-certificate and --kubelet-client-key"));
        let mut c = good();
        c.kubelet_preferred_address_types = vec!["InternalIP".into(), "Internal".into()];
        assert!(c.validate().unwrap_err().0.contains("\"Internal\""));
        c.kubelet_preferred_address_types.clear();
        assert!(c
            .validate()
            .unwrap_err()
            .0
            .starts_with("--kubelet-preferred-address-types"));
        let mut c = good();
        c.max_connections = 0;
        assert!(c.validate().unwrap_err().0.starts_with("--max-connections"));
    }

    #[test]
    fn stream_cap_zero_is_gos_default() {
        let mut c = good();
        assert_eq!(c.max_concurrent_streams(), 1000);
        c.http2_max_streams_per_connection = 0;
        assert_eq!(c.max_concurrent_streams(), 250);
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn the_kubelet_ca_defaults_to_the_client_ca() {
        let mut c = good();
        assert_eq!(c.kubelet_ca(), Some(std::path::Path::new("ca.crt")));
        c.kubelet_certificate_authority = Some("kubelet-ca.crt".into());
        assert_eq!(c.kubelet_ca(), Some(std::path::Path::new("kubelet-ca.crt")));
        assert_eq!(
            Config::default().kubelet_preferred_address_types,
            ["InternalIP", "ExternalIP", "Hostname"]
        );
    }

    #[test]
    fn identity_and_prefix() {
        let mut c = good();
        assert_eq!(c.server_id(), "127.0.0.1:6443");
        c.advertise_address = Some("10.0.0.5".parse().unwrap());
        c.etcd_prefix = "/registry/".into();
        assert_eq!(c.server_id(), "10.0.0.5:6443");
        assert_eq!(c.prefix(), "/registry");
    }
}

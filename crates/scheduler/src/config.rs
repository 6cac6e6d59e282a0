//! Everything the scheduler is started with, checked once at start so that a bad flag is an
//! error naming the flag, not a surprise later.
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use kl_client::LeaderElectionConfig;

/// Upstream's default `--leader-elect-resource-name` for the scheduler.
pub const DEFAULT_LEASE_NAME: &str = "kube-scheduler";
/// The scheduler's name in events (`source.component`), as upstream's default profile.
pub const SCHEDULER_NAME: &str = "default-scheduler";

/// Leader election, with client-go's names and defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderElection {
    /// `--leader-elect`: when false, this scheduler acts alone and unfenced.
    pub enabled: bool,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
    pub resource_name: String,
    pub resource_namespace: String,
    /// Only `leases` exists here, as in current upstream.
    pub resource_lock: String,
}

impl Default for LeaderElection {
    fn default() -> Self {
        LeaderElection {
            enabled: true,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            resource_name: DEFAULT_LEASE_NAME.into(),
            resource_namespace: "kube-system".into(),
            resource_lock: "leases".into(),
        }
    }
}

/// The scheduler's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `--kubeconfig`; None: `KUBECONFIG`, then `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// `--percentage-of-nodes-to-score`, 0 to 100 (0 = adaptive).
    pub percentage_of_nodes_to_score: u32,
    pub leader_election: LeaderElection,
    /// `--bind-address` and `--secure-port` of /healthz and /metrics; port 0 = none.
    pub bind_address: IpAddr,
    pub secure_port: u16,
    /// `--tls-cert-file`, `--tls-private-key-file`: none = a self-signed certificate.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_private_key_file: Option<PathBuf>,
    /// `--client-ca-file`: clients of /metrics must present a certificate it signed.
    pub client_ca_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            kubeconfig: None,
            percentage_of_nodes_to_score: 0,
            leader_election: LeaderElection::default(),
            bind_address: IpAddr::from([0, 0, 0, 0]),
            secure_port: 10259,
            tls_cert_file: None,
            tls_private_key_file: None,
            client_ca_file: None,
        }
    }
}

/// A configuration that cannot work; the message names the flag.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Checks the flags together, with upstream's rules and messages.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError(m));
        if self.percentage_of_nodes_to_score > 100 {
            return bad(format!(
                "--percentage-of-nodes-to-score: not in valid range [0-100], got {}",
                self.percentage_of_nodes_to_score
            ));
        }
        if self.tls_cert_file.is_some() != self.tls_private_key_file.is_some() {
            return bad("--tls-cert-file and --tls-private-key-file must be given together".into());
        }
        if self.client_ca_file.is_some() && self.tls_cert_file.is_none() {
            return bad("--client-ca-file needs --tls-cert-file and --tls-private-key-file".into());
        }
        let le = &self.leader_election;
        if !le.enabled {
            return Ok(());
        }
        if le.resource_lock != "leases" {
            return bad(format!(
                "--leader-elect-resource-lock: {:?} is not supported; only \"leases\" is",
                le.resource_lock
            ));
        }
        if le.resource_name.is_empty() || le.resource_namespace.is_empty() {
            return bad(
                "--leader-elect-resource-name and --leader-elect-resource-namespace must not be empty"
                    .into(),
            );
        }
        // client-go's rules, checked by the one leader-election library.
        if let Err(e) = self.leader_election_config("validation").validate() {
            return bad(format!(
                "invalid --leader-elect-lease-duration / --leader-elect-renew-deadline / \
                 --leader-elect-retry-period: {e}"
            ));
        }
        Ok(())
    }

    /// The leader-election library's configuration for candidate `identity`.
    pub fn leader_election_config(&self, identity: &str) -> LeaderElectionConfig {
        let le = &self.leader_election;
        LeaderElectionConfig::new(&le.resource_namespace, &le.resource_name, identity)
            .lease_duration(le.lease_duration)
            .renew_deadline(le.renew_deadline)
            .retry_period(le.retry_period)
            .release_on_cancel(true)
            .component(DEFAULT_LEASE_NAME)
    }

    /// Where /healthz and /metrics listen, if anywhere.
    pub fn secure_addr(&self) -> Option<SocketAddr> {
        (self.secure_port != 0).then(|| SocketAddr::new(self.bind_address, self.secure_port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_upstreams_and_valid() {
        let c = Config::default();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.secure_port, 10259);
        assert_eq!(c.leader_election.resource_name, "kube-scheduler");
        assert_eq!(c.leader_election.lease_duration, Duration::from_secs(15));
    }

    #[test]
    fn bad_combinations_are_refused_naming_the_flag() {
        let with = |f: &dyn Fn(&mut Config)| {
            let mut c = Config::default();
            f(&mut c);
            c.validate().unwrap_err().0
        };
        assert!(with(&|c| c.percentage_of_nodes_to_score = 101)
            .contains("--percentage-of-nodes-to-score"));
        assert!(
            with(&|c| c.leader_election.renew_deadline = Duration::from_secs(15))
                .contains("leaseDuration must be greater than renewDeadline")
        );
        assert!(
            with(&|c| c.leader_election.retry_period = Duration::from_secs(9))
                .contains("renewDeadline must be greater than retryPeriod*JitterFactor")
        );
        assert!(
            with(&|c| c.leader_election.resource_lock = "endpoints".into())
                .contains("--leader-elect-resource-lock")
        );
        assert!(with(&|c| c.tls_cert_file = Some("x".into())).contains("--tls-private-key-file"));
        let mut c = Config::default();
        c.leader_election.enabled = false;
        c.leader_election.renew_deadline = Duration::from_secs(99);
        assert_eq!(
            c.validate(),
            Ok(()),
            "leader election flags unused when it is off"
        );
    }
}

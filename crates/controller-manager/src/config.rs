//! What a controller-manager runs with: [`Config`] (built by the binary from
//! kube-controller-manager's flags) and [`Controllers`], the `--controllers` list.
use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use kl_client::leader_election::LeaderElectionConfig;

/// A controller this binary knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ControllerName {
    ReplicaSet,
    NodeLifecycle,
    GarbageCollector,
}

impl ControllerName {
    /// Every known controller, all on by default (`*`).
    pub const ALL: [ControllerName; 3] = [
        ControllerName::ReplicaSet,
        ControllerName::NodeLifecycle,
        ControllerName::GarbageCollector,
    ];

    /// The name `--controllers` uses (upstream's).
    pub fn as_str(self) -> &'static str {
        match self {
            ControllerName::ReplicaSet => "replicaset",
            ControllerName::NodeLifecycle => "nodelifecycle",
            ControllerName::GarbageCollector => "garbagecollector",
        }
    }

    pub fn from_name(name: &str) -> Option<ControllerName> {
        ControllerName::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

impl fmt::Display for ControllerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The enabled controllers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Controllers(pub BTreeSet<ControllerName>);

impl Default for Controllers {
    fn default() -> Self {
        Controllers(ControllerName::ALL.into_iter().collect())
    }
}

impl Controllers {
    /// Parses kube-controller-manager's `--controllers` list: `*` turns on every
    /// default-enabled controller, `foo` turns on foo, `-foo` turns off foo (and wins). An
    /// unknown name is an error naming the known ones.
    ///
    /// ```
    /// use controller_manager::config::{Controllers, ControllerName};
    /// let c = Controllers::parse("*,-garbagecollector").unwrap();
    /// assert!(c.enabled(ControllerName::ReplicaSet));
    /// assert!(!c.enabled(ControllerName::GarbageCollector));
    /// assert!(Controllers::parse("deployment").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Controllers, String> {
        let mut star = false;
        let mut on = BTreeSet::new();
        let mut off = BTreeSet::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item == "*" {
                star = true;
                continue;
            }
            let (negated, name) = match item.strip_prefix('-') {
                Some(n) => (true, n),
                None => (false, item),
            };
            let Some(c) = ControllerName::from_name(name) else {
                let known: Vec<&str> = ControllerName::ALL.iter().map(|c| c.as_str()).collect();
                return Err(format!(
                    "{name:?} is not in the list of known controllers (known: {}; use \"*\" for all, \"-name\" to disable one)",
                    known.join(", ")
                ));
            };
            if negated {
                off.insert(c);
            } else {
                on.insert(c);
            }
        }
        let mut set: BTreeSet<ControllerName> = if star {
            ControllerName::ALL.into_iter().collect()
        } else {
            BTreeSet::new()
        };
        set.extend(on);
        for c in off {
            set.remove(&c);
        }
        Ok(Controllers(set))
    }

    pub fn enabled(&self, c: ControllerName) -> bool {
        self.0.contains(&c)
    }
}

/// A configuration that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid leader election configuration: {0} (check --leader-elect-lease-duration, --leader-elect-renew-deadline and --leader-elect-retry-period)")]
    LeaderElection(#[from] kl_client::leader_election::ConfigError),
    #[error("--leader-elect-resource-lock: only \"leases\" is supported, got {0:?}")]
    ResourceLock(String),
    #[error("{flag} must be greater than zero")]
    Zero { flag: &'static str },
    #[error("--tls-cert-file and --tls-private-key-file must be given together")]
    HalfTls,
}

/// Everything a controller-manager needs to run. Defaults are kube-controller-manager's.
#[derive(Debug, Clone)]
pub struct Config {
    /// None: `KUBECONFIG`, then `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    pub controllers: Controllers,
    /// How often the node-lifecycle controller looks at every node.
    pub node_monitor_period: Duration,
    /// How long a node's Lease may go unrenewed (as seen here) before the node is Unknown.
    pub node_monitor_grace_period: Duration,
    /// How long a node stays Unknown before its pods are deleted.
    pub pod_eviction_timeout: Duration,
    /// ReplicaSet workers.
    pub concurrent_replicaset_syncs: usize,
    /// Run controllers only while holding the Lease (false: always, unfenced).
    pub leader_elect: bool,
    /// The election: Lease namespace/name, identity, timings.
    pub leader_election: LeaderElectionConfig,
    /// `--leader-elect-resource-lock`: only `leases`.
    pub resource_lock: String,
    /// Where /healthz and /metrics are served.
    pub bind_address: IpAddr,
    pub secure_port: u16,
    /// Serving certificate and key; without them the port serves plain HTTP.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_private_key_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            kubeconfig: None,
            controllers: Controllers::default(),
            node_monitor_period: Duration::from_secs(5),
            node_monitor_grace_period: Duration::from_secs(40),
            pod_eviction_timeout: Duration::from_secs(300),
            concurrent_replicaset_syncs: 5,
            leader_elect: true,
            leader_election: LeaderElectionConfig::new(
                "kube-system",
                "kube-controller-manager",
                &kl_client::leader_election::default_identity(),
            )
            .component("kube-controller-manager"),
            resource_lock: "leases".into(),
            bind_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            secure_port: 10257,
            tls_cert_file: None,
            tls_private_key_file: None,
        }
    }
}

impl Config {
    /// Refuses what cannot run, with the flag to fix in the message.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.leader_elect {
            self.leader_election.validate()?;
        }
        if self.resource_lock != "leases" {
            return Err(ConfigError::ResourceLock(self.resource_lock.clone()));
        }
        for (flag, d) in [
            ("--node-monitor-period", self.node_monitor_period),
            (
                "--node-monitor-grace-period",
                self.node_monitor_grace_period,
            ),
        ] {
            if d.is_zero() {
                return Err(ConfigError::Zero { flag });
            }
        }
        if self.concurrent_replicaset_syncs == 0 {
            return Err(ConfigError::Zero {
                flag: "--concurrent-replicaset-syncs",
            });
        }
        if self.tls_cert_file.is_some() != self.tls_private_key_file.is_some() {
            return Err(ConfigError::HalfTls);
        }
        Ok(())
    }

    pub fn serving_addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind_address, self.secure_port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controllers_lists_as_upstream() {
        assert_eq!(Controllers::parse("*").unwrap(), Controllers::default());
        let c = Controllers::parse("replicaset").unwrap();
        assert!(c.enabled(ControllerName::ReplicaSet));
        assert!(!c.enabled(ControllerName::NodeLifecycle));
        let c = Controllers::parse("*,-nodelifecycle,-garbagecollector").unwrap();
        assert_eq!(c.0.len(), 1);
        let e = Controllers::parse("*,bogus").unwrap_err();
        assert!(
            e.contains("\"bogus\" is not in the list of known controllers"),
            "{e}"
        );
        assert!(e.contains("replicaset"), "{e}");
        assert!(Controllers::parse("-bogus").is_err());
    }

    #[test]
    fn validation_names_the_flags() {
        assert!(Config::default().validate().is_ok());
        let mut c = Config::default();
        c.leader_election.renew_deadline = c.leader_election.lease_duration;
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("leaseDuration must be greater than renewDeadline"),
            "{e}"
        );
        assert!(e.contains("--leader-elect-renew-deadline"), "{e}");
        // Without leader election the timings do not matter.
        c.leader_elect = false;
        assert!(c.validate().is_ok());
        let c = Config {
            resource_lock: "endpoints".into(),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("leases"));
        let c = Config {
            tls_cert_file: Some("x".into()),
            ..Default::default()
        };
        assert!(matches!(c.validate(), Err(ConfigError::HalfTls)));
    }
}

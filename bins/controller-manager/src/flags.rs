//! kube-controller-manager's command line: the flags' names, meanings and defaults are
//! upstream's (only the ones kube-lite has a use for). Durations use Go's notation (`15s`,
//! `500ms`, `5m`); booleans accept `--flag`, `--flag=true` and `--flag true`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use controller_manager::{Config, Controllers};
use kl_client::leader_election::{default_identity, LeaderElectionConfig};

#[derive(Parser, Debug)]
#[command(
    name = "controller-manager",
    about = "The kube-lite controller-manager: leader-elected, fenced replicaset, nodelifecycle and garbagecollector controllers.",
    version
)]
pub struct Flags {
    /// Path to kubeconfig file with authorization and master location information (default:
    /// $KUBECONFIG, then ~/.kube/config).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// A list of controllers to enable. '*' enables all on-by-default controllers, 'foo'
    /// enables the controller named 'foo', '-foo' disables the controller named 'foo'.
    /// All controllers: garbagecollector, nodelifecycle, replicaset.
    #[arg(long, default_value = "*", value_parser = Controllers::parse)]
    pub controllers: Controllers,

    /// The period for syncing NodeStatus in NodeController.
    #[arg(long, default_value = "5s", value_parser = kl_cli::duration)]
    pub node_monitor_period: Duration,

    /// Amount of time which we allow running Node to be unresponsive before marking it
    /// unhealthy (its Lease not renewed, as observed by this process).
    #[arg(long, default_value = "40s", value_parser = kl_cli::duration)]
    pub node_monitor_grace_period: Duration,

    /// The grace period for deleting pods on failed nodes.
    #[arg(long, default_value = "5m", value_parser = kl_cli::duration)]
    pub pod_eviction_timeout: Duration,

    /// The number of replica sets that are allowed to sync concurrently.
    #[arg(long, default_value_t = 5)]
    pub concurrent_replicaset_syncs: usize,

    /// Start a leader election client and gain leadership before executing the main loop.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true",
          action = clap::ArgAction::Set, value_name = "BOOL")]
    pub leader_elect: bool,

    /// The duration that non-leader candidates will wait after observing a leadership renewal
    /// until attempting to acquire leadership of a led but unrenewed leader slot.
    #[arg(long, default_value = "15s", value_parser = kl_cli::duration)]
    pub leader_elect_lease_duration: Duration,

    /// The interval between attempts by the acting master to renew a leadership slot before it
    /// stops leading. Must be less than the lease duration.
    #[arg(long, default_value = "10s", value_parser = kl_cli::duration)]
    pub leader_elect_renew_deadline: Duration,

    /// The duration the clients should wait between attempting acquisition and renewal of a
    /// leadership.
    #[arg(long, default_value = "2s", value_parser = kl_cli::duration)]
    pub leader_elect_retry_period: Duration,

    /// The name of resource object that is used for locking during leader election.
    #[arg(long, default_value = "kube-controller-manager")]
    pub leader_elect_resource_name: String,

    /// The namespace of resource object that is used for locking during leader election.
    #[arg(long, default_value = "kube-system")]
    pub leader_elect_resource_namespace: String,

    /// The type of resource object that is used for locking during leader election. Only
    /// 'leases' is supported.
    #[arg(long, default_value = "leases")]
    pub leader_elect_resource_lock: String,

    /// The port on which to serve /healthz and /metrics (HTTPS with --tls-cert-file, else
    /// plain HTTP). 0 picks a free port.
    #[arg(long, default_value_t = 10257)]
    pub secure_port: u16,

    /// The IP address on which to listen for the --secure-port port.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind_address: IpAddr,

    /// File containing the x509 certificate for HTTPS. Without it (and
    /// --tls-private-key-file) the port serves plain HTTP: kube-lite generates no self-signed
    /// certificate.
    #[arg(long, value_name = "FILE")]
    pub tls_cert_file: Option<PathBuf>,

    /// File containing the x509 private key matching --tls-cert-file.
    #[arg(long, value_name = "FILE")]
    pub tls_private_key_file: Option<PathBuf>,
}

impl Flags {
    pub fn config(&self) -> anyhow::Result<Config> {
        let leader_election = LeaderElectionConfig::new(
            &self.leader_elect_resource_namespace,
            &self.leader_elect_resource_name,
            &default_identity(),
        )
        .lease_duration(self.leader_elect_lease_duration)
        .renew_deadline(self.leader_elect_renew_deadline)
        .retry_period(self.leader_elect_retry_period)
        .release_on_cancel(true)
        .component("kube-controller-manager");
        Ok(Config {
            kubeconfig: self.kubeconfig.clone(),
            controllers: self.controllers.clone(),
            node_monitor_period: self.node_monitor_period,
            node_monitor_grace_period: self.node_monitor_grace_period,
            pod_eviction_timeout: self.pod_eviction_timeout,
            concurrent_replicaset_syncs: self.concurrent_replicaset_syncs,
            leader_elect: self.leader_elect,
            leader_election,
            resource_lock: self.leader_elect_resource_lock.clone(),
            bind_address: self.bind_address,
            secure_port: self.secure_port,
            tls_cert_file: self.tls_cert_file.clone(),
            tls_private_key_file: self.tls_private_key_file.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_defaults() {
        let c = Flags::parse_from(["controller-manager"]).config().unwrap();
        assert!(c.leader_elect);
        assert_eq!(c.leader_election.lease_duration, Duration::from_secs(15));
        assert_eq!(c.leader_election.renew_deadline, Duration::from_secs(10));
        assert_eq!(c.leader_election.retry_period, Duration::from_secs(2));
        assert_eq!(c.leader_election.lease_name, "kube-controller-manager");
        assert_eq!(c.leader_election.lease_namespace, "kube-system");
        assert_eq!(c.secure_port, 10257);
        assert_eq!(c.pod_eviction_timeout, Duration::from_secs(300));
        assert_eq!(c.node_monitor_grace_period, Duration::from_secs(40));
        assert_eq!(c.concurrent_replicaset_syncs, 5);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn bool_flag_forms() {
        for (args, want) in [
            (vec!["x", "--leader-elect"], true),
            (vec!["x", "--leader-elect=true"], true),
            (vec!["x", "--leader-elect", "true"], true),
            (vec!["x", "--leader-elect=false"], false),
            (vec!["x", "--leader-elect", "false"], false),
        ] {
            assert_eq!(Flags::parse_from(&args).leader_elect, want, "{args:?}");
        }
    }

    #[test]
    fn bad_flags_are_refused() {
        assert!(Flags::try_parse_from(["x", "--controllers=*,deployment"]).is_err());
        let c = Flags::parse_from([
            "x",
            "--leader-elect-lease-duration=4s",
            "--leader-elect-renew-deadline=4s",
        ])
        .config()
        .unwrap();
        assert!(c.validate().is_err());
        assert!(Flags::try_parse_from(["x", "--node-monitor-period=5"]).is_err());
    }
}

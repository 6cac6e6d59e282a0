//! `scheduler`: kube-scheduler's flags in, [`scheduler::Config`] out, then [`scheduler::run`]
//! until SIGTERM or SIGINT.
#![forbid(unsafe_code)]

/// mimalloc, not glibc's malloc: a server allocating and freeing many small objects per
/// request spent a quarter of its CPU in glibc's allocator (docs/BENCHMARKS.md, scheduler).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{net::IpAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "scheduler",
    about = "Places pending pods on nodes (kube-scheduler): one active scheduler per cluster by \
             leader election, every write fenced by its lease."
)]
struct Flags {
    /// Path to a kubeconfig (default: KUBECONFIG, then ~/.kube/config).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,

    /// Percentage of nodes to look for feasible ones among, once 100 are found the search
    /// stops; 0 = adaptive (50% at 100 nodes down to 5% at 5,000), as upstream.
    #[arg(long, default_value_t = 0)]
    percentage_of_nodes_to_score: u32,

    /// Elect a leader among the schedulers; only the leader schedules.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true",
          action = clap::ArgAction::Set)]
    leader_elect: bool,

    /// How long a non-leader waits after the last observed renewal before taking over.
    #[arg(long, value_parser = kl_cli::duration, default_value = "15s")]
    leader_elect_lease_duration: Duration,

    /// How long the leader keeps trying to renew before it stops leading.
    #[arg(long, value_parser = kl_cli::duration, default_value = "10s")]
    leader_elect_renew_deadline: Duration,

    /// Time between attempts to acquire or renew the lease.
    #[arg(long, value_parser = kl_cli::duration, default_value = "2s")]
    leader_elect_retry_period: Duration,

    /// Name of the Lease object.
    #[arg(long, default_value = "kube-scheduler")]
    leader_elect_resource_name: String,

    /// Namespace of the Lease object.
    #[arg(long, default_value = "kube-system")]
    leader_elect_resource_namespace: String,

    /// Kind of lock object (only `leases`).
    #[arg(long, default_value = "leases")]
    leader_elect_resource_lock: String,

    /// Address of the secure port (/healthz, /metrics).
    #[arg(long, default_value = "0.0.0.0")]
    bind_address: IpAddr,

    /// HTTPS port of /healthz and /metrics; 0 = none.
    #[arg(long, default_value_t = 10259)]
    secure_port: u16,

    /// Serving certificate of the secure port (default: self-signed).
    #[arg(long, value_name = "FILE")]
    tls_cert_file: Option<PathBuf>,

    /// Key of --tls-cert-file.
    #[arg(long, value_name = "FILE")]
    tls_private_key_file: Option<PathBuf>,

    /// CA whose client certificates may read /metrics.
    #[arg(long, value_name = "FILE")]
    client_ca_file: Option<PathBuf>,
}

impl Flags {
    fn into_config(self) -> scheduler::Config {
        scheduler::Config {
            kubeconfig: self.kubeconfig,
            percentage_of_nodes_to_score: self.percentage_of_nodes_to_score,
            leader_election: scheduler::config::LeaderElection {
                enabled: self.leader_elect,
                lease_duration: self.leader_elect_lease_duration,
                renew_deadline: self.leader_elect_renew_deadline,
                retry_period: self.leader_elect_retry_period,
                resource_name: self.leader_elect_resource_name,
                resource_namespace: self.leader_elect_resource_namespace,
                resource_lock: self.leader_elect_resource_lock,
            },
            bind_address: self.bind_address,
            secure_port: self.secure_port,
            tls_cert_file: self.tls_cert_file,
            tls_private_key_file: self.tls_private_key_file,
            client_ca_file: self.client_ca_file,
        }
    }
}

fn main() -> ExitCode {
    // `<binary> healthcheck URL ...`: a GET for container health checks (kl_cli::healthcheck).
    if let Some(code) = kl_cli::healthcheck::dispatch() {
        return code;
    }
    let config = Flags::parse().into_config();
    if let Err(e) = config.validate() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    kl_cli::init_logging();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(scheduler::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

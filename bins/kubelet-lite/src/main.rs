//! `kubelet-lite`: the kubelet's flags in, [`kubelet::Config`] out, then [`kubelet::run::run`]
//! until SIGTERM or SIGINT. `kubelet-lite shim ...` is the per-container shim the kubelet
//! starts (see `kubelet::runtime`); it is not meant to be run by hand.
#![forbid(unsafe_code)]

/// mimalloc, not glibc's malloc: a server allocating and freeing many small objects per
/// request spent a quarter of its CPU in glibc's allocator (docs/BENCHMARKS.md, scheduler).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{net::IpAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "kubelet-lite",
    about = "The node agent (kubelet): registers this node, renews its Lease, and runs the pods \
             bound to it as real processes; or simulates many hollow nodes (--hollow-nodes)."
)]
struct Flags {
    /// Path to a kubeconfig (default: KUBECONFIG, then ~/.kube/config).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,

    /// The node's name (default: the host name; with --hollow-nodes, the prefix of the hollow
    /// nodes' names, default `hollow-node`).
    #[arg(long, value_name = "NAME")]
    hostname_override: Option<String>,

    /// The node's IP (its InternalIP, and every pod's IP: pods share the host's network).
    #[arg(long, default_value = "127.0.0.1")]
    node_ip: IpAddr,

    /// Where pods' working directories, runtime state and logs live.
    #[arg(long, default_value = "/var/lib/kubelet")]
    root_dir: PathBuf,

    /// Labels to add when registering the node (key=value,...).
    #[arg(long, value_parser = kubelet::config::parse_labels, default_value = "")]
    node_labels: std::collections::BTreeMap<String, String>,

    /// Taints the node registers with (key=value:Effect,...).
    #[arg(long, value_parser = parse_taints, default_value = "")]
    register_with_taints: TaintList,

    /// How often the node's status is computed (posted when it changed).
    #[arg(long, value_parser = kl_cli::duration, default_value = "10s")]
    node_status_update_frequency: Duration,

    /// The longest time between two posts of an unchanged node status.
    #[arg(long, value_parser = kl_cli::duration, default_value = "5m")]
    node_status_report_frequency: Duration,

    /// Duration of the node Lease; it is renewed every quarter of it.
    #[arg(long, default_value_t = 40)]
    node_lease_duration_seconds: u32,

    /// The most pods this node runs (its `pods` capacity).
    #[arg(long, default_value_t = 110)]
    max_pods: u32,

    /// CPU capacity to report (default: this machine's cores).
    #[arg(long)]
    cpu: Option<String>,

    /// Memory capacity to report (default: this machine's).
    #[arg(long)]
    memory: Option<String>,

    /// Address of the HTTPS port (logs, /healthz, /metrics).
    #[arg(long, default_value = "0.0.0.0")]
    address: IpAddr,

    /// The HTTPS port; 0 = none.
    #[arg(long, default_value_t = 10250)]
    port: u16,

    /// Serving certificate of the HTTPS port (default: self-signed).
    #[arg(long, value_name = "FILE")]
    tls_cert_file: Option<PathBuf>,

    /// Key of --tls-cert-file.
    #[arg(long, value_name = "FILE")]
    tls_private_key_file: Option<PathBuf>,

    /// CA that signs the clients allowed to read logs (the apiserver's kubelet client).
    #[arg(long, value_name = "FILE")]
    client_ca_file: Option<PathBuf>,

    /// Rotate a container's log file when it reaches this size.
    #[arg(long, value_parser = parse_size, default_value = "10Mi")]
    container_log_max_size: u64,

    /// How many log files (current + rotated) to keep per container.
    #[arg(long, default_value_t = 5)]
    container_log_max_files: usize,

    /// Run this many hollow nodes (simulated, no processes) instead of one real node.
    #[arg(long, default_value_t = 0)]
    hollow_nodes: u32,
}

#[derive(Debug, Clone)]
struct TaintList(Vec<kubelet::config::Taint>);

fn parse_taints(text: &str) -> Result<TaintList, String> {
    kubelet::config::parse_taints(text).map(TaintList)
}

/// `10Mi`, `512Ki`, `1000000` (bytes), as a Kubernetes quantity.
fn parse_size(text: &str) -> Result<u64, String> {
    text.parse::<kl_api::Quantity>()
        .map_err(|e| e.to_string())
        .and_then(|q| u64::try_from(q.value()).map_err(|_| "must not be negative".to_string()))
}

impl Flags {
    fn into_config(self) -> kubelet::Config {
        let default_name = if self.hollow_nodes > 0 {
            "hollow-node".to_string()
        } else {
            kubelet::config::default_node_name()
        };
        kubelet::Config {
            kubeconfig: self.kubeconfig,
            node_name: self.hostname_override.unwrap_or(default_name),
            node_ip: self.node_ip,
            root_dir: self.root_dir,
            node_labels: self.node_labels,
            register_with_taints: self.register_with_taints.0,
            node_status_update_frequency: self.node_status_update_frequency,
            node_status_report_frequency: self.node_status_report_frequency,
            node_lease_duration_seconds: self.node_lease_duration_seconds,
            max_pods: self.max_pods,
            cpu: self.cpu,
            memory: self.memory,
            address: self.address,
            port: self.port,
            tls_cert_file: self.tls_cert_file,
            tls_private_key_file: self.tls_private_key_file,
            client_ca_file: self.client_ca_file,
            container_log_max_size: self.container_log_max_size,
            container_log_max_files: self.container_log_max_files,
            hollow_nodes: self.hollow_nodes,
            shim_exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("kubelet-lite")),
        }
    }
}

fn main() -> ExitCode {
    // `<binary> healthcheck URL ...`: a GET for container health checks (kl_cli::healthcheck).
    if let Some(code) = kl_cli::healthcheck::dispatch() {
        return code;
    }
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("shim") {
        return kubelet::runtime::shim::main(args[2..].to_vec());
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
    match rt.block_on(kubelet::run::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_upstreams() {
        let c = Flags::parse_from(["kubelet-lite", "--hostname-override=worker1"]).into_config();
        assert_eq!(c.node_name, "worker1");
        assert_eq!(c.root_dir, PathBuf::from("/var/lib/kubelet"));
        assert_eq!(c.node_status_update_frequency, Duration::from_secs(10));
        assert_eq!(c.node_status_report_frequency, Duration::from_secs(300));
        assert_eq!(c.node_lease_duration_seconds, 40);
        assert_eq!(c.lease_renew_interval(), Duration::from_secs(10));
        assert_eq!(c.max_pods, 110);
        assert_eq!(c.port, 10250);
        assert_eq!(c.address, IpAddr::from([0, 0, 0, 0]));
        assert_eq!(c.container_log_max_size, 10 * 1024 * 1024);
        assert_eq!(c.container_log_max_files, 5);
        assert_eq!((c.cpu, c.memory), (None, None), "the machine's");
        assert_eq!(c.hollow_nodes, 0);
        // The flags' defaults and the library's agree.
        let c = Flags::parse_from(["kubelet-lite", "--hostname-override=worker1"]).into_config();
        assert_eq!(
            c,
            kubelet::Config {
                node_name: "worker1".into(),
                shim_exe: c.shim_exe.clone(),
                ..kubelet::Config::default()
            }
        );
        let hollow = Flags::parse_from(["kubelet-lite", "--hollow-nodes=3"]).into_config();
        assert_eq!(hollow.node_name, "hollow-node");
    }
}

//! `kl-bench`: kube-lite's load tool, driven by `scripts/bench`.
//!
//! ```text
//! kl-bench store put      --endpoints URLS [--cacert --cert --key] --clients N --total M
//!                         [--key-size B --val-size B --key-space K --conns C]
//! kl-bench store get      ... --consistency l|s
//! kl-bench store failover ... --duration 20s
//! kl-bench lb backend|load ...                    (see lb.rs)
//! kl-bench api create --kubeconfig F [--server URL] --clients N --conns C --total M
//! kl-bench api list   --kubeconfig F --namespace NS --repeat R
//! kl-bench api watch  --kubeconfig F --server URL --watchers W --conns C --writes M
//! kl-bench lease holder   --kubeconfig F --lease NS/NAME
//! kl-bench lease takeover --kubeconfig F --lease NS/NAME --holder ID --pid P --signal KILL|TERM
//! kl-bench pods startup   --kubeconfig F --total N --rate R      (see pods.rs)
//! kl-bench sched nodes|create|wait --kubeconfig F ...           (see sched.rs)
//! ```
//!
//! `store` is built on `etcd-client`, so it drives etcd-lite and real etcd the same way; `api`
//! on the generated `kubelite.v1.Api` client with the kubeconfig's TLS identity; `lease` on
//! kl-client (see lease.rs: the takeover time of a leader-elected component); `pods` and `sched`
//! on kl-client too, with an informer as the watch that observes pods bound and Running
//! (podwatch.rs).
//!
//! Each run prints one JSON line: throughput (requests/s), p50/p99/max latency (ms), and
//! counts; `failover` prints the longest gap between two successful writes while something
//! else (the harness) kills the leader. Every loop is bounded by a count and by
//! `--max-duration`.
#![forbid(unsafe_code)]

mod api;
mod lb;
mod lease;
mod pods;
mod podwatch;
mod sched;
mod stats;
mod store;

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(name = "kl-bench", about = "load tool of kube-lite (store, lb, API)")]
struct Cli {
    #[command(subcommand)]
    target: Target,
}

#[derive(Subcommand, Debug)]
enum Target {
    /// Benchmarks of the store (etcd v3 API).
    Store {
        #[command(subcommand)]
        bench: StoreBench,
    },
    /// Benchmarks of the TCP load balancer (`scripts/bench lb`).
    Lb {
        #[command(subcommand)]
        bench: lb::LbBench,
    },
    /// Benchmarks of the kube-lite API (`scripts/bench api`).
    Api {
        #[command(subcommand)]
        bench: api::ApiBench,
    },
    /// Leader election: who holds a Lease, how long a takeover takes (`scripts/bench failover`).
    Lease {
        #[command(subcommand)]
        bench: lease::LeaseBench,
    },
    /// Pod startup latency: create → Running observed by a watch (`scripts/bench pods`).
    Pods {
        #[command(subcommand)]
        bench: pods::PodsBench,
    },
    /// Scheduling throughput with hollow nodes (`scripts/bench scheduler`).
    Sched {
        #[command(subcommand)]
        bench: sched::SchedBench,
    },
}

#[derive(Subcommand, Debug)]
enum StoreBench {
    /// Puts `--total` keys from `--clients` concurrent clients.
    Put(Load),
    /// Ranges over single keys (written by a `put` run with the same key flags).
    Get {
        #[command(flatten)]
        load: Load,
        /// `l` linearizable (ReadIndex) or `s` serializable (local).
        #[arg(long, value_enum, default_value = "l")]
        consistency: Consistency,
    },
    /// Writes continuously for `--duration` and reports the longest gap between successful
    /// writes (kill the leader meanwhile).
    Failover {
        #[command(flatten)]
        conn: Conn,
        /// How long to write.
        #[arg(long, value_parser = kl_cli::duration, default_value = "20s")]
        duration: Duration,
        /// Concurrent writers.
        #[arg(long, default_value_t = 1)]
        clients: usize,
        /// Free text copied into the JSON output (e.g. which store this is).
        #[arg(long, default_value = "")]
        label: String,
    },
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Consistency {
    L,
    S,
}

/// Where and how to connect.
#[derive(Args, Debug, Clone)]
pub struct Conn {
    /// Comma-separated client URLs. (The full path keeps clap from treating the field as a
    /// repeated argument: the parser returns the whole list.)
    #[arg(long, required = true, value_parser = kl_cli::url_list)]
    endpoints: ::std::vec::Vec<String>,
    /// CA that signed the servers (TLS when given, as etcdctl's --cacert).
    #[arg(long)]
    cacert: Option<PathBuf>,
    /// Client certificate for mutual TLS.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// Client key for mutual TLS.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Per-request timeout.
    #[arg(long, value_parser = kl_cli::duration, default_value = "10s")]
    request_timeout: Duration,
}

/// A put or get load.
#[derive(Args, Debug, Clone)]
pub struct Load {
    #[command(flatten)]
    conn: Conn,
    /// Concurrent clients (each with one request in flight).
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// gRPC connections shared by the clients; connection i goes to endpoint i mod n, as in
    /// etcd's own benchmark tool.
    #[arg(long, default_value_t = 1)]
    conns: usize,
    /// Requests in total.
    #[arg(long, default_value_t = 10_000)]
    total: usize,
    /// Key size in bytes.
    #[arg(long, default_value_t = 8)]
    key_size: usize,
    /// Value size in bytes (put).
    #[arg(long, default_value_t = 256)]
    val_size: usize,
    /// Number of distinct keys (default: --total).
    #[arg(long)]
    key_space: Option<usize>,
    /// Upper bound of the run; requests not sent by then are not sent.
    #[arg(long, value_parser = kl_cli::duration, default_value = "300s")]
    max_duration: Duration,
    /// Free text copied into the JSON output (e.g. which store this is).
    #[arg(long, default_value = "")]
    label: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let bench = match cli.target {
        Target::Store { bench } => bench,
        Target::Lb { bench } => {
            if let Some(line) = lb::run(bench).await? {
                println!("{line}");
            }
            return Ok(());
        }
        Target::Api { bench } => {
            println!("{}", api::run(bench).await?);
            return Ok(());
        }
        Target::Lease { bench } => {
            println!("{}", lease::run(bench).await?);
            return Ok(());
        }
        Target::Pods { bench } => {
            println!("{}", pods::run(bench).await?);
            return Ok(());
        }
        Target::Sched { bench } => {
            println!("{}", sched::run(bench).await?);
            return Ok(());
        }
    };
    let line = match bench {
        StoreBench::Put(load) => store::put(&load).await?,
        StoreBench::Get { load, consistency } => store::get(&load, consistency).await?,
        StoreBench::Failover {
            conn,
            duration,
            clients,
            label,
        } => store::failover(&conn, duration, clients, &label).await?,
    };
    println!("{line}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_a_put_run() {
        let cli = Cli::try_parse_from([
            "kl-bench",
            "store",
            "put",
            "--endpoints",
            "https://127.0.0.1:1,https://127.0.0.1:2",
            "--cacert=/ca",
            "--cert=/c",
            "--key=/k",
            "--clients",
            "16",
            "--total",
            "100",
        ])
        .expect("parses");
        let Target::Store {
            bench: StoreBench::Put(load),
        } = cli.target
        else {
            panic!("not a put");
        };
        assert_eq!(
            load.conn.endpoints,
            ["https://127.0.0.1:1", "https://127.0.0.1:2"]
        );
        assert_eq!((load.clients, load.total), (16, 100));
        assert!(Cli::try_parse_from(["kl-bench", "store", "put", "--cert=/c"]).is_err());
    }

    #[test]
    fn parses_an_api_watch_run() {
        let cli = Cli::try_parse_from([
            "kl-bench",
            "api",
            "watch",
            "--kubeconfig=/k",
            "--server=https://127.0.0.1:16443",
            "--watchers=1000",
            "--conns=20",
            "--writes=50",
        ])
        .expect("parses");
        assert!(matches!(
            cli.target,
            Target::Api {
                bench: api::ApiBench::Watch(_)
            }
        ));
        assert!(Cli::try_parse_from(["kl-bench", "api", "create"]).is_err());
    }

    #[test]
    fn parses_pods_and_sched_runs() {
        let cli = Cli::try_parse_from([
            "kl-bench",
            "pods",
            "startup",
            "--kubeconfig=/k",
            "--total=100",
            "--rate=10",
        ])
        .expect("parses");
        assert!(matches!(cli.target, Target::Pods { .. }));
        let cli = Cli::try_parse_from([
            "kl-bench",
            "sched",
            "create",
            "--kubeconfig=/k",
            "--total=3000",
            "--wait-bound=false",
        ])
        .expect("parses");
        assert!(matches!(
            cli.target,
            Target::Sched {
                bench: sched::SchedBench::Create(_)
            }
        ));
        assert!(Cli::try_parse_from(["kl-bench", "sched", "wait", "--kubeconfig=/k"]).is_err());
    }

    #[test]
    fn parses_a_lease_takeover_run() {
        let cli = Cli::try_parse_from([
            "kl-bench",
            "lease",
            "takeover",
            "--kubeconfig=/k",
            "--lease=kube-system/kube-scheduler",
            "--holder=host_1234",
            "--pid=42",
            "--signal=TERM",
            "--poll=50ms",
        ])
        .expect("parses");
        assert!(matches!(
            cli.target,
            Target::Lease {
                bench: lease::LeaseBench::Takeover(_)
            }
        ));
        // The holder and the pid are what make a trial: both required.
        assert!(Cli::try_parse_from([
            "kl-bench",
            "lease",
            "takeover",
            "--kubeconfig=/k",
            "--pid=42"
        ])
        .is_err());
    }
}

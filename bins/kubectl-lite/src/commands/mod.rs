//! The subcommands of `kubectl-lite`, one module each. A new verb is a new module, a new
//! [`Command`] variant and one line in [`run_with`].
//!
//! Commands write their normal output to the `out` they are given (stdout in the binary, a
//! buffer in tests) and notes and per-object errors to `err` (stderr), and return errors
//! instead of printing them. [`session`] connects to the cluster (kl-client) and words errors
//! as kubectl does; [`printers`], [`tabwriter`] and [`timefmt`] shape the output.

use std::io::Write;

use clap::{Parser, Subcommand};

pub mod apply;
pub mod certs;
pub mod cluster_info;
pub mod cordon;
pub mod delete;
pub mod describe;
pub mod get;
pub mod logs;
pub mod printers;
pub mod resources;
pub mod scale;
pub mod session;
pub mod tabwriter;
pub mod timefmt;
pub mod version;

pub use session::{error_message, Globals};

/// The whole command line; `about` is the crate's description.
#[derive(Debug, Parser)]
#[command(name = "kubectl-lite", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub globals: Globals,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage the cluster's certificates (kubeadm's `certs` phase).
    Certs(certs::CertsArgs),
    /// Display one or many resources.
    Get(get::GetArgs),
    /// Show details of a specific resource or group of resources.
    Describe(describe::DescribeArgs),
    /// Apply a configuration to a resource by file name or stdin (create or update).
    Apply(apply::ApplyArgs),
    /// Create a resource from a file or from stdin.
    Create(apply::CreateArgs),
    /// Delete resources by file names, stdin, resources and names, or by label selector.
    Delete(delete::DeleteArgs),
    /// Print the logs for a container in a pod.
    Logs(logs::LogsArgs),
    /// Set a new size for a replica set.
    Scale(scale::ScaleArgs),
    /// Mark node as unschedulable.
    Cordon(cordon::CordonArgs),
    /// Mark node as schedulable.
    Uncordon(cordon::CordonArgs),
    /// Display cluster information: apiservers, etcd members, component leaders.
    ClusterInfo(cluster_info::ClusterInfoArgs),
    /// Print the client and server version information.
    Version(version::VersionArgs),
}

/// Runs one parsed command line; notes and per-object errors go to stderr (tests use it).
#[cfg(test)]
pub fn run(cli: Cli, out: &mut dyn Write) -> anyhow::Result<()> {
    run_with(cli, out, &mut std::io::stderr())
}

/// Runs one parsed command line with explicit stdout and stderr.
pub fn run_with(cli: Cli, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<()> {
    let g = &cli.globals;
    match cli.command {
        Command::Certs(args) => certs::run(args, out),
        Command::Version(args) => version::run(g, args, out),
        Command::Get(args) => session::block_on(get::run(g, args, out, err)),
        Command::Describe(args) => session::block_on(describe::run(g, args, out, err)),
        Command::Apply(args) => session::block_on(apply::run_apply(g, args, out, err)),
        Command::Create(args) => session::block_on(apply::run_create(g, args, out, err)),
        Command::Delete(args) => session::block_on(delete::run(g, args, out, err)),
        Command::Logs(args) => session::block_on(logs::run(g, args, out, err)),
        Command::Scale(args) => session::block_on(scale::run(g, args, out)),
        Command::Cordon(args) => session::block_on(cordon::run(g, args, true, out, err)),
        Command::Uncordon(args) => session::block_on(cordon::run(g, args, false, out, err)),
        Command::ClusterInfo(args) => session::block_on(cluster_info::run(g, args, out)),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn unknown_subcommands_are_refused() {
        assert!(Cli::try_parse_from(["kubectl-lite", "frobnicate"]).is_err());
        assert!(Cli::try_parse_from(["kubectl-lite"]).is_err());
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = Cli::try_parse_from([
            "kubectl-lite",
            "get",
            "pods",
            "-n",
            "kube-system",
            "--kubeconfig=/x",
            "--request-timeout",
            "5s",
            "--context",
            "c",
        ])
        .unwrap();
        assert_eq!(cli.globals.namespace.as_deref(), Some("kube-system"));
        assert_eq!(
            cli.globals.kubeconfig.as_deref(),
            Some(std::path::Path::new("/x"))
        );
        assert_eq!(cli.globals.context.as_deref(), Some("c"));
        assert_eq!(
            cli.globals.request_timeout().unwrap(),
            Some(Some(std::time::Duration::from_secs(5)))
        );
        let cli = Cli::try_parse_from(["kubectl-lite", "--namespace", "a", "delete", "pod", "x"])
            .unwrap();
        assert_eq!(cli.globals.namespace.as_deref(), Some("a"));
    }
}

//! The subcommands of `kubectl-lite`, one module each. A new verb (`get`, `apply`, ...) is a new
//! module, a new [`Command`] variant and one line in [`run`].
//!
//! Commands write their normal output to the `out` they are given (stdout in the binary, a
//! buffer in tests) and return errors instead of printing them.

use std::io::Write;

use clap::{Parser, Subcommand};

pub mod certs;
pub mod version;

/// The whole command line; `about` is the crate's description.
#[derive(Debug, Parser)]
#[command(name = "kubectl-lite", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage the cluster's certificates (kubeadm's `certs` phase).
    Certs(certs::CertsArgs),
    /// Print the client version.
    Version(version::VersionArgs),
}

/// Runs one parsed command line.
pub fn run(cli: Cli, out: &mut dyn Write) -> anyhow::Result<()> {
    match cli.command {
        Command::Certs(args) => certs::run(args, out),
        Command::Version(args) => version::run(args, out),
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
}

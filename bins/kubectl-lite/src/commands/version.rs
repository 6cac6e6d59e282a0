//! `kubectl-lite version`: the client's version and the server's (the Version RPC, through
//! the lb), in kubectl's words. `--client` stays offline.

use std::io::Write;

use clap::Args;

use super::session::{block_on, Globals, Session};

#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Print the client version only (no connection to the server).
    #[arg(long)]
    pub client: bool,
}

/// The version of this build, from the workspace's `Cargo.toml`.
pub const CLIENT_VERSION: &str = env!("CARGO_PKG_VERSION");

pub fn run(g: &Globals, args: VersionArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    writeln!(out, "Client Version: v{CLIENT_VERSION}")?;
    if args.client {
        return Ok(());
    }
    // The client's channel needs the runtime from the start.
    let info = block_on(async { Ok(Session::connect(g)?.client.version().await?) })?;
    writeln!(out, "Server Version: {}", info.git_version)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::commands::{run, Cli};

    #[test]
    fn prints_the_client_version_offline() {
        let cli = Cli::try_parse_from(["kubectl-lite", "version", "--client"]).unwrap();
        let mut out = Vec::new();
        run(cli, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            format!("Client Version: v{}\n", env!("CARGO_PKG_VERSION"))
        );
    }
}

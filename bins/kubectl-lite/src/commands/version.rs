//! `kubectl-lite version`: the client's version, in kubectl's words. When the apiserver lands,
//! this also asks it for the server version, as `kubectl version` does.

use std::io::Write;

use clap::Args;

#[derive(Debug, Args)]
pub struct VersionArgs {}

/// The version of this build, from the workspace's `Cargo.toml`.
pub const CLIENT_VERSION: &str = env!("CARGO_PKG_VERSION");

pub fn run(_args: VersionArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    writeln!(out, "Client Version: v{CLIENT_VERSION}")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::commands::{run, Cli};

    #[test]
    fn prints_the_client_version() {
        let cli = Cli::try_parse_from(["kubectl-lite", "version"]).unwrap();
        let mut out = Vec::new();
        run(cli, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            format!("Client Version: v{}\n", env!("CARGO_PKG_VERSION"))
        );
    }
}

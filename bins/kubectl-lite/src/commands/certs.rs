//! `kubectl-lite certs ...`: the cluster PKI, as kubeadm's `certs` phase. The generation itself
//! is `kl_pki::generate`; this module turns flags into a `PkiSpec` and reports what was written.

use std::{io::Write, path::PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    pub command: CertsCommand,
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Write the PKI tree (CA, etcd server/peer/client certificates) into a directory.
    ///
    /// An existing CA in the directory (ca.crt + ca.key) is reused, so certificates issued
    /// earlier stay valid; every other certificate is issued anew.
    Generate(GenerateArgs),
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Directory to write into, laid out like kubeadm's /etc/kubernetes/pki; created if missing.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// An extra name or IP address the serving certificates are valid for (repeatable).
    /// localhost, 127.0.0.1 and ::1 are always included.
    #[arg(long = "san", value_name = "NAME")]
    pub san: Vec<String>,
    /// Extra names or IP addresses, comma-separated (adds to --san).
    #[arg(long, value_name = "A,B,C", value_delimiter = ',')]
    pub sans: Vec<String>,
}

impl GenerateArgs {
    /// The generation request: `--san` values first, then `--sans`, empty items dropped (so a
    /// trailing comma is harmless).
    pub fn spec(&self) -> kl_pki::PkiSpec {
        kl_pki::PkiSpec::new().sans(
            self.san
                .iter()
                .chain(&self.sans)
                .map(|s| s.trim())
                .filter(|s| !s.is_empty()),
        )
    }
}

pub fn run(args: CertsArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    match args.command {
        CertsCommand::Generate(args) => generate(&args, out),
    }
}

fn generate(args: &GenerateArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let generated = kl_pki::generate(&args.spec(), &args.out)
        .with_context(|| format!("generating certificates in {}", args.out.display()))?;
    let ca = kl_pki::paths::CA.cert_in(&args.out);
    match generated.ca {
        kl_pki::CaOrigin::Created => writeln!(out, "[certs] created a new CA: {}", ca.display())?,
        kl_pki::CaOrigin::Reused => writeln!(
            out,
            "[certs] using the existing CA {} (certificates it signed before stay valid)",
            ca.display()
        )?,
    }
    let sans: Vec<String> = generated.sans.iter().map(ToString::to_string).collect();
    writeln!(
        out,
        "[certs] serving certificates are valid for: {}",
        sans.join(", ")
    )?;
    let width = generated
        .files
        .iter()
        .map(|f| f.path.display().to_string().len())
        .max()
        .unwrap_or(0);
    for file in &generated.files {
        writeln!(
            out,
            "[certs] wrote {:width$}  {}",
            file.path.display().to_string(),
            file.what
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::commands::{run as run_cli, Cli, Command};

    fn parse(args: &[&str]) -> GenerateArgs {
        let cli = Cli::try_parse_from(args).unwrap();
        match cli.command {
            Command::Certs(CertsArgs {
                command: CertsCommand::Generate(g),
            }) => g,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn san_flags_combine() {
        let g = parse(&[
            "kubectl-lite",
            "certs",
            "generate",
            "--out",
            "/tmp/x",
            "--san",
            "etcd1",
            "--sans",
            "etcd2,10.0.0.3,",
            "--san=lb",
        ]);
        assert_eq!(g.spec().sans, ["etcd1", "lb", "etcd2", "10.0.0.3"]);
    }

    #[test]
    fn out_is_required() {
        assert!(Cli::try_parse_from(["kubectl-lite", "certs", "generate"]).is_err());
    }

    #[test]
    fn generates_and_reports_every_file() {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        let pki_arg = pki.display().to_string();
        let argv = [
            "kubectl-lite",
            "certs",
            "generate",
            "--out",
            &pki_arg,
            "--san",
            "etcd1",
        ];
        let mut out = Vec::new();
        run_cli(Cli::try_parse_from(argv).unwrap(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("created a new CA"), "{text}");
        assert!(text.contains("localhost, 127.0.0.1, ::1, etcd1"), "{text}");
        for rel in [
            "ca.crt",
            "etcd/server.key",
            "etcd/admin.crt",
            "apiserver-etcd-client.crt",
        ] {
            assert!(pki.join(rel).exists(), "{rel}");
            assert!(
                text.contains(&pki.join(rel).display().to_string()),
                "{rel}: {text}"
            );
        }

        let mut out = Vec::new();
        run_cli(Cli::try_parse_from(argv).unwrap(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("using the existing CA"), "{text}");
    }

    #[test]
    fn a_bad_san_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let pki_arg = dir.path().display().to_string();
        let cli = Cli::try_parse_from([
            "kubectl-lite",
            "certs",
            "generate",
            "--out",
            &pki_arg,
            "--san",
            "https://etcd1:2379",
        ])
        .unwrap();
        let err = run_cli(cli, &mut Vec::new()).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("https://etcd1:2379"), "{msg}");
        assert!(msg.contains("not a URL"), "{msg}");
    }
}

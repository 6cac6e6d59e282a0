//! `kubectl-lite certs ...`: the cluster PKI, as kubeadm's `certs` and `kubeconfig` phases. The
//! generation itself is `kl_pki::generate`; this module turns flags into a `PkiSpec`, writes one
//! kubeconfig per identity it hands back (`kl_client::Kubeconfig::embedded`, PEM embedded as in
//! kubeadm's `admin.conf`) and reports what was written.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::Context;
use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    pub command: CertsCommand,
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Write the PKI tree (CA; etcd, apiserver, component and node certificates) into a
    /// directory, and a kubeconfig per identity (admin, controller-manager, scheduler, each
    /// node) next to it.
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
    /// A worker node (repeatable): gets a client identity system:node:NAME with NAME.kubeconfig,
    /// and a kubelet serving certificate nodes/NAME.crt.
    #[arg(long = "node", value_name = "NAME")]
    pub node: Vec<String>,
    /// The API server URL the kubeconfigs point at: the load balancer in front of the
    /// apiservers.
    #[arg(long, value_name = "URL", default_value = DEFAULT_SERVER)]
    pub server: String,
    /// Where the kubeconfigs are written (default: the parent directory of --out, as kubeadm
    /// writes /etc/kubernetes/admin.conf next to /etc/kubernetes/pki).
    #[arg(long, value_name = "DIR")]
    pub kubeconfig_dir: Option<PathBuf>,
}

/// The lb on its default port, on this machine.
pub const DEFAULT_SERVER: &str = "https://127.0.0.1:6443";

/// The cluster's name in every kubeconfig written.
pub const CLUSTER_NAME: &str = "kube-lite";

impl GenerateArgs {
    /// The generation request: `--san` values first, then `--sans`, empty items dropped (so a
    /// trailing comma is harmless).
    pub fn spec(&self) -> kl_pki::PkiSpec {
        kl_pki::PkiSpec::new()
            .sans(
                self.san
                    .iter()
                    .chain(&self.sans)
                    .map(|s| s.trim())
                    .filter(|s| !s.is_empty()),
            )
            .nodes(self.node.iter().map(|s| s.trim()))
    }

    /// `--kubeconfig-dir`, or the parent of `--out` (`.` when `--out` has none).
    pub fn kubeconfig_dir(&self) -> PathBuf {
        match &self.kubeconfig_dir {
            Some(dir) => dir.clone(),
            None => match self.out.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            },
        }
    }
}

/// Checks `--server` before anything is written: kube-lite speaks TLS only, and the URL must
/// name a host.
fn check_server(server: &str) -> anyhow::Result<()> {
    let rest = server.strip_prefix("https://").ok_or_else(|| {
        anyhow::anyhow!("--server {server:?}: must be an https:// URL (kube-lite always uses TLS)")
    })?;
    let host_port = rest.split('/').next().unwrap_or_default();
    if host_port.is_empty() || host_port.starts_with(':') {
        anyhow::bail!("--server {server:?}: no host (expected https://HOST[:PORT])");
    }
    Ok(())
}

/// Writes `<dir>/<identity>.kubeconfig` for each identity; returns the paths.
fn write_kubeconfigs(
    generated: &kl_pki::Generated,
    server: &str,
    dir: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the kubeconfig directory {}", dir.display()))?;
    let mut written = Vec::new();
    for id in &generated.identities {
        let path = dir.join(format!("{}.kubeconfig", id.kubeconfig));
        kl_client::Kubeconfig::embedded(
            CLUSTER_NAME,
            server,
            generated.ca_pem.as_bytes(),
            &id.user,
            id.cert_pem.as_bytes(),
            id.key_pem.as_bytes(),
        )
        .write(&path)?;
        written.push(path);
    }
    Ok(written)
}

pub fn run(args: CertsArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    match args.command {
        CertsCommand::Generate(args) => generate(&args, out),
    }
}

fn generate(args: &GenerateArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    check_server(&args.server)?;
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
        "[certs] etcd serving certificates are valid for: {}",
        sans.join(", ")
    )?;
    let sans: Vec<String> = generated
        .apiserver_sans
        .iter()
        .map(ToString::to_string)
        .collect();
    writeln!(
        out,
        "[certs] the apiserver serving certificate is valid for: {}",
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
    let kubeconfig_dir = args.kubeconfig_dir();
    for (path, id) in write_kubeconfigs(&generated, &args.server, &kubeconfig_dir)?
        .iter()
        .zip(&generated.identities)
    {
        writeln!(
            out,
            "[kubeconfig] wrote {}  user {}, server {}",
            path.display(),
            id.user,
            args.server
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

    fn run_generate(args: &[&str]) -> anyhow::Result<String> {
        let mut argv = vec!["kubectl-lite", "certs", "generate"];
        argv.extend_from_slice(args);
        let mut out = Vec::new();
        run_cli(Cli::try_parse_from(argv)?, &mut out)?;
        Ok(String::from_utf8(out)?)
    }

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn kubeconfig_flags_default_to_the_lb_and_the_parent_of_out() {
        let g = parse(&["kubectl-lite", "certs", "generate", "--out", "/x/state/pki"]);
        assert_eq!(g.server, "https://127.0.0.1:6443");
        assert_eq!(g.kubeconfig_dir(), PathBuf::from("/x/state"));
        assert!(g.node.is_empty());
        let g = parse(&["kubectl-lite", "certs", "generate", "--out", "pki"]);
        assert_eq!(g.kubeconfig_dir(), PathBuf::from("."));
        let g = parse(&[
            "kubectl-lite",
            "certs",
            "generate",
            "--out=pki",
            "--kubeconfig-dir=/k",
            "--node=w1",
            "--node",
            "w2",
            "--server=https://lb:6443",
        ]);
        assert_eq!(g.kubeconfig_dir(), PathBuf::from("/k"));
        assert_eq!(g.spec().nodes, ["w1", "w2"]);
        assert_eq!(g.server, "https://lb:6443");
    }

    #[test]
    fn writes_a_kubeconfig_per_identity_that_resolves_and_chains_to_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        let text = run_generate(&[
            "--out",
            &pki.display().to_string(),
            "--node",
            "worker1",
            "--node=worker2",
            "--server",
            "https://127.0.0.1:16443",
        ])
        .unwrap();
        let ca_pem = std::fs::read(pki.join("ca.crt")).unwrap();
        for (file, user, groups) in [
            ("admin", "kubernetes-admin", vec!["system:masters"]),
            (
                "controller-manager",
                "system:kube-controller-manager",
                vec![],
            ),
            ("scheduler", "system:kube-scheduler", vec![]),
            ("worker1", "system:node:worker1", vec!["system:nodes"]),
            ("worker2", "system:node:worker2", vec!["system:nodes"]),
        ] {
            let path = dir.path().join(format!("{file}.kubeconfig"));
            assert_eq!(mode(&path), 0o600, "{file}: it holds a private key");
            assert!(
                text.contains(&format!("[kubeconfig] wrote {}", path.display())),
                "{text}"
            );
            let cfg = kl_client::Kubeconfig::load(&path).unwrap();
            assert_eq!(cfg.clusters[0].name, CLUSTER_NAME);
            let r = cfg.resolve(None).unwrap();
            assert_eq!(r.server, "https://127.0.0.1:16443", "{file}");
            assert_eq!(r.tls_server_name, "127.0.0.1");
            assert_eq!(r.user, user);
            assert_eq!(r.ca_pem, ca_pem, "{file}");
            let cert = r.client_cert_pem.clone().unwrap();
            kl_pki::verify_issued_by(&cert, &ca_pem).unwrap_or_else(|e| panic!("{file}: {e}"));
            let summary = kl_pki::inspect(&cert).unwrap();
            assert_eq!(summary.common_name, user, "{file}");
            assert_eq!(summary.organizations, groups, "{file}");
            assert!(summary.client_auth && !summary.server_auth, "{file}");
            // The key belongs to the certificate: rustls accepts the pair.
            r.client_tls().unwrap().rustls_config().unwrap();
        }
        assert!(pki.join("nodes/worker1.crt").exists());
        assert!(pki.join("apiserver.crt").exists());
        assert!(text.contains("kubernetes.default"), "{text}");

        // Again, into another directory: the CA is reused, so the old kubeconfigs stay valid.
        let other = dir.path().join("kc");
        let text = run_generate(&[
            "--out",
            &pki.display().to_string(),
            "--kubeconfig-dir",
            &other.display().to_string(),
        ])
        .unwrap();
        assert!(text.contains("using the existing CA"), "{text}");
        let r = kl_client::Kubeconfig::load(&other.join("admin.kubeconfig"))
            .unwrap()
            .resolve(None)
            .unwrap();
        assert_eq!(r.server, DEFAULT_SERVER);
        assert_eq!(r.ca_pem, ca_pem);
        assert!(!other.join("worker1.kubeconfig").exists());
    }

    #[test]
    fn bad_server_or_node_names_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        let pki_arg = pki.display().to_string();
        for (args, needle) in [
            (vec!["--server", "http://127.0.0.1:6443"], "https://"),
            (vec!["--server", "https://:6443"], "no host"),
            (vec!["--node", "Worker_1"], "Worker_1"),
            (vec!["--node", "admin"], "reserved"),
        ] {
            let mut argv = vec!["--out", pki_arg.as_str()];
            argv.extend(args);
            let err = run_generate(&argv).unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.contains(needle), "{argv:?}: {msg}");
            assert!(!pki.exists(), "{argv:?}");
            assert!(!dir.path().join("admin.kubeconfig").exists(), "{argv:?}");
        }
    }
}

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
    /// Write the PKI tree (the cluster CA and the etcd CA, as kubeadm's; etcd, apiserver,
    /// component and node certificates) into a directory, and a kubeconfig per identity
    /// (admin, controller-manager, scheduler, each node) next to it.
    ///
    /// Existing CAs in the directory (ca.crt + ca.key, etcd/ca.crt + etcd/ca.key) are reused,
    /// so certificates issued earlier stay valid; every other certificate is issued anew. A
    /// directory from before the etcd CA (etcd/ca.crt a copy of ca.crt, no etcd/ca.key) gets
    /// an etcd CA of its own, and every etcd certificate is re-issued by it.
    Generate(GenerateArgs),
    /// Check certificates' expiration, as `kubeadm certs check-expiration`: every certificate
    /// under --cert-dir, and the client certificate embedded in every kubeconfig next to it.
    CheckExpiration(CheckExpirationArgs),
}

#[derive(Debug, Args)]
pub struct CheckExpirationArgs {
    /// The PKI directory (what `certs generate --out` wrote; `.kube-lite/pki` for
    /// `scripts/cluster up --local`, `.kube-lite/compose/etc/pki` in Docker).
    #[arg(long, value_name = "DIR", default_value = "/etc/kubernetes/pki")]
    pub cert_dir: PathBuf,
    /// Where the kubeconfigs are (default: the parent directory of --cert-dir, as kubeadm's
    /// /etc/kubernetes).
    #[arg(long, value_name = "DIR")]
    pub kubeconfig_dir: Option<PathBuf>,
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
        CertsCommand::CheckExpiration(args) => {
            let now = time::OffsetDateTime::now_utc();
            check_expiration(&args, now, out)
        }
    }
}

/// kubeadm's `EXPIRES` column: `Dec 30, 2020 23:36 UTC`.
fn expires(t: time::OffsetDateTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{} {:02}, {} {:02}:{:02} UTC",
        MONTHS[usize::from(u8::from(t.month())) - 1],
        t.day(),
        t.year(),
        t.hour(),
        t.minute()
    )
}

/// kubeadm's `RESIDUAL TIME` column: apimachinery's `ShortHumanDuration` (`364d`, `9y`,
/// `<invalid>` once expired).
fn residual(seconds: i64) -> String {
    match seconds {
        s if s < -1 => "<invalid>".into(),
        s if s < 0 => "0s".into(),
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86400 => format!("{}h", s / 3600),
        s if s < 86400 * 365 => format!("{}d", s / 86400),
        s => format!("{}y", s / (86400 * 365)),
    }
}

/// The certificates under `dir` (recursively), as `(name, path)` with kubeadm-like names
/// (`apiserver`, `etcd/server`, `clients/admin`), sorted; the CAs left out.
fn certificate_files(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let entries = std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))?;
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "crt") {
                let rel = path.strip_prefix(dir).unwrap_or(&path).with_extension("");
                let name = rel.display().to_string();
                if name != "ca" && name != "etcd/ca" {
                    found.push((name, path));
                }
            }
        }
    }
    found.sort();
    Ok(found)
}

fn check_expiration(
    args: &CheckExpirationArgs,
    now: time::OffsetDateTime,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    // kubeadm's CERTIFICATE AUTHORITY names, in its order: the cluster CA must be there; the
    // etcd CA is listed when present.
    let mut cas = Vec::new();
    for authority in kl_pki::Authority::ALL {
        let path = authority.files().cert_in(&args.cert_dir);
        let pem = match std::fs::read(&path) {
            Ok(pem) => pem,
            Err(e)
                if authority == kl_pki::Authority::Etcd
                    && e.kind() == std::io::ErrorKind::NotFound =>
            {
                continue
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "reading the {authority} certificate {} (is --cert-dir the PKI directory?)",
                        path.display()
                    )
                })
            }
        };
        let summary = kl_pki::inspect(&pem).with_context(|| path.display().to_string())?;
        cas.push((authority, pem, summary));
    }
    let mut rows: Vec<(String, Vec<u8>)> = Vec::new();
    let kubeconfig_dir = match &args.kubeconfig_dir {
        Some(d) => d.clone(),
        None => args
            .cert_dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
    };
    let mut kubeconfigs: Vec<PathBuf> = std::fs::read_dir(&kubeconfig_dir)
        .map(|it| {
            it.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "kubeconfig"))
                .collect()
        })
        .unwrap_or_default();
    kubeconfigs.sort();
    for path in kubeconfigs {
        let resolved = kl_client::Kubeconfig::load(&path)
            .and_then(|k| k.resolve(None))
            .with_context(|| format!("reading {}", path.display()))?;
        if let Some(cert) = resolved.client_cert_pem {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            rows.push((name.unwrap_or_default(), cert));
        }
    }
    for (name, path) in certificate_files(&args.cert_dir)? {
        let pem = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        rows.push((name, pem));
    }
    let mut t = crate::commands::tabwriter::TabWriter::table();
    t.row(&[
        "CERTIFICATE",
        "EXPIRES",
        "RESIDUAL TIME",
        "CERTIFICATE AUTHORITY",
        "EXTERNALLY MANAGED",
    ]);
    for (name, pem) in &rows {
        let cert = kl_pki::inspect(pem).with_context(|| name.clone())?;
        let signer = cas
            .iter()
            .find(|(_, ca_pem, _)| kl_pki::verify_issued_by(pem, ca_pem).is_ok())
            .map_or("<unknown>", |(authority, _, _)| authority.name());
        t.row(&[
            name.as_str(),
            &expires(cert.not_after),
            &residual((cert.not_after - now).whole_seconds()),
            signer,
            "no",
        ]);
    }
    write!(out, "{}", t.flush())?;
    writeln!(out)?;
    // A table of its own: the writer remembers column widths across flushes.
    let mut t = crate::commands::tabwriter::TabWriter::table();
    t.row(&[
        "CERTIFICATE AUTHORITY",
        "EXPIRES",
        "RESIDUAL TIME",
        "EXTERNALLY MANAGED",
    ]);
    for (authority, _, ca) in &cas {
        t.row(&[
            authority.name(),
            &expires(ca.not_after),
            &residual((ca.not_after - now).whole_seconds()),
            "no",
        ]);
    }
    write!(out, "{}", t.flush())?;
    Ok(())
}

fn generate(args: &GenerateArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    check_server(&args.server)?;
    let generated = kl_pki::generate(&args.spec(), &args.out)
        .with_context(|| format!("generating certificates in {}", args.out.display()))?;
    for (authority, origin) in [
        (kl_pki::Authority::Cluster, generated.ca),
        (kl_pki::Authority::Etcd, generated.etcd_ca),
    ] {
        let what = match authority {
            kl_pki::Authority::Cluster => "CA",
            kl_pki::Authority::Etcd => "etcd CA",
        };
        let path = authority.files().cert_in(&args.out);
        match origin {
            kl_pki::CaOrigin::Created => {
                writeln!(out, "[certs] created a new {what}: {}", path.display())?
            }
            kl_pki::CaOrigin::Reused => writeln!(
                out,
                "[certs] using the existing {what} {} (certificates it signed before stay valid)",
                path.display()
            )?,
            kl_pki::CaOrigin::Migrated => writeln!(
                out,
                "[certs] {} was a copy of the cluster CA (the layout before etcd had a CA of its \
                 own): created a separate etcd CA in its place and re-issued every etcd \
                 certificate with it. Restart every etcd member and every apiserver with the new \
                 files (running ones still trust the old copy and cannot talk to restarted ones)",
                path.display()
            )?,
        }
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
        assert!(text.contains("created a new etcd CA"), "{text}");
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
        assert!(text.contains("using the existing etcd CA"), "{text}");
    }

    #[test]
    fn a_pki_from_before_the_etcd_ca_gets_one_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        let pki_arg = pki.display().to_string();
        run_generate(&["--out", &pki_arg]).unwrap();
        // The old layout: etcd/ca.crt a copy of ca.crt, no etcd/ca.key.
        std::fs::remove_file(pki.join("etcd/ca.key")).unwrap();
        std::fs::copy(pki.join("ca.crt"), pki.join("etcd/ca.crt")).unwrap();
        let text = run_generate(&["--out", &pki_arg]).unwrap();
        assert!(text.contains("using the existing CA"), "{text}");
        assert!(text.contains("was a copy of the cluster CA"), "{text}");
        assert!(text.contains("Restart every etcd member"), "{text}");
        let etcd_ca = std::fs::read(pki.join("etcd/ca.crt")).unwrap();
        assert_ne!(etcd_ca, std::fs::read(pki.join("ca.crt")).unwrap());
        kl_pki::verify_issued_by(
            &std::fs::read(pki.join("etcd/server.crt")).unwrap(),
            &etcd_ca,
        )
        .unwrap();

        // A keyless etcd/ca.crt that is not the copy: refused, naming the missing key.
        std::fs::remove_file(pki.join("etcd/ca.key")).unwrap();
        let err = format!("{:#}", run_generate(&["--out", &pki_arg]).unwrap_err());
        assert!(err.contains("etcd/ca.key"), "{err}");
    }

    #[test]
    fn residual_times_and_dates_read_like_kubeadms() {
        assert_eq!(residual(-5), "<invalid>");
        assert_eq!(residual(59), "59s");
        assert_eq!(residual(3599), "59m");
        assert_eq!(residual(86399), "23h");
        assert_eq!(residual(364 * 86400 + 5), "364d");
        assert_eq!(residual(3650 * 86400), "10y");
        let t = time::macros::datetime!(2020-12-30 23:36:10 UTC);
        assert_eq!(expires(t), "Dec 30, 2020 23:36 UTC");
    }

    #[test]
    fn check_expiration_lists_every_certificate_and_kubeconfig() {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        let pki_arg = pki.display().to_string();
        run_generate(&["--out", &pki_arg, "--node", "worker1"]).unwrap();
        let issued = kl_pki::inspect(&std::fs::read(pki.join("apiserver.crt")).unwrap()).unwrap();
        let args = CheckExpirationArgs {
            cert_dir: pki.clone(),
            kubeconfig_dir: None,
        };
        // A day after issue: a year-long leaf has 364 days left, the CA 9 years.
        let now = issued.not_before + time::Duration::days(1);
        let mut out = Vec::new();
        check_expiration(&args, now, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let first = text.lines().next().unwrap();
        assert!(first.starts_with("CERTIFICATE "), "{text}");
        assert!(first.ends_with("EXTERNALLY MANAGED"), "{text}");
        // Each certificate names its authority, as kubeadm's first table.
        for (name, authority) in [
            ("admin.kubeconfig", "ca"),
            ("worker1.kubeconfig", "ca"),
            ("apiserver", "ca"),
            ("apiserver-kubelet-client", "ca"),
            ("apiserver-etcd-client", "etcd-ca"),
            ("etcd/server", "etcd-ca"),
            ("etcd/peer", "etcd-ca"),
            ("etcd/healthcheck-client", "etcd-ca"),
            ("etcd/admin", "etcd-ca"),
            ("clients/admin", "ca"),
            ("nodes/worker1", "ca"),
        ] {
            let row = text
                .lines()
                .find(|l| l.split_whitespace().next() == Some(name))
                .unwrap_or_else(|| panic!("no row for {name}: {text}"));
            assert!(row.contains(" 364d "), "{row}");
            assert_eq!(
                row.split_whitespace().nth(7),
                Some(authority),
                "{name}: {row}"
            );
        }
        assert!(!text
            .lines()
            .any(|l| l.starts_with("ca.crt") || l.starts_with("etcd/ca ")));
        // The CERTIFICATE AUTHORITY table: both CAs, kubeadm's order.
        let table: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("CERTIFICATE AUTHORITY"))
            .skip(1)
            .collect();
        assert_eq!(table.len(), 2, "{text}");
        for (row, name) in table.iter().zip(["ca", "etcd-ca"]) {
            assert_eq!(row.split_whitespace().next(), Some(name), "{text}");
            assert!(row.contains(" 9y "), "{row}");
        }
        // A certificate neither CA signed is <unknown>.
        let other = tempfile::tempdir().unwrap();
        kl_pki::generate(&kl_pki::PkiSpec::new(), other.path()).unwrap();
        std::fs::copy(
            kl_pki::paths::ADMIN.cert_in(other.path()),
            pki.join("stranger.crt"),
        )
        .unwrap();
        let mut out = Vec::new();
        check_expiration(&args, now, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let row = text.lines().find(|l| l.starts_with("stranger ")).unwrap();
        assert!(row.contains(" <unknown> "), "{row}");
        std::fs::remove_file(pki.join("stranger.crt")).unwrap();
        // Expired: kubeadm's <invalid>.
        let mut out = Vec::new();
        check_expiration(&args, now + time::Duration::days(400), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("<invalid>"), "{text}");
        // Not a PKI directory: the error says what to give.
        let wrong = CheckExpirationArgs {
            cert_dir: dir.path().join("nothing"),
            kubeconfig_dir: None,
        };
        let err = format!(
            "{:#}",
            check_expiration(&wrong, now, &mut Vec::new()).unwrap_err()
        );
        assert!(err.contains("is --cert-dir the PKI directory?"), "{err}");
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

//! The cluster PKI, generated with `rcgen` and laid out like kubeadm's `pki/` folder.
//!
//! kube-lite has **one CA** for everything (kubeadm has three: cluster, etcd, front-proxy). One
//! CA keeps the set-up a single command and a single trust anchor; the identities that matter
//! are the leaf certificates' CN (user) and O (group), as in Kubernetes.
//!
//! Layout of the crate:
//! * [`paths`]: where each file lives, by kubeadm's names (`etcd/server.crt`, ...).
//! * [`San`] / [`serving_sans`]: the names a serving certificate is valid for, checked early.
//! * [`CertificateAuthority`]: creates or loads the CA and issues leaf certificates
//!   ([`LeafSpec`] → [`IssuedCert`]).
//! * [`PkiSpec`] + [`generate`]: the whole tree in one call, as `kubectl-lite certs generate`
//!   does. Later issues add the apiserver, component and per-node certificates (and kubeconfigs)
//!   by adding fields to [`PkiSpec`] and entries to the inventory in [`generate`].
//!
//! **Re-running is safe**: [`generate`] into a directory that already holds `ca.crt` + `ca.key`
//! reuses that CA and re-issues every leaf certificate (new keys, new SANs). Certificates
//! issued earlier stay valid, so adding a member later does not invalidate the running ones.
//!
//! Keys are ECDSA P-256; key files are written with mode 0600, atomically. The CA is valid for
//! 10 years and leaf certificates for 1 year, as kubeadm's.
//!
//! This crate never reads certificates for serving or dialling: that is `kl-tls`'s job.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

mod ca;
mod files;
pub mod paths;
mod san;

pub use ca::{
    CertificateAuthority, IssuedCert, LeafSpec, Usage, CA_COMMON_NAME, CA_VALIDITY, LEAF_VALIDITY,
};
pub use san::{serving_sans, San, DEFAULT_SANS};

/// The group of identities that may do anything (Kubernetes' `system:masters`).
pub const SYSTEM_MASTERS: &str = "system:masters";

/// Why the PKI could not be generated; each message names the file or the value at fault.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("invalid subject alternative name {san:?}: {reason}")]
    InvalidSan { san: String, reason: &'static str },
    #[error("invalid certificate request: {reason}")]
    InvalidLeaf { reason: &'static str },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "found {present} but not {missing}: restore the missing file, or remove both to create \
         a new CA (every certificate must then be re-issued)"
    )]
    HalfCa { present: PathBuf, missing: PathBuf },
    #[error("{path}: existing CA is unusable: {reason}")]
    BadCa { path: PathBuf, reason: String },
    #[error("generating {what}: {source}")]
    Rcgen {
        what: String,
        #[source]
        source: rcgen::Error,
    },
}

/// What to generate. Built with chained calls, so that later issues can add fields (masters,
/// nodes, components) without breaking callers:
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let spec = kl_pki::PkiSpec::new().san("etcd1").sans(["etcd2", "10.0.0.3"]);
/// let generated = kl_pki::generate(&spec, dir.path()).unwrap();
/// assert!(dir.path().join(kl_pki::paths::ETCD_SERVER.cert).exists());
/// assert_eq!(generated.ca, kl_pki::CaOrigin::Created);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PkiSpec {
    /// Extra names and addresses of the serving certificates (every member's host name and IP,
    /// and for later issues `lb` and the masters). [`DEFAULT_SANS`] are always added.
    pub sans: Vec<String>,
}

impl PkiSpec {
    /// An empty spec: serving certificates valid for [`DEFAULT_SANS`] only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one subject alternative name (a DNS name, or an IP address).
    pub fn san(mut self, name: impl Into<String>) -> Self {
        self.sans.push(name.into());
        self
    }

    /// Adds several subject alternative names.
    pub fn sans<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.sans.extend(names.into_iter().map(Into::into));
        self
    }
}

/// Whether [`generate`] created the CA or found one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaOrigin {
    /// There was none: a new CA was created and written.
    Created,
    /// `ca.crt` + `ca.key` existed and signed the new certificates; they were not rewritten.
    Reused,
}

/// One file [`generate`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenFile {
    /// Its path (the output directory joined with the [`paths`] entry).
    pub path: PathBuf,
    /// What it is, for the operator (`"etcd serving certificate"`).
    pub what: &'static str,
}

/// The result of [`generate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generated {
    /// Whether the CA is new.
    pub ca: CaOrigin,
    /// The names the serving certificates are valid for, defaults included.
    pub sans: Vec<San>,
    /// Every file written, in writing order.
    pub files: Vec<WrittenFile>,
}

/// One leaf certificate of the inventory.
struct Entry {
    files: paths::CertFiles,
    what: &'static str,
    leaf: LeafSpec,
}

/// The certificates [`generate`] issues. Names and CNs are kubeadm's where kubeadm has the
/// certificate; kubeadm names its etcd serving certificates after the node, and here one
/// certificate serves every member, so they carry kubeadm's older fixed CNs.
fn inventory(sans: &[San]) -> Vec<Entry> {
    let client = |cn: &str, org: Option<&str>| LeafSpec {
        common_name: cn.to_string(),
        organization: org.map(str::to_string),
        usage: Usage::Client,
        sans: Vec::new(),
    };
    vec![
        Entry {
            files: paths::ETCD_SERVER,
            what: "etcd serving certificate (client port)",
            leaf: LeafSpec {
                common_name: "kube-etcd".into(),
                organization: None,
                usage: Usage::ServerAndClient,
                sans: sans.to_vec(),
            },
        },
        Entry {
            files: paths::ETCD_PEER,
            what: "etcd peer certificate (peer port, both directions)",
            leaf: LeafSpec {
                common_name: "kube-etcd-peer".into(),
                organization: None,
                usage: Usage::ServerAndClient,
                sans: sans.to_vec(),
            },
        },
        Entry {
            files: paths::ETCD_HEALTHCHECK_CLIENT,
            what: "etcd health-check client certificate",
            leaf: client("kube-etcd-healthcheck-client", None),
        },
        Entry {
            files: paths::ETCD_ADMIN,
            what: "etcd administrator client certificate (etcdctl)",
            leaf: client("etcd-admin", Some(SYSTEM_MASTERS)),
        },
        Entry {
            files: paths::APISERVER_ETCD_CLIENT,
            what: "apiserver's client certificate towards etcd",
            leaf: client("kube-apiserver-etcd-client", Some(SYSTEM_MASTERS)),
        },
    ]
}

/// Generates the PKI tree into `out_dir` (created if missing) and returns what it wrote.
///
/// The CA in `out_dir` is reused if present, otherwise created; every leaf certificate is
/// issued anew. The SANs are checked before anything is written, so a typo leaves the
/// directory untouched.
pub fn generate(spec: &PkiSpec, out_dir: &Path) -> Result<Generated, PkiError> {
    let sans = serving_sans(&spec.sans)?;
    let entries = inventory(&sans);
    files::create_dir(out_dir)?;

    let mut written = Vec::new();
    let record = |written: &mut Vec<WrittenFile>, rel: &str, what: &'static str| {
        written.push(WrittenFile {
            path: out_dir.join(rel),
            what,
        })
    };

    let (ca, origin) = match CertificateAuthority::load(out_dir)? {
        Some(ca) => (ca, CaOrigin::Reused),
        None => {
            let ca = CertificateAuthority::create()?;
            ca.write(out_dir)?;
            record(&mut written, paths::CA.key, "CA private key");
            record(&mut written, paths::CA.cert, "CA certificate");
            (ca, CaOrigin::Created)
        }
    };

    let etcd_ca = out_dir.join(paths::ETCD_CA_CERT);
    if let Some(parent) = etcd_ca.parent() {
        files::create_dir(parent)?;
    }
    files::write_atomic(&etcd_ca, ca.cert_pem().as_bytes(), files::CERT_MODE)?;
    record(
        &mut written,
        paths::ETCD_CA_CERT,
        "copy of the CA certificate at kubeadm's etcd CA path",
    );

    for entry in entries {
        ca.issue(&entry.leaf)?.write(out_dir, entry.files)?;
        record(&mut written, entry.files.key, entry.what);
        record(&mut written, entry.files.cert, entry.what);
    }

    Ok(Generated {
        ca: origin,
        sans,
        files: written,
    })
}

#[cfg(test)]
mod tests;

//! The cluster PKI, generated with `rcgen` and laid out like kubeadm's `pki/` folder.
//!
//! As in kubeadm, the store has **a CA of its own**: the cluster CA (`ca.crt`, CN `kubernetes`)
//! signs everything that speaks the Kubernetes API (apiserver, components, nodes, users), and
//! the etcd CA (`etcd/ca.crt`, CN `etcd-ca`) signs only etcd's serving and peer certificates and
//! the store's three clients (the apiserver, health checks, etcdctl). etcd-lite checks that a
//! client certificate chains to the CA it trusts, not who it names; trusting only the etcd CA is
//! what keeps a kubelet's or the controller-manager's certificate, valid in the cluster, from
//! reading or writing the store directly, past the apiserver's authorization. (kubeadm's third
//! CA, front-proxy, has no use here: kube-lite has no aggregated APIs.) Within the cluster CA
//! the identities that matter are the leaf certificates' CN (user) and O (group), as in
//! Kubernetes.
//!
//! Layout of the crate:
//! * [`paths`]: where each file lives, by kubeadm's names (`etcd/server.crt`, ...).
//! * [`San`] / [`serving_sans`]: the names a serving certificate is valid for, checked early.
//! * [`CertificateAuthority`]: creates or loads one of the two CAs ([`Authority`]) and issues
//!   leaf certificates ([`LeafSpec`] → [`IssuedCert`]).
//! * [`PkiSpec`] + [`generate`]: the whole tree in one call, as `kubectl-lite certs generate`
//!   does. [`Generated::identities`] hands back the client identities that belong in
//!   kubeconfigs; writing the kubeconfig files is the caller's job (`kl-client` owns that
//!   format), so this crate stays free of it.
//! * [`inspect`] / [`verify_issued_by`]: read a certificate back and check its signature.
//!
//! The tree (`<pki>` is the directory given to [`generate`]):
//!
//! ```text
//! ca.crt ca.key                       the cluster CA (reused when present)
//! etcd/ca.crt etcd/ca.key             the etcd CA (reused when present)
//!   signed by the etcd CA:
//! etcd/server, etcd/peer              etcd serving/peer certificates (DEFAULT_SANS + --san)
//! etcd/healthcheck-client, etcd/admin etcd clients
//! apiserver-etcd-client               apiserver → etcd
//!   signed by the cluster CA:
//! apiserver                           apiserver serving (also `kubernetes`, `kubernetes.default`,
//!                                     ..., `lb`)
//! apiserver-kubelet-client            apiserver → kubelets (CN kube-apiserver-kubelet-client)
//! clients/admin                       kubernetes-admin, O system:masters   (admin.kubeconfig)
//! clients/controller-manager          system:kube-controller-manager       (controller-manager.kubeconfig)
//! clients/scheduler                   system:kube-scheduler                (scheduler.kubeconfig)
//! clients/<node>                      system:node:<node>, O system:nodes   (<node>.kubeconfig)
//! nodes/<node>                        the node's kubelet serving certificate (<node> + DEFAULT_SANS)
//! ```
//!
//! Client certificates are kept under `clients/` as well as inside the kubeconfigs (kubeadm
//! keeps them only inside its `.conf` files): tools that take `--cert`/`--key` (curl, the
//! benchmarks, compose health checks) can then use an identity without parsing YAML. Each file
//! under `clients/` has the stem of the kubeconfig that embeds it, which is why a node may not
//! be called `admin`, `controller-manager` or `scheduler`.
//!
//! **Re-running is safe**: [`generate`] into a directory that already holds `ca.crt` + `ca.key`
//! (and `etcd/ca.crt` + `etcd/ca.key`) reuses those CAs and re-issues every leaf certificate of
//! the spec (new keys, new SANs). Certificates issued earlier stay valid, so adding a member
//! later does not invalidate the running ones; files of nodes not named in the spec are left as
//! they are. A CA whose certificate or key is missing is never replaced (that would orphan
//! every certificate it signed): [`PkiError::HalfCa`] says which file to restore.
//!
//! **The one migration**: before the etcd CA existed, kube-lite wrote `etcd/ca.crt` as a byte
//! copy of `ca.crt` and no `etcd/ca.key`. [`generate`] recognizes exactly that (the copy, no
//! key, and `ca.crt` + `ca.key` present) and creates the etcd CA in its place
//! ([`CaOrigin::Migrated`]); every etcd certificate is re-issued by it in the same run, so the
//! etcd members and the apiservers must all be restarted with the new files. Any other
//! `etcd/ca.crt` without its key (kubeadm's "external CA" set-up, whose key lives elsewhere) is
//! refused as [`PkiError::HalfCa`], as kubeadm refuses to issue from a CA whose key it lacks.
//!
//! Keys are ECDSA P-256; key files are written with mode 0600, atomically. The CAs are valid for
//! 10 years and leaf certificates for 1 year, as kubeadm's.
//!
//! This crate never reads certificates for serving or dialling: that is `kl-tls`'s job.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

mod ca;
mod files;
mod inspect;
pub mod paths;
mod san;

pub use ca::{
    Authority, CertificateAuthority, IssuedCert, LeafSpec, Usage, CA_COMMON_NAME, CA_VALIDITY,
    ETCD_CA_COMMON_NAME, LEAF_VALIDITY,
};
pub use inspect::{inspect, verify_issued_by, CertSummary};
pub use san::{serving_sans, San, DEFAULT_SANS};

/// The group of identities that may do anything (Kubernetes' `system:masters`).
pub const SYSTEM_MASTERS: &str = "system:masters";

/// The group of every node identity (Kubernetes' `system:nodes`).
pub const SYSTEM_NODES: &str = "system:nodes";

/// The administrator's user name, kubeadm's (`admin.conf`).
pub const ADMIN_USER: &str = "kubernetes-admin";

/// The controller-manager's user name, Kubernetes'.
pub const CONTROLLER_MANAGER_USER: &str = "system:kube-controller-manager";

/// The scheduler's user name, Kubernetes'.
pub const SCHEDULER_USER: &str = "system:kube-scheduler";

/// The prefix of a node's user name: node `worker1` is `system:node:worker1`.
pub const NODE_USER_PREFIX: &str = "system:node:";

/// Names the apiserver's serving certificate carries besides [`DEFAULT_SANS`] and the `--san`
/// list: the in-cluster names of the `kubernetes` Service (kubeadm's), and `lb`, the load
/// balancer's name in the compose topology (clients dial the lb, which passes TLS through).
pub const APISERVER_SANS: [&str; 5] = [
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
    "lb",
];

/// Node names that would collide with a component's kubeconfig or client certificate file.
const RESERVED_NODE_NAMES: [&str; 3] = ["admin", "controller-manager", "scheduler"];

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
         a new CA (every certificate it signed must then be re-issued)"
    )]
    HalfCa { present: PathBuf, missing: PathBuf },
    #[error("{path}: existing CA is unusable: {reason}")]
    BadCa { path: PathBuf, reason: String },
    #[error("invalid node name {name:?}: {reason}")]
    InvalidNodeName { name: String, reason: &'static str },
    #[error("{what}: {reason}")]
    BadCert { what: String, reason: String },
    #[error("generating {what}: {source}")]
    Rcgen {
        what: String,
        #[source]
        source: rcgen::Error,
    },
}

/// What to generate. Built with chained calls, so that later issues can add fields without
/// breaking callers:
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let spec = kl_pki::PkiSpec::new()
///     .san("etcd1")
///     .sans(["etcd2", "10.0.0.3"])
///     .node("worker1");
/// let generated = kl_pki::generate(&spec, dir.path()).unwrap();
/// assert!(dir.path().join(kl_pki::paths::ETCD_SERVER.cert).exists());
/// assert!(dir.path().join(kl_pki::paths::APISERVER.cert).exists());
/// assert!(kl_pki::paths::node_serving("worker1").cert_in(dir.path()).exists());
/// assert_eq!(generated.ca, kl_pki::CaOrigin::Created);
///
/// // One identity per kubeconfig: the components, then each node.
/// let kubeconfigs: Vec<&str> = generated.identities.iter().map(|i| i.kubeconfig.as_str()).collect();
/// assert_eq!(kubeconfigs, ["admin", "controller-manager", "scheduler", "worker1"]);
/// assert_eq!(generated.identities[3].user, "system:node:worker1");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PkiSpec {
    /// Extra names and addresses of the serving certificates (every master's host name and IP,
    /// every etcd member's). [`DEFAULT_SANS`] are always added; the apiserver's certificate
    /// also gets [`APISERVER_SANS`].
    pub sans: Vec<String>,
    /// Worker nodes: each gets a client identity (`system:node:<name>`) and a kubelet serving
    /// certificate.
    pub nodes: Vec<String>,
}

impl PkiSpec {
    /// An empty spec: serving certificates valid for [`DEFAULT_SANS`] only, no nodes.
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

    /// Adds one worker node by name (a lowercase DNS-1123 subdomain, as Kubernetes node names).
    pub fn node(mut self, name: impl Into<String>) -> Self {
        self.nodes.push(name.into());
        self
    }

    /// Adds several worker nodes.
    pub fn nodes<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.nodes.extend(names.into_iter().map(Into::into));
        self
    }
}

/// Checks a node name: a lowercase RFC 1123 subdomain (Kubernetes' rule for node names), and
/// not one of the component names whose files it would overwrite.
pub fn check_node_name(name: &str) -> Result<(), PkiError> {
    let invalid = |reason: &'static str| PkiError::InvalidNodeName {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("empty"));
    }
    if name.len() > 253 {
        return Err(invalid("at most 253 characters"));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(invalid(
                "each dot-separated part must be 1 to 63 characters",
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(invalid(
                "must consist of lower case letters, digits, '-' and '.' (a DNS-1123 subdomain)",
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(invalid("must start and end with a letter or digit"));
        }
    }
    if RESERVED_NODE_NAMES.contains(&name) {
        return Err(invalid(
            "reserved: a component's kubeconfig and client certificate have this name",
        ));
    }
    Ok(())
}

/// Whether [`generate`] created a CA or found one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaOrigin {
    /// There was none: a new CA was created and written.
    Created,
    /// Its certificate and key existed and signed the new certificates; they were not
    /// rewritten.
    Reused,
    /// The etcd CA only: `etcd/ca.crt` was the copy of `ca.crt` that kube-lite wrote before the
    /// store had a CA of its own, with no `etcd/ca.key`. A new etcd CA replaced the copy and
    /// re-issued every etcd certificate: members still running with the old files, and
    /// apiservers verifying them with the old copy, must all be restarted together.
    Migrated,
}

/// One file [`generate`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenFile {
    /// Its path (the output directory joined with the [`paths`] entry).
    pub path: PathBuf,
    /// What it is, for the operator (`"etcd serving certificate"`).
    pub what: &'static str,
}

/// A client identity that belongs in a kubeconfig: its user name and PEM material.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The kubeconfig's file stem: `admin` for `admin.kubeconfig`, the node name for a node.
    pub kubeconfig: String,
    /// The user name (the certificate's CN), e.g. `kubernetes-admin`.
    pub user: String,
    /// The client certificate (PEM).
    pub cert_pem: String,
    /// Its private key (PKCS#8 PEM).
    pub key_pem: String,
}

impl std::fmt::Debug for ClientIdentity {
    /// Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("kubeconfig", &self.kubeconfig)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// The result of [`generate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generated {
    /// Whether the cluster CA is new.
    pub ca: CaOrigin,
    /// The cluster CA certificate (PEM), what kubeconfigs embed as
    /// `certificate-authority-data`.
    pub ca_pem: String,
    /// Whether the etcd CA is new (or [`CaOrigin::Migrated`] from the old layout's copy).
    pub etcd_ca: CaOrigin,
    /// The etcd CA certificate (PEM): what etcd's ports and the apiserver's `--etcd-cafile`
    /// trust.
    pub etcd_ca_pem: String,
    /// The names the etcd serving certificates are valid for, defaults included.
    pub sans: Vec<San>,
    /// The names the apiserver's serving certificate is valid for.
    pub apiserver_sans: Vec<San>,
    /// Every file written, in writing order.
    pub files: Vec<WrittenFile>,
    /// The kubeconfig identities, in order: admin, controller-manager, scheduler, then each
    /// node of the spec.
    pub identities: Vec<ClientIdentity>,
}

/// One leaf certificate of the inventory.
struct Entry {
    /// The CA that signs it.
    authority: Authority,
    files: paths::NamedCertFiles,
    what: &'static str,
    leaf: LeafSpec,
    /// The kubeconfig this identity goes into, if any.
    kubeconfig: Option<String>,
}

/// The names and addresses [`generate`] puts into each serving certificate, checked.
struct Names {
    /// etcd's serving and peer certificates.
    etcd: Vec<San>,
    /// The apiserver's.
    apiserver: Vec<San>,
    /// Nodes, deduplicated, in the order given.
    nodes: Vec<String>,
}

impl Names {
    fn of(spec: &PkiSpec) -> Result<Names, PkiError> {
        let etcd = serving_sans(&spec.sans)?;
        let apiserver = serving_sans(
            &spec
                .sans
                .iter()
                .map(String::as_str)
                .chain(APISERVER_SANS)
                .collect::<Vec<_>>(),
        )?;
        let mut nodes: Vec<String> = Vec::new();
        for node in &spec.nodes {
            check_node_name(node)?;
            if !nodes.contains(node) {
                nodes.push(node.clone());
            }
        }
        Ok(Names {
            etcd,
            apiserver,
            nodes,
        })
    }
}

/// The certificates [`generate`] issues, each with its CA (kubeadm's split: etcd's own
/// certificates and the store's clients by the etcd CA, the rest by the cluster CA). Names and
/// CNs are kubeadm's where kubeadm has the certificate; kubeadm names its etcd serving
/// certificates after the node, and here one certificate serves every member, so they carry
/// kubeadm's older fixed CNs.
fn inventory(names: &Names) -> Result<Vec<Entry>, PkiError> {
    let client = |cn: &str, org: Option<&str>| LeafSpec {
        common_name: cn.to_string(),
        organization: org.map(str::to_string),
        usage: Usage::Client,
        sans: Vec::new(),
    };
    let entry = |authority, files: paths::CertFiles, what: &'static str, leaf: LeafSpec| Entry {
        authority,
        files: files.into(),
        what,
        leaf,
        kubeconfig: None,
    };
    let mut entries = vec![
        entry(
            Authority::Etcd,
            paths::ETCD_SERVER,
            "etcd serving certificate (client port)",
            LeafSpec {
                common_name: "kube-etcd".into(),
                organization: None,
                usage: Usage::ServerAndClient,
                sans: names.etcd.clone(),
            },
        ),
        entry(
            Authority::Etcd,
            paths::ETCD_PEER,
            "etcd peer certificate (peer port, both directions)",
            LeafSpec {
                common_name: "kube-etcd-peer".into(),
                organization: None,
                usage: Usage::ServerAndClient,
                sans: names.etcd.clone(),
            },
        ),
        entry(
            Authority::Etcd,
            paths::ETCD_HEALTHCHECK_CLIENT,
            "etcd health-check client certificate",
            client("kube-etcd-healthcheck-client", None),
        ),
        entry(
            Authority::Etcd,
            paths::ETCD_ADMIN,
            "etcd administrator client certificate (etcdctl)",
            client("etcd-admin", Some(SYSTEM_MASTERS)),
        ),
        entry(
            Authority::Etcd,
            paths::APISERVER_ETCD_CLIENT,
            "apiserver's client certificate towards etcd",
            client("kube-apiserver-etcd-client", Some(SYSTEM_MASTERS)),
        ),
        entry(
            Authority::Cluster,
            paths::APISERVER,
            "apiserver serving certificate",
            LeafSpec {
                common_name: "kube-apiserver".into(),
                organization: None,
                usage: Usage::Server,
                sans: names.apiserver.clone(),
            },
        ),
        entry(
            Authority::Cluster,
            paths::APISERVER_KUBELET_CLIENT,
            "apiserver's client certificate towards kubelets",
            client("kube-apiserver-kubelet-client", Some(SYSTEM_MASTERS)),
        ),
    ];
    let mut identity = |kubeconfig: &str, files: paths::NamedCertFiles, what, leaf| {
        entries.push(Entry {
            authority: Authority::Cluster,
            files,
            what,
            leaf,
            kubeconfig: Some(kubeconfig.to_string()),
        })
    };
    identity(
        "admin",
        paths::ADMIN.into(),
        "cluster administrator's client certificate",
        client(ADMIN_USER, Some(SYSTEM_MASTERS)),
    );
    identity(
        "controller-manager",
        paths::CONTROLLER_MANAGER.into(),
        "controller-manager's client certificate",
        client(CONTROLLER_MANAGER_USER, None),
    );
    identity(
        "scheduler",
        paths::SCHEDULER.into(),
        "scheduler's client certificate",
        client(SCHEDULER_USER, None),
    );
    for node in &names.nodes {
        identity(
            node,
            paths::node_client(node),
            "node's client certificate (kubelet)",
            client(&format!("{NODE_USER_PREFIX}{node}"), Some(SYSTEM_NODES)),
        );
    }
    for node in &names.nodes {
        entries.push(Entry {
            authority: Authority::Cluster,
            files: paths::node_serving(node),
            what: "node's kubelet serving certificate",
            leaf: LeafSpec {
                common_name: format!("{NODE_USER_PREFIX}{node}"),
                organization: Some(SYSTEM_NODES.into()),
                usage: Usage::Server,
                sans: serving_sans(&[node.as_str()])?,
            },
            kubeconfig: None,
        });
    }
    Ok(entries)
}

/// Whether `etcd/ca.crt` in `out_dir` is the old layout's copy of the cluster CA `cluster`
/// without a key of its own (see the crate docs: the one migration [`generate`] does).
fn is_old_etcd_ca_copy(out_dir: &Path, cluster: &CertificateAuthority) -> Result<bool, PkiError> {
    let files = Authority::Etcd.files();
    if files::read_if_exists(&files.key_in(out_dir))?.is_some() {
        return Ok(false);
    }
    Ok(files::read_if_exists(&files.cert_in(out_dir))?
        .is_some_and(|pem| pem.trim() == cluster.cert_pem().trim()))
}

/// Generates the PKI tree into `out_dir` (created if missing) and returns what it wrote.
///
/// The two CAs in `out_dir` are reused if present, otherwise created (the old layout's copy at
/// `etcd/ca.crt` is replaced: [`CaOrigin::Migrated`]); every leaf certificate is issued anew.
/// The SANs, node names and existing CAs are checked before anything is written, so a typo or
/// half a CA leaves the directory untouched.
pub fn generate(spec: &PkiSpec, out_dir: &Path) -> Result<Generated, PkiError> {
    let names = Names::of(spec)?;
    let entries = inventory(&names)?;

    let cluster = CertificateAuthority::load(out_dir, Authority::Cluster)?;
    let etcd = match &cluster {
        Some(cluster) if is_old_etcd_ca_copy(out_dir, cluster)? => Err(CaOrigin::Migrated),
        _ => CertificateAuthority::load(out_dir, Authority::Etcd)?.ok_or(CaOrigin::Created),
    };
    files::create_dir(out_dir)?;

    let mut written = Vec::new();
    let record = |written: &mut Vec<WrittenFile>, rel: &str, what: &'static str| {
        written.push(WrittenFile {
            path: out_dir.join(rel),
            what,
        })
    };

    let (ca, origin) = match cluster {
        Some(ca) => (ca, CaOrigin::Reused),
        None => {
            let ca = CertificateAuthority::create(Authority::Cluster)?;
            ca.write(out_dir)?;
            record(&mut written, paths::CA.key, "cluster CA private key");
            record(&mut written, paths::CA.cert, "cluster CA certificate");
            (ca, CaOrigin::Created)
        }
    };
    let (etcd_ca, etcd_origin) = match etcd {
        Ok(ca) => (ca, CaOrigin::Reused),
        Err(origin) => {
            let ca = CertificateAuthority::create(Authority::Etcd)?;
            ca.write(out_dir)?;
            record(&mut written, paths::ETCD_CA.key, "etcd CA private key");
            record(
                &mut written,
                paths::ETCD_CA.cert,
                "etcd CA certificate (the only CA etcd's ports trust)",
            );
            (ca, origin)
        }
    };

    let mut identities = Vec::new();
    for entry in entries {
        let signer = match entry.authority {
            Authority::Cluster => &ca,
            Authority::Etcd => &etcd_ca,
        };
        let issued = signer.issue(&entry.leaf)?;
        issued.write(out_dir, entry.files.clone())?;
        record(&mut written, &entry.files.key, entry.what);
        record(&mut written, &entry.files.cert, entry.what);
        if let Some(kubeconfig) = entry.kubeconfig {
            identities.push(ClientIdentity {
                kubeconfig,
                user: entry.leaf.common_name,
                cert_pem: issued.cert_pem,
                key_pem: issued.key_pem,
            });
        }
    }

    Ok(Generated {
        ca: origin,
        ca_pem: ca.cert_pem().to_string(),
        etcd_ca: etcd_origin,
        etcd_ca_pem: etcd_ca.cert_pem().to_string(),
        sans: names.etcd,
        apiserver_sans: names.apiserver,
        files: written,
        identities,
    })
}

#[cfg(test)]
mod tests;

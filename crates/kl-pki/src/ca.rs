//! The two CAs, kubeadm's cluster CA (`pki/ca.crt` + `pki/ca.key`) and etcd CA
//! (`pki/etcd/ca.crt` + `pki/etcd/ca.key`): each created once, then loaded every time more
//! certificates are issued, so that adding a node or re-issuing a certificate never invalidates
//! the certificates already handed out.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

use crate::{
    files::{self, write_atomic, CERT_MODE, KEY_MODE},
    paths::{self, NamedCertFiles},
    PkiError, San,
};

/// The cluster CA's subject CN, kubeadm's.
pub const CA_COMMON_NAME: &str = "kubernetes";

/// The etcd CA's subject CN, kubeadm's.
pub const ETCD_CA_COMMON_NAME: &str = "etcd-ca";

/// Which of the two CAs, as kubeadm's: the cluster CA signs what talks to or serves the
/// Kubernetes API (apiserver, components, nodes, users); the etcd CA signs only what talks to or
/// serves the store (etcd's serving and peer certificates, its clients: the apiserver, health
/// checks, etcdctl). etcd trusts the etcd CA alone, so a certificate of the cluster CA (a
/// kubelet's, say) is refused by the store whatever its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Authority {
    /// `ca.crt` / `ca.key`, CN `kubernetes`.
    Cluster,
    /// `etcd/ca.crt` / `etcd/ca.key`, CN `etcd-ca`.
    Etcd,
}

impl Authority {
    /// Both, in the order kubeadm lists them.
    pub const ALL: [Authority; 2] = [Authority::Cluster, Authority::Etcd];

    /// Where its certificate and key live.
    pub fn files(self) -> paths::CertFiles {
        match self {
            Authority::Cluster => paths::CA,
            Authority::Etcd => paths::ETCD_CA,
        }
    }

    /// Its subject CN.
    pub fn common_name(self) -> &'static str {
        match self {
            Authority::Cluster => CA_COMMON_NAME,
            Authority::Etcd => ETCD_CA_COMMON_NAME,
        }
    }

    /// kubeadm's name for it (`kubeadm certs check-expiration`'s CERTIFICATE AUTHORITY column).
    pub fn name(self) -> &'static str {
        match self {
            Authority::Cluster => "ca",
            Authority::Etcd => "etcd-ca",
        }
    }
}

impl std::fmt::Display for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How long the CA is valid: kubeadm's 10 years. Replacing a CA means re-issuing every
/// certificate of the cluster, so it should outlive the cluster.
pub const CA_VALIDITY: Duration = Duration::days(3650);

/// How long a leaf certificate is valid: kubeadm's one year. Leaves are cheap to re-issue
/// (`kubectl-lite certs generate` again), and a short life bounds the damage of a leaked key.
pub const LEAF_VALIDITY: Duration = Duration::days(365);

/// Certificates start this long in the past, so that a machine whose clock runs a little behind
/// the issuer's does not refuse a brand-new certificate as "not yet valid".
const CLOCK_SKEW: Duration = Duration::minutes(5);

/// What a leaf certificate may be used for: its extended key usages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// serverAuth only: a TLS server that never dials out with this identity.
    Server,
    /// clientAuth only: a user or a component talking to a server.
    Client,
    /// serverAuth and clientAuth: etcd's certificates, because a member both serves and dials
    /// (its peers; its own gRPC gateway) with the same certificate.
    ServerAndClient,
}

impl Usage {
    fn extended_key_usages(self) -> Vec<ExtendedKeyUsagePurpose> {
        match self {
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::ServerAndClient => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        }
    }
}

/// Everything that distinguishes one leaf certificate from another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafSpec {
    /// The subject CN. For a client certificate this is the user name the servers see, as in
    /// Kubernetes.
    pub common_name: String,
    /// The subject O, i.e. the user's group (`system:masters`). One at most: rcgen's
    /// distinguished names hold one value per attribute, and kubeadm's certificates need no more.
    pub organization: Option<String>,
    /// Server, client or both.
    pub usage: Usage,
    /// Names the certificate is valid for; empty for pure client certificates.
    pub sans: Vec<San>,
}

/// A freshly issued certificate and its new private key, both PEM.
#[derive(Clone)]
pub struct IssuedCert {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// The private key (PKCS#8 PEM).
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedCert {
    /// Never prints the key, so that a debug log cannot leak it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[elided]")
            .finish()
    }
}

impl IssuedCert {
    /// Writes the certificate (mode 0644) and the key (mode 0600) to `files` inside `pki_dir`,
    /// creating parent directories.
    pub fn write(&self, pki_dir: &Path, files: impl Into<NamedCertFiles>) -> Result<(), PkiError> {
        let files = files.into();
        let cert = files.cert_in(pki_dir);
        let key = files.key_in(pki_dir);
        for path in [&cert, &key] {
            if let Some(parent) = path.parent() {
                files::create_dir(parent)?;
            }
        }
        // Key first: a certificate without its key is useless, a key without its certificate
        // is merely left over.
        write_atomic(&key, self.key_pem.as_bytes(), KEY_MODE)?;
        write_atomic(&cert, self.cert_pem.as_bytes(), CERT_MODE)
    }
}

/// One of the two CAs ([`Authority`]), able to sign.
pub struct CertificateAuthority {
    /// Which one: where it is written, and its name in messages.
    authority: Authority,
    /// The CA certificate (PEM), as written to `ca.crt`.
    cert_pem: String,
    /// The CA key (PEM), kept so that a newly created CA can be written out.
    key_pem: String,
    /// When the CA expires; no leaf may outlive it, or it would fail verification early.
    not_after: OffsetDateTime,
    /// rcgen's signer: the CA's subject, key identifier and key.
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for CertificateAuthority {
    /// Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("authority", &self.authority)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

fn rcgen_err(what: &str) -> impl FnOnce(rcgen::Error) -> PkiError + '_ {
    move |source| PkiError::Rcgen {
        what: what.to_string(),
        source,
    }
}

fn new_key(what: &str) -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(rcgen_err(what))
}

impl CertificateAuthority {
    /// Creates a new self-signed CA with an ECDSA P-256 key, valid for [`CA_VALIDITY`].
    pub fn create(authority: Authority) -> Result<Self, PkiError> {
        let what = match authority {
            Authority::Cluster => "the CA",
            Authority::Etcd => "the etcd CA",
        };
        let key = new_key(what)?;
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, authority.common_name());
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + CA_VALIDITY;
        let not_after = params.not_after;
        let cert = params.self_signed(&key).map_err(rcgen_err(what))?;
        Ok(CertificateAuthority {
            authority,
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            not_after,
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads the CA `authority` from its files in `pki_dir` (`ca.crt` and `ca.key`, or
    /// `etcd/ca.crt` and `etcd/ca.key`). `Ok(None)` when neither exists; an error when only one
    /// does (never silently replace half a CA: that would orphan every certificate it signed),
    /// when the certificate is not a CA, has expired, or does not belong to the key.
    pub fn load(pki_dir: &Path, authority: Authority) -> Result<Option<Self>, PkiError> {
        let files = authority.files();
        let cert_path = files.cert_in(pki_dir);
        let key_path = files.key_in(pki_dir);
        let (cert_pem, key_pem) = match (
            files::read_if_exists(&cert_path)?,
            files::read_if_exists(&key_path)?,
        ) {
            (None, None) => return Ok(None),
            (Some(c), Some(k)) => (c, k),
            (Some(_), None) => {
                return Err(PkiError::HalfCa {
                    present: cert_path,
                    missing: key_path,
                })
            }
            (None, Some(_)) => {
                return Err(PkiError::HalfCa {
                    present: key_path,
                    missing: cert_path,
                })
            }
        };
        let bad = |reason: String| PkiError::BadCa {
            path: cert_path.clone(),
            reason,
        };
        let key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::BadCa {
            path: key_path.clone(),
            reason: format!("not a usable private key: {e}"),
        })?;
        let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
            .map_err(|e| bad(format!("not a PEM certificate: {e}")))?;
        let x509 = pem
            .parse_x509()
            .map_err(|e| bad(format!("not an X.509 certificate: {e}")))?;
        if !x509.is_ca() {
            return Err(bad(
                "not a CA certificate (basicConstraints CA is false)".into()
            ));
        }
        if x509.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(bad(format!(
                "does not belong to the key in {}",
                key_path.display()
            )));
        }
        let not_after = OffsetDateTime::from_unix_timestamp(x509.validity().not_after.timestamp())
            .map_err(|e| bad(format!("unreadable expiry: {e}")))?;
        if not_after <= OffsetDateTime::now_utc() {
            return Err(bad(format!(
                "expired at {not_after}; remove {} and {} to create a new CA \
                 (every certificate it signed must then be re-issued)",
                files.cert, files.key
            )));
        }
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
            .map_err(|e| bad(format!("cannot sign with it: {e}")))?;
        Ok(Some(CertificateAuthority {
            authority,
            cert_pem,
            key_pem,
            not_after,
            issuer,
        }))
    }

    /// Writes its certificate (0644) and key (0600) into `pki_dir`: `ca.crt` and `ca.key`, or
    /// `etcd/ca.crt` and `etcd/ca.key`.
    pub fn write(&self, pki_dir: &Path) -> Result<(), PkiError> {
        IssuedCert {
            cert_pem: self.cert_pem.clone(),
            key_pem: self.key_pem.clone(),
        }
        .write(pki_dir, self.authority.files())
    }

    /// Which CA this is.
    pub fn authority(&self) -> Authority {
        self.authority
    }

    /// The CA certificate, PEM: what every party trusts.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// When the CA expires.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Issues a leaf certificate with a new ECDSA P-256 key, valid for [`LEAF_VALIDITY`] (or
    /// until the CA expires, if sooner).
    pub fn issue(&self, leaf: &LeafSpec) -> Result<IssuedCert, PkiError> {
        let what = format!("the certificate for {:?}", leaf.common_name);
        if leaf.common_name.trim().is_empty() {
            return Err(PkiError::InvalidLeaf {
                reason: "empty common name",
            });
        }
        if matches!(leaf.usage, Usage::Server | Usage::ServerAndClient) && leaf.sans.is_empty() {
            return Err(PkiError::InvalidLeaf {
                reason: "a serving certificate needs at least one subject alternative name",
            });
        }
        let key = new_key(&what)?;
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(org) = &leaf.organization {
            params
                .distinguished_name
                .push(DnType::OrganizationName, org.as_str());
        }
        params
            .distinguished_name
            .push(DnType::CommonName, leaf.common_name.as_str());
        params.subject_alt_names = leaf
            .sans
            .iter()
            .map(San::to_rcgen)
            .collect::<Result<_, _>>()?;
        params.is_ca = IsCa::ExplicitNoCa;
        // ECDSA keys sign; they never encipher keys (RFC 5480), so digitalSignature only.
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = leaf.usage.extended_key_usages();
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - CLOCK_SKEW;
        params.not_after = (now + LEAF_VALIDITY).min(self.not_after);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(rcgen_err(&what))?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

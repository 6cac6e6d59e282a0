//! The PKI of a test cluster: the same tree `kubectl-lite certs generate` writes (kubeadm's
//! layout, from `kl-pki`), so tests exercise the certificates users get.

use std::path::{Path, PathBuf};

use anyhow::Context;
use kl_pki::paths;

/// Paths of the PEM files a store cluster and its clients use.
#[derive(Clone, Debug)]
pub struct TestPki {
    pub dir: PathBuf,
    /// The CA every certificate chains to (`--trusted-ca-file`, `--peer-trusted-ca-file`,
    /// etcdctl's `--cacert`).
    pub ca_cert: PathBuf,
    /// `--cert-file` / `--key-file`: the client-facing serving certificate.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// `--peer-cert-file` / `--peer-key-file`.
    pub peer_cert: PathBuf,
    pub peer_key: PathBuf,
    /// The etcd administrator's client certificate (etcdctl and test clients).
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TestPki {
    /// Writes a fresh PKI under `dir` with `kl_pki::generate`; serving certificates are valid
    /// for localhost, 127.0.0.1 and ::1.
    pub fn generate(dir: &Path) -> anyhow::Result<Self> {
        kl_pki::generate(&kl_pki::PkiSpec::new(), dir)
            .with_context(|| format!("generating the test PKI in {}", dir.display()))?;
        Ok(TestPki {
            dir: dir.to_path_buf(),
            ca_cert: dir.join(paths::ETCD_CA_CERT),
            server_cert: paths::ETCD_SERVER.cert_in(dir),
            server_key: paths::ETCD_SERVER.key_in(dir),
            peer_cert: paths::ETCD_PEER.cert_in(dir),
            peer_key: paths::ETCD_PEER.key_in(dir),
            client_cert: paths::ETCD_ADMIN.cert_in(dir),
            client_key: paths::ETCD_ADMIN.key_in(dir),
        })
    }

    /// Issues a certificate signed by this PKI's CA into `<dir>/issued/<file>.{crt,key}` and
    /// returns the two paths: a client certificate for user `cn` in group `org`, or (`serving`)
    /// a serving certificate for localhost, 127.0.0.1 and ::1.
    pub fn issue(
        &self,
        file: &'static str,
        cn: &str,
        org: Option<&str>,
        serving: bool,
    ) -> anyhow::Result<(PathBuf, PathBuf)> {
        let ca =
            kl_pki::CertificateAuthority::load(&self.dir)?.context("the test PKI has no CA")?;
        let leaf = kl_pki::LeafSpec {
            common_name: cn.to_string(),
            organization: org.map(str::to_string),
            usage: if serving {
                kl_pki::Usage::Server
            } else {
                kl_pki::Usage::Client
            },
            sans: if serving {
                kl_pki::serving_sans::<&str>(&[])?
            } else {
                Vec::new()
            },
        };
        let issued = ca.issue(&leaf)?;
        // Leaked names are fine: a test issues a handful of certificates.
        let files = paths::CertFiles {
            cert: Box::leak(format!("issued/{file}.crt").into_boxed_str()),
            key: Box::leak(format!("issued/{file}.key").into_boxed_str()),
        };
        issued.write(&self.dir, files)?;
        Ok((files.cert_in(&self.dir), files.key_in(&self.dir)))
    }

    /// Writes a kubeconfig (kubectl's format, PEM embedded) for user `cn` in group `org`
    /// talking to `server`, and returns its path.
    pub fn kubeconfig(
        &self,
        file: &'static str,
        server: &str,
        cn: &str,
        org: Option<&str>,
    ) -> anyhow::Result<PathBuf> {
        let (cert, key) = self.issue(file, cn, org, false)?;
        let cfg = kl_client::Kubeconfig::embedded(
            "kube-lite",
            server,
            &std::fs::read(&self.ca_cert)?,
            cn,
            &std::fs::read(cert)?,
            &std::fs::read(key)?,
        );
        let path = self.dir.join(format!("{file}.kubeconfig"));
        cfg.write(&path)?;
        Ok(path)
    }

    /// The client side of mutual TLS with this PKI's client certificate.
    pub fn client_tls(&self) -> anyhow::Result<kl_tls::ClientTls> {
        Ok(kl_tls::ClientTls::load(
            &self.ca_cert,
            Some((&self.client_cert, &self.client_key)),
        )?)
    }
}

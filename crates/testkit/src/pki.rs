//! The PKI of a test cluster: the same tree `kubectl-lite certs generate` writes (kubeadm's
//! layout, from `kl-pki`), so tests exercise the certificates users get. As in kubeadm there
//! are two CAs: the store trusts only the etcd CA, everything that speaks the Kubernetes API
//! only the cluster CA; each field below says which one its file belongs to.

use std::path::{Path, PathBuf};

use anyhow::Context;
use kl_pki::{paths, Authority};

/// Paths of the PEM files a test cluster and its clients use.
#[derive(Clone, Debug)]
pub struct TestPki {
    pub dir: PathBuf,
    /// The cluster CA (`ca.crt`): the apiserver's and kubelets' `--client-ca-file`, the lb's
    /// `--check-ca-file`, kubeconfigs; it signs the apiserver's, components' and nodes'
    /// certificates ([`Self::issue`]).
    pub cluster_ca: PathBuf,
    /// The etcd CA (`etcd/ca.crt`): etcd's `--trusted-ca-file` and `--peer-trusted-ca-file`,
    /// the apiserver's `--etcd-cafile`, etcdctl's `--cacert`; it signs only the store's
    /// certificates ([`Self::issue_by_etcd_ca`]).
    pub etcd_ca: PathBuf,
    /// etcd's `--cert-file` / `--key-file`: the client-facing serving certificate (etcd CA).
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// etcd's `--peer-cert-file` / `--peer-key-file` (etcd CA).
    pub peer_cert: PathBuf,
    pub peer_key: PathBuf,
    /// The etcd administrator's client certificate (`etcd/admin`, etcd CA): etcdctl and the
    /// tests' store clients.
    pub etcd_admin_cert: PathBuf,
    pub etcd_admin_key: PathBuf,
    /// The apiserver's client certificate towards etcd (`apiserver-etcd-client`, etcd CA):
    /// `--etcd-certfile` / `--etcd-keyfile`.
    pub apiserver_etcd_cert: PathBuf,
    pub apiserver_etcd_key: PathBuf,
    /// The apiserver's serving certificate (`apiserver`, cluster CA), for tests that run the
    /// apiserver in-process.
    pub apiserver_cert: PathBuf,
    pub apiserver_key: PathBuf,
    /// The cluster administrator (`clients/admin`: kubernetes-admin, group system:masters;
    /// cluster CA), for raw calls to the apiserver and the components' secure ports.
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
}

impl TestPki {
    /// Writes a fresh PKI under `dir` with `kl_pki::generate`; serving certificates are valid
    /// for localhost, 127.0.0.1 and ::1.
    pub fn generate(dir: &Path) -> anyhow::Result<Self> {
        kl_pki::generate(&kl_pki::PkiSpec::new(), dir)
            .with_context(|| format!("generating the test PKI in {}", dir.display()))?;
        Ok(TestPki {
            dir: dir.to_path_buf(),
            cluster_ca: paths::CA.cert_in(dir),
            etcd_ca: paths::ETCD_CA.cert_in(dir),
            server_cert: paths::ETCD_SERVER.cert_in(dir),
            server_key: paths::ETCD_SERVER.key_in(dir),
            peer_cert: paths::ETCD_PEER.cert_in(dir),
            peer_key: paths::ETCD_PEER.key_in(dir),
            etcd_admin_cert: paths::ETCD_ADMIN.cert_in(dir),
            etcd_admin_key: paths::ETCD_ADMIN.key_in(dir),
            apiserver_etcd_cert: paths::APISERVER_ETCD_CLIENT.cert_in(dir),
            apiserver_etcd_key: paths::APISERVER_ETCD_CLIENT.key_in(dir),
            apiserver_cert: paths::APISERVER.cert_in(dir),
            apiserver_key: paths::APISERVER.key_in(dir),
            admin_cert: paths::ADMIN.cert_in(dir),
            admin_key: paths::ADMIN.key_in(dir),
        })
    }

    /// Issues a certificate signed by the cluster CA into `<dir>/issued/<file>.{crt,key}` and
    /// returns the two paths: a client certificate for user `cn` in group `org`, or (`serving`)
    /// a serving certificate for localhost, 127.0.0.1 and ::1.
    pub fn issue(
        &self,
        file: &'static str,
        cn: &str,
        org: Option<&str>,
        serving: bool,
    ) -> anyhow::Result<(PathBuf, PathBuf)> {
        self.issue_by(Authority::Cluster, file, cn, org, serving)
    }

    /// [`Self::issue`], signed by the etcd CA instead: an identity the store's TLS accepts.
    pub fn issue_by_etcd_ca(
        &self,
        file: &'static str,
        cn: &str,
        org: Option<&str>,
        serving: bool,
    ) -> anyhow::Result<(PathBuf, PathBuf)> {
        self.issue_by(Authority::Etcd, file, cn, org, serving)
    }

    fn issue_by(
        &self,
        authority: Authority,
        file: &'static str,
        cn: &str,
        org: Option<&str>,
        serving: bool,
    ) -> anyhow::Result<(PathBuf, PathBuf)> {
        let ca = kl_pki::CertificateAuthority::load(&self.dir, authority)?
            .with_context(|| format!("the test PKI has no {authority}"))?;
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

    /// Writes a kubeconfig (kubectl's format, PEM embedded, the cluster CA) for user `cn` in
    /// group `org` talking to `server`, and returns its path.
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
            &std::fs::read(&self.cluster_ca)?,
            cn,
            &std::fs::read(cert)?,
            &std::fs::read(key)?,
        );
        let path = self.dir.join(format!("{file}.kubeconfig"));
        cfg.write(&path)?;
        Ok(path)
    }

    /// The client side of mutual TLS with the store: the etcd administrator's certificate,
    /// trusting the etcd CA.
    pub fn client_tls(&self) -> anyhow::Result<kl_tls::ClientTls> {
        Ok(kl_tls::ClientTls::load(
            &self.etcd_ca,
            Some((&self.etcd_admin_cert, &self.etcd_admin_key)),
        )?)
    }

    /// The client side of mutual TLS with the apiserver or a component: the cluster
    /// administrator's certificate, trusting the cluster CA.
    pub fn admin_tls(&self) -> anyhow::Result<kl_tls::ClientTls> {
        Ok(kl_tls::ClientTls::load(
            &self.cluster_ca,
            Some((&self.admin_cert, &self.admin_key)),
        )?)
    }
}

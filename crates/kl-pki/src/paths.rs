//! Where each file of the PKI lives, relative to the `pki/` directory.
//!
//! The names are kubeadm's (`/etc/kubernetes/pki/...`), so that a person who has looked inside a
//! kubeadm control-plane node finds the same files here, and so that scripts, compose files and
//! tests name a file through one constant instead of retyping a string.

use std::path::{Path, PathBuf};

/// A certificate and its private key, as paths relative to the `pki/` directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CertFiles {
    /// The PEM certificate, e.g. `etcd/server.crt`.
    pub cert: &'static str,
    /// The PEM private key (PKCS#8), e.g. `etcd/server.key`; written with mode 0600.
    pub key: &'static str,
}

impl CertFiles {
    /// The certificate's full path inside `pki_dir`.
    pub fn cert_in(&self, pki_dir: &Path) -> PathBuf {
        pki_dir.join(self.cert)
    }

    /// The key's full path inside `pki_dir`.
    pub fn key_in(&self, pki_dir: &Path) -> PathBuf {
        pki_dir.join(self.key)
    }
}

/// The one cluster CA. Every certificate of the cluster chains to it.
pub const CA: CertFiles = CertFiles {
    cert: "ca.crt",
    key: "ca.key",
};

/// A copy of [`CA`]'s certificate (never its key). kubeadm keeps a separate etcd CA at this
/// path; kube-lite has one CA for everything, and writes the copy so that flags and manifests
/// written for kubeadm's layout (`--trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt`) work
/// unchanged.
pub const ETCD_CA_CERT: &str = "etcd/ca.crt";

/// etcd's client-listener serving certificate (`--cert-file`/`--key-file`). Also a client
/// certificate, because etcd's gRPC gateway dials its own listener with it.
pub const ETCD_SERVER: CertFiles = CertFiles {
    cert: "etcd/server.crt",
    key: "etcd/server.key",
};

/// etcd's peer certificate (`--peer-cert-file`/`--peer-key-file`): a member serves its peer
/// listener with it and presents it when it dials another member.
pub const ETCD_PEER: CertFiles = CertFiles {
    cert: "etcd/peer.crt",
    key: "etcd/peer.key",
};

/// The client certificate of liveness probes that talk to etcd's client port.
pub const ETCD_HEALTHCHECK_CLIENT: CertFiles = CertFiles {
    cert: "etcd/healthcheck-client.crt",
    key: "etcd/healthcheck-client.key",
};

/// An administrator's client certificate for `etcdctl` (kubeadm has none: there one borrows the
/// apiserver's; a separate one keeps the apiserver's identity out of people's shells).
pub const ETCD_ADMIN: CertFiles = CertFiles {
    cert: "etcd/admin.crt",
    key: "etcd/admin.key",
};

/// The apiserver's client certificate towards etcd (`--etcd-certfile`/`--etcd-keyfile`).
pub const APISERVER_ETCD_CLIENT: CertFiles = CertFiles {
    cert: "apiserver-etcd-client.crt",
    key: "apiserver-etcd-client.key",
};

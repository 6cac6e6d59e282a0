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

/// The cluster CA (kubeadm's `ca`, CN `kubernetes`): signs the apiserver's serving
/// certificate, its client certificate towards kubelets, every kubeconfig identity and the
/// kubelets' serving certificates. What the apiserver, kubelets, components and the lb trust
/// (`--client-ca-file`, `--check-ca-file`, kubeconfigs' `certificate-authority-data`).
pub const CA: CertFiles = CertFiles {
    cert: "ca.crt",
    key: "ca.key",
};

/// The etcd CA (kubeadm's `etcd-ca`, CN `etcd-ca`): signs etcd's serving and peer certificates
/// and the store's clients ([`ETCD_HEALTHCHECK_CLIENT`], [`ETCD_ADMIN`],
/// [`APISERVER_ETCD_CLIENT`]), nothing else. etcd trusts only this CA on both ports
/// (`--trusted-ca-file`, `--peer-trusted-ca-file`), and the apiserver verifies etcd with it
/// (`--etcd-cafile`), so no certificate of the cluster CA opens the store.
pub const ETCD_CA: CertFiles = CertFiles {
    cert: "etcd/ca.crt",
    key: "etcd/ca.key",
};

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

/// The apiservers' serving certificate (`--tls-cert-file`/`--tls-private-key-file`). One
/// certificate serves every apiserver: it carries every master's name, `lb` and the in-cluster
/// names `kubernetes`, `kubernetes.default`, ..., because clients dial the lb and the lb passes
/// TLS through untouched.
pub const APISERVER: CertFiles = CertFiles {
    cert: "apiserver.crt",
    key: "apiserver.key",
};

/// The apiserver's client certificate towards kubelets (`--kubelet-client-certificate`), e.g.
/// for `kubectl-lite logs` through the apiserver.
pub const APISERVER_KUBELET_CLIENT: CertFiles = CertFiles {
    cert: "apiserver-kubelet-client.crt",
    key: "apiserver-kubelet-client.key",
};

/// Client certificates of the kubeconfig identities live here, one pair per kubeconfig and with
/// the kubeconfig's stem: `clients/admin.crt` is the identity inside `admin.kubeconfig`,
/// `clients/<node>.crt` the one inside `<node>.kubeconfig`. kubeadm keeps these only inside its
/// `.conf` files; kube-lite also keeps them as files so that tools that take `--cert`/`--key`
/// (curl, benchmarks, compose health checks) can use an identity without parsing YAML.
pub const CLIENTS_DIR: &str = "clients";

/// The cluster administrator (`kubernetes-admin`, group `system:masters`), as in kubeadm's
/// `admin.conf`.
pub const ADMIN: CertFiles = CertFiles {
    cert: "clients/admin.crt",
    key: "clients/admin.key",
};

/// The controller-manager's identity (`system:kube-controller-manager`).
pub const CONTROLLER_MANAGER: CertFiles = CertFiles {
    cert: "clients/controller-manager.crt",
    key: "clients/controller-manager.key",
};

/// The scheduler's identity (`system:kube-scheduler`).
pub const SCHEDULER: CertFiles = CertFiles {
    cert: "clients/scheduler.crt",
    key: "clients/scheduler.key",
};

/// Kubelet serving certificates live here, one pair per node: `nodes/<node>.crt`.
pub const NODES_DIR: &str = "nodes";

/// A certificate and key whose paths depend on a name (a node's), relative to `pki/`. The owned
/// twin of [`CertFiles`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedCertFiles {
    /// The PEM certificate, e.g. `nodes/worker1.crt`.
    pub cert: String,
    /// The PEM private key, e.g. `nodes/worker1.key`; written with mode 0600.
    pub key: String,
}

impl NamedCertFiles {
    /// The certificate's full path inside `pki_dir`.
    pub fn cert_in(&self, pki_dir: &Path) -> PathBuf {
        pki_dir.join(&self.cert)
    }

    /// The key's full path inside `pki_dir`.
    pub fn key_in(&self, pki_dir: &Path) -> PathBuf {
        pki_dir.join(&self.key)
    }
}

impl From<CertFiles> for NamedCertFiles {
    fn from(f: CertFiles) -> Self {
        NamedCertFiles {
            cert: f.cert.to_string(),
            key: f.key.to_string(),
        }
    }
}

/// Node `name`'s kubelet serving certificate (`kubelet-lite --tls-cert-file`): `nodes/<name>.crt`.
/// The name must be valid (see `kl_pki::check_node_name`); it is not checked here.
pub fn node_serving(name: &str) -> NamedCertFiles {
    NamedCertFiles {
        cert: format!("{NODES_DIR}/{name}.crt"),
        key: format!("{NODES_DIR}/{name}.key"),
    }
}

/// Node `name`'s client identity (`system:node:<name>`), the one inside `<name>.kubeconfig`:
/// `clients/<name>.crt`.
pub fn node_client(name: &str) -> NamedCertFiles {
    NamedCertFiles {
        cert: format!("{CLIENTS_DIR}/{name}.crt"),
        key: format!("{CLIENTS_DIR}/{name}.key"),
    }
}

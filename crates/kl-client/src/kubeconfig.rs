//! kubectl's kubeconfig format (`apiVersion: v1`, `kind: Config`), the subset kube-lite uses:
//! clusters with `server` and `certificate-authority[-data]`, users with
//! `client-certificate[-data]` and `client-key[-data]`, contexts with an optional `namespace`,
//! and `current-context`. Relative file paths are resolved against the kubeconfig's own
//! directory, as kubectl does. Unknown fields are ignored (kubectl writes more than we read).
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Why a kubeconfig could not be used; each message names the file and the entry at fault.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("no kubeconfig: pass --kubeconfig FILE, set KUBECONFIG, or create ~/.kube/config (scripts/cluster up writes .kube-lite/admin.kubeconfig)")]
    NotFound,
    #[error("reading kubeconfig {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing kubeconfig {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("kubeconfig {path}: malformed: {message}")]
    Malformed { path: PathBuf, message: String },
    #[error("kubeconfig {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Kubeconfig {
    #[serde(rename = "apiVersion", default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub clusters: Vec<NamedCluster>,
    #[serde(default)]
    pub users: Vec<NamedUser>,
    #[serde(default)]
    pub contexts: Vec<NamedContext>,
    #[serde(default)]
    pub current_context: String,
    /// Where the file was read from (not serialized): relative paths resolve against its directory.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NamedCluster {
    pub name: String,
    pub cluster: Cluster,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Cluster {
    pub server: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority_data: Option<String>,
    /// Overrides the name checked against the server certificate (kubectl's `tls-server-name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NamedUser {
    pub name: String,
    pub user: User,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct User {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_data: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NamedContext {
    pub name: String,
    pub context: Context,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Context {
    pub cluster: String,
    pub user: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

/// A context made concrete: where to connect and with which PEM material.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedConfig {
    /// `https://host:port`.
    pub server: String,
    /// The name to check the server's certificate against (the server URL's host unless the
    /// cluster sets `tls-server-name`).
    pub tls_server_name: String,
    pub ca_pem: Vec<u8>,
    pub client_cert_pem: Option<Vec<u8>>,
    pub client_key_pem: Option<Vec<u8>>,
    /// The context's namespace, or `default`.
    pub namespace: String,
    /// The user's name in the kubeconfig (the certificate's CN is what the server trusts).
    pub user: String,
}

impl ResolvedConfig {
    /// The TLS settings for dialling `server`.
    pub fn client_tls(&self) -> Result<kl_tls::ClientTls, kl_tls::TlsError> {
        let identity = match (&self.client_cert_pem, &self.client_key_pem) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            _ => None,
        };
        kl_tls::ClientTls::from_pem(
            self.ca_pem.clone(),
            identity,
            &format!("kubeconfig user {:?}", self.user),
        )
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl Kubeconfig {
    /// A one-cluster, one-user kubeconfig with the PEM material embedded (as kubeadm writes
    /// `admin.conf`): cluster `cluster_name` at `server`, user `user`, context `user@cluster`.
    pub fn embedded(
        cluster_name: &str,
        server: &str,
        ca_pem: &[u8],
        user: &str,
        client_cert_pem: &[u8],
        client_key_pem: &[u8],
    ) -> Kubeconfig {
        let context = format!("{user}@{cluster_name}");
        Kubeconfig {
            api_version: "v1".into(),
            kind: "Config".into(),
            clusters: vec![NamedCluster {
                name: cluster_name.into(),
                cluster: Cluster {
                    server: server.into(),
                    certificate_authority_data: Some(b64(ca_pem)),
                    ..Default::default()
                },
            }],
            users: vec![NamedUser {
                name: user.into(),
                user: User {
                    client_certificate_data: Some(b64(client_cert_pem)),
                    client_key_data: Some(b64(client_key_pem)),
                    ..Default::default()
                },
            }],
            contexts: vec![NamedContext {
                name: context.clone(),
                context: Context {
                    cluster: cluster_name.into(),
                    user: user.into(),
                    namespace: String::new(),
                },
            }],
            current_context: context,
            source: None,
        }
    }

    /// Writes the kubeconfig as YAML with mode 0600 (it holds a private key).
    pub fn write(&self, path: &Path) -> Result<(), KubeconfigError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let err = |source| KubeconfigError::Write {
            path: path.to_path_buf(),
            source,
        };
        let yaml = serde_yaml_ng::to_string(self).map_err(|e| KubeconfigError::Malformed {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err)?;
        f.write_all(yaml.as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }

    /// Reads one kubeconfig file.
    pub fn load(path: &Path) -> Result<Kubeconfig, KubeconfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| KubeconfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut cfg: Kubeconfig =
            serde_yaml_ng::from_str(&text).map_err(|e| KubeconfigError::Malformed {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        cfg.source = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// The kubeconfig kubectl would use: `explicit` (`--kubeconfig`), else the first existing
    /// file of `KUBECONFIG` (colon-separated; kubectl merges them, kube-lite takes the first),
    /// else `~/.kube/config`.
    pub fn load_default(explicit: Option<&Path>) -> Result<Kubeconfig, KubeconfigError> {
        if let Some(p) = explicit {
            return Kubeconfig::load(p);
        }
        if let Some(list) = std::env::var_os("KUBECONFIG") {
            for p in std::env::split_paths(&list) {
                if !p.as_os_str().is_empty() && p.exists() {
                    return Kubeconfig::load(&p);
                }
            }
        }
        if let Some(home) = std::env::var_os("HOME") {
            let p = PathBuf::from(home).join(".kube").join("config");
            if p.exists() {
                return Kubeconfig::load(&p);
            }
        }
        Err(KubeconfigError::NotFound)
    }

    /// Resolves `context` (or `current-context`) into a server and PEM material.
    pub fn resolve(&self, context: Option<&str>) -> Result<ResolvedConfig, KubeconfigError> {
        let path = self.source.clone().unwrap_or_default();
        let invalid = |message: String| KubeconfigError::Invalid {
            path: path.clone(),
            message,
        };
        let name = context.unwrap_or(&self.current_context);
        if name.is_empty() {
            return Err(invalid(
                "current-context is not set: pass --context NAME".into(),
            ));
        }
        let ctx = &self
            .contexts
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| invalid(format!("context {name:?} not found")))?
            .context;
        let cluster = &self
            .clusters
            .iter()
            .find(|c| c.name == ctx.cluster)
            .ok_or_else(|| invalid(format!("cluster {:?} not found", ctx.cluster)))?
            .cluster;
        let user = &self
            .users
            .iter()
            .find(|u| u.name == ctx.user)
            .ok_or_else(|| invalid(format!("user {:?} not found", ctx.user)))?
            .user;
        if cluster.server.is_empty() {
            return Err(invalid(format!("cluster {:?} has no server", ctx.cluster)));
        }
        let ca_pem = self
            .material(
                &cluster.certificate_authority,
                &cluster.certificate_authority_data,
            )
            .map_err(|m| {
                invalid(format!(
                    "cluster {:?}: certificate-authority: {m}",
                    ctx.cluster
                ))
            })?
            .ok_or_else(|| {
                invalid(format!(
                    "cluster {:?} has no certificate-authority(-data): kube-lite always uses TLS",
                    ctx.cluster
                ))
            })?;
        let client_cert_pem = self
            .material(&user.client_certificate, &user.client_certificate_data)
            .map_err(|m| invalid(format!("user {:?}: client-certificate: {m}", ctx.user)))?;
        let client_key_pem = self
            .material(&user.client_key, &user.client_key_data)
            .map_err(|m| invalid(format!("user {:?}: client-key: {m}", ctx.user)))?;
        let host = cluster
            .server
            .split("://")
            .nth(1)
            .unwrap_or(&cluster.server)
            .split('/')
            .next()
            .unwrap_or_default();
        let host = match host.rsplit_once(':') {
            Some((h, _)) => h,
            None => host,
        };
        Ok(ResolvedConfig {
            server: cluster.server.clone(),
            tls_server_name: cluster
                .tls_server_name
                .clone()
                .unwrap_or_else(|| host.trim_matches(['[', ']']).to_string()),
            ca_pem,
            client_cert_pem,
            client_key_pem,
            namespace: if ctx.namespace.is_empty() {
                "default".into()
            } else {
                ctx.namespace.clone()
            },
            user: ctx.user.clone(),
        })
    }

    /// The bytes of a `<x>` / `<x>-data` pair: the data (base64) wins, else the file.
    fn material(
        &self,
        file: &Option<String>,
        data: &Option<String>,
    ) -> Result<Option<Vec<u8>>, String> {
        if let Some(d) = data {
            return base64::engine::general_purpose::STANDARD
                .decode(d.trim())
                .map(Some)
                .map_err(|e| format!("invalid base64: {e}"));
        }
        let Some(f) = file else { return Ok(None) };
        let mut p = PathBuf::from(f);
        if p.is_relative() {
            if let Some(dir) = self.source.as_deref().and_then(Path::parent) {
                p = dir.join(p);
            }
        }
        std::fs::read(&p)
            .map(Some)
            .map_err(|e| format!("{}: {e}", p.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_kubeconfig_round_trips_and_resolves() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.kubeconfig");
        let cfg = Kubeconfig::embedded(
            "kube-lite",
            "https://127.0.0.1:6443",
            b"CA",
            "kubernetes-admin",
            b"CERT",
            b"KEY",
        );
        cfg.write(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("certificate-authority-data:"), "{text}");
        assert!(
            text.contains("current-context: kubernetes-admin@kube-lite"),
            "{text}"
        );
        let back = Kubeconfig::load(&path).unwrap();
        let r = back.resolve(None).unwrap();
        assert_eq!(r.server, "https://127.0.0.1:6443");
        assert_eq!(r.tls_server_name, "127.0.0.1");
        assert_eq!(r.ca_pem, b"CA");
        assert_eq!(r.client_cert_pem.as_deref(), Some(&b"CERT"[..]));
        assert_eq!(r.namespace, "default");
    }

    #[test]
    fn relative_files_resolve_against_the_kubeconfig_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), "CAFILE").unwrap();
        let path = dir.path().join("config");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://lb:6443\n    certificate-authority: ca.crt\nusers:\n- name: u\n  user: {}\ncontexts:\n- name: x\n  context: {cluster: c, user: u, namespace: kube-system}\ncurrent-context: x\npreferences: {}\n",
        )
        .unwrap();
        let r = Kubeconfig::load(&path).unwrap().resolve(None).unwrap();
        assert_eq!(r.ca_pem, b"CAFILE");
        assert_eq!(r.tls_server_name, "lb");
        assert_eq!(r.namespace, "kube-system");
        let err = Kubeconfig::load(&path)
            .unwrap()
            .resolve(Some("nope"))
            .unwrap_err();
        assert!(
            err.to_string().contains("context \"nope\" not found"),
            "{err}"
        );
    }
}

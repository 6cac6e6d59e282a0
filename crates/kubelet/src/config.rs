//! Everything kubelet-lite is started with, checked once at start so that a bad flag is an error
//! naming the flag and the fix, not a surprise later.
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use kl_api::Quantity;
pub use kl_api::Taint;

/// The kubelet's configuration, with upstream's flag names and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `--kubeconfig`; None: `KUBECONFIG`, then `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// `--hostname-override`: the node's name (default: the host name, lowercased).
    pub node_name: String,
    /// `--node-ip`: the node's InternalIP, also every pod's IP (pods share the host network).
    pub node_ip: IpAddr,
    /// `--root-dir`: pods' working directories, runtime state and logs live under it.
    pub root_dir: PathBuf,
    /// `--node-labels`, added to the Node at registration (with `kubernetes.io/hostname` etc.).
    pub node_labels: BTreeMap<String, String>,
    /// `--register-with-taints`: the Node's taints when this kubelet creates it.
    pub register_with_taints: Vec<Taint>,
    /// `--node-status-update-frequency`: how often the node's status is computed; it is posted
    /// when it changed or `node_status_report_frequency` passed (upstream's behaviour with
    /// node leases, which keeps a thousand nodes from writing every ten seconds).
    pub node_status_update_frequency: Duration,
    /// `--node-status-report-frequency`: the longest time between two posts of an unchanged
    /// status.
    pub node_status_report_frequency: Duration,
    /// `--node-lease-duration-seconds`: the Lease is renewed every quarter of it.
    pub node_lease_duration_seconds: u32,
    /// `--max-pods`: the node's `pods` capacity.
    pub max_pods: u32,
    /// `--cpu`, `--memory`: capacity overrides (default: this machine's).
    pub cpu: Option<String>,
    pub memory: Option<String>,
    /// `--address`, `--port`: the HTTPS port (logs, /healthz, /metrics); port 0 = none.
    pub address: IpAddr,
    pub port: u16,
    /// `--tls-cert-file`, `--tls-private-key-file` (default: a self-signed certificate).
    pub tls_cert_file: Option<PathBuf>,
    pub tls_private_key_file: Option<PathBuf>,
    /// `--client-ca-file`: client certificates on the HTTPS port are checked against it.
    pub client_ca_file: Option<PathBuf>,
    /// `--container-log-max-size` (bytes) and `--container-log-max-files`.
    pub container_log_max_size: u64,
    pub container_log_max_files: usize,
    /// `--hollow-nodes`: > 0 runs that many simulated nodes instead of one real one.
    pub hollow_nodes: u32,
    /// The program started as each container's shim (`<shim_exe> shim ...`): this binary.
    pub shim_exe: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            kubeconfig: None,
            node_name: String::new(),
            node_ip: IpAddr::from([127, 0, 0, 1]),
            root_dir: PathBuf::from("/var/lib/kubelet"),
            node_labels: BTreeMap::new(),
            register_with_taints: Vec::new(),
            node_status_update_frequency: Duration::from_secs(10),
            node_status_report_frequency: Duration::from_secs(300),
            node_lease_duration_seconds: 40,
            max_pods: 110,
            cpu: None,
            memory: None,
            address: IpAddr::from([0, 0, 0, 0]),
            port: 10250,
            tls_cert_file: None,
            tls_private_key_file: None,
            client_ca_file: None,
            container_log_max_size: 10 * 1024 * 1024,
            container_log_max_files: 5,
            hollow_nodes: 0,
            shim_exe: PathBuf::from("kubelet-lite"),
        }
    }
}

/// A configuration that cannot work; the message names the flag.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Checks the flags together (each error names its flag).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: String| Err(ConfigError(m));
        if let Err(e) = kl_pki_like_node_name(&self.node_name) {
            return err(format!(
                "--hostname-override: invalid node name {:?}: {e}",
                self.node_name
            ));
        }
        if self.node_lease_duration_seconds == 0 {
            return err("--node-lease-duration-seconds: must be > 0".into());
        }
        if self.node_status_update_frequency.is_zero() {
            return err("--node-status-update-frequency: must be > 0".into());
        }
        if self.max_pods == 0 {
            return err("--max-pods: must be > 0".into());
        }
        for (flag, v) in [("--cpu", &self.cpu), ("--memory", &self.memory)] {
            if let Some(v) = v {
                if let Err(e) = v.parse::<Quantity>() {
                    return err(format!("{flag}: {e} (e.g. {flag} 4 or 8Gi)"));
                }
            }
        }
        if self.tls_cert_file.is_some() != self.tls_private_key_file.is_some() {
            return err("--tls-cert-file and --tls-private-key-file must be given together".into());
        }
        if self.container_log_max_size < 1024 {
            return err("--container-log-max-size: must be at least 1Ki".into());
        }
        if self.container_log_max_files < 2 {
            return err("--container-log-max-files: must be at least 2 (as upstream)".into());
        }
        Ok(())
    }

    /// The HTTPS port's address, or None when `--port 0`.
    pub fn server_addr(&self) -> Option<SocketAddr> {
        (self.port != 0).then(|| SocketAddr::new(self.address, self.port))
    }

    /// The node Lease's renew interval: a quarter of its duration, as upstream.
    pub fn lease_renew_interval(&self) -> Duration {
        Duration::from_secs(self.node_lease_duration_seconds as u64) / 4
    }
}

/// Kubernetes' rule for node names: a lowercase RFC 1123 subdomain.
fn kl_pki_like_node_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    let errs = kl_api::validation::dns1123_subdomain_errors(name);
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("; "))
    }
}

fn label_errors(key: &str, value: &str) -> Vec<String> {
    let mut errs = kl_api::validation::label_key_errors(key);
    errs.extend(kl_api::validation::label_value_errors(value));
    errs
}

/// Parses `--node-labels` (`key=value,key2=value2`).
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| format!("{item:?}: a label is key=value"))?;
        let errs = label_errors(k, v);
        if !errs.is_empty() {
            return Err(format!("{item:?}: {}", errs.join("; ")));
        }
        labels.insert(k.to_string(), v.to_string());
    }
    Ok(labels)
}

/// Parses `--register-with-taints` (`key=value:Effect,key:Effect`), as upstream.
pub fn parse_taints(text: &str) -> Result<Vec<Taint>, String> {
    let mut taints = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (kv, effect) = item
            .rsplit_once(':')
            .ok_or_else(|| format!("{item:?}: a taint is key=value:Effect or key:Effect"))?;
        if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
            return Err(format!(
                "{item:?}: effect {effect:?} is not one of NoSchedule, PreferNoSchedule, NoExecute"
            ));
        }
        let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
        let errs = label_errors(key, value);
        if !errs.is_empty() {
            return Err(format!("{item:?}: {}", errs.join("; ")));
        }
        taints.push(Taint {
            key: key.into(),
            value: value.into(),
            effect: effect.into(),
            time_added: String::new(),
        });
    }
    Ok(taints)
}

/// The host name, lowercased (upstream's default node name).
pub fn default_node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_lowercase())
        .unwrap_or_else(|_| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_taints_parse_as_upstream() {
        let l = parse_labels("zone=a, tier=web").unwrap();
        assert_eq!(l["zone"], "a");
        assert_eq!(l["tier"], "web");
        assert!(parse_labels("novalue").unwrap_err().contains("key=value"));
        let t = parse_taints("dedicated=gpu:NoSchedule,maint:NoExecute").unwrap();
        assert_eq!(
            (t[0].key.as_str(), t[0].value.as_str()),
            ("dedicated", "gpu")
        );
        assert_eq!(
            (t[1].key.as_str(), t[1].effect.as_str()),
            ("maint", "NoExecute")
        );
        assert!(parse_taints("k=v:Sometimes")
            .unwrap_err()
            .contains("NoSchedule"));
    }

    #[test]
    fn bad_flags_name_the_flag() {
        let ok = Config {
            node_name: "worker1".into(),
            ..Config::default()
        };
        assert_eq!(ok.validate(), Ok(()));
        let e = Config {
            node_name: "Worker_1".into(),
            ..ok.clone()
        };
        assert!(e
            .validate()
            .unwrap_err()
            .0
            .starts_with("--hostname-override"));
        let e = Config {
            cpu: Some("lots".into()),
            ..ok.clone()
        };
        assert!(e.validate().unwrap_err().0.starts_with("--cpu"));
        let e = Config {
            tls_cert_file: Some("x".into()),
            ..ok.clone()
        };
        assert!(e.validate().unwrap_err().0.contains("together"));
        assert_eq!(ok.lease_renew_interval(), Duration::from_secs(10));
    }
}

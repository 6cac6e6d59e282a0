//! Workers: real `kubelet-lite` processes against an [`ApiCluster`], each with its own node
//! name, client certificate (`system:node:<name>`, group `system:nodes`), serving certificate,
//! HTTPS port, `--root-dir` and log file.
//!
//! Containers outlive their kubelet (as upstream), so dropping [`Kubelets`] kills the kubelets
//! and then every process that belongs to one of their root dirs: the shims (their command
//! line names the root dir), the containers (their pid is in the runtime's state files, their
//! working directory is under the root dir) and their process groups.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use kl_api::Node;
use kl_client::{Api, Client};

use crate::api::{https_get, ApiCluster};
use crate::bins::bin_path;
use crate::ports::free_port;
use crate::process::{tail, Proc};
use crate::wait::wait_until;

/// One worker slot: keeps its name, port, root dir and log across kills and restarts.
#[derive(Debug)]
pub struct Kubelet {
    pub name: String,
    pub port: u16,
    pub root_dir: PathBuf,
    pub log_path: PathBuf,
    args: Vec<String>,
    proc: Option<Proc>,
}

/// n workers.
pub struct Kubelets {
    pub items: Vec<Kubelet>,
    ca: PathBuf,
    bin: PathBuf,
    /// Root dirs and logs; declared last so that processes die before their files go.
    dir: tempfile::TempDir,
}

impl Kubelets {
    /// Starts one kubelet per name against `cluster` (through its lb), each with `extra_args`
    /// appended to the wiring flags.
    pub fn start(
        cluster: &ApiCluster,
        names: &[&str],
        extra_args: &[&str],
    ) -> anyhow::Result<Kubelets> {
        let dir = tempfile::Builder::new().prefix("kl-kubelet-").tempdir()?;
        let pki = cluster.etcd.pki();
        let p = |p: &Path| p.display().to_string();
        let mut items = Vec::new();
        // Hollow nodes share one process and one identity: NodeRestriction lets
        // system:node:X write only X, so they run as the admin.
        let hollow = extra_args.iter().any(|a| a.starts_with("--hollow-nodes"));
        for name in names {
            let user = format!("system:node:{name}");
            let file: &'static str = Box::leak(format!("node-{name}").into_boxed_str());
            let kubeconfig = if hollow {
                cluster.kubeconfig().to_path_buf()
            } else {
                cluster.kubeconfig_for_user(file, &user, Some("system:nodes"))?
            };
            let serving: &'static str = Box::leak(format!("node-{name}-serving").into_boxed_str());
            let (cert, key) = pki.issue(serving, name, None, true)?;
            let port = free_port();
            let root_dir = dir.path().join(name);
            let mut args = vec![
                format!("--kubeconfig={}", p(&kubeconfig)),
                format!("--hostname-override={name}"),
                "--node-ip=127.0.0.1".into(),
                format!("--root-dir={}", p(&root_dir)),
                "--address=127.0.0.1".into(),
                format!("--port={port}"),
                format!("--tls-cert-file={}", p(&cert)),
                format!("--tls-private-key-file={}", p(&key)),
                format!("--client-ca-file={}", p(&pki.cluster_ca)),
            ];
            args.extend(extra_args.iter().map(|s| s.to_string()));
            items.push(Kubelet {
                name: name.to_string(),
                port,
                log_path: dir.path().join(format!("{name}.log")),
                root_dir,
                args,
                proc: None,
            });
        }
        let mut k = Kubelets {
            items,
            ca: pki.cluster_ca.clone(),
            bin: bin_path("kubelet-lite"),
            dir,
        };
        for i in 0..k.items.len() {
            k.spawn(i)?;
        }
        Ok(k)
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let slot = &mut self.items[i];
        slot.proc = Some(
            Proc::spawn(&self.bin, &slot.args, &slot.log_path)
                .context("run `cargo build --workspace --bins` first")?,
        );
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// SIGKILL kubelet `i` (its containers keep running, as with a real kubelet).
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut p) = self.items[i].proc.take() {
            p.kill9();
        }
    }

    /// Starts kubelet `i` again with the same flags, port and root dir.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill9(i);
        self.spawn(i)
    }

    /// Sends a signal (`TERM`, `STOP`, ...) to kubelet `i`.
    pub fn signal(&mut self, i: usize, sig: &str) -> anyhow::Result<()> {
        self.items[i]
            .proc
            .as_mut()
            .context("kubelet is not running")?
            .signal(sig)
    }

    pub fn is_running(&mut self, i: usize) -> bool {
        self.items[i].proc.as_mut().is_some_and(Proc::is_running)
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.items[i].log_path).unwrap_or_default()
    }

    /// `GET path` on kubelet `i`'s HTTPS port, verified against the cluster CA, presenting
    /// `identity` (certificate and key) if given.
    pub async fn get(
        &self,
        i: usize,
        identity: Option<(&Path, &Path)>,
        path: &str,
    ) -> anyhow::Result<(u16, String)> {
        https_get(&self.ca, identity, self.items[i].port, path).await
    }

    /// Waits until every node is registered with Ready=True.
    pub async fn wait_ready(&self, client: &Client, timeout: Duration) -> anyhow::Result<()> {
        let names: Vec<String> = self.items.iter().map(|k| k.name.clone()).collect();
        let nodes = Api::<Node>::all(client.clone());
        let r = wait_until(
            "every node Ready",
            timeout,
            Duration::from_millis(200),
            || async {
                let list = nodes.list(&Default::default()).await?;
                let ready = names.iter().all(|n| {
                    list.items.iter().any(|node| {
                        node.metadata.as_ref().is_some_and(|m| &m.name == n)
                            && node.status.as_ref().is_some_and(|s| {
                                s.conditions
                                    .iter()
                                    .any(|c| c.r#type == "Ready" && c.status == "True")
                            })
                    })
                });
                Ok(ready.then_some(()))
            },
        )
        .await;
        if r.is_err() {
            self.dump_logs(40);
        }
        r
    }

    /// Prints the tail of each kubelet's log.
    pub fn dump_logs(&self, lines: usize) {
        for k in &self.items {
            eprintln!(
                "----- {} ({}) -----\n{}",
                k.name,
                k.log_path.display(),
                tail(&k.log_path, lines)
            );
        }
    }

    /// Pids of the processes that belong to kubelet `i`'s pods: shims and containers.
    pub fn pod_processes(&self, i: usize) -> Vec<u32> {
        processes_under(&self.items[i].root_dir)
    }
}

/// Pids of processes whose command line or working directory is under `root`, or whose pid a
/// runtime state file under `root` records.
pub fn processes_under(root: &Path) -> Vec<u32> {
    let root_text = root.display().to_string();
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
        // A zombie has an empty cmdline and no cwd: not counted.
        if cmdline.contains(&root_text) || cwd.starts_with(root) {
            pids.push(pid);
        }
    }
    pids.extend(recorded_pids(root).into_iter().filter(|p| alive(*p)));
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// The `"pid"` and `"shim_pid"` numbers in the runtime's state files
/// (`<root>/pods/<uid>/.runtime/<container>/<attempt>.json`).
fn recorded_pids(root: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    let Ok(pods) = std::fs::read_dir(root.join("pods")) else {
        return pids;
    };
    for pod in pods.flatten() {
        let Ok(containers) = std::fs::read_dir(pod.path().join(".runtime")) else {
            continue;
        };
        for c in containers.flatten() {
            let Ok(files) = std::fs::read_dir(c.path()) else {
                continue;
            };
            for f in files.flatten() {
                let text = std::fs::read_to_string(f.path()).unwrap_or_default();
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
                    continue;
                };
                for key in ["pid", "shim_pid", "shimPid"] {
                    if let Some(p) = v.get(key).and_then(|p| p.as_u64()) {
                        pids.push(p as u32);
                    }
                }
            }
        }
    }
    pids
}

/// Whether process `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

fn kill_group_and_pid(pid: u32) {
    // The shims and containers lead their own process groups; kill both the group and the pid.
    let _ = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}"), &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status();
}

impl Drop for Kubelets {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs(60);
        }
        for i in 0..self.items.len() {
            self.kill9(i);
        }
        for k in &self.items {
            for _ in 0..3 {
                let pids = processes_under(&k.root_dir);
                if pids.is_empty() {
                    break;
                }
                for pid in pids {
                    kill_group_and_pid(pid);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let _ = &self.dir;
    }
}

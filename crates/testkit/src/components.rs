//! Leader-elected control-plane components (controller-managers, schedulers) started against
//! an [`ApiCluster`]: n real processes, each with its own client certificate and kubeconfig
//! (CN `system:kube-controller-manager` / `system:kube-scheduler`, server = the lb), an HTTPS
//! health port with a serving certificate from the cluster CA, and its own log file.
//!
//! Like apiserver slots, component `i` keeps its port and log across kills and restarts.
//! Everything is SIGKILLed when the [`Components`] handle drops; a panicking test gets the tail
//! of each log first.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::api::{https_get, ApiCluster};
use crate::bins::bin_path;
use crate::ports::free_port;
use crate::process::{tail, Proc};

/// Which component to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComponentKind {
    ControllerManager,
    Scheduler,
}

impl ComponentKind {
    /// The binary's name in `target/<profile>/`.
    pub fn binary(self) -> &'static str {
        match self {
            ComponentKind::ControllerManager => "controller-manager",
            ComponentKind::Scheduler => "scheduler",
        }
    }

    /// The client certificate's CN, as kubeadm issues it.
    pub fn user(self) -> &'static str {
        match self {
            ComponentKind::ControllerManager => "system:kube-controller-manager",
            ComponentKind::Scheduler => "system:kube-scheduler",
        }
    }

    /// The Lease it elects on (in kube-system), by default.
    pub fn lease_name(self) -> &'static str {
        match self {
            ComponentKind::ControllerManager => "kube-controller-manager",
            ComponentKind::Scheduler => "kube-scheduler",
        }
    }
}

/// One component process slot.
#[derive(Debug)]
pub struct Component {
    /// The health/metrics port (`--secure-port`).
    pub port: u16,
    pub log_path: PathBuf,
    args: Vec<String>,
    proc: Option<Proc>,
}

/// n components of one kind.
pub struct Components {
    pub kind: ComponentKind,
    pub items: Vec<Component>,
    /// The CA the health ports' certificates chain to.
    ca: PathBuf,
    bin: PathBuf,
    /// Logs; declared last so that processes die before their files go.
    _dir: tempfile::TempDir,
}

impl Components {
    /// Starts `n` components of `kind` against `cluster` (through its lb), each with
    /// `extra_args` appended to the wiring flags (`--kubeconfig`, `--secure-port`,
    /// `--bind-address`, `--tls-cert-file`, `--tls-private-key-file`).
    pub fn start(
        cluster: &ApiCluster,
        kind: ComponentKind,
        n: usize,
        extra_args: &[&str],
    ) -> anyhow::Result<Components> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("kl-{}-", kind.binary()))
            .tempdir()?;
        let pki = cluster.etcd.pki();
        let file: &'static str = Box::leak(format!("{}-client", kind.binary()).into_boxed_str());
        let kubeconfig = cluster.kubeconfig_for_user(file, kind.user(), None)?;
        let serving: &'static str =
            Box::leak(format!("{}-serving", kind.binary()).into_boxed_str());
        let (cert, key) = pki.issue(serving, kind.user(), None, true)?;
        let p = |p: &Path| p.display().to_string();
        let items = (0..n)
            .map(|i| {
                let port = free_port();
                let mut args = vec![
                    format!("--kubeconfig={}", p(&kubeconfig)),
                    format!("--secure-port={port}"),
                    "--bind-address=127.0.0.1".into(),
                    format!("--tls-cert-file={}", p(&cert)),
                    format!("--tls-private-key-file={}", p(&key)),
                ];
                args.extend(extra_args.iter().map(|s| s.to_string()));
                Component {
                    port,
                    log_path: dir.path().join(format!("{}{i}.log", kind.binary())),
                    args,
                    proc: None,
                }
            })
            .collect();
        let mut c = Components {
            kind,
            items,
            ca: pki.cluster_ca.clone(),
            bin: bin_path(kind.binary()),
            _dir: dir,
        };
        for i in 0..n {
            c.spawn(i)?;
        }
        Ok(c)
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

    /// Starts component `i` again (same flags and port) after it was killed or exited.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill9(i);
        self.spawn(i)
    }

    /// SIGKILL component `i`.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut p) = self.items[i].proc.take() {
            p.kill9();
        }
    }

    /// Sends a signal (`TERM`, `STOP`, `CONT`, ...) to component `i`.
    pub fn signal(&mut self, i: usize, sig: &str) -> anyhow::Result<()> {
        self.items[i]
            .proc
            .as_mut()
            .context("component is not running")?
            .signal(sig)
    }

    /// Waits up to `timeout` for component `i` to exit; its exit code (None: by a signal).
    pub fn wait_exit(&mut self, i: usize, timeout: Duration) -> Option<Option<i32>> {
        let st = self.items[i].proc.as_mut()?.wait_exit(timeout)?;
        self.items[i].proc = None;
        Some(st.code())
    }

    pub fn is_running(&mut self, i: usize) -> bool {
        self.items[i].proc.as_mut().is_some_and(Proc::is_running)
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.items[i].log_path).unwrap_or_default()
    }

    /// `GET path` on component `i`'s health port (HTTPS, verified against the cluster CA).
    pub async fn get(&self, i: usize, path: &str) -> anyhow::Result<(u16, String)> {
        https_get(&self.ca, None, self.items[i].port, path).await
    }

    /// A handle that asks the components' health ports who leads, for a background task.
    pub fn probe(&self) -> HealthProbe {
        HealthProbe {
            ca: self.ca.clone(),
            ports: self.items.iter().map(|c| c.port).collect(),
        }
    }

    /// See [`HealthProbe::is_leading`].
    pub async fn is_leading(&self, i: usize) -> Option<bool> {
        self.probe().is_leading(i).await
    }

    /// See [`HealthProbe::leaders`].
    pub async fn leaders(&self) -> Vec<usize> {
        self.probe().leaders().await
    }

    /// Prints the last `lines` lines of every component's log.
    pub fn dump_logs(&self, lines: usize) {
        for (i, c) in self.items.iter().enumerate() {
            eprintln!(
                "----- {} {i} (port {}) last {lines} lines -----\n{}",
                self.kind.binary(),
                c.port,
                tail(&c.log_path, lines)
            );
        }
    }
}

/// Asks components' health ports who leads. Cheap to clone.
#[derive(Clone, Debug)]
pub struct HealthProbe {
    ca: PathBuf,
    ports: Vec<u16>,
}

impl HealthProbe {
    /// Whether component `i` reports leading (`leader_election_master_status` = 1 on its
    /// /metrics); None when it does not answer within 2 s (dead, stopped, starting).
    pub async fn is_leading(&self, i: usize) -> Option<bool> {
        let get = https_get(&self.ca, None, self.ports[i], "/metrics");
        let (code, body) = tokio::time::timeout(Duration::from_secs(2), get)
            .await
            .ok()?
            .ok()?;
        if code != 200 {
            return None;
        }
        let line = body
            .lines()
            .find(|l| l.starts_with("leader_election_master_status{"))?;
        Some(line.trim_end().ends_with(" 1"))
    }

    /// The components that report leading now, asked all at once (those not answering are
    /// left out).
    pub async fn leaders(&self) -> Vec<usize> {
        let answers =
            futures::future::join_all((0..self.ports.len()).map(|i| self.is_leading(i))).await;
        answers
            .into_iter()
            .enumerate()
            .filter_map(|(i, a)| (a == Some(true)).then_some(i))
            .collect()
    }
}

impl Drop for Components {
    fn drop(&mut self) {
        for c in &mut self.items {
            if let Some(mut p) = c.proc.take() {
                p.kill9();
            }
        }
        if std::thread::panicking() {
            self.dump_logs(40);
        }
    }
}

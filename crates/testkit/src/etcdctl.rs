//! Debian's `etcdctl` (v3 API) pointed at a test cluster with the test PKI's client
//! certificate. Every run is bounded; a run that does not finish in time is killed.

use std::{path::PathBuf, process::Stdio, time::Duration};

use tokio::process::Command;

use crate::pki::TestPki;

/// How long one etcdctl run may take.
pub const ETCDCTL_TIMEOUT: Duration = Duration::from_secs(30);

pub use crate::command::CmdOutput;

/// etcdctl with `ETCDCTL_API=3`, `--endpoints`, `--cacert`, `--cert` and `--key` set.
#[derive(Clone, Debug)]
pub struct Etcdctl {
    bin: PathBuf,
    endpoints: Vec<String>,
    cacert: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Etcdctl {
    pub fn new(bin: PathBuf, endpoints: Vec<String>, pki: &TestPki) -> Self {
        Etcdctl {
            bin,
            endpoints,
            cacert: pki.etcd_ca.clone(),
            cert: pki.etcd_admin_cert.clone(),
            key: pki.etcd_admin_key.clone(),
        }
    }

    /// The same etcdctl presenting another client certificate (`--cert`/`--key`).
    pub fn with_identity(mut self, cert: PathBuf, key: PathBuf) -> Self {
        self.cert = cert;
        self.key = key;
        self
    }

    /// A command with the connection flags set, for callers that need to drive the process
    /// themselves (e.g. `watch`, read line by line). It is killed when dropped.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoints.join(",")))
            .arg(format!("--cacert={}", self.cacert.display()))
            .arg(format!("--cert={}", self.cert.display()))
            .arg(format!("--key={}", self.key.display()))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    /// Runs etcdctl with `args` and waits (bounded) for it to finish.
    pub async fn run(&self, args: &[&str]) -> anyhow::Result<CmdOutput> {
        self.run_with_stdin(args, None).await
    }

    /// Runs etcdctl with `args`, writing `stdin` to it (then closing it), e.g. for the
    /// interactive `txn`.
    pub async fn run_with_stdin(
        &self,
        args: &[&str],
        stdin: Option<&str>,
    ) -> anyhow::Result<CmdOutput> {
        crate::command::run_bounded(
            self.command(args),
            stdin,
            ETCDCTL_TIMEOUT,
            &format!("etcdctl {args:?}"),
        )
        .await
    }
}

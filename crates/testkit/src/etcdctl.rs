//! Debian's `etcdctl` (v3 API) pointed at a test cluster with the test PKI's client
//! certificate. Every run is bounded; a run that does not finish in time is killed.

use std::{path::PathBuf, process::Stdio, time::Duration};

use anyhow::Context;
use tokio::{io::AsyncWriteExt, process::Command};

use crate::pki::TestPki;

/// How long one etcdctl run may take.
pub const ETCDCTL_TIMEOUT: Duration = Duration::from_secs(30);

/// What an etcdctl run printed and how it ended.
#[derive(Clone, Debug)]
pub struct CmdOutput {
    pub stdout: String,
    pub stderr: String,
    /// The exit code (`None` when killed by a signal).
    pub code: Option<i32>,
}

impl CmdOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The output, or an error carrying both streams when the exit code was not 0.
    pub fn ok(self) -> anyhow::Result<Self> {
        anyhow::ensure!(
            self.success(),
            "etcdctl exited with {:?}\nstdout: {}\nstderr: {}",
            self.code,
            self.stdout,
            self.stderr
        );
        Ok(self)
    }
}

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
            cacert: pki.ca_cert.clone(),
            cert: pki.client_cert.clone(),
            key: pki.client_key.clone(),
        }
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
        let mut cmd = self.command(args);
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd.spawn().context("starting etcdctl")?;
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().context("etcdctl stdin")?;
            pipe.write_all(input.as_bytes()).await?;
            drop(pipe);
        }
        let out = tokio::time::timeout(ETCDCTL_TIMEOUT, child.wait_with_output())
            .await
            .with_context(|| format!("etcdctl {args:?} did not finish in {ETCDCTL_TIMEOUT:?}"))??;
        Ok(CmdOutput {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            code: out.status.code(),
        })
    }
}

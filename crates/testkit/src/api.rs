//! [`ApiCluster`]: a store cluster ([`EtcdCluster`], etcd-lite or with `KL_ETCD_BIN` real
//! etcd), n apiservers on it and the lb in front of them, all real processes on loopback with
//! mutual TLS, plus an admin kubeconfig pointing at the lb and `kubectl-lite` to use it.
//!
//! Apiserver `i` is a slot like an etcd member: its port and log file stay the same across
//! kills and restarts, so the lb (which lists every slot as a backend) sees it come back.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use tokio::process::Command;

use crate::{
    bins::bin_path,
    command::{run_bounded, CmdOutput},
    etcd::{EtcdCluster, EtcdOpts},
    ports::free_port,
    process::{tail, Proc},
    wait::wait_until,
};

/// How long one kubectl-lite run may take (its own retries included).
pub const KUBECTL_TIMEOUT: Duration = Duration::from_secs(60);

/// Options of an [`ApiCluster`].
#[derive(Clone, Debug)]
pub struct ApiOpts {
    /// Store members.
    pub etcd_members: usize,
    pub etcd: EtcdOpts,
    /// Apiservers behind the lb.
    pub apiservers: usize,
    /// Extra apiserver flags, appended as given.
    pub apiserver_args: Vec<String>,
    /// Extra lb flags, appended as given.
    pub lb_args: Vec<String>,
    /// How long the apiservers and the lb may take to become ready.
    pub start_timeout: Duration,
}

impl Default for ApiOpts {
    fn default() -> Self {
        ApiOpts {
            etcd_members: 3,
            etcd: EtcdOpts::fast(),
            apiservers: 2,
            apiserver_args: Vec::new(),
            lb_args: Vec::new(),
            start_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug)]
struct ApiServerSlot {
    port: u16,
    log_path: PathBuf,
    proc: Option<Proc>,
}

/// The whole front door of a cluster. Dropping it kills every process (apiservers and lb
/// first, then the store) and removes the temp dirs; a panicking test first gets log tails.
pub struct ApiCluster {
    apiservers: Vec<ApiServerSlot>,
    lb: Option<Proc>,
    lb_port: u16,
    lb_stats_port: u16,
    lb_log: PathBuf,
    /// The apiservers' serving certificate and key.
    serving: (PathBuf, PathBuf),
    /// The apiservers' client certificate and key towards kubelets (logs).
    kubelet_client: (PathBuf, PathBuf),
    admin_kubeconfig: PathBuf,
    opts: ApiOpts,
    /// The store; public so that tests can kill, pause and restart members.
    pub etcd: EtcdCluster,
    /// Logs of apiservers and lb. Declared last: the processes die before their files go.
    dir: tempfile::TempDir,
}

impl ApiCluster {
    /// Starts the store, `opts.apiservers` apiservers and the lb, and waits until the lb
    /// passes `/readyz` through to an apiserver.
    pub async fn start(opts: ApiOpts) -> anyhow::Result<Self> {
        let etcd = EtcdCluster::start(opts.etcd_members, opts.etcd.clone()).await?;
        let dir = tempfile::Builder::new().prefix("kl-api-").tempdir()?;
        let pki = etcd.pki().clone();
        let serving = pki.issue("apiserver", "kube-apiserver", None, true)?;
        let kubelet_client = pki.issue(
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            Some("system:masters"),
            false,
        )?;
        let lb_port = free_port();
        let admin_kubeconfig = pki.kubeconfig(
            "admin",
            &format!("https://127.0.0.1:{lb_port}"),
            "kubernetes-admin",
            Some("system:masters"),
        )?;
        let apiservers = (0..opts.apiservers)
            .map(|i| ApiServerSlot {
                port: free_port(),
                log_path: dir.path().join(format!("apiserver{i}.log")),
                proc: None,
            })
            .collect();
        let mut c = ApiCluster {
            apiservers,
            lb: None,
            lb_port,
            lb_stats_port: free_port(),
            lb_log: dir.path().join("lb.log"),
            serving,
            kubelet_client,
            admin_kubeconfig,
            opts,
            etcd,
            dir,
        };
        for i in 0..c.apiservers.len() {
            c.spawn_apiserver(i)?;
        }
        let timeout = c.opts.start_timeout;
        for i in 0..c.apiservers.len() {
            if let Err(e) = c.wait_apiserver_ready(i, timeout).await {
                c.dump_logs(40);
                return Err(e);
            }
        }
        c.spawn_lb()?;
        let lb_port = c.lb_port;
        let ca = c.etcd.pki().cluster_ca.clone();
        if let Err(e) = wait_until(
            "the lb to pass /readyz to an apiserver",
            timeout,
            Duration::from_millis(100),
            || async { Ok(ready(&ca, lb_port).await.then_some(())) },
        )
        .await
        {
            c.dump_logs(40);
            return Err(e);
        }
        Ok(c)
    }

    /// The etcd client URLs every apiserver is given (every member, dead or alive: the flag is
    /// static, as in a real deployment).
    pub fn etcd_servers(&self) -> String {
        (0..self.etcd.len())
            .map(|i| self.etcd.client_url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The exact flags apiserver `i` runs with.
    pub fn apiserver_args(&self, i: usize) -> Vec<String> {
        let pki = self.etcd.pki();
        let p = |p: &Path| p.display().to_string();
        let mut a = vec![
            format!("--etcd-servers={}", self.etcd_servers()),
            format!("--etcd-cafile={}", p(&pki.etcd_ca)),
            format!("--etcd-certfile={}", p(&pki.apiserver_etcd_cert)),
            format!("--etcd-keyfile={}", p(&pki.apiserver_etcd_key)),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={}", self.apiservers[i].port),
            format!("--tls-cert-file={}", p(&self.serving.0)),
            format!("--tls-private-key-file={}", p(&self.serving.1)),
            format!("--client-ca-file={}", p(&pki.cluster_ca)),
            format!("--kubelet-client-certificate={}", p(&self.kubelet_client.0)),
            format!("--kubelet-client-key={}", p(&self.kubelet_client.1)),
        ];
        // As kubeadm sets it, so that every test runs its components under the built-in
        // policy; a test may choose another mode.
        if !self
            .opts
            .apiserver_args
            .iter()
            .any(|x| x.starts_with("--authorization-mode"))
        {
            a.push("--authorization-mode=Node,RBAC".into());
        }
        a.extend(self.opts.apiserver_args.iter().cloned());
        a
    }

    fn spawn_apiserver(&mut self, i: usize) -> anyhow::Result<()> {
        let args = self.apiserver_args(i);
        let slot = &mut self.apiservers[i];
        slot.proc = Some(
            Proc::spawn(&bin_path("apiserver"), &args, &slot.log_path)
                .context("run `cargo build --workspace --bins` first")?,
        );
        Ok(())
    }

    fn spawn_lb(&mut self) -> anyhow::Result<()> {
        let pki = self.etcd.pki();
        let mut args = vec![
            format!("--bind=127.0.0.1:{}", self.lb_port),
            format!("--stats-bind=127.0.0.1:{}", self.lb_stats_port),
            format!("--check-ca-file={}", pki.cluster_ca.display()),
        ];
        for s in &self.apiservers {
            args.push(format!("--backend=127.0.0.1:{}", s.port));
        }
        args.extend(self.opts.lb_args.iter().cloned());
        self.lb = Some(
            Proc::spawn(&bin_path("lb"), &args, &self.lb_log)
                .context("run `cargo build --workspace --bins` first")?,
        );
        Ok(())
    }

    /// Waits until apiserver `i` answers `/readyz` with 200.
    pub async fn wait_apiserver_ready(&self, i: usize, timeout: Duration) -> anyhow::Result<()> {
        let ca = self.etcd.pki().cluster_ca.clone();
        let port = self.apiservers[i].port;
        wait_until(
            &format!("apiserver {i} (port {port}) to be ready"),
            timeout,
            Duration::from_millis(100),
            || async { Ok(ready(&ca, port).await.then_some(())) },
        )
        .await
    }

    /// The status code apiserver `i` answers `GET path` with (no client certificate), or an
    /// error when it does not answer.
    pub async fn apiserver_get(&self, i: usize, path: &str) -> anyhow::Result<(u16, String)> {
        https_get(
            &self.etcd.pki().cluster_ca,
            None,
            self.apiservers[i].port,
            path,
        )
        .await
    }

    /// As [`Self::apiserver_get`], presenting the admin's client certificate.
    pub async fn apiserver_get_authenticated(
        &self,
        i: usize,
        path: &str,
    ) -> anyhow::Result<(u16, String)> {
        let pki = self.etcd.pki();
        https_get(
            &pki.cluster_ca,
            Some((&pki.admin_cert, &pki.admin_key)),
            self.apiservers[i].port,
            path,
        )
        .await
    }

    pub fn apiserver_count(&self) -> usize {
        self.apiservers.len()
    }

    pub fn apiserver_port(&self, i: usize) -> u16 {
        self.apiservers[i].port
    }

    /// `https://127.0.0.1:PORT` of apiserver `i` itself (bypassing the lb).
    pub fn apiserver_url(&self, i: usize) -> String {
        format!("https://127.0.0.1:{}", self.apiservers[i].port)
    }

    /// `https://127.0.0.1:PORT` of the lb.
    pub fn lb_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.lb_port)
    }

    pub fn lb_stats_port(&self) -> u16 {
        self.lb_stats_port
    }

    /// The admin kubeconfig (user kubernetes-admin, group system:masters), server = the lb.
    pub fn kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// A kubeconfig for apiserver `i` directly (bypassing the lb), as the admin.
    pub fn kubeconfig_for_apiserver(&self, i: usize) -> anyhow::Result<PathBuf> {
        let file: &'static str = Box::leak(format!("admin-apiserver{i}").into_boxed_str());
        self.etcd.pki().kubeconfig(
            file,
            &self.apiserver_url(i),
            "kubernetes-admin",
            Some("system:masters"),
        )
    }

    /// A kubeconfig for another user (client certificate CN = `user`, O = `group`), via the lb.
    pub fn kubeconfig_for_user(
        &self,
        file: &'static str,
        user: &str,
        group: Option<&str>,
    ) -> anyhow::Result<PathBuf> {
        self.etcd
            .pki()
            .kubeconfig(file, &self.lb_url(), user, group)
    }

    /// A kl-client [`kl_client::Client`] for the admin, through the lb.
    pub fn resolved_admin(&self) -> anyhow::Result<kl_client::ResolvedConfig> {
        Ok(kl_client::Kubeconfig::load(&self.admin_kubeconfig)?.resolve(None)?)
    }

    /// Runs `kubectl-lite --kubeconfig <admin> args...` (bounded).
    pub async fn kubectl(&self, args: &[&str]) -> anyhow::Result<CmdOutput> {
        self.kubectl_with(&self.admin_kubeconfig, args, None).await
    }

    /// Runs kubectl-lite with `stdin` fed to it (for `apply -f -`).
    pub async fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> anyhow::Result<CmdOutput> {
        self.kubectl_with(&self.admin_kubeconfig, args, Some(stdin))
            .await
    }

    /// Runs kubectl-lite with another kubeconfig.
    pub async fn kubectl_with(
        &self,
        kubeconfig: &Path,
        args: &[&str],
        stdin: Option<&str>,
    ) -> anyhow::Result<CmdOutput> {
        let mut cmd = Command::new(bin_path("kubectl-lite"));
        cmd.arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args(args)
            .env_remove("KUBECONFIG");
        run_bounded(
            cmd,
            stdin,
            KUBECTL_TIMEOUT,
            &format!("kubectl-lite {args:?}"),
        )
        .await
    }

    /// A `kubectl-lite ... get -w` style command left running: the caller reads its stdout.
    pub fn kubectl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin_path("kubectl-lite"));
        cmd.arg(format!("--kubeconfig={}", self.admin_kubeconfig.display()))
            .args(args)
            .env_remove("KUBECONFIG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// SIGKILL apiserver `i`.
    pub fn kill9_apiserver(&mut self, i: usize) {
        if let Some(mut p) = self.apiservers[i].proc.take() {
            p.kill9();
        }
    }

    /// Sends a signal (`TERM`, `STOP`, ...) to apiserver `i`.
    pub fn signal_apiserver(&mut self, i: usize, sig: &str) -> anyhow::Result<()> {
        self.apiservers[i]
            .proc
            .as_mut()
            .context("apiserver is not running")?
            .signal(sig)
    }

    /// Waits up to `timeout` for apiserver `i` to exit; its exit code.
    pub fn wait_apiserver_exit(&mut self, i: usize, timeout: Duration) -> Option<Option<i32>> {
        let p = self.apiservers[i].proc.as_mut()?;
        let st = p.wait_exit(timeout)?;
        self.apiservers[i].proc = None;
        Some(st.code())
    }

    pub fn apiserver_running(&mut self, i: usize) -> bool {
        self.apiservers[i]
            .proc
            .as_mut()
            .is_some_and(Proc::is_running)
    }

    /// Starts apiserver `i` again (same flags, same port) and waits until it is ready.
    pub async fn restart_apiserver(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill9_apiserver(i);
        self.spawn_apiserver(i)?;
        self.wait_apiserver_ready(i, self.opts.start_timeout).await
    }

    /// Peak RSS (VmHWM) of apiserver `i`, in KiB.
    pub fn apiserver_peak_rss_kib(&self, i: usize) -> Option<u64> {
        self.apiservers[i]
            .proc
            .as_ref()
            .and_then(Proc::peak_rss_kib)
    }

    pub fn apiserver_log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.apiservers[i].log_path).unwrap_or_default()
    }

    /// Prints the last `lines` lines of every apiserver's, the lb's and every member's log.
    pub fn dump_logs(&self, lines: usize) {
        for (i, s) in self.apiservers.iter().enumerate() {
            eprintln!(
                "----- apiserver {i} (port {}) last {lines} lines -----\n{}",
                s.port,
                tail(&s.log_path, lines)
            );
        }
        eprintln!(
            "----- lb (port {}) last {lines} lines -----\n{}",
            self.lb_port,
            tail(&self.lb_log, lines)
        );
        self.etcd.dump_logs(lines);
    }
}

impl Drop for ApiCluster {
    fn drop(&mut self) {
        for s in &mut self.apiservers {
            if let Some(mut p) = s.proc.take() {
                p.kill9();
            }
        }
        if let Some(mut p) = self.lb.take() {
            p.kill9();
        }
        if std::thread::panicking() {
            for (i, s) in self.apiservers.iter().enumerate() {
                eprintln!(
                    "----- apiserver {i} last 30 lines -----\n{}",
                    tail(&s.log_path, 30)
                );
            }
            eprintln!("----- lb last 30 lines -----\n{}", tail(&self.lb_log, 30));
        }
        if std::env::var_os("KL_KEEP_TEST_DIRS").is_some() {
            let dir = std::mem::replace(
                &mut self.dir,
                tempfile::tempdir().expect("a temp dir for the kept one's place"),
            );
            eprintln!("keeping {}", dir.keep().display());
        }
    }
}

/// Whether `GET /readyz` on 127.0.0.1:port answers 200.
async fn ready(ca: &Path, port: u16) -> bool {
    matches!(https_get(ca, None, port, "/readyz").await, Ok((200, _)))
}

/// One HTTPS/1.1 `GET path` to 127.0.0.1:port, verifying the server for `localhost` against
/// `ca`, presenting `identity` if given; the status code and body. Bounded to 5 s. A thin
/// wrapper over [`kl_tls::http_get_via`], the project's one HTTPS GET.
pub async fn https_get(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
    port: u16,
    path: &str,
) -> anyhow::Result<(u16, String)> {
    let tls = kl_tls::ClientTls::load(ca, identity)?;
    let r = kl_tls::http_get_via(
        Some(&format!("127.0.0.1:{port}")),
        &format!("https://localhost:{port}{path}"),
        Some(&tls),
        Duration::from_secs(5),
    )
    .await?;
    Ok((r.status, r.body))
}

/// A raw gRPC client of the kube-lite API at `url` (the lb or one apiserver), verifying the
/// server against the test CA and presenting `identity` if given. Tests of the wire protocol
/// use it to see exact status codes; everything else should use kl-client.
pub async fn raw_api_client(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
    url: &str,
) -> anyhow::Result<kl_api::api_client::ApiClient<tonic::transport::Channel>> {
    Ok(kl_api::api_client::ApiClient::new(
        api_channel(ca, identity, url).await?,
    ))
}

/// A connected gRPC channel to `url` (mutual TLS with `identity` if given), for any service
/// the apiserver serves (the API, gRPC health).
pub async fn api_channel(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
    url: &str,
) -> anyhow::Result<tonic::transport::Channel> {
    let tls = kl_tls::ClientTls::load(ca, identity)?
        .tonic_config()
        .domain_name("localhost");
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .with_context(|| format!("connecting to {url}"))?;
    Ok(channel)
}

impl ApiCluster {
    /// A raw gRPC client as the admin, through the lb.
    pub async fn raw_client(
        &self,
    ) -> anyhow::Result<kl_api::api_client::ApiClient<tonic::transport::Channel>> {
        let pki = self.etcd.pki();
        raw_api_client(
            &pki.cluster_ca,
            Some((&pki.admin_cert, &pki.admin_key)),
            &self.lb_url(),
        )
        .await
    }

    /// A raw gRPC client as the admin, to apiserver `i` directly.
    pub async fn raw_client_for(
        &self,
        i: usize,
    ) -> anyhow::Result<kl_api::api_client::ApiClient<tonic::transport::Channel>> {
        let pki = self.etcd.pki();
        raw_api_client(
            &pki.cluster_ca,
            Some((&pki.admin_cert, &pki.admin_key)),
            &self.apiserver_url(i),
        )
        .await
    }

    /// The cluster CA: what the apiservers', components' and kubelets' serving certificates
    /// chain to (the store's chain to the etcd CA, `self.etcd.pki().etcd_ca`).
    pub fn ca_cert(&self) -> &Path {
        &self.etcd.pki().cluster_ca
    }
}

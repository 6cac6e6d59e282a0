//! [`EtcdCluster`]: n members of the store, each a real process on loopback with mutual TLS on
//! its client and peer ports, its own data dir and its own log file.
//!
//! The flags are exactly etcd's, so the same cluster runs etcd-lite or, with
//! `KL_ETCD_BIN=/usr/bin/etcd`, real etcd; that is how the tests themselves are checked.
//!
//! Set `KL_KEEP_TEST_DIRS=1` to keep the temp dir (logs, data dirs, PKI) after a test.
//!
//! Member `i` is a *slot*: its name (`m0`, `m1`, ...), ports and data dir stay the same across
//! kills, restarts and wipes, so a test can say "kill the leader, restart it" by index.
//! [`EtcdCluster::add_slot`] makes a new slot for a member that joins later.
//!
//! With [`EtcdOpts::peer_proxies`], every member's peer traffic goes through a proxy the test
//! controls ([`crate::proxy`]), so that [`EtcdCluster::isolate`] can partition a member from
//! the others and [`EtcdCluster::heal`] join them again.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use etcd_client::{Client, ConnectOptions, StatusResponse};

use crate::{
    bins::{etcd_bin, etcdctl_bin},
    etcdctl::Etcdctl,
    pki::TestPki,
    ports::free_port,
    process::{tail, Proc},
    proxy::PeerProxies,
    slots::ClusterSlot,
    wait::wait_until,
};

/// How long one Status call may take while polling members.
const STATUS_TIMEOUT: Duration = Duration::from_secs(3);

/// Options of a test cluster. Every field maps to one etcd flag.
#[derive(Clone, Debug)]
pub struct EtcdOpts {
    /// `--heartbeat-interval` in ms (etcd's default 100).
    pub heartbeat_interval_ms: u64,
    /// `--election-timeout` in ms (etcd's default 1000).
    pub election_timeout_ms: u64,
    /// `--snapshot-count`, when not etcd's default.
    pub snapshot_count: Option<u64>,
    /// `--max-request-bytes`, when not etcd's default (1.5 MiB).
    pub max_request_bytes: Option<u64>,
    /// `--max-txn-ops`, when not etcd's default (128).
    pub max_txn_ops: Option<u64>,
    /// Further flags, appended as given.
    pub extra_args: Vec<String>,
    /// Route each member's peer traffic through a [`PeerProxies`] proxy (the member advertises
    /// the proxy's port and listens on another), so that the test can cut links.
    pub peer_proxies: bool,
    /// How long starting (or restarting) members may take to answer and elect a leader.
    pub start_timeout: Duration,
}

impl Default for EtcdOpts {
    fn default() -> Self {
        EtcdOpts {
            heartbeat_interval_ms: 100,
            election_timeout_ms: 1000,
            snapshot_count: None,
            max_request_bytes: None,
            max_txn_ops: None,
            extra_args: Vec::new(),
            peer_proxies: false,
            start_timeout: Duration::from_secs(60),
        }
    }
}

impl EtcdOpts {
    /// Faster failure detection: heartbeat 50 ms, election timeout 500 ms.
    pub fn fast() -> Self {
        EtcdOpts {
            heartbeat_interval_ms: 50,
            election_timeout_ms: 500,
            ..Default::default()
        }
    }

    pub fn snapshot_count(mut self, n: u64) -> Self {
        self.snapshot_count = Some(n);
        self
    }

    pub fn max_request_bytes(mut self, n: u64) -> Self {
        self.max_request_bytes = Some(n);
        self
    }

    pub fn max_txn_ops(mut self, n: u64) -> Self {
        self.max_txn_ops = Some(n);
        self
    }

    /// See [`EtcdOpts::peer_proxies`].
    pub fn with_peer_proxies(mut self) -> Self {
        self.peer_proxies = true;
        self
    }
}

/// One member slot.
#[derive(Debug)]
struct Member {
    name: String,
    client_port: u16,
    /// The advertised peer port: the member's own, or its proxy's.
    peer_port: u16,
    /// The port the member listens on for peers (`peer_port` unless proxied).
    listen_peer_port: u16,
    metrics_port: u16,
    data_dir: PathBuf,
    log_path: PathBuf,
    /// `--initial-cluster` it was (last) started with; kept for restarts, which reuse every
    /// flag as an operator's unit file would.
    initial_cluster: String,
    /// `--initial-cluster-state` it was (last) started with.
    initial_state: &'static str,
    proc: Option<Proc>,
    /// SIGSTOPped: skipped when polling members.
    stopped: bool,
}

impl Member {
    fn client_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.peer_port)
    }

    fn listen_peer_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.listen_peer_port)
    }

    fn running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(Proc::is_running)
    }
}

/// A store cluster of real processes. Dropping it kills every process (SIGKILL) and removes
/// its temp dir; when dropped during a panic it first prints the tail of each member's log.
pub struct EtcdCluster {
    members: Vec<Member>,
    bin: PathBuf,
    opts: EtcdOpts,
    pki: TestPki,
    token: String,
    /// The peer proxies, with [`EtcdOpts::peer_proxies`].
    proxies: Option<PeerProxies>,
    /// Root of PKI, data dirs and logs. Declared after `members` so the processes die before
    /// their files go.
    dir: tempfile::TempDir,
    /// One of the machine-wide cluster slots (see [`crate::slots`]); freed last.
    _slot: ClusterSlot,
}

impl EtcdCluster {
    /// Starts `n` members with mutual TLS on client and peer ports and waits until every one
    /// answers and they agree on a leader.
    ///
    /// # Errors
    /// When the binary is missing (with the command that builds it) or the cluster does not
    /// come up within `opts.start_timeout` (with the members' log tails).
    pub async fn start(n: usize, opts: EtcdOpts) -> anyhow::Result<Self> {
        anyhow::ensure!(n > 0, "a cluster needs at least one member");
        let bin = etcd_bin()?;
        let slot = crate::slots::acquire().await?;
        let dir = tempfile::Builder::new().prefix("kl-etcd-").tempdir()?;
        let pki = TestPki::generate(&dir.path().join("pki"))?;
        let token = format!(
            "kl-test-{}",
            dir.path()
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        let proxies = if opts.peer_proxies {
            Some(PeerProxies::new()?)
        } else {
            None
        };
        let mut cluster = EtcdCluster {
            members: Vec::new(),
            bin,
            opts,
            pki,
            token,
            proxies,
            dir,
            _slot: slot,
        };
        for _ in 0..n {
            cluster.add_slot();
        }
        let initial = cluster.initial_cluster_of(0..n);
        for i in 0..n {
            cluster.members[i].initial_cluster = initial.clone();
            cluster.members[i].initial_state = "new";
            cluster.spawn(i)?;
        }
        let timeout = cluster.opts.start_timeout;
        if let Err(e) = cluster.wait_ready(timeout).await {
            cluster.dump_logs(40);
            return Err(e.context(format!("starting a {n}-member cluster")));
        }
        Ok(cluster)
    }

    /// Creates a new member slot (name, ports, data dir, its peer proxy if any), not started,
    /// and returns its index. Add it to the cluster with MemberAdd, then start it with
    /// [`Self::add_member_process`].
    ///
    /// # Panics
    /// When its peer proxy cannot listen on loopback.
    pub fn add_slot(&mut self) -> usize {
        let i = self.members.len();
        let data_dir = self.dir.path().join(format!("m{i}.etcd"));
        let log_path = self.dir.path().join(format!("m{i}.log"));
        let listen_peer_port = free_port();
        let peer_port = match &mut self.proxies {
            Some(p) => p
                .add(listen_peer_port)
                .unwrap_or_else(|e| panic!("peer proxy of member {i}: {e:#}")),
            None => listen_peer_port,
        };
        self.members.push(Member {
            name: format!("m{i}"),
            client_port: free_port(),
            peer_port,
            listen_peer_port,
            metrics_port: free_port(),
            data_dir,
            log_path,
            initial_cluster: String::new(),
            initial_state: "new",
            proc: None,
            stopped: false,
        });
        i
    }

    fn initial_cluster_of(&self, idx: impl IntoIterator<Item = usize>) -> String {
        idx.into_iter()
            .map(|i| format!("{}={}", self.members[i].name, self.members[i].peer_url()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The exact flags member `i` is started with.
    pub fn args(&self, i: usize) -> Vec<String> {
        let m = &self.members[i];
        let o = &self.opts;
        let p = &self.pki;
        let path = |p: &Path| p.display().to_string();
        let mut a = vec![
            format!("--name={}", m.name),
            format!("--data-dir={}", path(&m.data_dir)),
            format!("--listen-client-urls={}", m.client_url()),
            format!("--advertise-client-urls={}", m.client_url()),
            format!("--listen-peer-urls={}", m.listen_peer_url()),
            format!("--initial-advertise-peer-urls={}", m.peer_url()),
            format!("--initial-cluster={}", m.initial_cluster),
            format!("--initial-cluster-state={}", m.initial_state),
            format!("--initial-cluster-token={}", self.token),
            format!("--listen-metrics-urls=http://127.0.0.1:{}", m.metrics_port),
            format!("--heartbeat-interval={}", o.heartbeat_interval_ms),
            format!("--election-timeout={}", o.election_timeout_ms),
            format!("--cert-file={}", path(&p.server_cert)),
            format!("--key-file={}", path(&p.server_key)),
            format!("--trusted-ca-file={}", path(&p.etcd_ca)),
            "--client-cert-auth".to_string(),
            format!("--peer-cert-file={}", path(&p.peer_cert)),
            format!("--peer-key-file={}", path(&p.peer_key)),
            format!("--peer-trusted-ca-file={}", path(&p.etcd_ca)),
            "--peer-client-cert-auth".to_string(),
        ];
        if let Some(n) = o.snapshot_count {
            a.push(format!("--snapshot-count={n}"));
        }
        if let Some(n) = o.max_request_bytes {
            a.push(format!("--max-request-bytes={n}"));
        }
        if let Some(n) = o.max_txn_ops {
            a.push(format!("--max-txn-ops={n}"));
        }
        a.extend(o.extra_args.iter().cloned());
        a
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let args = self.args(i);
        let m = &mut self.members[i];
        anyhow::ensure!(
            !m.running(),
            "member {i} ({}) is still running; kill9 or sigterm it first",
            m.name
        );
        let p = Proc::spawn(&self.bin, &args, &m.log_path)?;
        if let Some(proxies) = &self.proxies {
            proxies.set_pid(i, Some(p.pid()));
        }
        m.proc = Some(p);
        m.stopped = false;
        Ok(())
    }

    async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<usize> {
        let running: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].running())
            .collect();
        self.wait_for_leader_among(&running, timeout).await
    }

    /// The binary the members run.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// The cluster's PKI.
    pub fn pki(&self) -> &TestPki {
        &self.pki
    }

    /// The temp dir holding PKI, data dirs and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The options the cluster was started with.
    pub fn opts(&self) -> &EtcdOpts {
        &self.opts
    }

    /// Number of member slots (including stopped, removed and added ones).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn name(&self, i: usize) -> &str {
        &self.members[i].name
    }

    pub fn client_url(&self, i: usize) -> String {
        self.members[i].client_url()
    }

    pub fn peer_url(&self, i: usize) -> String {
        self.members[i].peer_url()
    }

    pub fn metrics_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].metrics_port)
    }

    pub fn data_dir(&self, i: usize) -> &Path {
        &self.members[i].data_dir
    }

    pub fn log_path(&self, i: usize) -> &Path {
        &self.members[i].log_path
    }

    /// Client URLs of every member slot that has a live process.
    pub fn client_urls(&mut self) -> Vec<String> {
        self.running_indices()
            .into_iter()
            .map(|i| self.client_url(i))
            .collect()
    }

    /// Indices of the slots whose process is alive (stopped ones included).
    pub fn running_indices(&mut self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| self.members[i].running())
            .collect()
    }

    pub fn is_running(&mut self, i: usize) -> bool {
        self.members[i].running()
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].proc.as_ref().map(Proc::pid)
    }

    /// Peak RSS (VmHWM) of member `i`'s live process, in KiB.
    pub fn peak_rss_kib(&self, i: usize) -> Option<u64> {
        self.members[i].proc.as_ref().and_then(Proc::peak_rss_kib)
    }

    /// Connect options with the cluster's client certificate and a 5 s connect timeout; add a
    /// request timeout with `.with_timeout(..)` where a test needs one.
    pub fn connect_options(&self) -> ConnectOptions {
        let tls = self
            .pki
            .client_tls()
            .expect("the test PKI's client files load")
            .tonic_config();
        ConnectOptions::new()
            .with_tls(tls)
            .with_connect_timeout(Duration::from_secs(5))
    }

    /// A client balanced over every member that is running now.
    pub async fn client(&mut self) -> anyhow::Result<Client> {
        let urls = self.client_urls();
        anyhow::ensure!(!urls.is_empty(), "no member is running");
        Ok(Client::connect(urls, Some(self.connect_options())).await?)
    }

    /// A client that talks to member `i` only.
    pub async fn client_for(&self, i: usize) -> anyhow::Result<Client> {
        self.client_with(&[i], self.connect_options()).await
    }

    /// A client over the given members with the given options (e.g. a request timeout).
    pub async fn client_with(
        &self,
        members: &[usize],
        options: ConnectOptions,
    ) -> anyhow::Result<Client> {
        let urls: Vec<String> = members.iter().map(|&i| self.client_url(i)).collect();
        Ok(Client::connect(urls, Some(options)).await?)
    }

    /// Maintenance Status of member `i`, bounded by a short timeout.
    pub async fn status(&self, i: usize) -> anyhow::Result<StatusResponse> {
        let mut c = self.client_for(i).await?;
        tokio::time::timeout(STATUS_TIMEOUT, c.status())
            .await
            .map_err(|_| {
                anyhow::anyhow!("member {i}: Status did not answer in {STATUS_TIMEOUT:?}")
            })?
            .with_context(|| format!("member {i}: Status"))
    }

    /// The index of the member that the responding members agree is leader (it must report
    /// itself as leader, and no responding member may name another leader).
    pub async fn leader_index(&mut self) -> Option<usize> {
        let live: Vec<usize> = self
            .running_indices()
            .into_iter()
            .filter(|&i| !self.members[i].stopped)
            .collect();
        self.leader_among(&live).await.ok().flatten()
    }

    async fn leader_among(&self, members: &[usize]) -> anyhow::Result<Option<usize>> {
        let mut views = Vec::new();
        for &i in members {
            let st = self.status(i).await?;
            let id = st
                .header()
                .map(|h| h.member_id())
                .context("Status without a header")?;
            views.push((i, id, st.leader()));
        }
        let Some(&(_, _, leader)) = views.first() else {
            return Ok(None);
        };
        if leader == 0 || views.iter().any(|v| v.2 != leader) {
            return Ok(None);
        }
        Ok(views.iter().find(|v| v.1 == leader).map(|v| v.0))
    }

    /// Waits until every live, not stopped member answers Status and all name the same leader,
    /// which is one of them; returns its index.
    pub async fn wait_for_leader(&mut self, timeout: Duration) -> anyhow::Result<usize> {
        let live: Vec<usize> = self
            .running_indices()
            .into_iter()
            .filter(|&i| !self.members[i].stopped)
            .collect();
        self.wait_for_leader_among(&live, timeout).await
    }

    /// As [`Self::wait_for_leader`], over the given members only.
    pub async fn wait_for_leader_among(
        &self,
        members: &[usize],
        timeout: Duration,
    ) -> anyhow::Result<usize> {
        wait_until(
            &format!("members {members:?} to agree on a leader among them"),
            timeout,
            Duration::from_millis(100),
            || self.leader_among(members),
        )
        .await
    }

    /// The member ID of slot `i` according to the cluster's member list (asked of a running
    /// member), matched by peer URL.
    pub async fn member_id(&mut self, i: usize) -> anyhow::Result<u64> {
        let peer = self.peer_url(i);
        let asker = *self
            .running_indices()
            .iter()
            .find(|&&j| !self.members[j].stopped)
            .context("no running member to ask")?;
        let mut c = self.client_for(asker).await?;
        let list = tokio::time::timeout(STATUS_TIMEOUT, c.member_list())
            .await
            .context("MemberList timed out")??;
        list.members()
            .iter()
            .find(|m| m.peer_urls().contains(&peer))
            .map(|m| m.id())
            .with_context(|| format!("slot {i} ({peer}) is not in the member list"))
    }

    /// SIGKILL member `i` and reap it.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut p) = self.members[i].proc.take() {
            p.kill9();
        }
        self.members[i].stopped = false;
        if let Some(proxies) = &self.proxies {
            proxies.set_pid(i, None);
        }
    }

    /// SIGTERM member `i` and wait (up to 30 s) for it to exit.
    pub fn sigterm(&mut self, i: usize) -> anyhow::Result<()> {
        let name = self.members[i].name.clone();
        let p = self.members[i]
            .proc
            .as_mut()
            .with_context(|| format!("member {i} ({name}) is not running"))?;
        p.signal("TERM")?;
        let exited = p.wait_exit(Duration::from_secs(30));
        anyhow::ensure!(
            exited.is_some(),
            "member {i} ({name}) did not exit within 30s of SIGTERM"
        );
        self.members[i].proc = None;
        if let Some(proxies) = &self.proxies {
            proxies.set_pid(i, None);
        }
        Ok(())
    }

    /// SIGSTOP member `i` (it keeps its sockets but answers nothing).
    pub fn sigstop(&mut self, i: usize) -> anyhow::Result<()> {
        let p = self.members[i].proc.as_mut().context("not running")?;
        p.signal("STOP")?;
        self.members[i].stopped = true;
        Ok(())
    }

    /// SIGCONT member `i`.
    pub fn sigcont(&mut self, i: usize) -> anyhow::Result<()> {
        let p = self.members[i].proc.as_mut().context("not running")?;
        p.signal("CONT")?;
        self.members[i].stopped = false;
        Ok(())
    }

    /// The peer proxies, when started with [`EtcdOpts::peer_proxies`].
    pub fn proxies(&self) -> Option<&PeerProxies> {
        self.proxies.as_ref()
    }

    /// Partitions member `i` from every other member, both ways (its clients still reach it).
    ///
    /// # Errors
    /// When the cluster was started without [`EtcdOpts::peer_proxies`].
    pub fn isolate(&self, i: usize) -> anyhow::Result<()> {
        self.proxies
            .as_ref()
            .context("isolate needs a cluster started with EtcdOpts::peer_proxies")?
            .isolate(i);
        Ok(())
    }

    /// Heals every partition (nothing to do without peer proxies).
    pub fn heal(&self) {
        if let Some(p) = &self.proxies {
            p.heal_all();
        }
    }

    /// Starts member `i` again with the same flags and data dir. It does not wait: etcd serves
    /// clients only once it is back in a quorum, so restarting all members of a cluster one
    /// by one must not block on the first. Follow with [`Self::wait_for_leader`] or similar.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.spawn(i)
    }

    async fn wait_answers(&mut self, i: usize) -> anyhow::Result<()> {
        let timeout = self.opts.start_timeout;
        let r = wait_until(
            &format!("member {i} to answer Status"),
            timeout,
            Duration::from_millis(100),
            || async { self.status(i).await.map(Some) },
        )
        .await;
        if r.is_err() {
            self.dump_member_log(i, 40);
        }
        r.map(|_| ())
    }

    /// Deletes member `i`'s data dir. The member must not be running.
    pub fn wipe_data(&mut self, i: usize) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.members[i].running(),
            "member {i} is running; stop it before wiping its data"
        );
        let d = &self.members[i].data_dir;
        if d.exists() {
            std::fs::remove_dir_all(d).with_context(|| format!("removing {}", d.display()))?;
        }
        Ok(())
    }

    /// Starts slot `i` as a member joining an existing cluster (after a MemberAdd of its peer
    /// URL): `--initial-cluster` is the cluster's current member list (asked of a running
    /// member) and `--initial-cluster-state existing`. Waits until it answers Status.
    pub async fn add_member_process(&mut self, i: usize) -> anyhow::Result<()> {
        let asker = *self
            .running_indices()
            .iter()
            .find(|&&j| j != i && !self.members[j].stopped)
            .context("no running member to ask for the member list")?;
        let mut c = self.client_for(asker).await?;
        let list = tokio::time::timeout(STATUS_TIMEOUT, c.member_list())
            .await
            .context("MemberList timed out")??;
        let own = self.peer_url(i);
        let mut entries = Vec::new();
        for m in list.members() {
            for u in m.peer_urls() {
                let name = if *u == own {
                    self.members[i].name.clone()
                } else if !m.name().is_empty() {
                    m.name().to_string()
                } else {
                    match self.members.iter().find(|s| s.peer_url() == *u) {
                        Some(s) => s.name.clone(),
                        None => anyhow::bail!("member {:x} ({u}) has no name yet", m.id()),
                    }
                };
                entries.push(format!("{name}={u}"));
            }
        }
        anyhow::ensure!(
            list.members().iter().any(|m| m.peer_urls().contains(&own)),
            "slot {i} ({own}) was not added with MemberAdd"
        );
        self.members[i].initial_cluster = entries.join(",");
        self.members[i].initial_state = "existing";
        self.spawn(i)?;
        self.wait_answers(i).await
    }

    /// etcdctl against every running member.
    pub fn etcdctl(&mut self) -> anyhow::Result<Etcdctl> {
        let urls = self.client_urls();
        Ok(Etcdctl::new(etcdctl_bin()?, urls, &self.pki))
    }

    /// etcdctl against member `i` only.
    pub fn etcdctl_for(&self, i: usize) -> anyhow::Result<Etcdctl> {
        Ok(Etcdctl::new(
            etcdctl_bin()?,
            vec![self.client_url(i)],
            &self.pki,
        ))
    }

    /// Prints the last `lines` lines of every member's log to stderr.
    pub fn dump_logs(&self, lines: usize) {
        for i in 0..self.members.len() {
            self.dump_member_log(i, lines);
        }
    }

    /// Prints the last `lines` lines of member `i`'s log to stderr.
    pub fn dump_member_log(&self, i: usize, lines: usize) {
        let m = &self.members[i];
        eprintln!(
            "----- {} ({}) last {lines} lines of {} -----\n{}",
            m.name,
            m.client_url(),
            m.log_path.display(),
            tail(&m.log_path, lines)
        );
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut p) = m.proc.take() {
                p.kill9();
            }
        }
        if std::thread::panicking() {
            self.dump_logs(30);
        }
        if std::env::var_os("KL_KEEP_TEST_DIRS").is_some() {
            self.dir.disable_cleanup(true);
            eprintln!("KL_KEEP_TEST_DIRS: kept {}", self.dir.path().display());
        }
    }
}

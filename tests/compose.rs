//! The docker mode of `scripts/cluster` and the scenarios of `scripts/chaos`. `up` starts the
//! stacked topology of docker-compose.yml (three masters, each one container running
//! etcd-lite, the apiserver, the controller-manager and the scheduler; the lb; three workers)
//! from an image built by `scripts/image`, and returns a usable cluster: through the lb's
//! published port a ReplicaSet's 6 pods (real `sleep` processes in the workers' containers)
//! run spread over all three workers, `kubectl-lite logs` reads one (the apiserver dials the
//! worker container), and a component killed inside a master is restarted by the master's
//! supervisor. Then, each through `scripts/chaos` (whose verdict must be success: the cluster
//! whole again, never two controller-managers or schedulers acting at once, no write hung or
//! lost):
//!
//! * the master whose controller-manager leads is killed: a controller-manager on another
//!   master takes over, and a scale to 8 is carried out while it is down; it is restarted;
//! * a worker is killed: its pods are replaced on the others, it rejoins;
//! * the new leader's master is cut off the network: the majority side takes over; healed;
//! * quorum is lost: writes are refused by the server with etcd's reason (not a client
//!   timeout), and every acknowledged write is there once the members are back;
//! * `down` (volumes kept) and `up`: every object is still there, the pods run again.
//!
//! `down --purge` removes containers, network and volumes. Then the external topology (etcd1..3
//! in containers of their own) comes up, runs the same ReplicaSet spread over the workers,
//! loses the etcd leader's node and takes a write afterwards, loses its active scheduler (a
//! standby takes over) and its lb for a while, and has a master paused.
//!
//! Skipped, with a notice, when no Docker engine answers or no compose is installed. It uses
//! the debug binaries (scripts/test builds them), a unique compose project, image tag and state
//! dir, and free host ports, so it never touches a cluster a developer has up. Everything it
//! created (containers, network, volumes, image) is removed when it ends, also when it fails
//! (after printing the end of each container's logs).

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    time::Duration,
};

use common::docker::{build_test_image, docker, random_suffix, repo_root, DOCKER_TIMEOUT};

use testkit::{bin_path, command::run_bounded, free_port, wait_until, CmdOutput};
use tokio::process::Command;

/// Bound on one kubectl-lite run (its own retries included).
const KUBECTL_TIMEOUT: Duration = Duration::from_secs(30);

const REPLICA_SET: &str = "\
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: sleepers
spec:
  replicas: 6
  selector:
    matchLabels: {app: sleepers}
  template:
    metadata:
      labels: {app: sleepers}
    spec:
      containers:
      - name: sleep
        command: [sh, -c, 'echo hello from $(hostname); exec sleep 3600']
";

/// Whether an engine and a compose command answer; the reason when not.
async fn docker_available() -> Result<(), String> {
    match docker(&["info", "--format", "{{.ServerVersion}}"], "docker info").await {
        Ok(out) if out.success() => {}
        Ok(out) => return Err(format!("docker info: {}", out.stderr.trim())),
        Err(e) => return Err(format!("{e:#}")),
    }
    let mut v1 = Command::new("docker-compose");
    v1.arg("version");
    if run_bounded(v1, None, DOCKER_TIMEOUT, "docker-compose version")
        .await
        .is_ok_and(|o| o.success())
    {
        return Ok(());
    }
    match docker(&["compose", "version"], "docker compose version").await {
        Ok(out) if out.success() => Ok(()),
        _ => Err("neither docker-compose nor docker compose is installed".into()),
    }
}

/// One cluster made by `scripts/cluster` in Docker, with everything it created removed on drop.
struct Cluster {
    project: String,
    image: String,
    lb_port: u16,
    lb_stats_port: u16,
    state: tempfile::TempDir,
}

impl Cluster {
    fn script(&self, args: &[&str]) -> Command {
        self.script_named("cluster", args)
    }

    /// scripts/NAME (cluster or chaos) with this cluster's environment.
    fn script_named(&self, name: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(repo_root().join("scripts").join(name));
        cmd.args(args)
            .current_dir(repo_root())
            .env("KL_STATE_DIR", self.state.path())
            .env("KL_BIN_DIR", testkit::profile_dir())
            .env("KL_SKIP_BUILD", "1")
            .env("KL_IMAGE", &self.image)
            .env("KL_COMPOSE_PROJECT", &self.project)
            .env("KL_LB_PORT", self.lb_port.to_string())
            .env("KL_LB_STATS_PORT", self.lb_stats_port.to_string())
            .env("HEALTH_TIMEOUT", "120")
            // A lost worker's pods are replaced after 30 s + 10 s rather than upstream's
            // 40 s + 5 m.
            .env("KL_NODE_MONITOR_GRACE_PERIOD", "30s")
            .env("KL_POD_EVICTION_TIMEOUT", "10s");
        cmd
    }

    /// `scripts/chaos ARGS...`: its timeline, which must end in a verdict of success.
    async fn chaos(&self, args: &[&str]) -> String {
        let what = format!("scripts/chaos {}", args.join(" "));
        let mut cmd = self.script_named("chaos", args);
        cmd.arg("--timeout=240");
        let out = run_bounded(cmd, None, Duration::from_secs(300), &what)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e:#}"));
        eprintln!("--- {what}\n{}{}", out.stdout, out.stderr);
        assert!(out.success(), "{what} failed: {}{}", out.stdout, out.stderr);
        assert!(
            out.stdout.contains("verdict: the cluster"),
            "{what} printed no verdict"
        );
        out.stdout
    }

    /// The master holding a leader-election Lease (`kube-controller-manager`, ...).
    async fn lease_holder(&self, lease: &str) -> String {
        let out = self
            .kubectl(
                &["get", "lease", lease, "-n", "kube-system", "--no-headers"],
                None,
            )
            .await
            .expect("get lease");
        let holder = out.stdout.split_whitespace().nth(1).unwrap_or_default();
        holder.split('_').next().unwrap_or_default().to_owned()
    }

    async fn run_script(&self, args: &[&str], timeout: Duration) -> CmdOutput {
        let what = format!("scripts/cluster {}", args.join(" "));
        let out = run_bounded(self.script(args), None, timeout, &what)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e:#}"));
        eprintln!("--- {what}\n{}{}", out.stdout, out.stderr);
        out.ok().unwrap_or_else(|e| panic!("{what}: {e:#}"))
    }

    fn admin_kubeconfig(&self) -> PathBuf {
        self.state.path().join("compose/admin.kubeconfig")
    }

    async fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<CmdOutput> {
        let mut cmd = Command::new(bin_path("kubectl-lite"));
        cmd.arg("--kubeconfig")
            .arg(self.admin_kubeconfig())
            .arg("--request-timeout=10s")
            .args(args);
        run_bounded(cmd, stdin, KUBECTL_TIMEOUT, "kubectl-lite")
            .await?
            .ok()
    }

    /// The container id of a service of the project.
    async fn container(&self, service: &str) -> String {
        let out = run_bounded(
            self.script(&["ps", "-q", service]),
            None,
            DOCKER_TIMEOUT,
            "scripts/cluster ps",
        )
        .await
        .unwrap()
        .ok()
        .unwrap();
        let id = out.stdout.trim().to_owned();
        assert!(!id.is_empty(), "no container for {service}");
        id
    }

    /// `get pods -o wide`: name → (status, node), for pods of the ReplicaSet.
    async fn pods(&self) -> anyhow::Result<BTreeMap<String, (String, String)>> {
        let out = self
            .kubectl(&["get", "pods", "-o", "wide", "--no-headers"], None)
            .await?;
        Ok(out
            .stdout
            .lines()
            .filter(|l| l.starts_with("sleepers-"))
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some((
                    f.first()?.to_string(),
                    (f.get(2)?.to_string(), f.get(6)?.to_string()),
                ))
            })
            .collect())
    }

    /// Waits until `n` pods run, at least one on each of `workers` (none: anywhere); returns
    /// name → node.
    async fn wait_running(&self, n: usize, workers: &[&str]) -> BTreeMap<String, String> {
        let want: BTreeSet<String> = workers.iter().map(|w| w.to_string()).collect();
        wait_until(
            &format!("{n} Running pods on {workers:?}"),
            Duration::from_secs(120),
            Duration::from_secs(1),
            || async {
                let pods = self.pods().await?;
                let running: BTreeMap<String, String> = pods
                    .into_iter()
                    .filter(|(_, (status, _))| status == "Running")
                    .map(|(name, (_, node))| (name, node))
                    .collect();
                let nodes: BTreeSet<String> = running.values().cloned().collect();
                Ok((running.len() == n && want.is_subset(&nodes)).then_some(running))
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// `down --purge`, then nothing of the project may be left on the engine.
    async fn down_purge(&self) {
        self.run_script(&["down", "--purge"], Duration::from_secs(120))
            .await;
        for kind in ["container", "volume", "network"] {
            let left = self.leftovers(kind).await;
            assert!(left.is_empty(), "{kind}s left after down --purge: {left:?}");
        }
    }

    /// Names of the project's containers, volumes or networks still on the engine.
    async fn leftovers(&self, kind: &str) -> Vec<String> {
        let label = format!("label=com.docker.compose.project={}", self.project);
        let args: Vec<&str> = match kind {
            "container" => vec!["ps", "-a", "-q", "--filter", &label],
            "volume" => vec!["volume", "ls", "-q", "--filter", &label],
            _ => vec!["network", "ls", "-q", "--filter", &label],
        };
        docker(&args, "docker ls")
            .await
            .map(|o| o.stdout.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let docker = |args: &[&str]| {
            std::process::Command::new("docker")
                .args(args)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        let label = format!("label=com.docker.compose.project={}", self.project);
        if std::thread::panicking() {
            let names = docker(&["ps", "-a", "--filter", &label, "--format", "{{.Names}}"]);
            for name in names.split_whitespace() {
                if let Ok(out) = std::process::Command::new("docker")
                    .args(["logs", "--tail", "30", name])
                    .output()
                {
                    eprintln!(
                        "--- docker logs --tail 30 {name}\n{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
        }
        // Without compose (which `down --purge` would have used): by the project's label.
        for id in docker(&["ps", "-a", "-q", "--filter", &label]).split_whitespace() {
            docker(&["rm", "--force", "--volumes", id]);
        }
        for id in docker(&["network", "ls", "-q", "--filter", &label]).split_whitespace() {
            docker(&["network", "rm", id]);
        }
        for id in docker(&["volume", "ls", "-q", "--filter", &label]).split_whitespace() {
            docker(&["volume", "rm", "--force", id]);
        }
        docker(&["rmi", "--force", &self.image]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_compose_topologies_come_up_and_recover_from_chaos() {
    if let Err(reason) = docker_available().await {
        eprintln!("skipping tests/compose.rs: no Docker engine answers ({reason})");
        return;
    }
    let suffix = random_suffix();
    let cluster = Cluster {
        project: format!("kltest{suffix}"),
        image: format!("kube-lite-test:compose-{suffix}"),
        lb_port: free_port(),
        lb_stats_port: free_port(),
        state: tempfile::Builder::new()
            .prefix("kl-compose-")
            .tempdir()
            .unwrap(),
    };
    build_test_image(&cluster.image).await;
    let up_timeout = Duration::from_secs(420);

    // Stacked: up returns a cluster whose nodes are Ready and whose leaders are elected.
    cluster.run_script(&["up"], up_timeout).await;
    let workers = ["worker1", "worker2", "worker3"];

    // Six real pods, spread over the three workers, seen through the published lb.
    cluster
        .kubectl(&["apply", "-f", "-"], Some(REPLICA_SET))
        .await
        .expect("apply the ReplicaSet");
    let running = cluster.wait_running(6, &workers).await;
    eprintln!("running: {running:?}");

    // Logs: the apiserver dials the worker's container (its InternalIP) with the
    // kubelet-client identity and accepts the worker's serving certificate.
    let (pod, node) = running.iter().next().unwrap();
    let logs = wait_until(
        "kubectl-lite logs of a pod",
        Duration::from_secs(30),
        Duration::from_secs(1),
        || async {
            let out = cluster.kubectl(&["logs", pod], None).await?;
            Ok(out.stdout.contains("hello from").then_some(out.stdout))
        },
    )
    .await
    .expect("kubectl-lite logs");
    assert_eq!(logs.trim(), format!("hello from {node}"));

    // A master's output tells its components apart.
    let master1 = cluster.container("master1").await;
    let logs = docker(&["logs", &master1], "docker logs master1")
        .await
        .unwrap();
    for component in ["etcd-lite", "apiserver", "controller-manager", "scheduler"] {
        assert!(
            logs.stdout.contains(&format!("[{component}] ")),
            "docker logs master1 has lines of [{component}]"
        );
    }

    // A component killed inside a master comes back (the master's supervisor).
    docker(
        &["exec", &master1, "killall", "-9", "apiserver"],
        "killall apiserver",
    )
    .await
    .unwrap()
    .ok()
    .expect("killall -9 apiserver in master1");
    wait_until(
        "master1's apiserver to be restarted and ready",
        Duration::from_secs(60),
        Duration::from_secs(1),
        || async {
            let out = docker(
                &[
                    "exec",
                    &master1,
                    "apiserver",
                    "healthcheck",
                    "https://localhost:6443/readyz",
                    "--cacert",
                    "/etc/kubernetes/pki/ca.crt",
                ],
                "apiserver healthcheck",
            )
            .await?;
            Ok(out.success().then_some(()))
        },
    )
    .await
    .expect("the supervisor restarts the apiserver");

    // A whole master lost, the one whose controller-manager leads: the standby on another
    // master takes over, the cluster keeps answering through the lb and scales to 8.
    let victim = cluster.lease_holder("kube-controller-manager").await;
    let timeline = cluster
        .chaos(&[
            "kill-master",
            victim.trim_start_matches("master"),
            "--keep-down",
        ])
        .await;
    assert!(
        timeline.contains(&format!("killed {victim} ("))
            && timeline.contains("controller-manager leader"),
        "the timeline names what the victim led"
    );
    let successor = cluster.lease_holder("kube-controller-manager").await;
    assert!(
        successor.starts_with("master") && successor != victim,
        "a controller-manager on another master leads ({successor:?}, {victim} killed)"
    );
    assert!(timeline.contains(&format!("controller-manager acting on {successor}")));
    wait_until(
        "a scale to 8 with a master gone",
        Duration::from_secs(60),
        Duration::from_secs(1),
        || async {
            cluster
                .kubectl(&["scale", "rs", "sleepers", "--replicas=8"], None)
                .await?;
            Ok(Some(()))
        },
    )
    .await
    .expect("kubectl-lite scale with a master down");
    cluster.wait_running(8, &workers).await;
    cluster.chaos(&["restart", &victim]).await;

    // A worker lost: its pods are replaced on the others, then it rejoins.
    let timeline = cluster.chaos(&["kill-worker", "3"]).await;
    assert!(
        timeline.contains("node worker3 NotReady"),
        "worker3 is declared lost"
    );
    assert!(
        timeline.contains("worker3 runs 0 pods"),
        "worker3's pods are replaced"
    );
    assert!(timeline.contains("rs/sleepers 8/8 ready"));
    cluster.wait_running(8, &["worker1", "worker2"]).await;

    // The controller-manager's master cut off the network: it stops acting, a master on the
    // majority side takes over (never two acting at once: chaos checks every second), and
    // the cut-off one rejoins as a standby.
    let cut = cluster.lease_holder("kube-controller-manager").await;
    let timeline = cluster.chaos(&["partition", &cut, "--for=40"]).await;
    let after = cluster.lease_holder("kube-controller-manager").await;
    assert!(
        timeline
            .lines()
            .any(|l| l.contains("controller-manager acting on") && !l.contains(&cut)),
        "a controller-manager on the majority side took over"
    );
    eprintln!("controller-manager leader after the partition of {cut}: {after}");

    // Quorum lost: writes fail with the apiserver's answer (not a client timeout), nothing
    // hangs, and every acknowledged write is there once the members are back.
    let timeline = cluster.chaos(&["quorum-loss", "--for=15"]).await;
    assert!(
        timeline.contains("writes fail: Error from server"),
        "a write without quorum is refused by the server with a reason"
    );
    assert!(timeline.contains("acknowledged writes are there"));
    // (worker3 came back empty after its loss: nothing moves pods back, as upstream.)
    cluster.wait_running(8, &[]).await;

    // Everything restarted (down keeps the etcd volumes, up starts it again): every object
    // is still there and the ReplicaSet runs again.
    let before = cluster
        .kubectl(&["get", "rs,nodes,leases", "-A", "-o", "name"], None)
        .await
        .expect("objects before the restart")
        .stdout;
    cluster
        .run_script(&["down"], Duration::from_secs(180))
        .await;
    cluster.run_script(&["up"], up_timeout).await;
    let after = cluster
        .kubectl(&["get", "rs,nodes,leases", "-A", "-o", "name"], None)
        .await
        .expect("objects after the restart")
        .stdout;
    // Every object but the apiservers' identity Leases (a restarted apiserver takes a new
    // one; upstream's expire and are collected the same way).
    let names = |s: &str| -> BTreeSet<String> {
        s.lines()
            .filter(|l| !l.starts_with("lease.coordination.k8s.io/apiserver-"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        names(&before),
        names(&after),
        "every object survives down + up"
    );
    cluster.wait_running(8, &[]).await;

    // down --purge: nothing of the project is left on the engine.
    cluster.down_purge().await;

    // External etcd: the same ReplicaSet, spread over the workers.
    cluster
        .run_script(&["up", "--topology", "external"], up_timeout)
        .await;
    cluster
        .kubectl(&["apply", "-f", "-"], Some(REPLICA_SET))
        .await
        .expect("apply the ReplicaSet (external)");
    cluster.wait_running(6, &workers).await;
    // The etcd leader's own node lost: writes resume on a new leader.
    let timeline = cluster.chaos(&["kill-etcd-leader"]).await;
    assert!(timeline.contains("(etcd leader"), "{timeline}");
    cluster
        .kubectl(&["scale", "rs", "sleepers", "--replicas=7"], None)
        .await
        .expect("a write after the etcd leader's loss");
    cluster.wait_running(7, &workers).await;
    // The active scheduler killed (its Lease must expire), then the lb, the one way in.
    let timeline = cluster.chaos(&["kill-leader", "scheduler"]).await;
    assert!(timeline.contains("scheduler acting on"), "{timeline}");
    let timeline = cluster.chaos(&["kill-lb", "--for=5"]).await;
    assert!(timeline.contains("API fails:") && timeline.contains("API answers through the lb"));
    // A master frozen (SIGSTOP to every process) for a while, then thawed.
    let timeline = cluster.chaos(&["pause", "master1", "--for=10"]).await;
    assert!(
        timeline.contains("master1 container paused") && timeline.contains("unpaused master1"),
        "{timeline}"
    );
    cluster.down_purge().await;

    let image = cluster.image.clone();
    drop(cluster);
    let gone = docker(&["image", "inspect", &image], "docker image inspect").await;
    assert!(
        gone.is_ok_and(|o| !o.success()),
        "the test image is removed at the end"
    );
}

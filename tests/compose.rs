//! The docker mode of `scripts/cluster`: `up` starts the stacked topology of docker-compose.yml
//! (three masters, each one container running etcd-lite, the apiserver, the controller-manager
//! and the scheduler; the lb; three workers) from an image built by `scripts/image`, and returns
//! a usable cluster: through the lb's published port a ReplicaSet's 6 pods (real `sleep`
//! processes in the workers' containers) run spread over all three workers, `kubectl-lite logs`
//! reads one (the apiserver dials the worker container), a component killed inside a master is
//! restarted by the master's supervisor, and with a whole master killed (`docker kill`) the
//! cluster keeps answering and scales to 8. `down --purge` removes containers, network and
//! volumes. Then the external topology (etcd1..3 in containers of their own) comes up and runs
//! the same ReplicaSet spread over the workers.
//!
//! Skipped, with a notice, when no Docker engine answers or no compose is installed. It uses
//! the debug binaries (scripts/test builds them), a unique compose project, image tag and state
//! dir, and free host ports, so it never touches a cluster a developer has up. Everything it
//! created (containers, network, volumes, image) is removed when it ends, also when it fails
//! (after printing the end of each container's logs).

use std::{
    collections::{hash_map::RandomState, BTreeMap, BTreeSet},
    hash::{BuildHasher, Hasher},
    path::{Path, PathBuf},
    time::Duration,
};

use testkit::{bin_path, command::run_bounded, free_port, wait_until, CmdOutput};
use tokio::process::Command;

/// Bound on one `docker` command.
const DOCKER_TIMEOUT: Duration = Duration::from_secs(60);
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

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn random_suffix() -> String {
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("{:08x}", h.finish() & 0xffff_ffff)
}

async fn docker(args: &[&str], what: &str) -> anyhow::Result<CmdOutput> {
    let mut cmd = Command::new("docker");
    cmd.args(args);
    run_bounded(cmd, None, DOCKER_TIMEOUT, what).await
}

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
        let mut cmd = Command::new(repo_root().join("scripts/cluster"));
        cmd.args(args)
            .current_dir(repo_root())
            .env("KL_STATE_DIR", self.state.path())
            .env("KL_BIN_DIR", testkit::profile_dir())
            .env("KL_SKIP_BUILD", "1")
            .env("KL_IMAGE", &self.image)
            .env("KL_COMPOSE_PROJECT", &self.project)
            .env("KL_LB_PORT", self.lb_port.to_string())
            .env("KL_LB_STATS_PORT", self.lb_stats_port.to_string())
            .env("HEALTH_TIMEOUT", "120");
        cmd
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

    /// Waits until `n` pods run, at least one on each of `workers`; returns name → node.
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

/// Builds the test image from the debug binaries (debug info stripped).
async fn build_image(tag: &str) {
    let profile_dir = testkit::profile_dir();
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a profile directory name")
        .to_owned();
    let target_dir: &Path = profile_dir.parent().expect("the target directory");
    let mut build = Command::new(repo_root().join("scripts/image"));
    build
        .args(["--profile", &profile, "--strip", "--tag", tag])
        .current_dir(repo_root())
        .env("KL_SKIP_BUILD", "1")
        .env("CARGO_TARGET_DIR", target_dir);
    let built = run_bounded(build, None, Duration::from_secs(300), "scripts/image")
        .await
        .expect("running scripts/image")
        .ok()
        .expect("scripts/image builds the image");
    eprintln!("{}", built.stdout.lines().last().unwrap_or_default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_cluster_runs_both_compose_topologies_and_survives_a_lost_master() {
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
    build_image(&cluster.image).await;
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

    // A component killed inside a master comes back (the master's supervisor).
    let master1 = cluster.container("master1").await;
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

    // A whole master lost: the cluster keeps answering through the lb and scales to 8.
    let master2 = cluster.container("master2").await;
    docker(&["kill", &master2], "docker kill master2")
        .await
        .unwrap()
        .ok()
        .expect("docker kill master2");
    wait_until(
        "a scale to 8 with master2 gone",
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
    cluster
        .kubectl(&["get", "nodes"], None)
        .await
        .expect("get nodes with a master down");

    // down --purge: nothing of the project is left on the engine.
    cluster
        .run_script(&["down", "--purge"], Duration::from_secs(120))
        .await;
    for kind in ["container", "volume", "network"] {
        let left = cluster.leftovers(kind).await;
        assert!(left.is_empty(), "{kind}s left after down --purge: {left:?}");
    }

    // External etcd: the same ReplicaSet, spread over the workers.
    cluster
        .run_script(&["up", "--topology", "external"], up_timeout)
        .await;
    cluster
        .kubectl(&["apply", "-f", "-"], Some(REPLICA_SET))
        .await
        .expect("apply the ReplicaSet (external)");
    cluster.wait_running(6, &workers).await;
    cluster
        .run_script(&["down", "--purge"], Duration::from_secs(120))
        .await;
    for kind in ["container", "volume", "network"] {
        let left = cluster.leftovers(kind).await;
        assert!(left.is_empty(), "{kind}s left after down --purge: {left:?}");
    }

    let image = cluster.image.clone();
    drop(cluster);
    let gone = docker(&["image", "inspect", &image], "docker image inspect").await;
    assert!(
        gone.is_ok_and(|o| !o.success()),
        "the test image is removed at the end"
    );
}

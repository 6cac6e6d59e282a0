//! The README's first command: `scripts/cluster up` starts a 3-member etcd-lite cluster with
//! mutual TLS, three apiservers on it and the lb in front of them, the controllers, and three
//! workers whose nodes are Ready; it prints an etcdctl line that works as printed, writes
//! kubeconfigs that point at the lb (which answers `/readyz` from an apiserver); a pod runs on a
//! worker and `kubectl-lite logs` reads it; `status` reports it all; `up --local` on the running
//! cluster starts again a worker that was killed, and only it; `down` stops every process it
//! started, the pod's included.
//!
//! It runs the script with its state in a temporary directory, the debug binaries, and ports
//! moved by an offset, so that it never touches a cluster a developer has up.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

/// Below Linux's ephemeral port range, and clear of the default ports (2379, 22379, 32379...).
const PORT_OFFSET: u16 = 150;

struct Script {
    root: PathBuf,
    state: tempfile::TempDir,
}

impl Script {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.root.join("scripts/cluster"));
        cmd.args(args)
            .current_dir(&self.root)
            .env("KL_STATE_DIR", self.state.path())
            .env("KL_BIN_DIR", testkit::profile_dir())
            .env("KL_PORT_OFFSET", PORT_OFFSET.to_string())
            .env("KL_SKIP_BUILD", "1")
            .env("HEALTH_TIMEOUT", "90");
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .expect("running scripts/cluster")
    }

    fn pids(&self) -> Vec<i32> {
        let run = self.state.path().join("run");
        let Ok(entries) = std::fs::read_dir(run) else {
            return vec![];
        };
        entries
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .filter_map(|s| s.trim().parse().ok())
            .collect()
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        // Whatever happened above, leave nothing running.
        let _ = self.run(&["down"]);
        let state = self.state.path();
        // Should `down` have failed: the components, then the pods' shims and containers.
        let mut leftovers = self.pids();
        leftovers.extend(container_pids(state));
        leftovers.extend(
            processes_under(state)
                .iter()
                .filter_map(|p| p.split(':').next()?.parse::<i32>().ok()),
        );
        for pid in leftovers {
            if alive(pid) {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
    }
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Processes whose command line or working directory is under `dir`: what a cluster with its
/// state in `dir` runs (kubelets' shims and containers included).
fn processes_under(dir: &Path) -> Vec<String> {
    let dir_text = dir.display().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if !alive(pid) {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        let cwd = std::fs::read_link(entry.path().join("cwd")).unwrap_or_default();
        if cmdline.contains(&dir_text) || cwd.starts_with(dir) {
            found.push(format!("{pid}: {cmdline} (cwd {})", cwd.display()));
        }
    }
    found
}

/// The pids the kubelets' runtime recorded for containers (`<root-dir>/pods/<uid>/.runtime/
/// <container>/<attempt>.json`, field `pid`) under `state`.
fn container_pids(state: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    let mut dirs = vec![state.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "json")
                && p.components().any(|c| c.as_os_str() == ".runtime")
            {
                let v: serde_json::Value = std::fs::read(&p)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .unwrap_or_default();
                if let Some(pid) = v["pid"].as_i64() {
                    pids.push(pid as i32);
                }
            }
        }
    }
    pids
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[test]
fn cluster_up_runs_workers_and_prints_working_lines_and_down_stops_everything() {
    testkit::etcd_bin().expect("etcd-lite is built");
    for bin in [
        "apiserver",
        "lb",
        "kubectl-lite",
        "controller-manager",
        "scheduler",
        "kubelet-lite",
    ] {
        assert!(
            testkit::bin_path(bin).is_file(),
            "{bin} is not built: run `cargo build --workspace --bins` first"
        );
    }
    let script = Script {
        root: PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        state: tempfile::tempdir().expect("temp dir"),
    };

    // Plain `up` where no Docker engine answers (DOCKER_HOST points nowhere) falls back to
    // local processes, as `up --local` starts them.
    let up = script
        .command(&["up"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .expect("scripts/cluster up");
    assert!(up.status.success(), "up failed:\n{}", text(&up));
    let out = String::from_utf8_lossy(&up.stdout);
    assert!(
        out.contains("no Docker engine answers"),
        "plain up says it falls back: {out}"
    );
    assert!(
        out.contains("etcd cluster is up (etcd-lite, 3 members, mutual TLS)"),
        "{out}"
    );
    let line = out
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("ETCDCTL_API=3 etcdctl"))
        .unwrap_or_else(|| panic!("no etcdctl line in:\n{out}"));

    // The line works as printed, from the repo root.
    let listed = Command::new("timeout")
        .args(["30", "bash", "-c", line])
        .current_dir(&script.root)
        .output()
        .expect("running the printed etcdctl line");
    assert!(listed.status.success(), "{}", text(&listed));
    let table = String::from_utf8_lossy(&listed.stdout);
    for name in ["etcd1", "etcd2", "etcd3"] {
        assert!(
            table
                .lines()
                .any(|l| l.contains(name) && l.contains("started")),
            "{name} not started in:\n{table}"
        );
    }

    // The API: each apiserver, and the lb in front of them, over TLS with the cluster CA.
    assert!(
        out.contains("API is up (3 apiservers behind the lb, mutual TLS)"),
        "{out}"
    );
    let state = script.state.path();
    let ca = state.join("pki/ca.crt");
    let lb = format!("https://127.0.0.1:{}", 6443 + PORT_OFFSET);
    let apiservers =
        [16443, 26443, 36443].map(|p| format!("https://127.0.0.1:{}", p + PORT_OFFSET));
    for url in apiservers.iter().chain([&lb]) {
        let readyz = Command::new("curl")
            .args(["-fsS", "--max-time", "10", "--cacert"])
            .arg(&ca)
            .arg(format!("{url}/readyz"))
            .output()
            .expect("running curl");
        assert!(readyz.status.success(), "{url}/readyz: {}", text(&readyz));
    }
    let stats = Command::new("curl")
        .args(["-fsS", "--max-time", "10"])
        .arg(format!("http://127.0.0.1:{}/metrics", 8404 + PORT_OFFSET))
        .output()
        .expect("running curl");
    assert!(stats.status.success(), "lb stats: {}", text(&stats));
    for log in ["apiserver1", "apiserver2", "apiserver3", "lb"] {
        assert!(state.join(format!("logs/{log}.log")).is_file(), "{log}.log");
    }

    // Kubeconfigs for the admin and each component, all pointing at the lb, with an identity
    // that chains to the cluster CA.
    let ca_pem = std::fs::read(&ca).unwrap();
    for (file, user) in [
        ("admin", "kubernetes-admin"),
        ("controller-manager", "system:kube-controller-manager"),
        ("scheduler", "system:kube-scheduler"),
    ] {
        let path = state.join(format!("{file}.kubeconfig"));
        let r = kl_client::Kubeconfig::load(&path)
            .and_then(|k| k.resolve(None))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(r.server, lb, "{file}");
        assert_eq!(r.user, user, "{file}");
        let cert = r.client_cert_pem.expect("a client certificate");
        kl_pki::verify_issued_by(&cert, &ca_pem).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
    let kubectl_line = out
        .lines()
        .map(str::trim)
        .find(|l| l.contains("kubectl-lite --kubeconfig") && l.ends_with("get nodes"))
        .unwrap_or_else(|| panic!("no kubectl-lite line in:\n{out}"));
    assert!(
        kubectl_line.contains(&format!("{}/admin.kubeconfig", state.display())),
        "{kubectl_line}"
    );
    // ... and works as printed, from the repo root: through the lb to an apiserver.
    let nodes = Command::new("timeout")
        .args(["60", "bash", "-c", kubectl_line])
        .current_dir(&script.root)
        .output()
        .expect("running the printed kubectl-lite line");
    assert!(nodes.status.success(), "{}", text(&nodes));

    // One controller-manager and one scheduler lead (issue 4); `up` waited for both.
    for lease in ["kube-controller-manager", "kube-scheduler"] {
        assert!(
            out.contains(&format!("{lease} leader: ")),
            "no {lease} leader reported in:\n{out}"
        );
    }
    let leases = Command::new("timeout")
        .args(["60", "bash", "-c"])
        .arg(kubectl_line.replace("get nodes", "get leases -n kube-system -o name"))
        .current_dir(&script.root)
        .output()
        .expect("running kubectl-lite get leases");
    let names = String::from_utf8_lossy(&leases.stdout);
    for lease in ["kube-controller-manager", "kube-scheduler"] {
        assert!(names.contains(&format!("/{lease}")), "{}", text(&leases));
    }

    // Three workers, their nodes Ready (`up` waited for it), each kubelet's /healthz on its
    // HTTPS port, verified against the cluster CA.
    let kubectl = |args: &[&str]| {
        Command::new("timeout")
            .arg("60")
            .arg(testkit::bin_path("kubectl-lite"))
            .arg("--kubeconfig")
            .arg(state.join("admin.kubeconfig"))
            .args(args)
            .output()
            .expect("running kubectl-lite")
    };
    assert!(
        out.contains("Workers (kubelet-lite; nodes Ready):"),
        "{out}"
    );
    let nodes = kubectl(&["get", "nodes", "--no-headers"]);
    assert!(nodes.status.success(), "{}", text(&nodes));
    let table = String::from_utf8_lossy(&nodes.stdout);
    for (i, name) in ["worker1", "worker2", "worker3"].iter().enumerate() {
        assert!(
            table.lines().any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.first() == Some(name) && cols.get(1) == Some(&"Ready")
            }),
            "{name} is not Ready in:\n{table}"
        );
        let port = [10250, 20250, 30250][i] + PORT_OFFSET;
        let healthz = Command::new("curl")
            .args(["-fsS", "--max-time", "10", "--cacert"])
            .arg(&ca)
            .arg(format!("https://127.0.0.1:{port}/healthz"))
            .output()
            .expect("running curl");
        assert!(
            healthz.status.success(),
            "{name} /healthz: {}",
            text(&healthz)
        );
        assert!(state.join(format!("{name}.kubeconfig")).is_file());
        assert!(state.join(format!("logs/{name}.log")).is_file());
    }

    // A pod runs on a worker, and its log comes back through the lb, an apiserver and the
    // worker's kubelet.
    let manifest = state.join("sleeper.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: sleeper\nspec:\n  containers:\n  - name: sleeper\n    command: [sh, -c, 'echo hello from the sleeper; exec sleep 3600']\n",
    )
    .unwrap();
    let created = kubectl(&["create", "-f", &manifest.display().to_string()]);
    assert!(created.status.success(), "{}", text(&created));
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let logs = kubectl(&["logs", "sleeper"]);
        if logs.status.success()
            && String::from_utf8_lossy(&logs.stdout).contains("hello from the sleeper")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no log from the sleeper pod within 90s; last try: {}\npods: {}",
            text(&logs),
            text(&kubectl(&["get", "pods", "-o", "wide"]))
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        !processes_under(state).is_empty(),
        "the cluster's processes are found by their state dir"
    );
    let containers = container_pids(state);
    assert!(
        containers.iter().any(|p| alive(*p)),
        "the sleeper's container pid is recorded: {containers:?}"
    );

    let status = script.run(&["status"]);
    assert!(status.status.success(), "status:\n{}", text(&status));
    let status_out = String::from_utf8_lossy(&status.stdout);
    for name in ["worker1", "worker2", "worker3"] {
        assert!(
            status_out
                .lines()
                .any(|l| l.starts_with(name) && l.contains(" yes ") && l.contains(" ok ")),
            "{name} not alive and healthy in:\n{status_out}"
        );
    }
    // `up --local` on a running cluster starts only what is missing: a worker killed -9 comes
    // back (and waits until its node is Ready again); everything else is left as it is.
    let pid_of = |name: &str| -> i32 {
        std::fs::read_to_string(state.join(format!("run/{name}.pid")))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| panic!("no pid file for {name}"))
    };
    let (worker2, etcd1) = (pid_of("worker2"), pid_of("etcd1"));
    let killed = Command::new("kill")
        .args(["-9", &worker2.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while alive(worker2) {
        assert!(
            std::time::Instant::now() < deadline,
            "worker2 survived kill -9"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let again = script.run(&["up", "--local"]);
    assert!(again.status.success(), "up --local:\n{}", text(&again));
    let again_out = String::from_utf8_lossy(&again.stdout);
    assert!(
        !again_out.contains("no Docker engine answers"),
        "--local does not look for an engine: {again_out}"
    );
    assert!(
        again_out.contains(&format!("etcd1 already running (pid {etcd1})")),
        "{again_out}"
    );
    assert!(
        !again_out.contains("worker2 already running")
            && again_out.contains("Workers (kubelet-lite; nodes Ready):"),
        "{again_out}"
    );
    let restarted = pid_of("worker2");
    assert!(
        restarted != worker2 && alive(restarted),
        "worker2 was not started again"
    );

    let pids = script.pids();
    assert_eq!(
        pids.len(),
        16,
        "one pid file per member, apiserver, the lb, controller-manager, scheduler and worker"
    );
    assert!(pids.iter().all(|p| alive(*p)));

    let down = script.run(&["down"]);
    assert!(down.status.success(), "down:\n{}", text(&down));
    // Nothing is left: not the components, not the pod's shim nor its container.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut left = processes_under(state);
        left.extend(
            containers
                .iter()
                .filter(|p| alive(**p))
                .map(|p| format!("container {p}")),
        );
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "processes left after down:\n{}\n{}",
            left.join("\n"),
            text(&down)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while pids.iter().any(|p| alive(*p)) {
        assert!(
            std::time::Instant::now() < deadline,
            "members still running after down: {pids:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = script.run(&["status"]);
    assert!(!status.status.success(), "status after down must fail");
}

//! `scripts/image` builds one FROM scratch image holding every kube-lite binary, with nothing
//! pulled: each binary starts in it (`--help`, no network), busybox gives pods and healthchecks
//! a shell, the image has exactly one layer of its own, and a two-member etcd-lite cluster in
//! two containers on a docker network elects a leader, which proves that the dynamically linked
//! binaries resolve docker service names through the glibc NSS files copied into the image;
//! busybox's `wget` reads a member's `/health` by name from the other container.
//!
//! Skipped, with a notice, when no Docker engine answers (`docker info` fails). Every container,
//! network and image it creates is removed when it ends, also when it fails.

mod common;

use std::time::Duration;

use common::docker::{build_test_image, docker, random_suffix};

use testkit::wait_until;

const BINARIES: [&str; 7] = [
    "etcd-lite",
    "apiserver",
    "controller-manager",
    "scheduler",
    "kubelet-lite",
    "lb",
    "kubectl-lite",
];

/// Everything the test created on the engine, removed on drop (`docker rm -f`, `network rm`,
/// `rmi`), with the containers' logs printed first when the test is failing.
struct Created {
    containers: Vec<String>,
    networks: Vec<String>,
    image: String,
}

impl Drop for Created {
    fn drop(&mut self) {
        let run = |args: &[&str]| {
            let _ = std::process::Command::new("docker")
                .args(args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        };
        if std::thread::panicking() {
            for c in &self.containers {
                if let Ok(out) = std::process::Command::new("docker")
                    .args(["logs", "--tail", "30", c])
                    .output()
                {
                    eprintln!(
                        "--- docker logs {c}\n{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
        }
        for c in &self.containers {
            run(&["rm", "--force", "--volumes", c]);
        }
        for n in &self.networks {
            run(&["network", "rm", n]);
        }
        // Also removes the legacy builder's intermediate images under it.
        run(&["rmi", "--force", &self.image]);
    }
}

/// etcd-lite's flags for member `i` of the two-member cluster `etcd0-<suffix>`,
/// `etcd1-<suffix>`: plain HTTP, every URL by container name.
fn member_args(i: usize, suffix: &str) -> Vec<String> {
    let host = |i: usize| format!("etcd{i}-{suffix}");
    vec![
        "etcd-lite".into(),
        format!("--name=etcd{i}"),
        format!("--data-dir=/tmp/etcd{i}"),
        "--listen-client-urls=http://0.0.0.0:2379".into(),
        format!("--advertise-client-urls=http://{}:2379", host(i)),
        "--listen-peer-urls=http://0.0.0.0:2380".into(),
        format!("--initial-advertise-peer-urls=http://{}:2380", host(i)),
        format!(
            "--initial-cluster=etcd0=http://{}:2380,etcd1=http://{}:2380",
            host(0),
            host(1)
        ),
        "--listen-metrics-urls=http://0.0.0.0:2381".into(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scratch_image_runs_every_binary_and_resolves_service_names() {
    match docker(&["info", "--format", "{{.ServerVersion}}"], "docker info").await {
        Ok(out) if out.success() => {}
        Ok(out) => {
            eprintln!(
                "skipping tests/image.rs: no Docker engine answers (docker info: {})",
                out.stderr.trim()
            );
            return;
        }
        Err(e) => {
            eprintln!("skipping tests/image.rs: no Docker engine answers ({e:#})");
            return;
        }
    }

    let suffix = random_suffix();
    let tag = format!("kube-lite-test:{suffix}");
    let mut created = Created {
        containers: Vec::new(),
        networks: Vec::new(),
        image: tag.clone(),
    };

    let last = build_test_image(&tag).await;
    let fields: Vec<&str> = last.split_whitespace().collect();
    assert!(
        fields.len() >= 4 && fields[0] == "scripts/image:" && fields[1] == tag,
        "the last line names the image: {last}"
    );
    let id = fields[2].to_owned();
    assert!(id.starts_with("sha256:"), "an image id: {last}");

    // Every binary starts (and finds its libraries) with no network at all.
    for bin in BINARIES {
        let path = format!("/usr/local/bin/{bin}");
        docker(
            &["run", "--rm", "--network", "none", &tag, &path, "--help"],
            &format!("{bin} --help in the image"),
        )
        .await
        .unwrap()
        .ok()
        .unwrap_or_else(|e| panic!("{bin} --help in the image: {e:#}"));
    }

    // busybox is the shell; `sh`, `echo` and `sleep` come from PATH, as pods' commands do.
    let out = docker(
        &["run", "--rm", &tag, "sh", "-c", "sleep 0 && echo ok"],
        "sh -c in the image",
    )
    .await
    .unwrap()
    .ok()
    .expect("sh -c in the image");
    assert_eq!(out.stdout, "ok\n");

    // Built FROM scratch: one layer, the COPY of the context, and nothing under it.
    let inspect = docker(
        &["image", "inspect", "--format", "{{json .}}", &id],
        "docker image inspect",
    )
    .await
    .unwrap()
    .ok()
    .expect("docker image inspect");
    let image: serde_json::Value = serde_json::from_str(&inspect.stdout).expect("inspect JSON");
    let layers = image["RootFS"]["Layers"].as_array().expect("RootFS.Layers");
    assert_eq!(layers.len(), 1, "only the context's layer: {layers:?}");
    let history = docker(
        &[
            "history",
            "--no-trunc",
            "--format",
            "{{.Size}}\t{{.CreatedBy}}",
            &id,
        ],
        "docker history",
    )
    .await
    .unwrap()
    .ok()
    .expect("docker history");
    let with_content: Vec<&str> = history
        .stdout
        .lines()
        .filter(|l| !l.starts_with("0B\t"))
        .collect();
    assert!(
        with_content.len() == 1 && with_content[0].contains("COPY"),
        "one step with content, the COPY:\n{}",
        history.stdout
    );
    let labels = &image["Config"]["Labels"];
    for key in ["source", "revision", "created"] {
        let value = labels[format!("org.opencontainers.image.{key}")]
            .as_str()
            .unwrap_or_default();
        assert!(
            !value.is_empty() && value != "unknown",
            "label org.opencontainers.image.{key}: {labels}"
        );
    }

    // Two members on a network of their own: a leader only when each resolves the other's
    // container name (glibc's NSS through Docker's DNS) and connects.
    let network = format!("kl-image-{suffix}");
    created.networks.push(network.clone());
    docker(&["network", "create", &network], "docker network create")
        .await
        .unwrap()
        .ok()
        .expect("docker network create");
    for i in 0..2 {
        let name = format!("etcd{i}-{suffix}");
        created.containers.push(name.clone());
        let mut args: Vec<String> = ["run", "--detach", "--name", &name, "--network", &network]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(tag.clone());
        args.extend(member_args(i, &suffix));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker(&args, &format!("starting {name}"))
            .await
            .unwrap()
            .ok()
            .unwrap_or_else(|e| panic!("starting {name}: {e:#}"));
    }

    // busybox's wget in etcd1's container asks etcd0 by name; /health is true once the
    // cluster has a leader. `timeout`, not `wget -T`: Debian's busybox-static 1.35 segfaults
    // on -T.
    let etcd0 = format!("etcd0-{suffix}");
    let etcd1 = format!("etcd1-{suffix}");
    let health_url = format!("http://{etcd0}:2381/health");
    wait_until(
        "etcd0's /health, read by name from etcd1's container, to be true",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || {
            let (etcd1, url) = (etcd1.clone(), health_url.clone());
            async move {
                let out = docker(
                    &["exec", &etcd1, "timeout", "5", "wget", "-q", "-O-", &url],
                    "wget /health",
                )
                .await?
                .ok()?;
                Ok(out.stdout.contains(r#""health":"true""#).then_some(()))
            }
        },
    )
    .await
    .expect("a healthy two-member cluster");

    // And the other way round, from a fresh container: etcd1's metrics by name.
    let out = docker(
        &[
            "run",
            "--rm",
            "--network",
            &network,
            &tag,
            "timeout",
            "5",
            "wget",
            "-q",
            "-O-",
            &format!("http://{etcd1}:2381/metrics"),
        ],
        "wget /metrics",
    )
    .await
    .unwrap()
    .ok()
    .expect("etcd1's /metrics by name");
    assert!(
        out.stdout.lines().any(|l| l == "etcd_server_has_leader 1"),
        "etcd1 has a leader:\n{}",
        out.stdout
    );

    drop(created);
    let gone = docker(&["image", "inspect", &id], "docker image inspect").await;
    assert!(
        gone.is_ok_and(|o| !o.success()),
        "the test image is removed at the end"
    );
}

//! Container logs end to end: `kubectl-lite logs` and kl-client's `Api<Pod>::logs` through the
//! lb and an apiserver, from a real kubelet-lite's HTTPS port (mutual TLS both ways):
//!
//! * all of a log, `--tail`, `--limit-bytes`, `--timestamps`, `-f` on a finished container;
//! * `-f` streams: the first line arrives while the container still runs, and the stream ends
//!   when it exits; `kubectl-lite logs -f` prints lines as they come;
//! * `--previous` after a restart: the attempt before the one shown without it;
//! * two containers: kubectl's default to the first (with its note), `-c`, a wrong name, and the
//!   API's own refusal when no container is named;
//! * the kubelet down: `ServiceUnavailable` naming the node and its address; back up, logs
//!   again.
//!
//! Pods are bound by hand (`spec.nodeName` at creation), so no scheduler is needed.
//! Needs `cargo build --workspace --bins` first.

mod common;

use std::time::Duration;

use common::api::{run_api, start_api};
use futures::StreamExt;
use kl_api::{Container, ObjectMeta, Pod, PodSpec};
use kl_client::{Api, Client, LogParams};
use testkit::kubelet::Kubelets;
use testkit::{wait_until, ApiOpts, CmdOutput};
use tokio::io::{AsyncBufReadExt, BufReader};

const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);

/// A pod on `node` with one container per `(name, script)`, each running `sh -c script`.
fn pod(name: &str, node: &str, containers: &[(&str, &str)], restart_policy: &str) -> Pod {
    Pod {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: containers
                .iter()
                .map(|(c, script)| Container {
                    name: c.to_string(),
                    command: vec!["sh".into(), "-c".into(), script.to_string()],
                    ..Default::default()
                })
                .collect(),
            node_name: node.into(),
            restart_policy: restart_policy.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn phase(p: &Pod) -> String {
    p.status
        .as_ref()
        .map(|s| s.phase.clone())
        .unwrap_or_default()
}

/// Whether every container of the pod is running.
fn all_running(p: &Pod) -> bool {
    let statuses = p
        .status
        .as_ref()
        .map(|s| s.container_statuses.clone())
        .unwrap_or_default();
    let want = p.spec.as_ref().map_or(0, |s| s.containers.len());
    statuses.len() == want
        && statuses
            .iter()
            .all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
}

async fn wait_pod(
    pods: &Api<Pod>,
    name: &str,
    what: &str,
    f: impl Fn(&Pod) -> bool,
) -> anyhow::Result<Pod> {
    wait_until(&format!("pod {name}: {what}"), WAIT, POLL, || async {
        let p = pods.get(name).await?;
        Ok(f(&p).then_some(p))
    })
    .await
}

fn stdout(out: CmdOutput) -> anyhow::Result<String> {
    Ok(out.ok()?.stdout)
}

/// A failed run: exit code 1 and stderr containing `msg`.
fn failed(out: &CmdOutput, msg: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        out.code == Some(1) && out.stderr.contains(msg),
        "expected exit 1 and {msg:?} on stderr, got {out:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_from_a_real_kubelet_through_the_apiserver() {
    let mut c = start_api(ApiOpts {
        etcd_members: 1,
        apiservers: 1,
        ..ApiOpts::default()
    })
    .await;
    run_api(&mut c, |c| async move {
        let mut k = Kubelets::start(c, &["worker1"], &[])?;
        let client = Client::new(&c.resolved_admin()?)?;
        k.wait_ready(&client, WAIT).await?;
        let pods = Api::<Pod>::namespaced(client.clone(), "default");

        // A finished container: all of it, the last line, a few bytes, timestamps, and -f
        // (which returns at once: the container has exited).
        pods.create(pod(
            "hello",
            "worker1",
            &[("main", "echo hello; echo world")],
            "Never",
        ))
        .await?;
        wait_pod(&pods, "hello", "Succeeded", |p| phase(p) == "Succeeded").await?;
        assert_eq!(stdout(c.kubectl(&["logs", "hello"]).await?)?, "hello\nworld\n");
        assert_eq!(
            stdout(c.kubectl(&["logs", "hello", "--tail", "1"]).await?)?,
            "world\n"
        );
        assert_eq!(
            stdout(c.kubectl(&["logs", "pod/hello", "--limit-bytes", "3"]).await?)?,
            "hel"
        );
        let stamped = stdout(c.kubectl(&["logs", "hello", "--timestamps"]).await?)?;
        let lines: Vec<&str> = stamped.lines().collect();
        assert_eq!(lines.len(), 2, "{stamped}");
        for (line, text) in lines.iter().zip(["hello", "world"]) {
            let (ts, rest) = line.split_once(' ').unwrap_or_default();
            assert_eq!(rest, text, "{stamped}");
            assert!(
                ts.len() >= 20 && ts.contains('T') && ts.ends_with('Z'),
                "not an RFC 3339 timestamp: {ts:?}"
            );
        }
        assert_eq!(
            stdout(c.kubectl(&["logs", "-f", "hello"]).await?)?,
            "hello\nworld\n"
        );

        // kubectl's refusals.
        failed(
            &c.kubectl(&["logs", "hello", "-c", "nope"]).await?,
            "error: container nope is not valid for pod hello",
        )?;
        failed(
            &c.kubectl(&["logs", "missing"]).await?,
            "Error from server (NotFound): pods \"missing\" not found",
        )?;

        // Follow streams: the first line while the container still runs, then the rest, and
        // the stream ends when the container exits.
        pods.create(pod(
            "slow",
            "worker1",
            &[("main", "echo first; sleep 4; echo second")],
            "Never",
        ))
        .await?;
        wait_pod(&pods, "slow", "running", all_running).await?;
        let mut stream = pods.logs("slow", &LogParams::default().follow(true)).await?;
        let first = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await?
            .expect("a first chunk")?;
        assert_eq!(first.as_ref(), b"first\n");
        assert!(
            all_running(&pods.get("slow").await?),
            "the first line must arrive before the container exits"
        );
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(chunk) = stream.next().await {
                rest.extend_from_slice(&chunk?);
            }
            anyhow::Ok(())
        })
        .await??;
        assert_eq!(String::from_utf8_lossy(&rest), "second\n");

        // kubectl-lite logs -f prints each line as it comes.
        pods.create(pod(
            "slow2",
            "worker1",
            &[("main", "echo one; sleep 4; echo two")],
            "Never",
        ))
        .await?;
        wait_pod(&pods, "slow2", "running", all_running).await?;
        let mut follow = c.kubectl_command(&["logs", "-f", "slow2"]).spawn()?;
        let mut lines = BufReader::new(follow.stdout.take().expect("piped")).lines();
        let one = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await??;
        assert_eq!(one.as_deref(), Some("one"));
        assert!(
            all_running(&pods.get("slow2").await?),
            "kubectl-lite printed the first line only after the container exited"
        );
        let two = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await??;
        assert_eq!(two.as_deref(), Some("two"));
        let end = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await??;
        assert_eq!(end, None, "-f ends when the container exits");
        let status = tokio::time::timeout(Duration::from_secs(10), follow.wait()).await??;
        assert!(status.success(), "{status:?}");

        // The previous instance of a restarted container: each attempt counts itself in a file
        // of its working directory (which outlives an attempt), so `--previous` must show the
        // attempt before the one shown without it.
        pods.create(pod(
            "again",
            "worker1",
            &[(
                "main",
                "n=$(($(cat count 2>/dev/null || echo 0) + 1)); echo $n > count; echo run $n; exit 1",
            )],
            "OnFailure",
        ))
        .await?;
        wait_pod(&pods, "again", "restarted", |p| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.first())
                .is_some_and(|c| c.restart_count >= 1)
        })
        .await?;
        let run_of = |out: &str| {
            out.strip_prefix("run ")
                .and_then(|n| n.strip_suffix('\n'))
                .and_then(|n| n.parse::<u32>().ok())
        };
        // Read as a pair, again if a restart came in between.
        wait_until("the last two runs of again", WAIT, POLL, || async {
            let previous = stdout(c.kubectl(&["logs", "again", "--previous"]).await?)?;
            let current = stdout(c.kubectl(&["logs", "again"]).await?)?;
            Ok(match (run_of(&previous), run_of(&current)) {
                (Some(p), Some(n)) if n == p + 1 => Some(()),
                _ => anyhow::bail!("--previous {previous:?}, current {current:?}"),
            })
        })
        .await?;

        // Two containers: kubectl takes the first and says so; -c picks; the API itself wants
        // a name.
        pods.create(pod(
            "two",
            "worker1",
            &[
                ("a", "echo from-a; exec sleep 3600"),
                ("b", "echo from-b; exec sleep 3600"),
            ],
            "Always",
        ))
        .await?;
        wait_pod(&pods, "two", "running", all_running).await?;
        // The output may lag the container's start by a moment.
        let out = wait_until("the log of two/a", WAIT, POLL, || async {
            let out = c.kubectl(&["logs", "two"]).await?;
            Ok((out.stdout == "from-a\n").then_some(out))
        })
        .await?;
        assert!(
            out.stderr
                .contains("Defaulted container \"a\" out of: a, b"),
            "{out:?}"
        );
        wait_until("the log of two/b", WAIT, POLL, || async {
            let out = c.kubectl(&["logs", "two", "-c", "b"]).await?;
            Ok((out.stdout == "from-b\n").then_some(()))
        })
        .await?;
        let e = match pods.logs("two", &LogParams::default()).await {
            Err(e) => e,
            Ok(_) => anyhow::bail!("a log of a two-container pod without a container name"),
        };
        assert_eq!(
            e.to_string(),
            "Error from server (BadRequest): a container name must be specified for pod two, choose one of: [a b]"
        );

        // The kubelet down: the apiserver says which node and address it could not reach.
        k.kill9(0);
        let out = c.kubectl(&["logs", "two", "-c", "a"]).await?;
        failed(
            &out,
            &format!(
                "Error from server (ServiceUnavailable): unable to reach the kubelet of node \"worker1\" at 127.0.0.1:{}",
                k.items[0].port
            ),
        )?;
        // Back up (the containers kept running): logs again.
        k.restart(0)?;
        wait_until("logs after the kubelet's restart", WAIT, POLL, || async {
            let out = c.kubectl(&["logs", "two", "-c", "a"]).await?;
            Ok((out.stdout == "from-a\n").then_some(()))
        })
        .await?;
        Ok(())
    })
    .await;
}

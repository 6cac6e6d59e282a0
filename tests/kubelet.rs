//! kubelet-lite against a real cluster (store, apiserver, lb), pods bound by hand
//! (`spec.nodeName` set at creation, as upstream allows) so that no scheduler is needed:
//!
//! * pods are real process groups: command, args, env and workingDir as the process sees
//!   them; exit codes, restartCount, lastState and phase per restartPolicy (Always restarting
//!   a success too), CrashLoopBackOff backing off, start errors with upstream's reason, message
//!   and exit code (backing off under OnFailure), liveness restarting a container, readiness
//!   flipping Ready and ContainersReady, hostIP, conditions, start and finish times, output
//!   read with `kubectl-lite logs` (`--previous`: the attempt before the current one);
//! * deletion stops the whole process group (checked by pid) at SIGTERM, well within its
//!   grace, and a process ignoring SIGTERM is killed when the grace period is over (not much
//!   later); the deletion is then confirmed and the pod is gone;
//! * `kill -9` of the kubelet and a restart: the same processes, adopted, nothing duplicated,
//!   nothing lost; a pod force-deleted meanwhile has its processes removed;
//! * the Node (labels, taints, capacity, addresses, daemonEndpoints) and its Lease renewed
//!   every quarter of its duration; hollow nodes registering, renewing their Leases and
//!   reporting their pods Running without starting a process; bad flags refused;
//! * a worker dies under a ReplicaSet (with a controller-manager and a scheduler): its pods
//!   come back on the other workers.
//!
//! Needs `cargo build --workspace --bins` first.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::api::{run_api, start_api};
use kl_api::{
    Container, ExecAction, LabelSelector, Lease, Node, ObjectMeta, Pod, PodSpec, PodTemplateSpec,
    Probe, ReplicaSet, ReplicaSetSpec,
};
use kl_client::{Api, Client, DeleteParams, ListParams};
use testkit::components::{ComponentKind, Components};
use testkit::kubelet::{alive, Kubelets};
use testkit::{bin_path, wait_until, ApiCluster, ApiOpts};

const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);

fn admin(c: &ApiCluster) -> anyhow::Result<Client> {
    Ok(Client::new(&c.resolved_admin()?)?)
}

fn small() -> ApiOpts {
    ApiOpts {
        etcd_members: 1,
        apiservers: 1,
        ..ApiOpts::default()
    }
}

/// A pod on `node` whose one container `main` runs `sh -c script`.
fn sh_pod(name: &str, node: &str, script: &str, restart_policy: &str) -> Pod {
    Pod {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "main".into(),
                command: vec!["sh".into(), "-c".into(), script.into()],
                ..Default::default()
            }],
            node_name: node.into(),
            restart_policy: restart_policy.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn exec_probe(script: &str) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: vec!["sh".into(), "-c".into(), script.into()],
        }),
        period_seconds: 1,
        failure_threshold: 1,
        success_threshold: 1,
        timeout_seconds: 5,
        ..Default::default()
    }
}

fn status(p: &Pod) -> kl_api::PodStatus {
    p.status.clone().unwrap_or_default()
}

fn main_status(p: &Pod) -> kl_api::ContainerStatus {
    status(p)
        .container_statuses
        .first()
        .cloned()
        .unwrap_or_default()
}

/// The main container waits in CrashLoopBackOff.
fn in_crash_loop(p: &Pod) -> bool {
    main_status(p)
        .state
        .and_then(|s| s.waiting)
        .is_some_and(|w| w.reason == "CrashLoopBackOff")
}

fn ready(p: &Pod) -> bool {
    condition(p, "Ready") == "True"
}

/// The status (`True`, `False`) of the pod's condition `ty`; empty when it has none.
fn condition(p: &Pod, ty: &str) -> String {
    status(p)
        .conditions
        .iter()
        .find(|c| c.r#type == ty)
        .map(|c| c.status.clone())
        .unwrap_or_default()
}

fn creation_time(p: &Pod) -> String {
    p.metadata
        .as_ref()
        .map(|m| m.creation_timestamp.clone())
        .unwrap_or_default()
}

/// Whether `t` reads as the RFC 3339 second (`2026-12-07T09:15:01Z`) the kubelet writes, so
/// that two such times compare as text.
fn is_rfc3339_second(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 20
        && b[4] == b'-'
        && b[10] == b'T'
        && b[19] == b'Z'
        && b.iter()
            .enumerate()
            .all(|(i, c)| [4, 7, 10, 13, 16, 19].contains(&i) || c.is_ascii_digit())
}

/// Seconds since the epoch of a MicroTime (`2026-12-07T09:15:01.123456Z`), as Leases carry.
fn micro_time_secs(t: &str) -> Option<f64> {
    let n = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss) = (n(11..13)?, n(14..16)?, n(17..19)?);
    let frac: f64 = format!("0{}", t.get(19..t.len() - 1)?).parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hh * 3600 + mm * 60 + ss) as f64 + frac)
}

fn uid(p: &Pod) -> String {
    p.metadata
        .as_ref()
        .map(|m| m.uid.clone())
        .unwrap_or_default()
}

/// Waits until pod `name` satisfies `f`; the pod.
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

async fn wait_gone(pods: &Api<Pod>, name: &str) -> anyhow::Result<()> {
    wait_until(&format!("pod {name} removed"), WAIT, POLL, || async {
        Ok(pods.get_opt(name).await?.is_none().then_some(()))
    })
    .await
}

/// The container's pid, as the runtime recorded it.
fn container_pid(k: &Kubelets, i: usize, pod_uid: &str) -> anyhow::Result<u32> {
    let dir = k.items[i]
        .root_dir
        .join(format!("pods/{pod_uid}/.runtime/main"));
    let mut newest: Option<(u32, u32)> = None;
    for f in std::fs::read_dir(&dir)? {
        let path = f?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let Some(attempt) = name
            .strip_suffix(".json")
            .and_then(|a| a.parse::<u32>().ok())
        else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        if let Some(pid) = v.get("pid").and_then(|p| p.as_u64()) {
            if newest.is_none_or(|(a, _)| attempt > a) {
                newest = Some((attempt, pid as u32));
            }
        }
    }
    newest
        .map(|(_, pid)| pid)
        .ok_or_else(|| anyhow::anyhow!("no pid recorded under {}", dir.display()))
}

/// The pids of a process group.
fn group_members(pgid: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command: state ppid pgrp ...
        let fields: Vec<&str> = stat
            .rsplit_once(") ")
            .map(|(_, r)| r.split(' ').collect())
            .unwrap_or_default();
        if fields.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(pgid) && fields[0] != "Z" {
            pids.push(pid);
        }
    }
    pids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_run_as_processes_with_upstream_status() {
    let mut c = start_api(small()).await;
    run_api(&mut c, |c| async move {
        let mut k = Kubelets::start(c, &["worker1"], &[])?;
        let client = admin(c)?;
        k.wait_ready(&client, WAIT).await?;
        let pods = Api::<Pod>::namespaced(client.clone(), "default");

        // Output, read through the apiserver and the lb.
        pods.create(sh_pod(
            "hello",
            "worker1",
            "echo hello; echo world",
            "Never",
        ))
        .await?;
        let p = wait_pod(&pods, "hello", "Succeeded", |p| {
            status(p).phase == "Succeeded"
        })
        .await?;
        let term = main_status(&p)
            .state
            .unwrap_or_default()
            .terminated
            .unwrap_or_default();
        assert_eq!((term.exit_code, term.reason.as_str()), (0, "Completed"));
        assert_eq!(
            (status(&p).pod_ip.as_str(), status(&p).host_ip.as_str()),
            ("127.0.0.1", "127.0.0.1")
        );
        assert_eq!(condition(&p, "Initialized"), "True");
        assert_eq!(condition(&p, "PodScheduled"), "True");
        // Finished: neither Ready nor ContainersReady (reason PodCompleted), as upstream.
        assert_eq!(
            (condition(&p, "Ready"), condition(&p, "ContainersReady")),
            ("False".into(), "False".into())
        );
        let out = c.kubectl(&["logs", "hello"]).await?;
        assert_eq!(out.stdout, "hello\nworld\n", "{out:?}");
        let out = c.kubectl(&["logs", "hello", "--tail", "1"]).await?;
        assert_eq!(out.stdout, "world\n", "{out:?}");

        // command + args (each one argv entry, no word splitting), env and workingDir, seen
        // by the process; it runs over a second, so its start and finish are distinct seconds.
        let mut argv = sh_pod("argv", "worker1", "", "Never");
        let main = &mut argv.spec.as_mut().unwrap().containers[0];
        main.command = vec!["sh".into(), "-c".into()];
        main.args = vec![
            r#"sleep 1.2; printf '[%s]' "$0" "$@"; echo " $GREETING $(pwd)""#.into(),
            "first arg".into(),
            "second".into(),
        ];
        main.env = vec![kl_api::EnvVar {
            name: "GREETING".into(),
            value: "hi there".into(),
        }];
        main.working_dir = "/".into();
        pods.create(argv).await?;
        let p = wait_pod(&pods, "argv", "Succeeded", |p| {
            status(p).phase == "Succeeded"
        })
        .await?;
        let out = c.kubectl(&["logs", "argv"]).await?;
        assert_eq!(out.stdout, "[first arg][second] hi there /\n", "{out:?}");
        let term = main_status(&p)
            .state
            .unwrap_or_default()
            .terminated
            .unwrap_or_default();
        let created = creation_time(&p);
        assert!(
            [&created, &term.started_at, &term.finished_at]
                .iter()
                .all(|t| is_rfc3339_second(t)),
            "{created:?} {term:?}"
        );
        assert!(
            created <= term.started_at && term.started_at < term.finished_at,
            "created {created}, then started and finished: {term:?}"
        );

        // restartPolicy Never and a failure: Failed, the exit code kept, no restart.
        pods.create(sh_pod("fail-never", "worker1", "exit 3", "Never"))
            .await?;
        let p = wait_pod(&pods, "fail-never", "Failed", |p| {
            status(p).phase == "Failed"
        })
        .await?;
        let cs = main_status(&p);
        let term = cs.state.unwrap_or_default().terminated.unwrap_or_default();
        assert_eq!(
            (term.exit_code, term.reason.as_str(), cs.restart_count),
            (3, "Error", 0)
        );

        // OnFailure: a failing container is restarted; one that succeeds is not.
        pods.create(sh_pod("fail-onfailure", "worker1", "exit 1", "OnFailure"))
            .await?;
        pods.create(sh_pod("ok-onfailure", "worker1", "exit 0", "OnFailure"))
            .await?;
        wait_pod(&pods, "fail-onfailure", "restarted", |p| {
            main_status(p).restart_count >= 1
        })
        .await?;
        let p = wait_pod(&pods, "ok-onfailure", "Succeeded", |p| {
            status(p).phase == "Succeeded"
        })
        .await?;
        assert_eq!(main_status(&p).restart_count, 0);

        // Always restarts even a container that succeeded; its last state says so.
        pods.create(sh_pod("ok-always", "worker1", "exit 0", "Always"))
            .await?;
        let p = wait_pod(&pods, "ok-always", "restarted", |p| {
            main_status(p).restart_count >= 1
                && main_status(p)
                    .last_state
                    .is_some_and(|l| l.terminated.is_some())
        })
        .await?;
        let last = main_status(&p)
            .last_state
            .unwrap_or_default()
            .terminated
            .unwrap_or_default();
        assert_eq!((last.exit_code, last.reason.as_str()), (0, "Completed"));
        assert_eq!(status(&p).phase, "Running");

        // Always, and CrashLoopBackOff between restarts. Each attempt counts itself in a file
        // of its working directory (which outlives an attempt), so logs tell attempts apart.
        pods.create(sh_pod(
            "crash",
            "worker1",
            "n=$(($(cat count 2>/dev/null || echo 0) + 1)); echo $n > count; echo attempt $n; exit 1",
            "Always",
        ))
        .await?;
        let p = wait_pod(&pods, "crash", "in CrashLoopBackOff", in_crash_loop)
        .await?;
        let cs = main_status(&p);
        let waiting = cs
            .state
            .clone()
            .unwrap_or_default()
            .waiting
            .unwrap_or_default();
        assert!(
            waiting
                .message
                .starts_with("back-off 10s restarting failed container=main pod=crash_default("),
            "{waiting:?}"
        );
        let last = cs
            .last_state
            .unwrap_or_default()
            .terminated
            .unwrap_or_default();
        assert_eq!(last.exit_code, 1);
        assert_eq!(
            status(&p).phase,
            "Running",
            "upstream: Always + restarting = Running"
        );
        // Backing off: over 8 s, a container that exits at once is restarted at most once more
        // (without back-off it would be restarted hundreds of times).
        let before = cs.restart_count;
        tokio::time::sleep(Duration::from_secs(8)).await;
        let after = main_status(&pods.get("crash").await?).restart_count;
        assert!(
            after <= before + 1,
            "restarts went from {before} to {after} in 8 s"
        );
        // --previous is the attempt before the current one (read as a pair: a restart may
        // come in between).
        let attempt_of = |out: &str| {
            out.strip_prefix("attempt ")
                .and_then(|n| n.strip_suffix('\n'))
                .and_then(|n| n.parse::<u32>().ok())
        };
        let (previous, current) = wait_until("crash's two last attempts", WAIT, POLL, || async {
            let previous = c.kubectl(&["logs", "crash", "--previous"]).await?.stdout;
            let current = c.kubectl(&["logs", "crash"]).await?.stdout;
            Ok(match (attempt_of(&previous), attempt_of(&current)) {
                (Some(p), Some(n)) if n == p + 1 => Some((p, n)),
                _ => anyhow::bail!("--previous {previous:?}, current {current:?}"),
            })
        })
        .await?;
        assert!(previous >= 1 && current >= 2, "{previous} {current}");

        // A container that cannot start: upstream's reason and message; the kubelet stays up.
        let mut bad = sh_pod("nosuch", "worker1", "", "Never");
        bad.spec.as_mut().unwrap().containers[0].command = vec!["nosuch".into()];
        pods.create(bad).await?;
        let p = wait_pod(&pods, "nosuch", "Failed", |p| status(p).phase == "Failed").await?;
        let term = main_status(&p)
            .state
            .unwrap_or_default()
            .terminated
            .unwrap_or_default();
        assert_eq!(term.reason, "StartError", "{term:?}");
        assert!(
            term.message.contains("exec: \"nosuch\"") && term.message.contains("not found"),
            "{term:?}"
        );
        assert_eq!(term.exit_code, 128, "containerd's exit code of a start error");
        // Under OnFailure (or Always) a start error is a failure like any other: restarted,
        // backing off, the start error kept as the last state.
        let mut bad = sh_pod("nosuch-again", "worker1", "", "OnFailure");
        bad.spec.as_mut().unwrap().containers[0].command = vec!["nosuch".into()];
        pods.create(bad).await?;
        let p = wait_pod(&pods, "nosuch-again", "in CrashLoopBackOff", in_crash_loop)
        .await?;
        let cs = main_status(&p);
        let last = cs
            .last_state
            .clone()
            .unwrap_or_default()
            .terminated
            .unwrap_or_default();
        assert_eq!(
            (last.exit_code, last.reason.as_str()),
            (128, "StartError"),
            "{last:?}"
        );
        assert!(last.message.contains("exec: \"nosuch\""), "{last:?}");
        assert!(cs.restart_count >= 1, "{cs:?}");
        assert_eq!(status(&p).phase, "Running", "backing off, not Failed");
        let mut bad = sh_pod("baddir", "worker1", "true", "Never");
        bad.spec.as_mut().unwrap().containers[0].working_dir = "/nonexistent/dir".into();
        pods.create(bad).await?;
        let p = wait_pod(&pods, "baddir", "Failed", |p| status(p).phase == "Failed").await?;
        let term = main_status(&p)
            .state
            .unwrap_or_default()
            .terminated
            .unwrap_or_default();
        assert!(term.message.contains("/nonexistent/dir"), "{term:?}");

        // Liveness: healthy while the file exists; removing it gets the container restarted.
        let mut live = sh_pod(
            "live",
            "worker1",
            "touch healthy; exec sleep 3600",
            "Always",
        );
        live.spec.as_mut().unwrap().containers[0].liveness_probe =
            Some(exec_probe("test -f healthy"));
        let live = pods.create(live).await?;
        wait_pod(&pods, "live", "Running", |p| status(p).phase == "Running").await?;
        let dir = k.items[0]
            .root_dir
            .join(format!("pods/{}/main", uid(&live)));
        wait_until("the container's file", WAIT, POLL, || async {
            Ok(dir.join("healthy").exists().then_some(()))
        })
        .await?;
        std::fs::remove_file(dir.join("healthy"))?;
        let p = wait_pod(&pods, "live", "restarted by liveness", |p| {
            main_status(p).restart_count >= 1
        })
        .await?;
        let last = main_status(&p)
            .last_state
            .unwrap_or_default()
            .terminated
            .unwrap_or_default();
        assert_eq!(last.exit_code, 143, "SIGTERM'd by the kubelet: {last:?}");

        // Each step is on record as an Event from the kubelet, as upstream's are.
        let events = Api::<kl_api::Event>::namespaced(client.clone(), "default");
        let reasons = |pod: &'static str| {
            let events = events.clone();
            async move {
                let l = events.list(&ListParams::default()).await?;
                anyhow::Ok(
                    l.items
                        .into_iter()
                        .filter(|e| e.involved_object.as_ref().is_some_and(|o| o.name == pod))
                        .filter(|e| e.source.as_ref().is_some_and(|s| s.component == "kubelet"))
                        .map(|e| format!("{} {}", e.reason, e.message))
                        .collect::<Vec<_>>(),
                )
            }
        };
        let live_events = reasons("live").await?;
        for want in [
            "Started Started container main",
            "Unhealthy Liveness probe failed",
            "Killing Container main failed liveness probe, will be restarted",
        ] {
            assert!(
                live_events.iter().any(|e| e.starts_with(want)),
                "{want:?} not in {live_events:?}"
            );
        }
        let crash_events = reasons("crash").await?;
        assert!(
            crash_events
                .iter()
                .any(|e| e.starts_with("BackOff Back-off restarting failed container main")),
            "{crash_events:?}"
        );
        let nosuch_events = reasons("nosuch").await?;
        assert!(
            nosuch_events
                .iter()
                .any(|e| e.starts_with("Failed Error: exec:")),
            "{nosuch_events:?}"
        );

        // Readiness drives Ready, both ways.
        let mut rd = sh_pod("ready", "worker1", "exec sleep 3600", "Always");
        rd.spec.as_mut().unwrap().containers[0].readiness_probe = Some(exec_probe("test -f ready"));
        let rd = pods.create(rd).await?;
        let p = wait_pod(&pods, "ready", "Running", |p| status(p).phase == "Running").await?;
        assert!(!ready(&p), "not ready before the probe succeeds");
        assert_eq!(condition(&p, "ContainersReady"), "False");
        let started = main_status(&p)
            .state
            .and_then(|s| s.running)
            .map(|r| r.started_at)
            .unwrap_or_default();
        assert!(
            is_rfc3339_second(&started) && started >= creation_time(&p),
            "running since {started:?}, created {:?}",
            creation_time(&p)
        );
        let dir = k.items[0].root_dir.join(format!("pods/{}/main", uid(&rd)));
        std::fs::write(dir.join("ready"), "")?;
        let p = wait_pod(&pods, "ready", "Ready", ready).await?;
        assert_eq!(condition(&p, "ContainersReady"), "True");
        let out = c.kubectl(&["get", "pod", "ready"]).await?;
        assert!(out.stdout.contains("1/1"), "{out:?}");
        std::fs::remove_file(dir.join("ready"))?;
        let p = wait_pod(&pods, "ready", "not Ready", |p| !ready(p)).await?;
        assert_eq!(condition(&p, "ContainersReady"), "False");
        assert!(
            k.is_running(0),
            "the kubelet stays up through all of the above"
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_kills_the_process_group_and_restarts_adopt() {
    let mut c = start_api(small()).await;
    run_api(&mut c, |c| async move {
        let mut k = Kubelets::start(c, &["worker1"], &[])?;
        let client = admin(c)?;
        k.wait_ready(&client, WAIT).await?;
        let pods = Api::<Pod>::namespaced(client.clone(), "default");

        // A process group of three: deleting the pod stops all of them, at SIGTERM, long
        // before the (two-minute) grace period is over.
        let mut group = sh_pod("group", "worker1", "sleep 300 & sleep 300 & wait", "Always");
        group
            .spec
            .as_mut()
            .unwrap()
            .termination_grace_period_seconds = Some(120);
        let p = pods.create(group).await?;
        wait_pod(&pods, "group", "Running", |p| status(p).phase == "Running").await?;
        let pid = container_pid(&k, 0, &uid(&p))?;
        let members = wait_until("the group's children", WAIT, POLL, || async {
            let m = group_members(pid);
            Ok((m.len() >= 3).then_some(m))
        })
        .await?;
        let deleting = std::time::Instant::now();
        pods.delete("group", &DeleteParams::default()).await?;
        wait_gone(&pods, "group").await?;
        let took = deleting.elapsed();
        assert!(
            took < Duration::from_secs(30),
            "a group that exits on SIGTERM took {took:?} to go (grace 120 s)"
        );
        for m in &members {
            assert!(!alive(*m), "process {m} of the deleted pod is still alive");
        }

        // A process that ignores SIGTERM is killed once the grace period is over.
        let mut stubborn = sh_pod(
            "stubborn",
            "worker1",
            "trap '' TERM; sleep 300 & wait",
            "Always",
        );
        stubborn
            .spec
            .as_mut()
            .unwrap()
            .termination_grace_period_seconds = Some(2);
        let p = pods.create(stubborn).await?;
        wait_pod(&pods, "stubborn", "Running", |p| {
            status(p).phase == "Running"
        })
        .await?;
        let pid = container_pid(&k, 0, &uid(&p))?;
        let deleting = std::time::Instant::now();
        pods.delete("stubborn", &DeleteParams::default()).await?;
        wait_gone(&pods, "stubborn").await?;
        let took = deleting.elapsed();
        assert!(!alive(pid), "the SIGTERM-ignoring process survived its pod");
        // SIGKILL comes when the 2 s are over: not before, and not much later (the margin is
        // for a busy machine; the default grace would be 30 s).
        assert!(
            took >= Duration::from_secs(2) && took <= Duration::from_secs(2 + 8),
            "the deletion of a SIGTERM-ignoring pod with a 2 s grace took {took:?}"
        );

        // kill -9 the kubelet: the pods keep running; a restarted kubelet adopts them.
        let a = pods
            .create(sh_pod("a", "worker1", "exec sleep 3600", "Always"))
            .await?;
        let b = pods
            .create(sh_pod("b", "worker1", "exec sleep 3600", "Always"))
            .await?;
        let orphan = pods
            .create(sh_pod("orphan", "worker1", "exec sleep 3600", "Always"))
            .await?;
        for n in ["a", "b", "orphan"] {
            wait_pod(&pods, n, "Running", |p| status(p).phase == "Running").await?;
        }
        let (pa, pb, po) = (
            container_pid(&k, 0, &uid(&a))?,
            container_pid(&k, 0, &uid(&b))?,
            container_pid(&k, 0, &uid(&orphan))?,
        );
        let before = k.pod_processes(0).len();
        k.kill9(0);
        // While it is down, one pod is force-deleted: nothing will confirm it.
        pods.delete("orphan", &DeleteParams::default().grace_period(0))
            .await?;
        wait_gone(&pods, "orphan").await?;
        assert!(
            alive(pa) && alive(pb) && alive(po),
            "containers outlive their kubelet"
        );
        k.restart(0)?;
        wait_until("the orphan's process removed", WAIT, POLL, || async {
            Ok((!alive(po)).then_some(()))
        })
        .await?;
        // Let the restarted kubelet run a few syncs, then nothing has changed for a and b.
        tokio::time::sleep(Duration::from_secs(3)).await;
        for (name, pid) in [("a", pa), ("b", pb)] {
            let p = pods.get(name).await?;
            assert_eq!(container_pid(&k, 0, &uid(&p))?, pid, "{name} was restarted");
            assert!(alive(pid));
            assert_eq!(main_status(&p).restart_count, 0);
            assert_eq!(status(&p).phase, "Running");
        }
        let after = k.pod_processes(0).len();
        assert!(
            after < before,
            "the orphan's shim and container are gone ({before} -> {after})"
        );
        let all = pods.list(&ListParams::default()).await?;
        assert_eq!(all.items.len(), 2, "no duplicate pods");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_register_heartbeat_and_hollow_nodes_run_pods() {
    let mut c = start_api(small()).await;
    run_api(&mut c, |c| async move {
        let k = Kubelets::start(
            c,
            &["worker1"],
            &[
                "--node-labels=zone=a,tier=web",
                "--register-with-taints=dedicated=db:NoSchedule",
                "--cpu=3",
                "--memory=3Gi",
                "--max-pods=42",
                "--node-lease-duration-seconds=8",
                "--node-status-update-frequency=1s",
            ],
        )?;
        let client = admin(c)?;
        k.wait_ready(&client, WAIT).await?;
        let node = Api::<Node>::all(client.clone()).get("worker1").await?;
        let meta = node.metadata.clone().unwrap_or_default();
        assert_eq!(meta.labels["zone"], "a");
        assert_eq!(meta.labels["kubernetes.io/hostname"], "worker1");
        let spec = node.spec.clone().unwrap_or_default();
        assert_eq!(
            (spec.taints[0].key.as_str(), spec.taints[0].effect.as_str()),
            ("dedicated", "NoSchedule")
        );
        let st = node.status.clone().unwrap_or_default();
        assert_eq!(st.capacity["cpu"], "3");
        assert_eq!(st.capacity["memory"], "3Gi");
        assert_eq!(st.allocatable["pods"], "42");
        assert!(st
            .addresses
            .iter()
            .any(|a| a.r#type == "InternalIP" && a.address == "127.0.0.1"));
        let port = st
            .daemon_endpoints
            .and_then(|d| d.kubelet_endpoint)
            .map(|e| e.port);
        assert_eq!(port, Some(k.items[0].port as i32));

        // The Lease is renewed every quarter of its duration: 2 s for an 8 s lease. Three
        // renewals in a row are seen; their renewTimes (the kubelet's clock) are about 2 s
        // apart: not the 1 s of the status updates, nor the 4 s of half the lease (or 10 s of
        // the default lease), with room for a busy machine's slow writes.
        let leases = Api::<Lease>::namespaced(client.clone(), "kube-node-lease");
        let first = leases.get("worker1").await?.spec.unwrap_or_default();
        assert_eq!(first.holder_identity, "worker1");
        assert_eq!(first.lease_duration_seconds, Some(8));
        let mut renewals = vec![first.renew_time.clone()];
        while renewals.len() < 4 {
            let last = renewals.last().cloned().unwrap_or_default();
            let next = wait_until(
                "the node lease renewed",
                WAIT,
                Duration::from_millis(100),
                || async {
                    let now = leases.get("worker1").await?.spec.unwrap_or_default();
                    Ok((now.renew_time != last).then_some(now.renew_time))
                },
            )
            .await?;
            renewals.push(next);
        }
        let times: Vec<f64> = renewals
            .iter()
            .map(|t| micro_time_secs(t).ok_or_else(|| anyhow::anyhow!("renewTime {t:?}")))
            .collect::<anyhow::Result<_>>()?;
        for w in times.windows(2) {
            let gap = w[1] - w[0];
            assert!(
                (1.5..3.5).contains(&gap),
                "renewals {gap:.2} s apart (want about 2 s): {renewals:?}"
            );
        }
        let (code, body) = k.get(0, None, "/healthz").await?;
        assert_eq!((code, body.trim()), (200, "ok"));

        // A runtime that cannot write its state turns the node NotReady, with the reason.
        let nodes = Api::<Node>::all(client.clone());
        let ready_of = |n: &Node| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.r#type == "Ready").cloned())
                .unwrap_or_default()
        };
        let blocker = k.items[0].root_dir.join(".ready-probe");
        std::fs::create_dir(&blocker)?;
        let r = wait_until("worker1 NotReady", WAIT, POLL, || async {
            let r = ready_of(&nodes.get("worker1").await?);
            Ok((r.status == "False").then_some(r))
        })
        .await?;
        assert_eq!(r.reason, "KubeletNotReady");
        assert!(r.message.contains("container runtime is down"), "{r:?}");
        std::fs::remove_dir(&blocker)?;
        wait_until("worker1 Ready again", WAIT, POLL, || async {
            Ok((ready_of(&nodes.get("worker1").await?).status == "True").then_some(()))
        })
        .await?;

        // Hollow nodes: registered, Ready, their Leases renewed, their pods Running without
        // a process.
        let hollow = Kubelets::start(
            c,
            &["hollow"],
            &["--hollow-nodes=5", "--node-lease-duration-seconds=4"],
        )?;
        wait_until("5 hollow nodes Ready", WAIT, POLL, || async {
            let l = nodes.list(&ListParams::default()).await?;
            let n = l
                .items
                .iter()
                .filter(|n| {
                    n.metadata
                        .as_ref()
                        .is_some_and(|m| m.name.starts_with("hollow-"))
                })
                .filter(|n| {
                    n.status.as_ref().is_some_and(|s| {
                        s.conditions
                            .iter()
                            .any(|c| c.r#type == "Ready" && c.status == "True")
                    })
                })
                .count();
            Ok((n == 5).then_some(()))
        })
        .await?;
        let renewed = leases.get("hollow-2").await?.spec.unwrap_or_default();
        assert_eq!(renewed.holder_identity, "hollow-2");
        wait_until("hollow-2's lease renewed", WAIT, POLL, || async {
            let now = leases.get("hollow-2").await?.spec.unwrap_or_default();
            Ok((now.renew_time != renewed.renew_time).then_some(()))
        })
        .await?;
        let pods = Api::<Pod>::namespaced(client.clone(), "default");
        // A container that would crash, and one that would run for an hour: both reported
        // Running and Ready, and no process is started for either.
        pods.create(sh_pod("on-hollow", "hollow-3", "exit 1", "Always"))
            .await?;
        pods.create(sh_pod(
            "sleeps-on-hollow",
            "hollow-1",
            "exec sleep 3600",
            "Always",
        ))
        .await?;
        for name in ["on-hollow", "sleeps-on-hollow"] {
            let p = wait_pod(&pods, name, "Running", |p| status(p).phase == "Running").await?;
            assert!(ready(&p));
        }
        // The only process under the hollow kubelet's root dir is the kubelet itself (its
        // command line names the dir).
        let own: Vec<u32> = hollow
            .pod_processes(0)
            .into_iter()
            .filter(|pid| {
                !std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains("--hollow-nodes"))
            })
            .collect();
        assert!(own.is_empty(), "hollow nodes started processes: {own:?}");
        for name in ["on-hollow", "sleeps-on-hollow"] {
            pods.delete(name, &DeleteParams::default()).await?;
            wait_gone(&pods, name).await?;
        }
        drop(hollow);

        // Bad flags: refused at start, naming the flag.
        for (flag, needle) in [
            ("--hostname-override=Bad_Name", "--hostname-override"),
            ("--cpu=lots", "--cpu"),
            ("--register-with-taints=k=v:Sometimes", "NoSchedule"),
        ] {
            let out = std::process::Command::new(bin_path("kubelet-lite"))
                .args([flag, "--port=0"])
                .output()?;
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{flag} accepted");
            assert!(err.contains(needle), "{flag}: {err}");
        }
        Ok(())
    })
    .await;
}

fn replicaset(name: &str, replicas: i32) -> ReplicaSet {
    let labels: BTreeMap<String, String> = [("app".to_string(), name.to_string())].into();
    ReplicaSet {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            selector: Some(LabelSelector {
                match_labels: labels.clone(),
                ..Default::default()
            }),
            template: Some(PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels,
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "main".into(),
                        command: vec!["sleep".into(), "3600".into()],
                        ..Default::default()
                    }],
                    termination_grace_period_seconds: Some(1),
                    ..Default::default()
                }),
            }),
        }),
        ..Default::default()
    }
}

fn node_of(p: &Pod) -> String {
    p.spec
        .as_ref()
        .map(|s| s.node_name.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_workers_pods_come_back_on_the_others() {
    let mut c = start_api(ApiOpts::default()).await;
    run_api(&mut c, |c| async move {
        let mut k = Kubelets::start(
            c,
            &["worker1", "worker2", "worker3"],
            &["--node-lease-duration-seconds=4"],
        )?;
        let _cm = Components::start(
            c,
            ComponentKind::ControllerManager,
            1,
            &[
                "--leader-elect=false",
                "--node-monitor-period=1s",
                "--node-monitor-grace-period=6s",
                "--pod-eviction-timeout=2s",
            ],
        )?;
        let _sched = Components::start(c, ComponentKind::Scheduler, 1, &["--leader-elect=false"])?;
        let client = admin(c)?;
        k.wait_ready(&client, WAIT).await?;
        Api::<ReplicaSet>::namespaced(client.clone(), "default")
            .create(replicaset("web", 6))
            .await?;
        let pods = Api::<Pod>::namespaced(client.clone(), "default");
        let running = |pods: Vec<Pod>| -> Vec<Pod> {
            pods.into_iter()
                .filter(|p| {
                    p.metadata
                        .as_ref()
                        .is_some_and(|m| m.deletion_timestamp.is_empty())
                })
                .filter(|p| status(p).phase == "Running" && ready(p))
                .collect()
        };
        let all = wait_until("6 web pods Running", WAIT, POLL, || async {
            let l = running(
                pods.list(&ListParams::default().labels("app=web"))
                    .await?
                    .items,
            );
            Ok((l.len() == 6).then_some(l))
        })
        .await?;
        // Spread by the scheduler; kill the worker with the most pods, with its processes.
        let victim = (0..3)
            .max_by_key(|i| {
                all.iter()
                    .filter(|p| node_of(p) == k.items[*i].name)
                    .count()
            })
            .unwrap_or(0);
        let victim_name = k.items[victim].name.clone();
        assert!(all.iter().any(|p| node_of(p) == victim_name));
        k.kill9(victim);
        for pid in k.pod_processes(victim) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        wait_until(
            "6 web pods Running on the live workers",
            Duration::from_secs(120),
            POLL,
            || async {
                let l = running(
                    pods.list(&ListParams::default().labels("app=web"))
                        .await?
                        .items,
                );
                let elsewhere = l.iter().filter(|p| node_of(p) != victim_name).count();
                Ok((elsewhere == 6).then_some(()))
            },
        )
        .await?;
        Ok(())
    })
    .await;
}

//! The scheduler binary against a real cluster (store, apiservers, lb): every filter, resources
//! filling a node up, spreading, the unschedulable condition and event with upstream's message
//! and the pod scheduled once a fitting node appears; three schedulers with short leases, one
//! binding, and another taking over after `kill -9`; bad flags refused at start.
//!
//! There are no kubelets yet: nodes are registered by hand (Ready condition, allocatable,
//! labels, taints). Needs `cargo build --workspace --bins` first.

mod common;

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use common::api::{run_api, start_api};
use kl_api::{
    Container, Event, Lease, Node, NodeCondition, NodeSpec, NodeStatus, ObjectMeta, OwnerReference,
    Pod, PodSpec, ResourceRequirements, Taint, Toleration,
};
use kl_client::{Api, Client, DeleteParams, ListParams};
use testkit::{bin_path, free_port, process::Proc, wait_until, ApiCluster, ApiOpts};

/// Short leases, so that a takeover happens within seconds.
const LEASE_FLAGS: [&str; 3] = [
    "--leader-elect-lease-duration=3s",
    "--leader-elect-renew-deadline=2s",
    "--leader-elect-retry-period=500ms",
];

const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

/// One scheduler process of a test, with its secure port.
struct Scheduler {
    proc: Proc,
    port: u16,
}

/// Starts a scheduler as `system:kube-scheduler` through the lb, serving /healthz and
/// /metrics on a free port with a certificate of the test CA.
fn spawn_scheduler(c: &ApiCluster, i: usize, extra: &[&str]) -> anyhow::Result<Scheduler> {
    let file: &'static str = Box::leak(format!("scheduler{i}").into_boxed_str());
    let kubeconfig = c.kubeconfig_for_user(file, "system:kube-scheduler", None)?;
    let serving: &'static str = Box::leak(format!("scheduler{i}-serving").into_boxed_str());
    let (cert, key) = c.etcd.pki().issue(serving, "kube-scheduler", None, true)?;
    let port = free_port();
    let p = |p: &PathBuf| p.display().to_string();
    let mut args = vec![
        format!("--kubeconfig={}", p(&kubeconfig)),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={port}"),
        format!("--tls-cert-file={}", p(&cert)),
        format!("--tls-private-key-file={}", p(&key)),
        format!("--client-ca-file={}", c.etcd.pki().cluster_ca.display()),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let log = c.etcd.pki().dir.join(format!("scheduler{i}.log"));
    let proc = Proc::spawn(&bin_path("scheduler"), &args, &log)?;
    Ok(Scheduler { proc, port })
}

fn admin(c: &ApiCluster) -> anyhow::Result<Client> {
    Ok(Client::new(&c.resolved_admin()?)?)
}

fn kv(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A hand-registered node: Ready unless `ready` is false, with allocatable cpu/memory/pods.
struct NodeSpecT<'a> {
    name: &'a str,
    cpu: &'a str,
    memory: &'a str,
    labels: &'a [(&'a str, &'a str)],
    taints: &'a [(&'a str, &'a str, &'a str)],
    ready: bool,
    unschedulable: bool,
}

impl<'a> NodeSpecT<'a> {
    fn new(name: &'a str) -> Self {
        NodeSpecT {
            name,
            cpu: "4",
            memory: "8Gi",
            labels: &[],
            taints: &[],
            ready: true,
            unschedulable: false,
        }
    }

    fn build(&self) -> Node {
        let alloc = kv(&[("cpu", self.cpu), ("memory", self.memory), ("pods", "110")]);
        Node {
            metadata: Some(ObjectMeta {
                name: self.name.into(),
                labels: kv(self.labels),
                ..Default::default()
            }),
            spec: Some(NodeSpec {
                unschedulable: self.unschedulable,
                taints: self
                    .taints
                    .iter()
                    .map(|(k, v, e)| Taint {
                        key: k.to_string(),
                        value: v.to_string(),
                        effect: e.to_string(),
                        ..Default::default()
                    })
                    .collect(),
            }),
            status: Some(NodeStatus {
                capacity: alloc.clone(),
                allocatable: alloc,
                conditions: vec![NodeCondition {
                    r#type: "Ready".into(),
                    status: if self.ready { "True" } else { "False" }.into(),
                    reason: "KubeletReady".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

async fn register(client: &Client, n: NodeSpecT<'_>) -> anyhow::Result<()> {
    Api::<Node>::all(client.clone()).create(n.build()).await?;
    Ok(())
}

/// A pod in `default` asking for `cpu`, selecting `selector`, owned by `owner` (a uid).
fn pod(name: &str, cpu: Option<&str>, selector: &[(&str, &str)], owner: Option<&str>) -> Pod {
    Pod {
        metadata: Some(ObjectMeta {
            name: name.into(),
            owner_references: owner
                .map(|uid| OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "ReplicaSet".into(),
                    name: "web".into(),
                    uid: uid.into(),
                    controller: Some(true),
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "main".into(),
                command: vec!["sleep".into(), "3600".into()],
                resources: Some(ResourceRequirements {
                    requests: cpu.map(|c| kv(&[("cpu", c)])).unwrap_or_default(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            node_selector: kv(selector),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Waits until pod `name` is bound; its node.
async fn bound_node(pods: &Api<Pod>, name: &str) -> anyhow::Result<String> {
    wait_until(&format!("pod {name} to be bound"), WAIT, POLL, || async {
        let p = pods.get(name).await?;
        let node = p.spec.map(|s| s.node_name).unwrap_or_default();
        Ok((!node.is_empty()).then_some(node))
    })
    .await
}

/// Waits until pod `name` carries PodScheduled=False/Unschedulable; its message.
async fn unschedulable_message(pods: &Api<Pod>, name: &str) -> anyhow::Result<String> {
    wait_until(
        &format!("pod {name} to be marked unschedulable"),
        WAIT,
        POLL,
        || async {
            let p = pods.get(name).await?;
            anyhow::ensure!(
                p.spec.as_ref().is_some_and(|s| s.node_name.is_empty()),
                "pod {name} was bound: {:?}",
                p.spec
            );
            Ok(p.status.and_then(|s| {
                s.conditions
                    .into_iter()
                    .find(|c| {
                        c.r#type == "PodScheduled"
                            && c.status == "False"
                            && c.reason == "Unschedulable"
                    })
                    .map(|c| c.message)
            }))
        },
    )
    .await
}

/// Waits for an event about pod `name` with `reason`; its message.
async fn event_message(client: &Client, name: &str, reason: &str) -> anyhow::Result<String> {
    let events = Api::<Event>::namespaced(client.clone(), "default");
    wait_until(
        &format!("a {reason} event for pod {name}"),
        WAIT,
        POLL,
        || async {
            let list = events.list(&ListParams::default()).await?;
            Ok(list
                .items
                .into_iter()
                .filter(|e| {
                    e.reason == reason && e.involved_object.as_ref().is_some_and(|o| o.name == name)
                })
                .map(|e| e.message)
                .next_back())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_resources_spreading_and_unschedulable_pods() {
    let mut c = start_api(ApiOpts::default()).await;
    run_api(&mut c, |c| async move {
        let sched = spawn_scheduler(c, 0, &LEASE_FLAGS)?;
        let client = admin(c)?;
        let pods = Api::<Pod>::namespaced(client.clone(), "default");

        // One node passes every filter; each other fails exactly one.
        register(
            &client,
            NodeSpecT {
                labels: &[("disk", "ssd")],
                ..NodeSpecT::new("good")
            },
        )
        .await?;
        register(
            &client,
            NodeSpecT {
                ready: false,
                ..NodeSpecT::new("notready")
            },
        )
        .await?;
        register(
            &client,
            NodeSpecT {
                unschedulable: true,
                ..NodeSpecT::new("cordoned")
            },
        )
        .await?;
        register(
            &client,
            NodeSpecT {
                labels: &[("role", "db")],
                taints: &[("dedicated", "db", "NoSchedule")],
                ..NodeSpecT::new("tainted")
            },
        )
        .await?;

        for i in 0..3 {
            pods.create(pod(&format!("plain-{i}"), Some("100m"), &[], None))
                .await?;
        }
        for i in 0..3 {
            let node = bound_node(&pods, &format!("plain-{i}")).await?;
            anyhow::ensure!(node == "good", "plain-{i} went to {node}");
        }
        // A toleration opens the tainted node; the selector picks it.
        let mut tolerant = pod("tolerant", None, &[("role", "db")], None);
        tolerant
            .spec
            .as_mut()
            .unwrap()
            .tolerations
            .push(Toleration {
                key: "dedicated".into(),
                operator: "Equal".into(),
                value: "db".into(),
                effect: "NoSchedule".into(),
                ..Default::default()
            });
        pods.create(tolerant).await?;
        anyhow::ensure!(bound_node(&pods, "tolerant").await? == "tainted");
        let msg = event_message(&client, "tolerant", "Scheduled").await?;
        anyhow::ensure!(
            msg == "Successfully assigned default/tolerant to tainted",
            "{msg}"
        );

        // Nothing fits: the condition and the event name every reason, upstream's way.
        pods.create(pod("picky", None, &[("disk", "hdd")], None))
            .await?;
        let want = "0/4 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, \
                    1 node(s) had untolerated taint {dedicated: db}, 1 node(s) were not ready, \
                    1 node(s) were unschedulable.";
        let got = unschedulable_message(&pods, "picky").await?;
        anyhow::ensure!(got == want, "condition message: {got}");
        let got = event_message(&client, "picky", "FailedScheduling").await?;
        anyhow::ensure!(got == want, "event message: {got}");
        // A fitting node appears: the pod is scheduled there.
        register(
            &client,
            NodeSpecT {
                labels: &[("disk", "hdd")],
                ..NodeSpecT::new("hdd")
            },
        )
        .await?;
        anyhow::ensure!(bound_node(&pods, "picky").await? == "hdd");

        // Resources accumulate: a 1-cpu node takes two 400m pods, not a third.
        register(
            &client,
            NodeSpecT {
                cpu: "1",
                labels: &[("pool", "small")],
                ..NodeSpecT::new("small")
            },
        )
        .await?;
        for i in 0..2 {
            pods.create(pod(
                &format!("fill-{i}"),
                Some("400m"),
                &[("pool", "small")],
                None,
            ))
            .await?;
            anyhow::ensure!(bound_node(&pods, &format!("fill-{i}")).await? == "small");
        }
        pods.create(pod("fill-2", Some("400m"), &[("pool", "small")], None))
            .await?;
        let got = unschedulable_message(&pods, "fill-2").await?;
        anyhow::ensure!(
            got == "0/6 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint \
                    {dedicated: db}, 1 node(s) were not ready, 1 node(s) were unschedulable, \
                    2 node(s) didn't match Pod's node affinity/selector.",
            "{got}"
        );
        // Freeing room schedules it.
        pods.delete("fill-0", &DeleteParams::default().grace_period(0))
            .await?;
        anyhow::ensure!(bound_node(&pods, "fill-2").await? == "small");

        // Spreading beats least-allocated: s2 is emptier but already holds two pods of the
        // owner, so the owner's next pod goes to s1.
        for n in ["s1", "s2"] {
            register(
                &client,
                NodeSpecT {
                    labels: &[("pool", "spread")],
                    ..NodeSpecT::new(n)
                },
            )
            .await?;
        }
        let mut hog = pod("hog", Some("2"), &[], None);
        hog.spec.as_mut().unwrap().node_name = "s1".into();
        pods.create(hog).await?;
        for i in 0..2 {
            let mut p = pod(&format!("pre-{i}"), None, &[], Some("rs-uid-1"));
            p.spec.as_mut().unwrap().node_name = "s2".into();
            pods.create(p).await?;
        }
        pods.create(pod("spread", None, &[("pool", "spread")], Some("rs-uid-1")))
            .await?;
        anyhow::ensure!(bound_node(&pods, "spread").await? == "s1");
        // Without the owner, least-allocated sends the same pod to s2.
        pods.create(pod("lone", None, &[("pool", "spread")], None))
            .await?;
        anyhow::ensure!(bound_node(&pods, "lone").await? == "s2");

        // The secure port.
        let ca = c.etcd.pki().cluster_ca.clone();
        let (code, body) = testkit::api::https_get(&ca, None, sched.port, "/healthz").await?;
        anyhow::ensure!(code == 200 && body.trim() == "ok", "{code} {body}");
        let (code, _) = testkit::api::https_get(&ca, None, sched.port, "/metrics").await?;
        anyhow::ensure!(code == 401, "/metrics without a client certificate: {code}");
        let pki = c.etcd.pki();
        let (code, body) = testkit::api::https_get(
            &ca,
            Some((&pki.admin_cert, &pki.admin_key)),
            sched.port,
            "/metrics",
        )
        .await?;
        anyhow::ensure!(code == 200, "{code} {body}");
        anyhow::ensure!(
            body.contains("leader_election_master_status{name=\"kube-scheduler\"} 1"),
            "{body}"
        );
        anyhow::ensure!(body.contains("scheduler_schedule_attempts_total"), "{body}");
        drop(sched);
        Ok(())
    })
    .await;
}

/// The holder of the scheduler's Lease.
async fn holder(client: &Client) -> anyhow::Result<String> {
    let lease = Api::<Lease>::namespaced(client.clone(), "kube-system")
        .get_opt("kube-scheduler")
        .await?;
    Ok(lease
        .and_then(|l| l.spec)
        .map(|s| s.holder_identity)
        .unwrap_or_default())
}

/// Which schedulers logged a bind of pod `name`.
fn binders(scheds: &[Option<Scheduler>], name: &str) -> Vec<usize> {
    let needle = format!("bound pod=default/{name} node=");
    scheds
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            s.as_ref().is_some_and(|s| {
                std::fs::read_to_string(&s.proc.log_path)
                    .unwrap_or_default()
                    .lines()
                    .any(|l| l.contains(&needle))
            })
        })
        .map(|(i, _)| i)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_binds_and_a_standby_takes_over_after_kill_9() {
    let mut c = start_api(ApiOpts::default()).await;
    run_api(&mut c, |c| async move {
        let client = admin(c)?;
        let pods = Api::<Pod>::namespaced(client.clone(), "default");
        register(&client, NodeSpecT::new("n1")).await?;
        register(&client, NodeSpecT::new("n2")).await?;
        let mut scheds: Vec<Option<Scheduler>> = (0..3)
            .map(|i| spawn_scheduler(c, i, &LEASE_FLAGS).map(Some))
            .collect::<anyhow::Result<_>>()?;

        for i in 0..6 {
            pods.create(pod(&format!("a-{i}"), Some("100m"), &[], None))
                .await?;
        }
        let mut leaders = std::collections::BTreeSet::new();
        for i in 0..6 {
            let name = format!("a-{i}");
            bound_node(&pods, &name).await?;
            let b = wait_until(
                &format!("the log line of {name}'s bind"),
                WAIT,
                POLL,
                || {
                    let b = binders(&scheds, &name);
                    async move { Ok((!b.is_empty()).then_some(b)) }
                },
            )
            .await?;
            anyhow::ensure!(b.len() == 1, "{name} bound by schedulers {b:?}");
            leaders.insert(b[0]);
        }
        anyhow::ensure!(
            leaders.len() == 1,
            "binds by more than one scheduler: {leaders:?}"
        );
        let leader = *leaders.iter().next().unwrap();
        let old_holder = holder(&client).await?;
        anyhow::ensure!(!old_holder.is_empty(), "the Lease has a holder");

        // kill -9 the leader: another takes over and keeps scheduling.
        scheds[leader].take().unwrap().proc.kill9();
        for i in 0..4 {
            pods.create(pod(&format!("b-{i}"), Some("100m"), &[], None))
                .await?;
        }
        let mut new_leaders = std::collections::BTreeSet::new();
        for i in 0..4 {
            let name = format!("b-{i}");
            bound_node(&pods, &name).await?;
            let b = wait_until(
                &format!("the log line of {name}'s bind"),
                WAIT,
                POLL,
                || {
                    let b = binders(&scheds, &name);
                    async move { Ok((!b.is_empty()).then_some(b)) }
                },
            )
            .await?;
            anyhow::ensure!(b.len() == 1, "{name} bound by schedulers {b:?}");
            new_leaders.insert(b[0]);
        }
        anyhow::ensure!(new_leaders.len() == 1, "{new_leaders:?}");
        anyhow::ensure!(!new_leaders.contains(&leader));
        let new_holder = holder(&client).await?;
        anyhow::ensure!(new_holder != old_holder, "lease still held by {old_holder}");

        // SIGTERM: the new leader stops, releases the Lease and exits cleanly.
        let new_leader = *new_leaders.iter().next().unwrap();
        let mut s = scheds[new_leader].take().unwrap();
        s.proc.signal("TERM")?;
        let st = s
            .proc
            .wait_exit(Duration::from_secs(20))
            .ok_or_else(|| anyhow::anyhow!("the scheduler did not exit on SIGTERM"))?;
        anyhow::ensure!(st.success(), "exit status {st:?}");
        let after = holder(&client).await?;
        anyhow::ensure!(after != new_holder, "the Lease was not released: {after}");
        Ok(())
    })
    .await;
}

#[test]
fn bad_flags_are_refused_at_start() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin_path("scheduler"))
            .args(args)
            .output()
            .expect("run `cargo build --workspace --bins` first");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, err) = run(&[
        "--leader-elect-lease-duration=10s",
        "--leader-elect-renew-deadline=10s",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--leader-elect-lease-duration") && err.contains("greater than"),
        "{err}"
    );
    let (code, err) = run(&["--percentage-of-nodes-to-score=101"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--percentage-of-nodes-to-score"), "{err}");
    let (code, err) = run(&["--leader-elect-retry-period=soon"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("invalid duration"), "{err}");
    let (code, err) = run(&["--leader-elect-resource-lock=endpoints"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("leases"), "{err}");
    let (code, err) = run(&["--leader-elect=maybe"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--leader-elect"), "{err}");
}

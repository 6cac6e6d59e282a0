//! The controller-manager binary against a real cluster (store, apiservers, lb):
//!
//! * three controller-managers with short leases: at most one leader observed at any time
//!   (its /metrics `leader_election_master_status`), a standby leading after `kill -9`, after
//!   SIGTERM (the Lease released) and after SIGSTOP past the lease (the paused one's fencing
//!   token refused, and it steps down on SIGCONT), while a ReplicaSet of 5 never has more than
//!   5 non-terminating pods and comes back to 5;
//! * node lifecycle: a node whose Lease is renewed by hand and then not: Ready=Unknown, the
//!   unreachable taint, its pod deleted and replaced, the taint removed when renewals resume;
//! * garbage collection: deleting a ReplicaSet deletes its pods; an orphaning delete leaves
//!   them, without owner;
//! * bad flags refused at start with a clear message.
//!
//! There are no kubelets: pods stay Pending and unbound unless bound by hand. Needs
//! `cargo build --workspace --bins` first.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::api::{run_api, start_api};
use kl_api::{
    Container, Event, FencingToken, LabelSelector, Lease, LeaseSpec, Node, NodeCondition,
    NodeStatus, ObjectMeta, Pod, PodSpec, PodTemplateSpec, ReplicaSet, ReplicaSetSpec,
};
use kl_client::{Api, Client, DeleteParams, ListParams};
use testkit::components::{ComponentKind, Components};
use testkit::{bin_path, wait_until, ApiCluster, ApiOpts};

/// Short leases, so that takeovers happen within seconds.
const LEASE_FLAGS: [&str; 3] = [
    "--leader-elect-lease-duration=4s",
    "--leader-elect-renew-deadline=3s",
    "--leader-elect-retry-period=500ms",
];
/// Lease duration + jittered retry period (2.2 × 500 ms), the takeover bound after a crash,
/// plus generous slack for a loaded 2-core machine.
const TAKEOVER: Duration = Duration::from_secs(4 + 2 + 20);
const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

fn labels(app: &str) -> BTreeMap<String, String> {
    [("app".to_string(), app.to_string())].into()
}

fn replicaset(name: &str, replicas: i32) -> ReplicaSet {
    ReplicaSet {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            selector: Some(LabelSelector {
                match_labels: labels(name),
                ..Default::default()
            }),
            template: Some(PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: labels(name),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "main".into(),
                        command: vec!["sleep".into(), "3600".into()],
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            }),
        }),
        ..Default::default()
    }
}

fn admin(c: &ApiCluster) -> anyhow::Result<Client> {
    Ok(Client::new(&c.resolved_admin()?)?)
}

fn terminating(p: &Pod) -> bool {
    p.metadata
        .as_ref()
        .is_some_and(|m| !m.deletion_timestamp.is_empty())
}

/// The pods of ReplicaSet `app` (by label) that are not terminating.
async fn active_pods(pods: &Api<Pod>, app: &str) -> anyhow::Result<Vec<Pod>> {
    let l = pods
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await?;
    Ok(l.items.into_iter().filter(|p| !terminating(p)).collect())
}

async fn wait_active(pods: &Api<Pod>, app: &str, n: usize) -> anyhow::Result<Vec<Pod>> {
    wait_until(&format!("{n} active pods of {app}"), WAIT, POLL, || async {
        let a = active_pods(pods, app).await?;
        Ok((a.len() == n).then_some(a))
    })
    .await
}

/// Waits until exactly one component leads; which.
async fn one_leader(
    cms: &Components,
    not: Option<usize>,
    within: Duration,
) -> anyhow::Result<usize> {
    wait_until(
        "exactly one leading controller-manager",
        within,
        POLL,
        || async {
            let l = cms.leaders().await;
            Ok(match l.as_slice() {
                [i] if Some(*i) != not => Some(*i),
                _ => None,
            })
        },
    )
    .await
}

/// The controller-manager Lease as stored.
async fn lease(client: &Client) -> anyhow::Result<LeaseSpec> {
    let l = Api::<Lease>::namespaced(client.clone(), "kube-system")
        .get("kube-controller-manager")
        .await?;
    Ok(l.spec.unwrap_or_default())
}

/// Watches, in the background, the two safety properties: how many controller-managers report
/// leading at once, and how many non-terminating pods the ReplicaSet has.
struct Monitor {
    stop: Arc<AtomicBool>,
    max_leaders: Arc<AtomicUsize>,
    max_pods: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Monitor {
    fn start(cms: &Components, pods: Api<Pod>, app: &'static str) -> Monitor {
        let stop = Arc::new(AtomicBool::new(false));
        let max_leaders = Arc::new(AtomicUsize::new(0));
        let max_pods = Arc::new(AtomicUsize::new(0));
        let probe = cms.probe();
        let (s, ml, mp) = (stop.clone(), max_leaders.clone(), max_pods.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                let (leaders, active) = tokio::join!(probe.leaders(), active_pods(&pods, app));
                ml.fetch_max(leaders.len(), Ordering::Relaxed);
                if let Ok(a) = active {
                    mp.fetch_max(a.len(), Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Monitor {
            stop,
            max_leaders,
            max_pods,
            task,
        }
    }

    fn check(&self, what: &str) -> anyhow::Result<()> {
        let (l, p) = (
            self.max_leaders.load(Ordering::Relaxed),
            self.max_pods.load(Ordering::Relaxed),
        );
        anyhow::ensure!(
            l <= 1,
            "{what}: {l} controller-managers reported leading at once"
        );
        anyhow::ensure!(
            p <= 5,
            "{what}: the ReplicaSet of 5 had {p} active pods at once"
        );
        Ok(())
    }

    async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failovers_keep_one_leader_and_the_replica_count() {
    let mut c = start_api(ApiOpts::default()).await;
    run_api(&mut c, |c| async move {
        let mut cms = Components::start(c, ComponentKind::ControllerManager, 3, &LEASE_FLAGS)?;
        let r = failovers(c, &mut cms).await;
        if r.is_err() {
            cms.dump_logs(60);
        }
        r
    })
    .await;
}

async fn failovers(c: &ApiCluster, cms: &mut Components) -> anyhow::Result<()> {
    let client = admin(c)?;
    let pods = Api::<Pod>::namespaced(client.clone(), "default");
    let leader = one_leader(cms, None, WAIT).await?;
    Api::<ReplicaSet>::namespaced(client.clone(), "default")
        .create(replicaset("web", 5))
        .await?;
    let monitor = Monitor::start(cms, pods.clone(), "web");
    wait_active(&pods, "web", 5).await?;
    // Each creation is an Event on the ReplicaSet, as upstream's controller records them.
    let events = Api::<Event>::namespaced(client.clone(), "default");
    wait_until("five SuccessfulCreate events", WAIT, POLL, || async {
        let created = events
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|e| {
                e.reason == "SuccessfulCreate"
                    && e.message.starts_with("Created pod: web-")
                    && e.source
                        .as_ref()
                        .is_some_and(|s| s.component == "replicaset-controller")
                    && e.involved_object
                        .as_ref()
                        .is_some_and(|o| o.kind == "ReplicaSet" && o.name == "web")
            })
            .count();
        Ok((created == 5).then_some(()))
    })
    .await?;
    // The status reaches the apiserver too.
    wait_until("the ReplicaSet's status", WAIT, POLL, || async {
        let rs = Api::<ReplicaSet>::namespaced(client.clone(), "default")
            .get("web")
            .await?;
        let s = rs.status.unwrap_or_default();
        Ok((s.replicas == 5 && s.observed_generation >= 1).then_some(()))
    })
    .await?;

    // 1. kill -9: a standby takes over after the lease runs out on its own clock.
    let before = lease(&client).await?;
    cms.kill9(leader);
    let second = one_leader(cms, Some(leader), TAKEOVER).await?;
    let after = lease(&client).await?;
    anyhow::ensure!(
        after.lease_transitions > before.lease_transitions
            && after.holder_identity != before.holder_identity,
        "a takeover is a new term: {before:?} then {after:?}"
    );
    cms.restart(leader)?;
    // The new leader manages: delete two pods, it replaces them.
    let victims = active_pods(&pods, "web").await?;
    for p in victims.iter().take(2) {
        let name = p
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        pods.delete(&name, &DeleteParams::default()).await?;
    }
    wait_active(&pods, "web", 5).await?;
    monitor.check("after kill -9")?;

    // 2. SIGTERM: the leader stops its controllers, releases the Lease and exits 0; a standby
    // takes over within a retry period (plus slack), not a lease duration.
    cms.signal(second, "TERM")?;
    let code = tokio::task::block_in_place(|| cms.wait_exit(second, Duration::from_secs(20)));
    anyhow::ensure!(code == Some(Some(0)), "SIGTERM exits 0, got {code:?}");
    anyhow::ensure!(
        cms.log(second).contains("released leader lease"),
        "the leader released its Lease on SIGTERM"
    );
    let third = one_leader(cms, Some(second), TAKEOVER).await?;
    cms.restart(second)?;
    wait_active(&pods, "web", 5).await?;
    monitor.check("after SIGTERM")?;

    // 3. SIGSTOP past the lease: a new leader is elected; the paused one's token is stale.
    let paused_term = lease(&client).await?;
    cms.signal(third, "STOP")?;
    let fourth = one_leader(cms, Some(third), TAKEOVER).await?;
    let new_term = lease(&client).await?;
    anyhow::ensure!(new_term.lease_transitions > paused_term.lease_transitions);
    // A write with the paused leader's token (exactly what it would send) is refused.
    let stale = FencingToken {
        lease_namespace: "kube-system".into(),
        lease_name: "kube-controller-manager".into(),
        lease_transitions: paused_term.lease_transitions.unwrap_or(0),
        holder_identity: paused_term.holder_identity.clone(),
    };
    let fenced = Api::<Pod>::namespaced(client.clone(), "default").with_fencing(stale);
    let mut extra = replicaset("web", 1)
        .spec
        .and_then(|s| s.template)
        .map(|t| Pod {
            metadata: t.metadata,
            spec: t.spec,
            ..Default::default()
        })
        .unwrap_or_default();
    extra.metadata.get_or_insert_with(Default::default).name = "stale-write".into();
    let err =
        fenced.create(extra).await.err().ok_or_else(|| {
            anyhow::anyhow!("a write with the paused leader's token was accepted")
        })?;
    anyhow::ensure!(err.is_fenced(), "refused as Fenced: {err}");
    // Make work for it while it sleeps: the new leader replaces these; the old one must not.
    for p in active_pods(&pods, "web").await?.iter().take(2) {
        let name = p
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        pods.delete(&name, &DeleteParams::default()).await?;
    }
    wait_active(&pods, "web", 5).await?;
    cms.signal(third, "CONT")?;
    wait_until(
        "the resumed ex-leader to step down",
        TAKEOVER,
        POLL,
        || async { Ok((cms.is_leading(third).await == Some(false)).then_some(())) },
    )
    .await?;
    anyhow::ensure!(
        cms.is_running(third),
        "the ex-leader stands by rather than exiting"
    );
    let log = cms.log(third);
    for l in log
        .lines()
        .filter(|l| l.contains("lost") || l.contains("Fenced") || l.contains("stopp"))
    {
        eprintln!("resumed ex-leader: {l}");
    }
    anyhow::ensure!(
        log.contains("leader election lost") || log.contains("Fenced"),
        "the resumed ex-leader noticed it lost the lease"
    );
    anyhow::ensure!(
        one_leader(cms, None, WAIT).await? == fourth,
        "the new leader keeps leading"
    );
    // Settle, then check the safety properties over the whole run.
    wait_active(&pods, "web", 5).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    anyhow::ensure!(active_pods(&pods, "web").await?.len() == 5);
    monitor.check("over the whole run")?;
    monitor.finish().await;
    Ok(())
}

/// Creates node `name` with Ready=True, and its Lease in kube-node-lease.
async fn register_node(client: &Client, name: &str) -> anyhow::Result<()> {
    let nodes = Api::<Node>::all(client.clone());
    let n = nodes
        .create(Node {
            metadata: Some(ObjectMeta {
                name: name.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?;
    let mut n = n;
    n.status = Some(NodeStatus {
        conditions: vec![NodeCondition {
            r#type: "Ready".into(),
            status: "True".into(),
            reason: "KubeletReady".into(),
            message: "kubelet is posting ready status".into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    nodes.update_status(n).await?;
    Api::<Lease>::namespaced(client.clone(), "kube-node-lease")
        .create(Lease {
            metadata: Some(ObjectMeta {
                name: name.into(),
                ..Default::default()
            }),
            spec: Some(LeaseSpec {
                holder_identity: name.into(),
                lease_duration_seconds: Some(40),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?;
    Ok(())
}

/// Renews node `name`'s Lease every 300 ms while `on` is set, as a kubelet would.
fn renew_lease(
    client: Client,
    name: &'static str,
    on: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let leases = Api::<Lease>::namespaced(client, "kube-node-lease");
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            if on.load(Ordering::Relaxed) {
                if let Ok(mut l) = leases.get(name).await {
                    n += 1;
                    l.spec.get_or_insert_with(Default::default).renew_time =
                        format!("2024-01-01T00:00:{:02}.{:06}Z", n % 60, n);
                    let _ = leases.update(l).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
}

fn unreachable_taint(n: &Node) -> bool {
    n.spec.as_ref().is_some_and(|s| {
        s.taints
            .iter()
            .any(|t| t.key == "node.kubernetes.io/unreachable" && t.effect == "NoExecute")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_lifecycle_marks_silent_nodes_and_evicts_their_pods() {
    let mut c = start_api(ApiOpts::default()).await;
    run_api(&mut c, |c| async move {
        let mut flags = LEASE_FLAGS.to_vec();
        flags.extend([
            "--node-monitor-period=500ms",
            "--node-monitor-grace-period=3s",
            "--pod-eviction-timeout=2s",
        ]);
        let cms = Components::start(c, ComponentKind::ControllerManager, 1, &flags)?;
        let client = admin(c)?;
        let nodes = Api::<Node>::all(client.clone());
        let pods = Api::<Pod>::namespaced(client.clone(), "default");
        register_node(&client, "n1").await?;
        let (on, stop) = (
            Arc::new(AtomicBool::new(true)),
            Arc::new(AtomicBool::new(false)),
        );
        let renewer = renew_lease(client.clone(), "n1", on.clone(), stop.clone());
        one_leader(&cms, None, WAIT).await?;

        Api::<ReplicaSet>::namespaced(client.clone(), "default")
            .create(replicaset("app", 1))
            .await?;
        let first = wait_active(&pods, "app", 1).await?;
        let first_name = first[0]
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        pods.bind(&first_name, "n1", None).await?;

        // Renewing: the node stays as it is, well past the grace period.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let n = nodes.get("n1").await?;
        anyhow::ensure!(
            !unreachable_taint(&n),
            "a renewing node is not tainted: {n:?}"
        );

        // Silent: Unknown, tainted, then its pod is evicted and replaced.
        on.store(false, Ordering::Relaxed);
        wait_until("n1 Ready=Unknown and tainted", WAIT, POLL, || async {
            let n = nodes.get("n1").await?;
            let ready = n
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.r#type == "Ready").cloned())
                .unwrap_or_default();
            Ok((ready.status == "Unknown"
                && ready.reason == "NodeStatusUnknown"
                && ready.message == "Kubelet stopped posting node status."
                && unreachable_taint(&n))
            .then_some(()))
        })
        .await?;
        wait_until("the pod on n1 to be evicted", WAIT, POLL, || async {
            Ok(match pods.get_opt(&first_name).await? {
                None => Some(()),
                Some(p) if terminating(&p) => Some(()),
                _ => None,
            })
        })
        .await?;
        let replaced = wait_active(&pods, "app", 1).await?;
        anyhow::ensure!(
            replaced[0].metadata.as_ref().map(|m| m.name.as_str()) != Some(first_name.as_str()),
            "the ReplicaSet replaced the evicted pod"
        );

        // Renewals resume: the taint goes.
        on.store(true, Ordering::Relaxed);
        wait_until("n1's taint removed", WAIT, POLL, || async {
            Ok((!unreachable_taint(&nodes.get("n1").await?)).then_some(()))
        })
        .await?;
        stop.store(true, Ordering::Relaxed);
        let _ = renewer.await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collector_cascades_and_orphans() {
    let mut c = start_api(ApiOpts::default()).await;
    run_api(&mut c, |c| async move {
        let cms = Components::start(c, ComponentKind::ControllerManager, 1, &LEASE_FLAGS)?;
        let client = admin(c)?;
        let rss = Api::<ReplicaSet>::namespaced(client.clone(), "default");
        let pods = Api::<Pod>::namespaced(client.clone(), "default");
        one_leader(&cms, None, WAIT).await?;

        // Background cascade: the pods go with their ReplicaSet.
        rss.create(replicaset("cascade", 3)).await?;
        wait_active(&pods, "cascade", 3).await?;
        rss.delete("cascade", &DeleteParams::default()).await?;
        wait_until("the cascade pods to go", WAIT, POLL, || async {
            let l = pods
                .list(&ListParams::default().labels("app=cascade"))
                .await?;
            Ok(l.items.is_empty().then_some(()))
        })
        .await?;

        // Orphan: the ReplicaSet goes, its pods stay, without owner.
        rss.create(replicaset("keep", 2)).await?;
        wait_active(&pods, "keep", 2).await?;
        let out = rss
            .delete("keep", &DeleteParams::default().orphan())
            .await?;
        anyhow::ensure!(!out.deleted, "an orphaning delete waits for the collector");
        wait_until("the orphaned ReplicaSet to go", WAIT, POLL, || async {
            Ok(rss.get_opt("keep").await?.is_none().then_some(()))
        })
        .await?;
        // Give a wrong collector every chance to act.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let kept = active_pods(&pods, "keep").await?;
        anyhow::ensure!(kept.len() == 2, "orphans keep running: {}", kept.len());
        for p in &kept {
            let refs = &p.metadata.as_ref().unwrap().owner_references;
            anyhow::ensure!(refs.is_empty(), "orphans have no owner: {refs:?}");
        }
        Ok(())
    })
    .await;
}

#[test]
fn bad_flags_are_refused_at_start() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin_path("controller-manager"))
            .args(args)
            .env_remove("KUBECONFIG")
            .output()
            .expect("run `cargo build --workspace --bins` first");
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (st, err) = run(&[
        "--leader-elect-lease-duration=10s",
        "--leader-elect-renew-deadline=10s",
    ]);
    assert!(!st.success(), "{err}");
    assert!(
        err.contains("leaseDuration must be greater than renewDeadline"),
        "{err}"
    );
    let (st, err) = run(&[
        "--leader-elect-renew-deadline=2s",
        "--leader-elect-retry-period=2s",
    ]);
    assert!(!st.success(), "{err}");
    assert!(
        err.contains("renewDeadline must be greater than retryPeriod*JitterFactor"),
        "{err}"
    );
    let (st, err) = run(&["--controllers=*,deployment"]);
    assert!(!st.success(), "{err}");
    assert!(
        err.contains("\"deployment\" is not in the list of known controllers"),
        "{err}"
    );
    let (st, err) = run(&["--leader-elect-resource-lock=endpoints"]);
    assert!(!st.success(), "{err}");
    assert!(err.contains("only \"leases\""), "{err}");
}

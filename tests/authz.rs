//! `--authorization-mode=Node,RBAC` (testkit's default, as kubeadm's): each identity the PKI
//! issues may do its job and nothing else, over the real apiservers and the lb. Nodes register
//! and touch only their own Node, Lease and pods (read, list with their field selector,
//! status, the deletion that confirms a graceful delete); the scheduler binds but may not
//! delete; the controller-manager may not write the scheduler's Lease; an identity of no role
//! may do nothing but ask the version. Denials are `Forbidden` with upstream's wording and are
//! counted in `/metrics`.
//!
//! Needs `cargo build --workspace --bins` first.

mod common;

use std::fmt::Debug;

use common::api::{pod as labeled_pod, run_api, start_api};
use kl_api::{Lease, LeaseSpec, Node, ObjectMeta, Pod};
use kl_client::{Api, ApiError, Client, DeleteParams, ListParams, Reason};
use testkit::{ApiCluster, ApiOpts};

fn client(c: &ApiCluster, file: &'static str, user: &str, group: Option<&str>) -> Client {
    let kubeconfig = c
        .kubeconfig_for_user(file, user, group)
        .expect("a kubeconfig");
    Client::from_kubeconfig(Some(&kubeconfig), None).expect("a client")
}

fn meta(name: &str, namespace: &str) -> Option<ObjectMeta> {
    Some(ObjectMeta {
        name: name.into(),
        namespace: namespace.into(),
        ..Default::default()
    })
}

fn node(name: &str) -> Node {
    Node {
        metadata: meta(name, ""),
        ..Default::default()
    }
}

fn pod(name: &str) -> Pod {
    labeled_pod(name, &[])
}

fn lease(namespace: &str, name: &str) -> Lease {
    Lease {
        metadata: meta(name, namespace),
        spec: Some(LeaseSpec {
            holder_identity: "me".into(),
            lease_duration_seconds: Some(15),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The call was refused as Forbidden, with `why` in the message.
fn forbidden<T: Debug>(r: Result<T, ApiError>, why: &str) -> anyhow::Result<()> {
    match r {
        Err(e) if e.reason() == Some(&Reason::Forbidden) && e.message().contains(why) => {
            eprintln!("refused as expected: {}", e.message());
            Ok(())
        }
        other => anyhow::bail!("expected Forbidden containing {why:?}, got {other:?}"),
    }
}

/// `apiserver_authorization_decisions_total{decision="denied"}` summed over the apiservers.
async fn denied(c: &ApiCluster) -> anyhow::Result<u64> {
    let mut total = 0;
    for i in 0..c.apiserver_count() {
        let (code, body) = c.apiserver_get_authenticated(i, "/metrics").await?;
        anyhow::ensure!(code == 200, "/metrics of apiserver {i}: {code}");
        total += body
            .lines()
            .find(|l| l.starts_with("apiserver_authorization_decisions_total{decision=\"denied\"}"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_rbac_lets_each_identity_do_its_job_and_nothing_else() {
    let mut c = start_api(ApiOpts::default()).await;
    run_api(&mut c, |c| async move {
        let admin = Client::from_kubeconfig(Some(c.kubeconfig()), None)?;
        let w1 = client(
            c,
            "authz-worker1",
            "system:node:worker1",
            Some("system:nodes"),
        );
        let w2 = client(
            c,
            "authz-worker2",
            "system:node:worker2",
            Some("system:nodes"),
        );
        let scheduler = client(c, "authz-scheduler", "system:kube-scheduler", None);
        let cm = client(c, "authz-cm", "system:kube-controller-manager", None);
        let intruder = client(c, "authz-intruder", "intruder", None);
        // A node name without the system:nodes group is no node.
        let posing = client(c, "authz-posing", "system:node:worker1", None);
        let denied_before = denied(c).await?;

        // Nodes register themselves, and only themselves.
        Api::<Node>::all(w1.clone()).create(node("worker1")).await?;
        Api::<Node>::all(w2.clone()).create(node("worker2")).await?;
        forbidden(
            Api::<Node>::all(w2.clone()).create(node("worker9")).await,
            "node \"worker2\" can only create and update its own Node",
        )?;
        forbidden(
            Api::<Node>::all(posing.clone()).get("worker1").await,
            "no role grants it",
        )?;
        let leases = |cl: &Client| Api::<Lease>::namespaced(cl.clone(), "kube-node-lease");
        leases(&w1)
            .create(lease("kube-node-lease", "worker1"))
            .await?;
        forbidden(
            leases(&w2)
                .create(lease("kube-node-lease", "worker1"))
                .await,
            "its own Lease kube-node-lease/worker2",
        )?;

        // A pod the scheduler binds to worker1: worker1's to read, list and report on.
        let pods = |cl: &Client| Api::<Pod>::namespaced(cl.clone(), "default");
        pods(&admin).create(pod("p1")).await?;
        pods(&scheduler).bind("p1", "worker1", None).await?;
        let mine = pods(&w1).get("p1").await?;
        pods(&w1).update_status(mine).await?;
        let listed = pods(&w1)
            .list(&ListParams::default().fields("spec.nodeName=worker1"))
            .await?;
        anyhow::ensure!(listed.items.len() == 1, "worker1 lists its pod: {listed:?}");

        // Not worker2's.
        forbidden(
            pods(&w2).get("p1").await,
            "node \"worker2\" can only get pods bound to it",
        )?;
        forbidden(
            pods(&w2).list(&ListParams::default()).await,
            "fieldSelector spec.nodeName=worker2",
        )?;
        forbidden(
            pods(&w2)
                .list(&ListParams::default().fields("spec.nodeName=worker1"))
                .await,
            "fieldSelector spec.nodeName=worker2",
        )?;
        forbidden(
            pods(&w2).delete("p1", &DeleteParams::default()).await,
            "can only delete pods bound to it",
        )?;
        forbidden(
            pods(&w1).create(pod("mirror")).await,
            "node \"worker1\" can only read",
        )?;

        // The scheduler binds but does not delete; the controller-manager keeps to its Lease.
        forbidden(
            pods(&scheduler)
                .delete("p1", &DeleteParams::default())
                .await,
            "the scheduler may only bind pods",
        )?;
        forbidden(
            Api::<Lease>::namespaced(cm.clone(), "kube-system")
                .create(lease("kube-system", "kube-scheduler"))
                .await,
            "its own Lease kube-system/kube-controller-manager",
        )?;
        Api::<Lease>::namespaced(cm.clone(), "kube-system")
            .create(lease("kube-system", "kube-controller-manager"))
            .await?;

        // Anyone else: nothing but the version.
        forbidden(
            pods(&intruder).list(&ListParams::default()).await,
            "no role grants it",
        )?;
        intruder.version().await?;

        // A graceful delete by the admin is confirmed by the pod's own node.
        pods(&admin).delete("p1", &DeleteParams::default()).await?;
        pods(&w1)
            .delete("p1", &DeleteParams::default().grace_period(0))
            .await?;
        anyhow::ensure!(
            pods(&admin).get_opt("p1").await?.is_none(),
            "worker1 confirmed p1's deletion"
        );

        let denied_after = denied(c).await?;
        anyhow::ensure!(
            denied_after >= denied_before + 11,
            "every denial is counted: {denied_before} before, {denied_after} after"
        );
        Ok(())
    })
    .await;
}

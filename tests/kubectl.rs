//! kubectl-lite end to end, through the lb, with the admin kubeconfig: apply (create, configure,
//! unchanged), get in every output format, describe, scale, cordon, delete, cluster-info,
//! version, watch, and kubectl's errors for bad input.
//!
//! Needs `cargo build --workspace --bins` first.

mod common;

use std::time::Duration;

use common::api::*;
use kl_api::{Node, NodeSpec, ObjectMeta};
use testkit::{ApiOpts, CmdOutput, EtcdOpts};
use tokio::io::{AsyncBufReadExt, BufReader};

const MANIFEST: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web-1
  labels: {app: web}
spec:
  containers:
  - name: main
    command: ["sleep", "3600"]
---
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: main
        command: ["sleep", "3600"]
"#;

fn ok(out: CmdOutput) -> anyhow::Result<String> {
    Ok(out.ok()?.stdout)
}

/// A failed run: exit code non-zero and stderr containing `msg`.
fn failed(out: CmdOutput, msg: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !out.success() && out.stderr.contains(msg),
        "expected a failure saying {msg:?}, got {out:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_through_the_lb() {
    // etcd's default timings, not the fast ones: this test writes 200 KiB pods, and openraft
    // gives one AppendEntries no longer than a heartbeat interval (50 ms with the fast ones),
    // which a debug build on a loaded 2-core machine can miss with entries that big.
    let mut c = start_api(ApiOpts {
        etcd: EtcdOpts::default(),
        ..ApiOpts::default()
    })
    .await;
    run_api(&mut c, |c| async move {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("app.yaml");
        std::fs::write(&file, MANIFEST)?;
        let f = file.to_str().unwrap_or_default();

        // apply: created, then unchanged, then configured.
        let out = ok(c.kubectl(&["apply", "-f", f]).await?)?;
        anyhow::ensure!(
            out.contains("pod/web-1 created") && out.contains("replicaset.apps/web created"),
            "{out}"
        );
        let out = ok(c.kubectl(&["apply", "-f", f]).await?)?;
        anyhow::ensure!(out.contains("pod/web-1 unchanged"), "{out}");
        let out = ok(c
            .kubectl_stdin(
                &["apply", "-f", "-"],
                &MANIFEST.replace("replicas: 2", "replicas: 3"),
            )
            .await?)?;
        anyhow::ensure!(out.contains("replicaset.apps/web configured"), "{out}");

        // get: tables, wide, name, yaml, json, selectors, all namespaces.
        let out = ok(c.kubectl(&["get", "pods"]).await?)?;
        let header: Vec<&str> = out
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        anyhow::ensure!(
            header == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
            "{out}"
        );
        anyhow::ensure!(out.contains("web-1") && out.contains("0/1"), "{out}");
        let out = ok(c.kubectl(&["get", "po", "-o", "wide"]).await?)?;
        anyhow::ensure!(out.contains("NODE") && out.contains("IP"), "{out}");
        let out = ok(c
            .kubectl(&["get", "pods", "-o", "name", "-l", "app=web"])
            .await?)?;
        anyhow::ensure!(out.trim() == "pod/web-1", "{out}");
        let out = ok(c.kubectl(&["get", "rs", "web"]).await?)?;
        let header: Vec<&str> = out
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        anyhow::ensure!(
            header == ["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
            "{out}"
        );
        anyhow::ensure!(
            out.lines()
                .nth(1)
                .unwrap_or_default()
                .split_whitespace()
                .nth(1)
                == Some("3"),
            "{out}"
        );
        let out = ok(c.kubectl(&["get", "pod", "web-1", "-o", "yaml"]).await?)?;
        anyhow::ensure!(
            out.contains("apiVersion: v1")
                && out.contains("kind: Pod")
                && out.contains("restartPolicy: Always"),
            "{out}"
        );
        let out = ok(c.kubectl(&["get", "rs/web", "-o", "json"]).await?)?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        anyhow::ensure!(
            v["spec"]["replicas"] == 3 && v["kind"] == "ReplicaSet",
            "{out}"
        );
        let out = ok(c.kubectl(&["get", "ns"]).await?)?;
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            anyhow::ensure!(out.contains(ns), "{out}");
        }
        let out = ok(c.kubectl(&["get", "pods", "-A"]).await?)?;
        anyhow::ensure!(out.starts_with("NAMESPACE"), "{out}");
        let out = ok(c
            .kubectl(&[
                "get",
                "pods",
                "--field-selector",
                "metadata.name=web-1",
                "--no-headers",
            ])
            .await?)?;
        anyhow::ensure!(
            out.trim_start().starts_with("web-1") && !out.contains("NAME"),
            "{out}"
        );
        let out = ok(c.kubectl(&["get", "leases", "-n", "kube-system"]).await?)?;
        anyhow::ensure!(
            out.contains("HOLDER") && out.contains("apiserver-"),
            "{out}"
        );
        let out = ok(c
            .kubectl(&["get", "leases", "-n", "kube-system", "-o", "yaml"])
            .await?)?;
        anyhow::ensure!(
            out.contains("holderIdentity:"),
            "Kubernetes field names: {out}"
        );

        // describe.
        let out = ok(c.kubectl(&["describe", "pod", "web-1"]).await?)?;
        anyhow::ensure!(
            out.contains("Name:") && out.contains("web-1") && out.contains("Namespace:"),
            "{out}"
        );

        // scale.
        let out = ok(c.kubectl(&["scale", "rs/web", "--replicas", "5"]).await?)?;
        anyhow::ensure!(out.contains("replicaset.apps/web scaled"), "{out}");
        let out = ok(c.kubectl(&["get", "rs", "web", "-o", "json"]).await?)?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        anyhow::ensure!(v["spec"]["replicas"] == 5, "{out}");

        // cordon / uncordon a node (registered here by hand; kubelets come later).
        let mut api = c.raw_client().await?;
        create(
            &mut api,
            Node {
                metadata: Some(ObjectMeta {
                    name: "worker-1".into(),
                    ..Default::default()
                }),
                spec: Some(NodeSpec::default()),
                ..Default::default()
            },
        )
        .await?;
        let out = ok(c.kubectl(&["cordon", "worker-1"]).await?)?;
        anyhow::ensure!(out.contains("node/worker-1 cordoned"), "{out}");
        let out = ok(c.kubectl(&["get", "nodes"]).await?)?;
        anyhow::ensure!(out.contains("SchedulingDisabled"), "{out}");
        let out = ok(c.kubectl(&["uncordon", "worker-1"]).await?)?;
        anyhow::ensure!(out.contains("node/worker-1 uncordoned"), "{out}");

        // get -w prints changes as they happen.
        let mut watch = c
            .kubectl_command(&["get", "pods", "-w", "--no-headers"])
            .spawn()?;
        let mut lines = BufReader::new(watch.stdout.take().expect("piped")).lines();
        ok(c.kubectl_stdin(
            &["create", "-f", "-"],
            &MANIFEST
                .split("---")
                .next()
                .unwrap_or_default()
                .replace("web-1", "watched"),
        )
        .await?)?;
        let printed = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(l) = lines.next_line().await? {
                if l.starts_with("watched") {
                    return anyhow::Ok(());
                }
            }
            anyhow::bail!("get -w ended without printing the new pod")
        })
        .await;
        anyhow::ensure!(
            matches!(printed, Ok(Ok(()))),
            "get -w did not print the new pod within 30 s: {printed:?}"
        );
        let _ = watch.kill().await;

        // delete, and kubectl's errors.
        let out = ok(c.kubectl(&["delete", "pod", "watched"]).await?)?;
        anyhow::ensure!(out.contains("pod \"watched\" deleted"), "{out}");
        failed(
            c.kubectl(&["get", "pod", "nope"]).await?,
            "Error from server (NotFound): pods \"nope\" not found",
        )?;
        failed(
            c.kubectl(&["create", "-f", f]).await?,
            "Error from server (AlreadyExists)",
        )?;
        failed(
            c.kubectl(&["get", "deployments"]).await?,
            "the server doesn't have a resource type \"deployments\"",
        )?;
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, "apiVersion: v1\nkind: Pod\nmetadata: {name: x\n")?;
        failed(
            c.kubectl(&["apply", "-f", bad.to_str().unwrap_or_default()])
                .await?,
            "bad.yaml",
        )?;
        std::fs::write(
            &bad,
            "apiVersion: v1\nkind: Deployment\nmetadata: {name: x}\n",
        )?;
        failed(
            c.kubectl(&["apply", "-f", bad.to_str().unwrap_or_default()])
                .await?,
            "Deployment",
        )?;
        std::fs::write(
            &bad,
            MANIFEST
                .replace("replicas: 2", "replicas: -1")
                .replace("name: web-1", "name: other"),
        )?;
        failed(
            c.kubectl(&["apply", "-f", bad.to_str().unwrap_or_default()])
                .await?,
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
        )?;
        let out = c.kubectl(&["get", "pods", "-n", "kube-public"]).await?;
        anyhow::ensure!(
            out.success()
                && out
                    .stderr
                    .contains("No resources found in kube-public namespace."),
            "{out:?}"
        );

        // A user without a client certificate is refused.
        let anon = dir.path().join("anon.kubeconfig");
        let mut cfg = kl_client::Kubeconfig::load(c.kubeconfig())?;
        for u in &mut cfg.users {
            u.user = Default::default();
        }
        cfg.write(&anon)?;
        failed(
            c.kubectl_with(&anon, &["get", "pods"], None).await?,
            "Unauthorized",
        )?;

        // delete -l, -f.
        let out = ok(c.kubectl(&["delete", "-f", f]).await?)?;
        anyhow::ensure!(out.contains("replicaset.apps \"web\" deleted"), "{out}");

        // A list bigger than gRPC's default 4 MiB message (30 pods of 200 KiB) comes back
        // whole: the apiserver reads etcd in chunks and the client accepts big answers.
        let ns = kl_api::Namespace {
            metadata: Some(ObjectMeta {
                name: "big".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        create(&mut api, ns).await?;
        for i in 0..30 {
            let mut p = pod(&format!("big-{i}"), &[]);
            let m = p.metadata.get_or_insert_with(Default::default);
            m.namespace = "big".into();
            m.annotations.insert("blob".into(), "x".repeat(200 << 10));
            create(&mut api, p).await?;
        }
        let out = ok(c
            .kubectl(&["get", "pods", "-n", "big", "-o", "name"])
            .await?)?;
        anyhow::ensure!(
            out.lines().count() == 30,
            "{} pods listed",
            out.lines().count()
        );

        // version and cluster-info.
        let out = ok(c.kubectl(&["version"]).await?)?;
        anyhow::ensure!(
            out.contains("Client Version") && out.contains("Server Version"),
            "{out}"
        );
        let out = ok(c.kubectl(&["cluster-info"]).await?)?;
        anyhow::ensure!(
            out.contains(&format!(
                "Kubernetes control plane is running at {}",
                c.lb_url()
            )),
            "{out}"
        );
        for i in 0..c.apiserver_count() {
            anyhow::ensure!(
                out.contains(&format!(":{}", c.apiserver_port(i))),
                "apiserver {i} listed: {out}"
            );
        }
        for i in 0..c.etcd.len() {
            anyhow::ensure!(
                out.contains(&c.etcd.client_url(i)),
                "member {i} listed: {out}"
            );
        }
        anyhow::ensure!(out.to_lowercase().contains("leader"), "{out}");
        Ok(())
    })
    .await;
}

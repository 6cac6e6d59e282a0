//! The apiserver through the lb, on a 3-member store (etcd-lite, or real etcd 3.4 with
//! `KL_ETCD_BIN=/usr/bin/etcd`, which scripts/test also runs): every verb, conflicts, graceful
//! deletion, finalizers, watches (resume, bookmarks, Expired), authentication, probes, metrics,
//! overload and shutdown. The raw gRPC client is used so that each exact status is visible.
//!
//! Needs `cargo build --workspace --bins` first.

mod common;

use std::time::Duration;

use common::api::*;
use futures::StreamExt;
use kl_api::{
    BindRequest, DeleteRequest, LabelSelector, ListRequest, Namespace, ObjectMeta, Pod, PodStatus,
    PodTemplateSpec, Preconditions, ReplicaSet, ReplicaSetSpec, Resource, VersionRequest,
    WatchEvent, WatchRequest,
};
use testkit::{api::raw_api_client, wait_until, ApiOpts};
use tonic::Code;

fn list_req(label: &str, field: &str) -> ListRequest {
    ListRequest {
        resource: "pods".into(),
        namespace: "default".into(),
        label_selector: label.into(),
        field_selector: field.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_verb_with_conflicts_defaults_and_validation() {
    let mut c = start_api(ApiOpts::default()).await;
    run_api(&mut c, |c| async move {
        let mut api = c.raw_client().await?;

        // Create: defaults filled in, identity assigned.
        let web1 = create(&mut api, pod("web-1", &[("app", "web")])).await?;
        let m = meta(&web1);
        anyhow::ensure!(m.namespace == "default", "namespace defaulted: {m:?}");
        anyhow::ensure!(!m.uid.is_empty() && !m.resource_version.is_empty(), "{m:?}");
        anyhow::ensure!(!m.creation_timestamp.is_empty(), "{m:?}");
        let spec = web1.spec.clone().unwrap_or_default();
        anyhow::ensure!(spec.restart_policy == "Always", "{spec:?}");
        anyhow::ensure!(spec.termination_grace_period_seconds == Some(30), "{spec:?}");

        expect_err(
            create(&mut api, pod("web-1", &[])).await,
            Code::AlreadyExists,
            "AlreadyExists",
            "pods \"web-1\" already exists",
        )?;
        let got: Pod = get(&mut api, "default", "web-1").await?;
        anyhow::ensure!(meta(&got).uid == m.uid, "get returns the created pod");
        expect_err(
            get::<Pod>(&mut api, "default", "nope").await,
            Code::NotFound,
            "NotFound",
            "pods \"nope\" not found",
        )?;

        // generateName.
        let mut g = pod("", &[("app", "gen")]);
        g.meta_mut().generate_name = "gen-".into();
        let g = create(&mut api, g).await?;
        let gname = meta(&g).name;
        anyhow::ensure!(
            gname.starts_with("gen-") && gname.len() == 9,
            "generated name {gname:?}"
        );

        // A namespace must exist first.
        let mut stray = pod("stray", &[]);
        stray.meta_mut().namespace = "nowhere".into();
        expect_err(
            create(&mut api, stray).await,
            Code::NotFound,
            "NotFound",
            "namespaces \"nowhere\" not found",
        )?;
        create(
            &mut api,
            Namespace {
                metadata: Some(ObjectMeta {
                    name: "team-a".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await?;
        let mut a = pod("in-a", &[("app", "web")]);
        a.meta_mut().namespace = "team-a".into();
        create(&mut api, a).await?;

        // List: label selectors (set-based too), field selectors, namespaces, pages.
        create(&mut api, pod("web-2", &[("app", "web"), ("tier", "front")])).await?;
        create(&mut api, pod("db-1", &[("app", "db")])).await?;
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v
        };
        let l = list(&mut api, list_req("app=web", "")).await?;
        anyhow::ensure!(sorted(names(&l)) == ["web-1", "web-2"], "{:?}", names(&l));
        anyhow::ensure!(!l.resource_version.is_empty(), "a list carries its revision");
        let l = list(&mut api, list_req("app in (web,db),tier!=front", "")).await?;
        anyhow::ensure!(sorted(names(&l)) == ["db-1", "web-1"], "{:?}", names(&l));
        let l = list(&mut api, list_req("tier", "")).await?;
        anyhow::ensure!(names(&l) == ["web-2"], "{:?}", names(&l));
        let l = list(&mut api, list_req("app,!tier,app notin (gen)", "")).await?;
        anyhow::ensure!(sorted(names(&l)) == ["db-1", "web-1"], "{:?}", names(&l));
        let l = list(&mut api, list_req("", "metadata.name=db-1")).await?;
        anyhow::ensure!(names(&l) == ["db-1"], "{:?}", names(&l));
        let mut all_ns = list_req("app=web", "");
        all_ns.namespace = String::new();
        let l = list(&mut api, all_ns).await?;
        anyhow::ensure!(l.items.len() == 3, "web pods in every namespace: {:?}", names(&l));
        let s = expect_err(
            list(&mut api, list_req("", "spec.bogus=1")).await,
            Code::InvalidArgument,
            "BadRequest",
            "spec.bogus",
        )?;
        drop(s);
        expect_err(
            list(&mut api, list_req("app in (web", "")).await,
            Code::InvalidArgument,
            "BadRequest",
            "",
        )?;
        let mut seen = Vec::new();
        let mut req = list_req("", "");
        req.limit = 2;
        for page in 0.. {
            anyhow::ensure!(page < 10, "paging does not end");
            let l = list(&mut api, req.clone()).await?;
            anyhow::ensure!(l.items.len() <= 2, "a page holds at most limit items");
            seen.extend(names(&l));
            if l.r#continue.is_empty() {
                break;
            }
            req.r#continue = l.r#continue;
        }
        anyhow::ensure!(
            sorted(seen.clone()) == sorted(vec![
                "db-1".into(),
                gname.clone(),
                "web-1".into(),
                "web-2".into()
            ]),
            "pages cover every pod exactly once: {seen:?}"
        );

        // Update: optimistic concurrency.
        let mut stale = got.clone();
        let mut fresh = got.clone();
        fresh
            .meta_mut()
            .labels
            .insert("version".into(), "2".into());
        let updated = update(&mut api, fresh).await?;
        anyhow::ensure!(
            meta(&updated).resource_version != m.resource_version,
            "an update moves resourceVersion"
        );
        stale.meta_mut().labels.insert("version".into(), "3".into());
        expect_err(
            update(&mut api, stale).await,
            Code::Aborted,
            "Conflict",
            "Operation cannot be fulfilled on pods \"web-1\": the object has been modified",
        )?;

        // Update ignores status; UpdateStatus changes only status.
        let mut with_status = updated.clone();
        with_status.status = Some(PodStatus {
            phase: "Running".into(),
            ..Default::default()
        });
        let after = update(&mut api, with_status.clone()).await?;
        anyhow::ensure!(
            after.status.clone().unwrap_or_default().phase != "Running",
            "Update must not change status: {:?}",
            after.status
        );
        let mut with_status = after.clone();
        with_status.status = Some(PodStatus {
            phase: "Running".into(),
            ..Default::default()
        });
        with_status.meta_mut().labels.insert("ignored".into(), "yes".into());
        let after = update_status(&mut api, with_status).await?;
        anyhow::ensure!(after.status.clone().unwrap_or_default().phase == "Running");
        anyhow::ensure!(
            !meta(&after).labels.contains_key("ignored"),
            "UpdateStatus must not change metadata"
        );
        let l = list(&mut api, list_req("", "status.phase=Running")).await?;
        anyhow::ensure!(names(&l) == ["web-1"], "{:?}", names(&l));
        let l = list(&mut api, list_req("", "status.phase!=Running")).await?;
        anyhow::ensure!(!names(&l).contains(&"web-1".to_string()), "{:?}", names(&l));

        // Validation: every bad field named, in Kubernetes' words.
        let rs = ReplicaSet {
            metadata: Some(ObjectMeta {
                name: "bad".into(),
                ..Default::default()
            }),
            spec: Some(ReplicaSetSpec {
                replicas: Some(-1),
                selector: Some(LabelSelector {
                    match_labels: [("app".to_string(), "x".to_string())].into(),
                    ..Default::default()
                }),
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: [("app".to_string(), "y".to_string())].into(),
                        ..Default::default()
                    }),
                    spec: pod("", &[]).spec,
                }),
            }),
            ..Default::default()
        };
        let s = expect_err(
            create(&mut api, rs).await,
            Code::InvalidArgument,
            "Invalid",
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
        )?;
        anyhow::ensure!(
            s.message().contains("spec.template.metadata.labels"),
            "the selector/template mismatch is named too: {}",
            s.message()
        );
        let mut bad = pod("Bad_Name", &[]);
        bad.spec.as_mut().unwrap().containers[0].command.clear();
        let s = expect_err(
            create(&mut api, bad).await,
            Code::InvalidArgument,
            "Invalid",
            "metadata.name",
        )?;
        anyhow::ensure!(
            s.message().contains("spec.containers[0].command"),
            "{}",
            s.message()
        );

        // Bind: only while unset.
        let bind = |node: &str| BindRequest {
            namespace: "default".into(),
            name: "web-1".into(),
            node_name: node.into(),
            ..Default::default()
        };
        api.bind(bind("node-a")).await?;
        let b: Pod = get(&mut api, "default", "web-1").await?;
        anyhow::ensure!(b.spec.clone().unwrap_or_default().node_name == "node-a");
        expect_err(
            api.bind(bind("node-b")).await,
            Code::Aborted,
            "Conflict",
            "already assigned to node",
        )?;

        // Delete: preconditions, then graceful deletion of a bound pod.
        let mut pre = DeleteRequest {
            resource: "pods".into(),
            namespace: "default".into(),
            name: "web-1".into(),
            preconditions: Some(Preconditions {
                uid: "not-the-uid".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        expect_err(api.delete(pre.clone()).await, Code::Aborted, "Conflict", "")?;
        pre.preconditions = None;
        let d = api.delete(pre).await?.into_inner();
        anyhow::ensure!(!d.deleted, "a bound pod is deleted gracefully");
        let b: Pod = get(&mut api, "default", "web-1").await?;
        anyhow::ensure!(
            !meta(&b).deletion_timestamp.is_empty()
                && meta(&b).deletion_grace_period_seconds == Some(30),
            "deletionTimestamp and grace set: {:?}",
            b.metadata
        );
        let d = delete(&mut api, "pods", "default", "web-1", Some(0)).await?;
        anyhow::ensure!(d.deleted, "grace 0 (the kubelet's confirmation) removes it");
        expect_err(
            get::<Pod>(&mut api, "default", "web-1").await,
            Code::NotFound,
            "NotFound",
            "",
        )?;
        // An unbound pod goes at once.
        let d = delete(&mut api, "pods", "default", "db-1", None).await?;
        anyhow::ensure!(d.deleted, "an unbound pod is removed at once");

        // Finalizers hold an object until they are removed.
        let mut held = pod("held", &[]);
        held.meta_mut().finalizers = vec!["example.com/hold".into()];
        create(&mut api, held).await?;
        let d = delete(&mut api, "pods", "default", "held", None).await?;
        anyhow::ensure!(!d.deleted, "finalizers keep the object");
        let mut h: Pod = get(&mut api, "default", "held").await?;
        anyhow::ensure!(!meta(&h).deletion_timestamp.is_empty());
        h.meta_mut().finalizers.clear();
        let _ = update(&mut api, h).await;
        wait_until(
            "the pod to go once its last finalizer is removed",
            Duration::from_secs(20),
            Duration::from_millis(100),
            || {
                let mut api = api.clone();
                async move {
                    Ok(matches!(
                        get::<Pod>(&mut api, "default", "held").await,
                        Err(s) if s.code() == Code::NotFound
                    )
                    .then_some(()))
                }
            },
        )
        .await?;

        // System namespaces cannot be deleted.
        expect_err(
            delete(&mut api, "namespaces", "", "kube-system", None).await,
            Code::PermissionDenied,
            "Forbidden",
            "",
        )?;
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            get::<Namespace>(&mut api, "", ns).await?;
        }
        // Unknown resources are refused by name.
        let s = api
            .get(kl_api::GetRequest {
                resource: "deployments".into(),
                namespace: "default".into(),
                name: "x".into(),
            })
            .await;
        anyhow::ensure!(
            matches!(&s, Err(st) if st.code() == Code::NotFound || st.code() == Code::InvalidArgument),
            "{s:?}"
        );

        let v = api.version(VersionRequest {}).await?.into_inner();
        anyhow::ensure!(v.git_version.starts_with('v'), "{v:?}");
        Ok(())
    })
    .await;
}

/// The next non-bookmark event of a watch stream, bounded.
async fn next_event(s: &mut tonic::Streaming<WatchEvent>) -> anyhow::Result<(String, String)> {
    loop {
        let e = tokio::time::timeout(Duration::from_secs(20), s.next())
            .await
            .map_err(|_| anyhow::anyhow!("no watch event within 20 s"))?
            .ok_or_else(|| anyhow::anyhow!("watch ended"))??;
        if e.r#type == "BOOKMARK" {
            continue;
        }
        let name = e
            .object
            .and_then(kl_api::Object::from_typed)
            .map(|o| o.name().to_string())
            .unwrap_or_default();
        return Ok((e.r#type, name));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_resume_filter_bookmark_and_expire() {
    let mut c = start_api(ApiOpts {
        apiserver_args: vec!["--default-watch-cache-size=20".into()],
        ..Default::default()
    })
    .await;
    run_api(&mut c, |c| async move {
        let mut api = c.raw_client().await?;
        create(&mut api, pod("before", &[("app", "web")])).await?;
        let l = list(&mut api, list_req("", "")).await?;
        let rv = l.resource_version.clone();

        // From "": the current state first, then changes.
        let mut from_now = api
            .watch(WatchRequest {
                resource: "pods".into(),
                namespace: "default".into(),
                ..Default::default()
            })
            .await?
            .into_inner();
        anyhow::ensure!(next_event(&mut from_now).await? == ("ADDED".into(), "before".into()));

        // From a version: only what came after it; filtered by labels.
        let mut from_rv = api
            .watch(WatchRequest {
                resource: "pods".into(),
                namespace: "default".into(),
                label_selector: "app=web".into(),
                resource_version: rv.clone(),
                allow_watch_bookmarks: true,
                ..Default::default()
            })
            .await?
            .into_inner();
        create(&mut api, pod("other", &[("app", "db")])).await?;
        let p = create(&mut api, pod("after", &[("app", "web")])).await?;
        anyhow::ensure!(next_event(&mut from_rv).await? == ("ADDED".into(), "after".into()));
        let mut p2 = p.clone();
        p2.meta_mut().annotations.insert("a".into(), "b".into());
        let p2 = update(&mut api, p2).await?;
        anyhow::ensure!(next_event(&mut from_rv).await? == ("MODIFIED".into(), "after".into()));
        // Leaving the selector is a DELETED for this watcher.
        let mut p3 = p2.clone();
        p3.meta_mut().labels.insert("app".into(), "moved".into());
        update(&mut api, p3).await?;
        anyhow::ensure!(next_event(&mut from_rv).await? == ("DELETED".into(), "after".into()));
        delete(&mut api, "pods", "default", "before", None).await?;
        anyhow::ensure!(next_event(&mut from_rv).await? == ("DELETED".into(), "before".into()));
        // The unfiltered watch saw all of it, in order.
        for want in [
            ("ADDED", "other"),
            ("ADDED", "after"),
            ("MODIFIED", "after"),
            ("MODIFIED", "after"),
            ("DELETED", "before"),
        ] {
            let got = next_event(&mut from_now).await?;
            anyhow::ensure!(got == (want.0.into(), want.1.into()), "{got:?} != {want:?}");
        }

        // Bookmarks arrive while nothing happens, carrying a resourceVersion.
        let bookmark = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(e) = from_rv.next().await {
                let e = e?;
                if e.r#type == "BOOKMARK" {
                    return anyhow::Ok(e);
                }
            }
            anyhow::bail!("watch ended before a bookmark")
        })
        .await
        .map_err(|_| anyhow::anyhow!("no BOOKMARK within 60 s"))??;
        let brv = bookmark
            .object
            .and_then(kl_api::Object::from_typed)
            .and_then(|o| o.metadata().map(|m| m.resource_version.clone()))
            .unwrap_or_default();
        anyhow::ensure!(!brv.is_empty(), "a bookmark carries its resourceVersion");

        // Resume from the last version seen: nothing missed, nothing repeated.
        create(&mut api, pod("later", &[("app", "web")])).await?;
        let mut resumed = api
            .watch(WatchRequest {
                resource: "pods".into(),
                namespace: "default".into(),
                label_selector: "app=web".into(),
                resource_version: brv,
                ..Default::default()
            })
            .await?
            .into_inner();
        anyhow::ensure!(next_event(&mut resumed).await? == ("ADDED".into(), "later".into()));

        // A version older than the watch cache holds, and compacted in etcd: Expired.
        for i in 0..40 {
            create(&mut api, pod(&format!("filler-{i}"), &[])).await?;
        }
        let latest: i64 = list(&mut api, list_req("", ""))
            .await?
            .resource_version
            .parse()?;
        let mut etcd = c.etcd.client().await?;
        etcd.compact(latest, None).await?;
        let mut old = api
            .watch(WatchRequest {
                resource: "pods".into(),
                namespace: "default".into(),
                resource_version: rv,
                ..Default::default()
            })
            .await;
        let status = match &mut old {
            Err(s) => s.clone(),
            Ok(stream) => {
                match tokio::time::timeout(Duration::from_secs(20), stream.get_mut().next()).await {
                    Ok(Some(Err(s))) => s,
                    other => anyhow::bail!("expected Expired, got {other:?}"),
                }
            }
        };
        anyhow::ensure!(
            status.code() == Code::OutOfRange
                && reason(&status) == "Expired"
                && status.message().contains("too old resource version"),
            "{status:?}"
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_probes_metrics_oversize_and_shutdown() {
    let mut c = start_api(ApiOpts {
        apiserver_args: vec!["--shutdown-delay-duration=3s".into()],
        ..Default::default()
    })
    .await;
    run_api(&mut c, |c| async move {
        // No client certificate: Unauthorized.
        let mut anon = raw_api_client(c.ca_cert(), None, &c.lb_url()).await?;
        expect_err(
            anon.version(VersionRequest {}).await,
            Code::Unauthenticated,
            "Unauthorized",
            "",
        )?;
        // A certificate from another CA: refused at the handshake. So is the store's own
        // administrator (system:masters too, but signed by the etcd CA, which the apiserver's
        // --client-ca-file does not name).
        let other = tempfile::tempdir()?;
        kl_pki::generate(&kl_pki::PkiSpec::new(), other.path())?;
        let pki = c.etcd.pki();
        for (what, cert, key) in [
            (
                "another cluster's admin",
                kl_pki::paths::ADMIN.cert_in(other.path()),
                kl_pki::paths::ADMIN.key_in(other.path()),
            ),
            (
                "the etcd admin",
                pki.etcd_admin_cert.clone(),
                pki.etcd_admin_key.clone(),
            ),
        ] {
            let refused =
                raw_api_client(c.ca_cert(), Some((&cert, &key)), &c.apiserver_url(0)).await;
            if let Ok(mut f) = refused {
                let r = f.version(VersionRequest {}).await;
                anyhow::ensure!(r.is_err(), "{what}'s certificate must be refused: {r:?}");
            }
        }

        // The gRPC health service answers SERVING for the API.
        let pki = c.etcd.pki();
        let channel = testkit::api::api_channel(
            c.ca_cert(),
            Some((&pki.admin_cert, &pki.admin_key)),
            &c.apiserver_url(0),
        )
        .await?;
        let health = tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest {
                service: "kubelite.v1.Api".into(),
            })
            .await?
            .into_inner();
        anyhow::ensure!(health.status == 1, "SERVING: {health:?}");

        // Probes are open; metrics need a certificate and carry the upstream names.
        anyhow::ensure!(c.apiserver_get(0, "/livez").await?.0 == 200);
        anyhow::ensure!(c.apiserver_get(0, "/readyz").await?.0 == 200);
        let (code, _) = c.apiserver_get(0, "/metrics").await?;
        anyhow::ensure!(code == 401 || code == 403, "anonymous /metrics: {code}");
        let mut api = c.raw_client_for(0).await?;
        create(&mut api, pod("m", &[])).await?;
        let (code, body) = c.apiserver_get_authenticated(0, "/metrics").await?;
        anyhow::ensure!(code == 200, "/metrics: {code}");
        for name in [
            "apiserver_request_total",
            "apiserver_request_duration_seconds",
            "apiserver_current_inflight_requests",
            "etcd_request_duration_seconds",
        ] {
            anyhow::ensure!(body.contains(name), "/metrics lacks {name}");
        }

        // Oversize: refused with a clear error; the server stays up.
        let mut big = pod("big", &[]);
        big.meta_mut()
            .annotations
            .insert("blob".into(), "x".repeat(4 << 20));
        let r = create(&mut api, big).await;
        let s = r.expect_err("a 4 MiB object must be refused");
        anyhow::ensure!(
            matches!(
                s.code(),
                Code::ResourceExhausted | Code::InvalidArgument | Code::OutOfRange
            ),
            "{s:?}"
        );
        get::<Pod>(&mut api, "default", "m").await?;

        // A stale resourceVersion on update: Conflict (the message is checked elsewhere).
        let p: Pod = get(&mut api, "default", "m").await?;
        let mut stale = p.clone();
        stale.meta_mut().resource_version = "1".into();
        expect_err(update(&mut api, stale).await, Code::Aborted, "Conflict", "")?;

        // SIGTERM: not ready at once, still serving during the delay, then a clean exit.
        let mut direct = c.raw_client_for(1).await?;
        c.signal_apiserver(1, "TERM")?;
        wait_until(
            "/readyz to fail after SIGTERM",
            Duration::from_secs(2),
            Duration::from_millis(50),
            || async { Ok((c.apiserver_get(1, "/readyz").await?.0 != 200).then_some(())) },
        )
        .await?;
        anyhow::ensure!(
            c.apiserver_get(1, "/livez").await?.0 == 200,
            "alive while draining"
        );
        direct.version(VersionRequest {}).await?;
        let code = c.wait_apiserver_exit(1, Duration::from_secs(30));
        anyhow::ensure!(code == Some(Some(0)), "exit after the delay: {code:?}");
        // Through the lb, the other apiserver serves.
        let mut via_lb = c.raw_client().await?;
        get::<Pod>(&mut via_lb, "default", "m").await?;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_refused_with_a_retry_hint() {
    let mut c = start_api(ApiOpts {
        apiservers: 1,
        apiserver_args: vec!["--max-requests-inflight=1".into()],
        ..Default::default()
    })
    .await;
    run_api(&mut c, |c| async move {
        let mut api = c.raw_client_for(0).await?;
        for i in 0..50 {
            create(&mut api, pod(&format!("p{i}"), &[])).await?;
        }
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..64 {
            let mut api = api.clone();
            tasks.spawn(async move { list(&mut api, list_req("", "")).await });
        }
        let (mut ok, mut refused) = (0, 0);
        while let Some(r) = tasks.join_next().await {
            match r? {
                Ok(_) => ok += 1,
                Err(s) if s.code() == Code::ResourceExhausted => {
                    anyhow::ensure!(reason(&s) == "TooManyRequests", "{s:?}");
                    anyhow::ensure!(s.metadata().get("retry-after").is_some(), "{s:?}");
                    refused += 1;
                }
                Err(s) => anyhow::bail!("unexpected {s:?}"),
            }
        }
        anyhow::ensure!(ok > 0 && refused > 0, "ok {ok}, refused {refused}");
        // The load gone, it recovers: one call at a time, none is refused.
        for _ in 0..10 {
            list(&mut api, list_req("", "")).await?;
        }
        // Watches are long-running and do not count against the limit.
        let _w1 = api
            .watch(WatchRequest {
                resource: "pods".into(),
                ..Default::default()
            })
            .await?;
        list(&mut api, list_req("", "")).await?;
        Ok(())
    })
    .await;
}

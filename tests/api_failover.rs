//! The front door under faults: store members (a follower, then the leader) killed behind
//! running apiservers; the store's quorum lost (a write fails with etcd's reason before the
//! client's deadline, and nothing acknowledged is lost); an apiserver killed while clients list
//! and watch through the lb.
//! Also run against real etcd 3.4 (`KL_ETCD_BIN=/usr/bin/etcd`, scripts/test does).
//!
//! Needs `cargo build --workspace --bins` first.

mod common;

use std::{collections::BTreeMap, time::Duration};

use common::api::*;
use futures::StreamExt;
use kl_api::{CreateRequest, ListRequest, Object, Pod, VersionRequest, WatchRequest};
use testkit::{wait_until, ApiOpts};
use tonic::Code;

/// Creates, reads and lists a pod through `api`; every call must succeed (the apiserver rides
/// out store failures itself).
async fn exercise(api: &mut Api, name: &str) -> anyhow::Result<()> {
    let p = create(api, pod(name, &[("step", name)]))
        .await
        .map_err(|s| {
            anyhow::anyhow!(
                "create {name}: {:?} ({}) {}",
                s.code(),
                reason(&s),
                s.message()
            )
        })?;
    let got: Pod = get(api, "default", name)
        .await
        .map_err(|s| anyhow::anyhow!("get {name}: {s:?}"))?;
    anyhow::ensure!(meta(&got).uid == meta(&p).uid);
    let l = list(
        api,
        ListRequest {
            resource: "pods".into(),
            namespace: "default".into(),
            label_selector: format!("step={name}"),
            ..Default::default()
        },
    )
    .await
    .map_err(|s| anyhow::anyhow!("list {name}: {s:?}"))?;
    anyhow::ensure!(names(&l) == [name], "{:?}", names(&l));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_member_and_store_leader_killed_behind_running_apiservers() {
    let mut c = start_api(ApiOpts::default()).await;
    run_api(&mut c, |c| async move {
        let mut api = c.raw_client().await?;
        exercise(&mut api, "before").await?;

        // A follower dies: nothing changes for clients.
        let leader = c.etcd.wait_for_leader(Duration::from_secs(30)).await?;
        let follower = (leader + 1) % c.etcd.len();
        c.etcd.kill9(follower);
        for i in 0..10 {
            exercise(&mut api, &format!("no-follower-{i}")).await?;
        }
        c.etcd.restart(follower)?;
        c.etcd.wait_for_leader(Duration::from_secs(30)).await?;

        // The leader dies: calls keep succeeding across the election.
        let leader = c.etcd.wait_for_leader(Duration::from_secs(30)).await?;
        c.etcd.kill9(leader);
        for i in 0..10 {
            exercise(&mut api, &format!("no-leader-{i}")).await?;
        }
        // Watches served by the apiservers still deliver.
        let mut w = api
            .watch(WatchRequest {
                resource: "pods".into(),
                namespace: "default".into(),
                label_selector: "step=after".into(),
                resource_version: "0".into(),
                ..Default::default()
            })
            .await?
            .into_inner();
        exercise(&mut api, "after").await?;
        let e = tokio::time::timeout(Duration::from_secs(30), w.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("watch ended"))??;
        anyhow::ensure!(e.r#type == "ADDED", "{e:?}");
        c.etcd.restart(leader)?;
        c.etcd.wait_for_leader(Duration::from_secs(30)).await?;
        exercise(&mut api, "restored").await?;
        Ok(())
    })
    .await;
}

/// Two of three members down: a write with a 3 s deadline (`grpc-timeout`, as kubectl-lite's
/// `--request-timeout` sends it) is answered by the apiserver itself, naming every member's
/// failure, instead of running into the client's deadline; once the members are back, what
/// was acknowledged before is there and writes succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_loss_fails_writes_with_etcds_reason_before_the_clients_deadline() {
    let mut c = start_api(ApiOpts::default()).await;
    run_api(&mut c, |c| async move {
        let mut api = c.raw_client().await?;
        exercise(&mut api, "acked").await?;

        let leader = c.etcd.wait_for_leader(Duration::from_secs(30)).await?;
        let follower = (leader + 1) % c.etcd.len();
        c.etcd.kill9(leader);
        c.etcd.kill9(follower);
        let mut req = tonic::Request::new(CreateRequest {
            object: typed(pod("no-quorum", &[])),
            fencing: None,
        });
        req.set_timeout(Duration::from_secs(3));
        let answer = tokio::time::timeout(Duration::from_secs(30), api.create(req))
            .await
            .map_err(|_| anyhow::anyhow!("a write without quorum hung"))?;
        let status = match answer {
            Ok(r) => anyhow::bail!("a write without quorum succeeded: {:?}", r.into_inner()),
            Err(s) => s,
        };
        anyhow::ensure!(
            matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded)
                && status
                    .message()
                    .contains("no etcd member could serve the request"),
            "the apiserver's own answer naming etcd's failure, got {:?} ({}) {}",
            status.code(),
            reason(&status),
            status.message()
        );

        c.etcd.restart(leader)?;
        c.etcd.restart(follower)?;
        c.etcd.wait_for_leader(Duration::from_secs(30)).await?;
        let acked: Pod = wait_until(
            "the pod acknowledged before the quorum loss",
            Duration::from_secs(60),
            Duration::from_millis(500),
            || {
                let mut api = api.clone();
                async move { Ok(get::<Pod>(&mut api, "default", "acked").await.ok()) }
            },
        )
        .await?;
        anyhow::ensure!(meta(&acked).name == "acked");
        wait_until(
            "writes to succeed again",
            Duration::from_secs(60),
            Duration::from_millis(500),
            || {
                let mut api = api.clone();
                async move { Ok(exercise(&mut api, "restored").await.ok()) }
            },
        )
        .await?;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_killed_while_clients_list_and_watch_through_the_lb() {
    let mut c = start_api(ApiOpts::default()).await;
    run_api(&mut c, |c| async move {
        // The watcher's connection: find which apiserver it landed on.
        let mut watcher = c.raw_client().await?;
        let served_by = watcher
            .version(VersionRequest {})
            .await?
            .into_inner()
            .server;
        let victim = (0..c.apiserver_count())
            .find(|&i| served_by.ends_with(&format!(":{}", c.apiserver_port(i))))
            .ok_or_else(|| anyhow::anyhow!("which apiserver is {served_by:?}?"))?;
        let start_rv = list(
            &mut watcher,
            ListRequest {
                resource: "pods".into(),
                namespace: "default".into(),
                ..Default::default()
            },
        )
        .await?
        .resource_version;

        // The watch loop, as an informer runs it: on any error, re-watch from the last
        // resourceVersion seen (through the lb, which now picks a live apiserver).
        let watch = tokio::spawn(async move {
            let mut seen: BTreeMap<String, usize> = BTreeMap::new();
            let mut rv = start_rv;
            let mut restarts = 0;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            while seen.len() < 40 {
                anyhow::ensure!(tokio::time::Instant::now() < deadline, "watch saw {seen:?}");
                let stream = watcher
                    .watch(WatchRequest {
                        resource: "pods".into(),
                        namespace: "default".into(),
                        resource_version: rv.clone(),
                        allow_watch_bookmarks: true,
                        ..Default::default()
                    })
                    .await;
                let mut stream = match stream {
                    Ok(s) => s.into_inner(),
                    Err(_) => {
                        restarts += 1;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                loop {
                    match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
                        Ok(Some(Ok(e))) => {
                            let o = e.object.and_then(Object::from_typed);
                            if let Some(m) = o.as_ref().and_then(|o| o.metadata()) {
                                rv = m.resource_version.clone();
                            }
                            if e.r#type == "ADDED" {
                                let name = o.map(|o| o.name().to_string()).unwrap_or_default();
                                *seen.entry(name).or_default() += 1;
                            }
                        }
                        // Ended, failed or quiet: re-watch.
                        _ => {
                            restarts += 1;
                            break;
                        }
                    }
                    if seen.len() >= 40 {
                        break;
                    }
                }
            }
            anyhow::Ok((seen, restarts))
        });

        // The writer: 40 pods, one at a time, through the lb; a create whose answer was lost
        // with the apiserver is retried, and AlreadyExists then means it had been applied.
        let mut writer = c.raw_client().await?;
        let mut reads_ok = 0;
        for i in 0..40 {
            if i == 15 {
                c.kill9_apiserver(victim);
            }
            let name = format!("w-{i:02}");
            let mut attempts = 0;
            loop {
                attempts += 1;
                match create(&mut writer, pod(&name, &[])).await {
                    Ok(_) => break,
                    Err(s) if s.code() == tonic::Code::AlreadyExists && attempts > 1 => break,
                    Err(s) if attempts < 20 => {
                        eprintln!("create {name}: {s:?}, retrying");
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    Err(s) => anyhow::bail!("create {name}: {s:?}"),
                }
            }
            // Reads through kubectl-lite, whose client retries transient failures itself.
            let out = c.kubectl(&["get", "pods", "-o", "name"]).await?;
            anyhow::ensure!(out.success(), "a read failed during the failover: {out:?}");
            anyhow::ensure!(
                out.stdout.contains(&format!("pod/{name}")),
                "{}",
                out.stdout
            );
            reads_ok += 1;
        }
        let (seen, restarts) = watch.await??;
        anyhow::ensure!(reads_ok == 40);
        anyhow::ensure!(restarts >= 1, "the watch was cut when its apiserver died");
        for i in 0..40 {
            let name = format!("w-{i:02}");
            anyhow::ensure!(
                seen.get(&name) == Some(&1),
                "{name} seen {:?} times (every ADDED exactly once): {seen:?}",
                seen.get(&name)
            );
        }
        anyhow::ensure!(seen.len() == 40, "no stray events: {seen:?}");

        // The lb took the dead apiserver out; bringing it back makes it serve again.
        c.restart_apiserver(victim).await?;
        let mut direct = c.raw_client_for(victim).await?;
        wait_until(
            "the restarted apiserver to serve",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || {
                let mut d = direct.clone();
                async move { Ok(d.version(VersionRequest {}).await.ok().map(|_| ())) }
            },
        )
        .await?;
        get::<Pod>(&mut direct, "default", "w-39").await?;
        Ok(())
    })
    .await;
}

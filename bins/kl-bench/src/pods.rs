//! `kl-bench pods`: the load of `scripts/bench pods`, pod startup latency as upstream's SLO
//! defines it: from the pod's creation until it is Running, as observed by a watch.
//!
//! * `startup`: a watch of `--namespace` starts first (see podwatch.rs). Then `--total` pods
//!   (one container running `--command`, no requests) are created at `--rate` pods/s, each
//!   Create sent on its own schedule (a slow answer never delays the next create; 0 = all at
//!   once). A pod's startup latency runs from just before its Create was sent to the watch event
//!   that first showed it Running; it splits into create → bound (the scheduler;
//!   `spec.nodeName` seen) and bound → Running (the kubelet). The pods are left running.
//! * `delete`: deletes every pod of `--namespace` (default grace period: the kubelet stops the
//!   container and confirms) and waits for each one's DELETED event.
//!
//! Bounded: `--total` creates, `--timeout` for every pod to be Running after the last create
//! (`delete`: for every DELETED event). Each prints one JSON line.

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use clap::{Args, Subcommand};
use kl_api::Pod;
use kl_client::{Api, DeleteParams};
use tokio::task::JoinSet;

use crate::podwatch::{self, PodWatch};
use crate::stats::Latencies;

#[derive(Subcommand, Debug)]
pub enum PodsBench {
    /// Creates pods at a bounded rate and measures create → Running (observed by a watch).
    Startup(StartupArgs),
    /// Deletes every pod of a namespace and waits until each is gone.
    Delete(DeleteArgs),
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    #[arg(long)]
    kubeconfig: PathBuf,
    #[arg(long, default_value = "startup")]
    namespace: String,
    /// How long the deletions may take (from the first Delete to the last DELETED event).
    #[arg(long, value_parser = kl_cli::duration, default_value = "120s")]
    timeout: Duration,
    #[arg(long, value_parser = kl_cli::duration, default_value = "30s")]
    request_timeout: Duration,
}

#[derive(Args, Debug)]
pub struct StartupArgs {
    /// The kubeconfig: CA, client identity and server.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Namespace of the pods (created if missing; should hold no other pods).
    #[arg(long, default_value = "startup")]
    namespace: String,
    /// Pods in total.
    #[arg(long, default_value_t = 100)]
    total: usize,
    /// Creates per second; 0 = all at once.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// The container's command line (split at spaces).
    #[arg(long, default_value = "sleep 3600")]
    command: String,
    /// How long after the last create every pod may take to be Running.
    #[arg(long, value_parser = kl_cli::duration, default_value = "120s")]
    timeout: Duration,
    /// Per-request timeout.
    #[arg(long, value_parser = kl_cli::duration, default_value = "30s")]
    request_timeout: Duration,
    /// Free text copied into the JSON output.
    #[arg(long, default_value = "")]
    label: String,
}

pub async fn run(bench: PodsBench) -> anyhow::Result<serde_json::Value> {
    match bench {
        PodsBench::Startup(a) => startup(&a).await,
        PodsBench::Delete(a) => delete(&a).await,
    }
}

/// Concurrent Deletes at the end.
const DELETERS: usize = 16;

async fn startup(a: &StartupArgs) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(a.rate >= 0.0, "--rate must be >= 0, got {}", a.rate);
    let client = podwatch::clients(&a.kubeconfig, 1, a.request_timeout)?.remove(0);
    podwatch::ensure_namespace(&client, &a.namespace).await?;
    let pods = Api::<Pod>::namespaced(client.clone(), &a.namespace);
    let watch = PodWatch::start(&client, &a.namespace, a.request_timeout).await?;
    let command: Vec<String> = a.command.split_whitespace().map(String::from).collect();
    let run_id = std::process::id();

    // Creates, each on its own schedule.
    let started = Instant::now();
    let errors = Arc::new(AtomicUsize::new(0));
    let mut creates = JoinSet::new();
    for i in 0..a.total {
        if a.rate > 0.0 {
            let at = started + Duration::from_secs_f64(i as f64 / a.rate);
            tokio::time::sleep_until(at.into()).await;
        }
        let name = format!("startup-{run_id}-{i}");
        let (pods, errors) = (pods.clone(), errors.clone());
        let pod = podwatch::pod(&a.namespace, &name, &command, &[]);
        creates.spawn(async move {
            let sent = Instant::now();
            let r = pods.create(pod).await;
            let acked = Instant::now();
            match r {
                Ok(_) => Some((name, sent, acked)),
                Err(e) => {
                    if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                        eprintln!("kl-bench: create {name}: {e}");
                    }
                    None
                }
            }
        });
    }
    let mut sent = Vec::with_capacity(a.total);
    let mut acked = Vec::with_capacity(a.total);
    let mut create_lat = Latencies::with_capacity(a.total);
    while let Some(r) = creates.join_next().await {
        if let Some((name, s, ack)) = r? {
            create_lat.record(ack - s);
            sent.push((name, s));
            acked.push(ack);
        }
    }
    let created_secs = started.elapsed().as_secs_f64();

    // Every pod Running, or the deadline.
    let want = sent.len();
    let names: Vec<String> = sent.iter().map(|(n, _)| n.clone()).collect();
    let all_running = watch
        .wait_for(Instant::now() + a.timeout, |t| {
            names
                .iter()
                .all(|n| t.pods.get(n).is_some_and(|s| s.running.is_some()))
        })
        .await;
    let last_running = started.elapsed().as_secs_f64();

    let (mut startup, mut to_bind, mut to_run) = (
        Latencies::with_capacity(want),
        Latencies::with_capacity(want),
        Latencies::with_capacity(want),
    );
    // The slowest pods, with their stages (ms from the Create sent), for the log.
    let ms = |from: Instant, to: Option<Instant>| {
        to.map(|t| t.saturating_duration_since(from).as_secs_f64() * 1000.0)
    };
    let (per_node, running, slowest) = {
        let t = watch.tracker.lock().unwrap();
        let mut running = 0;
        let mut slowest: Vec<(f64, serde_json::Value)> = sent
            .iter()
            .zip(&acked)
            .filter_map(|((name, s), acked)| {
                let seen = t.pods.get(name)?;
                let total = ms(*s, seen.running).unwrap_or(f64::INFINITY);
                Some((
                    total,
                    serde_json::json!({
                        "pod": name,
                        "node": seen.node,
                        "create_ms": ms(*s, Some(*acked)),
                        "bound_ms": ms(*s, seen.bound),
                        "running_ms": ms(*s, seen.running),
                    }),
                ))
            })
            .collect();
        slowest.sort_by(|a, b| b.0.total_cmp(&a.0));
        slowest.truncate(5);
        for (name, s) in &sent {
            let Some(seen) = t.pods.get(name) else {
                continue;
            };
            if let Some(b) = seen.bound {
                to_bind.record(b.saturating_duration_since(*s));
            }
            if let Some(r) = seen.running {
                running += 1;
                startup.record(r.saturating_duration_since(*s));
                if let Some(b) = seen.bound {
                    to_run.record(r.saturating_duration_since(b));
                }
            }
        }
        (
            t.per_node(),
            running,
            slowest.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
        )
    };

    watch.stop().await;

    Ok(serde_json::json!({
        "bench": "pods-startup",
        "label": a.label,
        "total": a.total,
        "rate": a.rate,
        "created": want,
        "create_errors": errors.load(Ordering::Relaxed),
        "create_seconds": created_secs,
        "create_p50_ms": create_lat.percentile_ms(50.0),
        "create_p99_ms": create_lat.percentile_ms(99.0),
        "running": running,
        "all_running": all_running,
        "last_running_s": last_running,
        "p50_ms": startup.percentile_ms(50.0),
        "p90_ms": startup.percentile_ms(90.0),
        "p99_ms": startup.percentile_ms(99.0),
        "max_ms": startup.percentile_ms(100.0),
        "bound": to_bind.len(),
        "bind_p50_ms": to_bind.percentile_ms(50.0),
        "bind_p99_ms": to_bind.percentile_ms(99.0),
        "bind_max_ms": to_bind.percentile_ms(100.0),
        "run_p50_ms": to_run.percentile_ms(50.0),
        "run_p99_ms": to_run.percentile_ms(99.0),
        "run_max_ms": to_run.percentile_ms(100.0),
        "per_node": per_node,
        "slowest": slowest,
    }))
}

async fn delete(a: &DeleteArgs) -> anyhow::Result<serde_json::Value> {
    let client = podwatch::clients(&a.kubeconfig, 1, a.request_timeout)?.remove(0);
    let pods = Api::<Pod>::namespaced(client.clone(), &a.namespace);
    let watch = PodWatch::start(&client, &a.namespace, a.request_timeout).await?;
    let names: Arc<Vec<String>> = Arc::new({
        let t = watch.tracker.lock().unwrap();
        t.pods
            .iter()
            .filter(|(_, s)| s.deleted.is_none())
            .map(|(n, _)| n.clone())
            .collect()
    });
    let t0 = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut deleters = JoinSet::new();
    for _ in 0..DELETERS {
        let (pods, next, names) = (pods.clone(), next.clone(), names.clone());
        deleters.spawn(async move {
            let mut errors = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(name) = names.get(i) else { break };
                match pods.delete(name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => {
                        if errors == 0 {
                            eprintln!("kl-bench: delete {name}: {e}");
                        }
                        errors += 1;
                    }
                }
            }
            errors
        });
    }
    let mut errors = 0usize;
    while let Some(r) = deleters.join_next().await {
        errors += r?;
    }
    let deletes_sent = t0.elapsed().as_secs_f64();
    let all_gone = watch
        .wait_for(t0 + a.timeout, |t| {
            names
                .iter()
                .all(|n| t.pods.get(n).is_some_and(|s| s.deleted.is_some()))
        })
        .await;
    let (deleted, last) = {
        let t = watch.tracker.lock().unwrap();
        let stamps: Vec<Instant> = names
            .iter()
            .filter_map(|n| t.pods.get(n).and_then(|s| s.deleted))
            .collect();
        (stamps.len(), stamps.into_iter().max())
    };
    watch.stop().await;
    Ok(serde_json::json!({
        "bench": "pods-delete",
        "namespace": a.namespace,
        "pods": names.len(),
        "deleted": deleted,
        "all_gone": all_gone,
        "errors": errors,
        "deletes_sent_seconds": deletes_sent,
        "seconds": last.map(|l| l.saturating_duration_since(t0).as_secs_f64()),
    }))
}

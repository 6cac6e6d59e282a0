//! `kl-bench sched`: the load of `scripts/bench scheduler`, scheduling throughput as upstream's
//! scheduler_perf measures it, against hollow nodes (`kubelet-lite --hollow-nodes`).
//!
//! * `nodes`: waits until `--count` nodes named `--prefix`* are Ready (the hollow nodes are up).
//! * `create`: `--clients` concurrent clients create `--total` pods (one container, upstream's
//!   default requests: cpu 100m, memory 500Mi) as fast as they can, over `--conns`
//!   connections, while a watch of the namespace (podwatch.rs) stamps each pod when it is first
//!   seen bound. Reports the creation rate, and unless `--wait-bound=false` the binding rate
//!   from the first Create sent to the last bind seen, and create → bound latencies.
//! * `wait`: with the pods created beforehand and no scheduler running, starts the watch,
//!   touches `--ready-file` (the harness then starts the scheduler) and waits until `--total`
//!   pods are bound. Reports the Unix times of the first and last bind seen, the rate between
//!   them and scheduler_perf's per-second samples of it: this isolates the scheduler from the
//!   creation rate ("SchedulingThroughput").
//!
//! Every wait is bounded (`--timeout`); each run prints one JSON line.

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use clap::{Args, Subcommand};
use kl_api::{Node, Pod};
use kl_client::{Api, ListParams};
use tokio::task::JoinSet;

use crate::podwatch::{self, PodWatch};
use crate::stats::Latencies;

#[derive(Subcommand, Debug)]
pub enum SchedBench {
    /// Waits until hollow nodes are registered and Ready.
    Nodes(NodesArgs),
    /// Creates pods as fast as the clients can, and measures until they are bound.
    Create(CreateArgs),
    /// Waits for already created pods to be bound (start the scheduler meanwhile).
    Wait(WaitArgs),
}

#[derive(Args, Debug)]
pub struct NodesArgs {
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Node name prefix.
    #[arg(long, default_value = "hollow-node-")]
    prefix: String,
    /// Ready nodes to wait for.
    #[arg(long)]
    count: usize,
    #[arg(long, value_parser = kl_cli::duration, default_value = "180s")]
    timeout: Duration,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Namespace of the pods (created if missing; should hold no other pods).
    #[arg(long, default_value = "sched")]
    namespace: String,
    /// Pods in total.
    #[arg(long, default_value_t = 1000)]
    total: usize,
    /// Concurrent clients, each with one Create in flight.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Connections the clients share.
    #[arg(long, default_value_t = 4)]
    conns: usize,
    /// CPU request of each pod.
    #[arg(long, default_value = "100m")]
    cpu: String,
    /// Memory request of each pod.
    #[arg(long, default_value = "500Mi")]
    memory: String,
    /// Wait for every pod to be bound (false: only create them).
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true",
          action = clap::ArgAction::Set)]
    wait_bound: bool,
    /// Upper bound of the creates; pods not created by then are not created.
    #[arg(long, value_parser = kl_cli::duration, default_value = "300s")]
    max_duration: Duration,
    /// How long after the last create every pod may take to be bound.
    #[arg(long, value_parser = kl_cli::duration, default_value = "180s")]
    timeout: Duration,
    #[arg(long, value_parser = kl_cli::duration, default_value = "30s")]
    request_timeout: Duration,
    #[arg(long, default_value = "")]
    label: String,
}

#[derive(Args, Debug)]
pub struct WaitArgs {
    #[arg(long)]
    kubeconfig: PathBuf,
    #[arg(long, default_value = "sched")]
    namespace: String,
    /// Bound pods to wait for.
    #[arg(long)]
    total: usize,
    /// Touched once the watch is synced.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    #[arg(long, value_parser = kl_cli::duration, default_value = "300s")]
    timeout: Duration,
    #[arg(long, value_parser = kl_cli::duration, default_value = "30s")]
    request_timeout: Duration,
    #[arg(long, default_value = "")]
    label: String,
}

pub async fn run(bench: SchedBench) -> anyhow::Result<serde_json::Value> {
    match bench {
        SchedBench::Nodes(a) => nodes(&a).await,
        SchedBench::Create(a) => create(&a).await,
        SchedBench::Wait(a) => wait(&a).await,
    }
}

fn is_ready(n: &Node) -> bool {
    n.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.r#type == "Ready" && c.status == "True")
    })
}

async fn nodes(a: &NodesArgs) -> anyhow::Result<serde_json::Value> {
    let client = podwatch::clients(&a.kubeconfig, 1, Duration::from_secs(30))?.remove(0);
    let api = Api::<Node>::all(client);
    let started = Instant::now();
    let (mut registered, mut ready) = (0usize, 0usize);
    loop {
        if let Ok(list) = api.list_all(&ListParams::default()).await {
            let ours = list.items.iter().filter(|n| {
                n.metadata
                    .as_ref()
                    .is_some_and(|m| m.name.starts_with(&a.prefix))
            });
            registered = ours.clone().count();
            ready = ours.filter(|n| is_ready(n)).count();
        }
        if ready >= a.count || started.elapsed() >= a.timeout {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(serde_json::json!({
        "bench": "sched-nodes",
        "prefix": a.prefix,
        "registered": registered,
        "ready": ready,
        "all_ready": ready >= a.count,
        "seconds": started.elapsed().as_secs_f64(),
    }))
}

/// Binds per whole second since `first`, of the sorted bind stamps: scheduler_perf's
/// SchedulingThroughput samples (the last, partial second left out).
fn per_second(binds: &[Instant]) -> Vec<usize> {
    let Some(first) = binds.first() else {
        return Vec::new();
    };
    let last = binds[binds.len() - 1];
    let whole = last.saturating_duration_since(*first).as_secs() as usize;
    let mut out = vec![0usize; whole];
    for b in binds {
        let s = b.saturating_duration_since(*first).as_secs() as usize;
        if s < whole {
            out[s] += 1;
        }
    }
    out
}

/// The median and the largest of per-second samples (0 when there are none).
fn sample_stats(samples: &[usize]) -> (usize, usize) {
    if samples.is_empty() {
        return (0, 0);
    }
    let mut s = samples.to_vec();
    s.sort_unstable();
    (s[(s.len() - 1) / 2], s[s.len() - 1])
}

async fn create(a: &CreateArgs) -> anyhow::Result<serde_json::Value> {
    let clients = podwatch::clients(&a.kubeconfig, a.conns, a.request_timeout)?;
    podwatch::ensure_namespace(&clients[0], &a.namespace).await?;
    let watch = if a.wait_bound {
        Some(PodWatch::start(&clients[0], &a.namespace, a.request_timeout).await?)
    } else {
        None
    };
    let command = vec!["sleep".to_string(), "3600".to_string()];
    let requests = [("cpu", a.cpu.as_str()), ("memory", a.memory.as_str())];
    let run_id = std::process::id();
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + a.max_duration;
    let mut tasks = JoinSet::new();
    for i in 0..a.clients.max(1) {
        let api = Api::<Pod>::namespaced(clients[i % clients.len()].clone(), &a.namespace);
        let (next, errors, total, ns) =
            (next.clone(), errors.clone(), a.total, a.namespace.clone());
        let (command, requests) = (command.clone(), requests.map(|(k, v)| (k, v.to_string())));
        tasks.spawn(async move {
            let mut out = Vec::new();
            let mut lat = Latencies::with_capacity(total / 8 + 1);
            let reqs: Vec<(&str, &str)> = requests.iter().map(|(k, v)| (*k, v.as_str())).collect();
            while Instant::now() < deadline {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                let name = format!("sched-{run_id}-{n}");
                let pod = podwatch::pod(&ns, &name, &command, &reqs);
                let sent = Instant::now();
                match api.create(pod).await {
                    Ok(_) => {
                        let acked = Instant::now();
                        lat.record(acked - sent);
                        out.push((name, sent, acked));
                    }
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("kl-bench: create {name}: {e}");
                        }
                    }
                }
            }
            (out, lat)
        });
    }
    let mut created = Vec::with_capacity(a.total);
    let mut create_lat = Latencies::with_capacity(a.total);
    while let Some(r) = tasks.join_next().await {
        let (out, lat) = r?;
        created.extend(out);
        create_lat.merge(lat);
    }
    let first_sent = created.iter().map(|c| c.1).min().unwrap_or(started);
    let last_acked = created.iter().map(|c| c.2).max().unwrap_or(started);
    let create_secs = last_acked
        .saturating_duration_since(first_sent)
        .as_secs_f64();
    let mut out = serde_json::json!({
        "bench": "sched-create",
        "label": a.label,
        "total": a.total,
        "clients": a.clients,
        "conns": a.conns,
        "created": created.len(),
        "create_errors": errors.load(Ordering::Relaxed),
        "create_seconds": create_secs,
        "create_rate": created.len() as f64 / create_secs.max(1e-9),
        "create_p50_ms": create_lat.percentile_ms(50.0),
        "create_p99_ms": create_lat.percentile_ms(99.0),
    });
    let Some(watch) = watch else {
        return Ok(out);
    };

    let want = created.len();
    let all_bound = watch
        .wait_for(Instant::now() + a.timeout, |t| t.bound >= want)
        .await;
    let mut to_bind = Latencies::with_capacity(want);
    let mut binds = Vec::with_capacity(want);
    {
        let t = watch.tracker.lock().unwrap();
        for (name, sent, _) in &created {
            if let Some(b) = t.pods.get(name).and_then(|s| s.bound) {
                to_bind.record(b.saturating_duration_since(*sent));
                binds.push(b);
            }
        }
    }
    watch.stop().await;
    binds.sort_unstable();
    let last_bound = binds.last().copied().unwrap_or(first_sent);
    let bind_secs = last_bound
        .saturating_duration_since(first_sent)
        .as_secs_f64();
    let (p50_sample, max_sample) = sample_stats(&per_second(&binds));
    let o = out.as_object_mut().expect("an object");
    for (k, v) in [
        ("bound", serde_json::json!(binds.len())),
        ("all_bound", serde_json::json!(all_bound)),
        ("bind_seconds", serde_json::json!(bind_secs)),
        (
            "throughput",
            serde_json::json!(binds.len() as f64 / bind_secs.max(1e-9)),
        ),
        ("per_second_p50", serde_json::json!(p50_sample)),
        ("per_second_max", serde_json::json!(max_sample)),
        ("p50_ms", serde_json::json!(to_bind.percentile_ms(50.0))),
        ("p90_ms", serde_json::json!(to_bind.percentile_ms(90.0))),
        ("p99_ms", serde_json::json!(to_bind.percentile_ms(99.0))),
        ("max_ms", serde_json::json!(to_bind.percentile_ms(100.0))),
    ] {
        o.insert(k.to_string(), v);
    }
    Ok(out)
}

async fn wait(a: &WaitArgs) -> anyhow::Result<serde_json::Value> {
    let client = podwatch::clients(&a.kubeconfig, 1, a.request_timeout)?.remove(0);
    let watch = PodWatch::start(&client, &a.namespace, a.request_timeout).await?;
    let (listed, bound_at_start) = {
        let t = watch.tracker.lock().unwrap();
        (t.pods.len(), t.bound)
    };
    if let Some(f) = &a.ready_file {
        std::fs::write(f, b"synced\n")?;
    }
    let all_bound = watch
        .wait_for(Instant::now() + a.timeout, |t| t.bound >= a.total)
        .await;
    let mut binds: Vec<Instant> = {
        let t = watch.tracker.lock().unwrap();
        t.pods.values().filter_map(|s| s.bound).collect()
    };
    watch.stop().await;
    binds.sort_unstable();
    let (first, last) = match (binds.first(), binds.last()) {
        (Some(f), Some(l)) => (*f, *l),
        _ => {
            let now = Instant::now();
            (now, now)
        }
    };
    let span = last.saturating_duration_since(first).as_secs_f64();
    let (p50_sample, max_sample) = sample_stats(&per_second(&binds));
    Ok(serde_json::json!({
        "bench": "sched-wait",
        "label": a.label,
        "total": a.total,
        "listed": listed,
        "bound_at_start": bound_at_start,
        "bound": binds.len(),
        "all_bound": all_bound,
        "first_bound_unix_ms": podwatch::unix_ms(first),
        "last_bound_unix_ms": podwatch::unix_ms(last),
        "bind_seconds": span,
        // n binds over the span between the first and the last: n - 1 intervals.
        "throughput": (binds.len().saturating_sub(1)) as f64 / span.max(1e-9),
        "per_second_p50": p50_sample,
        "per_second_max": max_sample,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_second_samples_leave_out_the_partial_last_second() {
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        let binds = [ms(0), ms(100), ms(900), ms(1000), ms(1500), ms(2100)];
        assert_eq!(per_second(&binds), vec![3, 2]);
        assert_eq!(sample_stats(&per_second(&binds)), (2, 3));
        assert_eq!(per_second(&[]), Vec::<usize>::new());
        assert_eq!(sample_stats(&[]), (0, 0));
    }
}

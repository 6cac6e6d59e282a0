//! The store benchmarks: put, get and failover against any etcd v3 endpoint list.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use etcd_client::{Client, ConnectOptions, GetOptions};
use serde_json::json;

use crate::{stats::Latencies, Conn, Consistency, Load};

/// A client for `endpoints` with the TLS files and request timeout of `conn`.
async fn connect(conn: &Conn, endpoints: &[String]) -> anyhow::Result<Client> {
    let mut opts = ConnectOptions::new()
        .with_timeout(conn.request_timeout)
        .with_connect_timeout(Duration::from_secs(5));
    if let Some(ca) = &conn.cacert {
        let identity = conn.cert.as_deref().zip(conn.key.as_deref());
        let tls = kl_tls::ClientTls::load(ca, identity).context("loading TLS files")?;
        opts = opts.with_tls(tls.tonic_config());
    }
    Client::connect(endpoints, Some(opts))
        .await
        .with_context(|| format!("connecting to {}", endpoints.join(",")))
}

/// One client per connection; connection i goes to endpoint i mod n.
async fn connections(load: &Load) -> anyhow::Result<Vec<Client>> {
    let eps = &load.conn.endpoints;
    anyhow::ensure!(!eps.is_empty(), "--endpoints is required");
    anyhow::ensure!(
        load.clients > 0 && load.conns > 0,
        "--clients and --conns must be > 0"
    );
    let mut out = Vec::new();
    for i in 0..load.conns {
        out.push(connect(&load.conn, std::slice::from_ref(&eps[i % eps.len()])).await?);
    }
    Ok(out)
}

/// Fixed-size keys `0000001`, zero-padded to `size` bytes.
fn key(i: usize, size: usize) -> Vec<u8> {
    format!("{i:0size$}").into_bytes()
}

fn key_space(load: &Load) -> anyhow::Result<usize> {
    let space = load.key_space.unwrap_or(load.total).max(1);
    anyhow::ensure!(
        (space - 1).to_string().len() <= load.key_size,
        "--key-size {} is too small for {} distinct keys",
        load.key_size,
        space
    );
    Ok(space)
}

#[derive(Clone, Copy)]
enum Op {
    Put,
    Get(Consistency),
}

/// Runs `total` requests over `clients` workers and summarises them as one JSON line.
async fn drive(load: &Load, op: Op) -> anyhow::Result<serde_json::Value> {
    let space = key_space(load)?;
    let conns = connections(load).await?;
    let value = Arc::new(vec![b'v'; load.val_size]);
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let first_error: Arc<Mutex<Option<String>>> = Arc::default();
    let start = Instant::now();
    let deadline = start + load.max_duration;

    let mut workers = Vec::new();
    for w in 0..load.clients {
        let mut client = conns[w % conns.len()].clone();
        let (next, errors, first_error, value) = (
            next.clone(),
            errors.clone(),
            first_error.clone(),
            value.clone(),
        );
        let (total, key_size, share) = (load.total, load.key_size, load.total / load.clients + 1);
        workers.push(tokio::spawn(async move {
            let mut lat = Latencies::with_capacity(share);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total || Instant::now() >= deadline {
                    break;
                }
                let t0 = Instant::now();
                let r = match op {
                    Op::Put => client
                        .put(key(i % space, key_size), value.as_slice(), None)
                        .await
                        .map(|_| ()),
                    Op::Get(c) => {
                        // Spread reads over the key space without a random generator.
                        let k = (i as u64).wrapping_mul(2_654_435_761) % space as u64;
                        let mut opts = GetOptions::new();
                        if c == Consistency::S {
                            opts = opts.with_serializable();
                        }
                        client
                            .get(key(k as usize, key_size), Some(opts))
                            .await
                            .map(|_| ())
                    }
                };
                match r {
                    Ok(()) => lat.record(t0.elapsed()),
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        let mut fe = first_error.lock().unwrap_or_else(|e| e.into_inner());
                        fe.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            lat
        }));
    }
    let mut lat = Latencies::with_capacity(load.total);
    for w in workers {
        lat.merge(w.await.context("a worker panicked")?);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let ok = lat.len();
    let (name, consistency) = match op {
        Op::Put => ("put", None),
        Op::Get(Consistency::L) => ("get", Some("l")),
        Op::Get(Consistency::S) => ("get", Some("s")),
    };
    let first_error = first_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Ok(json!({
        "bench": name,
        "label": load.label,
        "consistency": consistency,
        "clients": load.clients,
        "conns": load.conns,
        "total": load.total,
        "key_size": load.key_size,
        "val_size": load.val_size,
        "ok": ok,
        "errors": errors.load(Ordering::Relaxed),
        "first_error": first_error,
        "elapsed_s": round3(elapsed),
        "throughput": round3(ok as f64 / elapsed.max(1e-9)),
        "p50_ms": round3(lat.percentile_ms(50.0)),
        "p99_ms": round3(lat.percentile_ms(99.0)),
        "max_ms": round3(lat.percentile_ms(100.0)),
    }))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub async fn put(load: &Load) -> anyhow::Result<serde_json::Value> {
    drive(load, Op::Put).await
}

pub async fn get(load: &Load, c: Consistency) -> anyhow::Result<serde_json::Value> {
    drive(load, Op::Get(c)).await
}

/// What the failover writers share: when the last write succeeded and the longest gap so far.
#[derive(Default)]
struct Gaps {
    last_ok: Option<Instant>,
    longest: Duration,
    longest_end: Option<Instant>,
}

/// Writes for `duration` through a client balanced over every endpoint, retrying failures, and
/// reports the longest time between two successful writes.
pub async fn failover(
    conn: &Conn,
    duration: Duration,
    clients: usize,
    label: &str,
) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(!conn.endpoints.is_empty(), "--endpoints is required");
    let client = connect(conn, &conn.endpoints).await?;
    let gaps: Arc<Mutex<Gaps>> = Arc::default();
    let ok = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let end = start + duration;
    let mut workers = Vec::new();
    for w in 0..clients.max(1) {
        let mut client = client.clone();
        let (gaps, ok, errors) = (gaps.clone(), ok.clone(), errors.clone());
        workers.push(tokio::spawn(async move {
            let mut seq = 0u64;
            while Instant::now() < end {
                seq += 1;
                let r = client
                    .put(format!("/kl-bench/failover/{w}"), seq.to_string(), None)
                    .await;
                let now = Instant::now();
                match r {
                    Ok(_) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        let mut g = gaps.lock().unwrap_or_else(|e| e.into_inner());
                        if let Some(last) = g.last_ok {
                            let gap = now.saturating_duration_since(last);
                            if gap > g.longest {
                                g.longest = gap;
                                g.longest_end = Some(now);
                            }
                        }
                        g.last_ok = Some(now);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        // Fail fast, retry soon: the gap is what is measured, not the rate.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
        }));
    }
    for w in workers {
        w.await.context("a writer panicked")?;
    }
    let g = gaps.lock().unwrap_or_else(|e| e.into_inner());
    let end_s = g
        .longest_end
        .map(|e| e.saturating_duration_since(start).as_secs_f64());
    let gap_ms = g.longest.as_secs_f64() * 1000.0;
    Ok(json!({
        "bench": "failover",
        "label": label,
        "clients": clients,
        "duration_s": round3(duration.as_secs_f64()),
        "ok": ok.load(Ordering::Relaxed),
        "errors": errors.load(Ordering::Relaxed),
        "longest_gap_ms": round3(gap_ms),
        "gap_start_s": end_s.map(|e| round3(e - gap_ms / 1000.0)),
        "gap_end_s": end_s.map(round3),
        // Writes still failing at the end would hide the real gap: report when the last
        // success was.
        "last_ok_s": g.last_ok.map(|t| round3(t.saturating_duration_since(start).as_secs_f64())),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_a_fixed_size() {
        assert_eq!(key(7, 8), b"00000007");
        assert_eq!(key(12345678, 8), b"12345678");
    }
}

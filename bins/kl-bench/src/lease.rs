//! `kl-bench lease`: the load-free side of `scripts/bench failover`, through kl-client (the
//! one client every component uses), so the Lease is read exactly as the candidates read it.
//!
//! * `holder`: prints the Lease's holderIdentity ("" when released), so the script can find
//!   which process leads.
//! * `takeover`: checks that the Lease is held by `--holder`, sends `--signal` to `--pid` (the
//!   harness found that process to be the holder), then reads the Lease every `--poll` until a
//!   non-empty holder other than `--holder` appears. Prints one JSON line: `takeover_ms` from
//!   just before the signal to the answer of the first read that showed the new holder (so
//!   its resolution is one poll interval plus one read), `released_ms` the same for the first
//!   read that showed an empty holder (a SIGTERMed leader releasing), or null if never seen.
//!   Bounded by `--timeout`: on expiry `takeover_ms` is null and the exit status is still 0,
//!   so the harness records the trial instead of losing the run.
//!
//! The signal is sent by `kill(1)`, a child process, because this crate forbids `unsafe`
//! (and so `libc::kill`); the clock starts before the child is spawned, which adds its ~1 ms
//! start-up to every measurement, never subtracts it.

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use kl_api::Lease;
use kl_client::{Api, Client, ClientOptions, RetryPolicy};
use serde_json::json;

#[derive(Subcommand, Debug)]
pub enum LeaseBench {
    /// Prints the Lease's current holderIdentity.
    Holder(LeaseRef),
    /// Signals the holder's process and measures the time until another holder appears.
    Takeover(TakeoverArgs),
}

/// Which Lease, read how.
#[derive(Args, Debug, Clone)]
pub struct LeaseRef {
    /// The kubeconfig (CA, client identity, server: in a cluster, the lb).
    #[arg(long)]
    kubeconfig: PathBuf,
    /// The Lease as NAMESPACE/NAME.
    #[arg(long, default_value = "kube-system/kube-controller-manager")]
    lease: String,
    /// Bound of each read (one attempt, no retry: a failed read is counted and the next poll
    /// tries again).
    #[arg(long, value_parser = kl_cli::duration, default_value = "2s")]
    request_timeout: Duration,
}

#[derive(Args, Debug)]
pub struct TakeoverArgs {
    #[command(flatten)]
    lease: LeaseRef,
    /// The holderIdentity the Lease must have before the signal.
    #[arg(long)]
    holder: String,
    /// The process to signal (the holder's).
    #[arg(long)]
    pid: u32,
    /// The signal, as `kill -s` takes it (KILL, TERM, ...).
    #[arg(long, default_value = "KILL")]
    signal: String,
    /// Time between two reads of the Lease.
    #[arg(long, value_parser = kl_cli::duration, default_value = "50ms")]
    poll: Duration,
    /// Give up this long after the signal.
    #[arg(long, value_parser = kl_cli::duration, default_value = "60s")]
    timeout: Duration,
    /// Free text copied into the JSON output.
    #[arg(long, default_value = "")]
    label: String,
}

pub async fn run(bench: LeaseBench) -> anyhow::Result<String> {
    match bench {
        LeaseBench::Holder(r) => {
            let api = leases(&r)?;
            let (_, name) = split(&r.lease)?;
            let lease = api
                .get(name)
                .await
                .with_context(|| format!("reading {}", r.lease))?;
            Ok(holder(&lease))
        }
        LeaseBench::Takeover(a) => takeover(a).await,
    }
}

fn split(lease: &str) -> anyhow::Result<(&str, &str)> {
    match lease.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() => Ok((ns, name)),
        _ => bail!("--lease: expected NAMESPACE/NAME, got {lease:?}"),
    }
}

fn leases(r: &LeaseRef) -> anyhow::Result<Api<Lease>> {
    let (ns, _) = split(&r.lease)?;
    let client = Client::from_kubeconfig(Some(&r.kubeconfig), None)
        .with_context(|| format!("--kubeconfig {}", r.kubeconfig.display()))?
        .with(
            ClientOptions::default()
                .connect_timeout(r.request_timeout)
                .request_timeout(Some(r.request_timeout))
                .retry(RetryPolicy::none()),
        );
    Ok(Api::namespaced(client, ns))
}

fn holder(lease: &Lease) -> String {
    lease
        .spec
        .as_ref()
        .map(|s| s.holder_identity.clone())
        .unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

async fn takeover(a: TakeoverArgs) -> anyhow::Result<String> {
    let api = leases(&a.lease)?;
    let (_, name) = split(&a.lease.lease)?;
    let before = api
        .get(name)
        .await
        .with_context(|| format!("reading {} before the signal", a.lease.lease))?;
    let old = holder(&before);
    if old != a.holder {
        bail!(
            "{} is held by {old:?}, not by {:?}: the harness picked the wrong process",
            a.lease.lease,
            a.holder
        );
    }
    let transitions_before = before.spec.as_ref().and_then(|s| s.lease_transitions);

    let t0 = Instant::now();
    let status = Command::new("kill")
        .args(["-s", &a.signal, &a.pid.to_string()])
        .status()
        .context("running kill(1)")?;
    if !status.success() {
        bail!("kill -s {} {} failed ({status})", a.signal, a.pid);
    }

    let mut tick = tokio::time::interval(a.poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut polls, mut errors) = (0u64, 0u64);
    let mut released: Option<Duration> = None;
    let mut taken: Option<(Duration, Lease)> = None;
    while t0.elapsed() < a.timeout {
        tick.tick().await;
        polls += 1;
        match api.get(name).await {
            Err(_) => errors += 1,
            Ok(lease) => {
                let now = t0.elapsed();
                let h = holder(&lease);
                if h.is_empty() {
                    released.get_or_insert(now);
                } else if h != old {
                    taken = Some((now, lease));
                    break;
                }
            }
        }
    }
    let (takeover_ms, new_holder, transitions_after) = match &taken {
        Some((d, l)) => (
            Some(ms(*d)),
            Some(holder(l)),
            l.spec.as_ref().and_then(|s| s.lease_transitions),
        ),
        None => (None, None, None),
    };
    Ok(json!({
        "lease": a.lease.lease,
        "signal": a.signal,
        "pid": a.pid,
        "old_holder": old,
        "new_holder": new_holder,
        "takeover_ms": takeover_ms,
        "released_ms": released.map(ms),
        "transitions_before": transitions_before,
        "transitions_after": transitions_after,
        "polls": polls,
        "poll_errors": errors,
        "poll_ms": ms(a.poll),
        "label": a.label,
    })
    .to_string())
}

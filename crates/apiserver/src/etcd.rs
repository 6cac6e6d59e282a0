//! The connection to etcd: one `etcd-client` client per `--etcd-servers` member, and failover
//! between them done here rather than by etcd-client's balancer.
//!
//! Why not one balanced client: etcd-client puts every endpoint in one tonic balanced channel,
//! which keeps routing calls to a member that is down (calls fail or wait for the connect
//! timeout) and gives no way to say "this member has no leader, try another". So every call
//! goes through [`Etcd::call`]: it tries the member that last answered, with a per-attempt
//! timeout, and on an error that means "this member cannot serve now" (unreachable, timed
//! out, `etcdserver: no leader`, `leader changed`, ...) moves on to the next member, round
//! after round with a short pause, until a total deadline.
//!
//! Retrying is safe because every write the apiserver makes is a compare-and-swap Txn: a
//! retried write that had in fact been applied fails its compare rather than applying twice,
//! and the storage layer recognises its own write (see `storage.rs`). [`Etcd::call`] tells the
//! caller whether a retry happened.
//!
//! This module knows nothing about objects or keys' meaning.

use std::{
    future::Future,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use etcd_client::{Client, ConnectOptions};
use parking_lot::Mutex;
use tonic::Code;

use crate::metrics::Metrics;

/// Why an etcd call failed, as far as the apiserver cares.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EtcdError {
    /// No member could serve the call before the deadline.
    #[error("etcd unavailable: {0}")]
    Unavailable(String),
    #[error("etcd request timed out: {0}")]
    Timeout(String),
    /// The revision asked for has been compacted.
    #[error("{0}")]
    Compacted(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("etcd: {0}")]
    Other(String),
}

/// How to reach etcd.
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    /// `--etcd-servers`, in order.
    pub endpoints: Vec<String>,
    /// TLS for https:// endpoints (`--etcd-cafile`, `--etcd-certfile`, `--etcd-keyfile`).
    pub tls: Option<tonic::transport::ClientTlsConfig>,
    /// How long one attempt on one member may take before the next member is tried.
    pub attempt_timeout: Duration,
    /// How long a call may take across every attempt.
    pub call_timeout: Duration,
}

/// One member of `--etcd-servers` and its own client.
pub struct Member {
    pub url: String,
    pub client: Client,
}

/// What one failed attempt means for the call.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// This member cannot serve now; another may.
    Retry(String),
    /// The answer is final (compacted, too large, invalid, ...).
    Final(FinalKind, String),
}

#[derive(Debug, PartialEq, Eq)]
enum FinalKind {
    Compacted,
    TooLarge,
    Other,
}

/// Sorts an etcd-client error into "try another member" or "final".
fn classify(e: &etcd_client::Error) -> Failure {
    use etcd_client::Error as E;
    match e {
        E::GRpcStatus(s) => classify_status(s.code(), s.message()),
        E::TransportError(t) => Failure::Retry(format!("transport error: {t}")),
        E::IoError(io) => Failure::Retry(format!("I/O error: {io}")),
        E::WatchError(w) => Failure::Retry(format!("watch error: {w}")),
        other => Failure::Final(FinalKind::Other, other.to_string()),
    }
}

fn classify_status(code: Code, message: &str) -> Failure {
    let m = message.to_string();
    if message.contains("required revision has been compacted") || code == Code::OutOfRange {
        return Failure::Final(FinalKind::Compacted, m);
    }
    if message.contains("request is too large") {
        return Failure::Final(FinalKind::TooLarge, m);
    }
    let member_side = [
        "no leader",
        "leader changed",
        "timed out",
        "server stopped",
        "not capable",
        "too many requests",
        "unhealthy cluster",
        "transport",
        "connection",
        "broken pipe",
        "h2 protocol error",
    ];
    match code {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Cancelled
        | Code::ResourceExhausted
        | Code::Aborted => Failure::Retry(m),
        Code::Unknown | Code::Internal if member_side.iter().any(|s| message.contains(s)) => {
            Failure::Retry(m)
        }
        _ if message.contains("no leader") || message.contains("leader changed") => {
            Failure::Retry(m)
        }
        _ => Failure::Final(FinalKind::Other, m),
    }
}

/// The apiserver's etcd: every member's client, which one answered last, and when.
pub struct Etcd {
    members: Vec<Member>,
    /// Index of the member tried first: the one that answered last.
    preferred: AtomicUsize,
    /// When any member last answered (for `/readyz`).
    last_ok: Mutex<Option<Instant>>,
    opts: EtcdOptions,
    metrics: Arc<Metrics>,
}

impl Etcd {
    /// Builds one client per endpoint. Connections are made lazily, so this succeeds while
    /// members are down.
    pub async fn connect(opts: EtcdOptions, metrics: Arc<Metrics>) -> Result<Self, EtcdError> {
        if opts.endpoints.is_empty() {
            return Err(EtcdError::Other("--etcd-servers is empty".into()));
        }
        let mut members = Vec::new();
        for url in &opts.endpoints {
            let mut co = ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(2))
                // etcd refuses pings more often than every 5s (--grpc-keepalive-min-time).
                .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
                .with_keep_alive_while_idle(true)
                // etcd then fails calls at once on a member that lost its leader, and cancels
                // its watches, so we move to another member instead of waiting.
                .with_require_leader(true);
            if kl_tls::is_tls_url(url) {
                if let Some(tls) = &opts.tls {
                    co = co.with_tls(tls.clone());
                }
            }
            let client = Client::connect([url.as_str()], Some(co))
                .await
                .map_err(|e| EtcdError::Other(format!("--etcd-servers {url}: {e}")))?;
            members.push(Member {
                url: url.clone(),
                client,
            });
        }
        Ok(Etcd {
            members,
            preferred: AtomicUsize::new(0),
            last_ok: Mutex::new(None),
            opts,
            metrics,
        })
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// When a member last answered anything.
    pub fn last_ok(&self) -> Option<Instant> {
        *self.last_ok.lock()
    }

    /// Records that a member answered (watch responses count too).
    pub fn mark_ok(&self) {
        *self.last_ok.lock() = Some(Instant::now());
    }

    /// The member to try first, and its index.
    pub fn preferred(&self) -> (usize, &Member) {
        let i = self.preferred.load(Ordering::Relaxed) % self.members.len();
        (i, &self.members[i])
    }

    /// Moves the preference off member `failed` (if it is still the preferred one).
    pub fn rotate_from(&self, failed: usize) {
        let next = (failed + 1) % self.members.len();
        let _ = self
            .preferred
            .compare_exchange(failed, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// The error when no member served a call within `waited`: every member's last failure,
    /// so the client reads why (`etcdserver: no leader`, unreachable, no answer).
    fn gave_up(&self, failures: &[Option<String>], waited: Duration) -> EtcdError {
        let each: Vec<String> = self
            .members
            .iter()
            .zip(failures)
            .map(|(m, f)| format!("{}: {}", m.url, f.as_deref().unwrap_or("not tried")))
            .collect();
        let why = format!(
            "no etcd member could serve the request within {waited:.1?} (the etcd cluster is \
             down or has lost its quorum): {}",
            each.join("; ")
        );
        if failures
            .iter()
            .flatten()
            .all(|f| f.starts_with("no answer"))
        {
            EtcdError::Timeout(why)
        } else {
            EtcdError::Unavailable(why)
        }
    }

    /// Runs `f` against a member, failing over as the module doc says. Returns the answer and
    /// whether an earlier attempt failed in a way that may have reached etcd (so a write may
    /// have been applied by it).
    pub async fn call<T, F, Fut>(
        &self,
        operation: &'static str,
        resource: &str,
        f: F,
    ) -> Result<(T, bool), EtcdError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let started = Instant::now();
        // The caller's deadline (crate::deadline) when it is sooner: answer with etcd's
        // reason before the client gives up.
        let deadline = match crate::deadline::current() {
            Some(d) => d.min(started + self.opts.call_timeout),
            None => started + self.opts.call_timeout,
        };
        let n = self.members.len();
        let mut retried = false;
        // Each member's last failure, for the answer when none could serve.
        let mut failures: Vec<Option<String>> = vec![None; n];
        let mut round = 0u32;
        let result = 'outer: loop {
            let first = self.preferred.load(Ordering::Relaxed) % n;
            for step in 0..n {
                let i = (first + step) % n;
                let now = Instant::now();
                if now >= deadline {
                    break 'outer Err(self.gave_up(&failures, now - started));
                }
                // A member that does not answer (paused, cut off) may not eat the whole of a
                // short caller deadline while another member could answer.
                let remaining = deadline - now;
                let mut budget = self.opts.attempt_timeout.min(remaining);
                if step + 1 < n {
                    budget = budget.min(remaining / 2);
                }
                let member = &self.members[i];
                match tokio::time::timeout(budget, f(member.client.clone())).await {
                    Ok(Ok(v)) => {
                        self.preferred.store(i, Ordering::Relaxed);
                        self.mark_ok();
                        break 'outer Ok((v, retried));
                    }
                    Ok(Err(e)) => match classify(&e) {
                        Failure::Retry(why) => {
                            tracing::debug!(member = %member.url, operation, error = %why, "etcd member failed; trying the next");
                            failures[i] = Some(why);
                            retried = true;
                            self.rotate_from(i);
                        }
                        Failure::Final(kind, why) => {
                            // The member answered: it is up.
                            self.mark_ok();
                            break 'outer Err(match kind {
                                FinalKind::Compacted => EtcdError::Compacted(why),
                                FinalKind::TooLarge => EtcdError::TooLarge(why),
                                FinalKind::Other => EtcdError::Other(why),
                            });
                        }
                    },
                    Err(_) => {
                        tracing::debug!(member = %member.url, operation, "etcd call timed out; trying the next member");
                        failures[i] = Some(format!("no answer within {budget:.1?}"));
                        retried = true;
                        self.rotate_from(i);
                    }
                }
            }
            round += 1;
            // Every member failed this round (an election, most likely): pause, then again.
            let pause = Duration::from_millis(100 * u64::from(round.min(5)));
            tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
        };
        self.metrics
            .etcd_request_duration
            .with_label_values(&[operation, resource])
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            tracing::warn!(operation, resource, error = %e, "etcd call failed");
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_side_failures_are_retried_elsewhere() {
        for (code, msg) in [
            (Code::Unavailable, "etcdserver: no leader"),
            (Code::Unavailable, "etcdserver: leader changed"),
            (Code::Unavailable, "tcp connect error"),
            (Code::DeadlineExceeded, "context deadline exceeded"),
            (Code::Unknown, "transport error"),
            (Code::Unknown, "etcdserver: request timed out"),
        ] {
            assert!(
                matches!(classify_status(code, msg), Failure::Retry(_)),
                "{code:?} {msg}"
            );
        }
    }

    #[test]
    fn answers_are_final() {
        assert_eq!(
            classify_status(
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted"
            ),
            Failure::Final(
                FinalKind::Compacted,
                "etcdserver: mvcc: required revision has been compacted".into()
            )
        );
        assert!(matches!(
            classify_status(Code::InvalidArgument, "etcdserver: request is too large"),
            Failure::Final(FinalKind::TooLarge, _)
        ));
        assert!(matches!(
            classify_status(Code::InvalidArgument, "etcdserver: key is not provided"),
            Failure::Final(FinalKind::Other, _)
        ));
    }
}

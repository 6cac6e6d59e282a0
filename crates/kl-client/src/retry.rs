//! Which failed calls are sent again, and when.
//!
//! Behind the lb an apiserver can die mid-request; the next connection lands on a live one. So:
//!
//! * **Reads** (get, list, watch set-up, version, cluster-info) are idempotent: they are retried
//!   on every transient failure: no connection, a connection broken in flight (reset, h2
//!   error, keep-alive timeout), `ServiceUnavailable`, `TooManyRequests`.
//! * **Writes** are retried only when the server provably did not act: the connection was never
//!   made (refused, reset during the handshake), the server refused the stream before
//!   processing it (h2 `REFUSED_STREAM`), or it answered `TooManyRequests` (refused before
//!   any work, with a retry hint). A write whose connection broke in flight may have been
//!   applied; the caller decides (re-get, or treat `AlreadyExists` as success).
//! * **Relayed reads** (pods/log, which the apiserver reads from a kubelet) as reads, except a
//!   `ServiceUnavailable` without `retry-after`: the kubelet cannot be reached, and asking again
//!   at once does not change that.
//! * Never retried: answers (`NotFound`, `Conflict`, `Invalid`, `Expired`, `Fenced`, ...), TLS
//!   failures that retrying cannot fix, and the request timeout.
//!
//! Defaults ([`RetryPolicy::default`]): at most 5 attempts, waiting 100 ms, 200 ms, 400 ms,
//! 800 ms between them (doubling, capped at 2 s), each wait jittered down by up to half so
//! that many clients cut off together do not come back in lockstep. A `retry-after` hint
//! replaces the backoff when longer (capped at 10 s).
use std::time::Duration;

use rand::Rng;

use crate::error::{ApiError, Reason, TransportFailure};

/// Whether a call may be sent twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// Reads: sending twice changes nothing.
    Idempotent,
    /// Writes: sending twice may apply twice.
    Mutating,
    /// Reads the apiserver relays from another server (pods/log, from a kubelet): retried as
    /// reads, except a `ServiceUnavailable` without `retry-after`: that is the apiserver
    /// saying the kubelet cannot be reached, which sending again at once does not fix.
    Relayed,
}

/// What a failure allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transience {
    /// An answer, or a failure retrying cannot fix.
    Permanent,
    /// Transient, but a server may have acted on the request: only reads are retried.
    ReadsOnly,
    /// Transient, and the request provably was not acted on: anything may be retried.
    Safe,
}

/// Classifies a failure for [`RetryPolicy`].
pub fn transience(e: &ApiError) -> Transience {
    match e {
        ApiError::Status { reason, .. } => match reason {
            Reason::TooManyRequests => Transience::Safe,
            Reason::ServiceUnavailable => Transience::ReadsOnly,
            _ => Transience::Permanent,
        },
        ApiError::Transport { failure, .. } => match failure {
            TransportFailure::Connect => Transience::Safe,
            TransportFailure::InFlight => Transience::ReadsOnly,
            TransportFailure::Tls => Transience::Permanent,
        },
        ApiError::Timeout { .. } | ApiError::Unexpected { .. } => Transience::Permanent,
    }
}

/// How many attempts a call gets and how long to wait between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retry).
    pub max_attempts: u32,
    /// The wait after the first failure; doubled after each further one.
    pub initial_backoff: Duration,
    /// The longest wait between two attempts (before a `retry-after` hint).
    pub max_backoff: Duration,
}

/// The longest `retry-after` hint honoured: a server asking for more is not waited for.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..Default::default()
        }
    }

    /// How long to wait before attempt `attempt + 1` after `attempt` (1-based) failed with `e`,
    /// or None when the call must fail now.
    pub fn next_delay(&self, e: &ApiError, idem: Idempotency, attempt: u32) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        match (transience(e), idem) {
            (Transience::Permanent, _) | (Transience::ReadsOnly, Idempotency::Mutating) => {
                return None
            }
            (_, Idempotency::Relayed)
                if e.reason() == Some(&Reason::ServiceUnavailable) && e.retry_after().is_none() =>
            {
                return None
            }
            _ => {}
        }
        let backoff = self.backoff(attempt);
        let jittered = backoff.mul_f64(rand::thread_rng().gen_range(0.5..=1.0));
        Some(match e.retry_after() {
            Some(hint) => hint.min(MAX_RETRY_AFTER).max(jittered),
            None => jittered,
        })
    }

    /// The un-jittered wait after failed attempt `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(16);
        self.initial_backoff
            .saturating_mul(1 << doublings)
            .min(self.max_backoff)
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    fn status(reason: Reason) -> ApiError {
        ApiError::Status {
            reason,
            code: Code::Unknown,
            message: String::new(),
            retry_after: None,
        }
    }

    fn transport(failure: TransportFailure) -> ApiError {
        ApiError::Transport {
            failure,
            message: String::new(),
        }
    }

    #[test]
    fn answers_are_never_retried() {
        let p = RetryPolicy::default();
        for r in [
            Reason::NotFound,
            Reason::Conflict,
            Reason::AlreadyExists,
            Reason::Invalid,
            Reason::Expired,
            Reason::Fenced,
            Reason::Unauthorized,
            Reason::InternalError,
        ] {
            assert_eq!(
                p.next_delay(&status(r.clone()), Idempotency::Idempotent, 1),
                None,
                "{r}"
            );
        }
        let timeout = ApiError::Timeout {
            after: Duration::from_secs(1),
        };
        assert_eq!(p.next_delay(&timeout, Idempotency::Idempotent, 1), None);
    }

    #[test]
    fn reads_retry_transient_failures_writes_only_unsent_ones() {
        let p = RetryPolicy::default();
        let in_flight = transport(TransportFailure::InFlight);
        let connect = transport(TransportFailure::Connect);
        let unavailable = status(Reason::ServiceUnavailable);
        let busy = status(Reason::TooManyRequests);
        for e in [&in_flight, &connect, &unavailable, &busy] {
            assert!(
                p.next_delay(e, Idempotency::Idempotent, 1).is_some(),
                "{e:?}"
            );
        }
        assert!(p.next_delay(&in_flight, Idempotency::Mutating, 1).is_none());
        assert!(p
            .next_delay(&unavailable, Idempotency::Mutating, 1)
            .is_none());
        assert!(p.next_delay(&connect, Idempotency::Mutating, 1).is_some());
        assert!(p.next_delay(&busy, Idempotency::Mutating, 1).is_some());
        let tls = transport(TransportFailure::Tls);
        assert!(p.next_delay(&tls, Idempotency::Idempotent, 1).is_none());
    }

    #[test]
    fn relayed_reads_do_not_retry_an_unreachable_kubelet() {
        let p = RetryPolicy::default();
        // The apiserver's own unavailability carries a hint; a kubelet's does not.
        let kubelet_down = status(Reason::ServiceUnavailable);
        let mut etcd_down = status(Reason::ServiceUnavailable);
        if let ApiError::Status { retry_after, .. } = &mut etcd_down {
            *retry_after = Some(Duration::from_secs(1));
        }
        assert!(p
            .next_delay(&kubelet_down, Idempotency::Relayed, 1)
            .is_none());
        assert!(p.next_delay(&etcd_down, Idempotency::Relayed, 1).is_some());
        for e in [
            transport(TransportFailure::InFlight),
            status(Reason::TooManyRequests),
        ] {
            assert!(p.next_delay(&e, Idempotency::Relayed, 1).is_some(), "{e:?}");
        }
        assert!(p
            .next_delay(&status(Reason::BadRequest), Idempotency::Relayed, 1)
            .is_none());
    }

    #[test]
    fn attempts_are_bounded() {
        let p = RetryPolicy::default();
        let e = transport(TransportFailure::Connect);
        assert!(p.next_delay(&e, Idempotency::Idempotent, 4).is_some());
        assert!(p.next_delay(&e, Idempotency::Idempotent, 5).is_none());
        assert!(RetryPolicy::none()
            .next_delay(&e, Idempotency::Idempotent, 1)
            .is_none());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1), Duration::from_millis(100));
        assert_eq!(p.backoff(2), Duration::from_millis(200));
        assert_eq!(p.backoff(5), Duration::from_millis(1600));
        assert_eq!(p.backoff(6), Duration::from_secs(2));
        assert_eq!(p.backoff(60), Duration::from_secs(2));
        let e = transport(TransportFailure::Connect);
        for _ in 0..50 {
            let d = p.next_delay(&e, Idempotency::Idempotent, 3).unwrap();
            assert!(d >= Duration::from_millis(200) && d <= Duration::from_millis(400));
        }
    }

    #[test]
    fn retry_after_is_honoured_within_a_cap() {
        let p = RetryPolicy::default();
        let mut e = status(Reason::TooManyRequests);
        if let ApiError::Status { retry_after, .. } = &mut e {
            *retry_after = Some(Duration::from_secs(3));
        }
        assert_eq!(
            p.next_delay(&e, Idempotency::Mutating, 1),
            Some(Duration::from_secs(3))
        );
        if let ApiError::Status { retry_after, .. } = &mut e {
            *retry_after = Some(Duration::from_secs(600));
        }
        assert_eq!(
            p.next_delay(&e, Idempotency::Idempotent, 1),
            Some(MAX_RETRY_AFTER)
        );
    }
}

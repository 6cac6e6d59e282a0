//! Lease deadlines.
//!
//! The state machine knows which leases exist and their granted TTLs; *when* they expire is
//! decided by the leader alone, from its own monotonic clock, and carried out by proposing a
//! `LeaseRevoke` through the log (as etcd's lessor does). Followers keep no deadlines that
//! matter: when a member becomes leader it [`Lessor::promote`]s, giving every lease a fresh
//! deadline of TTL plus one election timeout, so a leader change never expires leases early.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use parking_lot::Mutex;

#[derive(Default)]
pub struct Lessor {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// lease id → (granted TTL in seconds, deadline).
    leases: HashMap<i64, (i64, Instant)>,
    /// Leases whose revoke has been proposed and not yet applied, so it is proposed once.
    revoking: HashMap<i64, Instant>,
}

impl Lessor {
    /// Called by the state machine when a grant is applied.
    pub fn granted(&self, id: i64, ttl: i64) {
        let deadline = Instant::now() + ttl_duration(ttl);
        self.inner.lock().leases.insert(id, (ttl, deadline));
    }

    /// Called by the state machine when a revoke is applied.
    pub fn revoked(&self, id: i64) {
        let mut inner = self.inner.lock();
        inner.leases.remove(&id);
        inner.revoking.remove(&id);
    }

    /// Replaces every lease (after a snapshot is installed or at start).
    pub fn reset(&self, leases: &[(i64, i64)], extend: Duration) {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        inner.leases = leases
            .iter()
            .map(|&(id, ttl)| (id, (ttl, now + ttl_duration(ttl) + extend)))
            .collect();
        inner.revoking.clear();
    }

    /// This member became leader: every lease gets TTL + `extend` from now.
    pub fn promote(&self, extend: Duration) {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        for (ttl, deadline) in inner.leases.values_mut() {
            *deadline = now + ttl_duration(*ttl) + extend;
        }
        inner.revoking.clear();
    }

    /// Renews a lease; returns its TTL, or None if it does not exist.
    pub fn renew(&self, id: i64) -> Option<i64> {
        let mut inner = self.inner.lock();
        let (ttl, deadline) = inner.leases.get_mut(&id)?;
        *deadline = Instant::now() + ttl_duration(*ttl);
        Some(*ttl)
    }

    /// (remaining seconds, granted TTL), or None if it does not exist.
    pub fn time_to_live(&self, id: i64) -> Option<(i64, i64)> {
        let inner = self.inner.lock();
        let (ttl, deadline) = inner.leases.get(&id)?;
        let left = deadline.saturating_duration_since(Instant::now());
        // etcd rounds the remaining TTL up to whole seconds.
        let secs = left.as_secs() as i64 + i64::from(left.subsec_nanos() > 0);
        Some((secs, *ttl))
    }

    /// Leases past their deadline whose revoke has not been proposed in the last `retry`.
    pub fn take_expired(&self, retry: Duration) -> Vec<i64> {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        let expired: Vec<i64> = inner
            .leases
            .iter()
            .filter(|(_, (_, deadline))| *deadline <= now)
            .map(|(id, _)| *id)
            .filter(|id| {
                inner
                    .revoking
                    .get(id)
                    .is_none_or(|since| now.duration_since(*since) >= retry)
            })
            .collect();
        for id in &expired {
            inner.revoking.insert(*id, now);
        }
        expired
    }
}

fn ttl_duration(ttl: i64) -> Duration {
    Duration::from_secs(ttl.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_proposed_once_per_retry_window() {
        let l = Lessor::default();
        l.reset(&[(1, 0)], Duration::ZERO);
        assert_eq!(l.take_expired(Duration::from_secs(60)), vec![1]);
        assert!(l.take_expired(Duration::from_secs(60)).is_empty());
        l.revoked(1);
        assert!(l.take_expired(Duration::ZERO).is_empty());
    }

    #[test]
    fn promote_extends_deadlines() {
        let l = Lessor::default();
        l.reset(&[(7, 0)], Duration::ZERO);
        l.promote(Duration::from_secs(30));
        assert!(l.take_expired(Duration::ZERO).is_empty());
        let (left, granted) = l.time_to_live(7).unwrap();
        assert!(left > 0 && granted == 0);
        assert_eq!(l.renew(8), None);
    }
}

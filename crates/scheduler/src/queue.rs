//! The scheduling queue: which pending pod to try next, and when to try a pod again.
//! Upstream's `PriorityQueue` without priorities (kube-lite pods have none):
//!
//! * **active**: pods to try now, first in first out;
//! * **backoff**: pods that failed recently and wait `1s × 2^(attempts-1)`, at most 10s
//!   (upstream's `podInitialBackoff` / `podMaxBackoff`) before going back to active;
//! * **unschedulable**: pods no node fits. They wait for a change in the cluster that may make
//!   room ([`SchedulingQueue::move_all`]: a node added or changed, a bound pod gone), and then
//!   go through backoff; after [`UNSCHEDULABLE_MAX_WAIT`] they are retried anyway (upstream's
//!   `podMaxInUnschedulablePodsDuration`, the safety net for a missed event).
//!
//! A move request that arrives while a pod is being scheduled sends that pod to backoff rather
//! than unschedulable when its attempt fails (upstream's `moveRequestCycle`): the change it
//! missed may be the one that makes it fit.
//!
//! Pure: every method takes the time; [`crate::run`] wraps it in a lock and a wake-up.
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use kl_api::Pod;

use crate::cache::{pod_key, PodKey};

/// Upstream's `podInitialBackoffDuration`.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Upstream's `podMaxBackoffDuration`.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Upstream's `podMaxInUnschedulablePodsDuration`.
pub const UNSCHEDULABLE_MAX_WAIT: Duration = Duration::from_secs(5 * 60);

/// The backoff after `attempts` attempts: 1s, 2s, 4s, 8s, 10s, 10s, ...
pub fn backoff_duration(attempts: u32) -> Duration {
    let mut d = INITIAL_BACKOFF;
    for _ in 1..attempts {
        if d > MAX_BACKOFF - d {
            return MAX_BACKOFF;
        }
        d += d;
    }
    d.min(MAX_BACKOFF)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Active,
    /// Waiting until the instant.
    Backoff(Instant),
    /// Since the instant.
    Unschedulable(Instant),
    /// Popped, being scheduled.
    InFlight,
}

#[derive(Debug)]
struct Entry {
    pod: Pod,
    attempts: u32,
    last_attempt: Option<Instant>,
    state: State,
    /// The scheduling cycle it was popped in.
    cycle: u64,
}

/// A popped pod.
#[derive(Debug, Clone)]
pub struct QueuedPod {
    pub pod: Pod,
    /// Attempts so far, this one included.
    pub attempts: u32,
    pub cycle: u64,
}

/// How many pods are where (the `scheduler_pending_pods` gauge).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub active: usize,
    pub backoff: usize,
    pub unschedulable: usize,
}

/// See the module doc.
#[derive(Debug, Default)]
pub struct SchedulingQueue {
    pods: HashMap<PodKey, Entry>,
    active: VecDeque<PodKey>,
    /// (ready at, sequence, key): ordered by when the backoff ends.
    backoff: BTreeSet<(Instant, u64, PodKey)>,
    seq: u64,
    scheduling_cycle: u64,
    move_request_cycle: u64,
}

/// Whether an update of a pending pod could change where it fits (anything but its status and
/// resourceVersion, as upstream's `isPodUpdated`).
fn pod_changed(old: &Pod, new: &Pod) -> bool {
    let strip = |p: &Pod| {
        let mut p = p.clone();
        p.status = None;
        if let Some(m) = p.metadata.as_mut() {
            m.resource_version.clear();
            m.generation = 0;
        }
        p
    };
    strip(old) != strip(new)
}

impl SchedulingQueue {
    pub fn new() -> SchedulingQueue {
        SchedulingQueue::default()
    }

    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    pub fn contains(&self, key: &str) -> bool {
        self.pods.contains_key(key)
    }

    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for e in self.pods.values() {
            match e.state {
                State::Active => c.active += 1,
                State::Backoff(_) => c.backoff += 1,
                State::Unschedulable(_) => c.unschedulable += 1,
                State::InFlight => {}
            }
        }
        c
    }

    /// A pending pod appeared, or changed. New pods go to active; an unschedulable pod whose
    /// spec or labels changed is moved (to backoff if still backing off); otherwise only the
    /// stored copy is refreshed.
    pub fn add_or_update(&mut self, pod: Pod, now: Instant) {
        let key = pod_key(&pod);
        let Some(e) = self.pods.get_mut(&key) else {
            self.pods.insert(
                key.clone(),
                Entry {
                    pod,
                    attempts: 0,
                    last_attempt: None,
                    state: State::Active,
                    cycle: 0,
                },
            );
            self.active.push_back(key);
            return;
        };
        let changed = pod_changed(&e.pod, &pod);
        e.pod = pod;
        if changed && matches!(e.state, State::Unschedulable(_)) {
            self.requeue(&key, now);
        }
    }

    /// The pod is gone, bound, or being deleted: forget it.
    pub fn delete(&mut self, key: &str) {
        if let Some(e) = self.pods.remove(key) {
            match e.state {
                State::Active => self.active.retain(|k| k != key),
                State::Backoff(at) => {
                    self.backoff.retain(|(t, _, k)| !(*t == at && k == key));
                }
                _ => {}
            }
        }
    }

    /// Moves pods whose backoff ended to active, and pods unschedulable for longer than
    /// [`UNSCHEDULABLE_MAX_WAIT`] onwards.
    pub fn flush(&mut self, now: Instant) {
        while let Some(first) = self.backoff.first().cloned() {
            if first.0 > now {
                break;
            }
            self.backoff.pop_first();
            if let Some(e) = self.pods.get_mut(&first.2) {
                if e.state == State::Backoff(first.0) {
                    e.state = State::Active;
                    self.active.push_back(first.2);
                }
            }
        }
        let stale: Vec<PodKey> = self
            .pods
            .iter()
            .filter(|(_, e)| {
                matches!(e.state, State::Unschedulable(since)
                    if now.saturating_duration_since(since) >= UNSCHEDULABLE_MAX_WAIT)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            self.requeue(&k, now);
        }
    }

    /// The next pod to try, if any is active (after [`SchedulingQueue::flush`]).
    pub fn pop(&mut self, now: Instant) -> Option<QueuedPod> {
        self.flush(now);
        let key = self.active.pop_front()?;
        self.scheduling_cycle += 1;
        let e = self.pods.get_mut(&key)?;
        e.state = State::InFlight;
        e.attempts += 1;
        e.last_attempt = Some(now);
        e.cycle = self.scheduling_cycle;
        Some(QueuedPod {
            pod: e.pod.clone(),
            attempts: e.attempts,
            cycle: e.cycle,
        })
    }

    /// When the next backoff ends (to sleep until then).
    pub fn next_backoff(&self) -> Option<Instant> {
        self.backoff.first().map(|(t, _, _)| *t)
    }

    /// The latest copy of a popped pod (it may have changed while it was scheduled).
    pub fn latest(&self, key: &str) -> Option<&Pod> {
        self.pods.get(key).map(|e| &e.pod)
    }

    /// A popped pod fit nowhere: park it as unschedulable, or in backoff when the cluster
    /// changed during its attempt.
    pub fn unschedulable(&mut self, key: &str, now: Instant) {
        let move_cycle = self.move_request_cycle;
        let Some(e) = self.pods.get_mut(key) else {
            return;
        };
        if e.state != State::InFlight {
            return;
        }
        if move_cycle >= e.cycle {
            self.park_in_backoff(key, now);
        } else {
            e.state = State::Unschedulable(now);
        }
    }

    /// A popped pod failed for another reason (an API error): try it again after its backoff.
    pub fn error(&mut self, key: &str, now: Instant) {
        if self
            .pods
            .get(key)
            .is_some_and(|e| e.state == State::InFlight)
        {
            self.park_in_backoff(key, now);
        }
    }

    /// A placed pod's Bind failed (it had left the queue): back in, after its backoff.
    pub fn add_after_error(&mut self, pod: Pod, attempts: u32, now: Instant) {
        let key = pod_key(&pod);
        if self.pods.contains_key(&key) {
            return;
        }
        self.pods.insert(
            key.clone(),
            Entry {
                pod,
                attempts,
                last_attempt: Some(now),
                state: State::InFlight,
                cycle: self.scheduling_cycle,
            },
        );
        self.park_in_backoff(&key, now);
    }

    /// A popped pod was placed: it leaves the queue.
    pub fn done(&mut self, key: &str) {
        if self
            .pods
            .get(key)
            .is_some_and(|e| e.state == State::InFlight)
        {
            self.pods.remove(key);
        }
    }

    /// Something changed that may make unschedulable pods fit: move them all on.
    pub fn move_all(&mut self, now: Instant) {
        let keys: Vec<PodKey> = self
            .pods
            .iter()
            .filter(|(_, e)| matches!(e.state, State::Unschedulable(_)))
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.requeue(&k, now);
        }
        self.move_request_cycle = self.scheduling_cycle;
    }

    /// To backoff if the pod's backoff has not ended, else to active.
    fn requeue(&mut self, key: &str, now: Instant) {
        let Some(e) = self.pods.get(key) else {
            return;
        };
        let ready_at = e
            .last_attempt
            .map(|t| t + backoff_duration(e.attempts.max(1)));
        match ready_at {
            Some(t) if t > now => self.park_in_backoff(key, now),
            _ => {
                if let Some(e) = self.pods.get_mut(key) {
                    e.state = State::Active;
                    self.active.push_back(key.to_string());
                }
            }
        }
    }

    fn park_in_backoff(&mut self, key: &str, now: Instant) {
        let Some(e) = self.pods.get_mut(key) else {
            return;
        };
        let at = e.last_attempt.unwrap_or(now) + backoff_duration(e.attempts.max(1));
        e.state = State::Backoff(at);
        self.seq += 1;
        self.backoff.insert((at, self.seq, key.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn backoff_doubles_to_ten_seconds() {
        let got: Vec<u64> = (1..=7).map(|a| backoff_duration(a).as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 10, 10, 10]);
        assert_eq!(backoff_duration(1000), MAX_BACKOFF);
    }

    #[test]
    fn fifo_and_done() {
        let t = Instant::now();
        let mut q = SchedulingQueue::new();
        q.add_or_update(pod("a").build(), t);
        q.add_or_update(pod("b").build(), t);
        q.add_or_update(pod("a").cpu("1").build(), t);
        let a = q.pop(t).unwrap();
        assert_eq!(pod_key(&a.pod), "default/a");
        assert_eq!(a.attempts, 1);
        q.done("default/a");
        assert_eq!(pod_key(&q.pop(t).unwrap().pod), "default/b");
        assert!(q.pop(t).is_none());
        q.delete("default/b");
        assert!(q.is_empty());
    }

    #[test]
    fn unschedulable_pods_wait_for_a_move_then_backoff() {
        let t = Instant::now();
        let mut q = SchedulingQueue::new();
        q.add_or_update(pod("a").build(), t);
        q.pop(t).unwrap();
        q.unschedulable("default/a", t);
        assert_eq!(q.counts().unschedulable, 1);
        assert!(
            q.pop(t + 60 * S).is_none(),
            "no retry without a cluster change"
        );
        // A node appears 500ms later: the pod waits for the rest of its 1s backoff.
        q.move_all(t + S / 2);
        assert_eq!(q.counts().backoff, 1);
        assert!(q.pop(t + S / 2).is_none());
        assert_eq!(q.next_backoff(), Some(t + S));
        let again = q.pop(t + S).unwrap();
        assert_eq!(again.attempts, 2);
        // Second failure; a move 5s later finds the 2s backoff over: straight to active.
        q.unschedulable("default/a", t + S);
        q.move_all(t + 6 * S);
        assert_eq!(q.counts().active, 1);
        assert_eq!(q.pop(t + 6 * S).unwrap().attempts, 3);
    }

    #[test]
    fn a_move_during_the_attempt_sends_the_pod_park_in_backoff() {
        let t = Instant::now();
        let mut q = SchedulingQueue::new();
        q.add_or_update(pod("a").build(), t);
        q.pop(t).unwrap();
        q.move_all(t);
        q.unschedulable("default/a", t);
        assert_eq!(q.counts().backoff, 1);
        assert!(q.pop(t + S).is_some());
    }

    #[test]
    fn leftover_unschedulable_pods_are_retried_after_five_minutes() {
        let t = Instant::now();
        let mut q = SchedulingQueue::new();
        q.add_or_update(pod("a").build(), t);
        q.pop(t).unwrap();
        q.unschedulable("default/a", t);
        assert!(q.pop(t + UNSCHEDULABLE_MAX_WAIT - S).is_none());
        assert!(q.pop(t + UNSCHEDULABLE_MAX_WAIT).is_some());
    }

    #[test]
    fn updates_move_unschedulable_pods_only_when_the_spec_changes() {
        let t = Instant::now();
        let mut q = SchedulingQueue::new();
        q.add_or_update(pod("a").build(), t);
        q.pop(t).unwrap();
        q.unschedulable("default/a", t);
        // Our own status write comes back through the watch: nothing moves.
        q.add_or_update(pod("a").phase("Pending").build(), t + 2 * S);
        assert_eq!(q.counts().unschedulable, 1);
        q.add_or_update(pod("a").selector("disk", "ssd").build(), t + 2 * S);
        assert_eq!(q.counts().active, 1);
        let p = q.pop(t + 2 * S).unwrap();
        assert_eq!(p.pod.spec.unwrap().node_selector.len(), 1);
    }

    #[test]
    fn errors_back_off() {
        let t = Instant::now();
        let mut q = SchedulingQueue::new();
        q.add_or_update(pod("a").build(), t);
        q.pop(t).unwrap();
        q.error("default/a", t);
        assert!(q.pop(t).is_none());
        assert_eq!(q.pop(t + S).unwrap().attempts, 2);
        q.error("default/a", t + S);
        assert!(q.pop(t + 2 * S).is_none());
        assert!(q.pop(t + 3 * S).is_some());
        q.delete("default/a");
        assert!(q.is_empty());
    }
}

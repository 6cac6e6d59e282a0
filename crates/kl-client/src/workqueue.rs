//! A rate-limited work queue of keys for reconcilers: client-go's `workqueue` (the
//! rate-limiting, delaying, de-duplicating queue every upstream controller uses).
//!
//! Guarantees, as upstream:
//! * **De-duplication**: a key added many times before a worker takes it is handed out once.
//! * **Never concurrently**: a key being processed (between [`WorkQueue::get`] and
//!   [`WorkQueue::done`]) that is added again is handed out again only after `done`: two
//!   workers never reconcile the same key at once, and the change that re-added it is not lost.
//! * **Per-item exponential backoff** ([`WorkQueue::add_rate_limited`]): the n-th consecutive
//!   failure of a key waits `base × 2^(n-1)`, capped (client-go's
//!   `DefaultItemBasedRateLimiter`: 5 ms doubling up to 1000 s; see [`Backoff`]).
//!   [`WorkQueue::forget`] (on success) resets it.
//! * **Delays** ([`WorkQueue::add_after`]): a key waits at least that long; a later, shorter
//!   request wins (the key is ready at the earliest time asked for).
//! * **Shutdown** ([`WorkQueue::shut_down`]): `get` returns None at once; adds are ignored.
//!
//! No background task: waiting workers move due delayed keys into the queue themselves.
//!
//! ```
//! # tokio_test_block_on(async {
//! use kl_client::workqueue::WorkQueue;
//! let q: WorkQueue<String> = WorkQueue::default();
//! q.add("default/web".to_string());
//! q.add("default/web".to_string()); // de-duplicated
//! let key = q.get().await.unwrap();
//! assert_eq!(key, "default/web");
//! assert_eq!(q.len(), 0);
//! q.forget(&key); // it worked: reset its backoff
//! q.done(&key);
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
//! # }
//! ```
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use parking_lot_free::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

/// std's mutex, poisoning ignored: the queue's state is valid after any panic elsewhere
/// (every critical section is a few map operations that cannot panic halfway).
mod parking_lot_free {
    pub struct Mutex<T>(std::sync::Mutex<T>);
    impl<T> Mutex<T> {
        pub fn new(t: T) -> Self {
            Mutex(std::sync::Mutex::new(t))
        }
        pub fn lock(&self) -> std::sync::MutexGuard<'_, T> {
            self.0.lock().unwrap_or_else(|e| e.into_inner())
        }
    }
}

/// Per-item exponential backoff: the delay before the n-th retry (n = 1, 2, ...) of a key is
/// `base × 2^(n-1)`, at most `max`.
///
/// ```
/// use std::time::Duration;
/// let b = kl_client::workqueue::Backoff::default();
/// assert_eq!(b.delay(1), Duration::from_millis(5));
/// assert_eq!(b.delay(2), Duration::from_millis(10));
/// assert_eq!(b.delay(100), Duration::from_secs(1000));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    /// client-go's `DefaultItemBasedRateLimiter`: 5 ms, doubling, capped at 1000 s.
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(5),
            max: Duration::from_secs(1000),
        }
    }
}

impl Backoff {
    /// The wait before retry number `failures` (1-based).
    pub fn delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1);
        if exp >= 32 {
            return self.max;
        }
        self.base
            .checked_mul(1u32 << exp)
            .map_or(self.max, |d| d.min(self.max))
    }
}

struct State<K> {
    /// Keys ready to be handed out, in order.
    queue: VecDeque<K>,
    /// Keys that need processing (in `queue`, or processing and re-added).
    dirty: HashSet<K>,
    /// Keys handed out and not yet `done`.
    processing: HashSet<K>,
    /// Delayed keys: when each becomes ready (the earliest asked for).
    waiting: HashMap<K, Instant>,
    /// The same, ordered by time (with a sequence number to keep equal instants apart).
    waiting_order: BTreeSet<(Instant, u64)>,
    waiting_keys: HashMap<u64, K>,
    seq: u64,
    /// Consecutive failures per key, for the backoff.
    failures: HashMap<K, u32>,
    shut_down: bool,
}

/// A de-duplicating, rate-limited queue of keys. Cheap to clone (clones share the queue).
pub struct WorkQueue<K> {
    state: Arc<Mutex<State<K>>>,
    /// Wakes waiting workers when a key becomes ready, or on shutdown.
    ready: Arc<Notify>,
    backoff: Backoff,
}

impl<K> Clone for WorkQueue<K> {
    fn clone(&self) -> Self {
        WorkQueue {
            state: self.state.clone(),
            ready: self.ready.clone(),
            backoff: self.backoff,
        }
    }
}

impl<K: Clone + Eq + Hash + Send + 'static> Default for WorkQueue<K> {
    fn default() -> Self {
        WorkQueue::new(Backoff::default())
    }
}

impl<K: Clone + Eq + Hash + Send + 'static> WorkQueue<K> {
    pub fn new(backoff: Backoff) -> Self {
        WorkQueue {
            state: Arc::new(Mutex::new(State {
                queue: VecDeque::new(),
                dirty: HashSet::new(),
                processing: HashSet::new(),
                waiting: HashMap::new(),
                waiting_order: BTreeSet::new(),
                waiting_keys: HashMap::new(),
                seq: 0,
                failures: HashMap::new(),
                shut_down: false,
            })),
            ready: Arc::new(Notify::new()),
            backoff,
        }
    }

    /// Marks `key` as needing processing now.
    pub fn add(&self, key: K) {
        let mut s = self.state.lock();
        if Self::add_locked(&mut s, key) {
            drop(s);
            self.ready.notify_waiters();
        }
    }

    /// Whether the key was queued (so a waiter should wake).
    fn add_locked(s: &mut State<K>, key: K) -> bool {
        if s.shut_down || s.dirty.contains(&key) {
            return false;
        }
        s.dirty.insert(key.clone());
        if s.processing.contains(&key) {
            // Handed out again by `done`.
            return false;
        }
        s.queue.push_back(key);
        true
    }

    /// Adds `key` once `delay` has passed (at once when zero).
    pub fn add_after(&self, key: K, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let at = Instant::now() + delay;
        let mut s = self.state.lock();
        if s.shut_down {
            return;
        }
        match s.waiting.get(&key) {
            Some(existing) if *existing <= at => return,
            _ => {}
        }
        s.waiting.insert(key.clone(), at);
        s.seq += 1;
        let seq = s.seq;
        s.waiting_order.insert((at, seq));
        s.waiting_keys.insert(seq, key);
        drop(s);
        // A waiter may need to sleep less now.
        self.ready.notify_waiters();
    }

    /// Adds `key` after its backoff, and counts one more failure for it.
    pub fn add_rate_limited(&self, key: K) {
        let failures = {
            let mut s = self.state.lock();
            let n = s.failures.entry(key.clone()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        self.add_after(key, self.backoff.delay(failures));
    }

    /// Resets `key`'s backoff (call after it was processed successfully).
    pub fn forget(&self, key: &K) {
        self.state.lock().failures.remove(key);
    }

    /// How many consecutive failures `key` has had.
    pub fn num_requeues(&self, key: &K) -> u32 {
        self.state.lock().failures.get(key).copied().unwrap_or(0)
    }

    /// Keys ready to be handed out.
    pub fn len(&self) -> usize {
        self.state.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops the queue: `get` returns None (at once, for waiting workers too) and adds are
    /// ignored.
    pub fn shut_down(&self) {
        self.state.lock().shut_down = true;
        self.ready.notify_waiters();
    }

    pub fn is_shut_down(&self) -> bool {
        self.state.lock().shut_down
    }

    /// The next key to process, waiting for one; None once the queue is shut down. The caller
    /// must call [`WorkQueue::done`] with it when finished. Cancellation-safe: a key is only
    /// taken when this returns it.
    pub async fn get(&self) -> Option<K> {
        loop {
            let notified = self.ready.notified();
            tokio::pin!(notified);
            // Register before looking, so that an add between the look and the wait is seen.
            notified.as_mut().enable();
            let next_due = {
                let mut s = self.state.lock();
                if s.shut_down {
                    return None;
                }
                Self::promote_due(&mut s, Instant::now());
                if let Some(key) = s.queue.pop_front() {
                    s.dirty.remove(&key);
                    s.processing.insert(key.clone());
                    return Some(key);
                }
                s.waiting_order.first().map(|(at, _)| *at)
            };
            match next_due {
                Some(at) => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Moves delayed keys whose time has come into the queue.
    fn promote_due(s: &mut State<K>, now: Instant) {
        while let Some(&(at, seq)) = s.waiting_order.first() {
            if at > now {
                break;
            }
            s.waiting_order.pop_first();
            let Some(key) = s.waiting_keys.remove(&seq) else {
                continue;
            };
            // A stale entry (the key was re-scheduled earlier) is skipped.
            if s.waiting.get(&key) == Some(&at) {
                s.waiting.remove(&key);
                Self::add_locked(s, key);
            }
        }
    }

    /// Ends processing of `key`; if it was added meanwhile, it is queued again now.
    pub fn done(&self, key: &K) {
        let mut s = self.state.lock();
        s.processing.remove(key);
        if s.dirty.contains(key) && !s.shut_down {
            s.queue.push_back(key.clone());
            drop(s);
            self.ready.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dedups_and_never_hands_out_a_key_twice_at_once() {
        let q: WorkQueue<&str> = WorkQueue::default();
        q.add("a");
        q.add("b");
        q.add("a");
        assert_eq!(q.len(), 2);
        let a = q.get().await.unwrap();
        assert_eq!(a, "a");
        // Re-added while processing: not handed out until done.
        q.add("a");
        assert_eq!(q.get().await.unwrap(), "b");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), q.get())
                .await
                .is_err(),
            "a is still being processed"
        );
        q.done(&"a");
        assert_eq!(q.get().await.unwrap(), "a");
        q.done(&"a");
        q.done(&"b");
        assert!(q.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_and_forget_resets() {
        let q: WorkQueue<&str> = WorkQueue::new(Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        });
        let start = Instant::now();
        q.add_rate_limited("k");
        assert_eq!(q.get().await, Some("k"));
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        q.done(&"k");
        q.add_rate_limited("k");
        assert_eq!(q.get().await, Some("k"));
        assert_eq!(start.elapsed(), Duration::from_millis(300));
        assert_eq!(q.num_requeues(&"k"), 2);
        q.forget(&"k");
        q.done(&"k");
        assert_eq!(q.num_requeues(&"k"), 0);
        for _ in 0..10 {
            q.add_rate_limited("k");
        }
        // The delay is capped.
        assert_eq!(
            Backoff::default().delay(u32::MAX),
            Duration::from_secs(1000)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn add_after_keeps_the_earliest_time_and_shutdown_wakes_workers() {
        let q: WorkQueue<&str> = WorkQueue::default();
        let start = Instant::now();
        q.add_after("x", Duration::from_secs(10));
        q.add_after("x", Duration::from_secs(2));
        q.add_after("x", Duration::from_secs(5));
        assert_eq!(q.get().await, Some("x"));
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        q.done(&"x");
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.get().await });
        tokio::task::yield_now().await;
        q.shut_down();
        assert_eq!(waiter.await.unwrap(), None);
        q.add("y");
        assert_eq!(q.get().await, None);
    }
}

//! Informers: list + watch one kind into a local cache ([`Store`]) and tell subscribers what
//! changed. client-go's Reflector + Indexer + shared informer, composed like kube-runtime's
//! watcher → reflector: the [`Informer`] owns the loop, the [`Store`] is a cheap read handle
//! any number of controllers share, and each [`Informer::subscribe`]r gets its own unbounded
//! stream of [`Event`]s (unbounded as client-go's listeners: a slow subscriber must never make
//! the informer drop an event).
//!
//! ## The watcher state machine
//!
//! ```text
//!            list ok                      watch set up
//!  ┌───────┐ ───────▶ ┌────────────────┐ ─────────────▶ ┌──────────────────────┐
//!  │ Empty │          │ Resume { rv }  │                │ Watching { rv, ... } │──┐ event: apply,
//!  └───────┘ ◀─────── └────────────────┘ ◀───────────── └──────────────────────┘◀─┘ rv = its rv
//!    ▲  │ list err:    ▲  │ set-up err:     stream ended,       │   (bookmarks too)
//!    │  └ backoff ─────┘  └ backoff, retry  or any error        │
//!    │                                      (after backoff)     │
//!    └───────────────── Expired (OUT_OF_RANGE): relist ─────────┘
//! ```
//!
//! * **Empty**: list everything (every page), replace the cache with it, diffing against what
//!   was cached (so a relist tells subscribers about objects that changed or vanished while
//!   no watch was open). The first successful list marks the store synced.
//! * **Resume { rv }**: start a watch from `rv`, the list's version or the last event's
//!   (bookmarks included, so a quiet watch still resumes from a recent version).
//! * **Watching**: apply each event to the cache and fan it out. A stream that ends (the
//!   server or the lb cut it) resumes at once from the last version; an error resumes after
//!   an exponential backoff (800 ms doubling to 30 s, kube-runtime's default, reset by any
//!   success); `Expired` (the version is older than the apiserver's watch cache) relists.
//! * **Resync** (optional period): every cached object is handed to subscribers again as an
//!   [`Event::Updated`] with old = new, so level-triggered reconcilers get a periodic second
//!   chance (client-go's resyncPeriod).
//!
//! The informer never writes: it only lists and watches.
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use kl_api::Resource;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::api::Api;
use crate::error::ApiError;
use crate::params::{ListParams, WatchParams};
use crate::watch::{WatchEvent, WatchStream};

/// client-go's `MetaNamespaceKeyFunc`: `namespace/name`, or `name` for cluster-scoped objects.
pub fn key_of<K: Resource>(obj: &K) -> String {
    match obj.meta() {
        Some(m) if !m.namespace.is_empty() => format!("{}/{}", m.namespace, m.name),
        Some(m) => m.name.clone(),
        None => String::new(),
    }
}

/// `namespace/name` (or `name` when namespace is empty): the key [`key_of`] gives.
pub fn make_key(namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        name.to_string()
    } else {
        format!("{namespace}/{name}")
    }
}

/// Splits a key from [`key_of`] into namespace ("" for cluster-scoped) and name.
pub fn split_key(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

/// What changed in the cache.
#[derive(Debug, Clone)]
pub enum Event<K> {
    Added(Arc<K>),
    /// Also sent on resync, with `old` and `new` the same object.
    Updated {
        old: Arc<K>,
        new: Arc<K>,
    },
    /// The object's last known state (after a relist, possibly older than its real end).
    Deleted(Arc<K>),
}

impl<K: Resource> Event<K> {
    /// The object as it now is (for a deletion: as it last was).
    pub fn object(&self) -> &Arc<K> {
        match self {
            Event::Added(o) | Event::Deleted(o) => o,
            Event::Updated { new, .. } => new,
        }
    }

    pub fn key(&self) -> String {
        key_of(self.object().as_ref())
    }
}

struct StoreInner<K> {
    items: BTreeMap<String, Arc<K>>,
    subscribers: Vec<mpsc::UnboundedSender<Event<K>>>,
}

impl<K: Resource> StoreInner<K> {
    fn send(&mut self, ev: Event<K>) {
        self.subscribers.retain(|s| s.send(ev.clone()).is_ok());
    }
}

/// A read handle on an informer's cache. Cheap to clone; reads never block on the network.
pub struct Store<K> {
    inner: Arc<RwLock<StoreInner<K>>>,
    synced: watch::Receiver<bool>,
}

impl<K> Clone for Store<K> {
    fn clone(&self) -> Self {
        Store {
            inner: self.inner.clone(),
            synced: self.synced.clone(),
        }
    }
}

impl<K: Resource> Store<K> {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, StoreInner<K>> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, StoreInner<K>> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached object with this key (see [`key_of`]).
    pub fn get(&self, key: &str) -> Option<Arc<K>> {
        self.read().items.get(key).cloned()
    }

    /// The cached object `namespace/name` ("" namespace for cluster-scoped kinds).
    pub fn get_named(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        self.get(&make_key(namespace, name))
    }

    /// Every cached object, in key order.
    pub fn list(&self) -> Vec<Arc<K>> {
        self.read().items.values().cloned().collect()
    }

    /// The cached objects for which `f` holds.
    pub fn filter(&self, f: impl Fn(&K) -> bool) -> Vec<Arc<K>> {
        self.read()
            .items
            .values()
            .filter(|o| f(o))
            .cloned()
            .collect()
    }

    /// The cached objects of one namespace.
    pub fn list_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        let prefix = format!("{namespace}/");
        self.read()
            .items
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.read().items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the first list has been cached.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits until the first list has been cached (client-go's `WaitForCacheSync`).
    /// Returns false if the informer stopped first.
    pub async fn wait_synced(&self) -> bool {
        let mut rx = self.synced.clone();
        let ok = rx.wait_for(|s| *s).await.is_ok();
        ok
    }

    /// A new subscriber: it first gets an [`Event::Added`] for every object already cached,
    /// then every change, in order.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<Event<K>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inner = self.write();
        for o in inner.items.values() {
            let _ = tx.send(Event::Added(o.clone()));
        }
        inner.subscribers.push(tx);
        rx
    }

    /// Applies one watch event.
    fn apply(&self, ev: WatchEvent<K>) {
        let mut inner = self.write();
        match ev {
            WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                let key = key_of(&o);
                let new = Arc::new(o);
                let ev = match inner.items.insert(key, new.clone()) {
                    Some(old) => Event::Updated { old, new },
                    None => Event::Added(new),
                };
                inner.send(ev);
            }
            WatchEvent::Deleted(o) => {
                let key = key_of(&o);
                inner.items.remove(&key);
                inner.send(Event::Deleted(Arc::new(o)));
            }
            WatchEvent::Bookmark { .. } => {}
        }
    }

    /// Replaces the cache with a fresh list, telling subscribers the difference.
    fn replace(&self, items: Vec<K>) {
        let mut inner = self.write();
        let mut fresh: BTreeMap<String, Arc<K>> = items
            .into_iter()
            .map(|o| (key_of(&o), Arc::new(o)))
            .collect();
        let old = std::mem::take(&mut inner.items);
        let mut events = Vec::new();
        for (key, o) in &old {
            if !fresh.contains_key(key) {
                events.push(Event::Deleted(o.clone()));
            }
        }
        for (key, new) in &mut fresh {
            match old.get(key) {
                None => events.push(Event::Added(new.clone())),
                Some(prev) if rv(prev.as_ref()) == rv(new.as_ref()) => *new = prev.clone(),
                Some(prev) => events.push(Event::Updated {
                    old: prev.clone(),
                    new: new.clone(),
                }),
            }
        }
        inner.items = fresh;
        for ev in events {
            inner.send(ev);
        }
    }

    /// Hands every cached object to subscribers again.
    fn resync(&self) {
        let mut inner = self.write();
        let all: Vec<Arc<K>> = inner.items.values().cloned().collect();
        for o in all {
            inner.send(Event::Updated {
                old: o.clone(),
                new: o,
            });
        }
    }
}

fn rv<K: Resource>(o: &K) -> &str {
    o.meta().map_or("", |m| m.resource_version.as_str())
}

/// What an [`Informer`] watches and how. Builder-style:
///
/// ```
/// use std::time::Duration;
/// let c = kl_client::informer::InformerConfig::default()
///     .labels("app=web")
///     .resync(Some(Duration::from_secs(30)));
/// assert_eq!(c.label_selector, "app=web");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InformerConfig {
    pub label_selector: String,
    pub field_selector: String,
    /// Hand every cached object to subscribers again this often (None: never).
    pub resync: Option<Duration>,
    /// Ask for bookmarks, so that a resumed watch starts from a recent version.
    pub bookmarks: bool,
    /// The first wait after a failure; doubled after each further one.
    pub initial_backoff: Duration,
    /// The longest wait after failures.
    pub max_backoff: Duration,
    /// List page size (0: one answer).
    pub page_size: i64,
}

impl Default for InformerConfig {
    fn default() -> Self {
        InformerConfig {
            label_selector: String::new(),
            field_selector: String::new(),
            resync: None,
            bookmarks: true,
            initial_backoff: Duration::from_millis(800),
            max_backoff: Duration::from_secs(30),
            page_size: 500,
        }
    }
}

impl InformerConfig {
    pub fn labels(mut self, selector: &str) -> Self {
        self.label_selector = selector.to_string();
        self
    }

    pub fn fields(mut self, selector: &str) -> Self {
        self.field_selector = selector.to_string();
        self
    }

    pub fn resync(mut self, period: Option<Duration>) -> Self {
        self.resync = period;
        self
    }

    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max;
        self
    }
}

/// Where the watcher is (see the module docs).
enum State<K> {
    Empty,
    Resume { rv: String },
    Watching { rv: String, stream: WatchStream<K> },
}

/// Lists and watches one kind into a [`Store`]. Create it, take [`Informer::store`] and
/// [`Informer::subscribe`] handles, then drive it with [`Informer::run`] until cancelled.
pub struct Informer<K> {
    api: Api<K>,
    config: InformerConfig,
    store: Store<K>,
    synced: watch::Sender<bool>,
}

impl<K: Resource> Informer<K> {
    pub fn new(api: Api<K>, config: InformerConfig) -> Self {
        let (synced, rx) = watch::channel(false);
        Informer {
            api,
            config,
            store: Store {
                inner: Arc::new(RwLock::new(StoreInner {
                    items: BTreeMap::new(),
                    subscribers: Vec::new(),
                })),
                synced: rx,
            },
            synced,
        }
    }

    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// See [`Store::subscribe`].
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<Event<K>> {
        self.store.subscribe()
    }

    /// Runs the state machine until `cancel` fires. Never returns an error: failures are
    /// retried with backoff (and logged).
    pub async fn run(self, cancel: CancellationToken) {
        let kind = K::KIND.plural();
        let lp = ListParams::default()
            .labels(&self.config.label_selector)
            .fields(&self.config.field_selector)
            .limit(self.config.page_size);
        let wp = WatchParams::from(&lp).bookmarks(self.config.bookmarks);
        let mut backoff = self.config.initial_backoff;
        let mut resync = self.config.resync.map(|p| {
            let mut i = tokio::time::interval_at(tokio::time::Instant::now() + p, p);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        let mut state = State::Empty;
        // Sleeps `backoff` (doubling it for next time); false if cancelled meanwhile.
        macro_rules! back_off {
            () => {{
                let d = backoff;
                backoff = (backoff * 2).min(self.config.max_backoff);
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(d) => {}
                }
            }};
        }
        loop {
            state = match state {
                State::Empty => {
                    let listed = tokio::select! {
                        _ = cancel.cancelled() => return,
                        r = self.api.list_all(&lp) => r,
                    };
                    match listed {
                        Ok(list) => {
                            debug!(resource = kind, items = list.items.len(), rv = %list.resource_version, "listed");
                            self.store.replace(list.items);
                            self.synced.send_replace(true);
                            backoff = self.config.initial_backoff;
                            State::Resume {
                                rv: list.resource_version,
                            }
                        }
                        Err(e) => {
                            warn!(resource = kind, error = %e, "list failed; retrying");
                            back_off!();
                            State::Empty
                        }
                    }
                }
                State::Resume { rv } => {
                    let started = tokio::select! {
                        _ = cancel.cancelled() => return,
                        r = self.api.watch(&wp, &rv) => r,
                    };
                    match started {
                        Ok(stream) => State::Watching { rv, stream },
                        Err(e) if e.is_expired() => {
                            debug!(resource = kind, %rv, "watch version expired; relisting");
                            State::Empty
                        }
                        Err(e) => {
                            warn!(resource = kind, error = %e, "watch failed; retrying");
                            back_off!();
                            State::Resume { rv }
                        }
                    }
                }
                State::Watching { mut rv, mut stream } => {
                    let tick = async {
                        match resync.as_mut() {
                            Some(i) => {
                                i.tick().await;
                            }
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tick => {
                            self.store.resync();
                            State::Watching { rv, stream }
                        }
                        item = stream.next() => match item {
                            Some(Ok(ev)) => {
                                let next = ev.resource_version();
                                if !next.is_empty() {
                                    rv = next.to_string();
                                }
                                self.store.apply(ev);
                                backoff = self.config.initial_backoff;
                                State::Watching { rv, stream }
                            }
                            Some(Err(e)) => match self.after_error(e, rv, &mut backoff, &cancel).await {
                                Some(next) => next,
                                None => return,
                            },
                            None => {
                                debug!(resource = kind, %rv, "watch ended; resuming");
                                State::Resume { rv }
                            }
                        }
                    }
                }
            };
        }
    }

    /// The state after a watch stream failed with `e`; None when cancelled while backing off.
    async fn after_error(
        &self,
        e: ApiError,
        rv: String,
        backoff: &mut Duration,
        cancel: &CancellationToken,
    ) -> Option<State<K>> {
        let kind = K::KIND.plural();
        if e.is_expired() {
            debug!(resource = kind, %rv, "watch version expired; relisting");
            return Some(State::Empty);
        }
        warn!(resource = kind, error = %e, %rv, "watch failed; resuming");
        let d = *backoff;
        *backoff = (*backoff * 2).min(self.config.max_backoff);
        tokio::select! {
            _ = cancel.cancelled() => None,
            _ = tokio::time::sleep(d) => Some(State::Resume { rv }),
        }
    }
}

#[cfg(test)]
mod tests {
    use kl_api::{ObjectMeta, Pod};

    use super::*;

    fn pod(ns: &str, name: &str, rv: &str) -> Pod {
        Pod {
            metadata: Some(ObjectMeta {
                name: name.into(),
                namespace: ns.into(),
                resource_version: rv.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn store() -> Store<Pod> {
        let (_tx, rx) = watch::channel(false);
        Store {
            inner: Arc::new(RwLock::new(StoreInner {
                items: BTreeMap::new(),
                subscribers: Vec::new(),
            })),
            synced: rx,
        }
    }

    fn drain(rx: &mut mpsc::UnboundedReceiver<Event<Pod>>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            let what = match &ev {
                Event::Added(_) => "add",
                Event::Updated { .. } => "update",
                Event::Deleted(_) => "delete",
            };
            out.push(format!("{what} {}", ev.key()));
        }
        out
    }

    #[test]
    fn keys() {
        assert_eq!(key_of(&pod("ns", "a", "1")), "ns/a");
        assert_eq!(split_key("ns/a"), ("ns", "a"));
        assert_eq!(split_key("node1"), ("", "node1"));
        assert_eq!(make_key("", "n"), "n");
    }

    #[test]
    fn events_and_relist_diffs() {
        let s = store();
        s.apply(WatchEvent::Added(pod("d", "a", "1")));
        let mut rx = s.subscribe();
        assert_eq!(drain(&mut rx), ["add d/a"]);
        s.apply(WatchEvent::Modified(pod("d", "a", "2")));
        s.apply(WatchEvent::Added(pod("d", "b", "3")));
        s.apply(WatchEvent::Bookmark {
            resource_version: "4".into(),
        });
        s.apply(WatchEvent::Deleted(pod("d", "b", "5")));
        assert_eq!(drain(&mut rx), ["update d/a", "add d/b", "delete d/b"]);
        assert_eq!(s.len(), 1);
        // A relist: a unchanged, c new, and a vanished x.
        s.apply(WatchEvent::Added(pod("d", "x", "6")));
        drain(&mut rx);
        s.replace(vec![pod("d", "a", "2"), pod("d", "c", "7")]);
        assert_eq!(drain(&mut rx), ["delete d/x", "add d/c"]);
        s.resync();
        assert_eq!(drain(&mut rx), ["update d/a", "update d/c"]);
        assert_eq!(s.list_namespace("d").len(), 2);
        assert!(s.list_namespace("e").is_empty());
        assert_eq!(
            s.get_named("d", "c")
                .unwrap()
                .meta()
                .unwrap()
                .resource_version,
            "7"
        );
    }
}

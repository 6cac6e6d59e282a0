//! The watch cache: one etcd watch per resource, fanned out in memory to every client watch
//! (kube-apiserver's "cacher").
//!
//! Per resource, [`WatchCache::run`] lists the resource at revision R, then watches etcd from
//! R+1 (with `prev_kv` and progress notifications). It keeps
//! * the current objects (for `resourceVersion` "" / "0" watches: one synthetic ADDED each),
//! * a window of the most recent events, `--default-watch-cache-size` of them (default
//!   [`DEFAULT_WINDOW`]), from which a watch from version N is replayed; a watch from below the
//!   window ends with `Expired: too old resource version: N (M)`, and the client relists,
//! * the revision up to which it has seen everything: advanced by events and by etcd progress
//!   notifications, requested every [`PROGRESS_INTERVAL`], so that BOOKMARKs move forward
//!   while the resource itself is quiet.
//!
//! Each client watch is a [`Watcher`]: its namespace, label and field filters and a bounded
//! channel. Events are filtered per watcher as upstream does (an object leaving a watcher's
//! filter is a DELETED for it, entering it an ADDED). A watcher whose channel is full is
//! closed (its stream ends; the client re-watches from its last version), so one slow client
//! never holds the others back. BOOKMARKs go to watchers that asked for them after
//! [`BOOKMARK_AFTER`] without any event.
//!
//! When the etcd watch breaks (its member died, lost its leader or went silent), it is
//! re-established on another member from the last revision + 1. If that revision has been
//! compacted meanwhile, the cache relists and closes every watcher, so that their clients
//! re-watch (getting Expired, then relisting), as upstream does.
//!
//! The cache never writes to etcd.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use etcd_client::{EventType, WatchOptions};
use kl_api::selector::{FieldSelector, LabelSelector};
use kl_api::{Kind, Object, TypedObject, WatchEvent};
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};
use tonic::Status;

use crate::error::{ApiError, ApiResult};
use crate::metrics::Metrics;
use crate::storage::{self, Store};

/// Events kept per resource when `--default-watch-cache-size` is not given. Upstream's flag
/// default is 100 (with dynamic sizing on top); a larger window lets clients resume after an
/// apiserver failover without relisting, for little memory (events share the objects).
pub const DEFAULT_WINDOW: usize = 1000;
/// Events buffered per client watch before it counts as too slow and is closed.
pub const WATCHER_BUFFER: usize = 1024;
/// How often the cache asks etcd where it stands (progress notification).
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// A watcher that asked for bookmarks gets one after this long without events.
pub const BOOKMARK_AFTER: Duration = Duration::from_secs(3);
/// An etcd watch that answers nothing (not even progress) for this long is re-established.
const SILENT_WATCH: Duration = Duration::from_secs(10);

/// What a client watch selects.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Empty: every namespace.
    pub namespace: String,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    pub fn matches(&self, o: &Object) -> bool {
        (self.namespace.is_empty() || o.namespace() == self.namespace)
            && self
                .labels
                .matches(&o.metadata().map(|m| m.labels.clone()).unwrap_or_default())
            && self.fields.matches(o)
    }
}

/// One change of one object.
#[derive(Debug, Clone)]
pub struct CacheEvent {
    pub revision: i64,
    /// The object after the change (for a deletion: the last state, at the deletion's
    /// revision).
    pub object: Arc<Object>,
    /// The object before the change (None for a creation).
    pub prev: Option<Arc<Object>>,
    pub deleted: bool,
}

impl CacheEvent {
    /// The event as a watcher with `filter` sees it, if it sees it at all.
    pub fn for_filter(&self, filter: &Filter) -> Option<WatchEvent> {
        let now = !self.deleted && filter.matches(&self.object);
        let before = self.prev.as_ref().is_some_and(|p| filter.matches(p));
        let (typ, obj) = match (before, now) {
            (false, true) => ("ADDED", (*self.object).clone()),
            (true, true) => ("MODIFIED", (*self.object).clone()),
            (true, false) => {
                // Gone, or moved out of the filter: the last state it matched in, at this
                // event's revision (upstream).
                let mut o = if self.deleted {
                    (*self.object).clone()
                } else {
                    self.prev
                        .as_deref()
                        .cloned()
                        .unwrap_or_else(|| (*self.object).clone())
                };
                o.metadata_mut().resource_version = self.revision.to_string();
                ("DELETED", o)
            }
            (false, false) => return None,
        };
        Some(event(typ, obj))
    }
}

fn event(typ: &str, obj: Object) -> WatchEvent {
    WatchEvent {
        r#type: typ.to_string(),
        object: Some(obj.into_typed()),
    }
}

/// A BOOKMARK: an object of the kind with only apiVersion, kind and resourceVersion.
pub fn bookmark(kind: Kind, revision: i64) -> WatchEvent {
    let mut o = empty_object(kind);
    o.set_type_meta();
    o.metadata_mut().resource_version = revision.to_string();
    WatchEvent {
        r#type: "BOOKMARK".into(),
        object: Some(o.into_typed()),
    }
}

fn empty_object(kind: Kind) -> Object {
    match kind {
        Kind::Namespace => Object::Namespace(Default::default()),
        Kind::Node => Object::Node(Default::default()),
        Kind::Pod => Object::Pod(Default::default()),
        Kind::ReplicaSet => Object::ReplicaSet(Default::default()),
        Kind::Lease => Object::Lease(Default::default()),
        Kind::Event => Object::Event(Default::default()),
    }
}

type Sink = mpsc::Sender<Result<WatchEvent, Status>>;

/// One client watch, as the cache holds it.
struct Watcher {
    filter: Filter,
    tx: Sink,
    /// Events at or below this revision are not sent (the client has them).
    after: i64,
    bookmarks: bool,
    last_sent: Instant,
}

/// The cache's state, behind one lock.
struct State {
    objects: BTreeMap<String, Arc<Object>>,
    window: VecDeque<Arc<CacheEvent>>,
    /// A watch from any revision >= this can be served from the window.
    oldest: i64,
    /// Every event up to this revision has been applied.
    revision: i64,
    watchers: HashMap<u64, Watcher>,
    next_id: u64,
    ready: bool,
}

/// What a new watch starts with.
pub struct Subscription {
    /// Events to send first (the synthetic ADDEDs, or the replay from the window).
    pub initial: Vec<WatchEvent>,
    /// Live events after those.
    pub rx: mpsc::Receiver<Result<WatchEvent, Status>>,
}

/// The watch cache of one resource.
pub struct WatchCache {
    pub kind: Kind,
    capacity: usize,
    state: Mutex<State>,
    /// Turns true once the first list is in.
    ready_tx: watch::Sender<bool>,
    metrics: Arc<Metrics>,
}

impl WatchCache {
    pub fn new(kind: Kind, capacity: usize, metrics: Arc<Metrics>) -> Self {
        WatchCache {
            kind,
            capacity: capacity.max(1),
            state: Mutex::new(State {
                objects: BTreeMap::new(),
                window: VecDeque::new(),
                oldest: 0,
                revision: 0,
                watchers: HashMap::new(),
                next_id: 0,
                ready: false,
            }),
            ready_tx: watch::channel(false).0,
            metrics,
        }
    }

    pub fn is_ready(&self) -> bool {
        self.state.lock().ready
    }

    /// The revision the cache has seen everything up to.
    pub fn revision(&self) -> i64 {
        self.state.lock().revision
    }

    /// The cached object under `key`, if any.
    pub fn get(&self, key: &str) -> Option<Arc<Object>> {
        self.state.lock().objects.get(key).cloned()
    }

    pub fn watcher_count(&self) -> usize {
        self.state.lock().watchers.len()
    }

    async fn wait_ready(&self, timeout: Duration) -> ApiResult<()> {
        let mut rx = self.ready_tx.subscribe();
        match tokio::time::timeout(timeout, async move { rx.wait_for(|r| *r).await.is_ok() }).await
        {
            Ok(true) => Ok(()),
            _ => Err(ApiError::ServiceUnavailable(format!(
                "the watch cache of {} is not initialized yet; retry",
                self.kind.plural()
            ))),
        }
    }

    /// Starts a client watch. `from`: None for "" / "0" (current state first), Some(N) for
    /// changes after N.
    pub async fn subscribe(
        &self,
        filter: Filter,
        from: Option<i64>,
        bookmarks: bool,
    ) -> ApiResult<Subscription> {
        self.wait_ready(Duration::from_secs(10)).await?;
        let (tx, rx) = mpsc::channel(WATCHER_BUFFER);
        let mut st = self.state.lock();
        let (initial, after) = match from {
            None => {
                let initial = st
                    .objects
                    .values()
                    .filter(|o| filter.matches(o))
                    .map(|o| event("ADDED", (**o).clone()))
                    .collect();
                (initial, st.revision)
            }
            Some(n) => {
                if n < st.oldest {
                    return Err(ApiError::Expired(format!(
                        "too old resource version: {n} ({})",
                        st.oldest
                    )));
                }
                let initial = st
                    .window
                    .iter()
                    .filter(|e| e.revision > n)
                    .filter_map(|e| e.for_filter(&filter))
                    .collect();
                (initial, n.max(st.revision))
            }
        };
        let id = st.next_id;
        st.next_id += 1;
        st.watchers.insert(
            id,
            Watcher {
                filter,
                tx,
                after,
                bookmarks,
                last_sent: Instant::now(),
            },
        );
        Ok(Subscription { initial, rx })
    }

    /// Replaces the whole state with a fresh list at `revision`; every existing watcher is
    /// closed (they re-watch).
    pub fn reset(&self, objects: BTreeMap<String, Arc<Object>>, revision: i64) {
        let mut st = self.state.lock();
        let closed = st.watchers.len();
        st.watchers.clear();
        st.objects = objects;
        st.window.clear();
        st.oldest = revision;
        st.revision = revision;
        st.ready = true;
        drop(st);
        self.ready_tx.send_replace(true);
        if closed > 0 {
            tracing::info!(
                resource = self.kind.plural(),
                closed,
                revision,
                "watch cache relisted; watchers closed"
            );
        }
    }

    /// Applies one change seen in etcd and fans it out.
    pub fn apply(&self, key: &str, revision: i64, object: Option<Object>) {
        let mut st = self.state.lock();
        if revision <= st.revision {
            // Already seen (a re-established watch may repeat the boundary).
            return;
        }
        let prev = st.objects.get(key).cloned();
        let ev = match object {
            Some(o) => {
                let o = Arc::new(o);
                st.objects.insert(key.to_string(), o.clone());
                CacheEvent {
                    revision,
                    object: o,
                    prev,
                    deleted: false,
                }
            }
            None => {
                let Some(prev) = st.objects.remove(key) else {
                    st.revision = revision;
                    return;
                };
                let mut last = (*prev).clone();
                last.metadata_mut().resource_version = revision.to_string();
                CacheEvent {
                    revision,
                    object: Arc::new(last),
                    prev: Some(prev),
                    deleted: true,
                }
            }
        };
        let ev = Arc::new(ev);
        st.revision = revision;
        st.window.push_back(ev.clone());
        while st.window.len() > self.capacity {
            if let Some(old) = st.window.pop_front() {
                st.oldest = st.oldest.max(old.revision);
            }
        }
        self.dispatch(&mut st, &ev);
    }

    fn dispatch(&self, st: &mut State, ev: &CacheEvent) {
        let mut gone = Vec::new();
        let now = Instant::now();
        for (id, w) in st.watchers.iter_mut() {
            if ev.revision <= w.after {
                continue;
            }
            let Some(out) = ev.for_filter(&w.filter) else {
                continue;
            };
            match w.tx.try_send(Ok(out)) {
                Ok(()) => {
                    w.last_sent = now;
                    self.metrics
                        .watch_events
                        .with_label_values(&[self.kind.plural()])
                        .inc();
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(
                        resource = self.kind.plural(),
                        watcher = id,
                        "closing a watcher too slow to read its events"
                    );
                    self.metrics
                        .terminated_watchers
                        .with_label_values(&[self.kind.plural()])
                        .inc();
                    gone.push(*id);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => gone.push(*id),
            }
        }
        for id in gone {
            st.watchers.remove(&id);
        }
    }

    /// Records that etcd has sent everything up to `revision` (a progress notification).
    pub fn progress(&self, revision: i64) {
        let mut st = self.state.lock();
        if revision > st.revision {
            st.revision = revision;
        }
    }

    /// Sends BOOKMARKs to quiet watchers that want them, and forgets watchers whose client
    /// is gone.
    pub fn tick(&self, now: Instant) {
        let mut st = self.state.lock();
        let revision = st.revision;
        let mut gone = Vec::new();
        for (id, w) in st.watchers.iter_mut() {
            if w.tx.is_closed() {
                gone.push(*id);
                continue;
            }
            if !w.bookmarks || now.duration_since(w.last_sent) < BOOKMARK_AFTER {
                continue;
            }
            match w
                .tx
                .try_send(Ok(bookmark(self.kind, revision.max(w.after))))
            {
                Ok(()) => w.last_sent = now,
                Err(mpsc::error::TrySendError::Full(_)) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => gone.push(*id),
            }
        }
        for id in gone {
            st.watchers.remove(&id);
        }
    }

    /// Closes every watcher (shutdown: their streams end cleanly).
    pub fn close_all(&self) {
        self.state.lock().watchers.clear();
    }

    /// Lists the resource from etcd at one revision: the cache's starting point.
    async fn list(&self, store: &Store) -> ApiResult<(BTreeMap<String, Arc<Object>>, i64)> {
        let mut objects = BTreeMap::new();
        let mut token = String::new();
        let mut revision;
        loop {
            let page = store
                .list(self.kind, "", 500, &token, false, |_| true)
                .await?;
            revision = page.revision;
            for o in page.items {
                let key = store.key(self.kind, o.namespace(), o.name());
                objects.insert(key, Arc::new(o));
            }
            if page.continue_token.is_empty() {
                break;
            }
            token = page.continue_token;
        }
        Ok((objects, revision))
    }

    /// Keeps the cache in step with etcd until `stop` turns true, then closes every watcher.
    pub async fn run(self: Arc<Self>, store: Store, mut stop: watch::Receiver<bool>) {
        let resource = self.kind.plural();
        let prefix = storage::list_prefix(&store.prefix, self.kind, "");
        let mut ticker = tokio::time::interval(PROGRESS_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        'relist: loop {
            let (objects, revision) = loop {
                tokio::select! {
                    r = self.list(&store) => match r {
                        Ok(v) => break v,
                        Err(e) => {
                            tracing::warn!(resource, error = %e, "watch cache: listing failed; retrying");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    },
                    _ = crate::run::stopped(&mut stop) => break 'relist,
                }
            };
            self.reset(objects, revision);
            tracing::info!(resource, revision, "watch cache ready");
            // Watch from the last revision applied, re-establishing on failure.
            loop {
                let from = self.revision() + 1;
                let (i, member) = store.etcd.preferred();
                let mut watcher = member
                    .client
                    .watch_client()
                    .max_decoding_message_size(storage::MAX_ETCD_RESPONSE);
                let opts = WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(from)
                    .with_prev_key()
                    .with_progress_notify();
                let started = tokio::select! {
                    r = tokio::time::timeout(Duration::from_secs(5), watcher.watch(prefix.clone(), Some(opts))) => r,
                    _ = crate::run::stopped(&mut stop) => break 'relist,
                };
                let mut stream = match started {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::warn!(resource, member = %member.url, error = %e, "watch cache: etcd watch failed to start; trying another member");
                        store.etcd.rotate_from(i);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                    Err(_) => {
                        tracing::warn!(resource, member = %member.url, "watch cache: etcd watch did not start in 5s; trying another member");
                        store.etcd.rotate_from(i);
                        continue;
                    }
                };
                let mut last_heard = Instant::now();
                let outcome = loop {
                    tokio::select! {
                        msg = stream.message() => match msg {
                            Ok(Some(resp)) => {
                                last_heard = Instant::now();
                                store.etcd.mark_ok();
                                if resp.canceled() {
                                    if resp.compact_revision() > 0 {
                                        break WatchEnd::Compacted(resp.compact_revision());
                                    }
                                    break WatchEnd::Broken(format!("canceled: {}", resp.cancel_reason()));
                                }
                                if resp.created() {
                                    continue;
                                }
                                if resp.events().is_empty() {
                                    if let Some(h) = resp.header() {
                                        self.progress(h.revision());
                                    }
                                    continue;
                                }
                                for ev in resp.events() {
                                    let Some(kv) = ev.kv() else { continue };
                                    let key = String::from_utf8_lossy(kv.key()).into_owned();
                                    let obj = match ev.event_type() {
                                        EventType::Put => match storage::decode(self.kind, kv.value(), kv.mod_revision()) {
                                            Ok(o) => Some(o),
                                            Err(e) => {
                                                tracing::warn!(%key, error = %e, "watch cache: skipping an undecodable object");
                                                self.progress(kv.mod_revision());
                                                continue;
                                            }
                                        },
                                        EventType::Delete => None,
                                    };
                                    self.apply(&key, kv.mod_revision(), obj);
                                }
                            }
                            Ok(None) => break WatchEnd::Broken("stream ended".into()),
                            Err(e) => break WatchEnd::Broken(e.to_string()),
                        },
                        _ = ticker.tick() => {
                            if last_heard.elapsed() > SILENT_WATCH {
                                break WatchEnd::Broken(format!("no answer for {SILENT_WATCH:?}"));
                            }
                            let _ = stream.request_progress().await;
                            self.tick(Instant::now());
                        }
                        _ = crate::run::stopped(&mut stop) => break WatchEnd::Stop,
                    }
                };
                match outcome {
                    WatchEnd::Stop => break 'relist,
                    WatchEnd::Compacted(at) => {
                        tracing::warn!(
                            resource,
                            from,
                            compacted = at,
                            "watch cache: resume revision compacted; relisting"
                        );
                        continue 'relist;
                    }
                    WatchEnd::Broken(why) => {
                        tracing::warn!(resource, member = %member.url, reason = %why, from = self.revision() + 1, "watch cache: etcd watch broke; re-establishing on another member");
                        store.etcd.rotate_from(i);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
        self.close_all();
    }
}

enum WatchEnd {
    Stop,
    Compacted(i64),
    Broken(String),
}

/// One watch cache per kind.
#[derive(Clone)]
pub struct Caches(pub Arc<HashMap<Kind, Arc<WatchCache>>>);

impl Caches {
    pub fn new(capacity: usize, metrics: Arc<Metrics>) -> Self {
        Caches(Arc::new(
            Kind::ALL
                .into_iter()
                .map(|k| (k, Arc::new(WatchCache::new(k, capacity, metrics.clone()))))
                .collect(),
        ))
    }

    pub fn get(&self, kind: Kind) -> &Arc<WatchCache> {
        // Every kind has a cache (built from Kind::ALL).
        &self.0[&kind]
    }

    pub fn all_ready(&self) -> bool {
        self.0.values().all(|c| c.is_ready())
    }
}

/// The object a TypedObject carries, for tests.
pub fn object_of(e: &WatchEvent) -> Option<Object> {
    e.object
        .clone()
        .and_then(|t: TypedObject| Object::from_typed(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kl_api::{Pod, Resource};

    fn pod(name: &str, app: &str) -> Object {
        let mut p = Pod::default();
        let m = p.meta_mut();
        m.name = name.into();
        m.namespace = "default".into();
        m.labels.insert("app".into(), app.into());
        p.into_object()
    }

    fn key(name: &str) -> String {
        format!("/registry/pods/default/{name}")
    }

    fn cache(capacity: usize) -> WatchCache {
        let c = WatchCache::new(Kind::Pod, capacity, Arc::new(Metrics::new()));
        c.reset(BTreeMap::new(), 10);
        c
    }

    fn filter(labels: &str) -> Filter {
        Filter {
            namespace: "default".into(),
            labels: LabelSelector::parse(labels).unwrap(),
            fields: FieldSelector::default(),
        }
    }

    fn drain(rx: &mut mpsc::Receiver<Result<WatchEvent, Status>>) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        while let Ok(Ok(e)) = rx.try_recv() {
            let o = object_of(&e).unwrap();
            out.push((
                e.r#type.clone(),
                o.name().to_string(),
                o.metadata().unwrap().resource_version.clone(),
            ));
        }
        out
    }

    fn t(typ: &str, name: &str, rv: i64) -> (String, String, String) {
        (typ.into(), name.into(), rv.to_string())
    }

    #[tokio::test]
    async fn fans_out_filtered_events_and_moves_out_of_filters_as_deletes() {
        let c = cache(100);
        let mut web = c
            .subscribe(filter("app=web"), Some(10), false)
            .await
            .unwrap();
        let mut all = c.subscribe(filter(""), None, false).await.unwrap();
        assert!(web.initial.is_empty() && all.initial.is_empty());
        let mut a = pod("a", "web");
        a.metadata_mut().resource_version = "11".into();
        c.apply(&key("a"), 11, Some(a.clone()));
        let mut b = pod("b", "db");
        b.metadata_mut().resource_version = "12".into();
        c.apply(&key("b"), 12, Some(b));
        let mut a2 = pod("a", "moved");
        a2.metadata_mut().resource_version = "13".into();
        c.apply(&key("a"), 13, Some(a2));
        c.apply(&key("a"), 14, None);
        assert_eq!(
            drain(&mut web.rx),
            [t("ADDED", "a", 11), t("DELETED", "a", 13)]
        );
        assert_eq!(
            drain(&mut all.rx),
            [
                t("ADDED", "a", 11),
                t("ADDED", "b", 12),
                t("MODIFIED", "a", 13),
                t("DELETED", "a", 14)
            ]
        );
    }

    #[tokio::test]
    async fn resumes_from_the_window_and_expires_below_it() {
        let c = cache(3);
        for (i, rv) in (11..=15).enumerate() {
            c.apply(
                &key(&format!("p{i}")),
                rv,
                Some(pod(&format!("p{i}"), "web")),
            );
        }
        // The window holds 13, 14, 15: a watch from 12 or later is served.
        let s = c.subscribe(filter(""), Some(12), false).await.unwrap();
        let names: Vec<String> = s
            .initial
            .iter()
            .map(|e| object_of(e).unwrap().name().to_string())
            .collect();
        assert_eq!(names, ["p2", "p3", "p4"]);
        match c.subscribe(filter(""), Some(11), false).await {
            Err(ApiError::Expired(m)) => assert_eq!(m, "too old resource version: 11 (12)"),
            other => panic!("expected Expired, got {:?}", other.err()),
        }
        // "" / "0": every current object, as ADDED.
        let s = c.subscribe(filter(""), None, false).await.unwrap();
        assert_eq!(s.initial.len(), 5);
        // A version ahead of the cache: nothing replayed, and nothing at or below it sent.
        let mut ahead = c.subscribe(filter(""), Some(17), false).await.unwrap();
        c.apply(&key("x"), 16, Some(pod("x", "web")));
        c.apply(&key("y"), 18, Some(pod("y", "web")));
        let got: Vec<String> = drain(&mut ahead.rx).into_iter().map(|e| e.1).collect();
        assert_eq!(got, ["y"]);
    }

    #[tokio::test]
    async fn a_watcher_too_slow_to_read_is_closed() {
        let c = cache(100);
        let mut slow = c.subscribe(filter(""), Some(10), false).await.unwrap();
        for i in 0..=WATCHER_BUFFER as i64 {
            c.apply(&key(&format!("s{i}")), 11 + i, Some(pod("s", "x")));
        }
        assert_eq!(c.watcher_count(), 0);
        let mut n = 0;
        while let Some(e) = slow.rx.recv().await {
            e.unwrap();
            n += 1;
        }
        assert_eq!(
            n, WATCHER_BUFFER,
            "what was buffered is delivered, then the stream ends"
        );
    }

    #[tokio::test]
    async fn bookmarks_and_relists() {
        let c = cache(100);
        let mut s = c.subscribe(filter(""), Some(10), true).await.unwrap();
        c.progress(20);
        c.tick(Instant::now() + BOOKMARK_AFTER);
        let e = s.rx.try_recv().unwrap().unwrap();
        assert_eq!(e.r#type, "BOOKMARK");
        let o = object_of(&e).unwrap();
        assert_eq!(o.kind(), Kind::Pod);
        assert_eq!(o.metadata().unwrap().resource_version, "20");
        assert!(o.name().is_empty());
        // Not before the quiet period.
        c.tick(Instant::now());
        assert!(s.rx.try_recv().is_err());

        // A relist closes everyone: their streams end.
        c.reset(BTreeMap::new(), 5000);
        assert_eq!(c.watcher_count(), 0);
        while s.rx.try_recv().is_ok() {}
        assert!(s.rx.recv().await.is_none());
    }
}

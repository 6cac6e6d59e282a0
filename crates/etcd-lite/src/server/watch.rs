//! The Watch service: one bidirectional stream carries many watches.
//!
//! Design:
//! * The response stream itself (a generator) owns everything: it reads the client's requests,
//!   forwards what the watches produce, and holds the watches' tasks in a [`WatchSet`] that
//!   aborts them when dropped. When the client goes away, tonic drops the stream and with it
//!   every watch of that stream: no task outlives its stream.
//! * Each watch is one task with a cursor (`next_rev`). It waits for the store revision to
//!   move ([`Node::revisions`]), reads the events from its cursor on with the store lock held
//!   only for that synchronous read, filters them, sends them, and advances the cursor. So
//!   every event is sent exactly once, in revision order, whether it is history (a
//!   `start_revision` in the past) or new.
//! * All watches of a stream share one bounded channel to the generator: a client that does
//!   not read makes its own watches wait, nobody else's.
//! * Responses the generator makes itself (created, canceled, progress) must not overtake what
//!   a watch has already queued: before answering a cancel or a progress request it drains the
//!   channel first.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc,
    },
};

use etcd_client::proto::{
    PbEvent, PbResponseHeader, PbWatchRequest, PbWatchRequestUnion, PbWatchResponse, PbWatchService,
};
use futures::{Stream, StreamExt};
use tokio::{
    sync::mpsc,
    task::JoinHandle,
    time::{Instant, MissedTickBehavior},
};
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::Instrument;

use super::{ServerOptions, Stopping, StreamRecord};
use crate::error::EtcdError;
use crate::node::Node;

/// etcd's `clientv3.InvalidWatchID`: the id of a response that belongs to no single watch
/// (a progress response for the whole stream, or a create that failed).
pub const INVALID_WATCH_ID: i64 = -1;
/// etcd's `clientv3.AutoWatchID`: "pick an id for me".
const AUTO_WATCH_ID: i64 = 0;
/// `WatchCreateRequest.FilterType`.
const FILTER_NOPUT: i32 = 0;
const FILTER_NODELETE: i32 = 1;
/// `mvccpb.Event.EventType`.
const EVENT_PUT: i32 = 0;
const EVENT_DELETE: i32 = 1;
/// etcd's `mvcc.ErrEmptyWatcherRange`.
const ERR_EMPTY_WATCHER_RANGE: &str = "mvcc: watcher range is empty";
/// etcd's `mvcc.ErrWatcherDuplicateID`.
const ERR_DUPLICATE_WATCH_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";

pub struct WatchService {
    node: Arc<Node>,
    opts: ServerOptions,
    stopping: Stopping,
}

impl WatchService {
    pub fn new(node: Arc<Node>, opts: ServerOptions, stopping: Stopping) -> Self {
        WatchService {
            node,
            opts,
            stopping,
        }
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<PbWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl PbWatchService for WatchService {
    type WatchStream = ResponseStream;

    async fn watch(
        &self,
        request: Request<Streaming<PbWatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let inbound = request.into_inner();
        Ok(Response::new(Box::pin(watch_stream(
            self.node.clone(),
            self.opts.clone(),
            self.stopping.clone(),
            inbound,
        ))))
    }
}

/// What woke the stream's loop.
enum Step {
    Stop,
    Forward(PbWatchResponse),
    Request(Option<Result<PbWatchRequest, Status>>),
}

/// The response stream of one Watch RPC. See the module docs.
fn watch_stream<S>(
    node: Arc<Node>,
    opts: ServerOptions,
    mut stopping: Stopping,
    mut inbound: S,
) -> impl Stream<Item = Result<PbWatchResponse, Status>> + Send + 'static
where
    S: Stream<Item = Result<PbWatchRequest, Status>> + Send + Unpin + 'static,
{
    async_stream::stream! {
        let mut record = StreamRecord::new(node.clone(), "Watch");
        let (tx, mut rx) = mpsc::channel::<PbWatchResponse>(opts.watch_stream_buffer.max(1));
        let mut watches = WatchSet::default();
        // As etcd: the client closing its sending side does not end the watches; only the
        // client going away (or the server stopping) does.
        let mut inbound_open = true;
        loop {
            // Not biased: a steady flow of events must not starve the client's requests.
            let step = tokio::select! {
                _ = stopping.wait() => Step::Stop,
                Some(resp) = rx.recv() => Step::Forward(resp),
                req = inbound.next(), if inbound_open => Step::Request(req),
            };
            match step {
                Step::Stop => {
                    record.finish(Code::Unavailable);
                    yield Err(EtcdError::Stopped.into());
                    break;
                }
                Step::Forward(resp) => yield Ok(resp),
                Step::Request(None) => inbound_open = false,
                Step::Request(Some(Err(status))) => {
                    tracing::debug!(code = ?status.code(), error = status.message(), "watch stream broken");
                    record.finish(status.code());
                    yield Err(status);
                    break;
                }
                Step::Request(Some(Ok(req))) => {
                    for resp in watches.handle(&node, &opts, &tx, &mut rx, req).await {
                        yield Ok(resp);
                    }
                }
            }
        }
    }
}

/// One running watch, as its stream sees it.
struct WatchHandle {
    task: JoinHandle<()>,
    /// Every event with a revision up to this one has been queued for the client (or
    /// filtered out): the watch's contribution to a progress response.
    sent_through: Arc<AtomicI64>,
}

/// The watches of one stream. Dropping it aborts them all.
#[derive(Default)]
struct WatchSet {
    watches: HashMap<i64, WatchHandle>,
    /// Next id to try for an auto-assigned watch (etcd starts at 0).
    next_id: i64,
}

impl Drop for WatchSet {
    fn drop(&mut self) {
        for w in self.watches.values() {
            w.task.abort();
        }
    }
}

impl WatchSet {
    /// Serves one client request; returns the responses to send, in order.
    async fn handle(
        &mut self,
        node: &Arc<Node>,
        opts: &ServerOptions,
        tx: &mpsc::Sender<PbWatchResponse>,
        rx: &mut mpsc::Receiver<PbWatchResponse>,
        req: PbWatchRequest,
    ) -> Vec<PbWatchResponse> {
        // Watches that ended by themselves (compacted, store error) are gone, as in etcd.
        self.watches.retain(|_, w| !w.task.is_finished());
        match req.request_union {
            Some(PbWatchRequestUnion::CreateRequest(c)) => {
                let create = CreateSpec {
                    key: c.key,
                    range_end: c.range_end,
                    start_revision: c.start_revision,
                    progress_notify: c.progress_notify,
                    filters: c.filters,
                    prev_kv: c.prev_kv,
                    watch_id: c.watch_id,
                };
                vec![self.create(node, opts, tx, create)]
            }
            Some(PbWatchRequestUnion::CancelRequest(cancel)) => {
                let id = cancel.watch_id;
                let Some(w) = self.watches.remove(&id) else {
                    // etcd answers nothing when the id is unknown.
                    tracing::debug!(watch_id = id, "cancel of unknown watch");
                    return Vec::new();
                };
                w.task.abort();
                let _ = w.task.await;
                // The watch is stopped: whatever it queued goes out before "canceled".
                let mut out = drain(rx);
                out.push(PbWatchResponse {
                    header: Some(node.header(current_revision(node))),
                    watch_id: id,
                    canceled: true,
                    ..Default::default()
                });
                tracing::debug!(watch_id = id, "watch canceled");
                out
            }
            Some(PbWatchRequestUnion::ProgressRequest(_)) => {
                // The revision every watch of the stream has caught up to: an event at or
                // below it will never follow this response.
                let current = current_revision(node);
                let revision = self
                    .watches
                    .values()
                    .map(|w| w.sent_through.load(Ordering::SeqCst))
                    .min()
                    .map_or(current, |r| r.min(current));
                let mut out = drain(rx);
                out.push(PbWatchResponse {
                    header: Some(node.header(revision)),
                    watch_id: INVALID_WATCH_ID,
                    ..Default::default()
                });
                out
            }
            None => Vec::new(),
        }
    }

    fn create(
        &mut self,
        node: &Arc<Node>,
        opts: &ServerOptions,
        tx: &mpsc::Sender<PbWatchResponse>,
        create: CreateSpec,
    ) -> PbWatchResponse {
        let current = current_revision(node);
        let failed = |reason: &str| PbWatchResponse {
            header: Some(node.header(current)),
            watch_id: INVALID_WATCH_ID,
            created: true,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..Default::default()
        };
        let Some(range) = WatchRange::new(create.key, create.range_end) else {
            return failed(ERR_EMPTY_WATCHER_RANGE);
        };
        let id = if create.watch_id == AUTO_WATCH_ID {
            while self.watches.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id += 1;
            self.next_id - 1
        } else if self.watches.contains_key(&create.watch_id) {
            return failed(ERR_DUPLICATE_WATCH_ID);
        } else {
            create.watch_id
        };
        let start = match create.start_revision {
            0 => current + 1,
            // etcd lets a negative start through, which replays all history.
            r => r.max(1),
        };
        let sent_through = Arc::new(AtomicI64::new((start - 1).min(current)));
        let task = WatchTask {
            node: node.clone(),
            id,
            range,
            next_rev: start,
            prev_kv: create.prev_kv,
            no_put: create.filters.contains(&FILTER_NOPUT),
            no_delete: create.filters.contains(&FILTER_NODELETE),
            progress_notify: create.progress_notify,
            progress_interval: opts.watch_progress_notify_interval,
            batch: opts.watch_batch_events.max(1),
            response_bytes: opts.watch_response_bytes.max(1),
            tx: tx.clone(),
            sent_through: sent_through.clone(),
        };
        let span = tracing::debug_span!("watch", watch_id = id, start_revision = start);
        span.in_scope(|| tracing::debug!(current, "watch created"));
        let task = tokio::spawn(task.run().instrument(span));
        self.watches.insert(id, WatchHandle { task, sent_through });
        PbWatchResponse {
            header: Some(node.header(current)),
            watch_id: id,
            created: true,
            ..Default::default()
        }
    }
}

/// The fields of a `WatchCreateRequest` that matter (`fragment` is ignored: responses are
/// never split).
struct CreateSpec {
    key: Vec<u8>,
    range_end: Vec<u8>,
    start_revision: i64,
    progress_notify: bool,
    filters: Vec<i32>,
    prev_kv: bool,
    watch_id: i64,
}

fn drain(rx: &mut mpsc::Receiver<PbWatchResponse>) -> Vec<PbWatchResponse> {
    let mut out = Vec::new();
    while let Ok(resp) = rx.try_recv() {
        out.push(resp);
    }
    out
}

fn current_revision(node: &Node) -> i64 {
    node.store().read().revision()
}

/// The keys a watch covers, in the engine's range notation.
#[derive(Clone, Debug, PartialEq, Eq)]
struct WatchRange {
    key: Vec<u8>,
    range_end: Vec<u8>,
}

impl WatchRange {
    /// etcd's normalisation: an empty key is `\0` (the smallest key); `range_end` `\0` means
    /// every key >= key; any other non-empty `range_end` must be greater than the key
    /// (`None`: etcd's "watcher range is empty").
    fn new(key: Vec<u8>, range_end: Vec<u8>) -> Option<Self> {
        let key = if key.is_empty() { vec![0] } else { key };
        let from_key = range_end.as_slice() == [0];
        if !range_end.is_empty() && !from_key && key >= range_end {
            return None;
        }
        Some(WatchRange { key, range_end })
    }
}

/// One watch: its cursor and options, and where its responses go.
struct WatchTask {
    node: Arc<Node>,
    id: i64,
    range: WatchRange,
    /// The first revision not yet sent.
    next_rev: i64,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    progress_notify: bool,
    progress_interval: std::time::Duration,
    batch: usize,
    /// Responses are split (between revisions) to stay around this size.
    response_bytes: usize,
    tx: mpsc::Sender<PbWatchResponse>,
    sent_through: Arc<AtomicI64>,
}

impl WatchTask {
    async fn run(mut self) {
        let mut revisions = self.node.revisions();
        let period = self
            .progress_interval
            .max(std::time::Duration::from_millis(1));
        let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // As etcd: a progress notification goes only to a watch that sent no events since the
        // last tick.
        let mut sent_since_tick = false;
        loop {
            // Mark the current revision seen *before* reading the store, so a revision applied
            // after the read wakes us below.
            revisions.borrow_and_update();
            loop {
                let (current, fetched) = {
                    let store = self.node.store().read();
                    let current = store.revision();
                    if self.next_rev > current {
                        self.sent_through.store(current, Ordering::SeqCst);
                        break;
                    }
                    let fetched = store.watch_events(
                        &self.range.key,
                        &self.range.range_end,
                        self.next_rev,
                        self.prev_kv,
                        self.batch,
                    );
                    (current, fetched)
                };
                let batch = match fetched {
                    Ok(batch) => batch,
                    Err(EtcdError::Compacted) => {
                        let compacted = self.node.store().read().compact_revision();
                        tracing::debug!(compacted, "watch start revision compacted");
                        // etcd: the watch ends, and the client learns the compaction revision.
                        self.send(PbWatchResponse {
                            header: Some(self.node.header(current)),
                            watch_id: self.id,
                            canceled: true,
                            compact_revision: compacted.max(1),
                            ..Default::default()
                        })
                        .await;
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "watch failed");
                        self.send(PbWatchResponse {
                            header: Some(self.node.header(current)),
                            watch_id: self.id,
                            canceled: true,
                            cancel_reason: e.to_string(),
                            ..Default::default()
                        })
                        .await;
                        return;
                    }
                };
                if batch.next <= self.next_rev {
                    // The engine covered nothing: wait for the next revision rather than spin.
                    tracing::warn!(next_rev = self.next_rev, "watch read made no progress");
                    break;
                }
                let through = batch.next - 1;
                let events = self.filter(batch.events);
                let chunks = split_by_size(events, self.response_bytes);
                let last = chunks.len().saturating_sub(1);
                for (i, (events, chunk_rev)) in chunks.into_iter().enumerate() {
                    // The last response of the batch reports everything read as covered.
                    let revision = if i == last { through } else { chunk_rev };
                    let resp = PbWatchResponse {
                        header: Some(self.node.header(revision)),
                        watch_id: self.id,
                        events,
                        ..Default::default()
                    };
                    if !self.send(resp).await {
                        return;
                    }
                    sent_since_tick = true;
                }
                self.next_rev = batch.next;
                self.sent_through.store(through, Ordering::SeqCst);
            }
            tokio::select! {
                changed = revisions.changed() => {
                    if changed.is_err() {
                        // The member is shutting down.
                        return;
                    }
                }
                _ = ticker.tick(), if self.progress_notify => {
                    if !sent_since_tick {
                        let resp = PbWatchResponse {
                            header: Some(self.progress_header()),
                            watch_id: self.id,
                            ..Default::default()
                        };
                        if !self.send(resp).await {
                            return;
                        }
                    }
                    sent_since_tick = false;
                }
            }
        }
    }

    fn progress_header(&self) -> PbResponseHeader {
        self.node.header(self.sent_through.load(Ordering::SeqCst))
    }

    fn filter(&self, events: Vec<PbEvent>) -> Vec<PbEvent> {
        events
            .into_iter()
            .filter(|ev| keep_event(ev, self.no_put, self.no_delete))
            .collect()
    }

    /// Queues a response; false when the stream is gone.
    async fn send(&self, resp: PbWatchResponse) -> bool {
        self.tx.send(resp).await.is_ok()
    }
}

/// Splits events into responses of about `max_bytes`, never between two events of one
/// revision (a txn's events arrive together). Each part comes with its last revision.
fn split_by_size(events: Vec<PbEvent>, max_bytes: usize) -> Vec<(Vec<PbEvent>, i64)> {
    let revision = |ev: &PbEvent| ev.kv.as_ref().map_or(0, |kv| kv.mod_revision);
    let mut parts: Vec<(Vec<PbEvent>, i64)> = Vec::new();
    let mut size = 0;
    for ev in events {
        let rev = revision(&ev);
        let len = prost::Message::encoded_len(&ev);
        match parts.last_mut() {
            Some((part, last)) if *last == rev || size + len <= max_bytes => {
                part.push(ev);
                *last = rev;
                size += len;
            }
            _ => {
                parts.push((vec![ev], rev));
                size = len;
            }
        }
    }
    parts
}

fn keep_event(ev: &PbEvent, no_put: bool, no_delete: bool) -> bool {
    match ev.r#type {
        EVENT_PUT => !no_put,
        EVENT_DELETE => !no_delete,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_ranges_as_etcd() {
        assert_eq!(
            WatchRange::new(b"a".to_vec(), vec![]),
            Some(WatchRange {
                key: b"a".to_vec(),
                range_end: vec![]
            })
        );
        // Empty key is the smallest key; with "\0" that is every key.
        assert_eq!(
            WatchRange::new(vec![], vec![0]),
            Some(WatchRange {
                key: vec![0],
                range_end: vec![0]
            })
        );
        assert!(WatchRange::new(b"a".to_vec(), b"b".to_vec()).is_some());
        assert!(WatchRange::new(b"b".to_vec(), b"a".to_vec()).is_none());
        assert!(WatchRange::new(b"a".to_vec(), b"a".to_vec()).is_none());
        assert!(WatchRange::new(b"a".to_vec(), vec![0]).is_some());
    }

    fn put_at(rev: i64, value_len: usize) -> PbEvent {
        PbEvent {
            r#type: EVENT_PUT,
            kv: Some(etcd_client::proto::PbKeyValue {
                key: b"k".to_vec(),
                mod_revision: rev,
                value: vec![b'v'; value_len],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn responses_split_between_revisions_only() {
        let revs = |parts: &[(Vec<PbEvent>, i64)]| -> Vec<Vec<i64>> {
            parts
                .iter()
                .map(|(evs, _)| {
                    evs.iter()
                        .map(|e| e.kv.as_ref().unwrap().mod_revision)
                        .collect()
                })
                .collect()
        };
        assert!(split_by_size(Vec::new(), 100).is_empty());
        let small: Vec<_> = (1..=3).map(|r| put_at(r, 1)).collect();
        assert_eq!(revs(&split_by_size(small, 1 << 20)), vec![vec![1, 2, 3]]);
        // Each event is bigger than the limit: one revision per response, but the two events
        // of revision 5 stay together.
        let big = vec![
            put_at(4, 100),
            put_at(5, 100),
            put_at(5, 100),
            put_at(6, 100),
        ];
        let parts = split_by_size(big, 50);
        assert_eq!(revs(&parts), vec![vec![4], vec![5, 5], vec![6]]);
        assert_eq!(parts.iter().map(|p| p.1).collect::<Vec<_>>(), vec![4, 5, 6]);
    }

    #[test]
    fn filters() {
        let put = PbEvent {
            r#type: EVENT_PUT,
            ..Default::default()
        };
        let del = PbEvent {
            r#type: EVENT_DELETE,
            ..Default::default()
        };
        assert!(keep_event(&put, false, false));
        assert!(!keep_event(&put, true, false));
        assert!(keep_event(&del, true, false));
        assert!(!keep_event(&del, false, true));
    }
}

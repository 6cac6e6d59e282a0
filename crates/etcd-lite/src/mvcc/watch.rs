//! Watch replay. Recent events live in an in-memory ring, so the common case — a watcher a few
//! revisions behind the head, asked again after every apply — costs a binary search and a
//! short walk, no sled access. Older events come from sled's revision records (what etcd's
//! unsynced watchers read from the backend), in bounded steps.
//!
//! prev_kv follows etcd's watch server: the key as of the event's revision - 1, unless that
//! revision is compacted; never for a create.

use std::collections::VecDeque;

use etcd_client::proto::{PbEvent, PbKeyValue};

use super::index::Rev;
use super::layout::{self, RecordRef};
use super::read::{key_matches, to_kv, ReadError};
use super::write::Change;
use super::{Mvcc, WatchBatch};
use crate::error::EtcdError;

/// Most events the ring holds.
const RING_MAX_EVENTS: usize = 20_000;
/// Most bytes (keys, values, overhead) the ring holds, so large values cannot make it grow
/// past a fixed memory budget.
const RING_MAX_BYTES: usize = 16 << 20;
/// Most records one call reads from sled: a watcher far behind replays in steps, releasing the
/// caller's lock in between, instead of holding it for the whole history.
const SCAN_BUDGET: usize = 4096;

const EVENT_PUT: i32 = 0;
const EVENT_DELETE: i32 = 1;

/// The last committed changes, in revision order. Evicted a whole revision at a time, so that
/// it always holds *every* event of every revision from `from` to the current one.
#[derive(Debug)]
pub(crate) struct Ring {
    pub(super) events: VecDeque<Change>,
    bytes: usize,
    /// Every event with revision >= `from` is in the ring.
    pub(super) from: i64,
    max_events: usize,
    max_bytes: usize,
}

impl Ring {
    /// An empty ring that will hold events from revision `from` on.
    pub fn new(from: i64) -> Self {
        Ring {
            events: VecDeque::new(),
            bytes: 0,
            from,
            max_events: RING_MAX_EVENTS,
            max_bytes: RING_MAX_BYTES,
        }
    }

    #[cfg(test)]
    pub fn with_capacity(from: i64, max_events: usize, max_bytes: usize) -> Self {
        Ring {
            max_events,
            max_bytes,
            ..Ring::new(from)
        }
    }

    /// Adds one revision's changes.
    pub fn push(&mut self, changes: Vec<Change>) {
        for c in changes {
            self.bytes += c.size();
            self.events.push_back(c);
        }
        while self.events.len() > self.max_events || self.bytes > self.max_bytes {
            let Some(main) = self.events.front().map(|c| c.rev.main) else {
                break;
            };
            while let Some(c) = self.events.front().filter(|c| c.rev.main == main) {
                self.bytes -= c.size();
                self.events.pop_front();
            }
            self.from = main + 1;
        }
    }

    /// Compaction at `rev` changes what history shows at `rev` (its deletes are gone): drop
    /// those revisions here so that replay from them reads what sled kept, as etcd does.
    pub fn compacted(&mut self, rev: i64) {
        while let Some(c) = self.events.front().filter(|c| c.rev.main <= rev) {
            self.bytes -= c.size();
            self.events.pop_front();
        }
        self.from = self.from.max(rev + 1);
    }

    fn find(&self, rev: Rev) -> Option<&Change> {
        let i = self.events.partition_point(|c| c.rev < rev);
        self.events.get(i).filter(|c| c.rev == rev)
    }
}

/// Collects events, closing a batch only at a revision boundary.
struct Collector {
    events: Vec<PbEvent>,
    max: usize,
    /// The revision of the last event taken.
    last: i64,
}

impl Collector {
    /// Whether to stop before an event of revision `main`.
    fn full_before(&self, main: i64) -> bool {
        self.events.len() >= self.max && main != self.last
    }
}

impl Mvcc {
    pub(crate) fn events(
        &self,
        key: &[u8],
        range_end: &[u8],
        start: i64,
        prev_kv: bool,
        max_events: usize,
    ) -> Result<WatchBatch, ReadError> {
        // etcd: a watcher is compacted when its start is *below* the compaction revision.
        if start < self.state.compact_rev {
            return Err(EtcdError::Compacted.into());
        }
        let start = start.max(1);
        let head = self.state.rev;
        if start > head {
            return Ok(WatchBatch {
                events: Vec::new(),
                next: start,
            });
        }
        let mut out = Collector {
            events: Vec::new(),
            max: max_events.max(1),
            last: 0,
        };
        if start < self.ring.from {
            if let Some(next) = self.scan_sled(key, range_end, start, prev_kv, &mut out)? {
                return Ok(WatchBatch {
                    events: out.events,
                    next,
                });
            }
        }
        let from = start.max(self.ring.from);
        let first = self.ring.events.partition_point(|c| c.rev.main < from);
        for c in self.ring.events.range(first..) {
            if out.full_before(c.rev.main) {
                return Ok(WatchBatch {
                    events: out.events,
                    next: c.rev.main,
                });
            }
            if !key_matches(&c.key, key, range_end) {
                continue;
            }
            let prev = match c.prev {
                Some(p) if prev_kv => self.prev_from_ring(c.rev.main, p)?,
                _ => None,
            };
            out.last = c.rev.main;
            out.events.push(event(c.record(), c.rev.main, prev));
        }
        Ok(WatchBatch {
            events: out.events,
            next: head + 1,
        })
    }

    /// Replays from sled, from `start` up to the ring. `Some(next)` if it stopped early (batch
    /// full or scan budget spent); `None` if it reached the ring.
    fn scan_sled(
        &self,
        key: &[u8],
        range_end: &[u8],
        start: i64,
        prev_kv: bool,
        out: &mut Collector,
    ) -> Result<Option<i64>, ReadError> {
        let lo = layout::rev_key(Rev {
            main: start,
            sub: 0,
        });
        let hi = layout::rev_key(Rev {
            main: self.ring.from,
            sub: 0,
        });
        let mut last_main = 0;
        for (scanned, item) in self.tree.range(lo..hi).enumerate() {
            let (k, v) = item?;
            let rev = layout::parse_rev_key(&k)
                .ok_or_else(|| super::StoreError::Corrupt("bad revision key".into()))?;
            if rev.main != last_main {
                if out.full_before(rev.main) || scanned >= SCAN_BUDGET {
                    return Ok(Some(rev.main));
                }
                last_main = rev.main;
            }
            if rev.main <= self.state.compact_rev && self.state.garbage.binary_search(&rev).is_ok()
            {
                // Compacted away, not yet deleted.
                continue;
            }
            let rec = layout::decode_record(&v)?;
            if !key_matches(rec.key, key, range_end) {
                continue;
            }
            let prev = if prev_kv && !is_create(&rec, rev.main) {
                self.prev_from_index(rec.key, rev.main)?
            } else {
                None
            };
            out.last = rev.main;
            out.events.push(event(rec, rev.main, prev));
        }
        Ok(None)
    }

    /// The key as of `main - 1` when its previous revision `prev` is known (ring events).
    fn prev_from_ring(&self, main: i64, prev: Rev) -> Result<Option<PbKeyValue>, ReadError> {
        if main - 1 < self.state.compact_rev {
            return Ok(None);
        }
        if let Some(c) = self.ring.find(prev) {
            return Ok(Some(to_kv(c.record(), prev.main)));
        }
        match self.tree.get(layout::rev_key(prev))? {
            Some(bytes) => Ok(Some(to_kv(layout::decode_record(&bytes)?, prev.main))),
            None => Ok(None),
        }
    }

    /// The key as of `main - 1`, from the index (events replayed from sled).
    fn prev_from_index(&self, key: &[u8], main: i64) -> Result<Option<PbKeyValue>, ReadError> {
        if main - 1 < self.state.compact_rev {
            return Ok(None);
        }
        match self.state.index.get(key).and_then(|ki| ki.rev_at(main - 1)) {
            Some(rev) => Ok(Some(self.load(rev, None)?)),
            None => Ok(None),
        }
    }
}

/// etcd's `IsCreateEvent`.
fn is_create(rec: &RecordRef<'_>, main: i64) -> bool {
    rec.put.is_some_and(|p| p.create == main)
}

fn event(rec: RecordRef<'_>, main: i64, prev_kv: Option<PbKeyValue>) -> PbEvent {
    PbEvent {
        r#type: if rec.put.is_some() {
            EVENT_PUT
        } else {
            EVENT_DELETE
        },
        kv: Some(to_kv(rec, main)),
        prev_kv,
    }
}

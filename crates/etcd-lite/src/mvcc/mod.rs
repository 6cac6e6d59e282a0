//! The MVCC key-value engine: etcd's data model on top of `sled`.
//!
//! It owns the store's *meaning*: the cluster revision, per-key create/mod revision and version,
//! the history of every change until compaction, reads at old revisions, Txn evaluation,
//! leases' key attachments, and the state-machine snapshot. It is synchronous and deterministic:
//! applying the same commands in the same order gives the same state and responses on every
//! member. It must never know about Raft, networking or time.
//!
//! Submodules:
//! * [`validate`]: etcd's request checks, made before proposing (and again when applying).
//! * `index`: the in-memory key index (etcd's `treeIndex`): key → generations of revisions.
//! * `layout`: sled key encodings and the revision record format.
//! * `read`: Range and Txn compares, at any revision since compaction.
//! * `write`: Put, DeleteRange, Txn, leases, member attributes and compaction.
//! * `watch`: watch replay from an in-memory ring of recent events, or from sled.
//! * `snapshot`: whole-state snapshots, and rebuilding memory from sled.
//!
//! # Layout in sled
//!
//! One tree, `mvcc`. Each apply is atomic in memory (under the caller's write lock); on disk its
//! writes go in one by one (see `layout::Writes` for why), and the Raft layer rebuilds the state
//! machine from its last snapshot and the log after an unclean stop. Keys start with a one-byte
//! keyspace prefix:
//!
//! | key                                 | value                                          |
//! |-------------------------------------|------------------------------------------------|
//! | `r` main:u64be sub:u64be            | revision record (below)                        |
//! | `l` (id:i64 ^ sign bit):u64be       | lease: granted TTL, i64be                      |
//! | `a` member id:u64be                 | [`MemberAttrs`], bincode                       |
//! | `m` caller's key                    | opaque metadata ([`Mvcc::set_meta`])           |
//! | `srev`                              | current revision at the last compaction, i64be |
//! | `scompact`                          | compaction revision, i64be (absent: never)     |
//!
//! A revision record is what changed one key at one revision, as etcd stores it: kind (u8:
//! 0 put, 1 delete), key length (u32be), key, and for a put create revision, version and
//! lease (i64be each) followed by the value. The mod revision is the record's own key.
//! Records are kept after the compaction revision, plus each key's latest put at or before
//! it (etcd's rule), so one sled range scan replays history for watchers, and a read at
//! revision R is an index lookup then one sled get. Nothing here is flushed: the Raft log is
//! the durable record, and the caller flushes before it may purge that log.
//!
//! The current revision is that of the last record, or `srev` if larger: written by each
//! compaction, because compaction can remove the current revision's records (deletes), and
//! not by every apply, which would cost each write one more sled insert.
//!
//! Compaction removes records from the index at once and from sled gradually (a few per
//! later apply; `State::garbage`). On open the remaining ones are found again by compacting
//! the rebuilt index at `scompact`.
//!
//! Lease attachments are not stored separately: they are the `lease` fields of the keys'
//! current records, and [`Mvcc::open`] rebuilds them (and the key index) from the records.
//!
//! Concurrency: the caller wraps [`Mvcc`] in a lock; `apply` takes `&mut self`, reads `&self`.

mod index;
mod layout;
mod read;
mod snapshot;
pub mod validate;
mod watch;
mod write;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use etcd_client::proto::{PbEvent, PbRangeRequest, PbRangeResponse, PbTxnRequest, PbTxnResponse};

use crate::command::{Command, CommandResponse};
use crate::error::EtcdError;

use index::{KeyIndex, Rev};
pub use validate::{is_txn_read_only, validate_delete, validate_put, validate_range, validate_txn};
use watch::Ring;

/// etcd's `MaxLeaseTTL`: a grant above it is `LeaseTtlTooLarge`.
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// How many compacted records each apply deletes from sled, at least (see [`Mvcc::apply`]).
/// A sled delete costs about as much as a put (~20µs), so deleting a big compaction's records
/// in one go would stall applies for seconds. A plain write makes at most one record
/// garbage, so a few per apply keeps up with the usual load, and each apply stays cheap.
const GC_PER_APPLY: usize = 4;
/// Plus one more per this many waiting records, so that a backlog left by writes that make
/// many records per revision (big txns, lease revokes) still drains.
const GC_BACKLOG_STEP: usize = 16_384;

/// Errors of the storage itself (I/O, corruption), as opposed to a request's [`EtcdError`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt store data: {0}")]
    Corrupt(String),
}

/// A lease as the state machine knows it (no deadlines: time is the lessor's business).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    pub id: i64,
    /// The TTL it was granted with, in seconds.
    pub granted_ttl: i64,
    /// Keys attached to it, sorted.
    pub keys: Vec<Vec<u8>>,
}

/// What a member published about itself through [`Command::MemberAttrs`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemberAttrs {
    pub name: String,
    pub client_urls: Vec<String>,
}

/// A batch of watch events for one watcher.
#[derive(Clone, Debug, Default)]
pub struct WatchBatch {
    /// Events with revision in `[start, next)`, in revision order (then sub-revision order).
    pub events: Vec<PbEvent>,
    /// The first revision not yet covered: the watcher's next start revision.
    pub next: i64,
}

/// A lease's state-machine side.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Lease {
    ttl: i64,
    /// Attached keys; the same allocations as the index's keys.
    keys: BTreeSet<Arc<[u8]>>,
}

/// Everything reads need in memory, all derived from the sled tree (see `snapshot::load`).
#[derive(Debug, Default)]
struct State {
    /// Key → its revisions. Keys are shared (`Arc`) with lease attachments and recent events
    /// so that each key's bytes live once.
    index: BTreeMap<Arc<[u8]>, KeyIndex>,
    leases: BTreeMap<i64, Lease>,
    members: BTreeMap<u64, MemberAttrs>,
    /// The current revision; 1 on an empty store, as etcd.
    rev: i64,
    /// The compaction revision; -1 until the first compaction, as etcd's `compactMainRev`
    /// (which makes `Compact(0)` on a fresh store succeed, as in etcd).
    compact_rev: i64,
    /// Records compaction has dropped from the index but not yet deleted from sled, ascending.
    /// No read can reach them (they are all at or before `compact_rev`, and nothing points at
    /// them); snapshots leave them out. A function of the tree's contents (see
    /// `snapshot::load`), so every member and every restart agrees on it.
    garbage: VecDeque<Rev>,
}

/// The engine.
pub struct Mvcc {
    /// Kept for `size_on_disk`.
    db: sled::Db,
    /// The one tree holding the engine's state (see the module docs).
    tree: sled::Tree,
    state: State,
    /// Recent events, so that watchers near the head never touch sled.
    ring: Ring,
    /// [`GC_PER_APPLY`]; a field so that tests can slow the garbage collection down.
    gc_per_apply: usize,
}

impl Mvcc {
    /// Opens (or creates) the engine in `db`, rebuilding in-memory indexes from disk.
    pub fn open(db: &sled::Db) -> Result<Self, StoreError> {
        let tree = db.open_tree("mvcc")?;
        let state = snapshot::load(tree.iter().map(|r| r.map_err(StoreError::from)))?;
        let ring = Ring::new(state.rev + 1);
        Ok(Mvcc {
            db: db.clone(),
            tree,
            state,
            ring,
            gc_per_apply: GC_PER_APPLY,
        })
    }

    /// Applies one command, atomically as far as any reader can see. `raft_meta`, when given, is
    /// written with the command's effects (the Raft layer stores its last-applied log id this
    /// way). On disk the writes are not atomic: see `layout::Writes`.
    /// A request-level failure (lease not found, ...) is `CommandResponse::Error` and changes
    /// nothing but `raft_meta`; only a storage failure is `Err`.
    ///
    /// Compaction takes effect at once, but the records it frees are deleted from sled a few at
    /// a time, in the batches of later applies.
    pub fn apply(
        &mut self,
        cmd: &Command,
        raft_meta: Option<(&[u8], &[u8])>,
    ) -> Result<CommandResponse, StoreError> {
        self.apply_command(cmd, raft_meta)
    }

    /// Writes one opaque metadata value (used by the Raft layer for membership-only entries).
    pub fn set_meta(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.tree.insert(layout::meta_key(key), value)?;
        Ok(())
    }

    /// Reads one opaque metadata value.
    pub fn meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree.get(layout::meta_key(key))?.map(|v| v.to_vec()))
    }

    /// Serves a Range at `req.revision` (0 = current), with limit, sort, keys_only,
    /// count_only, min/max mod/create revision filters. The response header's revision is the
    /// store's current revision (as etcd). `Compacted` / `FutureRevision` as etcd.
    pub fn range(&self, req: &PbRangeRequest) -> Result<PbRangeResponse, EtcdError> {
        validate_range(req)?;
        self.range_at(req, self.state.rev, None)
            .map_err(read::ReadError::into_etcd)
    }

    /// Evaluates a read-only txn (every op a Range, at any depth) without the log, as etcd
    /// serves read-only txns: compares and ranges at the current revision. A txn that writes
    /// is refused with `Internal`; it must be proposed.
    pub fn txn_read(&self, req: &PbTxnRequest) -> Result<PbTxnResponse, EtcdError> {
        self.txn_read_only(req)
    }

    /// The current store revision (starts at 1 on an empty store, as etcd).
    pub fn revision(&self) -> i64 {
        self.state.rev
    }

    /// The revision history was compacted at (0 if never).
    pub fn compact_revision(&self) -> i64 {
        self.state.compact_rev.max(0)
    }

    /// Events for keys in `[key, range_end)` (etcd range rules: empty range_end = just `key`,
    /// `\0` = all keys >= key) from revision `start` onwards, at most roughly `max_events` (a
    /// revision's events are never split). `prev_kv` fills each event's prev_kv where history
    /// still has it. `Err(Compacted)` when `start` < compact revision, as etcd (whose watchers
    /// may start *at* the compaction revision, seeing what compaction kept of it).
    ///
    /// The batch may be empty with `next` advanced (history scanned in bounded steps so the
    /// caller's lock is released between them); callers loop until `next > revision()`.
    pub fn watch_events(
        &self,
        key: &[u8],
        range_end: &[u8],
        start: i64,
        prev_kv: bool,
        max_events: usize,
    ) -> Result<WatchBatch, EtcdError> {
        self.events(key, range_end, start, prev_kv, max_events)
            .map_err(read::ReadError::into_etcd)
    }

    /// One lease, if it exists.
    pub fn lease(&self, id: i64) -> Option<LeaseInfo> {
        self.state.leases.get(&id).map(|l| LeaseInfo {
            id,
            granted_ttl: l.ttl,
            keys: l.keys.iter().map(|k| k.to_vec()).collect(),
        })
    }

    /// Every lease id with its granted TTL, sorted by id.
    pub fn leases(&self) -> Vec<(i64, i64)> {
        self.state
            .leases
            .iter()
            .map(|(id, l)| (*id, l.ttl))
            .collect()
    }

    /// What each member published about itself.
    pub fn member_attrs(&self) -> BTreeMap<u64, MemberAttrs> {
        self.state.members.clone()
    }

    /// The whole state (keys, history since compaction, leases, member attrs, metadata) as
    /// bytes, for a Raft snapshot.
    pub fn snapshot(&self) -> Result<Vec<u8>, StoreError> {
        snapshot::dump(&self.tree, &self.state.garbage)
    }

    /// Replaces the whole state with a snapshot made by [`Mvcc::snapshot`].
    pub fn restore(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.restore_from(data)
    }

    /// Bytes the store takes on disk (Status.dbSize).
    pub fn db_size(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

//! The MVCC key-value engine: etcd's data model on top of `sled`.
//!
//! It owns the store's *meaning*: the cluster revision, per-key create/mod revision and version,
//! the history of every change until compaction, reads at old revisions, Txn evaluation,
//! leases' key attachments, and the state-machine snapshot. It is synchronous and deterministic:
//! applying the same commands in the same order gives the same state and responses on every
//! member. It must never know about Raft, networking or time.
//!
//! Layout in sled (one tree, `mvcc`, so that one `sled::Batch` makes each apply atomic):
//! see the module docs of the submodules.
//!
//! Concurrency: the caller wraps [`Mvcc`] in a lock; `apply` takes `&mut self`, reads `&self`.

use std::collections::BTreeMap;

use etcd_client::proto::{PbEvent, PbRangeRequest, PbRangeResponse};

use crate::command::{Command, CommandResponse};
use crate::error::EtcdError;

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

/// The engine.
pub struct Mvcc {
    _private: (),
}

impl Mvcc {
    /// Opens (or creates) the engine in `db`, rebuilding in-memory indexes from disk.
    pub fn open(_db: &sled::Db) -> Result<Self, StoreError> {
        todo!("mvcc engine")
    }

    /// Applies one command atomically. `raft_meta`, when given, is written in the same sled batch
    /// (the Raft layer stores its last-applied log id this way, so the two can never disagree).
    /// A request-level failure (lease not found, ...) is `CommandResponse::Error` and changes
    /// nothing but `raft_meta`; only a storage failure is `Err`.
    pub fn apply(
        &mut self,
        _cmd: &Command,
        _raft_meta: Option<(&[u8], &[u8])>,
    ) -> Result<CommandResponse, StoreError> {
        todo!("mvcc engine")
    }

    /// Writes one opaque metadata value (used by the Raft layer for membership-only entries).
    pub fn set_meta(&mut self, _key: &[u8], _value: &[u8]) -> Result<(), StoreError> {
        todo!("mvcc engine")
    }

    /// Reads one opaque metadata value.
    pub fn meta(&self, _key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        todo!("mvcc engine")
    }

    /// Serves a Range at `req.revision` (0 = current), with limit, sort, keys_only,
    /// count_only, min/max mod/create revision filters. The response header's revision is the
    /// store's current revision (as etcd). `Compacted` / `FutureRevision` as etcd.
    pub fn range(&self, _req: &PbRangeRequest) -> Result<PbRangeResponse, EtcdError> {
        todo!("mvcc engine")
    }

    /// The current store revision (starts at 1 on an empty store, as etcd).
    pub fn revision(&self) -> i64 {
        todo!("mvcc engine")
    }

    /// The revision history was compacted at (0 if never).
    pub fn compact_revision(&self) -> i64 {
        todo!("mvcc engine")
    }

    /// Events for keys in `[key, range_end)` (etcd range rules: empty range_end = just `key`,
    /// `\0` = all keys >= key) from revision `start` onwards, at most roughly `max_events` (a
    /// revision's events are never split). `prev_kv` fills each event's prev_kv where history
    /// still has it. `Err(Compacted)` when `start` <= compact revision.
    pub fn watch_events(
        &self,
        _key: &[u8],
        _range_end: &[u8],
        _start: i64,
        _prev_kv: bool,
        _max_events: usize,
    ) -> Result<WatchBatch, EtcdError> {
        todo!("mvcc engine")
    }

    /// One lease, if it exists.
    pub fn lease(&self, _id: i64) -> Option<LeaseInfo> {
        todo!("mvcc engine")
    }

    /// Every lease id with its granted TTL, sorted by id.
    pub fn leases(&self) -> Vec<(i64, i64)> {
        todo!("mvcc engine")
    }

    /// What each member published about itself.
    pub fn member_attrs(&self) -> BTreeMap<u64, MemberAttrs> {
        todo!("mvcc engine")
    }

    /// The whole state (keys, history since compaction, leases, member attrs, metadata) as
    /// bytes, for a Raft snapshot.
    pub fn snapshot(&self) -> Result<Vec<u8>, StoreError> {
        todo!("mvcc engine")
    }

    /// Replaces the whole state with a snapshot made by [`Mvcc::snapshot`].
    pub fn restore(&mut self, _data: &[u8]) -> Result<(), StoreError> {
        todo!("mvcc engine")
    }

    /// Bytes the store takes on disk (Status.dbSize).
    pub fn db_size(&self) -> u64 {
        todo!("mvcc engine")
    }
}

//! The Raft log and vote, in sled.
//!
//! Keys: tree `raft_log`: log index (u64 big-endian) → bincode `Entry`; tree `raft_state`:
//! `vote`, `committed`, `last_purged` → bincode values.
//!
//! Durability: `append` writes entries to sled at once (so they are readable) but acknowledges
//! them to openraft only after a flush. A single flusher task takes every append that queued
//! while the previous fsync ran and flushes once for all of them: group commit, so 64 concurrent
//! clients cost one fsync per batch, not 64. A vote is flushed before `save_vote` returns.

use std::{fmt::Debug, ops::RangeBounds, sync::Arc};

use openraft::{
    storage::{LogFlushed, RaftLogStorage},
    ErrorSubject, ErrorVerb, LogState, OptionalSend, RaftLogReader, Vote,
};
use tokio::sync::mpsc;

use super::{decode, encode, io_err, Entry, LogId, StorageError, TypeConfig};

#[derive(Clone)]
pub struct LogStore {
    /// This member's id: entries of another leader are being replicated to us.
    id: u64,
    db: sled::Db,
    log: sled::Tree,
    state: sled::Tree,
    flusher: mpsc::UnboundedSender<LogFlushed<TypeConfig>>,
}

impl LogStore {
    pub fn open(db: &sled::Db, id: u64) -> Result<Self, sled::Error> {
        let log = db.open_tree("raft_log")?;
        let state = db.open_tree("raft_state")?;
        let (flusher, rx) = mpsc::unbounded_channel();
        let flusher_db = db.clone();
        std::thread::Builder::new()
            .name("raft-log-flush".into())
            .spawn(move || flush_loop(flusher_db, rx))?;
        Ok(LogStore {
            id,
            db: db.clone(),
            log,
            state,
            flusher,
        })
    }

    fn read_state<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, StorageError> {
        let raw = self
            .state
            .get(key)
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Read, e))?;
        raw.map(|v| decode(&v))
            .transpose()
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Read, *e))
    }

    fn write_state<T: serde::Serialize>(&self, key: &str, value: &T) -> Result<(), StorageError> {
        self.state
            .insert(key, encode(value))
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
        Ok(())
    }

    async fn flush(&self) -> Result<(), StorageError> {
        self.db
            .flush_async()
            .await
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
        Ok(())
    }
}

/// Flushes sled once for every group of appends that queued up meanwhile, then acknowledges them
/// in order. Runs on its own OS thread: sled's `flush_async` hands each flush to a pool thread,
/// and at thousands of appends a second that hand-off costs more CPU than the fsync itself.
/// Ends when the log store (the sending side) is dropped.
fn flush_loop(db: sled::Db, mut rx: mpsc::UnboundedReceiver<LogFlushed<TypeConfig>>) {
    let mut batch = Vec::new();
    while let Some(cb) = rx.blocking_recv() {
        batch.push(cb);
        while let Ok(cb) = rx.try_recv() {
            batch.push(cb);
        }
        let result = db.flush();
        for cb in batch.drain(..) {
            match &result {
                Ok(_) => cb.log_io_completed(Ok(())),
                Err(e) => cb.log_io_completed(Err(std::io::Error::other(e.to_string()))),
            }
        }
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        use std::ops::Bound;
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let iter = match range.end_bound() {
            Bound::Included(i) => self.log.range(index_key(start)..=index_key(*i)),
            Bound::Excluded(i) => self.log.range(index_key(start)..index_key(*i)),
            Bound::Unbounded => self.log.range(index_key(start)..),
        };
        let mut out = Vec::new();
        for item in iter {
            let (_, v) = item.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            let entry: Entry =
                decode(&v).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, *e))?;
            out.push(entry);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.read_state("last_purged")?;
        let last = match self
            .log
            .last()
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?
        {
            Some((_, v)) => {
                let e: Entry =
                    decode(&v).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, *e))?;
                Some(e.log_id)
            }
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        self.write_state("vote", vote)?;
        self.flush().await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        self.read_state("vote")
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not flushed on its own: it is an optimisation for restart (re-applying committed
        // entries at once), never needed for safety.
        self.write_state("committed", &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.read_state::<Option<LogId>>("committed")?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Plain inserts, not a sled batch (which would write an IO buffer of its own): the flush
        // below makes them durable, and sled recovers a prefix of its writes, so a crash can
        // only cut the appended entries short, never leave a gap.
        let mut replicated = false;
        for entry in entries {
            replicated |= entry.log_id.leader_id.node_id != self.id;
            self.log
                .insert(index_key(entry.log_id.index), encode(&entry))
                .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        }
        if replicated {
            // A follower: the leader waits for this answer, and nothing else here can proceed
            // before it; flushing right here saves two thread hand-offs on the commit path.
            let r = self.db.flush();
            callback.log_io_completed(
                r.map(|_| ())
                    .map_err(|e| std::io::Error::other(e.to_string())),
            );
            return Ok(());
        }
        if let Err(mpsc::error::SendError(cb)) = self.flusher.send(callback) {
            // The flusher only ends with the store; flush inline rather than lose the ack.
            let r = self.db.flush_async().await;
            cb.log_io_completed(
                r.map(|_| ())
                    .map_err(|e| std::io::Error::other(e.to_string())),
            );
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for item in self.log.range(index_key(log_id.index)..) {
            let (k, _) = item.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            batch.remove(k);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        self.flush().await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Record the purge point first: a crash in between leaves extra entries, never a gap.
        self.write_state("last_purged", &Some(log_id))?;
        let mut batch = sled::Batch::default();
        for item in self.log.range(..=index_key(log_id.index)) {
            let (k, _) = item.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            batch.remove(k);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        Ok(())
    }
}

impl LogStore {
    /// The sled database (shared with the state machine).
    pub fn db(&self) -> &sled::Db {
        &self.db
    }
}

/// Shared handle type used by the node.
pub type SharedLogStore = Arc<LogStore>;

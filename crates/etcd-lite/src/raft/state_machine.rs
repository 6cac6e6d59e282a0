//! The Raft state machine: committed entries go into the MVCC engine.
//!
//! The engine stores Raft's last-applied log id and membership in its own metadata, written
//! with each command's effects.
//!
//! Durability: the Raft log is the durable record; the state machine is written without fsync
//! and without sled batches (which cost an IO-buffer write each). So it is trusted on disk only
//! when the member stopped cleanly ([`mark_clean_shutdown`]). After any other stop,
//! [`StateMachine::open`] puts back the last snapshot (or an empty store) and openraft replays
//! the log from there: a half-written apply can never be seen. Snapshots are the engine's whole
//! state, stored in this database and flushed, and openraft purges the log only up to a
//! snapshot, so the log always holds what the replay needs.

use std::{io::Cursor, sync::Arc, time::Duration};

use openraft::{
    storage::{RaftStateMachine, Snapshot},
    EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder, SnapshotMeta,
};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{
    decode, encode, io_err, Entry, LogId, PeerNode, StorageError, StoredMembership, TypeConfig,
};
use crate::{
    command::{Command, CommandResponse},
    lessor::Lessor,
    metrics::Metrics,
    mvcc::{Mvcc, StoreError},
};

const META_APPLIED: &[u8] = b"raft/last_applied";
const META_MEMBERSHIP: &[u8] = b"raft/membership";
/// "1" once the member has stopped cleanly; "0" while it runs.
const META_CLEAN: &[u8] = b"raft/clean_shutdown";
/// How far into a batch entry the state machine got: `(log id, commands applied)`. Each
/// command of a batch is its own atomic write, so after a crash in the middle of one the entry
/// is replayed and the commands already applied are skipped, never applied twice.
const META_BATCH: &[u8] = b"raft/batch_progress";

/// What the state machine shares with the rest of the member.
pub struct Shared {
    pub mvcc: Arc<RwLock<Mvcc>>,
    /// The store revision after each applied batch; watchers wait on it.
    pub revision: watch::Sender<i64>,
    pub lessor: Arc<Lessor>,
    pub metrics: Arc<Metrics>,
}

pub struct StateMachine {
    shared: Arc<Shared>,
    db: sled::Db,
    snapshots: sled::Tree,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<u64, PeerNode>,
    data: Vec<u8>,
}

fn sm_err(verb: ErrorVerb, e: StoreError) -> StorageError {
    io_err(ErrorSubject::StateMachine, verb, e)
}

impl StateMachine {
    pub fn open(db: &sled::Db, shared: Arc<Shared>) -> Result<Self, StorageError> {
        let snapshots = db
            .open_tree("raft_snapshot")
            .map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Read, e))?;
        let sm = StateMachine {
            shared,
            db: db.clone(),
            snapshots,
        };
        {
            let mut mvcc = sm.shared.mvcc.write();
            let clean = mvcc
                .meta(META_CLEAN)
                .map_err(|e| sm_err(ErrorVerb::Read, e))?
                .is_some_and(|v| v == b"1");
            if !clean {
                sm.rebuild(&mut mvcc)?;
            }
            mvcc.set_meta(META_CLEAN, b"0")
                .map_err(|e| sm_err(ErrorVerb::Write, e))?;
            sm.shared.revision.send_replace(mvcc.revision());
            sm.shared.lessor.reset(&mvcc.leases(), Duration::ZERO);
        }
        // "Not clean" must be on disk before the first apply changes anything.
        sm.db
            .flush()
            .map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Write, e))?;
        Ok(sm)
    }

    /// After an unclean stop: the last snapshot (or nothing), for openraft to replay the log on.
    fn rebuild(&self, mvcc: &mut Mvcc) -> Result<(), StorageError> {
        let stored = self
            .snapshots
            .get("current")
            .map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?;
        match stored {
            Some(raw) => {
                let stored: StoredSnapshot = decode(&raw)
                    .map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, *e))?;
                mvcc.restore(&stored.data)
                    .map_err(|e| sm_err(ErrorVerb::Write, e))?;
                mvcc.set_meta(META_MEMBERSHIP, &encode(&stored.meta.last_membership))
                    .map_err(|e| sm_err(ErrorVerb::Write, e))?;
                mvcc.set_meta(META_APPLIED, &encode(&stored.meta.last_log_id))
                    .map_err(|e| sm_err(ErrorVerb::Write, e))?;
                tracing::info!(snapshot = %stored.meta.snapshot_id, "member did not stop cleanly: state machine rebuilt from its last snapshot; the log replays the rest");
            }
            None => {
                mvcc.restore(&empty_snapshot()?)
                    .map_err(|e| sm_err(ErrorVerb::Write, e))?;
                tracing::info!("member did not stop cleanly: state machine rebuilt from the log");
            }
        }
        Ok(())
    }

    fn read_applied(mvcc: &Mvcc) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = match mvcc
            .meta(META_APPLIED)
            .map_err(|e| sm_err(ErrorVerb::Read, e))?
        {
            Some(b) => decode::<Option<LogId>>(&b)
                .map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Read, *e))?,
            None => None,
        };
        let membership = match mvcc
            .meta(META_MEMBERSHIP)
            .map_err(|e| sm_err(ErrorVerb::Read, e))?
        {
            Some(b) => decode::<StoredMembership>(&b)
                .map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Read, *e))?,
            None => StoredMembership::default(),
        };
        Ok((applied, membership))
    }

    fn store_snapshot(&self, stored: &StoredSnapshot) -> Result<(), StorageError> {
        self.snapshots
            .insert("current", encode(stored))
            .map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
        Ok(())
    }

    async fn flush(&self) -> Result<(), StorageError> {
        self.db
            .flush_async()
            .await
            .map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Write, e))?;
        Ok(())
    }
}

impl StateMachine {
    /// Applies one client or member command, and tells the lessor what it changed.
    fn apply_one(
        &self,
        mvcc: &mut Mvcc,
        cmd: &Command,
        raft_meta: (&[u8], &[u8]),
    ) -> Result<CommandResponse, StorageError> {
        let response = mvcc
            .apply(cmd, Some(raft_meta))
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        match (cmd, &response) {
            (Command::LeaseGrant { id, ttl }, CommandResponse::LeaseGrant { .. }) => {
                self.shared.lessor.granted(*id, *ttl)
            }
            (Command::LeaseRevoke { id }, _) => self.shared.lessor.revoked(*id),
            _ => {}
        }
        Ok(response)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Self::read_applied(&self.shared.mvcc.read())
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut responses = Vec::new();
        let mut applied = 0i64;
        let revision = {
            let mut mvcc = self.shared.mvcc.write();
            for entry in entries {
                let applied_meta = encode(&Some(entry.log_id));
                let response = match entry.payload {
                    EntryPayload::Blank => {
                        mvcc.set_meta(META_APPLIED, &applied_meta)
                            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
                        CommandResponse::Noop
                    }
                    EntryPayload::Membership(m) => {
                        let stored = StoredMembership::new(Some(entry.log_id), m);
                        mvcc.set_meta(META_MEMBERSHIP, &encode(&stored))
                            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
                        mvcc.set_meta(META_APPLIED, &applied_meta)
                            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
                        CommandResponse::Noop
                    }
                    EntryPayload::Normal(Command::Batch(cmds)) if cmds.is_empty() => {
                        mvcc.set_meta(META_APPLIED, &applied_meta)
                            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
                        CommandResponse::Batch(Vec::new())
                    }
                    EntryPayload::Normal(Command::Batch(cmds)) => {
                        let done = match mvcc
                            .meta(META_BATCH)
                            .map_err(|e| sm_err(ErrorVerb::Read, e))?
                        {
                            Some(b) => match decode::<(LogId, usize)>(&b) {
                                Ok((log_id, done)) if log_id == entry.log_id => done,
                                _ => 0,
                            },
                            None => 0,
                        };
                        let mut batch = Vec::with_capacity(cmds.len());
                        for (i, cmd) in cmds.iter().enumerate() {
                            if i < done {
                                // Applied before a crash; its client is long gone.
                                batch.push(CommandResponse::Noop);
                                continue;
                            }
                            let progress;
                            let meta = if i + 1 == cmds.len() {
                                (META_APPLIED, applied_meta.as_slice())
                            } else {
                                progress = encode(&(entry.log_id, i + 1));
                                (META_BATCH, progress.as_slice())
                            };
                            batch.push(self.apply_one(&mut mvcc, cmd, meta)?);
                            applied += 1;
                        }
                        CommandResponse::Batch(batch)
                    }
                    EntryPayload::Normal(cmd) => {
                        applied += 1;
                        self.apply_one(&mut mvcc, &cmd, (META_APPLIED, &applied_meta))?
                    }
                };
                responses.push(response);
            }
            mvcc.revision()
        };
        self.shared.revision.send_replace(revision);
        self.shared.metrics.proposals_applied.add(applied);
        self.shared.metrics.mvcc_revision.set(revision);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            shared: self.shared.clone(),
            db: self.db.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, PeerNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let revision = {
            let mut mvcc = self.shared.mvcc.write();
            mvcc.restore(&data)
                .map_err(|e| sm_err(ErrorVerb::Write, e))?;
            // The snapshot's own metadata may predate the log id it was cut at; these are exact.
            mvcc.set_meta(META_MEMBERSHIP, &encode(&meta.last_membership))
                .map_err(|e| sm_err(ErrorVerb::Write, e))?;
            mvcc.set_meta(META_APPLIED, &encode(&meta.last_log_id))
                .map_err(|e| sm_err(ErrorVerb::Write, e))?;
            self.shared.lessor.reset(&mvcc.leases(), Duration::ZERO);
            mvcc.revision()
        };
        tracing::info!(snapshot = %meta.snapshot_id, revision, "installed snapshot");
        self.store_snapshot(&StoredSnapshot {
            meta: meta.clone(),
            data,
        })?;
        self.flush().await?;
        self.shared.revision.send_replace(revision);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let raw = self
            .snapshots
            .get("current")
            .map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?;
        let Some(raw) = raw else { return Ok(None) };
        let stored: StoredSnapshot =
            decode(&raw).map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, *e))?;
        Ok(Some(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}

/// The snapshot of an empty store.
fn empty_snapshot() -> Result<Vec<u8>, StorageError> {
    let err = |e: StoreError| sm_err(ErrorVerb::Read, e);
    let db = sled::Config::new()
        .temporary(true)
        .open()
        .map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Read, e))?;
    Mvcc::open(&db).map_err(err)?.snapshot().map_err(err)
}

/// Records a clean stop, once Raft has stopped applying: the next start may trust the state
/// machine on disk as it is.
pub fn mark_clean_shutdown(mvcc: &RwLock<Mvcc>, db: &sled::Db) -> Result<(), StorageError> {
    mvcc.write()
        .set_meta(META_CLEAN, b"1")
        .map_err(|e| sm_err(ErrorVerb::Write, e))?;
    db.flush()
        .map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Write, e))?;
    Ok(())
}

pub struct SnapshotBuilder {
    shared: Arc<Shared>,
    db: sled::Db,
    snapshots: sled::Tree,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (data, applied, membership) = {
            let mvcc = self.shared.mvcc.read();
            let (applied, membership) = StateMachine::read_applied(&mvcc)?;
            let data = mvcc.snapshot().map_err(|e| sm_err(ErrorVerb::Read, e))?;
            (data, applied, membership)
        };
        // The state machine on disk must be at least as new as any snapshot, since openraft
        // purges the log up to (near) the snapshot once it exists.
        self.db
            .flush_async()
            .await
            .map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Write, e))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let snapshot_id = match applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, nanos),
            None => format!("0-0-{nanos}"),
        };
        let meta = SnapshotMeta {
            last_log_id: applied,
            last_membership: membership,
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.snapshots
            .insert("current", encode(&stored))
            .map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
        self.db
            .flush_async()
            .await
            .map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
        tracing::info!(snapshot = %meta.snapshot_id, bytes = stored.data.len(), "built snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

#[cfg(test)]
mod tests {
    use etcd_client::proto::{PbPutRequest, PbRangeRequest};
    use openraft::{CommittedLeaderId, Entry};

    use super::*;

    fn machine() -> (StateMachine, Arc<Shared>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let (sm, shared) = reopen(dir.path());
        (sm, shared, dir)
    }

    fn reopen(path: &std::path::Path) -> (StateMachine, Arc<Shared>) {
        // sled releases its file lock from a background thread after the last handle drops:
        // a reopen right after a drop may find it still held for a moment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let db = loop {
            match sled::Config::new().path(path).open() {
                Ok(db) => break db,
                Err(e)
                    if std::time::Instant::now() < deadline && e.to_string().contains("lock") =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("opening {}: {e}", path.display()),
            }
        };
        let (revision, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            mvcc: Arc::new(RwLock::new(Mvcc::open(&db).unwrap())),
            revision,
            lessor: Arc::new(Lessor::default()),
            metrics: Arc::new(Metrics::new()),
        });
        (StateMachine::open(&db, shared.clone()).unwrap(), shared)
    }

    fn put(key: &str) -> Command {
        Command::Put(PbPutRequest {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        })
    }

    fn entry(index: u64, cmd: Command) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(cmd),
        }
    }

    fn keys(shared: &Shared) -> Vec<Vec<u8>> {
        let resp = shared
            .mvcc
            .read()
            .range(&PbRangeRequest {
                key: vec![0],
                range_end: vec![0],
                ..Default::default()
            })
            .unwrap();
        resp.kvs.into_iter().map(|kv| kv.key).collect()
    }

    #[tokio::test]
    async fn a_batch_applies_each_command_with_its_own_response() {
        let (mut sm, _shared, _dir) = machine();
        let out = sm
            .apply([entry(1, Command::Batch(vec![put("a"), put("b"), put("c")]))])
            .await
            .unwrap();
        let CommandResponse::Batch(responses) = &out[0] else {
            panic!("{out:?}")
        };
        let revisions: Vec<i64> = responses
            .iter()
            .map(|r| match r {
                CommandResponse::Put(p) => p.header.as_ref().map(|h| h.revision).unwrap_or(0),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            revisions,
            vec![2, 3, 4],
            "one revision per command, in order"
        );
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(1));
    }

    #[tokio::test]
    async fn a_batch_replayed_after_a_crash_skips_what_was_applied() {
        let (mut sm, shared, _dir) = machine();
        sm.apply([entry(1, put("before"))]).await.unwrap();
        // As if the member died after the first two commands of entry 2 were written: progress
        // says 2 done, the entry itself is not marked applied.
        let log_id = LogId::new(CommittedLeaderId::new(1, 1), 2);
        sm.apply_one(
            &mut shared.mvcc.write(),
            &put("a"),
            (META_BATCH, &encode(&(log_id, 1usize))),
        )
        .unwrap();
        sm.apply_one(
            &mut shared.mvcc.write(),
            &put("b"),
            (META_BATCH, &encode(&(log_id, 2usize))),
        )
        .unwrap();
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(1), "entry 2 is replayed");
        let revision = shared.mvcc.read().revision();
        sm.apply([entry(2, Command::Batch(vec![put("a"), put("b"), put("c")]))])
            .await
            .unwrap();
        assert_eq!(
            shared.mvcc.read().revision(),
            revision + 1,
            "only the third command is applied again"
        );
        assert_eq!(
            keys(&shared),
            vec![
                b"a".to_vec(),
                b"b".to_vec(),
                b"before".to_vec(),
                b"c".to_vec()
            ]
        );
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(2));
    }

    #[tokio::test]
    async fn after_an_unclean_stop_the_state_machine_restarts_from_its_last_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut sm, _) = reopen(dir.path());
            sm.apply([entry(1, put("a"))]).await.unwrap();
            sm.get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .unwrap();
            sm.apply([entry(2, put("b"))]).await.unwrap();
            // Dropped without mark_clean_shutdown: a crash.
        }
        let (mut sm, shared) = reopen(dir.path());
        assert_eq!(
            keys(&shared),
            vec![b"a".to_vec()],
            "the snapshot, not the later apply"
        );
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(
            applied.map(|l| l.index),
            Some(1),
            "openraft replays entry 2"
        );
        sm.apply([entry(2, put("b"))]).await.unwrap();
        assert_eq!(keys(&shared), vec![b"a".to_vec(), b"b".to_vec()]);
    }

    #[tokio::test]
    async fn without_a_snapshot_an_unclean_stop_replays_everything_and_a_clean_one_nothing() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut sm, _) = reopen(dir.path());
            sm.apply([entry(1, put("a"))]).await.unwrap();
        }
        {
            let (mut sm, shared) = reopen(dir.path());
            assert!(keys(&shared).is_empty(), "rebuilt from nothing");
            assert_eq!(sm.applied_state().await.unwrap().0, None);
            sm.apply([entry(1, put("a"))]).await.unwrap();
            mark_clean_shutdown(&shared.mvcc, &sm.db).unwrap();
        }
        let (mut sm, shared) = reopen(dir.path());
        assert_eq!(keys(&shared), vec![b"a".to_vec()], "kept as it was");
        assert_eq!(
            sm.applied_state().await.unwrap().0.map(|l| l.index),
            Some(1)
        );
    }
}

//! The Raft state machine: committed entries go into the MVCC engine.
//!
//! The engine stores Raft's last-applied log id and membership in its own metadata, written in
//! the same sled batch as the command's effects, so after a crash the two always agree and
//! openraft re-applies exactly the entries that were not applied yet.
//!
//! Snapshots are the engine's whole state. Before one is built the database is flushed, so the
//! state machine on disk is never older than a snapshot whose log openraft may purge.

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
    pub fn open(db: &sled::Db, shared: Arc<Shared>) -> Result<Self, sled::Error> {
        let snapshots = db.open_tree("raft_snapshot")?;
        {
            let mvcc = shared.mvcc.read();
            shared.revision.send_replace(mvcc.revision());
            shared.lessor.reset(&mvcc.leases(), Duration::ZERO);
        }
        Ok(StateMachine {
            shared,
            db: db.clone(),
            snapshots,
        })
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
                    EntryPayload::Normal(cmd) => {
                        let response = mvcc
                            .apply(&cmd, Some((META_APPLIED, &applied_meta)))
                            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
                        match (&cmd, &response) {
                            (
                                Command::LeaseGrant { id, ttl },
                                CommandResponse::LeaseGrant { .. },
                            ) => self.shared.lessor.granted(*id, *ttl),
                            (Command::LeaseRevoke { id }, _) => self.shared.lessor.revoked(*id),
                            _ => {}
                        }
                        applied += 1;
                        response
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

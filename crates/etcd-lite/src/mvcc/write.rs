//! Applying commands: Put, DeleteRange and Txn (etcd's `applierV3backend` over
//! `storeTxnWrite`), leases, member attributes and compaction.
//!
//! A command runs against a [`WriteCtx`]: its writes go into the in-memory index at once (so
//! later ops of the same txn read them) and into one [`layout::Writes`]; every in-memory change
//! is logged so that it can be undone if the command fails or the writes cannot be made.
//! Requests are checked before anything changes (as etcd's `checkRequests`), so undo is for
//! storage failures, not for ordinary request errors.

use std::sync::Arc;

use etcd_client::proto::{
    PbDeleteRequest, PbDeleteResponse, PbPutRequest, PbPutResponse, PbResponseHeader, PbResponseOp,
    PbTxnOpRequest, PbTxnOpResponse, PbTxnRequest, PbTxnResponse,
};

use super::index::{Pushed, Rev};
use super::layout::{self, PutRef, RecordRef};
use super::read::{header, keys_in, take, Pending, ReadError};
use super::{validate, Lease, MemberAttrs, Mvcc, StoreError, MAX_LEASE_TTL};
use crate::command::{Command, CommandResponse};
use crate::error::EtcdError;

/// One key's change at one revision: the pending write of a command, then (once committed) a
/// watch event in the ring.
#[derive(Clone, Debug)]
pub(crate) struct Change {
    pub rev: Rev,
    pub key: Arc<[u8]>,
    /// `None` for a delete.
    pub put: Option<PutVal>,
    /// The key's previous revision in the same generation: where a watcher's prev_kv is.
    /// `None` for a create.
    pub prev: Option<Rev>,
}

#[derive(Clone, Debug)]
pub(crate) struct PutVal {
    pub create: i64,
    pub version: i64,
    pub lease: i64,
    pub value: Arc<[u8]>,
}

impl Change {
    pub fn record(&self) -> RecordRef<'_> {
        RecordRef {
            key: &self.key,
            put: self.put.as_ref().map(|p| PutRef {
                create: p.create,
                version: p.version,
                lease: p.lease,
                value: &p.value,
            }),
        }
    }

    /// Bytes it holds, for bounding the ring.
    pub fn size(&self) -> usize {
        96 + self.key.len() + self.put.as_ref().map_or(0, |p| p.value.len())
    }
}

/// How to revert one in-memory change.
enum Undo {
    Index { key: Arc<[u8]>, how: Pushed },
    KeyLease { key: Arc<[u8]>, old: i64 },
    Attached { lease: i64, key: Arc<[u8]> },
    Detached { lease: i64, key: Arc<[u8]> },
    Granted { id: i64 },
    Revoked { id: i64, lease: Lease },
    Member { id: u64, old: Option<MemberAttrs> },
}

/// The command being applied.
pub(crate) struct WriteCtx {
    /// The revision before the command; its writes are at `begin + 1`.
    begin: i64,
    batch: layout::Writes,
    /// Writes so far, in sub-revision order.
    changes: Vec<Change>,
    undo: Vec<Undo>,
}

/// A failed op: the request's fault (the command fails, nothing changes) or the storage's.
type OpResult<T> = Result<T, ReadError>;

impl WriteCtx {
    fn new(begin: i64) -> Self {
        WriteCtx {
            begin,
            batch: layout::Writes::default(),
            changes: Vec::new(),
            undo: Vec::new(),
        }
    }

    fn main(&self) -> i64 {
        self.begin + 1
    }

    /// The revision reads see: the command's own once it has written (etcd's
    /// `storeTxnWrite.Range`).
    fn read_rev(&self) -> i64 {
        if self.changes.is_empty() {
            self.begin
        } else {
            self.begin + 1
        }
    }

    fn pending(&self) -> Option<Pending<'_>> {
        Some(Pending {
            main: self.main(),
            changes: &self.changes,
        })
    }
}

impl Mvcc {
    pub(crate) fn apply_command(
        &mut self,
        cmd: &Command,
        raft_meta: Option<(&[u8], &[u8])>,
    ) -> Result<CommandResponse, StoreError> {
        if let Command::Compact { revision } = cmd {
            return self.compact(*revision, raft_meta);
        }
        let mut w = WriteCtx::new(self.state.rev);
        let result = self.exec(&mut w, cmd);
        let response = match result {
            Ok(response) => response,
            Err(ReadError::Store(e)) => {
                self.rollback(w.undo);
                return Err(e);
            }
            Err(ReadError::Etcd(e)) => {
                self.rollback(w.undo);
                // The command consumed its log entry: record that, and nothing else.
                self.commit_meta_only(raft_meta)?;
                return Ok(CommandResponse::Error(e));
            }
        };
        let WriteCtx {
            mut batch,
            changes,
            undo,
            ..
        } = w;
        let changed = !changes.is_empty();
        if let Some((k, v)) = raft_meta {
            batch.insert(layout::meta_key(k), v);
        }
        let collected = self.collect_garbage(&mut batch);
        if let Err(e) = batch.write(&self.tree) {
            self.rollback(undo);
            return Err(e.into());
        }
        self.state.garbage.drain(..collected);
        if changed {
            self.state.rev += 1;
            self.ring.push(changes);
        }
        Ok(response)
    }

    /// Writes `raft_meta` (with some garbage collection) for a command that changed nothing.
    fn commit_meta_only(&mut self, raft_meta: Option<(&[u8], &[u8])>) -> Result<(), StoreError> {
        let mut batch = layout::Writes::default();
        if let Some((k, v)) = raft_meta {
            batch.insert(layout::meta_key(k), v);
        }
        let collected = self.collect_garbage(&mut batch);
        batch.write(&self.tree)?;
        self.state.garbage.drain(..collected);
        Ok(())
    }

    /// Adds the deletion of the oldest compacted records to `batch`; returns how many, to
    /// drop from the queue once the batch is written.
    fn collect_garbage(&self, batch: &mut layout::Writes) -> usize {
        let n = self.gc_budget(self.state.garbage.len());
        for rev in self.state.garbage.range(..n) {
            batch.remove(&layout::rev_key(*rev));
        }
        n
    }

    /// How many of `waiting` compacted records one apply deletes.
    fn gc_budget(&self, waiting: usize) -> usize {
        self.gc_per_apply
            .saturating_add(waiting / super::GC_BACKLOG_STEP)
            .min(waiting)
    }

    fn exec(&mut self, w: &mut WriteCtx, cmd: &Command) -> OpResult<CommandResponse> {
        Ok(match cmd {
            Command::Put(req) => {
                validate::validate_put(req)?;
                CommandResponse::Put(self.put(w, req, false)?)
            }
            Command::DeleteRange(req) => {
                validate::validate_delete(req)?;
                CommandResponse::DeleteRange(self.delete_range(w, req)?)
            }
            Command::Txn(req) => {
                validate::validate_txn(req, usize::MAX)?;
                CommandResponse::Txn(self.txn(w, req)?)
            }
            Command::LeaseGrant { id, ttl } => {
                if *id == 0 {
                    return Err(EtcdError::LeaseNotFound.into());
                }
                if *ttl > MAX_LEASE_TTL {
                    return Err(EtcdError::LeaseTtlTooLarge.into());
                }
                if self.state.leases.contains_key(id) {
                    return Err(EtcdError::LeaseExists.into());
                }
                self.state.leases.insert(
                    *id,
                    Lease {
                        ttl: *ttl,
                        keys: Default::default(),
                    },
                );
                w.undo.push(Undo::Granted { id: *id });
                w.batch
                    .insert(&layout::lease_key(*id), &layout::i64_value(*ttl));
                CommandResponse::LeaseGrant {
                    id: *id,
                    ttl: *ttl,
                    revision: w.begin,
                }
            }
            Command::LeaseRevoke { id } => {
                let Some(lease) = self.state.leases.get(id) else {
                    return Err(EtcdError::LeaseNotFound.into());
                };
                // etcd deletes the keys in sorted order, one sub-revision each, in one txn.
                let keys: Vec<Arc<[u8]>> = lease.keys.iter().cloned().collect();
                for key in keys {
                    self.delete_key(w, &key);
                }
                if let Some(lease) = self.state.leases.remove(id) {
                    w.undo.push(Undo::Revoked { id: *id, lease });
                }
                w.batch.remove(&layout::lease_key(*id));
                CommandResponse::LeaseRevoke {
                    revision: w.read_rev(),
                }
            }
            Command::MemberAttrs {
                id,
                name,
                client_urls,
            } => {
                let attrs = MemberAttrs {
                    name: name.clone(),
                    client_urls: client_urls.clone(),
                };
                let bytes = bincode::serialize(&attrs)
                    .map_err(|e| StoreError::Corrupt(format!("encoding member attrs: {e}")))?;
                w.batch.insert(&layout::member_key(*id), bytes);
                let old = self.state.members.insert(*id, attrs);
                w.undo.push(Undo::Member { id: *id, old });
                CommandResponse::MemberAttrs
            }
            Command::Compact { .. } => {
                return Err(EtcdError::Internal("compaction is applied on its own".into()).into())
            }
            // The Raft state machine unpacks batches and applies their commands one by one.
            Command::Batch(_) => {
                return Err(
                    EtcdError::Internal("a batch is applied command by command".into()).into(),
                )
            }
        })
    }

    /// etcd's `applierV3backend.Put`. Outside a txn the lease is checked first; inside, the
    /// txn checked everything up front.
    fn put(
        &mut self,
        w: &mut WriteCtx,
        req: &PbPutRequest,
        in_txn: bool,
    ) -> OpResult<PbPutResponse> {
        if !in_txn && req.lease != 0 && !self.state.leases.contains_key(&req.lease) {
            return Err(EtcdError::LeaseNotFound.into());
        }
        let prev = if req.ignore_value || req.ignore_lease || req.prev_kv {
            match self
                .state
                .index
                .get(req.key.as_slice())
                .and_then(|ki| ki.live_rev())
            {
                Some(rev) => Some(self.load(rev, w.pending())?),
                None => None,
            }
        } else {
            None
        };
        if (req.ignore_value || req.ignore_lease) && prev.is_none() {
            return Err(EtcdError::KeyNotFound.into());
        }
        let value: Arc<[u8]> = match (&prev, req.ignore_value) {
            (Some(p), true) => Arc::from(p.value.as_slice()),
            _ => Arc::from(req.value.as_slice()),
        };
        let lease = match (&prev, req.ignore_lease) {
            (Some(p), true) => p.lease,
            _ => req.lease,
        };
        if lease != 0 && !self.state.leases.contains_key(&lease) {
            // Only reachable inside a txn whose checks were skipped; never half-apply.
            return Err(EtcdError::LeaseNotFound.into());
        }
        self.put_key(w, &req.key, value, lease);
        Ok(PbPutResponse {
            header: header(w.main()),
            prev_kv: if req.prev_kv { prev } else { None },
        })
    }

    /// Writes a new version of `key` at the next sub-revision, moving its lease attachment.
    fn put_key(&mut self, w: &mut WriteCtx, key: &[u8], value: Arc<[u8]>, lease: i64) {
        let rev = Rev {
            main: w.main(),
            sub: w.changes.len() as i64,
        };
        let key: Arc<[u8]> = match self.state.index.get_key_value(key) {
            Some((k, _)) => k.clone(),
            None => Arc::from(key),
        };
        let ki = self.state.index.entry(key.clone()).or_default();
        let prev = ki.live_rev();
        let how = ki.push_put(rev);
        let old_lease = std::mem::replace(&mut ki.lease, lease);
        let (create, version) = ki
            .current()
            .map_or((rev.main, 1), |v| (v.created, v.version));
        w.undo.push(Undo::Index {
            key: key.clone(),
            how,
        });
        w.undo.push(Undo::KeyLease {
            key: key.clone(),
            old: old_lease,
        });
        self.detach(w, old_lease, &key);
        if let Some(l) = self.state.leases.get_mut(&lease) {
            if l.keys.insert(key.clone()) {
                w.undo.push(Undo::Attached {
                    lease,
                    key: key.clone(),
                });
            }
        }
        let put = PutVal {
            create,
            version,
            lease,
            value,
        };
        let change = Change {
            rev,
            key,
            put: Some(put),
            prev,
        };
        w.batch.insert(
            &layout::rev_key(rev),
            layout::encode_record(&change.key, change.record().put),
        );
        w.changes.push(change);
    }

    /// etcd's `applierV3backend.DeleteRange`.
    fn delete_range(
        &mut self,
        w: &mut WriteCtx,
        req: &PbDeleteRequest,
    ) -> OpResult<PbDeleteResponse> {
        let keys: Vec<(Arc<[u8]>, Rev)> = keys_in(&self.state.index, &req.key, &req.range_end)
            .filter_map(|(k, ki)| ki.live_rev().map(|rev| (k.clone(), rev)))
            .collect();
        let mut prev_kvs = Vec::new();
        if req.prev_kv {
            prev_kvs.reserve(keys.len());
            for (_, rev) in &keys {
                prev_kvs.push(self.load(*rev, w.pending())?);
            }
        }
        for (key, _) in &keys {
            self.delete_key(w, key);
        }
        Ok(PbDeleteResponse {
            header: header(w.read_rev()),
            deleted: keys.len() as i64,
            prev_kvs,
        })
    }

    /// Deletes a live key at the next sub-revision and detaches it from its lease.
    fn delete_key(&mut self, w: &mut WriteCtx, key: &Arc<[u8]>) {
        let rev = Rev {
            main: w.main(),
            sub: w.changes.len() as i64,
        };
        let Some(ki) = self.state.index.get_mut(key) else {
            return;
        };
        let prev = ki.live_rev();
        if !ki.push_tombstone(rev) {
            return;
        }
        let old_lease = std::mem::replace(&mut ki.lease, 0);
        w.undo.push(Undo::Index {
            key: key.clone(),
            how: Pushed::Tombstone,
        });
        w.undo.push(Undo::KeyLease {
            key: key.clone(),
            old: old_lease,
        });
        self.detach(w, old_lease, key);
        w.batch
            .insert(&layout::rev_key(rev), layout::encode_record(key, None));
        w.changes.push(Change {
            rev,
            key: key.clone(),
            put: None,
            prev,
        });
    }

    fn detach(&mut self, w: &mut WriteCtx, lease: i64, key: &Arc<[u8]>) {
        if lease == 0 {
            return;
        }
        if let Some(l) = self.state.leases.get_mut(&lease) {
            if l.keys.remove(key) {
                w.undo.push(Undo::Detached {
                    lease,
                    key: key.clone(),
                });
            }
        }
    }

    /// etcd's `applierV3backend.Txn`: choose every branch first (compares against the state
    /// before the txn), check the chosen ops (puts, then ranges), then run them at one
    /// revision.
    fn txn(&mut self, w: &mut WriteCtx, req: &PbTxnRequest) -> OpResult<PbTxnResponse> {
        let mut path = Vec::new();
        self.compare_path(req, w.begin, &mut path)?;
        self.check_puts(req, &path, &mut 0)?;
        self.check_ranges(req, &path, &mut 0, w.begin)?;
        let mut resp = self.exec_txn(w, req, &path, &mut 0)?;
        resp.header = header(w.read_rev());
        Ok(resp)
    }

    /// etcd's `checkRequestPut` over the chosen branches, against the state before the txn.
    fn check_puts(
        &self,
        req: &PbTxnRequest,
        path: &[bool],
        pos: &mut usize,
    ) -> Result<(), EtcdError> {
        let ok = take(path, pos)?;
        for op in if ok { &req.success } else { &req.failure } {
            match &op.request {
                Some(PbTxnOpRequest::RequestPut(p)) => {
                    if (p.ignore_value || p.ignore_lease)
                        && !self
                            .state
                            .index
                            .get(p.key.as_slice())
                            .is_some_and(|ki| ki.is_live())
                    {
                        return Err(EtcdError::KeyNotFound);
                    }
                    if p.lease != 0 && !self.state.leases.contains_key(&p.lease) {
                        return Err(EtcdError::LeaseNotFound);
                    }
                }
                Some(PbTxnOpRequest::RequestTxn(t)) => self.check_puts(t, path, pos)?,
                _ => {}
            }
        }
        Ok(())
    }

    fn exec_txn(
        &mut self,
        w: &mut WriteCtx,
        req: &PbTxnRequest,
        path: &[bool],
        pos: &mut usize,
    ) -> OpResult<PbTxnResponse> {
        let ok = take(path, pos)?;
        let ops = if ok { &req.success } else { &req.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match &op.request {
                Some(PbTxnOpRequest::RequestRange(r)) => {
                    PbTxnOpResponse::ResponseRange(self.range_at(r, w.read_rev(), w.pending())?)
                }
                Some(PbTxnOpRequest::RequestPut(p)) => {
                    PbTxnOpResponse::ResponsePut(self.put(w, p, true)?)
                }
                Some(PbTxnOpRequest::RequestDeleteRange(d)) => {
                    PbTxnOpResponse::ResponseDeleteRange(self.delete_range(w, d)?)
                }
                Some(PbTxnOpRequest::RequestTxn(t)) => {
                    PbTxnOpResponse::ResponseTxn(self.exec_txn(w, t, path, pos)?)
                }
                None => {
                    responses.push(PbResponseOp { response: None });
                    continue;
                }
            };
            responses.push(PbResponseOp {
                response: Some(response),
            });
        }
        Ok(PbTxnResponse {
            // As etcd: a nested txn's header is empty; `txn` fills the outermost.
            header: Some(PbResponseHeader::default()),
            succeeded: ok,
            responses,
        })
    }

    /// Reverts in-memory changes, newest first.
    fn rollback(&mut self, undo: Vec<Undo>) {
        for u in undo.into_iter().rev() {
            match u {
                Undo::Index { key, how } => {
                    let gone = self
                        .state
                        .index
                        .get_mut(&key)
                        .is_some_and(|ki| ki.undo(how));
                    if gone {
                        self.state.index.remove(&key);
                    }
                }
                Undo::KeyLease { key, old } => {
                    if let Some(ki) = self.state.index.get_mut(&key) {
                        ki.lease = old;
                    }
                }
                Undo::Attached { lease, key } => {
                    if let Some(l) = self.state.leases.get_mut(&lease) {
                        l.keys.remove(&key);
                    }
                }
                Undo::Detached { lease, key } => {
                    if let Some(l) = self.state.leases.get_mut(&lease) {
                        l.keys.insert(key);
                    }
                }
                Undo::Granted { id } => {
                    self.state.leases.remove(&id);
                }
                Undo::Revoked { id, lease } => {
                    self.state.leases.insert(id, lease);
                }
                Undo::Member { id, old } => match old {
                    Some(attrs) => {
                        self.state.members.insert(id, attrs);
                    }
                    None => {
                        self.state.members.remove(&id);
                    }
                },
            }
        }
    }

    /// etcd's `store.Compact`: `Compacted` at or below the current compaction, `FutureRevision`
    /// past the current revision; otherwise history before `rev` goes (see
    /// `KeyIndex::compaction`): from the index at once, from sled a little per apply.
    fn compact(
        &mut self,
        rev: i64,
        raft_meta: Option<(&[u8], &[u8])>,
    ) -> Result<CommandResponse, StoreError> {
        let error = if rev <= self.state.compact_rev {
            Some(EtcdError::Compacted)
        } else if rev > self.state.rev {
            Some(EtcdError::FutureRevision)
        } else {
            None
        };
        if let Some(e) = error {
            self.commit_meta_only(raft_meta)?;
            return Ok(CommandResponse::Error(e));
        }
        let mut plan = Vec::new();
        let mut garbage: Vec<Rev> = self.state.garbage.iter().copied().collect();
        for (key, ki) in &self.state.index {
            let c = ki.compaction(rev);
            if c.is_noop() {
                continue;
            }
            garbage.extend(ki.compacted_revs(c));
            plan.push((key.clone(), c));
        }
        garbage.sort_unstable();
        garbage.dedup();
        let mut batch = layout::Writes::default();
        batch.insert(layout::STATE_COMPACT, &layout::i64_value(rev));
        // The current revision's records may all be garbage now (deletes at `rev`), so it can
        // no longer be read off the last record on open.
        batch.insert(layout::STATE_REV, &layout::i64_value(self.state.rev));
        if let Some((k, v)) = raft_meta {
            batch.insert(layout::meta_key(k), v);
        }
        let collected = self.gc_budget(garbage.len());
        for r in &garbage[..collected] {
            batch.remove(&layout::rev_key(*r));
        }
        batch.write(&self.tree)?;
        garbage.drain(..collected);
        self.state.garbage = garbage.into();
        for (key, c) in plan {
            let gone = self
                .state
                .index
                .get_mut(&key)
                .is_some_and(|ki| ki.compact(c));
            if gone {
                self.state.index.remove(&key);
            }
        }
        self.state.compact_rev = rev;
        self.ring.compacted(rev);
        Ok(CommandResponse::Compact {
            revision: self.state.rev,
        })
    }
}

//! Reads: Range (etcd's `applierV3backend.Range` over `storeTxnRead.rangeKeys`) and Txn
//! compares (`applyCompare`), at any revision kept since compaction, optionally seeing the
//! not-yet-committed writes of the command being applied (a txn's reads see its own writes).

use std::cmp::Ordering;
use std::collections::btree_map;
use std::ops::Bound;
use std::sync::Arc;

use etcd_client::proto::{
    PbCompare, PbKeyValue, PbRangeRequest, PbRangeResponse, PbResponseHeader, PbResponseOp,
    PbTargetUnion, PbTxnOpRequest, PbTxnOpResponse, PbTxnRequest, PbTxnResponse,
};

use super::index::{KeyIndex, Rev};
use super::layout::{self, RecordRef};
use super::write::Change;
use super::{Mvcc, StoreError};
use crate::error::EtcdError;

// etcd's enum values (etcdserverpb), which prost leaves as plain i32 fields.
const SORT_NONE: i32 = 0;
const SORT_ASCEND: i32 = 1;
const SORT_DESCEND: i32 = 2;
const TARGET_KEY: i32 = 0;
const TARGET_VERSION: i32 = 1;
const TARGET_CREATE: i32 = 2;
const TARGET_MOD: i32 = 3;
const TARGET_VALUE: i32 = 4;
const CMP_EQUAL: i32 = 0;
const CMP_GREATER: i32 = 1;
const CMP_LESS: i32 = 2;
const CMP_NOT_EQUAL: i32 = 3;
const CMP_VERSION: i32 = 0;
const CMP_CREATE: i32 = 1;
const CMP_MOD: i32 = 2;
const CMP_VALUE: i32 = 3;
const CMP_LEASE: i32 = 4;

/// A read failed because of the request (compacted, future revision, ...) or the storage.
#[derive(Debug)]
pub(crate) enum ReadError {
    Etcd(EtcdError),
    Store(StoreError),
}

impl ReadError {
    /// For `&self` APIs that can only report an [`EtcdError`].
    pub fn into_etcd(self) -> EtcdError {
        match self {
            ReadError::Etcd(e) => e,
            ReadError::Store(e) => EtcdError::Internal(e.to_string()),
        }
    }
}

impl From<EtcdError> for ReadError {
    fn from(e: EtcdError) -> Self {
        ReadError::Etcd(e)
    }
}

impl From<StoreError> for ReadError {
    fn from(e: StoreError) -> Self {
        ReadError::Store(e)
    }
}

impl From<sled::Error> for ReadError {
    fn from(e: sled::Error) -> Self {
        ReadError::Store(e.into())
    }
}

/// The writes of the command being applied, at main revision `main`, indexed by sub-revision.
#[derive(Clone, Copy)]
pub(crate) struct Pending<'a> {
    pub main: i64,
    pub changes: &'a [Change],
}

pub(crate) fn header(revision: i64) -> Option<PbResponseHeader> {
    Some(PbResponseHeader {
        revision,
        ..Default::default()
    })
}

/// The keys of `[key, range_end)` with etcd's conventions: an empty `range_end` is the single
/// `key`; `"\0"` is every key >= `key`; an end at or before `key` is nothing.
pub(crate) fn keys_in<'a>(
    index: &'a btree_map::BTreeMap<Arc<[u8]>, KeyIndex>,
    key: &'a [u8],
    range_end: &'a [u8],
) -> KeysIn<'a> {
    if range_end.is_empty() {
        return KeysIn::One(index.get_key_value(key));
    }
    let end = if range_end == [0] {
        Bound::Unbounded
    } else if range_end <= key {
        return KeysIn::One(None);
    } else {
        Bound::Excluded(range_end)
    };
    KeysIn::Range(index.range::<[u8], _>((Bound::Included(key), end)))
}

pub(crate) enum KeysIn<'a> {
    One(Option<(&'a Arc<[u8]>, &'a KeyIndex)>),
    Range(btree_map::Range<'a, Arc<[u8]>, KeyIndex>),
}

impl<'a> Iterator for KeysIn<'a> {
    type Item = (&'a Arc<[u8]>, &'a KeyIndex);
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            KeysIn::One(one) => one.take(),
            KeysIn::Range(r) => r.next(),
        }
    }
}

/// Whether `key` is in `[start, range_end)` with the conventions of [`keys_in`].
pub(crate) fn key_matches(key: &[u8], start: &[u8], range_end: &[u8]) -> bool {
    if range_end.is_empty() {
        key == start
    } else if range_end == [0] {
        key >= start
    } else {
        key >= start && key < range_end
    }
}

pub(crate) fn to_kv(rec: RecordRef<'_>, main: i64) -> PbKeyValue {
    match rec.put {
        Some(p) => PbKeyValue {
            key: rec.key.to_vec(),
            create_revision: p.create,
            mod_revision: main,
            version: p.version,
            value: p.value.to_vec(),
            lease: p.lease,
        },
        // etcd's tombstone: the key, and the delete's revision patched in by the watcher.
        None => PbKeyValue {
            key: rec.key.to_vec(),
            mod_revision: main,
            ..Default::default()
        },
    }
}

impl Mvcc {
    /// The record at `rev`, from the pending writes or sled. Its absence is corruption: the
    /// index only points at records that exist.
    pub(crate) fn load(
        &self,
        rev: Rev,
        pending: Option<Pending<'_>>,
    ) -> Result<PbKeyValue, StoreError> {
        if let Some(p) = pending.filter(|p| p.main == rev.main) {
            let change = usize::try_from(rev.sub)
                .ok()
                .and_then(|sub| p.changes.get(sub))
                .ok_or_else(|| StoreError::Corrupt(format!("no pending write at {rev:?}")))?;
            return Ok(to_kv(change.record(), rev.main));
        }
        let bytes = self
            .tree
            .get(layout::rev_key(rev))?
            .ok_or_else(|| StoreError::Corrupt(format!("index points at missing {rev:?}")))?;
        Ok(to_kv(layout::decode_record(&bytes)?, rev.main))
    }

    /// etcd's Range, reading as of `cur` (the current revision, or inside a txn the txn's own
    /// revision once it has written). The header carries `cur`.
    pub(crate) fn range_at(
        &self,
        req: &PbRangeRequest,
        cur: i64,
        pending: Option<Pending<'_>>,
    ) -> Result<PbRangeResponse, ReadError> {
        let at = self.read_revision(req.revision, cur)?;
        let filtered = req.min_mod_revision != 0
            || req.max_mod_revision != 0
            || req.min_create_revision != 0
            || req.max_create_revision != 0;
        // As etcd: sorting or filtering needs every match; otherwise fetch one more than the
        // limit to learn `more`.
        let fetch = if req.sort_order != SORT_NONE || filtered || req.limit <= 0 {
            usize::MAX
        } else {
            usize::try_from(req.limit)
                .unwrap_or(usize::MAX)
                .saturating_add(1)
        };
        let mut count = 0i64;
        let mut revs = Vec::new();
        for (_, ki) in keys_in(&self.state.index, &req.key, &req.range_end) {
            if let Some(rev) = ki.rev_at(at) {
                count += 1;
                if !req.count_only && revs.len() < fetch {
                    revs.push(rev);
                }
            }
        }
        let mut resp = PbRangeResponse {
            header: header(cur),
            kvs: Vec::new(),
            more: false,
            count,
        };
        if req.count_only {
            return Ok(resp);
        }
        let mut kvs = Vec::with_capacity(revs.len());
        for rev in revs {
            let kv = self.load(rev, pending)?;
            let pruned = (req.max_mod_revision != 0 && kv.mod_revision > req.max_mod_revision)
                || (req.min_mod_revision != 0 && kv.mod_revision < req.min_mod_revision)
                || (req.max_create_revision != 0 && kv.create_revision > req.max_create_revision)
                || (req.min_create_revision != 0 && kv.create_revision < req.min_create_revision);
            if !pruned {
                kvs.push(kv);
            }
        }
        sort(&mut kvs, req.sort_order, req.sort_target);
        if req.limit > 0 {
            let limit = usize::try_from(req.limit).unwrap_or(usize::MAX);
            if kvs.len() > limit {
                kvs.truncate(limit);
                resp.more = true;
            }
        }
        if req.keys_only {
            for kv in &mut kvs {
                kv.value = Vec::new();
            }
        }
        resp.kvs = kvs;
        Ok(resp)
    }

    /// etcd's `rangeKeys` revision rules: future → `FutureRevision`; <= 0 → `cur`; before the
    /// compaction revision → `Compacted` (at it is fine: compaction keeps what it shows).
    fn read_revision(&self, requested: i64, cur: i64) -> Result<i64, EtcdError> {
        if requested > cur {
            return Err(EtcdError::FutureRevision);
        }
        let at = if requested <= 0 { cur } else { requested };
        if at < self.state.compact_rev {
            return Err(EtcdError::Compacted);
        }
        Ok(at)
    }

    /// etcd's `applyCompare` at revision `at`: every key in the compare's range must satisfy
    /// it; no key at all compares as etcd's zero KeyValue, except that a VALUE compare on
    /// missing keys always fails.
    pub(crate) fn compare(&self, c: &PbCompare, at: i64) -> Result<bool, StoreError> {
        let mut any = false;
        for (_, ki) in keys_in(&self.state.index, &c.key, &c.range_end) {
            let Some(v) = ki.get(at) else {
                continue;
            };
            any = true;
            let ord = match c.target {
                CMP_VALUE => {
                    let kv = self.load(v.rev, None)?;
                    kv.value.as_slice().cmp(compare_value(c))
                }
                CMP_CREATE => v.created.cmp(&compare_int(c)),
                CMP_MOD => v.rev.main.cmp(&compare_int(c)),
                CMP_VERSION => v.version.cmp(&compare_int(c)),
                CMP_LEASE => ki.lease.cmp(&compare_int(c)),
                _ => Ordering::Equal,
            };
            if !holds(c.result, ord) {
                return Ok(false);
            }
        }
        if any {
            return Ok(true);
        }
        let ord = match c.target {
            CMP_VALUE => return Ok(false),
            CMP_CREATE | CMP_MOD | CMP_VERSION | CMP_LEASE => 0i64.cmp(&compare_int(c)),
            _ => Ordering::Equal,
        };
        Ok(holds(c.result, ord))
    }

    /// etcd's `compareToPath`: whether each txn takes its success branch, depth first in op
    /// order, all evaluated against the state *before* the txn (so a nested txn's compares do
    /// not see the outer txn's writes, as in etcd).
    pub(crate) fn compare_path(
        &self,
        req: &PbTxnRequest,
        at: i64,
        path: &mut Vec<bool>,
    ) -> Result<(), StoreError> {
        let mut ok = true;
        for c in &req.compare {
            if !self.compare(c, at)? {
                ok = false;
                break;
            }
        }
        path.push(ok);
        let ops = if ok { &req.success } else { &req.failure };
        for op in ops {
            if let Some(PbTxnOpRequest::RequestTxn(t)) = &op.request {
                self.compare_path(t, at, path)?;
            }
        }
        Ok(())
    }

    /// etcd's `checkRequestRange` over the branches a txn will take: an explicit revision must
    /// be within `[compaction, at]`, where `at` is the revision before the txn.
    pub(crate) fn check_ranges(
        &self,
        req: &PbTxnRequest,
        path: &[bool],
        pos: &mut usize,
        at: i64,
    ) -> Result<(), EtcdError> {
        let ok = take(path, pos)?;
        for op in if ok { &req.success } else { &req.failure } {
            match &op.request {
                Some(PbTxnOpRequest::RequestRange(r)) => {
                    if r.revision == 0 {
                        continue;
                    }
                    if r.revision > at {
                        return Err(EtcdError::FutureRevision);
                    }
                    if r.revision < self.state.compact_rev {
                        return Err(EtcdError::Compacted);
                    }
                }
                Some(PbTxnOpRequest::RequestTxn(t)) => self.check_ranges(t, path, pos, at)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// A txn with no writes, evaluated at the current revision (see [`Mvcc::txn_read`]).
    pub(crate) fn txn_read_only(&self, req: &PbTxnRequest) -> Result<PbTxnResponse, EtcdError> {
        super::validate::validate_txn(req, usize::MAX)?;
        let at = self.state.rev;
        let mut path = Vec::new();
        self.compare_path(req, at, &mut path)
            .map_err(|e| EtcdError::Internal(e.to_string()))?;
        self.check_ranges(req, &path, &mut 0, at)?;
        let mut resp = self
            .exec_read_only(req, &path, &mut 0, at)
            .map_err(ReadError::into_etcd)?;
        resp.header = header(at);
        Ok(resp)
    }

    fn exec_read_only(
        &self,
        req: &PbTxnRequest,
        path: &[bool],
        pos: &mut usize,
        at: i64,
    ) -> Result<PbTxnResponse, ReadError> {
        let ok = take(path, pos)?;
        let ops = if ok { &req.success } else { &req.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match &op.request {
                Some(PbTxnOpRequest::RequestRange(r)) => {
                    PbTxnOpResponse::ResponseRange(self.range_at(r, at, None)?)
                }
                Some(PbTxnOpRequest::RequestTxn(t)) => {
                    PbTxnOpResponse::ResponseTxn(self.exec_read_only(t, path, pos, at)?)
                }
                _ => {
                    return Err(EtcdError::Internal(
                        "a txn that writes must go through the log".into(),
                    )
                    .into())
                }
            };
            responses.push(PbResponseOp {
                response: Some(response),
            });
        }
        Ok(PbTxnResponse {
            // As etcd: a nested txn's header is empty; the outermost gets the revision.
            header: Some(PbResponseHeader::default()),
            succeeded: ok,
            responses,
        })
    }
}

/// The next branch decision of a txn path.
pub(crate) fn take(path: &[bool], pos: &mut usize) -> Result<bool, EtcdError> {
    let ok = path
        .get(*pos)
        .copied()
        .ok_or_else(|| EtcdError::Internal("txn path out of step".into()))?;
    *pos += 1;
    Ok(ok)
}

fn compare_int(c: &PbCompare) -> i64 {
    match (c.target, &c.target_union) {
        (CMP_VERSION, Some(PbTargetUnion::Version(v)))
        | (CMP_CREATE, Some(PbTargetUnion::CreateRevision(v)))
        | (CMP_MOD, Some(PbTargetUnion::ModRevision(v)))
        | (CMP_LEASE, Some(PbTargetUnion::Lease(v))) => *v,
        _ => 0,
    }
}

fn compare_value(c: &PbCompare) -> &[u8] {
    match &c.target_union {
        Some(PbTargetUnion::Value(v)) => v,
        _ => &[],
    }
}

/// etcd's `compareKV` result switch; an unknown result holds.
fn holds(result: i32, ord: Ordering) -> bool {
    match result {
        CMP_EQUAL => ord == Ordering::Equal,
        CMP_NOT_EQUAL => ord != Ordering::Equal,
        CMP_GREATER => ord == Ordering::Greater,
        CMP_LESS => ord == Ordering::Less,
        _ => true,
    }
}

/// etcd's Range sort: NONE with a target other than KEY means ASCEND; KEY ASCEND is the index
/// order already. Stable, so ties keep key order.
fn sort(kvs: &mut [PbKeyValue], order: i32, target: i32) {
    let order = match (order, target) {
        (SORT_NONE, TARGET_KEY) | (SORT_ASCEND, TARGET_KEY) => return,
        (SORT_NONE, _) => SORT_ASCEND,
        (o, _) => o,
    };
    let cmp = |a: &PbKeyValue, b: &PbKeyValue| match target {
        TARGET_KEY => a.key.cmp(&b.key),
        TARGET_VERSION => a.version.cmp(&b.version),
        TARGET_CREATE => a.create_revision.cmp(&b.create_revision),
        TARGET_MOD => a.mod_revision.cmp(&b.mod_revision),
        TARGET_VALUE => a.value.cmp(&b.value),
        _ => Ordering::Equal,
    };
    match order {
        SORT_ASCEND => kvs.sort_by(cmp),
        SORT_DESCEND => kvs.sort_by(|a, b| cmp(b, a)),
        _ => {}
    }
}

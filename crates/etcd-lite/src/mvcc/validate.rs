//! Request checks made before a request is proposed (etcd's `api/v3rpc/key.go`:
//! `checkRangeRequest`, `checkPutRequest`, `checkDeleteRequest`, `checkTxnRequest`,
//! `checkIntervals`), so that a bad request fails with etcd's error and never reaches the log.
//!
//! They need no storage. The engine runs the same checks again when applying (without the
//! `--max-txn-ops` limit, which is the proposing member's configuration), so a malformed
//! command that reaches the log anyway fails deterministically instead of being half-applied.

use std::collections::{BTreeMap, HashSet};

use etcd_client::proto::{
    PbDeleteRequest, PbPutRequest, PbRangeRequest, PbTxnOpRequest, PbTxnRequest, PbTxnRequestOp,
};

use crate::error::EtcdError;

/// etcd's `checkRangeRequest`: a key, and known sort order and target.
pub fn validate_range(r: &PbRangeRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    if !(0..=2).contains(&r.sort_order) || !(0..=4).contains(&r.sort_target) {
        return Err(EtcdError::InvalidSortOption);
    }
    Ok(())
}

/// etcd's `checkPutRequest`: a key; no value with `ignore_value`, no lease with
/// `ignore_lease`.
pub fn validate_put(r: &PbPutRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(EtcdError::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(EtcdError::LeaseProvided);
    }
    Ok(())
}

/// etcd's `checkDeleteRequest`: a key.
pub fn validate_delete(r: &PbDeleteRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    Ok(())
}

/// etcd's `checkTxnRequest` then `checkIntervals` on each branch: at most `max_txn_ops`
/// compares, success ops and failure ops (each counted separately; a nested txn gets what its
/// parent left, `max - parent's count`, as in etcd), every op valid, and no key written twice
/// in one branch (put twice, or put and deleted by an overlapping range), nested txns
/// included.
pub fn validate_txn(r: &PbTxnRequest, max_txn_ops: usize) -> Result<(), EtcdError> {
    check_txn(r, max_txn_ops)?;
    check_intervals(&r.success)?;
    check_intervals(&r.failure)?;
    Ok(())
}

/// etcd's `isTxnReadonly`: every op of both branches is a Range (a nested txn counts as a
/// write). Such a txn changes nothing and can be evaluated with [`super::Mvcc::txn_read`].
pub fn is_txn_read_only(r: &PbTxnRequest) -> bool {
    r.success
        .iter()
        .chain(&r.failure)
        .all(|op| matches!(op.request, Some(PbTxnOpRequest::RequestRange(_))))
}

fn check_txn(r: &PbTxnRequest, max_txn_ops: usize) -> Result<(), EtcdError> {
    let opc = r.compare.len().max(r.success.len()).max(r.failure.len());
    if opc > max_txn_ops {
        return Err(EtcdError::TooManyOps);
    }
    if r.compare.iter().any(|c| c.key.is_empty()) {
        return Err(EtcdError::EmptyKey);
    }
    for op in r.success.iter().chain(&r.failure) {
        check_op(op, max_txn_ops - opc)?;
    }
    Ok(())
}

fn check_op(op: &PbTxnRequestOp, max_txn_ops: usize) -> Result<(), EtcdError> {
    match &op.request {
        Some(PbTxnOpRequest::RequestRange(r)) => validate_range(r),
        Some(PbTxnOpRequest::RequestPut(r)) => validate_put(r),
        Some(PbTxnOpRequest::RequestDeleteRange(r)) => validate_delete(r),
        Some(PbTxnOpRequest::RequestTxn(r)) => check_txn(r, max_txn_ops),
        // etcd answers an empty op with "key not found".
        None => Err(EtcdError::KeyNotFound),
    }
}

/// etcd's `checkIntervals`, check for check: this level's deletes first, then each nested
/// txn's puts against the puts and deletes gathered so far (a key put in both branches of one
/// nested txn is fine: only one runs), then this level's puts. Returns the puts and deletes
/// for the parent.
fn check_intervals(reqs: &[PbTxnRequestOp]) -> Result<(HashSet<&[u8]>, Spans), EtcdError> {
    let mut dels = Spans::default();
    for req in reqs {
        if let Some(PbTxnOpRequest::RequestDeleteRange(d)) = &req.request {
            if d.range_end.is_empty() {
                dels.insert_point(&d.key);
            } else {
                dels.insert(&d.key, &d.range_end);
            }
        }
    }
    let mut puts: HashSet<&[u8]> = HashSet::new();
    for req in reqs {
        let Some(PbTxnOpRequest::RequestTxn(t)) = &req.request else {
            continue;
        };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || dels.contains(k) {
                return Err(EtcdError::DuplicateKey);
            }
            puts.insert(k);
        }
        for k in &puts_else {
            if puts.contains(k) && !puts_then.contains(k) {
                return Err(EtcdError::DuplicateKey);
            }
            if dels.contains(k) {
                return Err(EtcdError::DuplicateKey);
            }
            puts.insert(k);
        }
        dels.union(dels_then);
        dels.union(dels_else);
    }
    for req in reqs {
        if let Some(PbTxnOpRequest::RequestPut(p)) = &req.request {
            let k = p.key.as_slice();
            if puts.contains(k) || dels.contains(k) {
                return Err(EtcdError::DuplicateKey);
            }
            puts.insert(k);
        }
    }
    Ok((puts, dels))
}

/// A union of half-open key intervals `[begin, end)`, kept as disjoint spans so that
/// "is this key deleted by some range" is one lookup. etcd keeps an interval tree; only
/// point queries are ever asked, for which the union is enough.
#[derive(Default)]
struct Spans {
    /// begin → end, disjoint and non-adjacent.
    spans: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Spans {
    /// A single key: `[key, key + "\0")`.
    fn insert_point(&mut self, key: &[u8]) {
        let mut end = key.to_vec();
        end.push(0);
        self.insert(key, &end);
    }

    /// An empty or inverted interval (end <= begin) covers nothing, as in etcd's affine
    /// intervals; in particular a from-key delete (`range_end` = "\0") overlaps no put here,
    /// exactly as in etcd.
    fn insert(&mut self, begin: &[u8], end: &[u8]) {
        if end <= begin {
            return;
        }
        let mut begin = begin.to_vec();
        let mut end = end.to_vec();
        if let Some((b, e)) = self.spans.range(..=begin.clone()).next_back() {
            if e.as_slice() >= begin.as_slice() {
                begin = b.clone();
                if *e > end {
                    end = e.clone();
                }
            }
        }
        let overlapped: Vec<Vec<u8>> = self
            .spans
            .range(begin.clone()..=end.clone())
            .map(|(b, _)| b.clone())
            .collect();
        for b in overlapped {
            if let Some(e) = self.spans.remove(&b) {
                if e > end {
                    end = e;
                }
            }
        }
        self.spans.insert(begin, end);
    }

    fn contains(&self, key: &[u8]) -> bool {
        self.spans
            .range::<[u8], _>((std::ops::Bound::Unbounded, std::ops::Bound::Included(key)))
            .next_back()
            .is_some_and(|(_, e)| key < e.as_slice())
    }

    fn union(&mut self, other: Spans) {
        for (b, e) in other.spans {
            self.insert(&b, &e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_client::proto::PbCompare;

    fn put(k: &str) -> PbTxnRequestOp {
        PbTxnRequestOp {
            request: Some(PbTxnOpRequest::RequestPut(PbPutRequest {
                key: k.into(),
                ..Default::default()
            })),
        }
    }
    fn del(k: &str, end: &str) -> PbTxnRequestOp {
        PbTxnRequestOp {
            request: Some(PbTxnOpRequest::RequestDeleteRange(PbDeleteRequest {
                key: k.into(),
                range_end: end.into(),
                ..Default::default()
            })),
        }
    }
    fn get(k: &str) -> PbTxnRequestOp {
        PbTxnRequestOp {
            request: Some(PbTxnOpRequest::RequestRange(PbRangeRequest {
                key: k.into(),
                ..Default::default()
            })),
        }
    }
    fn nested(success: Vec<PbTxnRequestOp>, failure: Vec<PbTxnRequestOp>) -> PbTxnRequestOp {
        PbTxnRequestOp {
            request: Some(PbTxnOpRequest::RequestTxn(PbTxnRequest {
                compare: vec![],
                success,
                failure,
            })),
        }
    }
    fn txn(success: Vec<PbTxnRequestOp>) -> PbTxnRequest {
        PbTxnRequest {
            compare: vec![],
            success,
            failure: vec![],
        }
    }

    #[test]
    fn single_requests() {
        assert_eq!(
            validate_range(&PbRangeRequest::default()),
            Err(EtcdError::EmptyKey)
        );
        let bad_sort = PbRangeRequest {
            key: b"k".to_vec(),
            sort_target: 5,
            ..Default::default()
        };
        assert_eq!(validate_range(&bad_sort), Err(EtcdError::InvalidSortOption));
        let bad_order = PbRangeRequest {
            key: b"k".to_vec(),
            sort_order: -1,
            ..Default::default()
        };
        assert_eq!(
            validate_range(&bad_order),
            Err(EtcdError::InvalidSortOption)
        );
        let p = PbPutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ignore_value: true,
            ..Default::default()
        };
        assert_eq!(validate_put(&p), Err(EtcdError::ValueProvided));
        let p = PbPutRequest {
            key: b"k".to_vec(),
            lease: 1,
            ignore_lease: true,
            ..Default::default()
        };
        assert_eq!(validate_put(&p), Err(EtcdError::LeaseProvided));
        assert_eq!(
            validate_put(&PbPutRequest::default()),
            Err(EtcdError::EmptyKey)
        );
        assert_eq!(
            validate_delete(&PbDeleteRequest::default()),
            Err(EtcdError::EmptyKey)
        );
    }

    #[test]
    fn too_many_ops_counts_each_list_and_nested_budgets() {
        let t = txn(vec![put("a"), put("b"), put("c")]);
        assert_eq!(validate_txn(&t, 3), Ok(()));
        assert_eq!(validate_txn(&t, 2), Err(EtcdError::TooManyOps));
        // Three success ops and three failure ops: each list is within 3.
        let t = PbTxnRequest {
            compare: vec![],
            success: vec![put("a"), put("b"), put("c")],
            failure: vec![put("a"), put("b"), put("c")],
        };
        assert_eq!(validate_txn(&t, 3), Ok(()));
        // Compares count too.
        let t = PbTxnRequest {
            compare: vec![
                PbCompare {
                    key: b"a".to_vec(),
                    ..Default::default()
                };
                4
            ],
            success: vec![],
            failure: vec![],
        };
        assert_eq!(validate_txn(&t, 3), Err(EtcdError::TooManyOps));
        // A nested txn gets max - outer count: 4 - 2 = 2, and it has 3.
        let t = txn(vec![
            put("x"),
            nested(vec![put("a"), put("b"), put("c")], vec![]),
        ]);
        assert_eq!(validate_txn(&t, 4), Err(EtcdError::TooManyOps));
        assert_eq!(validate_txn(&t, 5), Ok(()));
    }

    #[test]
    fn bad_ops_inside_txns() {
        let t = txn(vec![PbTxnRequestOp { request: None }]);
        assert_eq!(validate_txn(&t, 128), Err(EtcdError::KeyNotFound));
        let t = txn(vec![nested(vec![get("")], vec![])]);
        assert_eq!(validate_txn(&t, 128), Err(EtcdError::EmptyKey));
        let t = PbTxnRequest {
            compare: vec![PbCompare::default()],
            success: vec![],
            failure: vec![],
        };
        assert_eq!(validate_txn(&t, 128), Err(EtcdError::EmptyKey));
    }

    #[test]
    fn duplicate_keys_as_etcd_check_intervals() {
        let dup = |ops: Vec<PbTxnRequestOp>| validate_txn(&txn(ops), 128);
        assert_eq!(dup(vec![put("a"), put("a")]), Err(EtcdError::DuplicateKey));
        assert_eq!(dup(vec![put("a"), put("b"), get("a")]), Ok(()));
        assert_eq!(
            dup(vec![put("b"), del("a", "c")]),
            Err(EtcdError::DuplicateKey)
        );
        assert_eq!(dup(vec![put("c"), del("a", "c")]), Ok(()));
        assert_eq!(
            dup(vec![put("a"), del("a", "")]),
            Err(EtcdError::DuplicateKey)
        );
        assert_eq!(dup(vec![del("a", ""), del("a", "")]), Ok(()));
        // etcd: a from-key delete's interval ["a", "\0") is empty, so it never conflicts.
        assert_eq!(dup(vec![put("b"), del("a", "\0")]), Ok(()));
        // Nested: a put below and a put above.
        assert_eq!(
            dup(vec![put("a"), nested(vec![put("a")], vec![])]),
            Err(EtcdError::DuplicateKey)
        );
        // Nested: a delete above covers a put below.
        assert_eq!(
            dup(vec![del("a", "z"), nested(vec![put("k")], vec![])]),
            Err(EtcdError::DuplicateKey)
        );
        // Both branches of one nested txn may put the same key.
        assert_eq!(dup(vec![nested(vec![put("k")], vec![put("k")])]), Ok(()));
        // Two nested txns may not.
        assert_eq!(
            dup(vec![
                nested(vec![put("k")], vec![]),
                nested(vec![], vec![put("k")])
            ]),
            Err(EtcdError::DuplicateKey)
        );
        // A nested delete covers a put at this level.
        assert_eq!(
            dup(vec![nested(vec![del("a", "c")], vec![]), put("b")]),
            Err(EtcdError::DuplicateKey)
        );
        // Failure branch is checked too.
        let t = PbTxnRequest {
            compare: vec![],
            success: vec![put("a")],
            failure: vec![put("b"), put("b")],
        };
        assert_eq!(validate_txn(&t, 128), Err(EtcdError::DuplicateKey));
    }

    #[test]
    fn spans_merge() {
        let mut s = Spans::default();
        s.insert(b"b", b"d");
        s.insert(b"f", b"h");
        s.insert(b"c", b"g");
        assert_eq!(s.spans.len(), 1);
        assert!(s.contains(b"b") && s.contains(b"gz") && !s.contains(b"h") && !s.contains(b"a"));
        s.insert_point(b"h");
        assert!(s.contains(b"h") && !s.contains(b"h\0"));
        s.insert(b"z", b"a");
        assert!(!s.contains(b"z"));
    }

    #[test]
    fn read_only_txns() {
        assert!(is_txn_read_only(&txn(vec![get("a")])));
        assert!(!is_txn_read_only(&txn(vec![get("a"), put("b")])));
        assert!(!is_txn_read_only(&txn(vec![nested(vec![], vec![])])));
    }
}

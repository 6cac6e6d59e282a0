//! Behaviour of the engine against etcd's semantics, through its public API.

use std::collections::BTreeMap;

use etcd_client::proto::{
    PbCompare, PbDeleteRequest, PbDeleteResponse, PbEvent, PbKeyValue, PbPutRequest, PbPutResponse,
    PbRangeRequest, PbRangeResponse, PbTargetUnion, PbTxnOpRequest, PbTxnOpResponse, PbTxnRequest,
    PbTxnRequestOp, PbTxnResponse,
};
use rand::{rngs::StdRng, Rng, SeedableRng};

use super::watch::Ring;
use super::*;

// ---- helpers ---------------------------------------------------------------------------

fn db() -> sled::Db {
    sled::Config::new().temporary(true).open().unwrap()
}

fn engine() -> Mvcc {
    Mvcc::open(&db()).unwrap()
}

fn put_req(k: &str, v: &str) -> PbPutRequest {
    PbPutRequest {
        key: k.into(),
        value: v.into(),
        ..Default::default()
    }
}

fn apply(m: &mut Mvcc, cmd: Command) -> CommandResponse {
    m.apply(&cmd, None).unwrap()
}

fn put(m: &mut Mvcc, k: &str, v: &str) -> PbPutResponse {
    put_with(m, put_req(k, v))
}

fn put_with(m: &mut Mvcc, req: PbPutRequest) -> PbPutResponse {
    match apply(m, Command::Put(req)) {
        CommandResponse::Put(r) => r,
        other => panic!("put: {other:?}"),
    }
}

fn put_err(m: &mut Mvcc, req: PbPutRequest) -> EtcdError {
    match apply(m, Command::Put(req)) {
        CommandResponse::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn del_req(k: &str, end: &str) -> PbDeleteRequest {
    PbDeleteRequest {
        key: k.into(),
        range_end: end.into(),
        ..Default::default()
    }
}

fn del(m: &mut Mvcc, k: &str, end: &str) -> PbDeleteResponse {
    match apply(m, Command::DeleteRange(del_req(k, end))) {
        CommandResponse::DeleteRange(r) => r,
        other => panic!("delete: {other:?}"),
    }
}

fn rreq(k: &str, end: &str) -> PbRangeRequest {
    PbRangeRequest {
        key: k.into(),
        range_end: end.into(),
        ..Default::default()
    }
}

fn get(m: &Mvcc, k: &str) -> Option<PbKeyValue> {
    m.range(&rreq(k, "")).unwrap().kvs.into_iter().next()
}

fn get_at(m: &Mvcc, k: &str, rev: i64) -> Result<Option<PbKeyValue>, EtcdError> {
    let req = PbRangeRequest {
        revision: rev,
        ..rreq(k, "")
    };
    m.range(&req).map(|r| r.kvs.into_iter().next())
}

fn keys(r: &PbRangeResponse) -> Vec<String> {
    r.kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

fn rev_of(r: &Option<etcd_client::proto::PbResponseHeader>) -> i64 {
    r.as_ref().map(|h| h.revision).unwrap()
}

fn op_put(k: &str, v: &str) -> PbTxnRequestOp {
    PbTxnRequestOp {
        request: Some(PbTxnOpRequest::RequestPut(put_req(k, v))),
    }
}

fn op_put_req(req: PbPutRequest) -> PbTxnRequestOp {
    PbTxnRequestOp {
        request: Some(PbTxnOpRequest::RequestPut(req)),
    }
}

fn op_del(k: &str, end: &str) -> PbTxnRequestOp {
    PbTxnRequestOp {
        request: Some(PbTxnOpRequest::RequestDeleteRange(PbDeleteRequest {
            prev_kv: true,
            ..del_req(k, end)
        })),
    }
}

fn op_get(req: PbRangeRequest) -> PbTxnRequestOp {
    PbTxnRequestOp {
        request: Some(PbTxnOpRequest::RequestRange(req)),
    }
}

fn op_txn(t: PbTxnRequest) -> PbTxnRequestOp {
    PbTxnRequestOp {
        request: Some(PbTxnOpRequest::RequestTxn(t)),
    }
}

const EQUAL: i32 = 0;
const GREATER: i32 = 1;
const LESS: i32 = 2;
const NOT_EQUAL: i32 = 3;
const T_VERSION: i32 = 0;
const T_CREATE: i32 = 1;
const T_MOD: i32 = 2;
const T_VALUE: i32 = 3;
const T_LEASE: i32 = 4;

fn cmp(k: &str, end: &str, target: i32, result: i32, n: i64) -> PbCompare {
    let target_union = Some(match target {
        T_VERSION => PbTargetUnion::Version(n),
        T_CREATE => PbTargetUnion::CreateRevision(n),
        T_MOD => PbTargetUnion::ModRevision(n),
        _ => PbTargetUnion::Lease(n),
    });
    PbCompare {
        key: k.into(),
        range_end: end.into(),
        target,
        result,
        target_union,
    }
}

fn cmp_value(k: &str, end: &str, result: i32, v: &str) -> PbCompare {
    PbCompare {
        key: k.into(),
        range_end: end.into(),
        target: T_VALUE,
        result,
        target_union: Some(PbTargetUnion::Value(v.into())),
    }
}

fn txn_req(
    compare: Vec<PbCompare>,
    success: Vec<PbTxnRequestOp>,
    failure: Vec<PbTxnRequestOp>,
) -> PbTxnRequest {
    PbTxnRequest {
        compare,
        success,
        failure,
    }
}

fn txn(m: &mut Mvcc, t: PbTxnRequest) -> PbTxnResponse {
    match apply(m, Command::Txn(t)) {
        CommandResponse::Txn(r) => r,
        other => panic!("txn: {other:?}"),
    }
}

fn range_resp(r: &PbTxnResponse, i: usize) -> &PbRangeResponse {
    match &r.responses[i].response {
        Some(PbTxnOpResponse::ResponseRange(rr)) => rr,
        other => panic!("not a range response: {other:?}"),
    }
}

fn grant(m: &mut Mvcc, id: i64, ttl: i64) -> CommandResponse {
    apply(m, Command::LeaseGrant { id, ttl })
}

fn all(m: &Mvcc) -> Vec<PbKeyValue> {
    m.range(&rreq("\0", "\0")).unwrap().kvs
}

fn watch(m: &Mvcc, k: &str, end: &str, start: i64, prev_kv: bool) -> Vec<PbEvent> {
    let mut next = start;
    let mut out = Vec::new();
    while next <= m.revision() {
        let b = m
            .watch_events(k.as_bytes(), end.as_bytes(), next, prev_kv, 2)
            .unwrap();
        assert!(b.next > next, "no progress");
        out.extend(b.events);
        next = b.next;
    }
    out
}

/// (type, key, mod revision, value, prev value) of each event.
fn summary(evs: &[PbEvent]) -> Vec<(i32, String, i64, String, Option<String>)> {
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    evs.iter()
        .map(|e| {
            let kv = e.kv.clone().unwrap();
            (
                e.r#type,
                s(&kv.key),
                kv.mod_revision,
                s(&kv.value),
                e.prev_kv.as_ref().map(|p| s(&p.value)),
            )
        })
        .collect()
}

// ---- revisions and versions ----------------------------------------------------------------

#[test]
fn revisions_and_versions_through_put_delete_recreate() {
    let mut m = engine();
    assert_eq!(m.revision(), 1);
    assert_eq!(m.compact_revision(), 0);
    assert_eq!(rev_of(&put(&mut m, "a", "1").header), 2);
    let kv = get(&m, "a").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 2, 1));
    put(&mut m, "a", "2");
    let kv = get(&m, "a").unwrap();
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version, kv.value),
        (2, 3, 2, b"2".to_vec())
    );
    let d = del(&mut m, "a", "");
    assert_eq!((d.deleted, rev_of(&d.header)), (1, 4));
    assert_eq!(get(&m, "a"), None);
    // Deleting nothing changes nothing, and does not bump the revision.
    let d = del(&mut m, "a", "");
    assert_eq!((d.deleted, rev_of(&d.header), m.revision()), (0, 4, 4));
    put(&mut m, "a", "3");
    let kv = get(&m, "a").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
    // History.
    assert_eq!(get_at(&m, "a", 1).unwrap(), None);
    assert_eq!(get_at(&m, "a", 2).unwrap().unwrap().value, b"1");
    assert_eq!(get_at(&m, "a", 3).unwrap().unwrap().version, 2);
    assert_eq!(get_at(&m, "a", 4).unwrap(), None);
    assert_eq!(get_at(&m, "a", 6), Err(EtcdError::FutureRevision));
    // Header revision is the current one even for an old read.
    let r = m
        .range(&PbRangeRequest {
            revision: 2,
            ..rreq("a", "")
        })
        .unwrap();
    assert_eq!(rev_of(&r.header), 5);
}

#[test]
fn put_prev_kv_and_ignore_flags() {
    let mut m = engine();
    let r = put_with(
        &mut m,
        PbPutRequest {
            prev_kv: true,
            ..put_req("k", "v1")
        },
    );
    assert_eq!(r.prev_kv, None);
    let r = put_with(
        &mut m,
        PbPutRequest {
            prev_kv: true,
            ..put_req("k", "v2")
        },
    );
    assert_eq!(r.prev_kv.unwrap().value, b"v1");
    assert_eq!(
        put_err(
            &mut m,
            PbPutRequest {
                ignore_value: true,
                ..put_req("missing", "")
            }
        ),
        EtcdError::KeyNotFound
    );
    assert_eq!(
        put_err(
            &mut m,
            PbPutRequest {
                ignore_value: true,
                ..put_req("k", "x")
            }
        ),
        EtcdError::ValueProvided
    );
    assert_eq!(
        put_err(
            &mut m,
            PbPutRequest {
                ignore_lease: true,
                lease: 5,
                ..put_req("k", "x")
            }
        ),
        EtcdError::LeaseProvided
    );
    assert_eq!(put_err(&mut m, put_req("", "x")), EtcdError::EmptyKey);
    assert_eq!(m.revision(), 3);
    grant(&mut m, 7, 60);
    put_with(
        &mut m,
        PbPutRequest {
            lease: 7,
            ..put_req("k", "v3")
        },
    );
    // ignore_value keeps the value, and (without ignore_lease) sets the given lease (none).
    put_with(
        &mut m,
        PbPutRequest {
            ignore_value: true,
            ..put_req("k", "")
        },
    );
    let kv = get(&m, "k").unwrap();
    assert_eq!(
        (kv.value.as_slice(), kv.lease, kv.version),
        (&b"v3"[..], 0, 4)
    );
    assert!(m.lease(7).unwrap().keys.is_empty());
    put_with(
        &mut m,
        PbPutRequest {
            lease: 7,
            ..put_req("k", "v4")
        },
    );
    // ignore_lease keeps the lease.
    put_with(
        &mut m,
        PbPutRequest {
            ignore_lease: true,
            ..put_req("k", "v5")
        },
    );
    let kv = get(&m, "k").unwrap();
    assert_eq!((kv.value.as_slice(), kv.lease), (&b"v5"[..], 7));
    assert_eq!(m.lease(7).unwrap().keys, vec![b"k".to_vec()]);
}

#[test]
fn delete_range_prev_kvs_and_ranges() {
    let mut m = engine();
    for k in ["a", "b", "c", "d"] {
        put(&mut m, k, k);
    }
    let r = match apply(
        &mut m,
        Command::DeleteRange(PbDeleteRequest {
            prev_kv: true,
            ..del_req("b", "d")
        }),
    ) {
        CommandResponse::DeleteRange(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(r.deleted, 2);
    assert_eq!(
        r.prev_kvs
            .iter()
            .map(|kv| kv.value.clone())
            .collect::<Vec<_>>(),
        vec![b"b".to_vec(), b"c".to_vec()]
    );
    assert_eq!(rev_of(&r.header), 6);
    // From-key delete.
    let r = del(&mut m, "a", "\0");
    assert_eq!((r.deleted, rev_of(&r.header)), (2, 7));
    assert!(all(&m).is_empty());
    // Both keys were deleted at one revision, sub-revisions 0 and 1.
    let evs = m.watch_events(b"\0", b"\0", 7, false, 100).unwrap();
    assert_eq!(summary(&evs.events).len(), 2);
    assert!(evs.events.iter().all(|e| e.r#type == 1));
}

// ---- range -------------------------------------------------------------------------------

fn sorted(m: &Mvcc, order: i32, target: i32) -> Vec<String> {
    keys(
        &m.range(&PbRangeRequest {
            sort_order: order,
            sort_target: target,
            ..rreq("k", "l")
        })
        .unwrap(),
    )
}

#[test]
fn range_with_every_option() {
    let mut m = engine();
    // rev 2..: k1=c, k2=a, k3=b; then k1 updated twice, k3 once.
    put(&mut m, "k1", "c"); // 2
    put(&mut m, "k2", "a"); // 3
    put(&mut m, "k3", "b"); // 4
    put(&mut m, "k1", "c2"); // 5
    put(&mut m, "k1", "c3"); // 6
    put(&mut m, "k3", "b2"); // 7
    put(&mut m, "z", "z"); // 8
                           // Prefix, from-key, empty and inverted ranges.
    assert_eq!(keys(&m.range(&rreq("k", "l")).unwrap()), ["k1", "k2", "k3"]);
    assert_eq!(
        keys(&m.range(&rreq("k2", "\0")).unwrap()),
        ["k2", "k3", "z"]
    );
    assert_eq!(keys(&m.range(&rreq("\0", "\0")).unwrap()).len(), 4);
    assert!(m.range(&rreq("k3", "k1")).unwrap().kvs.is_empty());
    assert!(m.range(&rreq("k3", "k3")).unwrap().kvs.is_empty());
    assert!(m.range(&rreq("k", "")).unwrap().kvs.is_empty());
    // Limit, more, count.
    let r = m
        .range(&PbRangeRequest {
            limit: 2,
            ..rreq("k", "l")
        })
        .unwrap();
    assert_eq!(
        (keys(&r), r.more, r.count),
        (vec!["k1".into(), "k2".into()], true, 3)
    );
    let r = m
        .range(&PbRangeRequest {
            limit: 3,
            ..rreq("k", "l")
        })
        .unwrap();
    assert_eq!((r.kvs.len(), r.more, r.count), (3, false, 3));
    // count_only and keys_only.
    let r = m
        .range(&PbRangeRequest {
            count_only: true,
            limit: 1,
            ..rreq("k", "l")
        })
        .unwrap();
    assert_eq!((r.kvs.len(), r.more, r.count), (0, false, 3));
    let r = m
        .range(&PbRangeRequest {
            keys_only: true,
            ..rreq("k1", "")
        })
        .unwrap();
    assert_eq!(
        (
            r.kvs[0].value.len(),
            r.kvs[0].version,
            r.kvs[0].mod_revision
        ),
        (0, 3, 6)
    );
    // Sorting: (order, target).
    assert_eq!(sorted(&m, 0, 0), ["k1", "k2", "k3"]);
    assert_eq!(sorted(&m, 2, 0), ["k3", "k2", "k1"]);
    assert_eq!(sorted(&m, 1, 1), ["k2", "k3", "k1"]); // version 1, 2, 3
    assert_eq!(sorted(&m, 0, 1), ["k2", "k3", "k1"]); // NONE + non-KEY target = ASCEND
    assert_eq!(sorted(&m, 2, 1), ["k1", "k3", "k2"]);
    assert_eq!(sorted(&m, 1, 2), ["k1", "k2", "k3"]); // create 2, 3, 4
    assert_eq!(sorted(&m, 2, 2), ["k3", "k2", "k1"]);
    assert_eq!(sorted(&m, 1, 3), ["k2", "k1", "k3"]); // mod 3, 6, 7
    assert_eq!(sorted(&m, 2, 3), ["k3", "k1", "k2"]);
    assert_eq!(sorted(&m, 1, 4), ["k2", "k3", "k1"]); // a, b2, c3
    assert_eq!(sorted(&m, 2, 4), ["k1", "k3", "k2"]);
    // Sort then limit: the limit applies to the sorted result.
    let r = m
        .range(&PbRangeRequest {
            sort_order: 2,
            sort_target: 3,
            limit: 1,
            ..rreq("k", "l")
        })
        .unwrap();
    assert_eq!((keys(&r), r.more, r.count), (vec!["k3".into()], true, 3));
    // Filters (count stays the unfiltered total, as etcd).
    let f = |req: PbRangeRequest| keys(&m.range(&req).unwrap());
    assert_eq!(
        f(PbRangeRequest {
            min_mod_revision: 6,
            ..rreq("k", "l")
        }),
        ["k1", "k3"]
    );
    assert_eq!(
        f(PbRangeRequest {
            max_mod_revision: 6,
            ..rreq("k", "l")
        }),
        ["k1", "k2"]
    );
    assert_eq!(
        f(PbRangeRequest {
            min_create_revision: 3,
            ..rreq("k", "l")
        }),
        ["k2", "k3"]
    );
    assert_eq!(
        f(PbRangeRequest {
            max_create_revision: 3,
            ..rreq("k", "l")
        }),
        ["k1", "k2"]
    );
    let r = m
        .range(&PbRangeRequest {
            min_mod_revision: 6,
            limit: 1,
            ..rreq("k", "l")
        })
        .unwrap();
    assert_eq!((keys(&r), r.more, r.count), (vec!["k1".into()], true, 3));
    // Old revisions.
    let r = m
        .range(&PbRangeRequest {
            revision: 4,
            ..rreq("k", "l")
        })
        .unwrap();
    assert_eq!(
        r.kvs.iter().map(|kv| kv.value.clone()).collect::<Vec<_>>(),
        vec![b"c".to_vec(), b"a".to_vec(), b"b".to_vec()]
    );
    assert_eq!(rev_of(&r.header), 8);
    let r = m
        .range(&PbRangeRequest {
            revision: 2,
            ..rreq("k", "l")
        })
        .unwrap();
    assert_eq!((keys(&r), r.count), (vec!["k1".into()], 1));
    assert_eq!(
        m.range(&PbRangeRequest {
            revision: 9,
            ..rreq("k", "l")
        }),
        Err(EtcdError::FutureRevision)
    );
    // Negative revision reads the current one, as etcd.
    assert_eq!(get_at(&m, "k1", -3).unwrap().unwrap().value, b"c3");
    // Bad requests.
    assert_eq!(m.range(&rreq("", "")), Err(EtcdError::EmptyKey));
    assert_eq!(
        m.range(&PbRangeRequest {
            sort_order: 3,
            ..rreq("k", "")
        }),
        Err(EtcdError::InvalidSortOption)
    );
}

// ---- compaction ----------------------------------------------------------------------------

#[test]
fn compaction_rules_and_errors() {
    let mut m = engine();
    put(&mut m, "a", "1"); // 2
    put(&mut m, "a", "2"); // 3
    put(&mut m, "b", "1"); // 4
    del(&mut m, "b", ""); // 5
    put(&mut m, "c", "1"); // 6
    del(&mut m, "c", ""); // 7
    put(&mut m, "a", "3"); // 8
    let records = |m: &Mvcc| m.tree.scan_prefix([layout::REV_PREFIX]).count();
    assert_eq!(records(&m), 7);
    assert_eq!(
        apply(&mut m, Command::Compact { revision: 9 }),
        CommandResponse::Error(EtcdError::FutureRevision)
    );
    assert_eq!(
        apply(&mut m, Command::Compact { revision: 6 }),
        CommandResponse::Compact { revision: 8 }
    );
    assert_eq!(m.compact_revision(), 6);
    // Kept: a@3 (latest <= 6), c@6 (latest <= 6, a put), c@7, a@8. Gone: a@2, b@4, b@5.
    assert_eq!(records(&m), 4);
    assert_eq!(get_at(&m, "a", 5), Err(EtcdError::Compacted));
    assert_eq!(get_at(&m, "a", 6).unwrap().unwrap().value, b"2");
    assert_eq!(get_at(&m, "a", 6).unwrap().unwrap().version, 2);
    assert_eq!(get_at(&m, "b", 6).unwrap(), None);
    assert_eq!(get_at(&m, "c", 6).unwrap().unwrap().value, b"1");
    assert_eq!(get_at(&m, "c", 7).unwrap(), None);
    let a = get(&m, "a").unwrap();
    assert_eq!((a.create_revision, a.version), (2, 3));
    for rev in [5, 6] {
        assert_eq!(
            apply(&mut m, Command::Compact { revision: rev }),
            CommandResponse::Error(EtcdError::Compacted)
        );
    }
    // Compacting at the current revision after a delete drops the deleted key entirely.
    assert_eq!(
        apply(&mut m, Command::Compact { revision: 8 }),
        CommandResponse::Compact { revision: 8 }
    );
    assert_eq!(records(&m), 1);
    assert!(!m.state.index.contains_key(&b"c"[..]));
    assert_eq!(get(&m, "a").unwrap().version, 3);
    assert_eq!(m.revision(), 8);
    // A reopened engine agrees (current revision kept though its record is gone).
    let snap = m.snapshot().unwrap();
    let mut fresh = engine();
    fresh.restore(&snap).unwrap();
    assert_eq!((fresh.revision(), fresh.compact_revision()), (8, 8));
    assert_eq!(all(&fresh), all(&m));
}

#[test]
fn compact_zero_on_a_fresh_store_is_allowed_as_in_etcd() {
    let mut m = engine();
    assert_eq!(
        apply(&mut m, Command::Compact { revision: 0 }),
        CommandResponse::Compact { revision: 1 }
    );
    assert_eq!(
        apply(&mut m, Command::Compact { revision: 0 }),
        CommandResponse::Error(EtcdError::Compacted)
    );
    assert_eq!(
        apply(&mut m, Command::Compact { revision: 1 }),
        CommandResponse::Compact { revision: 1 }
    );
}

// ---- txn ------------------------------------------------------------------------------------

#[test]
fn txn_compares_on_every_target() {
    let mut m = engine();
    grant(&mut m, 9, 10);
    put(&mut m, "a", "va"); // 2
    put_with(
        &mut m,
        PbPutRequest {
            lease: 9,
            ..put_req("b", "vb")
        },
    ); // 3
    put(&mut m, "a", "va2"); // 4
    let check = |m: &mut Mvcc, c: PbCompare| txn(m, txn_req(vec![c], vec![], vec![])).succeeded;
    assert!(check(&mut m, cmp_value("a", "", EQUAL, "va2")));
    assert!(!check(&mut m, cmp_value("a", "", EQUAL, "va")));
    assert!(check(&mut m, cmp_value("a", "", GREATER, "va")));
    assert!(check(&mut m, cmp_value("a", "", LESS, "vb")));
    assert!(check(&mut m, cmp_value("a", "", NOT_EQUAL, "x")));
    assert!(check(&mut m, cmp("a", "", T_VERSION, EQUAL, 2)));
    assert!(check(&mut m, cmp("a", "", T_CREATE, EQUAL, 2)));
    assert!(check(&mut m, cmp("a", "", T_MOD, EQUAL, 4)));
    assert!(check(&mut m, cmp("a", "", T_MOD, LESS, 5)));
    assert!(check(&mut m, cmp("b", "", T_LEASE, EQUAL, 9)));
    assert!(check(&mut m, cmp("a", "", T_LEASE, EQUAL, 0)));
    // Missing keys: zero version/create/mod/lease; a value compare always fails.
    assert!(check(&mut m, cmp("nope", "", T_VERSION, EQUAL, 0)));
    assert!(check(&mut m, cmp("nope", "", T_CREATE, EQUAL, 0)));
    assert!(check(&mut m, cmp("nope", "", T_MOD, LESS, 1)));
    assert!(check(&mut m, cmp("nope", "", T_LEASE, EQUAL, 0)));
    assert!(!check(&mut m, cmp_value("nope", "", EQUAL, "")));
    assert!(!check(&mut m, cmp_value("nope", "", NOT_EQUAL, "x")));
    // Ranges: every key must satisfy it.
    assert!(check(&mut m, cmp("a", "c", T_VERSION, GREATER, 0)));
    assert!(!check(&mut m, cmp("a", "c", T_VERSION, EQUAL, 2)));
    assert!(check(&mut m, cmp("a", "c", T_CREATE, LESS, 4)));
    assert!(check(&mut m, cmp("a", "\0", T_MOD, GREATER, 1)));
    assert!(check(&mut m, cmp_value("a", "c", GREATER, "va")));
    assert!(!check(&mut m, cmp_value("a", "c", GREATER, "va2")));
    assert!(check(&mut m, cmp("x", "z", T_VERSION, EQUAL, 0)));
    // Read-only txns changed nothing.
    assert_eq!(m.revision(), 4);
}

#[test]
fn txn_branches_nesting_and_own_writes() {
    let mut m = engine();
    put(&mut m, "a", "1"); // 2
                           // Success: put b, read b (sees own write), delete a, read all.
    let t = txn_req(
        vec![cmp("a", "", T_VERSION, EQUAL, 1)],
        vec![
            op_put("b", "2"),
            op_get(rreq("b", "")),
            op_del("a", ""),
            op_get(rreq("\0", "\0")),
            op_get(PbRangeRequest {
                revision: 2,
                ..rreq("a", "")
            }),
        ],
        vec![op_put("failed", "x")],
    );
    let r = txn(&mut m, t.clone());
    assert!(r.succeeded);
    assert_eq!(rev_of(&r.header), 3);
    assert_eq!(m.revision(), 3);
    let b = &range_resp(&r, 1).kvs[0];
    assert_eq!((b.value.as_slice(), b.mod_revision), (&b"2"[..], 3));
    assert_eq!(rev_of(&range_resp(&r, 1).header), 3);
    match &r.responses[2].response {
        Some(PbTxnOpResponse::ResponseDeleteRange(d)) => {
            assert_eq!(d.deleted, 1);
            assert_eq!(d.prev_kvs[0].value, b"1");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(keys(range_resp(&r, 3)), ["b"]);
    assert_eq!(keys(range_resp(&r, 4)), ["a"]);
    // All at one revision, sub-revisions in op order.
    let evs = m.watch_events(b"\0", b"\0", 3, false, 100).unwrap();
    assert_eq!(
        summary(&evs.events),
        vec![
            (0, "b".into(), 3, "2".into(), None),
            (1, "a".into(), 3, "".into(), None)
        ]
    );
    // Same txn again: a is gone, so the failure branch runs.
    let r = txn(&mut m, t);
    assert!(!r.succeeded);
    assert_eq!(get(&m, "failed").unwrap().value, b"x");
    assert_eq!(m.revision(), 4);

    // Nested: the inner compare is evaluated before the outer txn writes (etcd).
    let inner = txn_req(
        vec![cmp("n", "", T_VERSION, EQUAL, 0)],
        vec![op_put("inner-then", "1"), op_get(rreq("n", ""))],
        vec![op_put("inner-else", "1")],
    );
    let r = txn(
        &mut m,
        txn_req(vec![], vec![op_put("n", "1"), op_txn(inner)], vec![]),
    );
    assert!(r.succeeded);
    match &r.responses[1].response {
        Some(PbTxnOpResponse::ResponseTxn(t)) => {
            assert!(t.succeeded);
            assert_eq!(rev_of(&t.header), 0);
            assert_eq!(keys(range_resp(t, 1)), ["n"]);
        }
        other => panic!("{other:?}"),
    }
    assert!(get(&m, "inner-then").is_some());
    assert!(get(&m, "inner-else").is_none());
    assert_eq!(m.revision(), 5);
    assert_eq!(get(&m, "n").unwrap().mod_revision, 5);
    assert_eq!(get(&m, "inner-then").unwrap().mod_revision, 5);
}

#[test]
fn txn_failures_change_nothing() {
    let mut m = engine();
    put(&mut m, "a", "1");
    let snap = m.snapshot().unwrap();
    // A put on a missing lease, after a put that would have succeeded.
    let t = txn_req(
        vec![],
        vec![
            op_put("b", "1"),
            op_put_req(PbPutRequest {
                lease: 42,
                ..put_req("c", "1")
            }),
        ],
        vec![],
    );
    assert_eq!(
        apply(&mut m, Command::Txn(t)),
        CommandResponse::Error(EtcdError::LeaseNotFound)
    );
    // ignore_value on a key that does not exist before the txn.
    let t = txn_req(
        vec![],
        vec![op_put_req(PbPutRequest {
            ignore_value: true,
            ..put_req("zz", "")
        })],
        vec![],
    );
    assert_eq!(
        apply(&mut m, Command::Txn(t)),
        CommandResponse::Error(EtcdError::KeyNotFound)
    );
    // A range at a future revision inside the txn.
    let t = txn_req(
        vec![],
        vec![
            op_put("b", "1"),
            op_get(PbRangeRequest {
                revision: 3,
                ..rreq("b", "")
            }),
        ],
        vec![],
    );
    assert_eq!(
        apply(&mut m, Command::Txn(t)),
        CommandResponse::Error(EtcdError::FutureRevision)
    );
    // Duplicate keys are rejected at apply too.
    let t = txn_req(vec![], vec![op_put("b", "1"), op_put("b", "2")], vec![]);
    assert_eq!(
        apply(&mut m, Command::Txn(t)),
        CommandResponse::Error(EtcdError::DuplicateKey)
    );
    // The failed branch's errors do not matter when it is not taken.
    let t = txn_req(
        vec![],
        vec![op_put("ok", "1")],
        vec![op_put_req(PbPutRequest {
            lease: 42,
            ..put_req("c", "1")
        })],
    );
    assert!(txn(&mut m, t).succeeded);
    del(&mut m, "ok", "");
    // raft_meta is written even when the command fails.
    let bad = Command::Put(PbPutRequest {
        lease: 1,
        ..put_req("x", "1")
    });
    assert_eq!(
        m.apply(&bad, Some((b"applied", b"7"))).unwrap(),
        CommandResponse::Error(EtcdError::LeaseNotFound)
    );
    assert_eq!(m.meta(b"applied").unwrap(), Some(b"7".to_vec()));
    assert_eq!(m.revision(), 4);
    assert_eq!(get(&m, "b"), None);
    let mut before = engine();
    before.restore(&snap).unwrap();
    assert_eq!(all(&before), all(&m)[..1]);
}

#[test]
fn empty_txn_and_read_only_txn() {
    let mut m = engine();
    put(&mut m, "a", "1");
    let r = txn(&mut m, txn_req(vec![], vec![], vec![]));
    assert!(r.succeeded && r.responses.is_empty());
    assert_eq!((rev_of(&r.header), m.revision()), (2, 2));
    let t = txn_req(
        vec![cmp_value("a", "", EQUAL, "1")],
        vec![op_get(rreq("a", ""))],
        vec![op_get(rreq("b", ""))],
    );
    let r = m.txn_read(&t).unwrap();
    assert!(r.succeeded);
    assert_eq!(keys(range_resp(&r, 0)), ["a"]);
    assert_eq!(r, txn(&mut m, t));
    let w = txn_req(vec![], vec![op_put("b", "1")], vec![]);
    assert!(matches!(m.txn_read(&w), Err(EtcdError::Internal(_))));
    assert_eq!(m.revision(), 2);
}

// ---- leases and members -------------------------------------------------------------------

#[test]
fn leases_attach_detach_and_revoke_in_one_revision() {
    let mut m = engine();
    assert_eq!(
        grant(&mut m, 1, 30),
        CommandResponse::LeaseGrant {
            id: 1,
            ttl: 30,
            revision: 1
        }
    );
    assert_eq!(
        grant(&mut m, 1, 30),
        CommandResponse::Error(EtcdError::LeaseExists)
    );
    assert_eq!(
        grant(&mut m, 0, 30),
        CommandResponse::Error(EtcdError::LeaseNotFound)
    );
    assert_eq!(
        grant(&mut m, 3, MAX_LEASE_TTL + 1),
        CommandResponse::Error(EtcdError::LeaseTtlTooLarge)
    );
    grant(&mut m, 2, 60);
    assert_eq!(m.leases(), vec![(1, 30), (2, 60)]);
    assert_eq!(m.revision(), 1);
    assert_eq!(
        put_err(
            &mut m,
            PbPutRequest {
                lease: 5,
                ..put_req("x", "1")
            }
        ),
        EtcdError::LeaseNotFound
    );
    for k in ["c", "a", "b"] {
        put_with(
            &mut m,
            PbPutRequest {
                lease: 1,
                ..put_req(k, "v")
            },
        );
    }
    put_with(
        &mut m,
        PbPutRequest {
            lease: 2,
            ..put_req("d", "v")
        },
    );
    assert_eq!(
        m.lease(1).unwrap(),
        LeaseInfo {
            id: 1,
            granted_ttl: 30,
            keys: vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
        }
    );
    // Moving c to lease 2, and b to no lease.
    put_with(
        &mut m,
        PbPutRequest {
            lease: 2,
            ..put_req("c", "v")
        },
    );
    put(&mut m, "b", "v");
    assert_eq!(m.lease(1).unwrap().keys, vec![b"a".to_vec()]);
    assert_eq!(m.lease(2).unwrap().keys, vec![b"c".to_vec(), b"d".to_vec()]);
    // A delete detaches.
    del(&mut m, "d", "");
    assert_eq!(m.lease(2).unwrap().keys, vec![b"c".to_vec()]);
    put_with(
        &mut m,
        PbPutRequest {
            lease: 2,
            ..put_req("e", "v")
        },
    );
    let before = m.revision();
    assert_eq!(
        apply(&mut m, Command::LeaseRevoke { id: 2 }),
        CommandResponse::LeaseRevoke {
            revision: before + 1
        }
    );
    assert_eq!(m.lease(2), None);
    assert_eq!(keys(&m.range(&rreq("\0", "\0")).unwrap()), ["a", "b"]);
    let evs = m.watch_events(b"\0", b"\0", before + 1, true, 100).unwrap();
    assert_eq!(
        summary(&evs.events),
        vec![
            (1, "c".into(), before + 1, "".into(), Some("v".into())),
            (1, "e".into(), before + 1, "".into(), Some("v".into())),
        ]
    );
    assert_eq!(
        apply(&mut m, Command::LeaseRevoke { id: 2 }),
        CommandResponse::Error(EtcdError::LeaseNotFound)
    );
    // Revoking a lease with no keys does not bump the revision.
    grant(&mut m, 4, 5);
    let rev = m.revision();
    assert_eq!(
        apply(&mut m, Command::LeaseRevoke { id: 4 }),
        CommandResponse::LeaseRevoke { revision: rev }
    );
    assert_eq!(m.revision(), rev);
}

#[test]
fn member_attrs_are_stored() {
    let mut m = engine();
    let cmd = Command::MemberAttrs {
        id: 7,
        name: "m1".into(),
        client_urls: vec!["https://127.0.0.1:2379".into()],
    };
    assert_eq!(apply(&mut m, cmd), CommandResponse::MemberAttrs);
    assert_eq!(m.member_attrs()[&7].name, "m1");
    assert_eq!(m.revision(), 1);
}

// ---- watch ---------------------------------------------------------------------------------

fn watch_fixture(ring: Option<(usize, usize)>) -> Mvcc {
    let mut m = engine();
    if let Some((events, bytes)) = ring {
        m.ring = Ring::with_capacity(m.revision() + 1, events, bytes);
    }
    put(&mut m, "a", "1"); // 2
    put(&mut m, "b", "1"); // 3
    put(&mut m, "a", "2"); // 4
    txn(
        &mut m,
        txn_req(vec![], vec![op_put("a", "3"), op_put("c", "1")], vec![]),
    ); // 5
    del(&mut m, "a", ""); // 6
    put(&mut m, "a", "4"); // 7
    m
}

fn expected_all() -> Vec<(i32, String, i64, String, Option<String>)> {
    let e = |t: i32, k: &str, rev: i64, v: &str, p: Option<&str>| {
        (t, k.to_string(), rev, v.to_string(), p.map(String::from))
    };
    vec![
        e(0, "a", 2, "1", None),
        e(0, "b", 3, "1", None),
        e(0, "a", 4, "2", Some("1")),
        e(0, "a", 5, "3", Some("2")),
        e(0, "c", 5, "1", None),
        e(1, "a", 6, "", Some("3")),
        e(0, "a", 7, "4", None),
    ]
}

#[test]
fn watch_events_from_the_ring() {
    let m = watch_fixture(None);
    assert_eq!(m.ring.from, 2);
    assert_eq!(summary(&watch(&m, "\0", "\0", 1, true)), expected_all());
    // Without prev_kv; from a later start; for one key; for a range.
    let evs = watch(&m, "a", "", 4, false);
    assert_eq!(
        evs.iter()
            .map(|e| e.kv.as_ref().unwrap().mod_revision)
            .collect::<Vec<_>>(),
        vec![4, 5, 6, 7]
    );
    assert!(evs.iter().all(|e| e.prev_kv.is_none()));
    let evs = watch(&m, "b", "d", 1, false);
    assert_eq!(summary(&evs).len(), 2);
    // The delete event: key and delete revision only.
    let d = &watch(&m, "a", "", 6, false)[0];
    assert_eq!(
        d.kv.clone().unwrap(),
        PbKeyValue {
            key: b"a".to_vec(),
            mod_revision: 6,
            ..Default::default()
        }
    );
    // Batches never split a revision: max 1 event, revision 5 has two.
    let b = m.watch_events(b"\0", b"\0", 5, false, 1).unwrap();
    assert_eq!((b.events.len(), b.next), (2, 6));
    let b = m.watch_events(b"\0", b"\0", 2, false, 1).unwrap();
    assert_eq!((b.events.len(), b.next), (1, 3));
    // Caught up, and the future.
    let b = m.watch_events(b"\0", b"\0", 8, false, 10).unwrap();
    assert_eq!((b.events.len(), b.next), (0, 8));
    let b = m.watch_events(b"\0", b"\0", 20, false, 10).unwrap();
    assert_eq!((b.events.len(), b.next), (0, 20));
    // No matching events still covers the whole span.
    let b = m.watch_events(b"zz", b"", 1, false, 10).unwrap();
    assert_eq!((b.events.len(), b.next), (0, 8));
}

#[test]
fn watch_events_from_sled_when_the_ring_has_moved_on() {
    // A ring of 2 events: most history comes from sled, the tail from the ring.
    let m = watch_fixture(Some((2, 1 << 20)));
    assert!(m.ring.from > 3);
    assert_eq!(summary(&watch(&m, "\0", "\0", 1, true)), expected_all());
    assert_eq!(summary(&watch(&m, "a", "", 1, true)), {
        let mut e = expected_all();
        e.retain(|x| x.1 == "a");
        e
    });
    // A byte-bounded ring evicts whole revisions too.
    let m2 = watch_fixture(Some((1000, 300)));
    assert!(m2.ring.events.len() < 7);
    assert_eq!(summary(&watch(&m2, "\0", "\0", 1, true)), expected_all());
    // A ring that is empty (as after open) serves from sled alone.
    let mut m3 = watch_fixture(None);
    m3.ring = Ring::new(m3.revision() + 1);
    assert_eq!(summary(&watch(&m3, "\0", "\0", 2, true)), expected_all());
}

#[test]
fn watch_sled_scan_is_bounded_and_resumes() {
    let mut m = engine();
    m.ring = Ring::with_capacity(2, 1, 1 << 20);
    for i in 0..5000 {
        put(&mut m, &format!("k{i}"), "v");
    }
    put(&mut m, "target", "t");
    let b = m.watch_events(b"target", b"", 1, false, 10).unwrap();
    assert!(b.events.is_empty() && b.next > 1 && b.next <= m.revision());
    let evs = watch(&m, "target", "", 1, false);
    assert_eq!(evs.len(), 1);
}

#[test]
fn watch_after_compaction() {
    for ring in [None, Some((2, 1 << 20))] {
        let mut m = watch_fixture(ring);
        apply(&mut m, Command::Compact { revision: 5 });
        assert_eq!(
            m.watch_events(b"\0", b"\0", 4, false, 10).unwrap_err(),
            EtcdError::Compacted
        );
        // At the compaction revision, as etcd: what compaction kept of it (puts).
        let all = summary(&watch(&m, "\0", "\0", 5, true));
        assert_eq!(
            all,
            expected_all()[3..]
                .to_vec()
                .into_iter()
                .map(|mut e| {
                    // prev_kv of an event at 5 is the key at 4: compacted.
                    if e.2 == 5 {
                        e.4 = None;
                    }
                    e
                })
                .collect::<Vec<_>>()
        );
        apply(&mut m, Command::Compact { revision: 6 });
        // Revision 6 was a delete: compaction removed it; replay from 6 shows only 7.
        let evs = summary(&watch(&m, "\0", "\0", 6, true));
        assert_eq!(evs, vec![(0, "a".into(), 7, "4".into(), None)]);
    }
}

#[test]
fn compacted_records_are_deleted_gradually_and_invisibly() {
    let dir = tempfile::tempdir().unwrap();
    let raw = |m: &Mvcc| m.tree.iter().collect::<Result<Vec<_>, _>>().unwrap();
    let mut cmds = Vec::new();
    for i in 0..40 {
        cmds.push(Command::Put(put_req(
            &format!("k{}", i % 6),
            &format!("v{i}"),
        )));
        if i % 7 == 3 {
            cmds.push(Command::DeleteRange(del_req(&format!("k{}", i % 6), "")));
        }
    }
    cmds.push(Command::Compact { revision: 20 });
    cmds.push(Command::Put(put_req("k0", "x")));
    // The current revision is a delete; compacting at it makes its records garbage too.
    cmds.push(Command::DeleteRange(del_req("k1", "")));
    cmds.push(Command::Compact { revision: 49 });
    let (garbage, snap) = {
        let db = sled::open(dir.path()).unwrap();
        let mut slow = Mvcc::open(&db).unwrap();
        slow.gc_per_apply = 1;
        let mut other = engine();
        other.gc_per_apply = 1;
        let mut fast = engine();
        fast.gc_per_apply = 1000;
        for cmd in &cmds {
            let r = slow.apply(cmd, None).unwrap();
            assert_eq!(r, other.apply(cmd, None).unwrap());
            assert_eq!(r, fast.apply(cmd, None).unwrap(), "{cmd:?}");
        }
        assert_eq!(slow.revision(), 49);
        assert!(slow.state.garbage.len() > 10);
        assert!(fast.state.garbage.is_empty());
        // Lingering garbage is invisible: reads, watches, snapshots as if deleted.
        same_state(&slow, &fast);
        assert_eq!(
            slow.watch_events(b"\0", b"\0", 49, true, 100)
                .unwrap()
                .events
                .len(),
            0
        );
        db.flush().unwrap();
        (slow.state.garbage.clone(), other)
    };
    // Reopened mid-collection: the same garbage is found again, in the same order.
    let db = sled::open(dir.path()).unwrap();
    let mut reopened = Mvcc::open(&db).unwrap();
    reopened.gc_per_apply = 1;
    assert_eq!(reopened.state.garbage, garbage);
    let mut other = snap;
    same_state(&reopened, &other);
    let mut i = 0;
    while !reopened.state.garbage.is_empty() {
        let cmd = Command::Put(put_req("more", &i.to_string()));
        assert_eq!(
            reopened.apply(&cmd, None).unwrap(),
            other.apply(&cmd, None).unwrap()
        );
        assert_eq!(raw(&reopened), raw(&other));
        i += 1;
    }
    assert!(other.state.garbage.is_empty());
    // Failed commands collect too.
    reopened.gc_per_apply = 1;
    let bad = Command::LeaseRevoke { id: 99 };
    reopened
        .state
        .garbage
        .push_back(index::Rev { main: 1, sub: 0 });
    reopened.apply(&bad, Some((b"a", b"b"))).unwrap();
    assert!(reopened.state.garbage.is_empty());
}

// ---- snapshot, restore, reopen ---------------------------------------------------------------

fn busy(m: &mut Mvcc) {
    grant(m, 5, 100);
    for i in 0..30 {
        put(m, &format!("key/{}", i % 7), &format!("v{i}"));
        if i % 5 == 0 {
            put_with(
                m,
                PbPutRequest {
                    lease: 5,
                    ..put_req(&format!("leased/{i}"), "l")
                },
            );
        }
        if i % 9 == 0 {
            del(m, &format!("key/{}", i % 4), "");
        }
    }
    apply(m, Command::Compact { revision: 12 });
    put(m, "after", "compaction");
    apply(
        m,
        Command::MemberAttrs {
            id: 1,
            name: "one".into(),
            client_urls: vec![],
        },
    );
    m.set_meta(b"raft/x", b"y").unwrap();
}

fn same_state(a: &Mvcc, b: &Mvcc) {
    assert_eq!(a.revision(), b.revision());
    assert_eq!(a.compact_revision(), b.compact_revision());
    assert_eq!(all(a), all(b));
    for rev in a.compact_revision()..=a.revision() {
        let req = PbRangeRequest {
            revision: rev,
            ..rreq("\0", "\0")
        };
        assert_eq!(a.range(&req), b.range(&req), "at {rev}");
    }
    assert_eq!(a.leases(), b.leases());
    for (id, _) in a.leases() {
        assert_eq!(a.lease(id), b.lease(id));
    }
    assert_eq!(a.member_attrs(), b.member_attrs());
    assert_eq!(a.meta(b"raft/x").unwrap(), b.meta(b"raft/x").unwrap());
    let start = a.compact_revision();
    assert_eq!(
        summary(&watch(a, "\0", "\0", start, true)),
        summary(&watch(b, "\0", "\0", start, true))
    );
    assert_eq!(a.state.index, b.state.index);
    assert_eq!(a.snapshot().unwrap(), b.snapshot().unwrap());
}

#[test]
fn snapshot_restore_gives_the_same_store() {
    let mut a = engine();
    busy(&mut a);
    let snap = a.snapshot().unwrap();
    let mut b = engine();
    put(&mut b, "junk", "to be replaced");
    b.set_meta(b"other", b"gone").unwrap();
    b.restore(&snap).unwrap();
    same_state(&a, &b);
    assert_eq!(b.meta(b"other").unwrap(), None);
    // Both continue identically.
    for m in [&mut a, &mut b] {
        apply(m, Command::LeaseRevoke { id: 5 });
        put(m, "key/1", "later");
    }
    same_state(&a, &b);
}

#[test]
fn corrupt_snapshots_are_refused_and_change_nothing() {
    let mut a = engine();
    busy(&mut a);
    let snap = a.snapshot().unwrap();
    let mut b = engine();
    put(&mut b, "keep", "me");
    let before = b.snapshot().unwrap();
    let mut flipped = snap.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 1;
    for bad in [
        &b""[..],
        b"garbage",
        &snap[..snap.len() - 1],
        &snap[..snap.len() / 2],
        &flipped,
    ] {
        assert!(matches!(b.restore(bad), Err(StoreError::Corrupt(_))));
    }
    assert_eq!(b.snapshot().unwrap(), before);
    assert_eq!(get(&b, "keep").unwrap().value, b"me");
}

#[test]
fn reopen_from_disk_gives_the_same_store() {
    let dir = tempfile::tempdir().unwrap();
    let (snap, rev) = {
        let db = sled::open(dir.path()).unwrap();
        let mut m = Mvcc::open(&db).unwrap();
        busy(&mut m);
        del(&mut m, "after", ""); // the current revision is a delete
        let now = m.revision();
        apply(&mut m, Command::Compact { revision: now });
        db.flush().unwrap();
        (m.snapshot().unwrap(), m.revision())
    };
    // sled's IO threads may hold the old database a moment after it is dropped.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let db = loop {
        match sled::open(dir.path()) {
            Ok(db) => break db,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("reopening: {e}"),
        }
    };
    let reopened = Mvcc::open(&db).unwrap();
    assert_eq!(reopened.revision(), rev);
    let mut restored = engine();
    restored.restore(&snap).unwrap();
    same_state(&reopened, &restored);
    assert_eq!(reopened.lease(5).unwrap().keys.len(), 6);
    assert!(reopened.db_size() > 0);
}

// ---- robustness ------------------------------------------------------------------------------

#[test]
fn odd_requests_never_panic() {
    let mut m = engine();
    put(&mut m, "a", "1");
    let odd = [
        Command::DeleteRange(del_req("", "")),
        Command::DeleteRange(del_req("b", "a")),
        Command::DeleteRange(del_req("b", "\0")),
        Command::Txn(txn_req(
            vec![PbCompare {
                key: b"a".to_vec(),
                target: 99,
                result: 99,
                ..Default::default()
            }],
            vec![op_get(PbRangeRequest {
                limit: -5,
                revision: -1,
                ..rreq("a", "")
            })],
            vec![],
        )),
        Command::Txn(txn_req(
            vec![],
            vec![PbTxnRequestOp { request: None }],
            vec![],
        )),
        Command::Txn(txn_req(
            vec![],
            vec![op_get(PbRangeRequest {
                sort_target: 77,
                ..rreq("a", "")
            })],
            vec![],
        )),
        Command::Compact { revision: i64::MIN },
        Command::Compact { revision: i64::MAX },
        Command::LeaseRevoke { id: i64::MIN },
        Command::LeaseGrant {
            id: i64::MIN,
            ttl: -1,
        },
    ];
    for cmd in &odd {
        m.apply(cmd, None).unwrap();
    }
    let _ = m.range(&PbRangeRequest {
        limit: i64::MAX,
        min_mod_revision: -1,
        max_create_revision: i64::MIN,
        ..rreq("\0", "\0")
    });
    let _ = m.watch_events(b"", b"", i64::MIN, true, 0);
    let _ = m.watch_events(b"b", b"a", i64::MAX, true, usize::MAX);
    assert_eq!(get(&m, "a").unwrap().value, b"1");
    // A deep nested txn.
    let mut t = txn_req(vec![], vec![op_put("deep", "1")], vec![]);
    for _ in 0..40 {
        t = txn_req(vec![], vec![op_txn(t)], vec![]);
    }
    txn(&mut m, t);
    assert!(get(&m, "deep").is_some());
}

// ---- determinism and a model check -------------------------------------------------------

/// A trivially correct model of the current state: key → (value, create, mod, version, lease).
type Model = BTreeMap<Vec<u8>, (Vec<u8>, i64, i64, i64, i64)>;

fn random_command(rng: &mut StdRng, leases: &[i64]) -> Command {
    let key = |rng: &mut StdRng| format!("k{:02}", rng.gen_range(0..24)).into_bytes();
    let lease = |rng: &mut StdRng| {
        if rng.gen_bool(0.2) && !leases.is_empty() {
            leases[rng.gen_range(0..leases.len())]
        } else {
            0
        }
    };
    match rng.gen_range(0..100) {
        0..=49 => Command::Put(PbPutRequest {
            key: key(rng),
            value: format!("v{}", rng.gen_range(0..1000)).into_bytes(),
            lease: lease(rng),
            prev_kv: rng.gen_bool(0.3),
            ..Default::default()
        }),
        50..=64 => {
            let k = key(rng);
            let mut end = k.clone();
            if rng.gen_bool(0.5) {
                end.clear();
            } else {
                end[2] = end[2].saturating_add(rng.gen_range(0..3));
            }
            Command::DeleteRange(PbDeleteRequest {
                key: k,
                range_end: end,
                prev_kv: rng.gen_bool(0.5),
            })
        }
        65..=84 => {
            let k = key(rng);
            let k2 = key(rng);
            let mut ops = vec![op_put_req(PbPutRequest {
                key: k.clone(),
                value: b"t".to_vec(),
                lease: lease(rng),
                ..Default::default()
            })];
            if k2 != k {
                ops.push(op_del(std::str::from_utf8(&k2).unwrap(), ""));
            }
            ops.push(op_get(rreq("k", "l")));
            Command::Txn(txn_req(
                vec![cmp(
                    std::str::from_utf8(&k).unwrap(),
                    "",
                    T_MOD,
                    LESS,
                    rng.gen_range(0..60),
                )],
                ops,
                vec![op_put("else", "e")],
            ))
        }
        85..=89 => Command::LeaseGrant {
            id: rng.gen_range(1..6),
            ttl: 10,
        },
        90..=94 => Command::LeaseRevoke {
            id: rng.gen_range(1..6),
        },
        _ => Command::Compact {
            revision: rng.gen_range(0..80),
        },
    }
}

/// Applies `cmd` to the model, given the engine's answer for branch choices.
fn model_apply(
    model: &mut Model,
    rev: &mut i64,
    leased: &mut BTreeMap<i64, Vec<Vec<u8>>>,
    cmd: &Command,
    resp: &CommandResponse,
) {
    // key → new (value, lease), or None for a delete.
    type Write = (Vec<u8>, Option<(Vec<u8>, i64)>);
    let mut writes: Vec<Write> = Vec::new();
    match (cmd, resp) {
        (_, CommandResponse::Error(_)) => return,
        (Command::Put(p), _) => writes.push((p.key.clone(), Some((p.value.clone(), p.lease)))),
        (Command::DeleteRange(d), _) => {
            for k in model.keys() {
                if read::key_matches(k, &d.key, &d.range_end) {
                    writes.push((k.clone(), None));
                }
            }
        }
        (Command::Txn(t), CommandResponse::Txn(r)) => {
            let ops = if r.succeeded { &t.success } else { &t.failure };
            for op in ops {
                match &op.request {
                    Some(PbTxnOpRequest::RequestPut(p)) => {
                        writes.push((p.key.clone(), Some((p.value.clone(), p.lease))))
                    }
                    Some(PbTxnOpRequest::RequestDeleteRange(d)) if model.contains_key(&d.key) => {
                        writes.push((d.key.clone(), None))
                    }
                    _ => {}
                }
            }
        }
        (Command::LeaseGrant { id, .. }, _) => {
            leased.insert(*id, vec![]);
        }
        (Command::LeaseRevoke { id }, _) => {
            for (k, v) in model.iter() {
                if v.4 == *id {
                    writes.push((k.clone(), None));
                }
            }
            leased.remove(id);
        }
        _ => {}
    }
    if writes.is_empty() {
        return;
    }
    *rev += 1;
    for (k, w) in writes {
        match w {
            Some((value, lease)) => {
                let (create, version) = match model.get(&k) {
                    Some(old) => (old.1, old.3 + 1),
                    None => (*rev, 1),
                };
                model.insert(k, (value, create, *rev, version, lease));
            }
            None => {
                model.remove(&k);
            }
        }
    }
}

#[test]
fn random_commands_match_a_model_and_are_deterministic() {
    for seed in 0..4u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut a = engine();
        let mut b = engine();
        let mut model = Model::new();
        let mut rev = 1;
        let mut leased: BTreeMap<i64, Vec<Vec<u8>>> = BTreeMap::new();
        let mut history: Vec<(i64, Vec<PbKeyValue>)> = Vec::new();
        for step in 0..400 {
            let ids: Vec<i64> = leased.keys().copied().collect();
            let cmd = random_command(&mut rng, &ids);
            let ra = a.apply(&cmd, Some((b"applied", &[step as u8]))).unwrap();
            let rb = b.apply(&cmd, Some((b"applied", &[step as u8]))).unwrap();
            assert_eq!(ra, rb, "seed {seed} step {step}");
            model_apply(&mut model, &mut rev, &mut leased, &cmd, &ra);
            assert_eq!(a.revision(), rev, "seed {seed} step {step}: {cmd:?}");
            let got = all(&a);
            let want: Vec<PbKeyValue> = model
                .iter()
                .map(|(k, v)| PbKeyValue {
                    key: k.clone(),
                    value: v.0.clone(),
                    create_revision: v.1,
                    mod_revision: v.2,
                    version: v.3,
                    lease: v.4,
                })
                .collect();
            assert_eq!(got, want, "seed {seed} step {step}: {cmd:?}");
            if history.last().map(|h| h.0) != Some(rev) {
                history.push((rev, got));
            }
            // Some old revision still readable reads as it was.
            let old = rng.gen_range(0..history.len());
            let (at, kvs) = &history[old];
            let r = a.range(&PbRangeRequest {
                revision: *at,
                ..rreq("\0", "\0")
            });
            if *at < a.compact_revision() {
                assert_eq!(r, Err(EtcdError::Compacted));
            } else {
                assert_eq!(&r.unwrap().kvs, kvs, "seed {seed} step {step} at {at}");
            }
            // Leases' keys match the keys' lease fields.
            for (id, _) in a.leases() {
                let want: Vec<Vec<u8>> = model
                    .iter()
                    .filter(|(_, v)| v.4 == id)
                    .map(|(k, _)| k.clone())
                    .collect();
                assert_eq!(a.lease(id).unwrap().keys, want);
            }
        }
        assert_eq!(a.snapshot().unwrap(), b.snapshot().unwrap());
        // Replaying every event since compaction on top of the state at the compaction
        // revision gives the current state.
        let start = a.compact_revision().max(1);
        let mut state: BTreeMap<Vec<u8>, PbKeyValue> = a
            .range(&PbRangeRequest {
                revision: start,
                ..rreq("\0", "\0")
            })
            .unwrap()
            .kvs
            .into_iter()
            .map(|kv| (kv.key.clone(), kv))
            .collect();
        for e in watch(&a, "\0", "\0", start + 1, true) {
            let kv = e.kv.unwrap();
            if e.r#type == 0 {
                if kv.version > 1 {
                    assert_eq!(e.prev_kv.as_ref(), state.get(&kv.key));
                } else {
                    assert_eq!(e.prev_kv, None);
                }
                state.insert(kv.key.clone(), kv);
            } else {
                assert_eq!(e.prev_kv.as_ref(), state.get(&kv.key));
                state.remove(&kv.key);
            }
        }
        assert_eq!(state.into_values().collect::<Vec<_>>(), all(&a));
        // And a restored copy continues identically.
        let mut c = engine();
        c.restore(&a.snapshot().unwrap()).unwrap();
        same_state(&a, &c);
    }
}

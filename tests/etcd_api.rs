//! The etcd v3 API of the store, driven through the `etcd-client` crate against a 3-member
//! cluster with mutual TLS, through the leader and through a follower.
//!
//! Every assertion is what etcd does (checked by running this file against real etcd with
//! `KL_ETCD_BIN=/usr/bin/etcd`); where etcd 3.4 and 3.5 differ, the test asserts 3.5 and
//! accepts 3.4 only from a server that reports version 3.4.x.

mod common;

use std::time::Duration;

use common::{
    keys, kv_key, kv_value, leader_and_follower, retry_unhealthy, rev, run, start, values,
};
use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, EventType, GetOptions, LeaseGrantOptions,
    LeaseTimeToLiveOptions, MemberAddOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
    TxnOpResponse, WatchFilterType, WatchOptions, WatchResponse, WatchStream,
};
use testkit::{
    grpc::{expect_code, expect_status, Code},
    wait_until, EtcdCluster, EtcdOpts,
};

type R = anyhow::Result<()>;

const MSG_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `suite` once through the leader and once through a follower, each under its own key
/// prefix.
macro_rules! on_leader_and_follower {
    ($c:expr, $suite:ident) => {{
        let (l, f) = leader_and_follower($c).await?;
        for (member, tag) in [(l, "leader"), (f, "follower")] {
            let mut client = $c.client_for(member).await?;
            $suite(&mut client, &format!("/{tag}/"))
                .await
                .map_err(|e| e.context(format!("through the {tag} (member {member})")))?;
        }
        Ok(())
    }};
}

// ---------------------------------------------------------------------------------------------
// KV: Range, Put, DeleteRange and the MVCC fields.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_range_put_delete() {
    let mut c = start(3, EtcdOpts::default()).await;
    run(
        &mut c,
        |c| async move { on_leader_and_follower!(c, kv_suite) },
    )
    .await;
}

async fn kv_suite(cl: &mut Client, p: &str) -> R {
    let k = |s: &str| format!("{p}{s}");

    // Put, prev_kv, revisions.
    let r1 = rev(cl.put(k("a"), "1", None).await?.header())?;
    let put2 = cl
        .put(k("a"), "2", Some(PutOptions::new().with_prev_key()))
        .await?;
    assert_eq!(rev(put2.header())?, r1 + 1, "each put is one revision");
    let prev = put2.prev_key().expect("prev_kv requested");
    assert_eq!(
        (kv_value(prev).as_str(), prev.mod_revision(), prev.version()),
        ("1", r1, 1)
    );
    let put3 = cl.put(k("a"), "3", None).await?;
    assert!(put3.prev_key().is_none(), "prev_kv not requested");
    let r3 = rev(put3.header())?;

    // MVCC fields.
    let g = cl.get(k("a"), None).await?;
    assert_eq!(g.count(), 1);
    let kv = &g.kvs()[0];
    assert_eq!(kv_value(kv), "3");
    assert_eq!(kv.create_revision(), r1);
    assert_eq!(kv.mod_revision(), r3);
    assert_eq!(kv.version(), 3);
    assert_eq!(kv.lease(), 0);
    assert!(rev(g.header())? >= r3);

    // Reads at an old revision.
    let old = cl
        .get(k("a"), Some(GetOptions::new().with_revision(r1)))
        .await?;
    assert_eq!(values(&old), ["1"]);
    assert_eq!(old.kvs()[0].version(), 1);
    assert_eq!(old.kvs()[0].mod_revision(), r1);
    let before = cl
        .get(k("a"), Some(GetOptions::new().with_revision(r1 - 1)))
        .await?;
    assert_eq!(
        before.count(),
        0,
        "the key did not exist before its creation"
    );

    // Delete with prev_kv; a re-created key starts over at version 1.
    let del = cl
        .delete(k("a"), Some(DeleteOptions::new().with_prev_key()))
        .await?;
    assert_eq!(del.deleted(), 1);
    assert_eq!(del.prev_kvs().len(), 1);
    assert_eq!(kv_value(&del.prev_kvs()[0]), "3");
    let rdel = rev(del.header())?;
    assert_eq!(rdel, r3 + 1);
    assert_eq!(cl.get(k("a"), None).await?.count(), 0);
    let del_again = cl.delete(k("a"), None).await?;
    assert_eq!(del_again.deleted(), 0);
    assert_eq!(
        rev(del_again.header())?,
        rdel,
        "deleting nothing does not create a revision"
    );
    let r4 = rev(cl.put(k("a"), "4", None).await?.header())?;
    let kv = cl.get(k("a"), None).await?.kvs()[0].clone();
    assert_eq!(
        (kv.create_revision(), kv.mod_revision(), kv.version()),
        (r4, r4, 1)
    );

    // Prefix, ranges, limit, keys_only, count_only, sort.
    for (key, val) in [
        ("p/1", "c"),
        ("p/2", "a"),
        ("p/3", "b"),
        ("p0", "x"),
        ("q", "y"),
    ] {
        cl.put(k(key), val, None).await?;
    }
    let pre = cl
        .get(k("p/"), Some(GetOptions::new().with_prefix()))
        .await?;
    assert_eq!(keys(&pre), [k("p/1"), k("p/2"), k("p/3")], "sorted by key");
    assert_eq!((pre.count(), pre.more()), (3, false));

    let lim = cl
        .get(k("p/"), Some(GetOptions::new().with_prefix().with_limit(2)))
        .await?;
    assert_eq!(keys(&lim), [k("p/1"), k("p/2")]);
    assert_eq!(
        (lim.count(), lim.more()),
        (3, true),
        "count is the full range"
    );

    let range = cl
        .get(k("p/1"), Some(GetOptions::new().with_range(k("p/3"))))
        .await?;
    assert_eq!(keys(&range), [k("p/1"), k("p/2")], "range_end is exclusive");

    let from = cl
        .get(
            k("p/2"),
            Some(GetOptions::new().with_from_key().with_limit(3)),
        )
        .await?;
    assert_eq!(keys(&from), [k("p/2"), k("p/3"), k("p0")]);

    let ko = cl
        .get(
            k("p/"),
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await?;
    assert_eq!(keys(&ko), [k("p/1"), k("p/2"), k("p/3")]);
    assert!(ko.kvs().iter().all(|kv| kv.value().is_empty()), "keys_only");
    assert!(
        ko.kvs().iter().all(|kv| kv.mod_revision() > 0),
        "keys_only keeps revisions"
    );

    let co = cl
        .get(
            k("p/"),
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await?;
    assert!(co.kvs().is_empty(), "count_only returns no kvs");
    assert_eq!(co.count(), 3);

    let by_value = cl
        .get(
            k("p/"),
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_sort(SortTarget::Value, SortOrder::Ascend),
            ),
        )
        .await?;
    assert_eq!(values(&by_value), ["a", "b", "c"]);
    let key_desc = cl
        .get(
            k("p/"),
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_sort(SortTarget::Key, SortOrder::Descend),
            ),
        )
        .await?;
    assert_eq!(keys(&key_desc), [k("p/3"), k("p/2"), k("p/1")]);
    cl.put(k("p/1"), "c2", None).await?;
    let by_mod = cl
        .get(
            k("p/"),
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_sort(SortTarget::Mod, SortOrder::Descend)
                    .with_limit(2),
            ),
        )
        .await?;
    assert_eq!(
        keys(&by_mod),
        [k("p/1"), k("p/3")],
        "sorted before the limit"
    );
    let by_version = cl
        .get(
            k("p/"),
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_sort(SortTarget::Version, SortOrder::Descend),
            ),
        )
        .await?;
    assert_eq!(kv_key(&by_version.kvs()[0]), k("p/1"));
    let by_create = cl
        .get(
            k("p/"),
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_sort(SortTarget::Create, SortOrder::Descend),
            ),
        )
        .await?;
    assert_eq!(keys(&by_create), [k("p/3"), k("p/2"), k("p/1")]);

    // A range whose end is before its start is empty, not an error (etcd).
    let inverted = cl
        .get(k("q"), Some(GetOptions::new().with_range(k("p/"))))
        .await?;
    assert_eq!(inverted.count(), 0);

    // Serializable reads are served locally and catch up.
    let rlast = rev(cl.put(k("s"), "serial", None).await?.header())?;
    let seen = wait_until(
        "a serializable read to see the latest write",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            let mut cl = cl.clone();
            let key = k("s");
            async move {
                let g = cl
                    .get(key, Some(GetOptions::new().with_serializable()))
                    .await?;
                Ok((g.count() == 1).then(|| g.kvs()[0].mod_revision()))
            }
        },
    )
    .await?;
    assert_eq!(seen, rlast);

    // Leases on puts: lease, ignore_lease, ignore_value.
    let l1 = cl.lease_grant(300, None).await?.id();
    let l2 = cl.lease_grant(300, None).await?.id();
    cl.put(k("l"), "v1", Some(PutOptions::new().with_lease(l1)))
        .await?;
    let kv = cl.get(k("l"), None).await?.kvs()[0].clone();
    assert_eq!(kv.lease(), l1);
    cl.put(k("l"), "v2", Some(PutOptions::new().with_ignore_lease()))
        .await?;
    let kv = cl.get(k("l"), None).await?.kvs()[0].clone();
    assert_eq!(
        (kv_value(&kv).as_str(), kv.lease()),
        ("v2", l1),
        "ignore_lease keeps the lease"
    );
    cl.put(k("l"), "v2", None).await?;
    let kv = cl.get(k("l"), None).await?.kvs()[0].clone();
    assert_eq!(kv.lease(), 0, "a plain put detaches the lease");
    cl.put(
        k("l"),
        "",
        Some(PutOptions::new().with_ignore_value().with_lease(l2)),
    )
    .await?;
    let kv = cl.get(k("l"), None).await?.kvs()[0].clone();
    assert_eq!(
        (kv_value(&kv).as_str(), kv.lease(), kv.version()),
        ("v2", l2, 4),
        "ignore_value keeps the value and still makes a new version"
    );
    cl.lease_revoke(l1).await?;
    cl.lease_revoke(l2).await?;
    assert_eq!(
        cl.get(k("l"), None).await?.count(),
        0,
        "revoke deleted the key"
    );

    // DeleteRange over a prefix with prev_kv.
    let d = cl
        .delete(
            k("p/"),
            Some(DeleteOptions::new().with_prefix().with_prev_key()),
        )
        .await?;
    assert_eq!(d.deleted(), 3);
    let mut prev: Vec<String> = d.prev_kvs().iter().map(kv_key).collect();
    prev.sort();
    assert_eq!(prev, [k("p/1"), k("p/2"), k("p/3")]);
    assert_eq!(
        keys(
            &cl.get(k("p"), Some(GetOptions::new().with_prefix()))
                .await?
        ),
        [k("p0")]
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Txn: every compare target, both branches, nested transactions.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_compares_and_nested_ops() {
    let mut c = start(3, EtcdOpts::default()).await;
    run(
        &mut c,
        |c| async move { on_leader_and_follower!(c, txn_suite) },
    )
    .await;
}

async fn txn_suite(cl: &mut Client, p: &str) -> R {
    let k = |s: &str| format!("{p}{s}");
    let ra = rev(cl.put(k("a"), "1", None).await?.header())?;
    let lease = cl.lease_grant(300, None).await?.id();
    cl.put(k("l"), "x", Some(PutOptions::new().with_lease(lease)))
        .await?;

    // (compare, expected outcome)
    let cases: Vec<(&str, Compare, bool)> = vec![
        (
            "value ==",
            Compare::value(k("a"), CompareOp::Equal, "1"),
            true,
        ),
        (
            "value !=",
            Compare::value(k("a"), CompareOp::NotEqual, "1"),
            false,
        ),
        (
            "value >",
            Compare::value(k("a"), CompareOp::Greater, "0"),
            true,
        ),
        (
            "value <",
            Compare::value(k("a"), CompareOp::Less, "0"),
            false,
        ),
        (
            "version ==",
            Compare::version(k("a"), CompareOp::Equal, 1),
            true,
        ),
        (
            "version >",
            Compare::version(k("a"), CompareOp::Greater, 1),
            false,
        ),
        (
            "create_revision ==",
            Compare::create_revision(k("a"), CompareOp::Equal, ra),
            true,
        ),
        (
            "create_revision <",
            Compare::create_revision(k("a"), CompareOp::Less, ra),
            false,
        ),
        (
            "mod_revision <",
            Compare::mod_revision(k("a"), CompareOp::Less, ra + 1),
            true,
        ),
        (
            "mod_revision !=",
            Compare::mod_revision(k("a"), CompareOp::NotEqual, ra),
            false,
        ),
        (
            "lease ==",
            Compare::lease(k("l"), CompareOp::Equal, lease),
            true,
        ),
        (
            "lease == 0",
            Compare::lease(k("a"), CompareOp::Equal, 0),
            true,
        ),
        (
            "lease != 0",
            Compare::lease(k("l"), CompareOp::NotEqual, 0),
            true,
        ),
        (
            "lease wrong",
            Compare::lease(k("a"), CompareOp::Equal, lease),
            false,
        ),
        // A missing key has version 0 and create_revision 0: the create-if-absent idiom.
        (
            "missing version == 0",
            Compare::version(k("missing"), CompareOp::Equal, 0),
            true,
        ),
        (
            "missing create_revision == 0",
            Compare::create_revision(k("missing"), CompareOp::Equal, 0),
            true,
        ),
        (
            "existing create_revision == 0",
            Compare::create_revision(k("a"), CompareOp::Equal, 0),
            false,
        ),
        (
            "missing mod_revision == 0",
            Compare::mod_revision(k("missing"), CompareOp::Equal, 0),
            true,
        ),
    ];
    for (name, cmp, expect) in cases {
        let t = cl
            .txn(
                Txn::new()
                    .when([cmp])
                    .and_then([TxnOp::put(k("out"), "then", None)])
                    .or_else([TxnOp::put(k("out"), "else", None)]),
            )
            .await?;
        assert_eq!(t.succeeded(), expect, "compare {name}");
        let out = cl.get(k("out"), None).await?;
        assert_eq!(
            values(&out),
            [if expect { "then" } else { "else" }],
            "compare {name}: branch applied"
        );
    }

    // Several compares are ANDed.
    let t = cl
        .txn(Txn::new().when([
            Compare::value(k("a"), CompareOp::Equal, "1"),
            Compare::version(k("a"), CompareOp::Equal, 2),
        ]))
        .await?;
    assert!(!t.succeeded(), "all compares must hold");

    // Success branch with every op type, including a nested txn; one revision for all.
    cl.put(k("c"), "gone soon", None).await?;
    let before = rev(cl.get(k("a"), None).await?.header())?;
    let t = cl
        .txn(
            Txn::new()
                .when([Compare::value(k("a"), CompareOp::Equal, "1")])
                .and_then([
                    TxnOp::get(k("a"), None),
                    TxnOp::put(k("b"), "x", Some(PutOptions::new().with_prev_key())),
                    TxnOp::delete(k("c"), Some(DeleteOptions::new().with_prev_key())),
                    TxnOp::txn(
                        Txn::new()
                            .when([Compare::version(k("a"), CompareOp::Equal, 1)])
                            .and_then([TxnOp::put(k("d"), "nested-then", None)])
                            .or_else([TxnOp::put(k("d"), "nested-else", None)]),
                    ),
                ])
                .or_else([TxnOp::put(k("e"), "never", None)]),
        )
        .await?;
    assert!(t.succeeded());
    let after = rev(t.header())?;
    assert_eq!(after, before + 1, "a txn is one revision");
    let ops = t.op_responses();
    assert_eq!(ops.len(), 4);
    match &ops[0] {
        TxnOpResponse::Get(g) => assert_eq!(values(g), ["1"]),
        other => panic!("expected a range response, got {other:?}"),
    }
    match &ops[1] {
        TxnOpResponse::Put(p) => assert!(p.prev_key().is_none(), "b did not exist"),
        other => panic!("expected a put response, got {other:?}"),
    }
    match &ops[2] {
        TxnOpResponse::Delete(d) => {
            assert_eq!(d.deleted(), 1);
            assert_eq!(kv_value(&d.prev_kvs()[0]), "gone soon");
        }
        other => panic!("expected a delete response, got {other:?}"),
    }
    match &ops[3] {
        TxnOpResponse::Txn(n) => {
            assert!(n.succeeded(), "nested compare");
            assert_eq!(n.op_responses().len(), 1);
        }
        other => panic!("expected a txn response, got {other:?}"),
    }
    let b = cl.get(k("b"), None).await?;
    let d = cl.get(k("d"), None).await?;
    assert_eq!(values(&d), ["nested-then"]);
    assert_eq!(b.kvs()[0].mod_revision(), after);
    assert_eq!(d.kvs()[0].mod_revision(), after);
    assert_eq!(cl.get(k("c"), None).await?.count(), 0);
    assert_eq!(
        cl.get(k("e"), None).await?.count(),
        0,
        "failure branch not applied"
    );

    // Failure branch.
    let t = cl
        .txn(
            Txn::new()
                .when([Compare::value(k("a"), CompareOp::Equal, "nope")])
                .and_then([TxnOp::put(k("f"), "then", None)])
                .or_else([TxnOp::put(k("f"), "else", None), TxnOp::get(k("f"), None)]),
        )
        .await?;
    assert!(!t.succeeded());
    let ops = t.op_responses();
    assert_eq!(ops.len(), 2);
    match &ops[1] {
        TxnOpResponse::Get(g) => assert_eq!(values(g), ["else"], "ops see earlier ops"),
        other => panic!("expected a range response, got {other:?}"),
    }

    // A read-only txn does not create a revision.
    let r_before = rev(cl.get(k("a"), None).await?.header())?;
    let t = cl
        .txn(Txn::new().and_then([TxnOp::get(k("a"), None)]))
        .await?;
    assert_eq!(rev(t.header())?, r_before);

    cl.lease_revoke(lease).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Compaction.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_and_compacted_errors() {
    let mut c = start(3, EtcdOpts::default()).await;
    run(&mut c, |c| async move {
        on_leader_and_follower!(c, compaction_suite)
    })
    .await;
}

async fn compaction_suite(cl: &mut Client, p: &str) -> R {
    let k = |s: &str| format!("{p}{s}");
    let r1 = rev(cl.put(k("c"), "1", None).await?.header())?;
    let r2 = rev(cl.put(k("c"), "2", None).await?.header())?;
    let r3 = rev(cl.put(k("c"), "3", None).await?.header())?;

    expect_status(
        "compact at a future revision",
        cl.compact(r3 + 100, None).await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision is a future revision",
    )?;
    expect_status(
        "range at a future revision",
        cl.get(k("c"), Some(GetOptions::new().with_revision(r3 + 100)))
            .await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision is a future revision",
    )?;

    cl.compact(r2, None).await?;
    expect_status(
        "range below the compacted revision",
        cl.get(k("c"), Some(GetOptions::new().with_revision(r1)))
            .await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    )?;
    let at = cl
        .get(k("c"), Some(GetOptions::new().with_revision(r2)))
        .await?;
    assert_eq!(
        values(&at),
        ["2"],
        "the compaction revision itself is readable"
    );
    assert_eq!(values(&cl.get(k("c"), None).await?), ["3"]);
    expect_status(
        "compact again at the same revision",
        cl.compact(r2, None).await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    )?;
    expect_status(
        "compact at an older revision",
        cl.compact(r1, None).await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    )?;
    // The latest version of a key survives compaction, with its MVCC fields.
    let kv = cl.get(k("c"), None).await?.kvs()[0].clone();
    assert_eq!(
        (kv.create_revision(), kv.mod_revision(), kv.version()),
        (r1, r3, 3)
    );

    // A watch from a compacted revision: created, then canceled with compact_revision.
    let mut ws = cl
        .watch(k("c"), Some(WatchOptions::new().with_start_revision(r1)))
        .await?;
    let created = next_msg(&mut ws).await?;
    assert!(created.created(), "first the create response: {created:?}");
    let canceled = next_msg(&mut ws).await?;
    assert!(canceled.canceled(), "then the cancel: {canceled:?}");
    assert_eq!(canceled.compact_revision(), r2);
    assert_eq!(canceled.watch_id(), created.watch_id());
    assert!(canceled.events().is_empty());

    // Physical compaction answers after the compaction is applied.
    let r4 = rev(cl.put(k("c"), "4", None).await?.header())?;
    cl.compact(
        r4,
        Some(etcd_client::CompactionOptions::new().with_physical()),
    )
    .await?;
    expect_status(
        "range below a physical compaction",
        cl.get(k("c"), Some(GetOptions::new().with_revision(r3)))
            .await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Watch.

async fn next_msg(ws: &mut WatchStream) -> anyhow::Result<WatchResponse> {
    match tokio::time::timeout(MSG_TIMEOUT, ws.message()).await {
        Ok(Ok(Some(m))) => Ok(m),
        Ok(Ok(None)) => anyhow::bail!("watch stream ended"),
        Ok(Err(e)) => anyhow::bail!("watch stream error: {e}"),
        Err(_) => anyhow::bail!("no watch response within {MSG_TIMEOUT:?}"),
    }
}

/// (watch id, event type, key, value, mod revision, prev value)
type Ev = (i64, EventType, String, String, i64, Option<String>);

fn events_of(m: &WatchResponse) -> Vec<Ev> {
    m.events()
        .iter()
        .map(|e| {
            let kv = e.kv().expect("event with a kv");
            (
                m.watch_id(),
                e.event_type(),
                kv_key(kv),
                kv_value(kv),
                kv.mod_revision(),
                e.prev_kv().map(kv_value),
            )
        })
        .collect()
}

/// Reads responses until `done` holds for the events gathered so far.
async fn gather(
    ws: &mut WatchStream,
    evs: &mut Vec<Ev>,
    done: impl Fn(&[Ev]) -> bool,
) -> anyhow::Result<()> {
    while !done(evs) {
        let m = next_msg(ws).await?;
        anyhow::ensure!(!m.canceled(), "unexpected cancel: {m:?}");
        evs.extend(events_of(&m));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams() {
    let mut c = start(3, EtcdOpts::default()).await;
    run(&mut c, |c| async move {
        on_leader_and_follower!(c, watch_suite)
    })
    .await;
}

async fn watch_suite(cl: &mut Client, p: &str) -> R {
    let k = |s: &str| format!("{p}{s}");
    let r0 = rev(cl.put(k("w/a"), "0", None).await?.header())?;

    // Three watches on one stream: a key with prev_kv, a prefix, a prefix without puts.
    let mut ws = cl
        .watch(k("w/a"), Some(WatchOptions::new().with_prev_key()))
        .await?;
    let m = next_msg(&mut ws).await?;
    assert!(m.created() && !m.canceled());
    let id_key = m.watch_id();
    assert!(
        rev(m.header())? >= r0,
        "a member answers a write only once it applied it, so its watch starts after it"
    );
    ws.watch(k("w/"), Some(WatchOptions::new().with_prefix()))
        .await?;
    let m = next_msg(&mut ws).await?;
    assert!(m.created());
    let id_prefix = m.watch_id();
    ws.watch(
        k("w/"),
        Some(
            WatchOptions::new()
                .with_prefix()
                .with_filters([WatchFilterType::NoPut]),
        ),
    )
    .await?;
    let m = next_msg(&mut ws).await?;
    assert!(m.created());
    let id_nodel = m.watch_id();
    ws.watch(
        k("w/"),
        Some(
            WatchOptions::new()
                .with_prefix()
                .with_filters([WatchFilterType::NoDelete])
                .with_progress_notify(),
        ),
    )
    .await?;
    let m = next_msg(&mut ws).await?;
    assert!(m.created(), "progress_notify is accepted");
    let id_noput_del = m.watch_id();
    let ids = [id_key, id_prefix, id_nodel, id_noput_del];
    let mut uniq = ids.to_vec();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), 4, "distinct watch ids on one stream: {ids:?}");

    let r1 = rev(cl.put(k("w/a"), "1", None).await?.header())?;
    let r2 = rev(cl.put(k("w/b"), "x", None).await?.header())?;
    let r3 = rev(cl.delete(k("w/a"), None).await?.header())?;
    let r4 = rev(cl.put(k("w/c"), "y", None).await?.header())?;
    let r_outside = rev(cl.put(k("x/outside"), "z", None).await?.header())?;

    let mut evs = Vec::new();
    gather(&mut ws, &mut evs, |e| {
        e.iter().any(|x| x.0 == id_prefix && x.4 == r4)
            && e.iter().any(|x| x.0 == id_noput_del && x.4 == r4)
            && e.iter().any(|x| x.0 == id_key && x.4 == r3)
            && e.iter().any(|x| x.0 == id_nodel && x.4 == r3)
    })
    .await?;
    let of = |id: i64| -> Vec<(EventType, String, i64, Option<String>)> {
        evs.iter()
            .filter(|x| x.0 == id)
            .map(|x| (x.1, x.2.clone(), x.4, x.5.clone()))
            .collect()
    };
    assert_eq!(
        of(id_key),
        vec![
            (EventType::Put, k("w/a"), r1, Some("0".into())),
            (EventType::Delete, k("w/a"), r3, Some("1".into())),
        ],
        "key watch with prev_kv"
    );
    assert_eq!(
        of(id_prefix),
        vec![
            (EventType::Put, k("w/a"), r1, None),
            (EventType::Put, k("w/b"), r2, None),
            (EventType::Delete, k("w/a"), r3, None),
            (EventType::Put, k("w/c"), r4, None),
        ],
        "prefix watch: every event once, in revision order"
    );
    assert_eq!(
        of(id_nodel),
        vec![(EventType::Delete, k("w/a"), r3, None)],
        "NOPUT filter"
    );
    assert_eq!(
        of(id_noput_del)
            .into_iter()
            .map(|e| (e.0, e.2))
            .collect::<Vec<_>>(),
        vec![
            (EventType::Put, r1),
            (EventType::Put, r2),
            (EventType::Put, r4)
        ],
        "NODELETE filter"
    );
    let deleted = evs
        .iter()
        .find(|x| x.0 == id_prefix && x.1 == EventType::Delete);
    assert_eq!(
        deleted.map(|x| x.3.as_str()),
        Some(""),
        "a delete event has an empty value"
    );

    // Progress request: an empty response carrying the current revision.
    ws.request_progress().await?;
    let m = loop {
        let m = next_msg(&mut ws).await?;
        if m.events().is_empty() {
            break m;
        }
    };
    assert!(!m.created() && !m.canceled(), "progress response: {m:?}");
    assert_eq!(m.watch_id(), -1, "progress responses carry watch id -1");
    assert_eq!(rev(m.header())?, r_outside, "the member's current revision");

    // Cancel: a canceled response for that id, and no more events for it.
    ws.cancel(id_prefix).await?;
    let m = next_msg(&mut ws).await?;
    assert!(m.canceled(), "cancel response: {m:?}");
    assert_eq!(m.watch_id(), id_prefix);
    let r5 = rev(cl.put(k("w/a"), "5", None).await?.header())?;
    let mut evs = Vec::new();
    gather(&mut ws, &mut evs, |e| {
        e.iter().any(|x| x.0 == id_noput_del && x.4 == r5)
    })
    .await?;
    gather(&mut ws, &mut evs, |e| {
        e.iter().any(|x| x.0 == id_key && x.4 == r5)
    })
    .await?;
    assert!(
        evs.iter().all(|x| x.0 != id_prefix),
        "events after cancel: {evs:?}"
    );

    // A watch id chosen by the client, and a duplicate of it on the same stream.
    ws.watch(k("w/a"), Some(WatchOptions::new().with_watch_id(7000)))
        .await?;
    let m = next_msg(&mut ws).await?;
    assert!(m.created() && !m.canceled());
    assert_eq!(m.watch_id(), 7000);
    ws.watch(k("w/b"), Some(WatchOptions::new().with_watch_id(7000)))
        .await?;
    let m = next_msg(&mut ws).await?;
    assert!(m.created() && m.canceled(), "duplicate id refused: {m:?}");
    assert_eq!(
        m.cancel_reason(),
        "mvcc: duplicate watch ID provided on the WatchStream"
    );
    drop(ws);

    // Replay: a new stream from r1 gets the history, in order, exactly once.
    let mut ws = cl
        .watch(
            k("w/"),
            Some(WatchOptions::new().with_prefix().with_start_revision(r1)),
        )
        .await?;
    let m = next_msg(&mut ws).await?;
    assert!(m.created());
    let mut evs = events_of(&m);
    gather(&mut ws, &mut evs, |e| e.iter().any(|x| x.4 == r5)).await?;
    let got: Vec<(EventType, i64)> = evs.iter().map(|x| (x.1, x.4)).collect();
    assert_eq!(
        got,
        vec![
            (EventType::Put, r1),
            (EventType::Put, r2),
            (EventType::Delete, r3),
            (EventType::Put, r4),
            (EventType::Put, r5),
        ],
        "replay from start_revision"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Lease.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases() {
    let mut c = start(3, EtcdOpts::default()).await;
    run(&mut c, |c| async move {
        on_leader_and_follower!(c, lease_suite)
    })
    .await;
}

async fn lease_suite(cl: &mut Client, p: &str) -> R {
    let k = |s: &str| format!("{p}{s}");
    let g = cl.lease_grant(60, None).await?;
    let id = g.id();
    assert!(id > 0);
    assert_eq!(g.ttl(), 60);
    assert_eq!(g.error(), "");

    // A lease id chosen by the client, and a duplicate.
    let chosen = 0x10_0000 + i64::from(p.len() as u32);
    let g2 = cl
        .lease_grant(60, Some(LeaseGrantOptions::new().with_id(chosen)))
        .await?;
    assert_eq!(g2.id(), chosen);
    expect_status(
        "grant an existing lease id",
        cl.lease_grant(60, Some(LeaseGrantOptions::new().with_id(chosen)))
            .await,
        Code::FailedPrecondition,
        "etcdserver: lease already exists",
    )?;
    cl.lease_revoke(chosen).await?;

    cl.put(k("l/1"), "a", Some(PutOptions::new().with_lease(id)))
        .await?;
    cl.put(k("l/2"), "b", Some(PutOptions::new().with_lease(id)))
        .await?;

    let ttl = cl
        .lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await?;
    assert_eq!(ttl.id(), id);
    assert_eq!(ttl.granted_ttl(), 60);
    assert!(
        ttl.ttl() > 0 && ttl.ttl() <= 60,
        "remaining ttl {}",
        ttl.ttl()
    );
    let mut attached: Vec<String> = ttl
        .keys()
        .iter()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    attached.sort();
    assert_eq!(attached, [k("l/1"), k("l/2")]);
    let no_keys = cl.lease_time_to_live(id, None).await?;
    assert!(no_keys.keys().is_empty(), "keys only when asked");

    let all = cl.leases().await?;
    assert!(
        all.leases().iter().any(|l| l.id() == id),
        "Leases lists the lease"
    );

    // KeepAlive on a stream, twice.
    let (mut keeper, mut stream) = cl.lease_keep_alive(id).await?;
    for _ in 0..2 {
        keeper.keep_alive().await?;
        let resp = tokio::time::timeout(MSG_TIMEOUT, stream.message())
            .await
            .map_err(|_| anyhow::anyhow!("no keep-alive response"))??
            .ok_or_else(|| anyhow::anyhow!("keep-alive stream ended"))?;
        assert_eq!(resp.id(), id);
        assert_eq!(
            resp.ttl(),
            60,
            "keep-alive resets the ttl to the granted one"
        );
    }
    drop(keeper);

    // Revoke deletes the attached keys.
    let rv = cl.lease_revoke(id).await?;
    assert!(rev(rv.header())? > 0);
    assert_eq!(
        cl.get(k("l/"), Some(GetOptions::new().with_prefix()))
            .await?
            .count(),
        0
    );
    let gone = cl.lease_time_to_live(id, None).await?;
    assert_eq!(gone.ttl(), -1, "a revoked lease has ttl -1");

    // Expiry deletes the attached keys (decided by the leader, applied everywhere).
    let short = cl.lease_grant(2, None).await?;
    assert!(short.ttl() >= 2);
    cl.put(
        k("exp"),
        "v",
        Some(PutOptions::new().with_lease(short.id())),
    )
    .await?;
    wait_until(
        "the key of an expired lease to be deleted",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let mut cl = cl.clone();
            let key = k("exp");
            async move { Ok((cl.get(key, None).await?.count() == 0).then_some(())) }
        },
    )
    .await?;
    assert_eq!(cl.lease_time_to_live(short.id(), None).await?.ttl(), -1);
    assert!(
        !cl.leases()
            .await?
            .leases()
            .iter()
            .any(|l| l.id() == short.id()),
        "an expired lease is not listed"
    );

    // Unknown lease ids.
    let unknown = 0x7777_0000_0000_0001;
    expect_status(
        "revoke an unknown lease",
        cl.lease_revoke(unknown).await,
        Code::NotFound,
        "etcdserver: requested lease not found",
    )?;
    expect_status(
        "put with an unknown lease",
        cl.put(k("u"), "v", Some(PutOptions::new().with_lease(unknown)))
            .await,
        Code::NotFound,
        "etcdserver: requested lease not found",
    )?;
    assert_eq!(cl.lease_time_to_live(unknown, None).await?.ttl(), -1);
    // etcd answers a keep-alive of an unknown lease with TTL 0, which etcd-client reports so:
    match cl.lease_keep_alive(unknown).await {
        Err(etcd_client::Error::LeaseKeepAliveError(m)) => assert_eq!(m, "lease not found"),
        Err(e) => anyhow::bail!("keep-alive of an unknown lease: unexpected error {e}"),
        Ok(_) => anyhow::bail!("keep-alive of an unknown lease succeeded"),
    }
    assert_eq!(cl.get(k("u"), None).await?.count(), 0);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Cluster membership.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_membership() {
    let mut c = start(3, EtcdOpts::default()).await;
    run(&mut c, membership_body).await;
}

async fn membership_body(c: &mut EtcdCluster) -> R {
    let (_, f) = leader_and_follower(c).await?;
    let mut cl = c.client_for(f).await?;

    // MemberList: names, URLs, ids as Status reports them.
    let list = cl.member_list().await?;
    assert_eq!(list.members().len(), 3);
    for i in 0..3 {
        let m = list
            .members()
            .iter()
            .find(|m| m.name() == c.name(i))
            .ok_or_else(|| anyhow::anyhow!("{} not listed", c.name(i)))?;
        assert_eq!(m.peer_urls(), [c.peer_url(i)]);
        assert_eq!(m.client_urls(), [c.client_url(i)]);
        assert!(!m.is_learner());
        let st = c.status(i).await?;
        assert_eq!(st.header().map(|h| h.member_id()), Some(m.id()));
    }

    // Errors.
    expect_status(
        "remove an unknown member",
        cl.member_remove(0x1234).await,
        Code::NotFound,
        "etcdserver: member not found",
    )?;
    expect_status(
        "promote an unknown member",
        cl.member_promote(0x1234).await,
        Code::NotFound,
        "etcdserver: member not found",
    )?;
    expect_status(
        "promote a voter",
        cl.member_promote(list.members()[0].id()).await,
        Code::FailedPrecondition,
        "etcdserver: can only promote a learner member",
    )?;
    expect_status(
        "add with invalid URLs",
        cl.member_add(["not a url"], None).await,
        Code::InvalidArgument,
        "etcdserver: given member URLs are invalid",
    )?;
    let existing = c.peer_url(0);
    let r = retry_unhealthy("add an existing peer URL", &cl, |mut cl| {
        let u = existing.clone();
        async move { cl.member_add([u], None).await }
    })
    .await;
    match r {
        Ok(v) => anyhow::bail!("adding an existing peer URL succeeded: {v:?}"),
        Err(e) => assert!(
            e.to_string()
                .contains("etcdserver: Peer URLs already exists"),
            "{e}"
        ),
    }

    // A learner: added, started, refused writes, promoted, removed.
    let slot = c.add_slot();
    let url = c.peer_url(slot);
    let added = retry_unhealthy("add a learner", &cl, |mut cl| {
        let u = url.clone();
        async move {
            cl.member_add([u], Some(MemberAddOptions::new().with_is_learner()))
                .await
        }
    })
    .await?;
    let m = added.member().expect("the added member");
    assert!(m.is_learner());
    assert_eq!(m.peer_urls(), std::slice::from_ref(&url));
    assert_eq!(m.name(), "", "not started yet");
    let learner_id = m.id();
    assert_eq!(added.member_list().len(), 4);
    expect_status(
        "promote a learner that has not caught up",
        cl.member_promote(learner_id).await,
        Code::FailedPrecondition,
        "etcdserver: can only promote a learner member which is in sync with leader",
    )?;
    expect_status(
        "a second learner",
        cl.member_add(
            [format!("https://127.0.0.1:{}", testkit::free_port())],
            Some(MemberAddOptions::new().with_is_learner()),
        )
        .await,
        Code::FailedPrecondition,
        "etcdserver: too many learner members in cluster",
    )?;
    c.add_member_process(slot).await?;
    let st = c.status(slot).await?;
    assert!(st.is_learner(), "Status of a learner says so");
    assert_eq!(st.header().map(|h| h.member_id()), Some(learner_id));
    let mut lc = c.client_for(slot).await?;
    // etcd 3.5 says FailedPrecondition; 3.4 said Unavailable with the same text.
    let learner_code = if testkit::grpc::is_etcd34(st.version()) {
        Code::Unavailable
    } else {
        Code::FailedPrecondition
    };
    expect_status(
        "a write through a learner",
        lc.put("/learner-write", "v", None).await,
        learner_code,
        "etcdserver: rpc not supported for learner",
    )?;
    let promote = {
        let cl = cl.clone();
        wait_until(
            "the learner to be promotable",
            Duration::from_secs(60),
            Duration::from_millis(500),
            move || {
                let mut cl = cl.clone();
                async move {
                    match cl.member_promote(learner_id).await {
                        Ok(r) => Ok(Some(r)),
                        Err(e) if e.to_string().contains("in sync with leader") => Ok(None),
                        Err(e) => Err(e.into()),
                    }
                }
            },
        )
        .await?
    };
    let promoted = promote
        .members()
        .iter()
        .find(|m| m.id() == learner_id)
        .expect("promoted member listed");
    assert!(!promoted.is_learner());
    let list = cl.member_list().await?;
    let named = list.members().iter().find(|m| m.id() == learner_id);
    assert_eq!(
        named.map(|m| m.name()),
        Some(c.name(slot)),
        "a started member has its name"
    );
    let removed = retry_unhealthy("remove the promoted member", &cl, |mut cl| async move {
        cl.member_remove(learner_id).await
    })
    .await?;
    assert!(removed.members().iter().all(|m| m.id() != learner_id));
    assert_eq!(removed.members().len(), 3);
    c.kill9(slot);

    // A voter that is added and removed without ever starting.
    let slot2 = c.add_slot();
    let url2 = c.peer_url(slot2);
    let added = retry_unhealthy("add a voter", &cl, |mut cl| {
        let u = url2.clone();
        async move { cl.member_add([u], None).await }
    })
    .await?;
    let m = added.member().expect("the added member");
    assert!(!m.is_learner());
    let vid = m.id();
    let list = cl.member_list().await?;
    assert_eq!(list.members().len(), 4);
    let removed = retry_unhealthy("remove the unstarted voter", &cl, |mut cl| async move {
        cl.member_remove(vid).await
    })
    .await?;
    assert_eq!(removed.members().len(), 3);

    // The cluster still works.
    let mut any = c.client().await?;
    any.put("/after-membership", "ok", None).await?;
    assert_eq!(values(&any.get("/after-membership", None).await?), ["ok"]);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Maintenance.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_status_alarms_health_metrics() {
    let mut c = start(3, EtcdOpts::default()).await;
    run(&mut c, maintenance_body).await;
}

async fn maintenance_body(c: &mut EtcdCluster) -> R {
    let (l, _) = leader_and_follower(c).await?;
    let leader_id = c.member_id(l).await?;
    let mut cl = c.client().await?;
    let written = rev(cl.put("/maint", "v", None).await?.header())?;
    for i in 0..3 {
        let st = wait_until(
            "a member to have applied the write",
            Duration::from_secs(10),
            Duration::from_millis(50),
            || async {
                let st = c.status(i).await?;
                Ok((rev(st.header())? >= written).then_some(st))
            },
        )
        .await?;
        let h = st.header().expect("header");
        assert_eq!(h.member_id(), c.member_id(i).await?);
        assert_ne!(h.cluster_id(), 0);
        assert!(!st.version().is_empty(), "version");
        assert!(
            st.version().starts_with("3."),
            "an etcd v3 version: {}",
            st.version()
        );
        assert!(st.db_size() > 0, "dbSize");
        assert_eq!(st.leader(), leader_id, "member {i} names the leader");
        assert!(st.raft_term() >= 1);
        assert!(st.raft_index() > 0);
        assert!(st.raft_applied_index() > 0);
        assert!(!st.is_learner());
        assert!(st.errors().is_empty(), "errors: {:?}", st.errors());

        let mut mc = c.client_for(i).await?;
        let alarms = mc
            .alarm(
                etcd_client::AlarmAction::Get,
                etcd_client::AlarmType::None,
                None,
            )
            .await?;
        assert!(alarms.alarms().is_empty(), "no alarms: {alarms:?}");
    }
    // /health and /metrics on --listen-metrics-urls.
    for i in 0..3 {
        let (code, body) = common::http_get(&format!("{}/health", c.metrics_url(i))).await?;
        assert_eq!(code, 200, "member {i} /health: {body}");
        assert!(
            body.contains(r#""health":"true""#),
            "member {i} /health: {body}"
        );
        let (code, metrics) = common::http_get(&format!("{}/metrics", c.metrics_url(i))).await?;
        assert_eq!(code, 200);
        assert!(
            metrics.lines().any(|l| l == "etcd_server_has_leader 1"),
            "member {i}: etcd_server_has_leader 1"
        );
        for name in [
            "etcd_server_leader_changes_seen_total",
            "etcd_server_proposals_committed_total",
            "etcd_mvcc_db_total_size_in_bytes",
        ] {
            assert!(
                metrics.lines().any(|l| l.starts_with(&format!("{name} "))),
                "member {i}: /metrics has no {name}"
            );
            assert!(
                metrics.contains(&format!("# TYPE {name} ")),
                "member {i}: {name} has no # TYPE line"
            );
        }
    }

    // The raft index moves with writes.
    let before = c.status(l).await?.raft_index();
    cl.put("/maint", "w", None).await?;
    let after = c.status(l).await?.raft_index();
    assert!(after > before, "raft index {before} -> {after}");

    // etcd-lite only (etcd implements these): what it does not implement says so, by name.
    if testkit::etcd_bin()?.file_name() == Some("etcd-lite".as_ref()) {
        expect_status(
            "Defragment",
            cl.defragment().await,
            Code::Unimplemented,
            "etcd-lite does not implement Maintenance.Defragment",
        )?;
        expect_status(
            "Hash",
            cl.hash().await,
            Code::Unimplemented,
            "etcd-lite does not implement Maintenance.Hash",
        )?;
        // ... and the member is unharmed.
        cl.put("/maint", "after-unimplemented", None).await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Bad input: the exact etcd status, the member stays up, the store is untouched.

const MAX_REQUEST_BYTES: u64 = 64 * 1024;
const MAX_TXN_OPS: u64 = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_exactly() {
    let mut c = start(
        3,
        EtcdOpts::default()
            .max_request_bytes(MAX_REQUEST_BYTES)
            .max_txn_ops(MAX_TXN_OPS),
    )
    .await;
    run(&mut c, bad_input_body).await;
}

async fn bad_input_body(c: &mut EtcdCluster) -> R {
    let (l, f) = leader_and_follower(c).await?;
    for (member, tag) in [(l, "leader"), (f, "follower")] {
        let mut cl = c.client_for(member).await?;
        bad_input_suite(&mut cl, &format!("/{tag}/"))
            .await
            .map_err(|e| e.context(format!("through the {tag} (member {member})")))?;
    }
    // Every member is still up and agrees on a leader.
    for i in 0..3 {
        anyhow::ensure!(c.is_running(i), "member {i} died");
    }
    c.wait_for_leader(Duration::from_secs(10)).await?;
    Ok(())
}

async fn bad_input_suite(cl: &mut Client, p: &str) -> R {
    let k = |s: &str| format!("{p}{s}");
    // Limits are inclusive: these succeed.
    let ops: Vec<TxnOp> = (0..MAX_TXN_OPS)
        .map(|i| TxnOp::put(k(&format!("t{i}")), "v", None))
        .collect();
    cl.txn(Txn::new().and_then(ops)).await?;
    cl.put(
        k("big"),
        vec![b'x'; (MAX_REQUEST_BYTES - 1024) as usize],
        None,
    )
    .await?;

    let snapshot = cl.get(p, Some(GetOptions::new().with_prefix())).await?;
    let rev_before = rev(snapshot.header())?;

    expect_status(
        "a request over --max-request-bytes",
        cl.put(
            k("big"),
            vec![b'y'; (MAX_REQUEST_BYTES + 1024) as usize],
            None,
        )
        .await,
        Code::InvalidArgument,
        "etcdserver: request is too large",
    )?;
    // Far over the limit (beyond the 512 KiB gRPC overhead etcd allows on top of it), the gRPC
    // layer refuses the message itself; its text is the gRPC library's, so only the code counts.
    expect_code(
        "a request far over --max-request-bytes",
        cl.put(
            k("big"),
            vec![b'z'; (MAX_REQUEST_BYTES + 600 * 1024) as usize],
            None,
        )
        .await,
        Code::ResourceExhausted,
    )?;

    let too_many: Vec<TxnOp> = (0..=MAX_TXN_OPS)
        .map(|i| TxnOp::put(k(&format!("u{i}")), "v", None))
        .collect();
    expect_status(
        "a txn over --max-txn-ops (success ops)",
        cl.txn(Txn::new().and_then(too_many.clone())).await,
        Code::InvalidArgument,
        "etcdserver: too many operations in txn request",
    )?;
    expect_status(
        "a txn over --max-txn-ops (failure ops)",
        cl.txn(Txn::new().or_else(too_many)).await,
        Code::InvalidArgument,
        "etcdserver: too many operations in txn request",
    )?;
    let cmps: Vec<Compare> = (0..=MAX_TXN_OPS)
        .map(|i| Compare::version(k(&format!("u{i}")), CompareOp::Equal, 0))
        .collect();
    expect_status(
        "a txn over --max-txn-ops (compares)",
        cl.txn(Txn::new().when(cmps)).await,
        Code::InvalidArgument,
        "etcdserver: too many operations in txn request",
    )?;

    let empty = "etcdserver: key is not provided";
    expect_status(
        "put of an empty key",
        cl.put("", "v", None).await,
        Code::InvalidArgument,
        empty,
    )?;
    expect_status(
        "range of an empty key",
        cl.get("", None).await,
        Code::InvalidArgument,
        empty,
    )?;
    expect_status(
        "delete of an empty key",
        cl.delete("", None).await,
        Code::InvalidArgument,
        empty,
    )?;
    expect_status(
        "txn put of an empty key",
        cl.txn(Txn::new().and_then([TxnOp::put("", "v", None)]))
            .await,
        Code::InvalidArgument,
        empty,
    )?;
    expect_status(
        "txn compare on an empty key",
        cl.txn(Txn::new().when([Compare::value("", CompareOp::Equal, "v")]))
            .await,
        Code::InvalidArgument,
        empty,
    )?;

    let unknown_lease = 0x5555_0000_0000_0001;
    expect_status(
        "put with an unknown lease",
        cl.put(
            k("l"),
            "v",
            Some(PutOptions::new().with_lease(unknown_lease)),
        )
        .await,
        Code::NotFound,
        "etcdserver: requested lease not found",
    )?;
    expect_status(
        "txn put with an unknown lease",
        cl.txn(Txn::new().and_then([TxnOp::put(
            k("l"),
            "v",
            Some(PutOptions::new().with_lease(unknown_lease)),
        )]))
        .await,
        Code::NotFound,
        "etcdserver: requested lease not found",
    )?;

    let dup = "etcdserver: duplicate key given in txn request";
    expect_status(
        "two puts of one key in a txn",
        cl.txn(Txn::new().and_then([TxnOp::put(k("d"), "1", None), TxnOp::put(k("d"), "2", None)]))
            .await,
        Code::InvalidArgument,
        dup,
    )?;
    expect_status(
        "a put inside a deleted range in a txn",
        cl.txn(Txn::new().and_then([
            TxnOp::put(k("d/1"), "1", None),
            TxnOp::delete(k("d/"), Some(DeleteOptions::new().with_prefix())),
        ]))
        .await,
        Code::InvalidArgument,
        dup,
    )?;
    expect_status(
        "two puts of one key in a txn's failure ops",
        cl.txn(Txn::new().or_else([TxnOp::put(k("d"), "1", None), TxnOp::put(k("d"), "2", None)]))
            .await,
        Code::InvalidArgument,
        dup,
    )?;
    expect_status(
        "a put of one key in a txn and in its nested txn",
        cl.txn(Txn::new().and_then([
            TxnOp::put(k("d"), "1", None),
            TxnOp::txn(Txn::new().and_then([TxnOp::put(k("d"), "2", None)])),
        ]))
        .await,
        Code::InvalidArgument,
        dup,
    )?;
    // The same key in the success and the failure branch is fine: only one branch runs.
    let ok = cl
        .txn(
            Txn::new()
                .when([Compare::version(k("never"), CompareOp::Greater, 0)])
                .and_then([TxnOp::put(k("d"), "1", None)])
                .or_else([TxnOp::get(k("d"), None)]),
        )
        .await?;
    assert!(!ok.succeeded());

    expect_status(
        "a range at a future revision",
        cl.get(
            k("t0"),
            Some(GetOptions::new().with_revision(rev_before + 1000)),
        )
        .await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision is a future revision",
    )?;
    expect_status(
        "ignore_value on a missing key",
        cl.put(k("nokey"), "", Some(PutOptions::new().with_ignore_value()))
            .await,
        Code::InvalidArgument,
        "etcdserver: key not found",
    )?;
    expect_status(
        "ignore_lease on a missing key",
        cl.put(k("nokey"), "v", Some(PutOptions::new().with_ignore_lease()))
            .await,
        Code::InvalidArgument,
        "etcdserver: key not found",
    )?;
    expect_status(
        "ignore_value with a value",
        cl.put(k("t0"), "v2", Some(PutOptions::new().with_ignore_value()))
            .await,
        Code::InvalidArgument,
        "etcdserver: value is provided",
    )?;
    let lease = cl.lease_grant(60, None).await?.id();
    expect_status(
        "ignore_lease with a lease",
        cl.put(
            k("t0"),
            "v2",
            Some(PutOptions::new().with_ignore_lease().with_lease(lease)),
        )
        .await,
        Code::InvalidArgument,
        "etcdserver: lease is provided",
    )?;
    cl.lease_revoke(lease).await?;

    // Untouched: same keys, values and revisions; the lease grant/revoke above changed no key.
    let after = cl.get(p, Some(GetOptions::new().with_prefix())).await?;
    let summary = |r: &etcd_client::GetResponse| -> Vec<(String, usize, i64, i64)> {
        r.kvs()
            .iter()
            .map(|kv| {
                (
                    kv_key(kv),
                    kv.value().len(),
                    kv.mod_revision(),
                    kv.version(),
                )
            })
            .collect()
    };
    assert_eq!(
        summary(&after),
        summary(&snapshot),
        "the store is untouched"
    );
    assert_eq!(rev(after.header())?, rev_before, "no revision was created");
    Ok(())
}

//! The store when members die: leader kill, every member killed under load, a wiped member
//! re-added through a snapshot, and quorum loss. Every wait is bounded; nothing here measures
//! speed (that is `scripts/bench store`).

mod common;

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use common::{kv_key, kv_value, leader_and_follower, retry_unhealthy, rev, run, start, SETTLE};
use etcd_client::{Client, GetOptions, PutOptions};
use testkit::{
    grpc::{is_etcd34, status_of, Code},
    wait_until, EtcdCluster, EtcdOpts,
};

type R = anyhow::Result<()>;

/// One request's bound in these tests; a member that does not answer within it is hung.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// All keys and values under a prefix (linearizable unless `serializable`).
async fn dump(
    cl: &mut Client,
    prefix: &str,
    serializable: bool,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut opts = GetOptions::new().with_prefix();
    if serializable {
        opts = opts.with_serializable();
    }
    let r = tokio::time::timeout(REQUEST_TIMEOUT, cl.get(prefix, Some(opts)))
        .await
        .map_err(|_| anyhow::anyhow!("range {prefix} did not answer in {REQUEST_TIMEOUT:?}"))??;
    Ok(r.kvs()
        .iter()
        .map(|kv| (kv_key(kv), kv_value(kv)))
        .collect())
}

async fn put_bounded(cl: &mut Client, k: &str, v: &str) -> anyhow::Result<i64> {
    let r = tokio::time::timeout(REQUEST_TIMEOUT, cl.put(k, v, None))
        .await
        .map_err(|_| anyhow::anyhow!("put {k} did not answer in {REQUEST_TIMEOUT:?}"))??;
    rev(r.header())
}

/// Waits until member `i` serves `key` = `value` from its own state (a serializable read).
async fn wait_serves(c: &EtcdCluster, i: usize, key: &str, value: &str, timeout: Duration) -> R {
    let cl = c.client_for(i).await?;
    wait_until(
        &format!("member {i} to serve {key}={value} locally"),
        timeout,
        Duration::from_millis(100),
        || {
            let mut cl = cl.clone();
            async move {
                let got = dump(&mut cl, key, true).await?;
                Ok((got.get(key).map(String::as_str) == Some(value)).then_some(()))
            }
        },
    )
    .await
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_leader_elects_new_leader_and_old_one_catches_up() {
    let mut c = start(3, EtcdOpts::fast()).await;
    run(&mut c, kill_leader_body).await;
}

async fn kill_leader_body(c: &mut EtcdCluster) -> R {
    let old = c.wait_for_leader(SETTLE).await?;
    let mut cl = c.client().await?;
    for i in 0..20 {
        put_bounded(&mut cl, &format!("/kl/before/{i:02}"), "v").await?;
    }
    // A lease with keys: a new leader must extend it rather than expire it.
    let lease = cl.lease_grant(10, None).await?.id();
    cl.put("/kl/leased", "v", Some(PutOptions::new().with_lease(lease)))
        .await?;
    // Let most of the TTL pass before the failover, so that "not extended" would show.
    tokio::time::sleep(Duration::from_secs(5)).await;

    c.kill9(old);
    let survivors: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let new = c.wait_for_leader_among(&survivors, SETTLE).await?;
    assert_ne!(new, old);
    let mut sc = c.client_for(new).await?;
    let ttl = sc.lease_time_to_live(lease, None).await?;
    assert!(
        ttl.ttl() >= 7,
        "the new leader extends leases by an election timeout (remaining {}s of 10s, \
         ~5s after the grant; without the extension it would be <= 5s)",
        ttl.ttl()
    );
    assert_eq!(dump(&mut sc, "/kl/leased", false).await?.len(), 1);
    sc.lease_revoke(lease).await?;

    let mut last = String::new();
    for &s in &survivors {
        let mut sc = c.client_for(s).await?;
        for i in 0..10 {
            let k = format!("/kl/after/{s}/{i:02}");
            put_bounded(&mut sc, &k, "v")
                .await
                .map_err(|e| e.context(format!("write through survivor {s}")))?;
            last = k;
        }
    }

    // The killed member comes back with the same flags and data dir and catches up.
    c.restart(old)?;
    wait_serves(c, old, &last, "v", SETTLE).await?;
    c.wait_for_leader(SETTLE).await?;
    let mut oc = c.client_for(old).await?;
    let mine = dump(&mut oc, "/kl/", true).await?;
    let theirs = dump(&mut sc, "/kl/", false).await?;
    assert_eq!(mine, theirs, "the restarted member has every key");
    assert_eq!(mine.len(), 20 + 20);
    Ok(())
}

// ---------------------------------------------------------------------------------------------

const WRITERS: usize = 8;
const MAX_WRITES_PER_WRITER: usize = 5000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_all_members_under_load_loses_no_acknowledged_write() {
    let mut c = start(3, EtcdOpts::fast()).await;
    run(&mut c, kill_all_body).await;
}

async fn kill_all_body(c: &mut EtcdCluster) -> R {
    c.wait_for_leader(SETTLE).await?;
    let opts = c.connect_options().with_timeout(Duration::from_secs(5));
    let all: Vec<usize> = (0..3).collect();
    let cl = c.client_with(&all, opts).await?;
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let mut cl = cl.clone();
        let acked = acked.clone();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            for seq in 0..MAX_WRITES_PER_WRITER {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let k = format!("/load/{w}/{seq:05}");
                let v = format!("{w}-{seq}");
                match tokio::time::timeout(
                    Duration::from_secs(5),
                    cl.put(k.as_str(), v.as_str(), None),
                )
                .await
                {
                    Ok(Ok(_)) => acked.lock().unwrap_or_else(|e| e.into_inner()).push((k, v)),
                    // Failed or timed out: unknown outcome, not acknowledged.
                    _ => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }));
    }

    // Kill every member once a few hundred writes are acknowledged, mid-load.
    wait_until(
        "300 acknowledged writes",
        Duration::from_secs(60),
        Duration::from_millis(20),
        || async {
            Ok((acked.lock().unwrap_or_else(|e| e.into_inner()).len() >= 300).then_some(()))
        },
    )
    .await?;
    for i in 0..3 {
        c.kill9(i);
    }
    // Let the writers see the failures for a moment, then stop them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        tokio::time::timeout(Duration::from_secs(15), w)
            .await
            .map_err(|_| anyhow::anyhow!("a writer did not stop"))??;
    }
    drop(cl);
    let acked = acked.lock().unwrap_or_else(|e| e.into_inner()).clone();

    for i in 0..3 {
        c.restart(i)?;
    }
    c.wait_for_leader(SETTLE).await?;
    let mut cl = c.client().await?;
    let stored = dump(&mut cl, "/load/", false).await?;
    let lost: Vec<&(String, String)> = acked
        .iter()
        .filter(|(k, v)| stored.get(k) != Some(v))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost, e.g. {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
    // And the cluster takes writes again.
    put_bounded(&mut cl, "/load/after", "ok").await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------

/// etcd keeps 5000 log entries after a snapshot for slow followers (SnapshotCatchUpEntries), so
/// a member that starts from nothing needs a snapshot only after more than that many entries.
const SNAPSHOT_WRITES: usize = 6000;
const SNAPSHOT_KEYS: usize = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_member_is_readded_and_catches_up_by_snapshot() {
    let mut c = start(3, EtcdOpts::fast().snapshot_count(100)).await;
    run(&mut c, wipe_body).await;
}

async fn wipe_body(c: &mut EtcdCluster) -> R {
    let (_, victim) = leader_and_follower(c).await?;
    let others: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    let cl = c.client_with(&others, c.connect_options()).await?;

    // Enough writes that the log was compacted far past the start.
    let mut tasks = Vec::new();
    for t in 0..16 {
        let mut cl = cl.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = t;
            while i < SNAPSHOT_WRITES {
                put_bounded(
                    &mut cl,
                    &format!("/snap/{:04}", i % SNAPSHOT_KEYS),
                    &format!("{i}"),
                )
                .await?;
                i += 16;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(180), t)
            .await
            .map_err(|_| anyhow::anyhow!("the write load did not finish"))???;
    }
    let mut cl = cl;
    put_bounded(&mut cl, "/snap/marker", "before-wipe").await?;
    let expected = dump(&mut cl, "/snap/", false).await?;
    assert_eq!(expected.len(), SNAPSHOT_KEYS + 1);

    // Wipe: stop, delete the data dir, remove from the cluster, add back, start as "existing".
    let old_id = c.member_id(victim).await?;
    c.kill9(victim);
    c.wipe_data(victim)?;
    retry_unhealthy("remove the wiped member", &cl, |mut cl| async move {
        cl.member_remove(old_id).await
    })
    .await?;
    let url = c.peer_url(victim);
    let added = retry_unhealthy("add the wiped member back", &cl, |mut cl| {
        let u = url.clone();
        async move { cl.member_add([u], None).await }
    })
    .await?;
    let new_id = added.member().map(|m| m.id()).unwrap_or_default();
    assert_ne!(new_id, old_id, "a re-added member gets a new id");
    c.add_member_process(victim).await?;

    wait_serves(
        c,
        victim,
        "/snap/marker",
        "before-wipe",
        Duration::from_secs(90),
    )
    .await?;
    let mut vc = c.client_for(victim).await?;
    let served = dump(&mut vc, "/snap/", true).await?;
    assert_eq!(served, expected, "the re-added member serves every key");
    let st = c.status(victim).await?;
    assert_eq!(st.header().map(|h| h.member_id()), Some(new_id));

    // It is a full member again: it takes writes and follows new ones.
    put_bounded(&mut vc, "/snap/after", "through-readded").await?;
    c.wait_for_leader(SETTLE).await?;
    for i in 0..3 {
        wait_serves(c, i, "/snap/after", "through-readded", SETTLE).await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_loss_fails_with_a_clear_error_then_recovers() {
    let mut c = start(3, EtcdOpts::fast()).await;
    run(&mut c, quorum_body).await;
}

/// Whether an error is the "clear error" a client must get when the cluster has no quorum:
/// etcd's own Unavailable (`etcdserver: no leader`, `etcdserver: request timed out`, ...) or a
/// server-side DeadlineExceeded. A client-side timeout (the server never answered) is not.
fn check_no_quorum_error(what: &str, e: &etcd_client::Error, etcd34: bool) -> R {
    let s = status_of(e).ok_or_else(|| anyhow::anyhow!("{what}: not a gRPC status: {e:?}"))?;
    let msg = s.message();
    let clear = match s.code() {
        Code::Unavailable => msg.starts_with("etcdserver: "),
        Code::DeadlineExceeded => {
            msg.contains("deadline") || msg.contains("timed out") || msg.contains("no leader")
        }
        // etcd 3.4 reports a request whose context ran out with code Unknown.
        Code::Unknown => etcd34 && msg == "context deadline exceeded",
        _ => false,
    };
    anyhow::ensure!(
        clear,
        "{what}: expected Unavailable \"etcdserver: ...\" (etcd says \"etcdserver: no leader\" or \
         \"etcdserver: request timed out\"), got {:?} {msg:?}",
        s.code()
    );
    Ok(())
}

async fn quorum_body(c: &mut EtcdCluster) -> R {
    let (l, survivor) = leader_and_follower(c).await?;
    let other = (0..3).find(|&i| i != l && i != survivor).unwrap_or(l);
    let etcd34 = is_etcd34(c.status(survivor).await?.version());
    let mut cl = c.client().await?;
    let mut acked = BTreeMap::new();
    for i in 0..50 {
        let (k, v) = (format!("/q/{i:02}"), format!("v{i}"));
        put_bounded(&mut cl, &k, &v).await?;
        acked.insert(k, v);
    }
    drop(cl);
    wait_serves(c, survivor, "/q/49", "v49", SETTLE).await?;

    c.kill9(l);
    c.kill9(other);

    // The survivor knows it has no leader.
    let st = wait_until(
        "the survivor to report no leader",
        SETTLE,
        Duration::from_millis(100),
        || async {
            let st = c.status(survivor).await?;
            Ok((st.leader() == 0).then_some(st))
        },
    )
    .await?;
    assert!(
        st.errors().iter().any(|e| e == "etcdserver: no leader"),
        "Status.errors names the missing leader: {:?}",
        st.errors()
    );

    // /health says so too, with a 503 as etcd.
    let (code, body) = common::http_get(&format!("{}/health", c.metrics_url(survivor))).await?;
    assert_eq!(code, 503, "/health without a leader: {body}");
    assert!(
        body.contains(r#""health":"false""#),
        "/health without a leader: {body}"
    );

    // Writes and linearizable reads fail with a clear error, not a hang: the client gives the
    // server REQUEST_TIMEOUT, the test gives the call twice that.
    let opts = c.connect_options().with_timeout(REQUEST_TIMEOUT);
    let mut sc = c.client_with(&[survivor], opts).await?;
    let bound = REQUEST_TIMEOUT * 2;
    let put = tokio::time::timeout(bound, sc.put("/q/lost", "x", None))
        .await
        .map_err(|_| anyhow::anyhow!("a put without quorum hung for {bound:?}"))?;
    match put {
        Ok(r) => anyhow::bail!("a put without quorum succeeded: {r:?}"),
        Err(e) => check_no_quorum_error("put without quorum", &e, etcd34)?,
    }
    let get = tokio::time::timeout(bound, sc.get("/q/00", None))
        .await
        .map_err(|_| anyhow::anyhow!("a linearizable read without quorum hung for {bound:?}"))?;
    match get {
        Ok(r) => anyhow::bail!("a linearizable read without quorum succeeded: {r:?}"),
        Err(e) => check_no_quorum_error("linearizable read without quorum", &e, etcd34)?,
    }
    // With the require-leader metadata etcd answers at once: Unavailable "etcdserver: no leader".
    let mut rl = c
        .client_with(
            &[survivor],
            c.connect_options()
                .with_timeout(REQUEST_TIMEOUT)
                .with_require_leader(true),
        )
        .await?;
    let put = tokio::time::timeout(bound, rl.put("/q/lost", "x", None))
        .await
        .map_err(|_| anyhow::anyhow!("a require-leader put hung for {bound:?}"))?;
    testkit::grpc::expect_status(
        "a require-leader put without a leader",
        put,
        Code::Unavailable,
        "etcdserver: no leader",
    )?;
    // Serializable reads are still served from the survivor's state.
    let local = dump(&mut sc, "/q/", true).await?;
    assert_eq!(local, acked, "serializable reads are local");

    // One member back: quorum again, service resumes, nothing acknowledged is lost.
    c.restart(l)?;
    c.wait_for_leader_among(&[l, survivor], SETTLE).await?;
    let mut sc = c.client_for(survivor).await?;
    put_bounded(&mut sc, "/q/after", "ok").await?;
    acked.insert("/q/after".into(), "ok".into());
    let mut stored = dump(&mut sc, "/q/", false).await?;
    // The refused put's outcome is unknown to the client; it may or may not be there.
    stored.remove("/q/lost");
    assert_eq!(stored, acked, "no acknowledged write lost");

    c.restart(other)?;
    wait_serves(c, other, "/q/after", "ok", SETTLE).await?;
    c.wait_for_leader(SETTLE).await?;
    Ok(())
}

//! Periodic etcd compaction, as kube-apiserver does it (`storage/etcd3/compact.go`): every
//! `--etcd-compaction-interval`, each apiserver tries a compare-and-swap on the key
//! `compact_rev_key` (outside the prefix, the same key kube-apiserver uses, so a mixed fleet
//! still compacts once per interval). The one whose CAS wins records the current revision
//! and compacts up to the revision recorded one interval earlier, so every client had at
//! least one interval to read what is being dropped. The others just learn the key's version.

use std::time::Duration;

use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use tokio::sync::watch;

use crate::etcd::{Etcd, EtcdError};

/// The coordination key (kube-apiserver's).
pub const COMPACT_REV_KEY: &str = "compact_rev_key";

/// One round: `version` is the key's version seen last round, `rev` the revision recorded
/// then. Returns the new (version, revision) and whether this apiserver compacted.
pub async fn compact_once(
    etcd: &Etcd,
    version: i64,
    rev: i64,
) -> Result<(i64, i64, bool), EtcdError> {
    let txn = Txn::new()
        .when(vec![Compare::version(
            COMPACT_REV_KEY,
            CompareOp::Equal,
            version,
        )])
        .and_then(vec![TxnOp::put(COMPACT_REV_KEY, rev.to_string(), None)])
        .or_else(vec![TxnOp::get(COMPACT_REV_KEY, None)]);
    let (resp, _) = etcd
        .call("compact", "compact_rev_key", |mut c| {
            let t = txn.clone();
            async move { c.txn(t).await }
        })
        .await?;
    let cur_rev = resp.header().map(|h| h.revision()).unwrap_or_default();
    if !resp.succeeded() {
        let seen = resp
            .op_responses()
            .into_iter()
            .find_map(|r| match r {
                TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.version()),
                _ => None,
            })
            .unwrap_or(0);
        return Ok((seen, cur_rev, false));
    }
    let next_version = version + 1;
    // The first round only records a revision: nothing is compacted at start.
    if rev == 0 {
        return Ok((next_version, cur_rev, false));
    }
    match etcd
        .call("compact", "compact_rev_key", |mut c| async move {
            c.compact(rev, None).await
        })
        .await
    {
        Ok(_) | Err(EtcdError::Compacted(_)) => Ok((next_version, cur_rev, true)),
        Err(e) => Err(e),
    }
}

/// Compacts every `interval` until `stop`; an interval of 0 disables compaction.
pub async fn run(etcd: std::sync::Arc<Etcd>, interval: Duration, mut stop: watch::Receiver<bool>) {
    if interval.is_zero() {
        tracing::info!("etcd compaction disabled (--etcd-compaction-interval=0)");
        return;
    }
    let (mut version, mut rev) = (0i64, 0i64);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = crate::run::stopped(&mut stop) => return,
        }
        match compact_once(&etcd, version, rev).await {
            Ok((v, r, compacted)) => {
                if compacted {
                    tracing::info!(revision = rev, "compacted etcd");
                }
                version = v;
                rev = r;
            }
            Err(e) => tracing::warn!(error = %e, "etcd compaction failed; retrying next interval"),
        }
    }
}

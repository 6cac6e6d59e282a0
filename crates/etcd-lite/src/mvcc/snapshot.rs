//! Whole-state snapshots, and rebuilding the in-memory state from the tree.
//!
//! A snapshot is the `mvcc` tree itself, entry by entry, since the tree *is* the state (the
//! index and lease attachments are derived from it):
//!
//! ```text
//! magic "etcd-lite/mvcc-snapshot/1\n"
//! entries: key len (u32 BE), key, value len (u32 BE), value   — in key order
//! end:     u32::MAX, entry count (u64 BE), SHA-256 of everything before it
//! ```
//!
//! Length-prefixed entries can be written and read as a stream; the trailer catches
//! truncation and corruption before anything is replaced. Restoring validates the whole
//! snapshot (and rebuilds the index from it) first, then replaces the tree in one batch.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::index::{KeyIndex, Rev};
use super::layout::{self, LEASE_PREFIX, MEMBER_PREFIX, META_PREFIX, REV_PREFIX, STATE_PREFIX};
use super::watch::Ring;
use super::{Lease, MemberAttrs, Mvcc, State, StoreError};

const MAGIC: &[u8] = b"etcd-lite/mvcc-snapshot/1\n";
const END: u32 = u32::MAX;

/// Serializes every entry of `tree` but compacted records not yet deleted (`garbage`,
/// ascending), so a snapshot depends only on the store's logical state.
pub(crate) fn dump(tree: &sled::Tree, garbage: &VecDeque<Rev>) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(MAGIC.len() + 64);
    out.extend_from_slice(MAGIC);
    let mut count = 0u64;
    let mut garbage = garbage.iter().peekable();
    for item in tree.iter() {
        let (k, v) = item?;
        if let Some(rev) = layout::parse_rev_key(&k) {
            // Both ascend in revision order: a merge walk.
            while garbage.next_if(|g| **g < rev).is_some() {}
            if garbage.next_if(|g| **g == rev).is_some() {
                continue;
            }
        }
        for part in [&k[..], &v[..]] {
            let len = u32::try_from(part.len())
                .ok()
                .filter(|l| *l != END)
                .ok_or_else(|| StoreError::Corrupt("entry too large to snapshot".into()))?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(part);
        }
        count += 1;
    }
    out.extend_from_slice(&END.to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    Ok(out)
}

/// A snapshot's entries, borrowed from its bytes.
type Entries<'a> = Vec<(&'a [u8], &'a [u8])>;

/// Parses and verifies a snapshot into its entries.
fn parse(data: &[u8]) -> Result<Entries<'_>, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("snapshot: {what}"));
    let body = data
        .strip_prefix(MAGIC)
        .ok_or_else(|| corrupt("not an etcd-lite mvcc snapshot"))?;
    if data.len() < MAGIC.len() + 32 {
        return Err(corrupt("truncated"));
    }
    let (signed, digest) = data.split_at(data.len() - 32);
    if Sha256::digest(signed).as_slice() != digest {
        return Err(corrupt("checksum mismatch"));
    }
    let mut rest = &body[..body.len() - 32];
    let mut take = |n: usize| -> Result<&[u8], StoreError> {
        if rest.len() < n {
            return Err(corrupt("truncated"));
        }
        let (a, b) = rest.split_at(n);
        rest = b;
        Ok(a)
    };
    let mut entries = Vec::new();
    loop {
        let len = u32::from_be_bytes(take(4)?.try_into().map_err(|_| corrupt("length"))?);
        if len == END {
            let count = u64::from_be_bytes(take(8)?.try_into().map_err(|_| corrupt("count"))?);
            if count != entries.len() as u64 {
                return Err(corrupt("entry count mismatch"));
            }
            break;
        }
        let key = take(len as usize)?;
        let vlen = u32::from_be_bytes(take(4)?.try_into().map_err(|_| corrupt("length"))?);
        let value = take(vlen as usize)?;
        entries.push((key, value));
    }
    if !rest.is_empty() {
        return Err(corrupt("trailing bytes"));
    }
    if entries.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(corrupt("entries out of order"));
    }
    Ok(entries)
}

/// Rebuilds the in-memory state from the tree's entries, in key order (so revision records
/// come in revision order).
pub(crate) fn load<K, V, I>(entries: I) -> Result<State, StoreError>
where
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
    I: IntoIterator<Item = Result<(K, V), StoreError>>,
{
    let mut index: BTreeMap<Arc<[u8]>, KeyIndex> = BTreeMap::new();
    let mut leases = BTreeMap::new();
    let mut members = BTreeMap::new();
    let mut rev = None;
    let mut last_record = 0;
    let mut compact_rev = -1;
    // Deletes whose generation's puts are already gone: compacted, not yet deleted.
    let mut orphans = Vec::new();
    for entry in entries {
        let (k, v) = entry?;
        let (k, v) = (k.as_ref(), v.as_ref());
        match k.first() {
            Some(&REV_PREFIX) => {
                let r = layout::parse_rev_key(k)
                    .ok_or_else(|| StoreError::Corrupt("bad revision key".into()))?;
                let rec = layout::decode_record(v)?;
                last_record = r.main;
                match rec.put {
                    Some(p) => {
                        let ki = match index.get_mut(rec.key) {
                            Some(ki) => ki,
                            None => index.entry(Arc::from(rec.key)).or_default(),
                        };
                        ki.push_loaded_put(r, p.create, p.version);
                        ki.lease = p.lease;
                    }
                    None => {
                        let ki = index.get_mut(rec.key);
                        match ki {
                            Some(ki) if ki.is_live() => {
                                ki.push_tombstone(r);
                                ki.lease = 0;
                            }
                            _ => orphans.push(r),
                        }
                    }
                }
            }
            Some(&LEASE_PREFIX) => {
                let id = layout::parse_lease_key(k)
                    .ok_or_else(|| StoreError::Corrupt("bad lease key".into()))?;
                let ttl = layout::parse_i64_value(v)?;
                leases.insert(
                    id,
                    Lease {
                        ttl,
                        keys: Default::default(),
                    },
                );
            }
            Some(&MEMBER_PREFIX) => {
                let id = layout::parse_member_key(k)
                    .ok_or_else(|| StoreError::Corrupt("bad member key".into()))?;
                let attrs: MemberAttrs = bincode::deserialize(v)
                    .map_err(|e| StoreError::Corrupt(format!("member attrs: {e}")))?;
                members.insert(id, attrs);
            }
            Some(&STATE_PREFIX) => match k {
                layout::STATE_REV => rev = Some(layout::parse_i64_value(v)?),
                layout::STATE_COMPACT => compact_rev = layout::parse_i64_value(v)?,
                _ => return Err(StoreError::Corrupt("unknown state key".into())),
            },
            Some(&META_PREFIX) => {}
            _ => return Err(StoreError::Corrupt("key outside every keyspace".into())),
        }
    }
    // Records a compaction dropped but the garbage collection had not deleted yet: compacting
    // the rebuilt index again finds them (the same set the live engine had queued).
    let mut garbage = Vec::new();
    if compact_rev >= 0 {
        let mut emptied = Vec::new();
        for (key, ki) in index.iter_mut() {
            let c = ki.compaction(compact_rev);
            if c.is_noop() {
                continue;
            }
            garbage.extend(ki.compacted_revs(c));
            if ki.compact(c) {
                emptied.push(key.clone());
            }
        }
        for key in emptied {
            index.remove(&key);
        }
        garbage.extend(orphans.into_iter().filter(|r| r.main <= compact_rev));
        garbage.sort_unstable();
    }
    // Lease attachments are the current records' lease fields.
    for (key, ki) in &index {
        if ki.is_live() && ki.lease != 0 {
            if let Some(l) = leases.get_mut(&ki.lease) {
                l.keys.insert(key.clone());
            }
        }
    }
    let rev = rev.unwrap_or(last_record).max(last_record).max(1);
    Ok(State {
        index,
        leases,
        members,
        rev,
        compact_rev,
        garbage: garbage.into(),
    })
}

impl Mvcc {
    pub(crate) fn restore_from(&mut self, data: &[u8]) -> Result<(), StoreError> {
        let entries = parse(data)?;
        let state = load(entries.iter().map(|(k, v)| Ok((*k, *v))))?;
        let mut batch = sled::Batch::default();
        for key in self.tree.iter().keys() {
            batch.remove(key?);
        }
        for (k, v) in &entries {
            batch.insert(*k, *v);
        }
        self.tree.apply_batch(batch)?;
        self.ring = Ring::new(state.rev + 1);
        self.state = state;
        Ok(())
    }
}

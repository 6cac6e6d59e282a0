//! How the engine's state is laid out in its sled tree (`mvcc`): key encodings and the
//! revision record format. Everything the engine persists goes through here, so the layout
//! described in the [module docs](super) has exactly one implementation.
//!
//! Decoding never panics: the tree may hold anything after a crash or a bad snapshot, and a
//! malformed entry is a [`StoreError::Corrupt`], not a crash.

use super::index::Rev;
use super::StoreError;

/// `r` + main (u64 BE) + sub (u64 BE): one revision record. Big-endian so that sled's byte
/// order is revision order, which is what watch replay and rebuild scan in.
pub(crate) const REV_PREFIX: u8 = b'r';
/// `l` + id (i64 BE with the sign bit flipped): a lease and its granted TTL.
pub(crate) const LEASE_PREFIX: u8 = b'l';
/// `a` + member id (u64 BE): a member's published attributes (bincode).
pub(crate) const MEMBER_PREFIX: u8 = b'a';
/// `m` + caller's key: opaque metadata (the Raft layer's last-applied log id, membership).
pub(crate) const META_PREFIX: u8 = b'm';
/// `s` + name: the engine's scalar state.
pub(crate) const STATE_PREFIX: u8 = b's';

/// The current revision as of the last compaction (i64 BE). Compaction may remove the current
/// revision's records (a delete at the compaction point), so it cannot always be derived
/// from the last record.
pub(crate) const STATE_REV: &[u8] = b"srev";
/// The compaction revision (i64 BE); absent if never compacted.
pub(crate) const STATE_COMPACT: &[u8] = b"scompact";

const KIND_PUT: u8 = 0;
const KIND_TOMBSTONE: u8 = 1;

pub(crate) fn rev_key(rev: Rev) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = REV_PREFIX;
    k[1..9].copy_from_slice(&(rev.main as u64).to_be_bytes());
    k[9..17].copy_from_slice(&(rev.sub as u64).to_be_bytes());
    k
}

pub(crate) fn parse_rev_key(k: &[u8]) -> Option<Rev> {
    if k.len() != 17 || k[0] != REV_PREFIX {
        return None;
    }
    let main = i64::from_be_bytes(k[1..9].try_into().ok()?);
    let sub = i64::from_be_bytes(k[9..17].try_into().ok()?);
    (main >= 1 && sub >= 0).then_some(Rev { main, sub })
}

pub(crate) fn lease_key(id: i64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = LEASE_PREFIX;
    k[1..].copy_from_slice(&((id as u64) ^ (1 << 63)).to_be_bytes());
    k
}

pub(crate) fn parse_lease_key(k: &[u8]) -> Option<i64> {
    if k.len() != 9 || k[0] != LEASE_PREFIX {
        return None;
    }
    Some((u64::from_be_bytes(k[1..].try_into().ok()?) ^ (1 << 63)) as i64)
}

pub(crate) fn member_key(id: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = MEMBER_PREFIX;
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

pub(crate) fn parse_member_key(k: &[u8]) -> Option<u64> {
    if k.len() != 9 || k[0] != MEMBER_PREFIX {
        return None;
    }
    Some(u64::from_be_bytes(k[1..].try_into().ok()?))
}

pub(crate) fn meta_key(k: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(k.len() + 1);
    v.push(META_PREFIX);
    v.extend_from_slice(k);
    v
}

pub(crate) fn i64_value(v: i64) -> [u8; 8] {
    v.to_be_bytes()
}

pub(crate) fn parse_i64_value(v: &[u8]) -> Result<i64, StoreError> {
    v.try_into()
        .map(i64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt(format!("expected 8 bytes, found {}", v.len())))
}

/// A put's fields as stored (the mod revision is the record's own revision).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PutRef<'a> {
    pub create: i64,
    pub version: i64,
    pub lease: i64,
    pub value: &'a [u8],
}

/// A decoded revision record, borrowing from the stored bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RecordRef<'a> {
    pub key: &'a [u8],
    /// `None`: a tombstone (the key was deleted at this revision).
    pub put: Option<PutRef<'a>>,
}

/// Record format: kind (u8: 0 put, 1 tombstone), key length (u32 BE), key, and for a put:
/// create revision, version, lease (i64 BE each), then the value to the end.
pub(crate) fn encode_record(key: &[u8], put: Option<PutRef<'_>>) -> Vec<u8> {
    let value_len = put.map_or(0, |p| 24 + p.value.len());
    let mut out = Vec::with_capacity(5 + key.len() + value_len);
    out.push(if put.is_some() {
        KIND_PUT
    } else {
        KIND_TOMBSTONE
    });
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    if let Some(p) = put {
        out.extend_from_slice(&p.create.to_be_bytes());
        out.extend_from_slice(&p.version.to_be_bytes());
        out.extend_from_slice(&p.lease.to_be_bytes());
        out.extend_from_slice(p.value);
    }
    out
}

pub(crate) fn decode_record(b: &[u8]) -> Result<RecordRef<'_>, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("revision record: {what}"));
    let (&kind, rest) = b.split_first().ok_or_else(|| corrupt("empty"))?;
    if rest.len() < 4 {
        return Err(corrupt("truncated key length"));
    }
    let (len, rest) = rest.split_at(4);
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if rest.len() < len {
        return Err(corrupt("truncated key"));
    }
    let (key, rest) = rest.split_at(len);
    match kind {
        KIND_TOMBSTONE if rest.is_empty() => Ok(RecordRef { key, put: None }),
        KIND_PUT if rest.len() >= 24 => {
            let int = |i: usize| {
                let mut a = [0u8; 8];
                a.copy_from_slice(&rest[i * 8..i * 8 + 8]);
                i64::from_be_bytes(a)
            };
            Ok(RecordRef {
                key,
                put: Some(PutRef {
                    create: int(0),
                    version: int(1),
                    lease: int(2),
                    value: &rest[24..],
                }),
            })
        }
        _ => Err(corrupt("bad kind or length")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_garbage_is_an_error() {
        let put = PutRef {
            create: 3,
            version: 2,
            lease: -7,
            value: b"value",
        };
        let enc = encode_record(b"key", Some(put));
        assert_eq!(
            decode_record(&enc).unwrap(),
            RecordRef {
                key: b"key",
                put: Some(put)
            }
        );
        let enc = encode_record(b"k", None);
        assert_eq!(
            decode_record(&enc).unwrap(),
            RecordRef {
                key: b"k",
                put: None
            }
        );
        for bad in [
            &b""[..],
            b"\x00",
            b"\x00\x00\x00\x00\x09k",
            b"\x07\x00\x00\x00\x00",
        ] {
            assert!(decode_record(bad).is_err());
        }
        assert!(decode_record(&enc[..enc.len() - 1]).is_err());
    }

    #[test]
    fn keys_sort_in_numeric_order() {
        let a = rev_key(Rev { main: 2, sub: 300 });
        let b = rev_key(Rev { main: 256, sub: 0 });
        assert!(a < b);
        assert_eq!(parse_rev_key(&b), Some(Rev { main: 256, sub: 0 }));
        assert!(lease_key(-5) < lease_key(3));
        assert_eq!(parse_lease_key(&lease_key(-5)), Some(-5));
        assert_eq!(parse_member_key(&member_key(9)), Some(9));
    }
}

/// The writes of one apply, in order.
///
/// Not a `sled::Batch`: sled seals and writes out its IO buffer for every batch (a `pwrite` and a
/// `sync_file_range` each), which at thousands of applies a second cost more than the applies.
/// The writes go in one by one under the engine's write lock, so no reader sees half of an
/// apply; a crash can leave half of one on disk, which is why the Raft layer trusts the state
/// machine on disk only after a clean shutdown and otherwise rebuilds it from its last snapshot
/// and the log (see `raft::state_machine`).
#[derive(Default)]
pub(crate) struct Writes(Vec<(sled::IVec, Option<sled::IVec>)>);

impl Writes {
    pub(crate) fn insert<K: Into<sled::IVec>, V: Into<sled::IVec>>(&mut self, key: K, value: V) {
        self.0.push((key.into(), Some(value.into())));
    }

    pub(crate) fn remove<K: Into<sled::IVec>>(&mut self, key: K) {
        self.0.push((key.into(), None));
    }

    pub(crate) fn write(self, tree: &sled::Tree) -> sled::Result<()> {
        for (key, value) in self.0 {
            match value {
                Some(v) => {
                    tree.insert(key, v)?;
                }
                None => {
                    tree.remove(key)?;
                }
            }
        }
        Ok(())
    }
}

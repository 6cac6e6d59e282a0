//! What goes through the Raft log: [`Command`], and what applying it returns:
//! [`CommandResponse`].
//!
//! Client requests travel as the etcd protobuf messages themselves (prost-encoded inside the
//! log entry), so there is one definition of a request's meaning: etcd's. Commands that etcd
//! keeps internal (lease grant with a chosen id, member attributes) have their own variants.
//!
//! A command's response is computed *while applying* it, on every member, so a Txn's Range
//! results and a Put's prev_kv are those of the revision the command was applied at.

use etcd_client::proto::{
    PbDeleteRequest, PbDeleteResponse, PbPutRequest, PbPutResponse, PbTxnRequest, PbTxnResponse,
};
use serde::{Deserialize, Serialize};

use crate::error::EtcdError;

/// A state-machine command, replicated through the Raft log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    Put(#[serde(with = "pb")] PbPutRequest),
    DeleteRange(#[serde(with = "pb")] PbDeleteRequest),
    Txn(#[serde(with = "pb")] PbTxnRequest),
    /// Compacts history before `revision`.
    Compact {
        revision: i64,
    },
    /// Grants a lease with an id chosen by the proposing member (never 0) and a TTL already
    /// raised to the minimum TTL.
    LeaseGrant {
        id: i64,
        ttl: i64,
    },
    /// Revokes a lease and deletes every key attached to it, in one revision. Proposed by a
    /// client's LeaseRevoke and by the leader when a lease expires.
    LeaseRevoke {
        id: i64,
    },
    /// A member publishes its name and client URLs once it has started (as etcd does), so
    /// MemberList can show them on every member.
    MemberAttrs {
        id: u64,
        name: String,
        client_urls: Vec<String>,
    },
    /// Commands that queued on the leader while earlier proposals were in flight, replicated as
    /// one log entry and applied one after the other, each as if it had its own entry (see
    /// `node::Proposer`). Never nested: decoding refuses a batch inside a batch (see
    /// [`Unbatched`]).
    Batch(#[serde(deserialize_with = "unbatched")] Vec<Command>),
}

/// What a [`Command::Batch`] may hold: every command but another batch. A batch's items are
/// decoded as this mirror of [`Command`]'s other variants (same order, same fields, so the
/// same bytes), so a nested batch is a decoding error ("unknown variant") instead of a
/// recursion as deep as the message: one peer message of `Batch([Batch([...])])` a few
/// thousand levels deep used to overflow the decoding thread's stack and abort the member
/// (found by `fuzz/fuzz_targets/raft_message.rs`, docs/FUZZING.md).
#[derive(Deserialize)]
enum Unbatched {
    Put(#[serde(with = "pb")] PbPutRequest),
    DeleteRange(#[serde(with = "pb")] PbDeleteRequest),
    Txn(#[serde(with = "pb")] PbTxnRequest),
    Compact {
        revision: i64,
    },
    LeaseGrant {
        id: i64,
        ttl: i64,
    },
    LeaseRevoke {
        id: i64,
    },
    MemberAttrs {
        id: u64,
        name: String,
        client_urls: Vec<String>,
    },
}

impl From<Unbatched> for Command {
    fn from(u: Unbatched) -> Command {
        match u {
            Unbatched::Put(r) => Command::Put(r),
            Unbatched::DeleteRange(r) => Command::DeleteRange(r),
            Unbatched::Txn(r) => Command::Txn(r),
            Unbatched::Compact { revision } => Command::Compact { revision },
            Unbatched::LeaseGrant { id, ttl } => Command::LeaseGrant { id, ttl },
            Unbatched::LeaseRevoke { id } => Command::LeaseRevoke { id },
            Unbatched::MemberAttrs {
                id,
                name,
                client_urls,
            } => Command::MemberAttrs {
                id,
                name,
                client_urls,
            },
        }
    }
}

/// A batch response's item: [`CommandResponse`]'s variants in the same order, with a nested
/// batch (variant 8) refused as it is read.
#[derive(Deserialize)]
enum UnbatchedResponse {
    Put(#[serde(with = "pb")] PbPutResponse),
    DeleteRange(#[serde(with = "pb")] PbDeleteResponse),
    Txn(#[serde(with = "pb")] PbTxnResponse),
    Compact { revision: i64 },
    LeaseGrant { id: i64, ttl: i64, revision: i64 },
    LeaseRevoke { revision: i64 },
    MemberAttrs,
    Noop,
    Batch(NestedBatch),
    Error(EtcdError),
}

/// Never decodes: a batch inside a batch.
struct NestedBatch;

impl<'de> Deserialize<'de> for NestedBatch {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom("a batch inside a batch"))
    }
}

fn unbatched_responses<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<CommandResponse>, D::Error> {
    Vec::<UnbatchedResponse>::deserialize(d)?
        .into_iter()
        .map(|r| {
            Ok(match r {
                UnbatchedResponse::Put(r) => CommandResponse::Put(r),
                UnbatchedResponse::DeleteRange(r) => CommandResponse::DeleteRange(r),
                UnbatchedResponse::Txn(r) => CommandResponse::Txn(r),
                UnbatchedResponse::Compact { revision } => CommandResponse::Compact { revision },
                UnbatchedResponse::LeaseGrant { id, ttl, revision } => {
                    CommandResponse::LeaseGrant { id, ttl, revision }
                }
                UnbatchedResponse::LeaseRevoke { revision } => {
                    CommandResponse::LeaseRevoke { revision }
                }
                UnbatchedResponse::MemberAttrs => CommandResponse::MemberAttrs,
                UnbatchedResponse::Noop => CommandResponse::Noop,
                UnbatchedResponse::Batch(_) => {
                    return Err(serde::de::Error::custom("a batch inside a batch"))
                }
                UnbatchedResponse::Error(e) => CommandResponse::Error(e),
            })
        })
        .collect()
}

fn unbatched<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Command>, D::Error> {
    Ok(Vec::<Unbatched>::deserialize(d)?
        .into_iter()
        .map(Command::from)
        .collect())
}

impl Command {
    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::Put(_) => "put",
            Command::DeleteRange(_) => "delete_range",
            Command::Txn(_) => "txn",
            Command::Compact { .. } => "compact",
            Command::LeaseGrant { .. } => "lease_grant",
            Command::LeaseRevoke { .. } => "lease_revoke",
            Command::MemberAttrs { .. } => "member_attrs",
            Command::Batch(_) => "batch",
        }
    }
}

/// The result of applying a [`Command`]. Every response header carries the store revision after
/// the command; the server layer fills in cluster id, member id and raft term.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CommandResponse {
    Put(#[serde(with = "pb")] PbPutResponse),
    DeleteRange(#[serde(with = "pb")] PbDeleteResponse),
    Txn(#[serde(with = "pb")] PbTxnResponse),
    Compact {
        revision: i64,
    },
    LeaseGrant {
        id: i64,
        ttl: i64,
        revision: i64,
    },
    LeaseRevoke {
        revision: i64,
    },
    MemberAttrs,
    /// What a Raft-internal entry (blank, membership) returns: no client waits for it.
    Noop,
    /// One response per command of a [`Command::Batch`], in order (never itself a batch:
    /// decoding refuses one, as for [`Command::Batch`]).
    Batch(#[serde(deserialize_with = "unbatched_responses")] Vec<CommandResponse>),
    /// The command was applied (it consumed a log index) but failed, e.g. a Put on a lease that
    /// does not exist. The store is unchanged by it.
    Error(EtcdError),
}

/// Serde adapter: a prost message as its protobuf bytes.
pub mod pb {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<M: prost::Message, S: Serializer>(m: &M, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&m.encode_to_vec())
    }

    pub fn deserialize<'de, M: prost::Message + Default, D: Deserializer<'de>>(
        d: D,
    ) -> Result<M, D::Error> {
        let bytes: Vec<u8> = serde_bytes_compat::deserialize(d)?;
        M::decode(bytes.as_slice()).map_err(serde::de::Error::custom)
    }

    /// Accepts both byte strings and sequences of u8, whatever the format produces.
    mod serde_bytes_compat {
        use super::*;
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
            <Vec<u8> as Deserialize>::deserialize(d)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_through_bincode() {
        let cmd = Command::Put(PbPutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            lease: 7,
            prev_kv: true,
            ..Default::default()
        });
        let bytes = bincode::serialize(&cmd).unwrap();
        let back: Command = bincode::deserialize(&bytes).unwrap();
        assert_eq!(cmd, back);
    }

    fn every_single_command() -> Vec<Command> {
        vec![
            Command::Put(PbPutRequest {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            }),
            Command::DeleteRange(PbDeleteRequest {
                key: b"a".to_vec(),
                range_end: b"b".to_vec(),
                ..Default::default()
            }),
            Command::Txn(PbTxnRequest::default()),
            Command::Compact { revision: 5 },
            Command::LeaseGrant { id: 1, ttl: 60 },
            Command::LeaseRevoke { id: 1 },
            Command::MemberAttrs {
                id: 9,
                name: "m1".into(),
                client_urls: vec!["https://m1:2379".into()],
            },
        ]
    }

    #[test]
    fn a_batch_of_every_command_round_trips_through_the_log_codec() {
        let batch = Command::Batch(every_single_command());
        let bytes = crate::raft::encode(&batch);
        assert_eq!(crate::raft::decode::<Command>(&bytes).unwrap(), batch);
    }

    #[test]
    fn batch_responses_round_trip_and_refuse_nesting() {
        let flat = CommandResponse::Batch(vec![
            CommandResponse::Put(PbPutResponse::default()),
            CommandResponse::Compact { revision: 3 },
            CommandResponse::LeaseGrant {
                id: 1,
                ttl: 5,
                revision: 4,
            },
            CommandResponse::MemberAttrs,
            CommandResponse::Noop,
            CommandResponse::Error(EtcdError::LeaseNotFound),
        ]);
        let bytes = crate::raft::encode(&flat);
        assert_eq!(
            crate::raft::decode::<CommandResponse>(&bytes).unwrap(),
            flat
        );
        let nested = CommandResponse::Batch(vec![CommandResponse::Batch(vec![])]);
        let e = crate::raft::decode::<CommandResponse>(&crate::raft::encode(&nested)).unwrap_err();
        assert!(e.to_string().contains("a batch inside a batch"), "{e}");
    }

    #[test]
    fn nested_batches_are_refused_however_deep() {
        let nested = Command::Batch(vec![Command::Batch(vec![Command::Compact { revision: 5 }])]);
        let e = crate::raft::decode::<Command>(&crate::raft::encode(&nested)).unwrap_err();
        assert!(e.to_string().contains("variant"), "{e}");
        // fuzz/seeds/known-crashes/raft_message/nested-batch-5000's shape, far deeper: decoding
        // stops at the second level instead of recursing (this used to abort the process).
        let mut bytes = Vec::new();
        for _ in 0..100_000 {
            bytes.extend_from_slice(&7u32.to_le_bytes());
            bytes.extend_from_slice(&1u64.to_le_bytes());
        }
        bytes.extend_from_slice(&3u32.to_le_bytes());
        bytes.extend_from_slice(&5i64.to_le_bytes());
        let e = crate::raft::decode::<Command>(&bytes).unwrap_err();
        assert!(e.to_string().contains("variant"), "{e}");
    }
}

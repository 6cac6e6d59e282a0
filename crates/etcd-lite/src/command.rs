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
    /// `node::Proposer`). Never nested.
    Batch(Vec<Command>),
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
    /// One response per command of a [`Command::Batch`], in order.
    Batch(Vec<CommandResponse>),
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
}

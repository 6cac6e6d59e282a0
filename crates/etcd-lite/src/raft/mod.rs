//! openraft wiring: the type configuration, the sled log store, the state machine adaptor over
//! [`crate::mvcc::Mvcc`], and the gRPC peer network.
//!
//! * [`log_store`]: Raft log and vote in sled; an append is acknowledged to openraft only after
//!   sled has flushed it (one flusher task batches concurrent appends into one fsync).
//! * [`state_machine`]: applies committed entries to the MVCC engine, builds and installs
//!   snapshots, and tells the rest of the member what changed (revision, leases).
//! * [`network`]: the client side of the peer transport (`proto/raft.proto`).
//! * [`peer_server`]: the server side, on `--listen-peer-urls`.

// openraft's traits dictate `StorageError` (224 bytes) as the error type of storage calls;
// boxing it in our helpers would only add conversions at every trait boundary.
#![allow(clippy::result_large_err)]

pub mod log_store;
pub mod network;
pub mod peer_server;
pub mod state_machine;

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::command::{Command, CommandResponse};

/// What a member is to Raft: where its peers reach it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerNode {
    pub peer_urls: Vec<String>,
}

impl std::fmt::Display for PeerNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.peer_urls.join(","))
    }
}

openraft::declare_raft_types!(
    /// etcd-lite's Raft types: commands in, command responses out, u64 member ids as etcd.
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = u64,
        Node = PeerNode,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<u64>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StoredMembership = openraft::StoredMembership<u64, PeerNode>;
pub type StorageError = openraft::StorageError<u64>;

/// The one bincode configuration for everything Raft puts on disk or on the wire. Decoding is
/// bounded: a peer's bytes are untrusted input, and a length prefix must not make us allocate
/// gigabytes.
pub fn codec() -> impl bincode::Options + Copy {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_limit(MAX_DECODE_BYTES)
}

/// Upper bound on one decoded Raft message or stored entry (snapshot chunks are 3 MiB; a log
/// entry is at most --max-request-bytes).
pub const MAX_DECODE_BYTES: u64 = 256 * 1024 * 1024;

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    use bincode::Options;
    codec()
        .serialize(value)
        .expect("bincode serialization of in-memory values cannot fail")
}

pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::Error> {
    use bincode::Options;
    codec().deserialize(bytes)
}

fn io_err<E: std::error::Error + 'static>(
    subject: openraft::ErrorSubject<u64>,
    verb: openraft::ErrorVerb,
    e: E,
) -> StorageError {
    openraft::StorageIOError::new(subject, verb, openraft::AnyError::new(&e)).into()
}

/// An [`crate::error::EtcdError`] as the message of a peer-transport status, so a forwarded
/// request's failure reaches the client with etcd's exact error.
pub fn encode_error(e: &crate::error::EtcdError) -> String {
    serde_json::to_string(e).unwrap_or_else(|_| e.to_string())
}

/// The inverse of [`encode_error`].
pub fn decode_error(message: &str) -> Option<crate::error::EtcdError> {
    serde_json::from_str(message).ok()
}

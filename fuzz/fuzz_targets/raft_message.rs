//! What an etcd-lite member decodes from its peers' bytes.
//!
//! Input: one selector byte, then the bytes of one message. selector % 13:
//! *  0 AppendEntries,  1 Vote,  2 InstallSnapshot: `RaftBytes.data` as raft/peer_server.rs
//!    decodes it, `etcd_lite::raft::decode` (bounded bincode) into openraft's
//!    `AppendEntriesRequest<TypeConfig>`, `VoteRequest<u64>`, `InstallSnapshotRequest<TypeConfig>`
//!    (an AppendEntries' entries carry `Command`s, so those are decoded too);
//! *  3 Forward: `ForwardRequest.command` into a `Command` (peer_server.rs `forward`);
//! *  4, 5, 6: a peer's answer to each of the three as raft/network.rs decodes it:
//!    `Result<AppendEntriesResponse<u64>, RaftError<u64>>`, `Result<VoteResponse<u64>, ..>`,
//!    `Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>`;
//! *  7: `ForwardResponse.response` into a `CommandResponse` (node.rs);
//! *  8: a peer's status message into an `EtcdError` (`etcd_lite::raft::decode_error`, node.rs);
//! *  9, 10, 11: the protobuf layer tonic decodes first (`peerpb`): the rest as a `RaftBytes`
//!    whose data then goes through 0, 1 and 2 in turn; as a `ForwardRequest` through 3; as a
//!    `MemberChangeRequest` (with peer_server.rs's `Kind::try_from`), `ForwardResponse` through
//!    7, `LeaseKeepAliveRequest`, `LeaseTimeToLiveRequest` and `ClusterInfoResponse`;
//! * 12: a received snapshot, installed: raft/state_machine.rs `install_snapshot` hands the
//!   assembled InstallSnapshot data to `Mvcc::restore` (here on a temporary sled db). The
//!   format ends in a SHA-256 of the rest, which a fuzzer cannot guess, so the harness frames
//!   the input: the snapshot magic when missing, then the input, then its checksum. After a
//!   restore that succeeds: the revision, leases and member attributes, a range read of every
//!   key at the current and the compacted revision, and a new snapshot, which must restore too.
//!
//! Beyond "never panics": every value decoded from a peer must re-encode with
//! `etcd_lite::raft::encode` and decode back to the same value (compared by its Debug form).
//! A follower stores what it receives that way (log_store.rs encodes entries into sled and
//! decodes them when they are read), so a value that does not survive the trip is an entry the
//! member cannot read back.
//!
//! Not covered: what openraft does with a decoded message (its engine, the log store, applying
//! commands to the state machine), the TLS handshake, tonic's HTTP/2 framing.
#![no_main]

use std::fmt::Debug;
use std::sync::{Mutex, OnceLock};

use etcd_client::proto::PbRangeRequest;
use etcd_lite::command::{Command, CommandResponse};
use etcd_lite::mvcc::Mvcc;
use etcd_lite::peerpb::{
    member_change_request::Kind, ClusterInfoResponse, ForwardRequest, ForwardResponse,
    LeaseKeepAliveRequest, LeaseTimeToLiveRequest, MemberChangeRequest, RaftBytes,
};
use etcd_lite::raft::{decode, decode_error, encode, TypeConfig};
use libfuzzer_sys::fuzz_target;
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use prost::Message;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

type AppendResult = Result<AppendEntriesResponse<u64>, RaftError<u64>>;
type VoteResult = Result<VoteResponse<u64>, RaftError<u64>>;
type SnapshotResult = Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>;

/// mvcc/snapshot.rs's MAGIC (private there).
const SNAPSHOT_MAGIC: &[u8] = b"etcd-lite/mvcc-snapshot/1\n";

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 13 {
        0 => round_trip::<AppendEntriesRequest<TypeConfig>>(rest),
        1 => round_trip::<VoteRequest<u64>>(rest),
        2 => round_trip::<InstallSnapshotRequest<TypeConfig>>(rest),
        3 => round_trip::<Command>(rest),
        4 => round_trip::<AppendResult>(rest),
        5 => round_trip::<VoteResult>(rest),
        6 => round_trip::<SnapshotResult>(rest),
        7 => round_trip::<CommandResponse>(rest),
        8 => {
            if let Ok(message) = std::str::from_utf8(rest) {
                let _ = decode_error(message);
            }
        }
        9 => {
            if let Ok(m) = RaftBytes::decode(rest) {
                round_trip::<AppendEntriesRequest<TypeConfig>>(&m.data);
                round_trip::<VoteRequest<u64>>(&m.data);
                round_trip::<InstallSnapshotRequest<TypeConfig>>(&m.data);
            }
        }
        10 => {
            if let Ok(m) = ForwardRequest::decode(rest) {
                round_trip::<Command>(&m.command);
            }
        }
        11 => {
            if let Ok(m) = MemberChangeRequest::decode(rest) {
                let _ = Kind::try_from(m.kind);
            }
            if let Ok(m) = ForwardResponse::decode(rest) {
                round_trip::<CommandResponse>(&m.response);
            }
            let _ = LeaseKeepAliveRequest::decode(rest);
            let _ = LeaseTimeToLiveRequest::decode(rest);
            let _ = ClusterInfoResponse::decode(rest);
        }
        _ => install_snapshot(rest),
    }
});

/// Decodes `bytes` as a `T` the way etcd-lite does; when that succeeds, the value must survive
/// `encode` + `decode` unchanged.
fn round_trip<T: Serialize + DeserializeOwned + Debug>(bytes: &[u8]) {
    let Ok(value) = decode::<T>(bytes) else {
        return;
    };
    if debug() {
        eprintln!("decoded {}: {value:?}", std::any::type_name::<T>());
    }
    let again = encode(&value);
    match decode::<T>(&again) {
        Ok(back) => assert_eq!(
            format!("{back:?}"),
            format!("{value:?}"),
            "{} changed through encode + decode",
            std::any::type_name::<T>()
        ),
        Err(e) => panic!(
            "{} decoded from a peer does not decode after encode: {e}",
            std::any::type_name::<T>()
        ),
    }
}

/// `KL_FUZZ_DEBUG=1` prints what each input decoded to (for reading a crash or a seed).
fn debug() -> bool {
    static DEBUG: OnceLock<bool> = OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("KL_FUZZ_DEBUG").is_some())
}

/// One engine for the whole run, as a member has one: restore replaces its whole state.
fn engine() -> &'static Mutex<Mvcc> {
    static ENGINE: OnceLock<Mutex<Mvcc>> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .expect("opening a temporary sled db");
        Mutex::new(Mvcc::open(&db).expect("opening the engine on an empty db"))
    })
}

fn install_snapshot(body: &[u8]) {
    let mut data = Vec::with_capacity(SNAPSHOT_MAGIC.len() + body.len() + 32);
    if !body.starts_with(SNAPSHOT_MAGIC) {
        data.extend_from_slice(SNAPSHOT_MAGIC);
    }
    data.extend_from_slice(body);
    let digest = Sha256::digest(&data);
    data.extend_from_slice(&digest);

    let mut mvcc = engine().lock().unwrap_or_else(|e| e.into_inner());
    match mvcc.restore(&data) {
        Err(e) => {
            if debug() {
                eprintln!("snapshot refused: {e}");
            }
        }
        Ok(()) => {
            let revision = mvcc.revision();
            let compacted = mvcc.compact_revision();
            let leases = mvcc.leases();
            let members = mvcc.member_attrs();
            if debug() {
                eprintln!(
                    "snapshot restored: revision {revision}, compacted {compacted}, \
                     leases {leases:?}, members {members:?}"
                );
            }
            for at in [0, compacted, revision] {
                let all = PbRangeRequest {
                    key: vec![0],
                    range_end: vec![0],
                    revision: at,
                    ..Default::default()
                };
                let _ = mvcc.range(&all);
            }
            let again = mvcc
                .snapshot()
                .expect("snapshotting a state restored from a snapshot");
            if let Err(e) = mvcc.restore(&again) {
                panic!("a snapshot of a restored state does not restore: {e}");
            }
        }
    }
}

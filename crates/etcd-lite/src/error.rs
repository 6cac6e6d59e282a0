//! The errors etcd-lite returns to clients, with the gRPC codes and messages etcd itself uses
//! (etcd's `api/v3rpc/rpctypes`), so that clients which match on them (etcdctl, client-go,
//! the `etcd-client` crate) behave the same against etcd-lite.
//!
//! Errors that arise while *applying* a command travel through the Raft log's response, so
//! they are serializable.

use serde::{Deserialize, Serialize};

/// An etcd error, as a client sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum EtcdError {
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: invalid sort option")]
    InvalidSortOption,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    #[error("etcdserver: lease TTL is too large")]
    LeaseTtlTooLarge,
    #[error("etcdserver: member not found")]
    MemberNotFound,
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    #[error("etcdserver: rpc not supported for learner")]
    NotSupportedForLearner,
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner,
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    NotEnoughStartedMembers,
    #[error("etcdserver: unhealthy cluster")]
    Unhealthy,
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: request timed out")]
    Timeout,
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    #[error("etcdserver: server stopped")]
    Stopped,
    /// A request etcd-lite does not implement; the message names the RPC.
    #[error("etcd-lite does not implement {0}")]
    Unimplemented(String),
    /// Anything else: an internal failure (storage, transport). The message says what.
    #[error("etcdserver: {0}")]
    Internal(String),
}

impl EtcdError {
    /// The gRPC status code etcd uses for this error.
    pub fn code(&self) -> tonic::Code {
        use tonic::Code;
        use EtcdError::*;
        match self {
            EmptyKey | KeyNotFound | ValueProvided | LeaseProvided | TooManyOps | DuplicateKey
            | InvalidSortOption | RequestTooLarge => Code::InvalidArgument,
            Compacted | FutureRevision | LeaseTtlTooLarge => Code::OutOfRange,
            LeaseNotFound | MemberNotFound => Code::NotFound,
            LeaseExists
            | PeerUrlExists
            | NotSupportedForLearner
            | TooManyLearners
            | MemberNotLearner
            | LearnerNotReady => Code::FailedPrecondition,
            NotEnoughStartedMembers | Unhealthy | NoLeader | Timeout | LeaderChanged | Stopped => {
                Code::Unavailable
            }
            Unimplemented(_) => Code::Unimplemented,
            Internal(_) => Code::Internal,
        }
    }
}

impl From<EtcdError> for tonic::Status {
    fn from(e: EtcdError) -> Self {
        tonic::Status::new(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_codes_match_etcd() {
        let s: tonic::Status = EtcdError::NoLeader.into();
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert_eq!(s.message(), "etcdserver: no leader");
        let s: tonic::Status = EtcdError::Compacted.into();
        assert_eq!(s.code(), tonic::Code::OutOfRange);
        assert_eq!(
            s.message(),
            "etcdserver: mvcc: required revision has been compacted"
        );
    }
}

//! One etcd-lite member, as the gRPC services see it.
//!
//! The services never touch Raft directly: they call this. It owns proposing (forwarded to the
//! leader when this member is a follower), linearizable reads (ReadIndex, also through the
//! leader), the lessor (lease deadlines live only on the leader; expiry is proposed through
//! the log), membership changes, and status.
//!
//! Every wait here is bounded: with no leader, a request fails promptly with
//! `etcdserver: no leader`; with a leader that cannot commit, with `etcdserver: request timed out`.

use std::sync::Arc;

use etcd_client::proto::PbResponseHeader;
use parking_lot::RwLock;
use tokio::sync::watch;

use crate::command::{Command, CommandResponse};
use crate::config::Config;
use crate::error::EtcdError;
use crate::metrics::Metrics;
use crate::mvcc::Mvcc;

/// What Maintenance.Status reports.
#[derive(Clone, Debug, Default)]
pub struct NodeStatus {
    pub member_id: u64,
    pub leader: Option<u64>,
    pub raft_term: u64,
    pub raft_index: u64,
    pub raft_applied_index: u64,
    pub is_learner: bool,
    pub db_size: u64,
}

/// A cluster member, as MemberList shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    /// Empty until the member has started and published its attributes (as etcd).
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

pub struct Node {
    _private: (),
}

impl Node {
    /// This member's id.
    pub fn id(&self) -> u64 {
        unimplemented!()
    }

    pub fn cluster_id(&self) -> u64 {
        unimplemented!()
    }

    pub fn config(&self) -> &Config {
        unimplemented!()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        unimplemented!()
    }

    /// A response header for a response at store `revision`.
    pub fn header(&self, _revision: i64) -> PbResponseHeader {
        unimplemented!()
    }

    /// The state machine, for local (serializable, or after [`Node::read_barrier`]) reads.
    pub fn store(&self) -> &Arc<RwLock<Mvcc>> {
        unimplemented!()
    }

    /// The store revision, updated after every apply: watchers wait on this.
    pub fn revisions(&self) -> watch::Receiver<i64> {
        unimplemented!()
    }

    /// Replicates a command and returns its result once applied on this member.
    /// `CommandResponse::Error(e)` comes back as `Err(e)`.
    pub async fn propose(&self, _cmd: Command) -> Result<CommandResponse, EtcdError> {
        unimplemented!()
    }

    /// ReadIndex: returns once this member has applied everything committed when the call was
    /// made, as confirmed by a leader that still holds a quorum. Reads after it are linearizable.
    pub async fn read_barrier(&self) -> Result<(), EtcdError> {
        unimplemented!()
    }

    /// The smallest TTL a lease is granted with (etcd: 1.5 election timeouts, rounded up).
    pub fn min_lease_ttl(&self) -> i64 {
        unimplemented!()
    }

    /// Renews a lease on the leader; returns its TTL. `LeaseNotFound` if it does not exist.
    pub async fn lease_keepalive(&self, _id: i64) -> Result<i64, EtcdError> {
        unimplemented!()
    }

    /// (remaining TTL, granted TTL) of a lease, from the leader.
    pub async fn lease_time_to_live(&self, _id: i64) -> Result<(i64, i64), EtcdError> {
        unimplemented!()
    }

    /// The members, with what each published about itself.
    pub async fn member_list(&self) -> Result<Vec<Member>, EtcdError> {
        unimplemented!()
    }

    /// Adds a member (a voter, or a learner); returns its new id.
    pub async fn member_add(
        &self,
        _peer_urls: Vec<String>,
        _is_learner: bool,
    ) -> Result<u64, EtcdError> {
        unimplemented!()
    }

    pub async fn member_remove(&self, _id: u64) -> Result<(), EtcdError> {
        unimplemented!()
    }

    pub async fn member_promote(&self, _id: u64) -> Result<(), EtcdError> {
        unimplemented!()
    }

    pub fn status(&self) -> NodeStatus {
        unimplemented!()
    }

    /// Whether this member currently knows a leader (for /health).
    pub fn has_leader(&self) -> bool {
        unimplemented!()
    }
}

//! The server side of the peer transport, on `--listen-peer-urls`.
//!
//! Everything a peer sends is untrusted input: undecodable bytes get `InvalidArgument` and
//! change nothing. So does a Raft message that decodes but carries a membership openraft would
//! choke on (a voter without a node entry, an empty config): openraft 0.9 validates only the
//! memberships it makes itself and later `unwrap()`s the node of every voter, so such a message
//! would kill the member at its next election; [`check_membership`] refuses it first. Requests that only the leader can serve (forwarded proposals, read index,
//! lease renewals, membership changes) get `FailedPrecondition` with [`NOT_LEADER`] on a
//! follower, which tells the sender it may safely retry elsewhere.

use std::sync::Arc;

use openraft::{
    raft::{AppendEntriesRequest, InstallSnapshotRequest},
    EntryPayload, Membership,
};
use tonic::{Request, Response, Status};

use super::{decode, encode, PeerNode, TypeConfig};
use crate::{
    command::Command,
    error::EtcdError,
    node::Node,
    peerpb::{
        member_change_request::Kind, raft_peer_server::RaftPeer, ClusterInfoRequest,
        ClusterInfoResponse, ForwardRequest, ForwardResponse, LeaseKeepAliveRequest,
        LeaseKeepAliveResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
        MemberChangeRequest, MemberChangeResponse, MemberInfo, RaftBytes, ReadIndexRequest,
        ReadIndexResponse,
    },
};

/// The message of the `FailedPrecondition` a follower answers leader-only requests with.
pub const NOT_LEADER: &str = "etcd-lite: not the leader";

pub struct PeerService {
    pub node: Arc<Node>,
}

fn undecodable(what: &str, e: bincode::Error) -> Status {
    Status::invalid_argument(format!("undecodable {what}: {e}"))
}

/// Why openraft could not use `m`: no config, an empty (sub-)config, or a voter that has no
/// node entry (nowhere to send its RPCs). The checks of openraft's own (crate-private)
/// `Membership::ensure_valid`, which it applies to memberships it builds, not to received ones.
pub fn check_membership(m: &Membership<u64, PeerNode>) -> Result<(), String> {
    let configs = m.get_joint_config();
    if configs.is_empty() {
        return Err("membership has no voter config".to_string());
    }
    if let Some(i) = configs.iter().position(|c| c.is_empty()) {
        return Err(format!("membership config {i} has no voter"));
    }
    for voter in m.voter_ids() {
        if m.get_node(&voter).is_none() {
            return Err(format!(
                "membership names voter {voter:x} but has no node (peer URLs) for it; nodes: {:x?}",
                m.nodes().map(|(id, _)| *id).collect::<Vec<_>>()
            ));
        }
    }
    Ok(())
}

/// Every membership an AppendEntries carries (one per membership entry) must pass
/// [`check_membership`].
fn check_append(rpc: &AppendEntriesRequest<TypeConfig>) -> Result<(), Status> {
    for entry in &rpc.entries {
        if let EntryPayload::Membership(m) = &entry.payload {
            check_membership(m).map_err(|e| {
                Status::invalid_argument(format!(
                    "AppendEntries: entry {}: invalid membership: {e}",
                    entry.log_id
                ))
            })?;
        }
    }
    Ok(())
}

/// The membership a snapshot's meta carries must pass [`check_membership`].
fn check_snapshot(rpc: &InstallSnapshotRequest<TypeConfig>) -> Result<(), Status> {
    check_membership(rpc.meta.last_membership.membership()).map_err(|e| {
        Status::invalid_argument(format!(
            "InstallSnapshot: snapshot {}: invalid membership: {e}",
            rpc.meta.snapshot_id
        ))
    })
}

/// Leader-only failures travel as a status the forwarding member understands.
pub fn leader_status(e: EtcdError) -> Status {
    match e {
        EtcdError::NoLeader | EtcdError::LeaderChanged => Status::failed_precondition(NOT_LEADER),
        other => Status::new(tonic::Code::Aborted, crate::raft::encode_error(&other)),
    }
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn append_entries(&self, req: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        let rpc = decode(&req.into_inner().data).map_err(|e| undecodable("AppendEntries", e))?;
        check_append(&rpc)?;
        let result = self.node.raft().append_entries(rpc).await;
        Ok(Response::new(RaftBytes {
            data: encode(&result),
        }))
    }

    async fn vote(&self, req: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        let rpc = decode(&req.into_inner().data).map_err(|e| undecodable("Vote", e))?;
        let result = self.node.raft().vote(rpc).await;
        Ok(Response::new(RaftBytes {
            data: encode(&result),
        }))
    }

    async fn install_snapshot(
        &self,
        req: Request<RaftBytes>,
    ) -> Result<Response<RaftBytes>, Status> {
        let rpc = decode(&req.into_inner().data).map_err(|e| undecodable("InstallSnapshot", e))?;
        check_snapshot(&rpc)?;
        let result = self.node.raft().install_snapshot(rpc).await;
        Ok(Response::new(RaftBytes {
            data: encode(&result),
        }))
    }

    async fn forward(
        &self,
        req: Request<ForwardRequest>,
    ) -> Result<Response<ForwardResponse>, Status> {
        let cmd: Command =
            decode(&req.into_inner().command).map_err(|e| undecodable("command", e))?;
        let (response, index) = self
            .node
            .propose_as_leader(cmd)
            .await
            .map_err(leader_status)?;
        Ok(Response::new(ForwardResponse {
            response: encode(&response),
            index,
        }))
    }

    async fn read_index(
        &self,
        _req: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexResponse>, Status> {
        let index = self
            .node
            .read_index_as_leader()
            .await
            .map_err(leader_status)?;
        Ok(Response::new(ReadIndexResponse { index }))
    }

    async fn lease_keep_alive(
        &self,
        req: Request<LeaseKeepAliveRequest>,
    ) -> Result<Response<LeaseKeepAliveResponse>, Status> {
        let id = req.into_inner().id;
        let ttl = match self.node.lease_keepalive_as_leader(id) {
            Ok(ttl) => ttl,
            Err(EtcdError::LeaseNotFound) => 0,
            Err(e) => return Err(leader_status(e)),
        };
        Ok(Response::new(LeaseKeepAliveResponse { ttl }))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let id = req.into_inner().id;
        let resp = match self.node.lease_time_to_live_as_leader(id) {
            Ok((ttl, granted_ttl)) => LeaseTimeToLiveResponse {
                found: true,
                ttl,
                granted_ttl,
            },
            Err(EtcdError::LeaseNotFound) => LeaseTimeToLiveResponse::default(),
            Err(e) => return Err(leader_status(e)),
        };
        Ok(Response::new(resp))
    }

    async fn member_change(
        &self,
        req: Request<MemberChangeRequest>,
    ) -> Result<Response<MemberChangeResponse>, Status> {
        let req = req.into_inner();
        let kind = Kind::try_from(req.kind).map_err(|_| {
            Status::invalid_argument(format!("unknown member change kind {}", req.kind))
        })?;
        let id = match kind {
            Kind::Add => self
                .node
                .member_add_as_leader(req.peer_urls, req.is_learner)
                .await
                .map_err(leader_status)?,
            Kind::Remove => {
                self.node
                    .member_remove_as_leader(req.id)
                    .await
                    .map_err(leader_status)?;
                req.id
            }
            Kind::Promote => {
                self.node
                    .member_promote_as_leader(req.id)
                    .await
                    .map_err(leader_status)?;
                req.id
            }
        };
        Ok(Response::new(MemberChangeResponse { id }))
    }

    async fn cluster_info(
        &self,
        _req: Request<ClusterInfoRequest>,
    ) -> Result<Response<ClusterInfoResponse>, Status> {
        let members = self
            .node
            .members_local()
            .into_iter()
            .map(|m| MemberInfo {
                id: m.id,
                name: m.name,
                peer_urls: m.peer_urls,
                client_urls: m.client_urls,
                is_learner: m.is_learner,
            })
            .collect();
        Ok(Response::new(ClusterInfoResponse {
            cluster_id: self.node.cluster_id(),
            members,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use openraft::{CommittedLeaderId, Entry, LogId, SnapshotMeta, StoredMembership, Vote};

    use super::*;

    fn node(port: u16) -> PeerNode {
        PeerNode {
            peer_urls: vec![format!("https://127.0.0.1:{port}")],
        }
    }

    /// A membership as a peer's bytes may carry it: fields as given, nothing filled in
    /// (`Membership::new` would add a default node for every voter that lacks one).
    fn raw(configs: &[&[u64]], nodes: &[u64]) -> Membership<u64, PeerNode> {
        let nodes: BTreeMap<u64, PeerNode> =
            nodes.iter().map(|&id| (id, node(id as u16))).collect();
        let value = serde_json::json!({ "configs": configs, "nodes": nodes });
        serde_json::from_value(value).expect("a membership decodes from its fields")
    }

    #[test]
    fn a_membership_is_valid_when_every_voter_has_a_node() {
        check_membership(&raw(&[&[1, 2]], &[1, 2])).unwrap();
        // A node that is not a voter is a learner.
        check_membership(&raw(&[&[1, 2]], &[1, 2, 3])).unwrap();
        // Joint: the voters of both configs.
        check_membership(&raw(&[&[1, 2], &[2, 3]], &[1, 2, 3])).unwrap();
    }

    #[test]
    fn a_voter_without_a_node_is_refused_by_name() {
        let e = check_membership(&raw(&[&[1, 2, 4]], &[1, 2])).unwrap_err();
        assert!(e.contains("voter 4") && e.contains("no node"), "{e}");
        let e = check_membership(&raw(&[&[1, 2], &[2, 0x1f]], &[1, 2])).unwrap_err();
        assert!(e.contains("voter 1f"), "{e}");
    }

    #[test]
    fn a_membership_without_voters_is_refused() {
        let e = check_membership(&raw(&[], &[1])).unwrap_err();
        assert!(e.contains("no voter config"), "{e}");
        let e = check_membership(&raw(&[&[1], &[]], &[1])).unwrap_err();
        assert!(e.contains("config 1 has no voter"), "{e}");
    }

    fn log_id(term: u64, index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    #[test]
    fn append_entries_and_snapshots_are_checked_as_decoded() {
        let bad = raw(&[&[1, 2, 4]], &[1, 2]);
        let good = raw(&[&[1, 2]], &[1, 2]);
        let append = |m: &Membership<u64, PeerNode>| AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(2, 1),
            prev_log_id: Some(log_id(1, 5)),
            entries: vec![
                Entry::<TypeConfig> {
                    log_id: log_id(2, 6),
                    payload: EntryPayload::Blank,
                },
                Entry::<TypeConfig> {
                    log_id: log_id(2, 7),
                    payload: EntryPayload::Membership(m.clone()),
                },
            ],
            leader_commit: None,
        };
        // As the peer port sees them: bytes, decoded.
        let decoded = |m| decode(&encode(&append(m))).unwrap();
        check_append(&decoded(&good)).unwrap();
        let e = check_append(&decoded(&bad)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(
            e.message().contains(&format!("entry {}:", log_id(2, 7)))
                && e.message().contains("voter 4"),
            "{}",
            e.message()
        );

        let snapshot = |m: &Membership<u64, PeerNode>| InstallSnapshotRequest::<TypeConfig> {
            vote: Vote::new_committed(2, 1),
            meta: SnapshotMeta {
                last_log_id: Some(log_id(2, 7)),
                last_membership: StoredMembership::new(Some(log_id(2, 7)), m.clone()),
                snapshot_id: "s-1".into(),
            },
            offset: 0,
            data: vec![],
            done: true,
        };
        check_snapshot(&decode(&encode(&snapshot(&good))).unwrap()).unwrap();
        let e = check_snapshot(&decode(&encode(&snapshot(&bad))).unwrap()).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(
            e.message().contains("snapshot s-1") && e.message().contains("voter 4"),
            "{}",
            e.message()
        );
    }
}

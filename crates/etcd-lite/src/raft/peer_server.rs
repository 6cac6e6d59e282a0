//! The server side of the peer transport, on `--listen-peer-urls`.
//!
//! Everything a peer sends is untrusted input: undecodable bytes get `InvalidArgument` and
//! change nothing. Requests that only the leader can serve (forwarded proposals, read index,
//! lease renewals, membership changes) get `FailedPrecondition` with [`NOT_LEADER`] on a
//! follower, which tells the sender it may safely retry elsewhere.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{decode, encode};
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

//! The Cluster service: MemberList, MemberAdd, MemberRemove, MemberPromote. MemberUpdate
//! (changing a member's peer URLs) is not implemented.

use std::sync::Arc;

use etcd_client::proto::{
    PbClusterService, PbMember, PbMemberAddRequest, PbMemberAddResponse, PbMemberListRequest,
    PbMemberListResponse, PbMemberPromoteRequest, PbMemberPromoteResponse, PbMemberRemoveRequest,
    PbMemberRemoveResponse, PbMemberUpdateRequest, PbMemberUpdateResponse, PbResponseHeader,
};
use tonic::{Request, Response, Status};

use super::unary;
use crate::error::EtcdError;
use crate::node::{Member, Node};

/// etcd's `ErrGRPCMemberBadURLs`.
const ERR_MEMBER_BAD_URLS: &str = "etcdserver: given member URLs are invalid";

pub struct ClusterService {
    node: Arc<Node>,
}

impl ClusterService {
    pub fn new(node: Arc<Node>) -> Self {
        ClusterService { node }
    }
}

#[tonic::async_trait]
impl PbClusterService for ClusterService {
    async fn member_add(
        &self,
        request: Request<PbMemberAddRequest>,
    ) -> Result<Response<PbMemberAddResponse>, Status> {
        let req = request.into_inner();
        unary(&self.node, "MemberAdd", member_add(&self.node, req)).await
    }

    async fn member_remove(
        &self,
        request: Request<PbMemberRemoveRequest>,
    ) -> Result<Response<PbMemberRemoveResponse>, Status> {
        let req = request.into_inner();
        let node = &self.node;
        unary(node, "MemberRemove", async move {
            node.member_remove(req.id).await?;
            tracing::info!(member = %format_args!("{:x}", req.id), "member removed");
            let (header, members) = members(node).await?;
            Ok::<_, EtcdError>(PbMemberRemoveResponse {
                header: Some(header),
                members,
            })
        })
        .await
    }

    async fn member_update(
        &self,
        _request: Request<PbMemberUpdateRequest>,
    ) -> Result<Response<PbMemberUpdateResponse>, Status> {
        unary(&self.node, "MemberUpdate", async {
            Err::<PbMemberUpdateResponse, _>(EtcdError::Unimplemented(
                "Cluster.MemberUpdate".into(),
            ))
        })
        .await
    }

    async fn member_list(
        &self,
        request: Request<PbMemberListRequest>,
    ) -> Result<Response<PbMemberListResponse>, Status> {
        let req = request.into_inner();
        let node = &self.node;
        unary(node, "MemberList", async move {
            if req.linearizable {
                node.read_barrier().await?;
            }
            let (header, members) = members(node).await?;
            Ok::<_, EtcdError>(PbMemberListResponse {
                header: Some(header),
                members,
            })
        })
        .await
    }

    async fn member_promote(
        &self,
        request: Request<PbMemberPromoteRequest>,
    ) -> Result<Response<PbMemberPromoteResponse>, Status> {
        let req = request.into_inner();
        let node = &self.node;
        unary(node, "MemberPromote", async move {
            node.member_promote(req.id).await?;
            tracing::info!(member = %format_args!("{:x}", req.id), "member promoted");
            let (header, members) = members(node).await?;
            Ok::<_, EtcdError>(PbMemberPromoteResponse {
                header: Some(header),
                members,
            })
        })
        .await
    }
}

async fn member_add(node: &Node, req: PbMemberAddRequest) -> Result<PbMemberAddResponse, Status> {
    if !valid_peer_urls(&req.peer_ur_ls) {
        return Err(Status::invalid_argument(ERR_MEMBER_BAD_URLS));
    }
    let id = node
        .member_add(req.peer_ur_ls.clone(), req.is_learner)
        .await?;
    tracing::info!(member = %format_args!("{id:x}"), learner = req.is_learner, peer_urls = ?req.peer_ur_ls, "member added");
    let (header, members) = members(node).await?;
    // As etcd: the new member has no name nor client URLs until it starts and publishes them.
    let member = members
        .iter()
        .find(|m| m.id == id)
        .cloned()
        .unwrap_or_else(|| PbMember {
            id,
            peer_ur_ls: req.peer_ur_ls,
            is_learner: req.is_learner,
            ..Default::default()
        });
    Ok(PbMemberAddResponse {
        header: Some(header),
        member: Some(member),
        members,
    })
}

/// etcd's `types.NewURLs` check: at least one URL, each `http(s)://host:port`.
fn valid_peer_urls(urls: &[String]) -> bool {
    !urls.is_empty()
        && urls
            .iter()
            .all(|u| matches!(kl_cli::parse_url_list(u), Ok(parsed) if parsed.len() == 1))
}

async fn members(node: &Node) -> Result<(PbResponseHeader, Vec<PbMember>), EtcdError> {
    let members = node.member_list().await?;
    let header = node.header(node.store().read().revision());
    Ok((header, members.into_iter().map(pb_member).collect()))
}

fn pb_member(m: Member) -> PbMember {
    PbMember {
        id: m.id,
        name: m.name,
        peer_ur_ls: m.peer_urls,
        client_ur_ls: m.client_urls,
        is_learner: m.is_learner,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_urls_are_checked_as_etcd() {
        assert!(valid_peer_urls(&["https://127.0.0.1:2380".into()]));
        assert!(valid_peer_urls(&[
            "http://a:2380".into(),
            "https://b:2380".into()
        ]));
        assert!(!valid_peer_urls(&[]));
        assert!(!valid_peer_urls(&["127.0.0.1:2380".into()]));
        assert!(!valid_peer_urls(&["http://a:1,http://b:2".into()]));
    }
}

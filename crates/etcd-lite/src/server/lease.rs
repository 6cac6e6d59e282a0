//! The Lease service: Grant, Revoke, the KeepAlive stream, TimeToLive, Leases.
//!
//! Grant and Revoke go through the log. Deadlines live in the leader's lessor, so KeepAlive
//! and TimeToLive ask [`Node`], which asks the leader.

use std::{pin::Pin, sync::Arc};

use etcd_client::proto::{
    PbLeaseGrantRequest, PbLeaseGrantResponse, PbLeaseKeepAliveRequest, PbLeaseKeepAliveResponse,
    PbLeaseLeasesRequest, PbLeaseLeasesResponse, PbLeaseRevokeRequest, PbLeaseRevokeResponse,
    PbLeaseService, PbLeaseStatus, PbLeaseTimeToLiveRequest, PbLeaseTimeToLiveResponse,
};
use futures::{Stream, StreamExt};
use rand::Rng;
use tonic::{Code, Request, Response, Status, Streaming};

use super::{unary, unexpected, Stopping, StreamRecord};
use crate::command::{Command, CommandResponse};
use crate::error::EtcdError;
use crate::mvcc::MAX_LEASE_TTL;
use crate::node::Node;

/// How many random ids a Grant without an id tries before giving up (a collision needs two
/// grants to draw the same 63-bit number at once).
const GRANT_ID_ATTEMPTS: usize = 5;

pub struct LeaseService {
    node: Arc<Node>,
    stopping: Stopping,
}

impl LeaseService {
    pub fn new(node: Arc<Node>, stopping: Stopping) -> Self {
        LeaseService { node, stopping }
    }
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<PbLeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl PbLeaseService for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<PbLeaseGrantRequest>,
    ) -> Result<Response<PbLeaseGrantResponse>, Status> {
        let req = request.into_inner();
        unary(&self.node, "LeaseGrant", grant(&self.node, req)).await
    }

    async fn lease_revoke(
        &self,
        request: Request<PbLeaseRevokeRequest>,
    ) -> Result<Response<PbLeaseRevokeResponse>, Status> {
        let req = request.into_inner();
        unary(&self.node, "LeaseRevoke", revoke(&self.node, req)).await
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<PbLeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let inbound = request.into_inner();
        Ok(Response::new(Box::pin(keep_alive_stream(
            self.node.clone(),
            self.stopping.clone(),
            inbound,
        ))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<PbLeaseTimeToLiveRequest>,
    ) -> Result<Response<PbLeaseTimeToLiveResponse>, Status> {
        let req = request.into_inner();
        unary(&self.node, "LeaseTimeToLive", time_to_live(&self.node, req)).await
    }

    async fn lease_leases(
        &self,
        _request: Request<PbLeaseLeasesRequest>,
    ) -> Result<Response<PbLeaseLeasesResponse>, Status> {
        unary(&self.node, "LeaseLeases", leases(&self.node)).await
    }
}

async fn grant(node: &Node, req: PbLeaseGrantRequest) -> Result<PbLeaseGrantResponse, EtcdError> {
    if req.ttl > MAX_LEASE_TTL {
        return Err(EtcdError::LeaseTtlTooLarge);
    }
    // etcd raises a short (or non-positive) TTL to the minimum rather than refusing it.
    let ttl = req.ttl.max(node.min_lease_ttl());
    let attempts = if req.id == 0 { GRANT_ID_ATTEMPTS } else { 1 };
    let mut last = EtcdError::LeaseExists;
    for _ in 0..attempts {
        let id = if req.id == 0 {
            unused_lease_id(node)
        } else {
            req.id
        };
        match node.propose(Command::LeaseGrant { id, ttl }).await {
            Ok(CommandResponse::LeaseGrant { id, ttl, revision }) => {
                tracing::debug!(lease = id, ttl, "lease granted");
                return Ok(PbLeaseGrantResponse {
                    header: Some(node.header(revision)),
                    id,
                    ttl,
                    error: String::new(),
                });
            }
            Ok(other) => return Err(unexpected("LeaseGrant", &other)),
            // Another grant drew the same random id first: draw again.
            Err(EtcdError::LeaseExists) if req.id == 0 => last = EtcdError::LeaseExists,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// A random positive id (etcd uses only positive int64 ids) that no lease has now.
fn unused_lease_id(node: &Node) -> i64 {
    let mut rng = rand::thread_rng();
    loop {
        let id = rng.gen_range(1..=i64::MAX);
        if node.store().read().lease(id).is_none() {
            return id;
        }
    }
}

async fn revoke(
    node: &Node,
    req: PbLeaseRevokeRequest,
) -> Result<PbLeaseRevokeResponse, EtcdError> {
    match node.propose(Command::LeaseRevoke { id: req.id }).await? {
        CommandResponse::LeaseRevoke { revision } => {
            tracing::debug!(lease = req.id, "lease revoked");
            Ok(PbLeaseRevokeResponse {
                header: Some(node.header(revision)),
            })
        }
        other => Err(unexpected("LeaseRevoke", &other)),
    }
}

/// The KeepAlive stream: requests are served one at a time, in order, as etcd does.
fn keep_alive_stream<S>(
    node: Arc<Node>,
    mut stopping: Stopping,
    mut inbound: S,
) -> impl Stream<Item = Result<PbLeaseKeepAliveResponse, Status>> + Send + 'static
where
    S: Stream<Item = Result<PbLeaseKeepAliveRequest, Status>> + Send + Unpin + 'static,
{
    async_stream::stream! {
        let mut record = StreamRecord::new(node.clone(), "LeaseKeepAlive");
        loop {
            let next = tokio::select! {
                biased;
                _ = stopping.wait() => Err(EtcdError::Stopped),
                req = inbound.next() => Ok(req),
            };
            let req = match next {
                Err(e) => {
                    record.finish(e.code());
                    yield Err(e.into());
                    break;
                }
                Ok(None) => {
                    record.finish(Code::Ok);
                    break;
                }
                Ok(Some(Err(status))) => {
                    tracing::debug!(code = ?status.code(), error = status.message(), "keepalive stream broken");
                    record.finish(status.code());
                    yield Err(status);
                    break;
                }
                Ok(Some(Ok(req))) => req,
            };
            match keep_alive_once(&node, req.id).await {
                Ok(resp) => yield Ok(resp),
                Err(e) => {
                    tracing::debug!(lease = req.id, error = %e, "keepalive failed");
                    record.finish(e.code());
                    yield Err(e.into());
                    break;
                }
            }
        }
    }
}

/// One renewal. As etcd: the header is taken *before* renewing (so a client never sees a
/// renewal at a revision after the lease's revocation), and an unknown lease is not an error
/// but a response with TTL 0.
async fn keep_alive_once(node: &Node, id: i64) -> Result<PbLeaseKeepAliveResponse, EtcdError> {
    let header = node.header(node.store().read().revision());
    let ttl = match node.lease_keepalive(id).await {
        Ok(ttl) => ttl,
        Err(EtcdError::LeaseNotFound) => 0,
        Err(e) => return Err(e),
    };
    Ok(PbLeaseKeepAliveResponse {
        header: Some(header),
        id,
        ttl,
    })
}

async fn time_to_live(
    node: &Node,
    req: PbLeaseTimeToLiveRequest,
) -> Result<PbLeaseTimeToLiveResponse, EtcdError> {
    let (ttl, granted_ttl) = match node.lease_time_to_live(req.id).await {
        Ok(ttls) => ttls,
        // etcd answers an unknown (or expired) lease with TTL -1, not an error; etcdctl prints
        // "lease ... already expired".
        Err(EtcdError::LeaseNotFound) => {
            return Ok(PbLeaseTimeToLiveResponse {
                header: Some(node.header(node.store().read().revision())),
                id: req.id,
                ttl: -1,
                ..Default::default()
            });
        }
        Err(e) => return Err(e),
    };
    let keys = if req.keys {
        // The keys come from the local store: make it as fresh as the leader's answer.
        node.read_barrier().await?;
        node.store()
            .read()
            .lease(req.id)
            .map(|l| l.keys)
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    Ok(PbLeaseTimeToLiveResponse {
        header: Some(node.header(node.store().read().revision())),
        id: req.id,
        ttl,
        granted_ttl,
        keys,
    })
}

async fn leases(node: &Node) -> Result<PbLeaseLeasesResponse, EtcdError> {
    node.read_barrier().await?;
    let (leases, revision) = {
        let store = node.store().read();
        (store.leases(), store.revision())
    };
    Ok(PbLeaseLeasesResponse {
        header: Some(node.header(revision)),
        leases: leases
            .into_iter()
            .map(|(id, _ttl)| PbLeaseStatus { id })
            .collect(),
    })
}

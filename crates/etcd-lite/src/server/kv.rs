//! The KV service: Range, Put, DeleteRange, Txn, Compact.
//!
//! Writes are validated here (etcd's `checkPutRequest` & co., via the engine's validators),
//! checked against `--max-request-bytes`, then proposed through Raft; the response comes from
//! the apply. Reads (Range, and a Txn that only reads) are served from the local store: right
//! away when serializable, after a ReadIndex barrier otherwise.

use std::sync::Arc;

use etcd_client::proto::{
    PbCompactionRequest, PbCompactionResponse, PbDeleteRequest, PbDeleteResponse, PbKvService,
    PbPutRequest, PbPutResponse, PbRangeRequest, PbRangeResponse, PbRangeStreamResponse,
    PbResponseHeader, PbTxnOpRequest, PbTxnRequest, PbTxnResponse,
};
use prost::Message;
use tonic::{Request, Response, Status};

use super::{unary, unexpected};
use crate::command::{Command, CommandResponse};
use crate::error::EtcdError;
use crate::mvcc;
use crate::node::Node;

pub struct KvService {
    node: Arc<Node>,
}

impl KvService {
    pub fn new(node: Arc<Node>) -> Self {
        KvService { node }
    }
}

#[tonic::async_trait]
impl PbKvService for KvService {
    async fn range(
        &self,
        request: Request<PbRangeRequest>,
    ) -> Result<Response<PbRangeResponse>, Status> {
        let req = request.into_inner();
        unary(&self.node, "Range", range(&self.node, req)).await
    }

    type RangeStreamStream =
        futures::stream::Iter<std::vec::IntoIter<Result<PbRangeStreamResponse, Status>>>;

    /// Served as one chunk holding the whole Range response: a valid stream of chunks, and
    /// the size limits are those of Range.
    async fn range_stream(
        &self,
        request: Request<PbRangeRequest>,
    ) -> Result<Response<Self::RangeStreamStream>, Status> {
        let req = request.into_inner();
        let resp = unary(&self.node, "RangeStream", range(&self.node, req)).await?;
        let chunk = PbRangeStreamResponse {
            range_response: Some(resp.into_inner()),
        };
        Ok(Response::new(futures::stream::iter(vec![Ok(chunk)])))
    }

    async fn put(&self, request: Request<PbPutRequest>) -> Result<Response<PbPutResponse>, Status> {
        let req = request.into_inner();
        unary(&self.node, "Put", put(&self.node, req)).await
    }

    async fn delete_range(
        &self,
        request: Request<PbDeleteRequest>,
    ) -> Result<Response<PbDeleteResponse>, Status> {
        let req = request.into_inner();
        unary(&self.node, "DeleteRange", delete_range(&self.node, req)).await
    }

    async fn txn(&self, request: Request<PbTxnRequest>) -> Result<Response<PbTxnResponse>, Status> {
        let req = request.into_inner();
        unary(&self.node, "Txn", txn(&self.node, req)).await
    }

    async fn compact(
        &self,
        request: Request<PbCompactionRequest>,
    ) -> Result<Response<PbCompactionResponse>, Status> {
        let req = request.into_inner();
        unary(&self.node, "Compact", compact(&self.node, req)).await
    }
}

async fn range(node: &Node, req: PbRangeRequest) -> Result<PbRangeResponse, EtcdError> {
    mvcc::validate_range(&req)?;
    if !req.serializable {
        node.read_barrier().await?;
    }
    let (mut resp, revision) = {
        let store = node.store().read();
        (store.range(&req)?, store.revision())
    };
    resp.header = Some(node.header(revision));
    Ok(resp)
}

async fn put(node: &Node, req: PbPutRequest) -> Result<PbPutResponse, EtcdError> {
    mvcc::validate_put(&req)?;
    check_size(node, req.encoded_len())?;
    match node.propose(Command::Put(req)).await? {
        CommandResponse::Put(mut resp) => {
            resp.header = Some(full_header(node, resp.header));
            Ok(resp)
        }
        other => Err(unexpected("Put", &other)),
    }
}

async fn delete_range(node: &Node, req: PbDeleteRequest) -> Result<PbDeleteResponse, EtcdError> {
    mvcc::validate_delete(&req)?;
    check_size(node, req.encoded_len())?;
    match node.propose(Command::DeleteRange(req)).await? {
        CommandResponse::DeleteRange(mut resp) => {
            resp.header = Some(full_header(node, resp.header));
            Ok(resp)
        }
        other => Err(unexpected("DeleteRange", &other)),
    }
}

async fn txn(node: &Node, req: PbTxnRequest) -> Result<PbTxnResponse, EtcdError> {
    mvcc::validate_txn(&req, node.config().max_txn_ops)?;
    if mvcc::is_txn_read_only(&req) {
        // A txn that only reads is a read, as in etcd: linearizable unless every Range in it
        // is serializable, and evaluated locally without the log.
        let serializable = txn_is_serializable(&req);
        tracing::trace!(serializable, "read-only txn");
        if !serializable {
            node.read_barrier().await?;
        }
        let (mut resp, revision) = {
            let store = node.store().read();
            (store.txn_read(&req)?, store.revision())
        };
        resp.header = Some(node.header(revision));
        return Ok(resp);
    }
    check_size(node, req.encoded_len())?;
    match node.propose(Command::Txn(req)).await? {
        CommandResponse::Txn(mut resp) => {
            resp.header = Some(full_header(node, resp.header));
            Ok(resp)
        }
        other => Err(unexpected("Txn", &other)),
    }
}

async fn compact(node: &Node, req: PbCompactionRequest) -> Result<PbCompactionResponse, EtcdError> {
    // `physical` asks etcd to wait until the compaction has reached the disk; here applying is
    // reaching the disk, so it needs nothing more.
    match node
        .propose(Command::Compact {
            revision: req.revision,
        })
        .await?
    {
        CommandResponse::Compact { revision } => Ok(PbCompactionResponse {
            header: Some(node.header(revision)),
        }),
        other => Err(unexpected("Compact", &other)),
    }
}

/// etcd's `ErrRequestTooLarge`: the size of what would go into the log.
fn check_size(node: &Node, len: usize) -> Result<(), EtcdError> {
    if len > node.config().max_request_bytes {
        return Err(EtcdError::RequestTooLarge);
    }
    Ok(())
}

/// The engine's header carries the revision; the member fills in the rest.
fn full_header(node: &Node, engine: Option<PbResponseHeader>) -> PbResponseHeader {
    node.header(engine.map(|h| h.revision).unwrap_or_default())
}

/// etcd's `isTxnSerializable`, for a txn that [`mvcc::is_txn_read_only`] accepts: every
/// Range in it is serializable, so it may be served without a ReadIndex barrier. As in etcd, a
/// txn with no ops at all (compares only) counts as serializable.
pub(crate) fn txn_is_serializable(req: &PbTxnRequest) -> bool {
    req.success
        .iter()
        .chain(req.failure.iter())
        .all(|op| matches!(&op.request, Some(PbTxnOpRequest::RequestRange(r)) if r.serializable))
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_client::proto::{PbPutRequest, PbTxnRequestOp};

    fn range_op(serializable: bool) -> PbTxnRequestOp {
        PbTxnRequestOp {
            request: Some(PbTxnOpRequest::RequestRange(PbRangeRequest {
                key: b"k".to_vec(),
                serializable,
                ..Default::default()
            })),
        }
    }

    fn put_op() -> PbTxnRequestOp {
        PbTxnRequestOp {
            request: Some(PbTxnOpRequest::RequestPut(PbPutRequest {
                key: b"k".to_vec(),
                ..Default::default()
            })),
        }
    }

    fn txn_op(txn: PbTxnRequest) -> PbTxnRequestOp {
        PbTxnRequestOp {
            request: Some(PbTxnOpRequest::RequestTxn(txn)),
        }
    }

    #[test]
    fn serializable_txns_as_etcd() {
        let empty = PbTxnRequest::default();
        assert!(mvcc::is_txn_read_only(&empty));
        assert!(
            txn_is_serializable(&empty),
            "etcd treats an op-less txn as serializable"
        );

        let mixed = PbTxnRequest {
            success: vec![range_op(false)],
            failure: vec![range_op(true)],
            ..Default::default()
        };
        assert!(mvcc::is_txn_read_only(&mixed));
        assert!(!txn_is_serializable(&mixed));

        let serial = PbTxnRequest {
            success: vec![range_op(true)],
            failure: vec![range_op(true)],
            ..Default::default()
        };
        assert!(txn_is_serializable(&serial));

        // A nested txn is never serializable (nor read-only) at etcd's first level.
        let nested = PbTxnRequest {
            success: vec![range_op(true), txn_op(serial.clone())],
            ..Default::default()
        };
        assert!(!txn_is_serializable(&nested));
        assert!(!mvcc::is_txn_read_only(&nested));

        let with_put = PbTxnRequest {
            success: vec![range_op(true), put_op()],
            ..Default::default()
        };
        assert!(!txn_is_serializable(&with_put));
    }
}

//! The Maintenance service: Status, and Alarm (list, always empty: etcd-lite raises no
//! alarms). Every other RPC is `UNIMPLEMENTED` with a message naming it.

use std::sync::Arc;

use etcd_client::proto::{
    PbAlarmRequest, PbAlarmResponse, PbDefragmentRequest, PbDefragmentResponse, PbDowngradeRequest,
    PbDowngradeResponse, PbHashKvRequest, PbHashKvResponse, PbHashRequest, PbHashResponse,
    PbMaintenanceService, PbMoveLeaderRequest, PbMoveLeaderResponse, PbSnapshotRequest,
    PbSnapshotResponse, PbStatusRequest, PbStatusResponse,
};
use tonic::{Request, Response, Status};

use super::unary;
use crate::error::EtcdError;
use crate::node::Node;

/// The etcd API level etcd-lite implements, reported as Status.version (and by `--version`).
/// Clients gate features on it (e.g. etcdctl, client-go), so it names the etcd release whose
/// v3 API etcd-lite serves, not etcd-lite's own version.
pub const ETCD_API_VERSION: &str = "3.5.0";

/// `AlarmRequest.AlarmAction`.
const ALARM_GET: i32 = 0;
const ALARM_ACTIVATE: i32 = 1;
const ALARM_DEACTIVATE: i32 = 2;

pub struct MaintenanceService {
    node: Arc<Node>,
}

impl MaintenanceService {
    pub fn new(node: Arc<Node>) -> Self {
        MaintenanceService { node }
    }

    async fn unimplemented<T>(&self, rpc: &'static str) -> Result<Response<T>, Status> {
        unary(&self.node, rpc, async {
            Err::<T, _>(EtcdError::Unimplemented(format!("Maintenance.{rpc}")))
        })
        .await
    }
}

#[tonic::async_trait]
impl PbMaintenanceService for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<PbAlarmRequest>,
    ) -> Result<Response<PbAlarmResponse>, Status> {
        let req = request.into_inner();
        let node = &self.node;
        unary(node, "Alarm", async move {
            match req.action {
                ALARM_GET => Ok(PbAlarmResponse {
                    header: Some(node.header(node.store().read().revision())),
                    alarms: Vec::new(),
                }),
                action => Err(EtcdError::Unimplemented(format!(
                    "Maintenance.Alarm {}",
                    alarm_action_name(action)
                ))),
            }
        })
        .await
    }

    async fn status(
        &self,
        _request: Request<PbStatusRequest>,
    ) -> Result<Response<PbStatusResponse>, Status> {
        let node = &self.node;
        unary(node, "Status", async move {
            let st = node.status();
            let db_size = i64::try_from(st.db_size).unwrap_or(i64::MAX);
            Ok::<_, EtcdError>(PbStatusResponse {
                header: Some(node.header(node.store().read().revision())),
                version: ETCD_API_VERSION.to_string(),
                db_size,
                // sled does not report free pages apart: all of it is in use.
                db_size_in_use: db_size,
                leader: st.leader.unwrap_or(0),
                raft_index: st.raft_index,
                raft_term: st.raft_term,
                raft_applied_index: st.raft_applied_index,
                is_learner: st.is_learner,
                // etcd lists what keeps the member from serving; a missing leader first.
                errors: if st.leader.is_none() {
                    vec![EtcdError::NoLeader.to_string()]
                } else {
                    Vec::new()
                },
                ..Default::default()
            })
        })
        .await
    }

    async fn defragment(
        &self,
        _request: Request<PbDefragmentRequest>,
    ) -> Result<Response<PbDefragmentResponse>, Status> {
        self.unimplemented("Defragment").await
    }

    async fn hash(
        &self,
        _request: Request<PbHashRequest>,
    ) -> Result<Response<PbHashResponse>, Status> {
        self.unimplemented("Hash").await
    }

    async fn hash_kv(
        &self,
        _request: Request<PbHashKvRequest>,
    ) -> Result<Response<PbHashKvResponse>, Status> {
        self.unimplemented("HashKV").await
    }

    type SnapshotStream = futures::stream::Empty<Result<PbSnapshotResponse, Status>>;

    async fn snapshot(
        &self,
        _request: Request<PbSnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        self.unimplemented("Snapshot").await
    }

    async fn move_leader(
        &self,
        _request: Request<PbMoveLeaderRequest>,
    ) -> Result<Response<PbMoveLeaderResponse>, Status> {
        self.unimplemented("MoveLeader").await
    }

    async fn downgrade(
        &self,
        _request: Request<PbDowngradeRequest>,
    ) -> Result<Response<PbDowngradeResponse>, Status> {
        self.unimplemented("Downgrade").await
    }
}

fn alarm_action_name(action: i32) -> String {
    match action {
        ALARM_GET => "GET".into(),
        ALARM_ACTIVATE => "ACTIVATE".into(),
        ALARM_DEACTIVATE => "DEACTIVATE".into(),
        other => format!("action {other}"),
    }
}

//! etcd-lite's Prometheus metrics, with etcd's names, in one registry per member (so that
//! several members in one test process do not share counters).

use prometheus::{Encoder, Gauge, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

pub struct Metrics {
    registry: Registry,
    /// 1 when this member knows a leader, 0 otherwise.
    pub has_leader: IntGauge,
    /// 1 when this member is the leader.
    pub is_leader: IntGauge,
    pub leader_changes_seen: IntCounter,
    pub proposals_committed: IntGauge,
    pub proposals_applied: IntGauge,
    pub proposals_pending: IntGauge,
    pub proposals_failed: IntCounter,
    pub db_total_size: IntGauge,
    pub mvcc_revision: IntGauge,
    /// Client gRPC requests by method and code (as grpc-go's `grpc_server_handled_total`).
    pub grpc_handled: IntCounterVec,
    pub has_leader_since: Gauge,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let g = |name: &str, help: &str| {
            let m = IntGauge::new(name, help).expect("metric");
            registry.register(Box::new(m.clone())).expect("register");
            m
        };
        let has_leader = g(
            "etcd_server_has_leader",
            "Whether or not a leader exists. 1 is existence, 0 is not.",
        );
        let is_leader = g(
            "etcd_server_is_leader",
            "Whether or not this member is a leader. 1 if is, 0 otherwise.",
        );
        let proposals_committed = g(
            "etcd_server_proposals_committed_total",
            "The total number of consensus proposals committed.",
        );
        let proposals_applied = g(
            "etcd_server_proposals_applied_total",
            "The total number of consensus proposals applied.",
        );
        let proposals_pending = g(
            "etcd_server_proposals_pending",
            "The current number of pending proposals to commit.",
        );
        let db_total_size = g(
            "etcd_mvcc_db_total_size_in_bytes",
            "Total size of the underlying database physically allocated in bytes.",
        );
        let mvcc_revision = g(
            "etcd_debugging_mvcc_current_revision",
            "The current revision of store.",
        );
        let leader_changes_seen = IntCounter::new(
            "etcd_server_leader_changes_seen_total",
            "The number of leader changes seen.",
        )
        .expect("metric");
        registry
            .register(Box::new(leader_changes_seen.clone()))
            .expect("register");
        let proposals_failed = IntCounter::new(
            "etcd_server_proposals_failed_total",
            "The total number of failed proposals seen.",
        )
        .expect("metric");
        registry
            .register(Box::new(proposals_failed.clone()))
            .expect("register");
        let grpc_handled = IntCounterVec::new(
            Opts::new(
                "grpc_server_handled_total",
                "Total number of RPCs completed on the server, regardless of success or failure.",
            ),
            &["grpc_method", "grpc_code"],
        )
        .expect("metric");
        registry
            .register(Box::new(grpc_handled.clone()))
            .expect("register");
        let has_leader_since = Gauge::new(
            "etcd_lite_leader_since_seconds",
            "Unix time at which this member last saw a new leader.",
        )
        .expect("metric");
        registry
            .register(Box::new(has_leader_since.clone()))
            .expect("register");
        Metrics {
            registry,
            has_leader,
            is_leader,
            leader_changes_seen,
            proposals_committed,
            proposals_applied,
            proposals_pending,
            proposals_failed,
            db_total_size,
            mvcc_revision,
            grpc_handled,
            has_leader_since,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = prometheus::TextEncoder::new();
        let _ = encoder.encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

//! The controller-manager's Prometheus metrics and their text rendering for `/metrics`.
//! `leader_election_master_status` comes from the leader elector and is registered here too.
use prometheus::{Encoder, IntCounter, IntCounterVec, Opts, Registry, TextEncoder};

/// Every metric the controller-manager exports.
pub struct Metrics {
    pub registry: Registry,
    /// `kube_lite_fenced_writes_total`: controller writes the apiserver refused as `Fenced`
    /// (each ends the term: another leader exists). kube-lite's own: upstream has no fencing.
    pub fenced_writes: IntCounter,
    /// `controller_sync_total{controller,result}`: syncs by outcome (`success`, `error`).
    pub syncs: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let fenced_writes = IntCounter::new(
            "kube_lite_fenced_writes_total",
            "Controller writes refused by the apiserver because their fencing token was stale.",
        )
        .expect("static metric");
        let syncs = IntCounterVec::new(
            Opts::new("controller_sync_total", "Controller syncs by result."),
            &["controller", "result"],
        )
        .expect("static metric");
        registry
            .register(Box::new(fenced_writes.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(syncs.clone()))
            .expect("unique metric");
        Metrics {
            registry,
            fenced_writes,
            syncs,
        }
    }

    /// Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

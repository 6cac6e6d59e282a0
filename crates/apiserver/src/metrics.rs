//! The apiserver's Prometheus metrics, under kube-apiserver's names, and their text rendering
//! for `/metrics`.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Every metric the apiserver exports.
pub struct Metrics {
    registry: Registry,
    /// `apiserver_request_total{verb,resource,code}`: finished requests; code is the HTTP
    /// status kube-apiserver would answer with.
    pub requests: IntCounterVec,
    /// `apiserver_request_duration_seconds{verb,resource}`.
    pub request_duration: HistogramVec,
    /// `apiserver_current_inflight_requests{request_kind}`: readOnly or mutating, watches
    /// excluded (as upstream).
    pub inflight: IntGaugeVec,
    /// `apiserver_longrunning_requests{verb,resource}`: open watches and log streams.
    pub longrunning: IntGaugeVec,
    /// `etcd_request_duration_seconds{operation,type}`: one etcd call, failover included.
    pub etcd_request_duration: HistogramVec,
    /// `apiserver_watch_cache_events_dispatched_total{resource}`.
    pub watch_events: IntCounterVec,
    /// `apiserver_terminated_watchers_total{resource}`: watchers closed for being too slow.
    pub terminated_watchers: IntCounterVec,
    /// `apiserver_storage_compactions_total`: compactions this apiserver ran.
    pub compactions: IntGauge,
    /// `apiserver_authorization_decisions_total{decision}`: allowed or denied requests
    /// (`--authorization-mode`; watches and logs included).
    pub authorization_decisions: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        // Upstream's buckets for apiserver_request_duration_seconds.
        let request_buckets = vec![
            0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0,
            8.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
        ];
        let etcd_buckets = vec![
            0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0,
            8.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
        ];
        let requests = IntCounterVec::new(
            Opts::new(
                "apiserver_request_total",
                "Counter of apiserver requests broken out for each verb, resource and HTTP response code.",
            ),
            &["verb", "resource", "code"],
        )
        .expect("static metric");
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "apiserver_request_duration_seconds",
                "Response latency distribution in seconds for each verb and resource.",
            )
            .buckets(request_buckets),
            &["verb", "resource"],
        )
        .expect("static metric");
        let inflight = IntGaugeVec::new(
            Opts::new(
                "apiserver_current_inflight_requests",
                "Maximal number of currently used inflight request limit of this apiserver per request kind in last second.",
            ),
            &["request_kind"],
        )
        .expect("static metric");
        let longrunning = IntGaugeVec::new(
            Opts::new(
                "apiserver_longrunning_requests",
                "Gauge of all active long-running apiserver requests broken out by verb and resource.",
            ),
            &["verb", "resource"],
        )
        .expect("static metric");
        let etcd_request_duration = HistogramVec::new(
            HistogramOpts::new(
                "etcd_request_duration_seconds",
                "Etcd request latency in seconds for each operation and object type.",
            )
            .buckets(etcd_buckets),
            &["operation", "type"],
        )
        .expect("static metric");
        let watch_events = IntCounterVec::new(
            Opts::new(
                "apiserver_watch_cache_events_dispatched_total",
                "Counter of events dispatched in watch cache broken by resource type.",
            ),
            &["resource"],
        )
        .expect("static metric");
        let terminated_watchers = IntCounterVec::new(
            Opts::new(
                "apiserver_terminated_watchers_total",
                "Counter of watchers closed due to unresponsiveness broken by resource type.",
            ),
            &["resource"],
        )
        .expect("static metric");
        let compactions = IntGauge::new(
            "apiserver_storage_compactions_total",
            "Number of etcd compactions this apiserver performed.",
        )
        .expect("static metric");
        let authorization_decisions = IntCounterVec::new(
            Opts::new(
                "apiserver_authorization_decisions_total",
                "Total number of terminal decisions made by an authorizer split by decision.",
            ),
            &["decision"],
        )
        .expect("static metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(authorization_decisions.clone()),
            Box::new(request_duration.clone()),
            Box::new(inflight.clone()),
            Box::new(longrunning.clone()),
            Box::new(etcd_request_duration.clone()),
            Box::new(watch_events.clone()),
            Box::new(terminated_watchers.clone()),
            Box::new(compactions.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        inflight.with_label_values(&["readOnly"]).set(0);
        inflight.with_label_values(&["mutating"]).set(0);
        Metrics {
            registry,
            requests,
            request_duration,
            inflight,
            longrunning,
            etcd_request_duration,
            watch_events,
            terminated_watchers,
            compactions,
            authorization_decisions,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

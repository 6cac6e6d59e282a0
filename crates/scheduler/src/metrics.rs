//! The scheduler's Prometheus metrics, under kube-scheduler's names
//! (`leader_election_master_status` is leader election's, registered here too).
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric the scheduler exports.
pub struct Metrics {
    registry: Registry,
    /// `scheduler_schedule_attempts_total{result,profile}`: result is `scheduled`,
    /// `unschedulable` or `error`.
    pub attempts: IntCounterVec,
    /// `scheduler_scheduling_attempt_duration_seconds{result,profile}`: one pod through the
    /// algorithm (the Bind is asynchronous and not included, as upstream).
    pub attempt_duration: HistogramVec,
    /// `scheduler_pending_pods{queue}`: `active`, `backoff`, `unschedulable`.
    pub pending: IntGaugeVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let attempts = IntCounterVec::new(
            Opts::new(
                "scheduler_schedule_attempts_total",
                "Number of attempts to schedule pods, by the result.",
            ),
            &["result", "profile"],
        )
        .expect("static metric");
        let attempt_duration = HistogramVec::new(
            HistogramOpts::new(
                "scheduler_scheduling_attempt_duration_seconds",
                "Scheduling attempt latency in seconds (scheduling algorithm + binding)",
            )
            .buckets(prometheus::exponential_buckets(0.001, 2.0, 15).expect("static buckets")),
            &["result", "profile"],
        )
        .expect("static metric");
        let pending = IntGaugeVec::new(
            Opts::new(
                "scheduler_pending_pods",
                "Number of pending pods, by the queue type.",
            ),
            &["queue"],
        )
        .expect("static metric");
        for c in [
            Box::new(attempts.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(attempt_duration.clone()),
            Box::new(pending.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Metrics {
            registry,
            attempts,
            attempt_duration,
            pending,
        }
    }

    /// The registry, for metrics other modules own (`leader_election_master_status`).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_upstream_names() {
        let m = Metrics::new();
        m.attempts
            .with_label_values(&["scheduled", "default-scheduler"])
            .inc();
        m.pending.with_label_values(&["active"]).set(3);
        let text = m.render();
        assert!(text.contains(
            "scheduler_schedule_attempts_total{profile=\"default-scheduler\",result=\"scheduled\"} 1"
        ));
        assert!(text.contains("scheduler_pending_pods{queue=\"active\"} 3"));
    }
}

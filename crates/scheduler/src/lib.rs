//! kube-lite's scheduler: places pending pods on nodes, as kube-scheduler does.
//!
//! Layout:
//! * [`resources`]: a pod's cpu/memory requests and a node's allocatable, in integer units.
//! * [`cache`]: nodes and the requests of the pods bound (or assumed) on each.
//! * [`algorithm`]: pure: filters, scores and upstream's failure message; pod + cache → node.
//! * [`queue`]: the scheduling queue (active, backoff, unschedulable), pure.
//! * [`scheduler`]: the state the informers feed, and the scheduling loop with its fenced
//!   writes (Bind, the PodScheduled condition, Events).
//! * [`config`]: flags checked together; [`http`]: /healthz and /metrics on the secure port;
//!   [`metrics`]: kube-scheduler's metric names.
//! * [`run`]: wiring and lifetime: informers, leader election, shutdown.
//!
//! The algorithm never does I/O; only [`scheduler`] and [`run`] talk to the apiserver, and
//! only through kl-client (informers, leader election, fenced `Api` calls).
#![forbid(unsafe_code)]

pub mod algorithm;
pub mod cache;
pub mod config;
pub mod http;
pub mod metrics;
pub mod queue;
pub mod resources;
pub mod run;
pub mod scheduler;

pub use config::Config;
pub use run::{run, run_until};

#[cfg(test)]
mod testutil;

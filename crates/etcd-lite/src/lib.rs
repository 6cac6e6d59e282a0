//! etcd-lite: a Raft-replicated, sled-backed store that speaks the etcd v3 gRPC API.
//!
//! Layout:
//! * [`config`]: the member's configuration, one field per etcd flag.
//! * [`error`]: etcd's client-visible errors, with etcd's codes and messages.
//! * [`command`]: what goes through the Raft log, and what applying it returns.
//! * [`mvcc`]: the deterministic MVCC engine over sled (revisions, history, txn, leases' keys).
//! * [`raft`]: openraft wiring: type config, sled log store, state machine, peer network.
//! * [`node`]: one member: proposing (forwarded to the leader), ReadIndex, the lessor,
//!   membership changes, status. The gRPC services talk only to this.
//! * [`server`]: the etcd v3 gRPC services (KV, Watch, Lease, Cluster, Maintenance).
//! * [`http`]: `/health` and `/metrics` on `--listen-metrics-urls`.
//! * [`metrics`]: the Prometheus metrics, upstream names.
#![forbid(unsafe_code)]

pub mod command;
pub mod config;
pub mod error;
pub mod http;
pub mod lessor;
pub mod metrics;
pub mod mvcc;
pub mod node;
pub mod raft;
mod run;
pub mod server;

/// Generated code of `proto/raft.proto`.
pub mod peerpb {
    tonic::include_proto!("kubelite.raft.v1");
}

pub use config::Config;
pub use run::{run, run_until};

//! The kube-lite apiserver: the `kubelite.v1.Api` gRPC service over mutual TLS, objects stored
//! in etcd (etcd-lite or real etcd), watches served from an in-memory watch cache, failover
//! between etcd members, probes, metrics and graceful shutdown. It mirrors kube-apiserver;
//! where this crate's docs say nothing, it does what kube-apiserver does.
//!
//! Layout (one idea per module):
//! * [`config`]: the [`Config`] the binary builds from kube-apiserver's flags, checked once.
//! * [`run`]: wiring, the one TLS port (gRPC + HTTPS), and graceful shutdown.
//! * [`service`]: the gRPC service: authentication, the inflight limit, the size limit, one
//!   span and the metrics per request, then the verb.
//! * [`registry`]: the verbs over storage (create, get, list, update, delete, bind, watch),
//!   with compare-and-swap retry loops.
//! * [`strategy`]: per-kind rules as pure functions: server-set fields, status split,
//!   generation, graceful deletion and finalizers, binding.
//! * [`logs`]: the pods/log subresource: container and node, relayed from the kubelet.
//! * [`kubelet`]: the client of kubelets: address choice, mutual TLS, a streamed GET.
//! * [`fencing`]: FencingToken checks (kube-lite's addition) and the Lease guard of a write.
//! * [`storage`]: key layout, stored JSON, continue tokens, the compare-and-swap primitive.
//! * [`etcd`]: one etcd client per member and failover between them.
//! * [`watch_cache`]: one etcd watch per resource, fanned out to client watches.
//! * [`bootstrap`]: system namespaces and this apiserver's identity Lease.
//! * [`compaction`]: periodic etcd compaction, coordinated between apiservers.
//! * [`http`]: `/livez`, `/readyz`, `/metrics`.
//! * [`metrics`]: the Prometheus metrics under upstream names.
//! * [`error`]: every failure, and its one mapping to a gRPC status with `kl-reason`.
#![forbid(unsafe_code)]

pub mod authz;
pub mod bootstrap;
pub mod compaction;
pub mod config;
pub mod deadline;
pub mod error;
pub mod etcd;
pub mod fencing;
pub mod http;
pub mod kubelet;
pub mod logs;
pub mod metrics;
pub mod registry;
pub mod run;
pub mod service;
pub mod storage;
pub mod strategy;
pub mod watch_cache;

pub use config::{Config, ConfigError};
pub use error::ApiError;
pub use run::{run, run_until};

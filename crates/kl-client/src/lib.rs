//! The one client of the kube-lite API, used by every component and by kubectl-lite.
//!
//! Layout:
//! * [`kubeconfig`]: kubectl's kubeconfig format: read (`--kubeconfig`, `KUBECONFIG`,
//!   `~/.kube/config`), resolve the current context, write (for `kubectl-lite certs generate`).
//! * [`client`]: [`Client`], one lazily connected TLS channel (HTTP/2 keep-alive, connect
//!   timeout) and the one place where a call gets its timeout and its retries.
//! * [`error`]: [`ApiError`], a `tonic::Status` read the way kubectl reads an HTTP status
//!   (`kl-reason` metadata, Display as kubectl prints it).
//! * [`retry`]: which failures are retried, for reads and for writes, and the backoff.
//! * [`api`]: the verbs: [`DynamicApi`] over [`kl_api::Object`] by kind (kubectl) and the typed
//!   [`Api<K>`] on top (controllers); optional fencing tokens on writes.
//! * [`params`]: list, watch, delete and log options; [`watch`]: watch events and streams.
//! * [`events`]: recording Events (client-go's `EventRecorder`), best effort.
//! * [`informer`]: list + watch into a shared cache, resuming from the last resourceVersion and
//!   relisting on Expired (the watcher state machine of kube-runtime).
//! * [`workqueue`]: rate-limited, de-duplicating keys for reconcilers, with per-key backoff.
//! * [`leader_election`]: Lease-based leader election with client-go's semantics and timings,
//!   handing out the [`kl_api::FencingToken`] a leader's writes carry.
//!
//! It must never talk to etcd: everything goes through the apiserver (in a cluster, through the
//! lb).
#![forbid(unsafe_code)]

pub mod api;
pub mod client;
pub mod error;
pub mod events;
pub mod informer;
pub mod kubeconfig;
pub mod leader_election;
pub mod params;
pub mod retry;
pub mod watch;
pub mod workqueue;

pub use api::{Api, DeleteOutcome, DynamicApi, LogStream, ObjectList};
pub use client::{Client, ClientOptions, ConfigError};
pub use error::{ApiError, Reason, TransportFailure};
pub use informer::{Informer, InformerConfig, Store};
pub use kubeconfig::{Kubeconfig, KubeconfigError, ResolvedConfig};
pub use leader_election::{LeaderElectionConfig, LeaderElector, Leadership};
pub use params::{DeleteParams, ListParams, LogParams, WatchParams};
pub use retry::RetryPolicy;
pub use watch::{WatchEvent, WatchStream};
pub use workqueue::WorkQueue;

//! kube-lite's controller-manager: kube-controller-manager's job for the kinds kube-lite has.
//!
//! Layout:
//! * [`config`]: [`Config`] (kube-controller-manager's flags and defaults) and the
//!   `--controllers` list.
//! * [`run`]: wiring and lifetime: leader election (kl-client's, client-go semantics), terms
//!   of leadership, SIGTERM handling (stop controllers, then release the Lease).
//! * [`context`]: what one term's controllers share: fenced APIs, the one write path that
//!   stops the moment the term ends, the informer caches, pod helpers.
//! * [`replicaset`], [`nodelifecycle`], [`garbagecollector`]: the controllers, each a module
//!   with its upstream behaviour described at its top; [`expectations`] is the ReplicaSet
//!   controller's memory of its own pending creates and deletes.
//! * [`serve`]: `/healthz` (with client-go's leader-election check) and `/metrics` on
//!   `--secure-port`; [`metrics`]: the registry.
//!
//! Only the leader runs controllers, and every write of a term carries that term's fencing
//! token: an ex-leader (paused, partitioned) cannot change anything once another leads.
//! Controllers never talk to etcd, and never write outside [`context::Ctx::write`].
#![forbid(unsafe_code)]

pub mod config;
pub mod context;
pub mod expectations;
pub mod garbagecollector;
pub mod metrics;
pub mod nodelifecycle;
pub mod replicaset;
pub mod run;
pub mod serve;

pub use config::{Config, ConfigError, ControllerName, Controllers};
pub use run::{run, run_until};

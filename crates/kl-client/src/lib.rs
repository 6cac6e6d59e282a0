//! The one client of the kube-lite API, used by every component and by kubectl-lite.
//!
//! Layout:
//! * [`kubeconfig`]: kubectl's kubeconfig format: read (`--kubeconfig`, `KUBECONFIG`,
//!   `~/.kube/config`), resolve the current context, write (for `kubectl-lite certs generate`).
//!
//! It must never talk to etcd: everything goes through the apiserver (in a cluster, through the
//! lb).
#![forbid(unsafe_code)]

pub mod kubeconfig;

pub use kubeconfig::{Kubeconfig, KubeconfigError, ResolvedConfig};

//! kubelet-lite: the node agent. It registers its Node, renews its Lease in `kube-node-lease`,
//! runs the pods bound to it as real process groups, probes them, reports their status as the
//! kubelet does, and serves their logs on its HTTPS port (10250).
//!
//! Layout:
//! * [`runtime`]: the container runtime: one shim process per container (`kubelet-lite shim`,
//!   like containerd's shim or conmon) that starts the container's process group, writes its
//!   output to rotated CRI-format log files and records its exit; so containers survive a
//!   kubelet restart and are adopted by the next one.
//! * [`probe`]: exec, tcpSocket and httpGet probes, and the per-container probe workers.
//! * [`server`]: the HTTPS port: `/healthz`, `/metrics`, `/containerLogs/<ns>/<pod>/<container>`.
//! * [`config`]: flags checked together.
//! * [`node`]: registration, the node Lease, node status.
//! * [`pods`]: the pod workers: restart policy, CrashLoopBackOff, deletion, pod status.
//! * [`hollow`]: many simulated nodes in one process (kubemark's hollow nodes).
//! * [`run`]: wiring and lifetime.
#![forbid(unsafe_code)]

pub mod config;
pub mod hollow;
pub mod node;
pub mod pods;
pub mod probe;
pub mod run;
pub mod runtime;
pub mod server;

pub use config::Config;

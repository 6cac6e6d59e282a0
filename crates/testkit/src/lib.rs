//! The one way kube-lite tests start real binaries on loopback.
//!
//! Layout:
//! * [`ports`]: free `127.0.0.1` ports, never the same one twice in a process.
//! * [`bins`]: where the binaries under test are (`target/<profile>/`), and which store binary
//!   to run (`KL_ETCD_BIN` overrides etcd-lite, e.g. with Debian's `/usr/bin/etcd`).
//! * [`pki`]: the cluster PKI `kubectl-lite certs generate` writes (via `kl-pki`), in a temp
//!   dir, for mutual TLS everywhere.
//! * [`process`]: one child process whose output goes to a log file, with signals.
//! * [`etcd`]: [`EtcdCluster`], n store members with mutual TLS, and the handles tests need to
//!   kill, pause, restart, wipe and re-add them.
//! * [`api`]: [`ApiCluster`], a store cluster plus n apiservers and the lb in front of them,
//!   with kubeconfigs and `kubectl-lite` pointed at the lb.
//! * [`components`]: leader-elected controller-managers and schedulers against an
//!   [`ApiCluster`], with their own kubeconfigs and HTTPS health ports.
//! * [`kubelet`]: workers (`kubelet-lite`) against an [`ApiCluster`], and the processes of
//!   their pods, all killed on drop.
//! * [`command`]: running a command-line tool, bounded, with its output captured.
//! * [`slots`]: at most `KL_TEST_MAX_CLUSTERS` (default 1) clusters at once per machine, across
//!   test processes (nextest runs each test in its own process).
//! * [`proxy`]: [`PeerProxies`], a TCP proxy in front of each store member's peer port that
//!   tells its links apart by source member, to partition members from each other and heal.
//! * [`etcdctl`]: Debian's `etcdctl` pointed at a cluster.
//! * [`grpc`]: asserting on the exact gRPC code and message a server returned.
//! * [`wait`]: bounded polling; every wait in a test goes through a deadline.
//!
//! Everything a test starts is killed (SIGKILL) and every temp dir removed when its handle is
//! dropped, including when the test panics; a panicking test also prints the tail of each
//! member's log.
#![forbid(unsafe_code)]

pub mod api;
pub mod bins;
pub mod command;
pub mod components;
pub mod etcd;
pub mod etcdctl;
pub mod grpc;
pub mod kubelet;
pub mod pki;
pub mod ports;
pub mod process;
pub mod proxy;
pub mod slots;
pub mod wait;

pub use api::{ApiCluster, ApiOpts};
pub use bins::{bin_path, etcd_bin, profile_dir};
pub use command::CmdOutput;
pub use etcd::{EtcdCluster, EtcdOpts};
pub use etcdctl::Etcdctl;
pub use pki::TestPki;
pub use ports::free_port;
pub use proxy::PeerProxies;
pub use wait::{bounded, wait_until};

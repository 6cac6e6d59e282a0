//! What a pod asks for and what a node offers, in the scheduler's integer units: milli-cores
//! of cpu and bytes of memory.
//!
//! Two views of a pod's requests, as upstream keeps them: the *actual* requests (what the
//! NodeResourcesFit filter compares with allocatable) and the *non-zero* requests, where a
//! container that names no cpu or memory request counts as 100m / 200Mi (upstream's
//! `DefaultMilliCPURequest` / `DefaultMemoryRequest`), so that least-allocated scoring still
//! spreads pods that request nothing.
use kl_api::{Node, PodSpec, Quantity};

/// Upstream's `schedutil.DefaultMilliCPURequest`.
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// Upstream's `schedutil.DefaultMemoryRequest` (200 MiB).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// An amount of cpu and memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
}

impl Resources {
    pub fn add(&mut self, o: Resources) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
    }

    pub fn sub(&mut self, o: Resources) {
        self.milli_cpu -= o.milli_cpu;
        self.memory -= o.memory;
    }
}

/// A pod's requests, both views (see the module doc).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodRequests {
    pub actual: Resources,
    pub non_zero: Resources,
}

/// A quantity from a resource map, None when absent or unparseable (validation refuses bad
/// quantities, so unparseable only happens with objects written around the apiserver).
fn quantity(map: &std::collections::BTreeMap<String, String>, name: &str) -> Option<Quantity> {
    map.get(name).and_then(|s| Quantity::parse(s).ok())
}

/// The sum of the containers' requests. A resource with a limit but no request is requested
/// at its limit, as upstream's defaulting does.
pub fn pod_requests(spec: &PodSpec) -> PodRequests {
    let mut r = PodRequests::default();
    for c in &spec.containers {
        let res = c.resources.clone().unwrap_or_default();
        let get = |name| quantity(&res.requests, name).or_else(|| quantity(&res.limits, name));
        let cpu = get("cpu").map(|q| q.milli_value());
        let mem = get("memory").map(|q| q.value());
        r.actual.milli_cpu += cpu.unwrap_or(0);
        r.actual.memory += mem.unwrap_or(0);
        // Upstream: GetNonzeroRequestForResource counts an *unset* request as the default; an
        // explicit 0 stays 0.
        r.non_zero.milli_cpu += cpu.unwrap_or(DEFAULT_MILLI_CPU_REQUEST);
        r.non_zero.memory += mem.unwrap_or(DEFAULT_MEMORY_REQUEST);
    }
    r
}

/// What a node offers to pods (`status.allocatable`, else `status.capacity`, as the kubelet
/// reports both).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allocatable {
    pub resources: Resources,
    /// At most this many pods; None when the node sets no `pods` quantity.
    pub pods: Option<i64>,
}

pub fn node_allocatable(node: &Node) -> Allocatable {
    let status = node.status.clone().unwrap_or_default();
    let get =
        |name| quantity(&status.allocatable, name).or_else(|| quantity(&status.capacity, name));
    Allocatable {
        resources: Resources {
            milli_cpu: get("cpu").map_or(0, |q| q.milli_value()),
            memory: get("memory").map_or(0, |q| q.value()),
        },
        pods: get("pods").map(|q| q.value()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kl_api::{Container, NodeStatus, ResourceRequirements};

    fn container(req: &[(&str, &str)], lim: &[(&str, &str)]) -> Container {
        let m = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: m(req),
                limits: m(lim),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn requests_sum_containers_and_default_non_zero() {
        let spec = PodSpec {
            containers: vec![
                container(&[("cpu", "250m"), ("memory", "64Mi")], &[]),
                container(&[], &[("cpu", "1")]),
                container(&[("cpu", "0")], &[]),
            ],
            ..Default::default()
        };
        let r = pod_requests(&spec);
        assert_eq!(
            r.actual,
            Resources {
                milli_cpu: 1250,
                memory: 64 << 20
            }
        );
        assert_eq!(
            r.non_zero,
            Resources {
                milli_cpu: 1250,
                memory: (64 << 20) + 2 * DEFAULT_MEMORY_REQUEST
            }
        );
        let empty = pod_requests(&PodSpec {
            containers: vec![Container::default()],
            ..Default::default()
        });
        assert_eq!(empty.actual, Resources::default());
        assert_eq!(empty.non_zero.milli_cpu, DEFAULT_MILLI_CPU_REQUEST);
    }

    #[test]
    fn allocatable_falls_back_to_capacity() {
        let node = Node {
            status: Some(NodeStatus {
                capacity: [("cpu", "4"), ("memory", "8Gi"), ("pods", "110")]
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                allocatable: [("cpu", "3500m")]
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let a = node_allocatable(&node);
        assert_eq!(
            a.resources,
            Resources {
                milli_cpu: 3500,
                memory: 8 << 30
            }
        );
        assert_eq!(a.pods, Some(110));
        assert_eq!(node_allocatable(&Node::default()).pods, None);
    }
}

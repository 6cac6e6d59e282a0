//! The scheduler's view of the cluster: every node, and what the pods bound (or about to be
//! bound) to each node request. Upstream's `internal/cache`, without the generation-numbered
//! snapshots: the scheduling loop reads it under one lock, and it is small.
//!
//! **Assumed pods.** Once the algorithm picks a node, the pod is *assumed* there at once, before
//! its Bind reaches the apiserver, so that the next pod scheduled a millisecond later already
//! sees the node's resources taken. The watch then *confirms* the pod (it arrives with
//! `spec.nodeName` set); a Bind that fails *forgets* it. Without this, a burst of pods would all
//! land on the node that looked emptiest.
//!
//! It never talks to the apiserver: the informers feed it, the scheduling loop reads it.
use std::collections::{BTreeMap, HashMap};

use kl_api::{Node, Pod};

use crate::resources::{node_allocatable, pod_requests, Allocatable, PodRequests, Resources};

/// `namespace/name`, how the cache and the queue name a pod.
pub type PodKey = String;

pub fn pod_key(pod: &Pod) -> PodKey {
    let m = pod.metadata.clone().unwrap_or_default();
    format!("{}/{}", m.namespace, m.name)
}

/// The uid of the pod's controller (the ownerReference with `controller: true`), if any: what
/// the spreading score groups pods by.
pub fn controller_uid(pod: &Pod) -> Option<String> {
    pod.metadata
        .as_ref()?
        .owner_references
        .iter()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.clone())
}

/// Whether the pod has finished for good (its resources are free again).
pub fn is_terminal(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .is_some_and(|s| s.phase == "Succeeded" || s.phase == "Failed")
}

/// Whether the pod is being deleted.
pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata
        .as_ref()
        .is_some_and(|m| !m.deletion_timestamp.is_empty())
}

/// One pod the cache accounts for.
#[derive(Debug, Clone, PartialEq)]
struct PodEntry {
    uid: String,
    node: String,
    requests: PodRequests,
    /// `namespace/controller-uid` of a non-terminating pod with a controller: what spreading
    /// counts. None for pods without a controller and for terminating pods (upstream's
    /// SelectorSpread skips those too).
    spread_group: Option<String>,
    /// Placed by this scheduler, not yet seen bound by the watch.
    assumed: bool,
}

/// One node and the pods on it.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    /// None while pods name a node the watch has not delivered (yet): such a node is not
    /// scheduled onto, but its pods are counted once it arrives.
    pub node: Option<Node>,
    pub allocatable: Allocatable,
    /// The sum of the actual requests of its pods (assumed ones included).
    pub requested: Resources,
    /// The same with upstream's non-zero defaults, for scoring.
    pub non_zero_requested: Resources,
    /// How many pods it holds (assumed ones included).
    pub pod_count: i64,
    /// Pods per spread group (`namespace/controller-uid`).
    pub spread_counts: HashMap<String, i64>,
}

impl NodeInfo {
    fn add(&mut self, e: &PodEntry) {
        self.requested.add(e.requests.actual);
        self.non_zero_requested.add(e.requests.non_zero);
        self.pod_count += 1;
        if let Some(g) = &e.spread_group {
            *self.spread_counts.entry(g.clone()).or_default() += 1;
        }
    }

    fn remove(&mut self, e: &PodEntry) {
        self.requested.sub(e.requests.actual);
        self.non_zero_requested.sub(e.requests.non_zero);
        self.pod_count -= 1;
        if let Some(g) = &e.spread_group {
            if let Some(n) = self.spread_counts.get_mut(g) {
                *n -= 1;
                if *n <= 0 {
                    self.spread_counts.remove(g);
                }
            }
        }
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        self.node
            .as_ref()
            .and_then(|n| n.metadata.as_ref())
            .map_or("", |m| m.name.as_str())
    }
}

/// Nodes and the pods on them. See the module doc.
#[derive(Debug, Default)]
pub struct Cache {
    /// By node name; sorted, so that the algorithm visits nodes in a stable order.
    nodes: BTreeMap<String, NodeInfo>,
    pods: HashMap<PodKey, PodEntry>,
}

impl Cache {
    pub fn new() -> Cache {
        Cache::default()
    }

    /// Adds or replaces a node (from the node informer).
    pub fn set_node(&mut self, node: Node) {
        let name = node
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let info = self.nodes.entry(name).or_default();
        info.allocatable = node_allocatable(&node);
        info.node = Some(node);
    }

    pub fn remove_node(&mut self, name: &str) {
        if let Some(info) = self.nodes.get_mut(name) {
            info.node = None;
            if info.pod_count == 0 {
                self.nodes.remove(name);
            }
        }
    }

    /// Nodes the scheduler may consider (those whose Node object is known), in name order.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.values().filter(|n| n.node.is_some())
    }

    pub fn node_count(&self) -> usize {
        self.nodes().count()
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.get(name)
    }

    /// Takes in a pod from the pod informer: a bound, non-terminal pod is accounted on its node
    /// (confirming it if assumed); any other pod is dropped from the accounts, except that an
    /// assumed pod stays assumed while the watch still shows it unbound.
    pub fn update_pod(&mut self, pod: &Pod) {
        let key = pod_key(pod);
        let node = pod.spec.as_ref().map_or("", |s| s.node_name.as_str());
        if is_terminal(pod) {
            self.remove_pod(&key);
            return;
        }
        if node.is_empty() {
            let uid = pod.metadata.as_ref().map_or("", |m| m.uid.as_str());
            match self.pods.get(&key) {
                Some(e) if e.assumed && e.uid == uid => {}
                Some(_) => self.remove_pod(&key),
                None => {}
            }
            return;
        }
        self.put(key, entry(pod, node, false));
    }

    /// Drops a pod (deleted, or terminal).
    pub fn remove_pod(&mut self, key: &str) {
        if let Some(e) = self.pods.remove(key) {
            self.unaccount(&e);
        }
    }

    /// Accounts `pod` on `node` before its Bind is confirmed.
    pub fn assume(&mut self, pod: &Pod, node: &str) {
        self.put(pod_key(pod), entry(pod, node, true));
    }

    /// Undoes [`Cache::assume`] (the Bind failed); a confirmed pod is left alone.
    pub fn forget(&mut self, key: &str) {
        if self.pods.get(key).is_some_and(|e| e.assumed) {
            self.remove_pod(key);
        }
    }

    /// Forgets every assumed pod (leadership lost: in-flight binds are abandoned; those that
    /// landed come back through the watch).
    pub fn forget_all_assumed(&mut self) -> Vec<PodKey> {
        let keys: Vec<PodKey> = self
            .pods
            .iter()
            .filter(|(_, e)| e.assumed)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &keys {
            self.remove_pod(k);
        }
        keys
    }

    pub fn is_assumed(&self, key: &str) -> bool {
        self.pods.get(key).is_some_and(|e| e.assumed)
    }

    /// The node a pod is accounted on, if any.
    pub fn pod_node(&self, key: &str) -> Option<&str> {
        self.pods.get(key).map(|e| e.node.as_str())
    }

    fn put(&mut self, key: PodKey, e: PodEntry) {
        if let Some(old) = self.pods.get(&key) {
            if *old == e {
                return;
            }
        }
        self.remove_pod(&key);
        self.nodes.entry(e.node.clone()).or_default().add(&e);
        self.pods.insert(key, e);
    }

    fn unaccount(&mut self, e: &PodEntry) {
        if let Some(info) = self.nodes.get_mut(&e.node) {
            info.remove(e);
            if info.node.is_none() && info.pod_count == 0 {
                self.nodes.remove(&e.node);
            }
        }
    }
}

fn entry(pod: &Pod, node: &str, assumed: bool) -> PodEntry {
    let meta = pod.metadata.clone().unwrap_or_default();
    let spread_group = if is_terminating(pod) {
        None
    } else {
        controller_uid(pod).map(|uid| format!("{}/{uid}", meta.namespace))
    };
    PodEntry {
        uid: meta.uid,
        node: node.to_string(),
        requests: pod_requests(&pod.spec.clone().unwrap_or_default()),
        spread_group,
        assumed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn bound_pods_accumulate_and_free_on_delete_or_completion() {
        let mut c = Cache::new();
        c.set_node(node("n1").cpu("2").mem("4Gi").build());
        c.update_pod(&pod("a").cpu("500m").mem("1Gi").on("n1").build());
        c.update_pod(&pod("b").cpu("250m").on("n1").build());
        let n = c.node("n1").unwrap();
        assert_eq!(
            n.requested,
            Resources {
                milli_cpu: 750,
                memory: 1 << 30
            }
        );
        assert_eq!(n.pod_count, 2);
        // An update of the same pod does not double-count.
        c.update_pod(&pod("b").cpu("250m").on("n1").build());
        assert_eq!(c.node("n1").unwrap().pod_count, 2);
        c.remove_pod("default/a");
        assert_eq!(c.node("n1").unwrap().requested.milli_cpu, 250);
        c.update_pod(&pod("b").cpu("250m").on("n1").phase("Succeeded").build());
        assert_eq!(c.node("n1").unwrap().pod_count, 0);
    }

    #[test]
    fn assumed_pods_count_until_confirmed_or_forgotten() {
        let mut c = Cache::new();
        c.set_node(node("n1").cpu("2").build());
        let p = pod("a").cpu("1").build();
        c.assume(&p, "n1");
        assert!(c.is_assumed("default/a"));
        assert_eq!(c.node("n1").unwrap().requested.milli_cpu, 1000);
        // The watch still shows it unbound (our own status write): stays assumed.
        c.update_pod(&p);
        assert!(c.is_assumed("default/a"));
        // Confirmed by the watch.
        c.update_pod(&pod("a").cpu("1").on("n1").build());
        assert!(!c.is_assumed("default/a"));
        assert_eq!(c.node("n1").unwrap().requested.milli_cpu, 1000);
        c.forget("default/a");
        assert_eq!(
            c.node("n1").unwrap().pod_count,
            1,
            "confirmed pods are not forgotten"
        );

        c.assume(&pod("b").cpu("1").build(), "n1");
        c.forget("default/b");
        assert_eq!(c.node("n1").unwrap().requested.milli_cpu, 1000);
        c.assume(&pod("c").cpu("1").build(), "n1");
        assert_eq!(c.forget_all_assumed(), vec!["default/c".to_string()]);
        assert_eq!(c.node("n1").unwrap().pod_count, 1);
    }

    #[test]
    fn pods_before_their_node_and_spread_groups() {
        let mut c = Cache::new();
        c.update_pod(&pod("a").cpu("1").owner("rs1").on("n1").build());
        assert_eq!(c.node_count(), 0, "no Node object yet");
        c.set_node(node("n1").cpu("4").build());
        let n = c.node("n1").unwrap();
        assert_eq!(n.requested.milli_cpu, 1000);
        assert_eq!(n.spread_counts.get("default/rs1"), Some(&1));
        c.update_pod(
            &pod("a")
                .cpu("1")
                .owner("rs1")
                .on("n1")
                .terminating()
                .build(),
        );
        let n = c.node("n1").unwrap();
        assert_eq!(
            n.requested.milli_cpu, 1000,
            "terminating pods still hold resources"
        );
        assert!(n.spread_counts.is_empty(), "but do not count for spreading");
        c.remove_node("n1");
        assert_eq!(c.node_count(), 0);
        c.remove_pod("default/a");
        assert!(c.node("n1").is_none());
    }
}

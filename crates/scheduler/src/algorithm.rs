//! The scheduling algorithm, pure: a pod and the [`Cache`] in, a node (or why there is none)
//! out. Upstream's default profile reduced to what kube-lite's API has, with upstream's rules
//! and wording:
//!
//! * **Filters**, run per node in upstream's plugin order; the first that fails gives the
//!   node's reasons: node Ready (the old `CheckNodeCondition`), NodeUnschedulable,
//!   TaintToleration (NoSchedule/NoExecute), NodeAffinity (`nodeSelector`), NodeResourcesFit
//!   (pod count, cpu, memory against allocatable minus the requests of bound and assumed pods).
//! * **Feasible nodes to find**: upstream's `numFeasibleNodesToFind` (adaptive
//!   `--percentage-of-nodes-to-score`), visiting nodes round-robin from where the previous
//!   pod stopped.
//! * **Scores**, 0-100 each, weight 1: NodeResourcesFit `LeastAllocated` on cpu and memory
//!   (non-zero requests), and SelectorSpread grouped by the pod's controller ownerReference.
//!   The highest total wins; ties are broken uniformly at random (upstream's reservoir pick).
//! * **Failure**: a [`FitError`] whose Display is upstream's `FitError.Error()`.
use std::collections::BTreeMap;
use std::fmt;

use kl_api::{Node, Pod, Taint, Toleration};
use rand::Rng;

use crate::cache::{controller_uid, Cache, NodeInfo};
use crate::resources::{pod_requests, PodRequests, Resources};

/// Upstream's `framework.MaxNodeScore`.
pub const MAX_NODE_SCORE: i64 = 100;
/// Upstream's `minFeasibleNodesToFind`.
pub const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// Upstream's `minFeasibleNodesPercentageToFind`.
pub const MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND: usize = 5;

/// Filter reasons, upstream's exact texts.
pub const REASON_NOT_READY: &str = "node(s) were not ready";
pub const REASON_UNSCHEDULABLE: &str = "node(s) were unschedulable";
pub const REASON_NODE_SELECTOR: &str = "node(s) didn't match Pod's node affinity/selector";
pub const REASON_TOO_MANY_PODS: &str = "Too many pods";
pub const REASON_INSUFFICIENT_CPU: &str = "Insufficient cpu";
pub const REASON_INSUFFICIENT_MEMORY: &str = "Insufficient memory";
/// Upstream's `ErrNoNodesAvailable`.
pub const NO_NODES_AVAILABLE: &str = "no nodes available to schedule pods";

/// The taint a cordoned node implicitly has (upstream's `v1.TaintNodeUnschedulable`): a pod
/// tolerating it may go to a cordoned node.
pub const TAINT_NODE_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// How many feasible nodes to look for among `all` nodes (upstream's `numFeasibleNodesToFind`):
/// every node below 100; else `percentage` of them (0 = adaptive: 50% at 100 nodes, minus 1%
/// per 125 nodes, at least 5%), never fewer than 100.
pub fn num_feasible_nodes_to_find(percentage: u32, all: usize) -> usize {
    if all < MIN_FEASIBLE_NODES_TO_FIND {
        return all;
    }
    let mut pct = percentage as i64;
    if pct == 0 {
        pct = 50 - (all as i64) / 125;
        if pct < MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND as i64 {
            pct = MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND as i64;
        }
    }
    let n = (all as i64 * pct / 100) as usize;
    n.max(MIN_FEASIBLE_NODES_TO_FIND)
}

/// Upstream's `Toleration.ToleratesTaint`: an empty effect matches every effect, an empty key
/// (only meaningful with `Exists`) every key; operator `Exists` ignores the value, `Equal` (or
/// empty) compares it; any other operator tolerates nothing.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if !t.effect.is_empty() && t.effect != taint.effect {
        return false;
    }
    if !t.key.is_empty() && t.key != taint.key {
        return false;
    }
    match t.operator.as_str() {
        "" | "Equal" => t.value == taint.value,
        "Exists" => true,
        _ => false,
    }
}

/// The first NoSchedule/NoExecute taint of `taints` that no toleration tolerates
/// (upstream's `FindMatchingUntoleratedTaint` with `DoNotScheduleTaintsFilterFunc`).
pub fn untolerated_taint<'a>(taints: &'a [Taint], tolerations: &[Toleration]) -> Option<&'a Taint> {
    taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
}

/// Whether the node's Ready condition is True.
pub fn node_ready(node: &Node) -> bool {
    node.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.r#type == "Ready" && c.status == "True")
    })
}

/// What the filters need of a pod, computed once per scheduling attempt.
pub struct PodFacts<'a> {
    pub pod: &'a Pod,
    pub requests: PodRequests,
    pub tolerations: &'a [Toleration],
    /// `namespace/controller-uid` when the pod has a controller.
    pub spread_group: Option<String>,
}

impl<'a> PodFacts<'a> {
    pub fn new(pod: &'a Pod) -> PodFacts<'a> {
        let spec = pod.spec.as_ref();
        let ns = pod.metadata.as_ref().map_or("", |m| m.namespace.as_str());
        PodFacts {
            pod,
            requests: spec.map(pod_requests).unwrap_or_default(),
            tolerations: spec.map_or(&[], |s| s.tolerations.as_slice()),
            spread_group: controller_uid(pod).map(|uid| format!("{ns}/{uid}")),
        }
    }
}

/// Runs the filters on one node: Ok, or the reasons of the first filter that failed.
pub fn filter(p: &PodFacts<'_>, info: &NodeInfo) -> Result<(), Vec<String>> {
    let Some(node) = info.node.as_ref() else {
        return Err(vec![REASON_NOT_READY.to_string()]);
    };
    // Node Ready.
    if !node_ready(node) {
        return Err(vec![REASON_NOT_READY.to_string()]);
    }
    let spec = node.spec.clone().unwrap_or_default();
    // NodeUnschedulable.
    if spec.unschedulable {
        let cordon = Taint {
            key: TAINT_NODE_UNSCHEDULABLE.into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        if !p.tolerations.iter().any(|t| tolerates(t, &cordon)) {
            return Err(vec![REASON_UNSCHEDULABLE.to_string()]);
        }
    }
    // TaintToleration.
    if let Some(t) = untolerated_taint(&spec.taints, p.tolerations) {
        return Err(vec![format!(
            "node(s) had untolerated taint {{{}: {}}}",
            t.key, t.value
        )]);
    }
    // NodeAffinity (nodeSelector).
    let labels = node.metadata.as_ref().map(|m| &m.labels);
    let selector = p.pod.spec.as_ref().map(|s| &s.node_selector);
    if let Some(sel) = selector {
        let ok = sel
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
        if !ok {
            return Err(vec![REASON_NODE_SELECTOR.to_string()]);
        }
    }
    // NodeResourcesFit.
    fits_resources(&p.requests.actual, info)
}

/// Upstream's `fitsRequest` for pods, cpu and memory: every insufficiency is a reason.
fn fits_resources(req: &Resources, info: &NodeInfo) -> Result<(), Vec<String>> {
    let mut reasons = Vec::new();
    if let Some(max) = info.allocatable.pods {
        if info.pod_count + 1 > max {
            reasons.push(REASON_TOO_MANY_PODS.to_string());
        }
    }
    let alloc = info.allocatable.resources;
    if req.milli_cpu > 0 && req.milli_cpu > alloc.milli_cpu - info.requested.milli_cpu {
        reasons.push(REASON_INSUFFICIENT_CPU.to_string());
    }
    if req.memory > 0 && req.memory > alloc.memory - info.requested.memory {
        reasons.push(REASON_INSUFFICIENT_MEMORY.to_string());
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons)
    }
}

/// Upstream's `leastRequestedScore`.
fn least_requested_score(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 || requested > capacity {
        return 0;
    }
    (capacity - requested) * MAX_NODE_SCORE / capacity
}

/// NodeResourcesFit `LeastAllocated` with cpu and memory at weight 1: resources the node does
/// not offer (allocatable 0) are left out of the average.
pub fn least_allocated_score(p: &PodFacts<'_>, info: &NodeInfo) -> i64 {
    let alloc = info.allocatable.resources;
    let pairs = [
        (
            info.non_zero_requested.milli_cpu + p.requests.non_zero.milli_cpu,
            alloc.milli_cpu,
        ),
        (
            info.non_zero_requested.memory + p.requests.non_zero.memory,
            alloc.memory,
        ),
    ];
    let (mut score, mut weights) = (0, 0);
    for (requested, allocatable) in pairs {
        if allocatable == 0 {
            continue;
        }
        score += least_requested_score(requested, allocatable);
        weights += 1;
    }
    if weights == 0 {
        0
    } else {
        score / weights
    }
}

/// SelectorSpread's NormalizeScore over the feasible nodes' counts of pods of the same group:
/// `100 × (max − count) / max`, all 100 when no node has one. A pod without a controller gets
/// 0 everywhere (upstream skips the plugin for pods no controller selects).
pub fn spread_scores(p: &PodFacts<'_>, feasible: &[&NodeInfo]) -> Vec<i64> {
    let Some(group) = &p.spread_group else {
        return vec![0; feasible.len()];
    };
    let counts: Vec<i64> = feasible
        .iter()
        .map(|n| n.spread_counts.get(group).copied().unwrap_or(0))
        .collect();
    let max = counts.iter().copied().max().unwrap_or(0);
    counts
        .into_iter()
        .map(|c| {
            if max > 0 {
                (MAX_NODE_SCORE as f64 * ((max - c) as f64 / max as f64)) as i64
            } else {
                MAX_NODE_SCORE
            }
        })
        .collect()
}

/// Why no node fits: upstream's `FitError`, per-node reasons kept for the histogram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FitError {
    pub num_all_nodes: usize,
    /// Node name → the reasons of the filter that refused it.
    pub node_reasons: BTreeMap<String, Vec<String>>,
}

impl fmt::Display for FitError {
    /// `0/3 nodes are available: 1 node(s) were unschedulable, 2 Insufficient cpu.`: each
    /// reason with the number of nodes that gave it, sorted as strings (upstream's
    /// `sortReasonsHistogram`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut hist: BTreeMap<&str, usize> = BTreeMap::new();
        for reasons in self.node_reasons.values() {
            for r in reasons {
                *hist.entry(r.as_str()).or_default() += 1;
            }
        }
        let mut parts: Vec<String> = hist.iter().map(|(r, n)| format!("{n} {r}")).collect();
        parts.sort();
        write!(
            f,
            "0/{} nodes are available: {}.",
            self.num_all_nodes,
            parts.join(", ")
        )
    }
}

/// Why a pod was not placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The cluster has no nodes at all.
    #[error("{NO_NODES_AVAILABLE}")]
    NoNodes,
    #[error("{0}")]
    Unfit(FitError),
}

/// Where a pod goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub node: String,
    /// How many nodes the filters ran on, and how many passed.
    pub evaluated: usize,
    pub feasible: usize,
}

/// The algorithm's state between pods: the node to start the next search from.
#[derive(Debug, Default)]
pub struct Algorithm {
    /// `--percentage-of-nodes-to-score` (0 = adaptive).
    pub percentage_of_nodes_to_score: u32,
    next_start_node_index: usize,
}

impl Algorithm {
    pub fn new(percentage_of_nodes_to_score: u32) -> Algorithm {
        Algorithm {
            percentage_of_nodes_to_score,
            next_start_node_index: 0,
        }
    }

    /// Picks a node for `pod`.
    pub fn schedule(
        &mut self,
        pod: &Pod,
        cache: &Cache,
        rng: &mut impl Rng,
    ) -> Result<Decision, ScheduleError> {
        let nodes: Vec<&NodeInfo> = cache.nodes().collect();
        if nodes.is_empty() {
            return Err(ScheduleError::NoNodes);
        }
        let facts = PodFacts::new(pod);
        let want = num_feasible_nodes_to_find(self.percentage_of_nodes_to_score, nodes.len());
        let mut feasible: Vec<&NodeInfo> = Vec::new();
        let mut node_reasons = BTreeMap::new();
        let start = self.next_start_node_index % nodes.len();
        let mut evaluated = 0;
        for i in 0..nodes.len() {
            let info = nodes[(start + i) % nodes.len()];
            evaluated += 1;
            match filter(&facts, info) {
                Ok(()) => {
                    feasible.push(info);
                    if feasible.len() >= want {
                        break;
                    }
                }
                Err(reasons) => {
                    node_reasons.insert(info.name().to_string(), reasons);
                }
            }
        }
        self.next_start_node_index = (start + evaluated) % nodes.len();
        if feasible.is_empty() {
            return Err(ScheduleError::Unfit(FitError {
                num_all_nodes: nodes.len(),
                node_reasons,
            }));
        }
        let decision = |node: &NodeInfo| Decision {
            node: node.name().to_string(),
            evaluated,
            feasible: feasible.len(),
        };
        if feasible.len() == 1 {
            return Ok(decision(feasible[0]));
        }
        let spread = spread_scores(&facts, &feasible);
        let mut best: Option<(i64, usize)> = None;
        let mut ties = 0u32;
        for (i, info) in feasible.iter().enumerate() {
            let score = least_allocated_score(&facts, info) + spread[i];
            match best {
                Some((b, _)) if score < b => {}
                Some((b, _)) if score == b => {
                    ties += 1;
                    // Reservoir sampling: each of the tied nodes wins with equal chance.
                    if rng.gen_range(0..ties) == 0 {
                        best = Some((score, i));
                    }
                }
                _ => {
                    best = Some((score, i));
                    ties = 1;
                }
            }
        }
        let (_, i) = best.expect("at least two feasible nodes");
        Ok(decision(feasible[i]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use rand::SeedableRng;

    fn one(n: Node, p: &Pod) -> Result<(), Vec<String>> {
        let mut c = Cache::new();
        let name = n.metadata.as_ref().unwrap().name.clone();
        c.set_node(n);
        filter(&PodFacts::new(p), c.node(&name).unwrap())
    }

    fn reasons(r: &[&str]) -> Result<(), Vec<String>> {
        Err(r.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn ready_filter() {
        let p = pod("p").build();
        assert_eq!(one(node("n").build(), &p), Ok(()));
        assert_eq!(
            one(node("n").ready("False").build(), &p),
            reasons(&[REASON_NOT_READY])
        );
        assert_eq!(
            one(node("n").ready("Unknown").build(), &p),
            reasons(&[REASON_NOT_READY])
        );
        assert_eq!(
            one(node("n").no_conditions().build(), &p),
            reasons(&[REASON_NOT_READY])
        );
    }

    #[test]
    fn unschedulable_filter() {
        let p = pod("p").build();
        assert_eq!(
            one(node("n").unschedulable().build(), &p),
            reasons(&[REASON_UNSCHEDULABLE])
        );
        let tolerant = pod("p")
            .toleration(TAINT_NODE_UNSCHEDULABLE, "Exists", "", "NoSchedule")
            .build();
        assert_eq!(one(node("n").unschedulable().build(), &tolerant), Ok(()));
    }

    #[test]
    fn toleration_semantics_match_upstream() {
        let taint = |k: &str, v: &str, e: &str| Taint {
            key: k.into(),
            value: v.into(),
            effect: e.into(),
            ..Default::default()
        };
        let tol = |k: &str, op: &str, v: &str, e: &str| Toleration {
            key: k.into(),
            operator: op.into(),
            value: v.into(),
            effect: e.into(),
            ..Default::default()
        };
        let t = taint("gpu", "yes", "NoSchedule");
        assert!(tolerates(&tol("gpu", "Equal", "yes", "NoSchedule"), &t));
        assert!(
            tolerates(&tol("gpu", "", "yes", "NoSchedule"), &t),
            "empty operator = Equal"
        );
        assert!(!tolerates(&tol("gpu", "Equal", "no", "NoSchedule"), &t));
        assert!(tolerates(&tol("gpu", "Exists", "", "NoSchedule"), &t));
        assert!(
            tolerates(&tol("gpu", "Exists", "", ""), &t),
            "empty effect matches all"
        );
        assert!(!tolerates(&tol("gpu", "Exists", "", "NoExecute"), &t));
        assert!(
            tolerates(&tol("", "Exists", "", ""), &t),
            "empty key + Exists tolerates all"
        );
        // Upstream's ToleratesTaint skips the key check for an empty key whatever the operator
        // (validation refuses such a toleration; the matcher itself does not).
        assert!(tolerates(&tol("", "Equal", "yes", ""), &t));
        assert!(!tolerates(&tol("", "Equal", "no", ""), &t));
        assert!(!tolerates(&tol("other", "Exists", "", ""), &t));
        assert!(!tolerates(&tol("gpu", "Bogus", "yes", ""), &t));
        // Empty value with Equal matches an empty taint value only.
        assert!(tolerates(
            &tol("k", "Equal", "", "NoExecute"),
            &taint("k", "", "NoExecute")
        ));
    }

    #[test]
    fn taint_filter() {
        let n = || {
            node("n")
                .taint("soft", "x", "PreferNoSchedule")
                .taint("dedicated", "db", "NoSchedule")
                .taint("gone", "", "NoExecute")
                .build()
        };
        assert_eq!(
            one(n(), &pod("p").build()),
            reasons(&["node(s) had untolerated taint {dedicated: db}"]),
            "PreferNoSchedule is ignored, the first untolerated one is named"
        );
        let p = pod("p")
            .toleration("dedicated", "Equal", "db", "NoSchedule")
            .build();
        assert_eq!(
            one(n(), &p),
            reasons(&["node(s) had untolerated taint {gone: }"])
        );
        let p = pod("p")
            .toleration("dedicated", "Equal", "db", "NoSchedule")
            .toleration("gone", "Exists", "", "NoExecute")
            .build();
        assert_eq!(one(n(), &p), Ok(()));
        assert_eq!(
            one(n(), &pod("p").toleration("", "Exists", "", "").build()),
            Ok(())
        );
    }

    #[test]
    fn node_selector_filter() {
        let n = || node("n").label("disk", "ssd").label("zone", "a").build();
        assert_eq!(one(n(), &pod("p").selector("disk", "ssd").build()), Ok(()));
        assert_eq!(
            one(
                n(),
                &pod("p")
                    .selector("disk", "ssd")
                    .selector("zone", "b")
                    .build()
            ),
            reasons(&[REASON_NODE_SELECTOR])
        );
        assert_eq!(
            one(n(), &pod("p").selector("gpu", "").build()),
            reasons(&[REASON_NODE_SELECTOR]),
            "a missing label does not match an empty value"
        );
    }

    #[test]
    fn resources_filter_counts_bound_and_assumed_pods() {
        let mut c = Cache::new();
        c.set_node(node("n").cpu("1").mem("1Gi").pods("3").build());
        c.update_pod(&pod("a").cpu("600m").mem("512Mi").on("n").build());
        c.assume(&pod("b").cpu("200m").build(), "n");
        let info = c.node("n").unwrap();
        let f = |p: &Pod| filter(&PodFacts::new(p), info);
        assert_eq!(f(&pod("p").cpu("200m").mem("512Mi").build()), Ok(()));
        assert_eq!(
            f(&pod("p").cpu("201m").build()),
            reasons(&[REASON_INSUFFICIENT_CPU])
        );
        assert_eq!(
            f(&pod("p").cpu("1").mem("1Gi").build()),
            reasons(&[REASON_INSUFFICIENT_CPU, REASON_INSUFFICIENT_MEMORY])
        );
        // A pod requesting nothing fits a full node, but not past the pod count.
        c.assume(&pod("c").build(), "n");
        let info = c.node("n").unwrap();
        assert_eq!(
            filter(&PodFacts::new(&pod("p").cpu("1").build()), info),
            reasons(&[REASON_TOO_MANY_PODS, REASON_INSUFFICIENT_CPU])
        );
    }

    #[test]
    fn filters_stop_at_the_first_failure_in_upstream_order() {
        let n = node("n")
            .unschedulable()
            .taint("k", "v", "NoSchedule")
            .cpu("1")
            .build();
        assert_eq!(
            one(n, &pod("p").cpu("2").build()),
            reasons(&[REASON_UNSCHEDULABLE])
        );
        let n = node("n").taint("k", "v", "NoSchedule").cpu("1").build();
        assert_eq!(
            one(n, &pod("p").cpu("2").selector("a", "b").build()),
            reasons(&["node(s) had untolerated taint {k: v}"])
        );
    }

    #[test]
    fn fit_error_message_is_upstreams() {
        let mut e = FitError {
            num_all_nodes: 3,
            node_reasons: BTreeMap::new(),
        };
        e.node_reasons
            .insert("a".into(), vec![REASON_INSUFFICIENT_CPU.into()]);
        e.node_reasons
            .insert("b".into(), vec![REASON_INSUFFICIENT_CPU.into()]);
        e.node_reasons
            .insert("c".into(), vec![REASON_UNSCHEDULABLE.into()]);
        assert_eq!(
            e.to_string(),
            "0/3 nodes are available: 1 node(s) were unschedulable, 2 Insufficient cpu."
        );
        e.node_reasons.insert(
            "c".into(),
            vec![
                REASON_INSUFFICIENT_CPU.into(),
                REASON_INSUFFICIENT_MEMORY.into(),
            ],
        );
        e.node_reasons.insert(
            "d".into(),
            vec!["node(s) had untolerated taint {k: v}".into()],
        );
        e.num_all_nodes = 4;
        assert_eq!(
            e.to_string(),
            "0/4 nodes are available: 1 Insufficient memory, 1 node(s) had untolerated taint {k: v}, 3 Insufficient cpu."
        );
        assert_eq!(
            ScheduleError::NoNodes.to_string(),
            "no nodes available to schedule pods"
        );
    }

    #[test]
    fn unfit_pods_name_every_reason() {
        let mut c = Cache::new();
        c.set_node(node("a").cpu("1").build());
        c.set_node(node("b").cpu("1").build());
        c.set_node(node("c").cpu("8").unschedulable().build());
        let mut alg = Algorithm::new(0);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let err = alg
            .schedule(&pod("p").cpu("2").build(), &c, &mut rng)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "0/3 nodes are available: 1 node(s) were unschedulable, 2 Insufficient cpu."
        );
        assert_eq!(
            alg.schedule(&pod("p").build(), &Cache::new(), &mut rng),
            Err(ScheduleError::NoNodes)
        );
    }

    #[test]
    fn least_allocated_prefers_the_emptier_node() {
        let mut c = Cache::new();
        c.set_node(node("busy").cpu("4").mem("8Gi").build());
        c.set_node(node("idle").cpu("4").mem("8Gi").build());
        c.update_pod(&pod("x").cpu("3").mem("6Gi").on("busy").build());
        let p = pod("p").cpu("1").mem("1Gi").build();
        let facts = PodFacts::new(&p);
        // busy: cpu (4000-4000)/4000 → 0, mem (8-7)/8 → 12; average 6.
        assert_eq!(least_allocated_score(&facts, c.node("busy").unwrap()), 6);
        // idle: cpu 75, mem 87 → 81.
        assert_eq!(least_allocated_score(&facts, c.node("idle").unwrap()), 81);
        let mut alg = Algorithm::new(0);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..10 {
            assert_eq!(alg.schedule(&p, &c, &mut rng).unwrap().node, "idle");
        }
        // Non-zero defaults: a pod requesting nothing still counts as 100m / 200Mi.
        let empty = pod("e").build();
        let f = PodFacts::new(&empty);
        assert_eq!(
            least_allocated_score(&f, c.node("idle").unwrap()),
            (97 + 97) / 2
        );
        // A node offering no resources scores 0.
        c.set_node(node("bare").build());
        assert_eq!(least_allocated_score(&f, c.node("bare").unwrap()), 0);
    }

    #[test]
    fn spreading_pods_of_one_owner() {
        let mut c = Cache::new();
        for n in ["a", "b", "c"] {
            c.set_node(node(n).cpu("4").mem("8Gi").build());
        }
        // Equal load everywhere, but rs1 already has a pod on a and one on b.
        c.update_pod(&pod("x1").cpu("1").owner("rs1").on("a").build());
        c.update_pod(&pod("x2").cpu("1").owner("rs1").on("b").build());
        c.update_pod(&pod("y1").cpu("1").owner("other").on("c").build());
        let p = pod("p").owner("rs1").build();
        let facts = PodFacts::new(&p);
        let infos: Vec<&NodeInfo> = c.nodes().collect();
        assert_eq!(spread_scores(&facts, &infos), vec![0, 0, 100]);
        let mut alg = Algorithm::new(0);
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        assert_eq!(alg.schedule(&p, &c, &mut rng).unwrap().node, "c");
        // Without a controller, spreading does not count.
        let lone = pod("lone").build();
        assert_eq!(spread_scores(&PodFacts::new(&lone), &infos), vec![0, 0, 0]);
        // Two on a, one each on b and c.
        c.update_pod(&pod("x3").owner("rs1").on("c").build());
        c.update_pod(&pod("x4").owner("rs1").on("a").build());
        let infos: Vec<&NodeInfo> = c.nodes().collect();
        assert_eq!(spread_scores(&facts, &infos), vec![0, 50, 50]);
    }

    #[test]
    fn ties_are_broken_at_random() {
        let mut c = Cache::new();
        for n in ["a", "b", "c"] {
            c.set_node(node(n).cpu("4").build());
        }
        let mut alg = Algorithm::new(0);
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..60 {
            seen.insert(alg.schedule(&pod("p").build(), &c, &mut rng).unwrap().node);
        }
        assert_eq!(seen.len(), 3, "{seen:?}");
    }

    #[test]
    fn a_node_fills_up() {
        let mut c = Cache::new();
        c.set_node(node("a").cpu("1").build());
        let mut alg = Algorithm::new(0);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for i in 0..4 {
            let p = pod(&format!("p{i}")).cpu("250m").build();
            let d = alg.schedule(&p, &c, &mut rng).unwrap();
            c.assume(&p, &d.node);
        }
        let err = alg
            .schedule(&pod("p5").cpu("250m").build(), &c, &mut rng)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "0/1 nodes are available: 1 Insufficient cpu."
        );
    }

    #[test]
    fn feasible_nodes_to_find_is_upstreams() {
        assert_eq!(num_feasible_nodes_to_find(0, 0), 0);
        assert_eq!(num_feasible_nodes_to_find(0, 99), 99);
        assert_eq!(num_feasible_nodes_to_find(0, 100), 100);
        // 50 - 1000/125 = 42% of 1000.
        assert_eq!(num_feasible_nodes_to_find(0, 1000), 420);
        // 50 - 5000/125 = 10%.
        assert_eq!(num_feasible_nodes_to_find(0, 5000), 500);
        // Floor of 5%: 50 - 6000/125 = 2 → 5%.
        assert_eq!(num_feasible_nodes_to_find(0, 6000), 300);
        assert_eq!(num_feasible_nodes_to_find(10, 500), 100, "never below 100");
        assert_eq!(num_feasible_nodes_to_find(100, 500), 500);
        assert_eq!(num_feasible_nodes_to_find(30, 1000), 300);
    }

    #[test]
    fn search_stops_early_and_rotates() {
        let mut c = Cache::new();
        for i in 0..200 {
            c.set_node(node(&format!("n{i:03}")).cpu("1").build());
        }
        let mut alg = Algorithm::new(50);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let d = alg.schedule(&pod("p").build(), &c, &mut rng).unwrap();
        assert_eq!((d.evaluated, d.feasible), (100, 100));
        assert_eq!(alg.next_start_node_index, 100);
        let d = alg.schedule(&pod("p").build(), &c, &mut rng).unwrap();
        assert_eq!(d.evaluated, 100);
        assert_eq!(alg.next_start_node_index, 0);
    }
}

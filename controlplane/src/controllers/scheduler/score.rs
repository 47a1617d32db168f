//! The scheduler's scores, pure: how much each feasible node is preferred.
//!
//! Upstream's default profile (kubernetes/kubernetes pkg/scheduler/apis/config/v1/
//! default_plugins.go) with the plugins oxlet has: NodeResourcesFit LeastAllocated (weight 1),
//! NodeResourcesBalancedAllocation (1), NodeAffinity preferred terms (2) and TaintToleration's
//! PreferNoSchedule count (3). Each plugin scores 0..=100 per node, then the weighted sum wins.

use k8s_openapi::api::core::v1::Pod;

use super::filter::{term_matches, tolerates, NodeInfo, PodUsage};

/// The highest score a plugin gives (`framework.MaxNodeScore`).
pub const MAX_NODE_SCORE: i64 = 100;

const WEIGHT_LEAST_ALLOCATED: i64 = 1;
const WEIGHT_BALANCED: i64 = 1;
const WEIGHT_NODE_AFFINITY: i64 = 2;
const WEIGHT_TAINT_TOLERATION: i64 = 3;

/// LeastAllocated over cpu and memory (weights 1 and 1), counting the pod itself and the
/// scoring defaults for unset requests (upstream `leastRequestedScore`).
pub fn least_allocated(usage: &PodUsage, node: &NodeInfo) -> i64 {
    let score = |requested: i64, capacity: i64| {
        if capacity <= 0 || requested > capacity {
            0
        } else {
            (capacity - requested) * MAX_NODE_SCORE / capacity
        }
    };
    let cpu = score(
        node.non_zero_requested.milli_cpu + usage.non_zero.milli_cpu,
        node.allocatable.milli_cpu,
    );
    let mem = score(
        node.non_zero_requested.memory + usage.non_zero.memory,
        node.allocatable.memory,
    );
    (cpu + mem) / 2
}

/// BalancedAllocation: 100 when cpu and memory would be equally used, less the further apart
/// (upstream `balancedResourceScorer`: `(1 - std) * 100` over the used fractions).
pub fn balanced_allocation(usage: &PodUsage, node: &NodeInfo) -> i64 {
    let fraction = |requested: i64, capacity: i64| {
        if capacity <= 0 {
            1.0
        } else {
            (requested as f64 / capacity as f64).min(1.0)
        }
    };
    let cpu = fraction(
        node.requested.milli_cpu + usage.requests.milli_cpu,
        node.allocatable.milli_cpu,
    );
    let mem = fraction(
        node.requested.memory + usage.requests.memory,
        node.allocatable.memory,
    );
    let std = (cpu - mem).abs() / 2.0;
    ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
}

/// Sum of the weights of the preferred node affinity terms the node matches (raw, before
/// normalising).
pub fn preferred_affinity(pod: &Pod, node: &NodeInfo) -> i64 {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .into_iter()
        .flatten()
        .filter(|p| p.weight != 0 && term_matches(&p.preference, node))
        .map(|p| i64::from(p.weight))
        .sum()
}

/// Number of PreferNoSchedule taints of the node the pod does not tolerate (raw).
pub fn intolerable_prefer_no_schedule(pod: &Pod, node: &NodeInfo) -> i64 {
    let tols: Vec<_> = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default()
        .iter()
        .filter(|t| {
            t.effect
                .as_deref()
                .is_none_or(|e| e.is_empty() || e == "PreferNoSchedule")
        })
        .collect();
    node.taints
        .iter()
        .filter(|t| t.effect == "PreferNoSchedule")
        .filter(|t| !tols.iter().any(|tol| tolerates(tol, t)))
        .count() as i64
}

/// Upstream `DefaultNormalizeScore`: scales raw scores so the highest is 100; `reverse`
/// turns the scale around (a high raw count is bad).
pub fn normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = MAX_NODE_SCORE);
        }
        return;
    }
    for s in scores.iter_mut() {
        let scaled = MAX_NODE_SCORE * *s / max;
        *s = if reverse {
            MAX_NODE_SCORE - scaled
        } else {
            scaled
        };
    }
}

/// The weighted total score of each node in `nodes` (all of which passed the filters).
pub fn score_nodes(pod: &Pod, usage: &PodUsage, nodes: &[&NodeInfo]) -> Vec<i64> {
    let mut affinity: Vec<i64> = nodes.iter().map(|n| preferred_affinity(pod, n)).collect();
    normalize(&mut affinity, false);
    let mut taints: Vec<i64> = nodes
        .iter()
        .map(|n| intolerable_prefer_no_schedule(pod, n))
        .collect();
    normalize(&mut taints, true);
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            least_allocated(usage, n) * WEIGHT_LEAST_ALLOCATED
                + balanced_allocation(usage, n) * WEIGHT_BALANCED
                + affinity[i] * WEIGHT_NODE_AFFINITY
                + taints[i] * WEIGHT_TAINT_TOLERATION
        })
        .collect()
}

/// The index of the best score, ties broken by `pick(n)` (a uniform choice in `0..n`), as
/// upstream's `selectHost` breaks them by reservoir sampling so equal nodes share the load.
pub fn select_host(scores: &[i64], mut pick: impl FnMut(usize) -> usize) -> Option<usize> {
    let max = scores.iter().copied().max()?;
    let best: Vec<usize> = (0..scores.len()).filter(|i| scores[*i] == max).collect();
    let chosen = if best.len() == 1 {
        0
    } else {
        pick(best.len()) % best.len()
    };
    best.get(chosen).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn pod(spec: Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).expect("pod")
    }

    fn node(name: &str, cpu: &str, mem: &str, extra: Value) -> NodeInfo {
        let mut n = json!({
            "metadata": {"name": name, "labels": {"zone": name}},
            "status": {"allocatable": {"cpu": cpu, "memory": mem, "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]},
        });
        json_patch::merge(&mut n, &extra);
        NodeInfo::from_node(&serde_json::from_value(n).expect("node"))
    }

    fn usage(cpu: &str, mem: &str) -> (Pod, PodUsage) {
        let p = pod(
            json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": mem}}}]}),
        );
        let u = PodUsage::of(&p);
        (p, u)
    }

    #[test]
    fn resource_scores() {
        let (_, u) = usage("1", "1Gi");
        let cases: &[(&str, NodeInfo, i64, i64)] = &[
            // (cpu 50% free + mem 75% free) / 2; fractions 0.5 vs 0.25 → std 0.125.
            ("2 cpu 4Gi", node("a", "2", "4Gi", json!({})), 62, 87),
            // Equal fractions are perfectly balanced.
            ("2 cpu 2Gi", node("b", "2", "2Gi", json!({})), 50, 100),
            // Over capacity scores 0.
            ("500m", node("c", "500m", "4Gi", json!({})), 37, 62),
        ];
        for (name, n, least, balanced) in cases {
            assert_eq!(least_allocated(&u, n), *least, "least {name}");
            assert_eq!(balanced_allocation(&u, n), *balanced, "balanced {name}");
        }
    }

    #[test]
    fn affinity_and_taint_scores_and_selection() {
        let mut p = pod(
            json!({"containers": [{"name": "c"}], "affinity": {"nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 10, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}},
                {"weight": 5, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b", "c"]}]}}]}}}),
        );
        let u = PodUsage::of(&p);
        let a = node("a", "2", "4Gi", json!({}));
        let b = node("b", "2", "4Gi", json!({}));
        let c = node("c", "2", "4Gi", json!({}));
        assert_eq!([&a, &b, &c].map(|n| preferred_affinity(&p, n)), [0, 15, 5]);
        let scores = score_nodes(&p, &u, &[&a, &b, &c]);
        assert_eq!(select_host(&scores, |_| 0), Some(1), "{scores:?}");

        // PreferNoSchedule on b outweighs its affinity (3 × 100 vs 2 × 100).
        let tainted = node(
            "b",
            "2",
            "4Gi",
            json!({"spec": {"taints": [{"key": "x", "effect": "PreferNoSchedule"}]}}),
        );
        assert_eq!(intolerable_prefer_no_schedule(&p, &tainted), 1);
        let scores = score_nodes(&p, &u, &[&a, &tainted, &c]);
        assert_eq!(select_host(&scores, |_| 0), Some(2), "{scores:?}");
        // Tolerating it removes the penalty.
        if let Some(spec) = p.spec.as_mut() {
            spec.tolerations = Some(vec![serde_json::from_value(
                json!({"key": "x", "operator": "Exists"}),
            )
            .expect("tol")]);
        }
        assert_eq!(intolerable_prefer_no_schedule(&p, &tainted), 0);
    }

    #[test]
    fn normalize_and_ties() {
        let mut s = vec![0, 5, 10];
        normalize(&mut s, false);
        assert_eq!(s, vec![0, 50, 100]);
        let mut s = vec![0, 1, 2];
        normalize(&mut s, true);
        assert_eq!(s, vec![100, 50, 0]);
        let mut s = vec![0, 0];
        normalize(&mut s, true);
        assert_eq!(s, vec![100, 100]);
        // Ties go to the picked one among the best.
        assert_eq!(select_host(&[5, 9, 9, 1, 9], |n| n - 1), Some(4));
        assert_eq!(select_host(&[5, 9, 9, 1, 9], |_| 0), Some(1));
        assert_eq!(select_host(&[], |_| 0), None);
    }
}

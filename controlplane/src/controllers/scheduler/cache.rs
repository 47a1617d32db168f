//! The scheduler cache, pure: nodes with the pods bound or assumed on them, and the decision
//! for one pod (filter, score, select), as upstream's pkg/scheduler/backend/cache and
//! `schedulePod`.
//!
//! "Assumed" pods are those this scheduler just chose a node for: they count on that node
//! from the moment of the decision, so the next decisions see them before the watch shows
//! the binding (upstream's assume cache). The watch's bound version replaces them.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Node, Pod};

use super::filter::{self, NodeInfo, PodUsage, Reason};
use super::score;

/// Where a pod is counted.
#[derive(Debug, Clone)]
struct Placement {
    node: String,
    assumed: bool,
}

/// Nodes and the pods on them.
#[derive(Debug, Default)]
pub struct Cache {
    /// Node infos by name; an entry without `present` only holds pods of a deleted node.
    nodes: BTreeMap<String, NodeInfo>,
    present: BTreeMap<String, ()>,
    pods: HashMap<String, Placement>,
}

/// Whether a pod is bound and still holds its node's resources (not Succeeded/Failed).
pub fn counts_on_node(pod: &Pod) -> Option<&str> {
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())?;
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    (!matches!(phase, Some("Succeeded" | "Failed"))).then_some(node)
}

fn uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or_default()
}

impl Cache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the pod (uid) is counted on a node, bound or assumed.
    pub fn holds(&self, uid: &str) -> bool {
        self.pods.contains_key(uid)
    }

    /// Number of existing nodes.
    pub fn node_count(&self) -> usize {
        self.present.len()
    }

    /// The info of an existing node.
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.present
            .contains_key(name)
            .then(|| self.nodes.get(name))
            .flatten()
    }

    /// Adds or updates a node; true when anything the filters or scores read changed.
    pub fn update_node(&mut self, node: &Node) -> bool {
        let name = node.metadata.name.clone().unwrap_or_default();
        let existed = self.present.insert(name.clone(), ()).is_some();
        let info = self.nodes.entry(name.clone()).or_insert_with(|| NodeInfo {
            name,
            ..Default::default()
        });
        let before = (
            info.labels.clone(),
            info.allocatable.clone(),
            info.allocatable_pods,
            info.taints.clone(),
            info.unschedulable,
            info.ready,
        );
        info.set_node(node);
        let after = (
            info.labels.clone(),
            info.allocatable.clone(),
            info.allocatable_pods,
            info.taints.clone(),
            info.unschedulable,
            info.ready,
        );
        !existed || before != after
    }

    /// Removes a node; its pods stay counted until they are gone too.
    pub fn remove_node(&mut self, name: &str) {
        self.present.remove(name);
        if self.nodes.get(name).is_some_and(|n| n.pods.is_empty()) {
            self.nodes.remove(name);
        }
    }

    fn place(&mut self, uid: &str, node: &str, usage: PodUsage, assumed: bool) {
        self.unplace(uid);
        self.nodes
            .entry(node.to_string())
            .or_insert_with(|| NodeInfo {
                name: node.to_string(),
                ..Default::default()
            })
            .add_pod(uid, usage);
        self.pods.insert(
            uid.to_string(),
            Placement {
                node: node.to_string(),
                assumed,
            },
        );
    }

    fn unplace(&mut self, uid: &str) {
        if let Some(old) = self.pods.remove(uid) {
            if let Some(info) = self.nodes.get_mut(&old.node) {
                info.remove_pod(uid);
                if info.pods.is_empty() && !self.present.contains_key(&old.node) {
                    self.nodes.remove(&old.node);
                }
            }
        }
    }

    /// Takes in a pod as the watch shows it: a bound, running pod is counted on its node
    /// (confirming an assumption); an unbound one that was assumed stays assumed, since the
    /// watch has not caught up with the binding yet; any other is not counted.
    pub fn update_pod(&mut self, pod: &Pod) {
        let uid = uid(pod);
        match counts_on_node(pod) {
            Some(node) => {
                let node = node.to_string();
                self.place(uid, &node, PodUsage::of(pod), false);
            }
            None => {
                let unbound = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_deref())
                    .is_none_or(str::is_empty);
                let assumed = self.pods.get(uid).is_some_and(|p| p.assumed);
                if !(unbound && assumed) {
                    self.unplace(uid);
                }
            }
        }
    }

    /// Forgets a deleted pod.
    pub fn remove_pod(&mut self, uid: &str) {
        self.unplace(uid);
    }

    /// Counts `pod` on `node` before the binding is seen.
    pub fn assume(&mut self, uid: &str, node: &str, usage: PodUsage) {
        self.place(uid, node, usage, true);
    }

    /// Drops an assumption whose binding failed; a confirmed placement is kept.
    pub fn forget(&mut self, uid: &str) {
        if self.pods.get(uid).is_some_and(|p| p.assumed) {
            self.unplace(uid);
        }
    }

    /// Whether `uid` is assumed and not yet confirmed.
    pub fn is_assumed(&self, uid: &str) -> bool {
        self.pods.get(uid).is_some_and(|p| p.assumed)
    }

    /// Rebuilds from a fresh list (after the watch relisted), keeping assumptions about pods
    /// that still exist unbound.
    pub fn reset<'a>(
        &mut self,
        nodes: impl IntoIterator<Item = &'a Node>,
        pods: impl IntoIterator<Item = &'a Pod>,
    ) {
        let assumed: HashMap<String, (String, PodUsage)> = self
            .pods
            .iter()
            .filter(|(_, p)| p.assumed)
            .filter_map(|(uid, p)| {
                let usage = self.nodes.get(&p.node)?.pods.get(uid)?.clone();
                Some((uid.clone(), (p.node.clone(), usage)))
            })
            .collect();
        *self = Cache::new();
        for n in nodes {
            self.update_node(n);
        }
        for p in pods {
            let uid = uid(p);
            match (counts_on_node(p), assumed.get(uid)) {
                (Some(_), _) => self.update_pod(p),
                (None, Some((node, usage)))
                    if p.spec
                        .as_ref()
                        .and_then(|s| s.node_name.as_deref())
                        .is_none_or(str::is_empty) =>
                {
                    self.assume(uid, node, usage.clone())
                }
                _ => {}
            }
        }
    }

    /// Chooses a node for `pod` (`schedulePod`): the filters on every node, the scores on
    /// those that pass, the best score (ties through `pick`). Err is the FailedScheduling
    /// message, with per-reason node counts.
    pub fn schedule(
        &self,
        pod: &Pod,
        usage: &PodUsage,
        pick: impl FnMut(usize) -> usize,
    ) -> Result<String, String> {
        let mut feasible: Vec<&NodeInfo> = Vec::new();
        let mut failed: Vec<Vec<Reason>> = Vec::new();
        for name in self.present.keys() {
            let Some(info) = self.nodes.get(name) else {
                continue;
            };
            let reasons = filter::filter(pod, usage, info);
            if reasons.is_empty() {
                feasible.push(info);
            } else {
                failed.push(reasons);
            }
        }
        if feasible.is_empty() {
            return Err(filter::fit_error_message(self.present.len(), &failed));
        }
        if feasible.len() == 1 {
            return Ok(feasible[0].name.clone());
        }
        let scores = score::score_nodes(pod, usage, &feasible);
        let best = score::select_host(&scores, pick).unwrap_or(0);
        Ok(feasible[best].name.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "status": {"allocatable": {"cpu": "1", "memory": "1Gi", "pods": "10"},
                       "conditions": [{"type": "Ready", "status": "True"}]},
        }))
        .expect("node")
    }

    fn pod(name: &str, node: Option<&str>, phase: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}")},
            "spec": {"nodeName": node, "containers": [{"name": "c",
                "resources": {"requests": {"cpu": "600m"}}}]},
            "status": {"phase": phase},
        }))
        .expect("pod")
    }

    #[test]
    fn assumed_pods_count_until_confirmed_or_forgotten() {
        let mut c = Cache::new();
        c.update_node(&node("n1"));
        c.update_node(&node("n2"));
        let p1 = pod("p1", None, "Pending");
        let u = PodUsage::of(&p1);
        let first = c.schedule(&p1, &u, |_| 0).expect("fits");
        c.assume("uid-p1", &first, u.clone());
        // The next decision sees the assumed pod: 600m + 600m do not fit on one 1-cpu node.
        let p2 = pod("p2", None, "Pending");
        let second = c.schedule(&p2, &u, |_| 0).expect("fits");
        assert_ne!(first, second);
        c.assume("uid-p2", &second, u.clone());
        let p3 = pod("p3", None, "Pending");
        assert_eq!(
            c.schedule(&p3, &u, |_| 0),
            Err("0/2 nodes are available: 2 Insufficient cpu.".to_string())
        );
        // The watch still shows p1 unbound: it stays assumed.
        c.update_pod(&p1);
        assert!(c.is_assumed("uid-p1"));
        // The bound version confirms it.
        c.update_pod(&pod("p1", Some(&first), "Pending"));
        assert!(!c.is_assumed("uid-p1"));
        c.forget("uid-p1");
        assert_eq!(
            c.node(&first).map(|n| n.pods.len()),
            Some(1),
            "confirmed pods stay"
        );
        // A failed binding frees the node.
        c.forget("uid-p2");
        assert_eq!(c.node(&second).map(|n| n.pods.len()), Some(0));
        // A finished pod frees its node too.
        c.update_pod(&pod("p1", Some(&first), "Succeeded"));
        assert_eq!(c.node(&first).map(|n| n.requested.milli_cpu), Some(0));
    }

    #[test]
    fn reset_keeps_live_assumptions_and_node_changes_are_detected() {
        let mut c = Cache::new();
        assert!(c.update_node(&node("n1")));
        assert!(!c.update_node(&node("n1")), "same facts: no change");
        let mut cordoned = node("n1");
        cordoned.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
            unschedulable: Some(true),
            ..Default::default()
        });
        assert!(c.update_node(&cordoned));
        let p = pod("p", None, "Pending");
        c.assume("uid-p", "n1", PodUsage::of(&p));
        let gone = pod("gone", None, "Pending");
        c.assume("uid-gone", "n1", PodUsage::of(&gone));
        let n1 = node("n1");
        c.reset([&n1], [&p]);
        assert!(c.is_assumed("uid-p"));
        assert!(!c.is_assumed("uid-gone"));
        assert_eq!(c.node("n1").map(|n| n.pods.len()), Some(1));
        c.remove_node("n1");
        assert_eq!(c.node_count(), 0);
    }
}

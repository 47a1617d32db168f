//! The scheduler's filters, pure: which nodes a pod fits on, and why the others are out.
//!
//! One function per upstream filter plugin (kubernetes/kubernetes
//! pkg/scheduler/framework/plugins/{nodeunschedulable,tainttoleration,nodeaffinity,nodeports,
//! noderesources}), run in upstream's order; a node's first failing filter gives its reasons,
//! worded as upstream words them, because users grep FailedScheduling Events for those words.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{
    Container, Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodSpec, Taint, Toleration,
};

use crate::registry::validation::parse_quantity;

/// `node.kubernetes.io/unschedulable`, the taint a cordoned node implies.
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// Amounts of resources: cpu in millicores, the rest in their base unit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU in millicores.
    pub milli_cpu: i64,
    /// Memory in bytes.
    pub memory: i64,
    /// Ephemeral storage in bytes.
    pub ephemeral_storage: i64,
    /// Extended and hugepages resources, by name.
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    /// Reads a `ResourceList` (requests, allocatable, overhead).
    pub fn from_list(
        list: &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    ) -> Self {
        let mut r = Resources::default();
        for (name, q) in list {
            let Some(v) = parse_quantity(&q.0) else {
                continue;
            };
            match name.as_str() {
                "cpu" => r.milli_cpu = (v * 1000.0).ceil() as i64,
                "memory" => r.memory = v.ceil() as i64,
                "ephemeral-storage" => r.ephemeral_storage = v.ceil() as i64,
                "pods" => {}
                other if is_scalar(other) => {
                    r.scalar.insert(other.to_string(), v.ceil() as i64);
                }
                _ => {}
            }
        }
        r
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Resources) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        self.ephemeral_storage += other.ephemeral_storage;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_default() += v;
        }
    }

    /// Subtracts `other` from `self`.
    pub fn sub(&mut self, other: &Resources) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
        self.ephemeral_storage -= other.ephemeral_storage;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_default() -= v;
        }
    }

    /// Raises each amount of `self` to at least `other`'s.
    pub fn max_with(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        for (k, v) in &other.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }

    fn is_zero(&self) -> bool {
        self.milli_cpu == 0
            && self.memory == 0
            && self.ephemeral_storage == 0
            && self.scalar.values().all(|v| *v == 0)
    }
}

/// Extended resources (`example.com/foo`) and hugepages are checked like cpu and memory.
fn is_scalar(name: &str) -> bool {
    name.starts_with("hugepages-") || (name.contains('/') && !name.starts_with("kubernetes.io/"))
}

/// Default cpu request counted for scoring when a container sets none (upstream
/// `DefaultMilliCPURequest`), so best-effort pods still spread.
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// Default memory request counted for scoring (`DefaultMemoryRequest`, 200 MiB).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

fn container_requests(c: &Container) -> Resources {
    c.resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .map(Resources::from_list)
        .unwrap_or_default()
}

fn non_zero(mut r: Resources) -> Resources {
    if r.milli_cpu == 0 {
        r.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
    }
    if r.memory == 0 {
        r.memory = DEFAULT_MEMORY_REQUEST;
    }
    r
}

/// A pod's effective requests as upstream's `resource.PodRequests` computes them: the sum of
/// the containers, raised to each init container's (restartable "sidecar" init containers add
/// up and keep running beside the others), plus the pod overhead. With `non_zero`, containers
/// without a cpu or memory request count the scoring defaults.
pub fn pod_requests(spec: &PodSpec, non_zero_defaults: bool) -> Resources {
    let req = |c: &Container| {
        let r = container_requests(c);
        if non_zero_defaults {
            non_zero(r)
        } else {
            r
        }
    };
    let mut total = Resources::default();
    for c in &spec.containers {
        total.add(&req(c));
    }
    let mut sidecars = Resources::default();
    let mut init_max = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let mut this = req(c);
        if c.restart_policy.as_deref() == Some("Always") {
            total.add(&this);
            sidecars.add(&this);
            this = sidecars.clone();
        } else {
            this.add(&sidecars);
        }
        init_max.max_with(&this);
    }
    total.max_with(&init_max);
    if let Some(overhead) = &spec.overhead {
        total.add(&Resources::from_list(overhead));
    }
    total
}

/// One host port a pod claims: protocol, host IP (`0.0.0.0` when unset) and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// TCP, UDP or SCTP.
    pub protocol: String,
    /// The host IP, `0.0.0.0` for all.
    pub ip: String,
    /// The port.
    pub port: i32,
}

impl HostPort {
    /// Whether two claims collide: same protocol and port, and the same IP or a wildcard.
    pub fn conflicts(&self, other: &HostPort) -> bool {
        let wild = |ip: &str| ip == "0.0.0.0" || ip == "::";
        self.protocol == other.protocol
            && self.port == other.port
            && (self.ip == other.ip || wild(&self.ip) || wild(&other.ip))
    }
}

/// The host ports of a pod's containers (and restartable init containers, which keep running).
pub fn host_ports(spec: &PodSpec) -> Vec<HostPort> {
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    spec.containers
        .iter()
        .chain(sidecars)
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.unwrap_or(0) > 0)
        .map(|p| HostPort {
            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".to_string()),
            ip: p
                .host_ip
                .clone()
                .filter(|ip| !ip.is_empty())
                .unwrap_or_else(|| "0.0.0.0".to_string()),
            port: p.host_port.unwrap_or(0),
        })
        .collect()
}

/// What a pod takes from a node, computed once per pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodUsage {
    /// Requests as the fit filter counts them.
    pub requests: Resources,
    /// Requests with the scoring defaults for unset cpu/memory.
    pub non_zero: Resources,
    /// Claimed host ports.
    pub ports: Vec<HostPort>,
}

impl PodUsage {
    /// The usage of `pod`.
    pub fn of(pod: &Pod) -> Self {
        let Some(spec) = pod.spec.as_ref() else {
            return Self::default();
        };
        Self {
            requests: pod_requests(spec, false),
            non_zero: pod_requests(spec, true),
            ports: host_ports(spec),
        }
    }
}

/// A node as the scheduler sees it: the node's own facts plus what its pods use.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    /// The node's name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Allocatable resources.
    pub allocatable: Resources,
    /// Allocatable pod count.
    pub allocatable_pods: i64,
    /// Taints.
    pub taints: Vec<Taint>,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
    /// The Ready condition is True.
    pub ready: bool,
    /// Sum of the requests of the pods on the node.
    pub requested: Resources,
    /// Same with the scoring defaults.
    pub non_zero_requested: Resources,
    /// Pods on the node, by UID, with what each uses.
    pub pods: HashMap<String, PodUsage>,
}

impl NodeInfo {
    /// The facts of `node`, with no pods yet.
    pub fn from_node(node: &Node) -> Self {
        let mut info = NodeInfo {
            name: node.metadata.name.clone().unwrap_or_default(),
            ..Default::default()
        };
        info.set_node(node);
        info
    }

    /// Replaces the node's own facts, keeping its pods.
    pub fn set_node(&mut self, node: &Node) {
        let status = node.status.as_ref();
        let alloc = status
            .and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()))
            .cloned()
            .unwrap_or_default();
        self.allocatable = Resources::from_list(&alloc);
        self.allocatable_pods = alloc
            .get("pods")
            .and_then(|q| parse_quantity(&q.0))
            .map(|v| v as i64)
            .unwrap_or(0);
        self.labels = node.metadata.labels.clone().unwrap_or_default();
        let spec = node.spec.as_ref();
        self.taints = spec.and_then(|s| s.taints.clone()).unwrap_or_default();
        self.unschedulable = spec.and_then(|s| s.unschedulable).unwrap_or(false);
        self.ready = status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
    }

    /// Counts a pod on this node (replacing an earlier count of the same UID).
    pub fn add_pod(&mut self, uid: &str, usage: PodUsage) {
        self.remove_pod(uid);
        self.requested.add(&usage.requests);
        self.non_zero_requested.add(&usage.non_zero);
        self.pods.insert(uid.to_string(), usage);
    }

    /// Stops counting a pod.
    pub fn remove_pod(&mut self, uid: &str) {
        if let Some(old) = self.pods.remove(uid) {
            self.requested.sub(&old.requests);
            self.non_zero_requested.sub(&old.non_zero);
        }
    }
}

/// Why a node does not fit, worded as upstream's filter plugins word it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// NodeUnschedulable: cordoned.
    Unschedulable,
    /// The Ready condition is not True (and no not-ready taint said so already).
    NotReady,
    /// TaintToleration: the first untolerated NoSchedule/NoExecute taint.
    UntoleratedTaint {
        /// Taint key.
        key: String,
        /// Taint value.
        value: String,
    },
    /// NodeAffinity: nodeSelector or required node affinity.
    NodeAffinity,
    /// NodePorts: a host port is taken.
    HostPorts,
    /// NodeResourcesFit: the pod count is at allocatable.
    TooManyPods,
    /// NodeResourcesFit: not enough of one resource.
    Insufficient(String),
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Unschedulable => f.write_str("node(s) were unschedulable"),
            Reason::NotReady => f.write_str("node(s) were not ready"),
            Reason::UntoleratedTaint { key, value } => {
                write!(f, "node(s) had untolerated taint {{{key}: {value}}}")
            }
            Reason::NodeAffinity => {
                f.write_str("node(s) didn't match Pod's node affinity/selector")
            }
            Reason::HostPorts => {
                f.write_str("node(s) didn't have free ports for the requested pod ports")
            }
            Reason::TooManyPods => f.write_str("Too many pods"),
            Reason::Insufficient(r) => write!(f, "Insufficient {r}"),
        }
    }
}

/// Whether `tol` tolerates `taint` (upstream `Toleration.ToleratesTaint`).
pub fn tolerates(tol: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = tol.effect.as_deref().filter(|e| !e.is_empty()) {
        if effect != taint.effect {
            return false;
        }
    }
    let key = tol.key.as_deref().unwrap_or_default();
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match tol.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            // An empty key with Equal is invalid upstream; it tolerates nothing.
            !key.is_empty()
                && tol.value.as_deref().unwrap_or_default()
                    == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

/// Whether any of `tolerations` tolerates `taint`.
pub fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

fn tolerations(pod: &Pod) -> &[Toleration] {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default()
}

/// Whether a node selector requirement holds for `value` (the label's value, if any).
/// Whether one node selector requirement holds for a label (or field) value.
pub fn requirement_matches(req: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = req.values.as_deref().unwrap_or_default();
    let int = |s: &str| s.parse::<i64>().ok();
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), [bound]) = (value.and_then(int), values) else {
                return false;
            };
            let Some(bound) = int(bound) else {
                return false;
            };
            if req.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// Whether a node selector term matches the node: every matchExpression on labels and every
/// matchField (only `metadata.name`) holds; a term with neither matches nothing, as upstream.
pub fn term_matches(term: &NodeSelectorTerm, node: &NodeInfo) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs
        .iter()
        .all(|r| requirement_matches(r, node.labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| {
            r.key == "metadata.name"
                && matches!(r.operator.as_str(), "In" | "NotIn")
                && requirement_matches(r, Some(&node.name))
        })
}

/// NodeAffinity's filter: nodeSelector labels and the required node affinity terms (ORed).
pub fn matches_node_affinity(pod: &Pod, node: &NodeInfo) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return true;
    };
    if let Some(sel) = &spec.node_selector {
        if !sel.iter().all(|(k, v)| node.labels.get(k) == Some(v)) {
            return false;
        }
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    match required {
        Some(sel) => sel
            .node_selector_terms
            .iter()
            .any(|t| term_matches(t, node)),
        None => true,
    }
}

/// Runs the filters in upstream's order and returns the reasons of the first that fails
/// (NodeResourcesFit can give several, one per short resource); empty when the pod fits.
pub fn filter(pod: &Pod, usage: &PodUsage, node: &NodeInfo) -> Vec<Reason> {
    let tols = tolerations(pod);
    // NodeUnschedulable: a pod tolerating the unschedulable taint may go on a cordoned node.
    if node.unschedulable {
        let cordon = Taint {
            key: TAINT_UNSCHEDULABLE.to_string(),
            effect: "NoSchedule".to_string(),
            ..Default::default()
        };
        if !tolerated(tols, &cordon) {
            return vec![Reason::Unschedulable];
        }
    }
    // TaintToleration: PreferNoSchedule only lowers the score.
    if let Some(t) = node
        .taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|t| !tolerated(tols, t))
    {
        return vec![Reason::UntoleratedTaint {
            key: t.key.clone(),
            value: t.value.clone().unwrap_or_default(),
        }];
    }
    // Upstream relies on the not-ready/unreachable taints alone; a node whose Ready is not
    // True but that is not tainted yet (the lifecycle controller has not run) is out too.
    if !node.ready {
        return vec![Reason::NotReady];
    }
    if !matches_node_affinity(pod, node) {
        return vec![Reason::NodeAffinity];
    }
    if usage.ports.iter().any(|want| {
        node.pods
            .values()
            .flat_map(|p| &p.ports)
            .any(|have| want.conflicts(have))
    }) {
        return vec![Reason::HostPorts];
    }
    fit_resources(usage, node)
}

/// NodeResourcesFit's filter (upstream `fitsRequest`).
pub fn fit_resources(usage: &PodUsage, node: &NodeInfo) -> Vec<Reason> {
    let mut reasons = Vec::new();
    if node.pods.len() as i64 + 1 > node.allocatable_pods {
        reasons.push(Reason::TooManyPods);
    }
    let want = &usage.requests;
    if want.is_zero() {
        return reasons;
    }
    let (alloc, used) = (&node.allocatable, &node.requested);
    if want.milli_cpu > 0 && want.milli_cpu > alloc.milli_cpu - used.milli_cpu {
        reasons.push(Reason::Insufficient("cpu".to_string()));
    }
    if want.memory > 0 && want.memory > alloc.memory - used.memory {
        reasons.push(Reason::Insufficient("memory".to_string()));
    }
    if want.ephemeral_storage > 0
        && want.ephemeral_storage > alloc.ephemeral_storage - used.ephemeral_storage
    {
        reasons.push(Reason::Insufficient("ephemeral-storage".to_string()));
    }
    for (name, amount) in &want.scalar {
        let free = alloc.scalar.get(name).copied().unwrap_or(0)
            - used.scalar.get(name).copied().unwrap_or(0);
        if *amount > 0 && *amount > free {
            reasons.push(Reason::Insufficient(name.clone()));
        }
    }
    reasons
}

/// The FailedScheduling message (upstream `FitError.Error`): "0/N nodes are available:" then
/// "<count> <reason>" for each reason, sorted as strings as upstream sorts them, then ".".
/// With no nodes at all it is upstream's `ErrNoNodesAvailable` text.
pub fn fit_error_message(num_nodes: usize, per_node: &[Vec<Reason>]) -> String {
    if num_nodes == 0 {
        return "no nodes available to schedule pods".to_string();
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for reasons in per_node {
        for r in reasons {
            *counts.entry(r.to_string()).or_default() += 1;
        }
    }
    let mut parts: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    let mut msg = format!("0/{num_nodes} nodes are available:");
    if !parts.is_empty() {
        msg.push_str(&format!(" {}.", parts.join(", ")));
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn pod(spec: Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "uid": "u-p"}, "spec": spec}))
            .expect("pod")
    }

    fn requests(cpu: &str, mem: &str) -> Value {
        json!({"requests": {"cpu": cpu, "memory": mem}})
    }

    fn node(extra: Value) -> NodeInfo {
        let mut n = json!({
            "metadata": {"name": "n1", "labels": {"zone": "a", "gen": "5"}},
            "spec": {},
            "status": {
                "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "3"},
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        });
        json_patch::merge(&mut n, &extra);
        NodeInfo::from_node(&serde_json::from_value(n).expect("node"))
    }

    fn with_pods(mut info: NodeInfo, pods: &[Pod]) -> NodeInfo {
        for (i, p) in pods.iter().enumerate() {
            info.add_pod(&format!("u{i}"), PodUsage::of(p));
        }
        info
    }

    #[test]
    fn pod_requests_sum_init_max_sidecars_overhead() {
        let cases: &[(&str, Value, i64, i64)] = &[
            (
                "containers add up",
                json!({"containers": [
                    {"name": "a", "resources": requests("100m", "1Mi")},
                    {"name": "b", "resources": requests("200m", "1Mi")}]}),
                300,
                2 << 20,
            ),
            (
                "an init container raises to its own",
                json!({"containers": [{"name": "a", "resources": requests("100m", "1Mi")}],
                       "initContainers": [{"name": "i", "resources": requests("1", "512Ki")}]}),
                1000,
                1 << 20,
            ),
            (
                "a sidecar adds to the containers and to later init containers",
                json!({"containers": [{"name": "a", "resources": requests("100m", "0")}],
                       "initContainers": [
                           {"name": "s", "restartPolicy": "Always", "resources": requests("200m", "0")},
                           {"name": "i", "resources": requests("250m", "0")}]}),
                450,
                0,
            ),
            (
                "overhead on top",
                json!({"containers": [{"name": "a", "resources": requests("100m", "1Mi")}],
                       "overhead": {"cpu": "50m", "memory": "1Mi"}}),
                150,
                2 << 20,
            ),
        ];
        for (name, spec, cpu, mem) in cases {
            let r = pod_requests(pod(spec.clone()).spec.as_ref().expect("spec"), false);
            assert_eq!((r.milli_cpu, r.memory), (*cpu, *mem), "{name}");
        }
        let best_effort = pod(json!({"containers": [{"name": "a"}]}));
        let nz = pod_requests(best_effort.spec.as_ref().expect("spec"), true);
        assert_eq!(
            (nz.milli_cpu, nz.memory),
            (DEFAULT_MILLI_CPU_REQUEST, DEFAULT_MEMORY_REQUEST)
        );
    }

    #[test]
    fn filters() {
        let small = json!({"containers": [{"name": "c", "resources": requests("500m", "1Gi")}]});
        let one_cpu =
            pod(json!({"containers": [{"name": "c", "resources": requests("1", "1Gi")}]}));
        let port = |ip: Option<&str>, proto: &str| {
            let mut p = json!({"containerPort": 80, "hostPort": 8080, "protocol": proto});
            if let Some(ip) = ip {
                p["hostIP"] = json!(ip);
            }
            pod(json!({"containers": [{"name": "c", "ports": [p]}]}))
        };
        let taint = |effect: &str| json!({"spec": {"taints": [{"key": "k", "value": "v", "effect": effect}]}});
        let untolerated = Reason::UntoleratedTaint {
            key: "k".into(),
            value: "v".into(),
        };
        let affinity = |exprs: Value| {
            let mut s = small.clone();
            s["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                {"nodeSelectorTerms": [exprs]}}});
            s
        };
        let cases: Vec<(&str, Value, NodeInfo, Vec<Reason>)> = vec![
            ("fits", small.clone(), node(json!({})), vec![]),
            (
                "cpu short",
                json!({"containers": [{"name": "c", "resources": requests("1500m", "1Gi")}]}),
                with_pods(node(json!({})), std::slice::from_ref(&one_cpu)),
                vec![Reason::Insufficient("cpu".into())],
            ),
            (
                "cpu and memory short",
                json!({"containers": [{"name": "c", "resources": requests("3", "5Gi")}]}),
                node(json!({})),
                vec![
                    Reason::Insufficient("cpu".into()),
                    Reason::Insufficient("memory".into()),
                ],
            ),
            (
                "extended resource missing",
                json!({"containers": [{"name": "c", "resources": {"requests": {"example.com/gpu": "1"}}}]}),
                node(json!({})),
                vec![Reason::Insufficient("example.com/gpu".into())],
            ),
            (
                "pod count at allocatable",
                json!({"containers": [{"name": "c"}]}),
                with_pods(
                    node(json!({})),
                    &[
                        pod(json!({"containers": []})),
                        pod(json!({"containers": []})),
                        pod(json!({"containers": []})),
                    ],
                ),
                vec![Reason::TooManyPods],
            ),
            (
                "cordoned",
                small.clone(),
                node(json!({"spec": {"unschedulable": true}})),
                vec![Reason::Unschedulable],
            ),
            (
                "cordoned but tolerated",
                {
                    let mut s = small.clone();
                    s["tolerations"] = json!([{"key": TAINT_UNSCHEDULABLE, "operator": "Exists", "effect": "NoSchedule"}]);
                    s
                },
                node(json!({"spec": {"unschedulable": true}})),
                vec![],
            ),
            (
                "not ready",
                small.clone(),
                node(json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}})),
                vec![Reason::NotReady],
            ),
            (
                "NoSchedule taint",
                small.clone(),
                node(taint("NoSchedule")),
                vec![untolerated.clone()],
            ),
            (
                "NoExecute taint",
                small.clone(),
                node(taint("NoExecute")),
                vec![untolerated.clone()],
            ),
            (
                "PreferNoSchedule only scores",
                small.clone(),
                node(taint("PreferNoSchedule")),
                vec![],
            ),
            (
                "taint tolerated by Equal",
                {
                    let mut s = small.clone();
                    s["tolerations"] = json!([{"key": "k", "operator": "Equal", "value": "v"}]);
                    s
                },
                node(taint("NoSchedule")),
                vec![],
            ),
            (
                "wrong value not tolerated",
                {
                    let mut s = small.clone();
                    s["tolerations"] = json!([{"key": "k", "value": "w", "effect": "NoSchedule"}]);
                    s
                },
                node(taint("NoSchedule")),
                vec![untolerated.clone()],
            ),
            (
                "Exists without key tolerates all",
                {
                    let mut s = small.clone();
                    s["tolerations"] = json!([{"operator": "Exists"}]);
                    s
                },
                node(taint("NoExecute")),
                vec![],
            ),
            (
                "nodeSelector matches",
                {
                    let mut s = small.clone();
                    s["nodeSelector"] = json!({"zone": "a"});
                    s
                },
                node(json!({})),
                vec![],
            ),
            (
                "nodeSelector misses",
                {
                    let mut s = small.clone();
                    s["nodeSelector"] = json!({"zone": "b"});
                    s
                },
                node(json!({})),
                vec![Reason::NodeAffinity],
            ),
            (
                "affinity In",
                affinity(
                    json!({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}),
                ),
                node(json!({})),
                vec![],
            ),
            (
                "affinity NotIn",
                affinity(
                    json!({"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}),
                ),
                node(json!({})),
                vec![Reason::NodeAffinity],
            ),
            (
                "affinity Exists",
                affinity(json!({"matchExpressions": [{"key": "zone", "operator": "Exists"}]})),
                node(json!({})),
                vec![],
            ),
            (
                "affinity DoesNotExist",
                affinity(
                    json!({"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]}),
                ),
                node(json!({})),
                vec![Reason::NodeAffinity],
            ),
            (
                "affinity Gt",
                affinity(
                    json!({"matchExpressions": [{"key": "gen", "operator": "Gt", "values": ["4"]}]}),
                ),
                node(json!({})),
                vec![],
            ),
            (
                "affinity Lt",
                affinity(
                    json!({"matchExpressions": [{"key": "gen", "operator": "Lt", "values": ["4"]}]}),
                ),
                node(json!({})),
                vec![Reason::NodeAffinity],
            ),
            (
                "affinity Gt on a missing label",
                affinity(
                    json!({"matchExpressions": [{"key": "nope", "operator": "Gt", "values": ["4"]}]}),
                ),
                node(json!({})),
                vec![Reason::NodeAffinity],
            ),
            (
                "matchFields name",
                affinity(
                    json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}),
                ),
                node(json!({})),
                vec![],
            ),
            (
                "matchFields other name",
                affinity(
                    json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]}),
                ),
                node(json!({})),
                vec![Reason::NodeAffinity],
            ),
            (
                "empty term matches nothing",
                affinity(json!({})),
                node(json!({})),
                vec![Reason::NodeAffinity],
            ),
            (
                "host port free",
                serde_json::to_value(port(None, "TCP").spec).expect("spec"),
                node(json!({})),
                vec![],
            ),
            (
                "host port taken (wildcard)",
                serde_json::to_value(port(Some("10.0.0.1"), "TCP").spec).expect("spec"),
                with_pods(node(json!({})), &[port(None, "TCP")]),
                vec![Reason::HostPorts],
            ),
            (
                "same port, other protocol",
                serde_json::to_value(port(None, "UDP").spec).expect("spec"),
                with_pods(node(json!({})), &[port(None, "TCP")]),
                vec![],
            ),
            (
                "same port, other host IPs",
                serde_json::to_value(port(Some("10.0.0.2"), "TCP").spec).expect("spec"),
                with_pods(node(json!({})), &[port(Some("10.0.0.1"), "TCP")]),
                vec![],
            ),
        ];
        for (name, spec, info, want) in cases {
            let p = pod(spec);
            assert_eq!(filter(&p, &PodUsage::of(&p), &info), want, "{name}");
        }
    }

    #[test]
    fn fit_error_messages() {
        let taint = Reason::UntoleratedTaint {
            key: "node.kubernetes.io/unreachable".into(),
            value: String::new(),
        };
        let cpu = Reason::Insufficient("cpu".into());
        let mem = Reason::Insufficient("memory".into());
        let cases: Vec<(usize, Vec<Vec<Reason>>, &str)> = vec![
            (
                3,
                vec![vec![taint.clone()], vec![cpu.clone()], vec![taint.clone()]],
                "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {node.kubernetes.io/unreachable: }.",
            ),
            (
                2,
                vec![vec![cpu.clone(), mem.clone()], vec![cpu.clone()]],
                "0/2 nodes are available: 1 Insufficient memory, 2 Insufficient cpu.",
            ),
            (
                4,
                vec![vec![Reason::Unschedulable], vec![Reason::NodeAffinity], vec![Reason::HostPorts], vec![Reason::TooManyPods]],
                "0/4 nodes are available: 1 Too many pods, 1 node(s) didn't have free ports for the requested pod ports, \
                 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) were unschedulable.",
            ),
            (0, vec![], "no nodes available to schedule pods"),
        ];
        for (n, reasons, want) in cases {
            assert_eq!(fit_error_message(n, &reasons), want);
        }
    }
}

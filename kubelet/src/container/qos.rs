//! Pod QoS class and criticality, as upstream's pkg/apis/core/v1/helper/qos (ComputePodQOS)
//! and pkg/kubelet/types (IsCriticalPod, IsNodeCriticalPod).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::labels;
use crate::node::host::Quantity;

/// The QoS class of a pod; decides its cgroup parent, CPU shares floor and OOM score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QosClass {
    /// Every container sets equal CPU and memory requests and limits.
    Guaranteed,
    /// Some container sets a CPU or memory request or limit, but not all are Guaranteed.
    Burstable,
    /// No container sets any CPU or memory request or limit.
    BestEffort,
}

impl QosClass {
    /// The API name (`status.qosClass`): `Guaranteed`, `Burstable`, `BestEffort`.
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }
}

/// Priority at and above which a pod counts as critical (scheduling.SystemCriticalPriority).
pub const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// The pod's QoS class computed from its spec, over regular and init containers.
///
/// As upstream's ComputePodQOS: only cpu and memory count, zero quantities are ignored, requests
/// and limits are summed per resource; Guaranteed needs cpu and memory limits on every container
/// and summed requests equal to summed limits. Requests are not defaulted from limits here: the
/// API server has already done that.
pub fn qos_class(pod: &Pod) -> QosClass {
    let Some(spec) = pod.spec.as_ref() else {
        return QosClass::BestEffort;
    };
    let mut requests: BTreeMap<&str, i128> = BTreeMap::new();
    let mut limits: BTreeMap<&str, i128> = BTreeMap::new();
    let mut guaranteed = true;
    let all = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for c in all {
        let res = c.resources.as_ref();
        for (name, q) in res.and_then(|r| r.requests.as_ref()).into_iter().flatten() {
            if let Some(key) = qos_resource(name) {
                let v = milli(&q.0);
                if v > 0 {
                    *requests.entry(key).or_default() += v;
                }
            }
        }
        let mut found_cpu = false;
        let mut found_memory = false;
        for (name, q) in res.and_then(|r| r.limits.as_ref()).into_iter().flatten() {
            if let Some(key) = qos_resource(name) {
                let v = milli(&q.0);
                if v > 0 {
                    found_cpu |= key == "cpu";
                    found_memory |= key == "memory";
                    *limits.entry(key).or_default() += v;
                }
            }
        }
        if !(found_cpu && found_memory) {
            guaranteed = false;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return QosClass::BestEffort;
    }
    if guaranteed
        && requests.len() == limits.len()
        && requests.iter().all(|(k, v)| limits.get(k) == Some(v))
    {
        return QosClass::Guaranteed;
    }
    QosClass::Burstable
}

fn qos_resource(name: &str) -> Option<&'static str> {
    match name {
        "cpu" => Some("cpu"),
        "memory" => Some("memory"),
        _ => None,
    }
}

/// A quantity in milli-units; an unparsable one counts as zero (validation rejects those).
pub(crate) fn milli(q: &str) -> i128 {
    Quantity::parse(q).map(|q| q.0).unwrap_or(0)
}

/// True for static pods (config source other than `api`), as upstream's IsStaticPod.
pub fn is_static_pod(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(labels::CONFIG_SOURCE))
        .is_some_and(|s| s != "api")
}

/// True for mirror pods (the API copy of a static pod).
pub fn is_mirror_pod(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(labels::CONFIG_MIRROR))
}

/// True for critical pods: static, mirror, or with a system-critical priority.
pub fn is_critical_pod(pod: &Pod) -> bool {
    is_static_pod(pod)
        || is_mirror_pod(pod)
        || pod
            .spec
            .as_ref()
            .and_then(|s| s.priority)
            .is_some_and(|p| p >= SYSTEM_CRITICAL_PRIORITY)
}

/// True for critical pods of priority class `system-node-critical`, the last to be OOM-killed.
pub fn is_node_critical_pod(pod: &Pod) -> bool {
    is_critical_pod(pod)
        && pod
            .spec
            .as_ref()
            .and_then(|s| s.priority_class_name.as_deref())
            == Some("system-node-critical")
}

/// True when `container` is one of the pod's init containers with `restartPolicy: Always`.
pub fn is_sidecar(pod: &Pod, container: &Container) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .is_some_and(|ics| {
            ics.iter().any(|ic| {
                ic.name == container.name && container.restart_policy.as_deref() == Some("Always")
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_with(containers: serde_json::Value, init: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {"containers": containers, "initContainers": init}
        }))
        .expect("test pod")
    }

    fn c(req: serde_json::Value, lim: serde_json::Value) -> serde_json::Value {
        serde_json::json!({"name": "c", "resources": {"requests": req, "limits": lim}})
    }

    #[test]
    fn qos_table() {
        use serde_json::json;
        let none = json!({});
        let full = json!({"cpu": "100m", "memory": "64Mi"});
        let cases = [
            (
                "no resources",
                json!([c(none.clone(), none.clone())]),
                json!([]),
                QosClass::BestEffort,
            ),
            (
                "zero requests are ignored",
                json!([c(json!({"cpu": "0"}), none.clone())]),
                json!([]),
                QosClass::BestEffort,
            ),
            (
                "only extended resource",
                json!([c(
                    json!({"nvidia.com/gpu": "1"}),
                    json!({"nvidia.com/gpu": "1"})
                )]),
                json!([]),
                QosClass::BestEffort,
            ),
            (
                "equal requests and limits",
                json!([c(full.clone(), full.clone())]),
                json!([]),
                QosClass::Guaranteed,
            ),
            (
                "limits only (requests default upstream)",
                json!([c(none.clone(), full.clone())]),
                json!([]),
                QosClass::Burstable,
            ),
            (
                "cpu only",
                json!([c(json!({"cpu": "1"}), json!({"cpu": "1"}))]),
                json!([]),
                QosClass::Burstable,
            ),
            (
                "request below limit",
                json!([c(json!({"cpu": "50m", "memory": "64Mi"}), full.clone())]),
                json!([]),
                QosClass::Burstable,
            ),
            (
                "one guaranteed, one best effort",
                json!([c(full.clone(), full.clone()), c(none.clone(), none.clone())]),
                json!([]),
                QosClass::Burstable,
            ),
            (
                "init container without limits spoils Guaranteed",
                json!([c(full.clone(), full.clone())]),
                json!([c(none.clone(), none.clone())]),
                QosClass::Burstable,
            ),
            (
                "init container with requests makes Burstable",
                json!([c(none.clone(), none.clone())]),
                json!([c(json!({"memory": "1Mi"}), none.clone())]),
                QosClass::Burstable,
            ),
            (
                "guaranteed init and regular",
                json!([c(full.clone(), full.clone())]),
                json!([c(full.clone(), full.clone())]),
                QosClass::Guaranteed,
            ),
            (
                "same value, different spelling",
                json!([c(
                    json!({"cpu": "1", "memory": "1Gi"}),
                    json!({"cpu": "1000m", "memory": "1073741824"})
                )]),
                json!([]),
                QosClass::Guaranteed,
            ),
        ];
        for (name, containers, init, want) in cases {
            assert_eq!(qos_class(&pod_with(containers, init)), want, "{name}");
        }
        assert_eq!(QosClass::Burstable.as_str(), "Burstable");
    }

    #[test]
    fn criticality() {
        let mut p = pod_with(serde_json::json!([]), serde_json::json!([]));
        assert!(!is_critical_pod(&p));
        p.metadata.annotations =
            Some([(labels::CONFIG_SOURCE.to_string(), "api".to_string())].into());
        assert!(!is_static_pod(&p));
        p.metadata.annotations =
            Some([(labels::CONFIG_SOURCE.to_string(), "file".to_string())].into());
        assert!(is_static_pod(&p) && is_critical_pod(&p) && !is_node_critical_pod(&p));
        if let Some(s) = p.spec.as_mut() {
            s.priority_class_name = Some("system-node-critical".into());
        }
        assert!(is_node_critical_pod(&p));
        p.metadata.annotations = None;
        assert!(!is_node_critical_pod(&p));
        if let Some(s) = p.spec.as_mut() {
            s.priority = Some(SYSTEM_CRITICAL_PRIORITY + 1000);
        }
        assert!(is_node_critical_pod(&p));
    }
}

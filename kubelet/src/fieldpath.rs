//! Downward API field selection, shared by environment variables (`valueFrom`) and
//! downwardAPI/projected volumes: `fieldRef` paths on the pod and `resourceFieldRef` values of a
//! container, as upstream's pkg/fieldpath and pkg/api/v1/resource do.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;

use crate::node::host::Quantity;

/// What a container gets for a resource it sets no limit on: the node's allocatable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeAllocatable {
    /// CPU in millicores.
    pub cpu_milli: i128,
    /// Memory in bytes.
    pub memory_bytes: i128,
    /// Ephemeral storage in bytes.
    pub ephemeral_storage_bytes: i128,
}

/// The value of a `fieldRef.fieldPath` on `pod`; `Err` has a message for the pod's status.
///
/// Whole-map paths (`metadata.labels`, `metadata.annotations`) render as upstream's
/// `key="value"` lines, sorted; they are only valid in volumes, which the caller checks.
pub fn pod_field(pod: &Pod, path: &str) -> Result<String, String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    if let Some((map, key)) = subscript(path) {
        let m = match map {
            "metadata.labels" => meta.labels.as_ref(),
            "metadata.annotations" => meta.annotations.as_ref(),
            _ => return Err(format!("unsupported fieldPath {path:?}")),
        };
        return Ok(m.and_then(|m| m.get(key)).cloned().unwrap_or_default());
    }
    let s = |o: Option<&String>| o.cloned().unwrap_or_default();
    Ok(match path {
        "metadata.name" => s(meta.name.as_ref()),
        "metadata.namespace" => s(meta.namespace.as_ref()),
        "metadata.uid" => s(meta.uid.as_ref()),
        "metadata.labels" => format_map(meta.labels.as_ref()),
        "metadata.annotations" => format_map(meta.annotations.as_ref()),
        "spec.nodeName" => s(spec.and_then(|s| s.node_name.as_ref())),
        "spec.serviceAccountName" => s(spec.and_then(|s| s.service_account_name.as_ref())),
        "status.hostIP" => s(status.and_then(|s| s.host_ip.as_ref())),
        "status.hostIPs" => join_ips(
            status
                .and_then(|s| s.host_ips.as_ref())
                .map(|v| v.iter().map(|i| i.ip.clone()).collect()),
        ),
        "status.podIP" => s(status.and_then(|s| s.pod_ip.as_ref())),
        "status.podIPs" => join_ips(
            status
                .and_then(|s| s.pod_ips.as_ref())
                .map(|v| v.iter().map(|i| i.ip.clone()).collect()),
        ),
        _ => return Err(format!("unsupported fieldPath {path:?}")),
    })
}

/// The value of a `resourceFieldRef` (`limits.cpu`, `requests.memory`, …) of `container`,
/// divided by `divisor` (default 1) and rounded up, as upstream's ExtractContainerResourceValue.
/// A limit the container does not set is the node's allocatable.
pub fn resource_field(
    container: &Container,
    resource: &str,
    divisor: Option<&K8sQuantity>,
    node: &NodeAllocatable,
) -> Result<String, String> {
    let res = container.resources.as_ref();
    let get =
        |m: Option<&BTreeMap<String, K8sQuantity>>, key: &str| -> Result<Option<i128>, String> {
            match m.and_then(|m| m.get(key)) {
                Some(q) => Quantity::parse(&q.0)
                    .map(|q| Some(q.0))
                    .map_err(|e| e.to_string()),
                None => Ok(None),
            }
        };
    let limits = res.and_then(|r| r.limits.as_ref());
    let requests = res.and_then(|r| r.requests.as_ref());
    let alloc = |key: &str| -> i128 {
        match key {
            "cpu" => node.cpu_milli,
            "memory" => node.memory_bytes * 1000,
            _ => node.ephemeral_storage_bytes * 1000,
        }
    };
    // Values in milli-units, like Quantity.
    let value: i128 = match resource {
        "limits.cpu" | "limits.memory" | "limits.ephemeral-storage" => {
            let key = &resource["limits.".len()..];
            get(limits, key)?.unwrap_or_else(|| alloc(key))
        }
        "requests.cpu" | "requests.memory" | "requests.ephemeral-storage" => {
            let key = &resource["requests.".len()..];
            // A request defaults to the limit when only the limit is set.
            match get(requests, key)? {
                Some(v) => v,
                None => get(limits, key)?.unwrap_or(0),
            }
        }
        r if r.starts_with("limits.hugepages-") || r.starts_with("requests.hugepages-") => {
            let (m, key) = r.split_once('.').unwrap_or((r, ""));
            get(if m == "limits" { limits } else { requests }, key)?.unwrap_or(0)
        }
        _ => return Err(format!("unsupported container resource {resource:?}")),
    };
    let div = match divisor {
        Some(q) if !q.0.is_empty() => Quantity::parse(&q.0).map_err(|e| e.to_string())?.0,
        _ => 1000,
    };
    if div <= 0 {
        return Err(format!(
            "invalid divisor {:?}",
            divisor.map(|q| q.0.as_str())
        ));
    }
    // Ceiling division; CPU requests smaller than one unit still report 1, as upstream does.
    Ok(((value + div - 1) / div).to_string())
}

fn subscript(path: &str) -> Option<(&str, &str)> {
    let (map, rest) = path.split_once('[')?;
    let key = rest.strip_suffix(']')?;
    let key = key
        .strip_prefix('\'')
        .and_then(|k| k.strip_suffix('\''))
        .or_else(|| key.strip_prefix('"').and_then(|k| k.strip_suffix('"')))?;
    Some((map, key))
}

fn format_map(m: Option<&BTreeMap<String, String>>) -> String {
    let Some(m) = m else { return String::new() };
    m.iter()
        .map(|(k, v)| format!("{k}={}", serde_json::Value::String(v.clone())))
        .collect::<Vec<_>>()
        .join("\n")
}

fn join_ips(ips: Option<Vec<String>>) -> String {
    ips.unwrap_or_default().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ResourceRequirements;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1",
                          "labels": {"b": "2", "a": "x\"y"}},
            "spec": {"nodeName": "n1", "serviceAccountName": "default", "containers": []},
            "status": {"podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}, {"ip": "fd00::5"}],
                        "hostIP": "192.0.2.1"}
        }))
        .expect("test pod")
    }

    #[test]
    fn pod_fields() {
        let p = pod();
        assert_eq!(pod_field(&p, "metadata.name").as_deref(), Ok("p"));
        assert_eq!(pod_field(&p, "metadata.labels['b']").as_deref(), Ok("2"));
        assert_eq!(pod_field(&p, "metadata.labels['zz']").as_deref(), Ok(""));
        assert_eq!(
            pod_field(&p, "metadata.labels").as_deref(),
            Ok("a=\"x\\\"y\"\nb=\"2\"")
        );
        assert_eq!(
            pod_field(&p, "status.podIPs").as_deref(),
            Ok("10.0.0.5,fd00::5")
        );
        assert_eq!(pod_field(&p, "spec.nodeName").as_deref(), Ok("n1"));
        assert!(pod_field(&p, "spec.bogus").is_err());
    }

    #[test]
    fn resource_fields() {
        let c = Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                limits: Some(BTreeMap::from([(
                    "memory".into(),
                    K8sQuantity("64Mi".into()),
                )])),
                requests: Some(BTreeMap::from([("cpu".into(), K8sQuantity("250m".into()))])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let node = NodeAllocatable {
            cpu_milli: 2000,
            memory_bytes: 1 << 30,
            ephemeral_storage_bytes: 0,
        };
        assert_eq!(
            resource_field(&c, "limits.memory", None, &node).as_deref(),
            Ok("67108864")
        );
        let mi = K8sQuantity("1Mi".into());
        assert_eq!(
            resource_field(&c, "limits.memory", Some(&mi), &node).as_deref(),
            Ok("64")
        );
        assert_eq!(
            resource_field(&c, "requests.cpu", None, &node).as_deref(),
            Ok("1")
        );
        let m = K8sQuantity("1m".into());
        assert_eq!(
            resource_field(&c, "requests.cpu", Some(&m), &node).as_deref(),
            Ok("250")
        );
        assert_eq!(
            resource_field(&c, "limits.cpu", None, &node).as_deref(),
            Ok("2")
        );
        assert_eq!(
            resource_field(&c, "requests.memory", None, &node).as_deref(),
            Ok("67108864")
        );
    }
}

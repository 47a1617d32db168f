//! Registering the Node with the API server, as upstream's `registerWithAPIServer` /
//! `tryRegisterWithAPIServer` (pkg/kubelet/kubelet_node_status.go) do.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSpec as K8sNodeSpec, NodeStatus, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tracing::{info, warn};

use super::Backoff;
use crate::error::{Error, Result};

/// Field manager the kubelet's writes are recorded under.
pub const FIELD_MANAGER: &str = "oxlet-kubelet";

/// What the kubelet wants the Node object to say about itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeSpec {
    /// Node name (the hostname or `--hostname-override`).
    pub name: String,
    /// Labels the kubelet owns: [`default_labels`] plus `--node-labels`.
    pub labels: BTreeMap<String, String>,
    /// Taints set at creation (`registerWithTaints`); never re-applied to an existing Node.
    pub taints: Vec<Taint>,
    /// Pod CIDR of the node when the kubelet knows it (standalone); IPAM's value wins.
    pub pod_cidr: Option<String>,
}

impl NodeSpec {
    /// A spec with the default labels for `name` plus `extra` (`--node-labels`).
    pub fn new(name: &str, extra: &BTreeMap<String, String>) -> Self {
        let mut labels = default_labels(name, super::host::goarch(std::env::consts::ARCH));
        labels.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        Self {
            name: name.to_string(),
            labels,
            taints: Vec::new(),
            pod_cidr: None,
        }
    }
}

/// The labels upstream's kubelet always sets (`updateDefaultLabels`): hostname, os and arch,
/// in the stable and the deprecated beta spelling.
pub fn default_labels(node_name: &str, arch: &str) -> BTreeMap<String, String> {
    [
        ("kubernetes.io/hostname", node_name),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", arch),
        ("beta.kubernetes.io/os", "linux"),
        ("beta.kubernetes.io/arch", arch),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The Node to create (pure).
pub fn node_object(spec: &NodeSpec, status: &NodeStatus) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(spec.name.clone()),
            labels: Some(spec.labels.clone()),
            ..Default::default()
        },
        spec: Some(K8sNodeSpec {
            pod_cidr: spec.pod_cidr.clone(),
            pod_cidrs: spec.pod_cidr.clone().map(|c| vec![c]),
            taints: (!spec.taints.is_empty()).then(|| spec.taints.clone()),
            ..Default::default()
        }),
        status: Some(status.clone()),
    }
}

/// The merge patch that makes an existing Node ours (pure): labels we own set to our values,
/// and a pod CIDR only when nobody set one. Spec fields others set (IPAM's podCIDR,
/// taints, unschedulable) are kept. `None` when nothing needs changing.
pub fn adopt_patch(existing: &Node, spec: &NodeSpec) -> Option<serde_json::Value> {
    let have = existing.metadata.labels.clone().unwrap_or_default();
    let labels: serde_json::Map<String, serde_json::Value> = spec
        .labels
        .iter()
        .filter(|(k, v)| have.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let existing_cidr = existing
        .spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_deref())
        .filter(|c| !c.is_empty());
    let cidr = match (&spec.pod_cidr, existing_cidr) {
        (Some(c), None) => Some(c.clone()),
        _ => None,
    };
    if labels.is_empty() && cidr.is_none() {
        return None;
    }
    let mut patch = serde_json::json!({});
    if !labels.is_empty() {
        patch["metadata"] = serde_json::json!({ "labels": labels });
    }
    if let Some(c) = cidr {
        patch["spec"] = serde_json::json!({ "podCIDR": c, "podCIDRs": [c] });
    }
    Some(patch)
}

/// Creates the Node, or adopts an existing one of that name, then posts `status`.
///
/// Transient failures (connection errors, 409, 429, 5xx) are retried with backoff (200 ms
/// doubling to 7 s) until they stop, so a short API outage only delays registration; other
/// failures (403, 422, …) are returned. Drop the future to give up.
pub async fn register(client: &Client, spec: &NodeSpec, status: &NodeStatus) -> Result<Node> {
    let mut backoff = Backoff::upstream();
    loop {
        match try_register(client, spec, status).await {
            Ok(node) => return Ok(node),
            Err(e) if e.is_transient() => {
                let delay = backoff.next_delay();
                warn!(node = %spec.name, error = %e, ?delay, "node registration failed, retrying");
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn try_register(client: &Client, spec: &NodeSpec, status: &NodeStatus) -> Result<Node> {
    let api: Api<Node> = Api::all(client.clone());
    let api_err = |op, source| Error::Api {
        op,
        object: format!("Node {}", spec.name),
        source,
    };
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..Default::default()
    };
    match api.create(&pp, &node_object(spec, status)).await {
        Ok(_) => info!(node = %spec.name, "node registered"),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let existing = api
                .get(&spec.name)
                .await
                .map_err(|e| api_err("get Node", e))?;
            if let Some(patch) = adopt_patch(&existing, spec) {
                api.patch(&spec.name, &patch_params(), &Patch::Merge(&patch))
                    .await
                    .map_err(|e| api_err("patch Node", e))?;
            }
            info!(node = %spec.name, "node already registered, adopted");
        }
        Err(e) => return Err(api_err("create Node", e)),
    }
    // The status subresource is written separately: a server may drop status on create.
    patch_status(client, &spec.name, status).await
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..Default::default()
    }
}

/// Posts `status` to `nodes/<name>/status` as a strategic merge patch (conditions and
/// addresses merge by `type`, as upstream's `PatchNodeStatus`).
pub async fn patch_status(client: &Client, name: &str, status: &NodeStatus) -> Result<Node> {
    let api: Api<Node> = Api::all(client.clone());
    let body = serde_json::json!({ "status": status });
    api.patch_status(name, &patch_params(), &Patch::Strategic(&body))
        .await
        .map_err(|source| Error::Api {
            op: "patch Node status",
            object: format!("Node {name}"),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> NodeSpec {
        let mut extra = BTreeMap::new();
        extra.insert("node-role.example.com/worker".to_string(), "".to_string());
        let mut s = NodeSpec::new("node-a", &extra);
        s.labels
            .insert("kubernetes.io/arch".to_string(), "amd64".to_string());
        s.labels
            .insert("beta.kubernetes.io/arch".to_string(), "amd64".to_string());
        s
    }

    #[test]
    fn default_labels_match_upstream() {
        let l = default_labels("node-a", "arm64");
        assert_eq!(l["kubernetes.io/hostname"], "node-a");
        assert_eq!(l["kubernetes.io/os"], "linux");
        assert_eq!(l["beta.kubernetes.io/os"], "linux");
        assert_eq!(l["kubernetes.io/arch"], "arm64");
        assert_eq!(l["beta.kubernetes.io/arch"], "arm64");
    }

    #[test]
    fn new_node_carries_labels_taints_and_cidr() {
        let mut s = spec();
        s.pod_cidr = Some("10.244.1.0/24".into());
        s.taints = vec![Taint {
            key: "k".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        }];
        let n = node_object(&s, &NodeStatus::default());
        let ns = n.spec.expect("spec");
        assert_eq!(ns.pod_cidr.as_deref(), Some("10.244.1.0/24"));
        assert_eq!(ns.pod_cidrs, Some(vec!["10.244.1.0/24".to_string()]));
        assert_eq!(ns.taints.map(|t| t.len()), Some(1));
        assert_eq!(n.metadata.labels.expect("labels").len(), 6);
    }

    #[test]
    fn adopt_keeps_others_cidr_and_fixes_labels() {
        let mut s = spec();
        s.pod_cidr = Some("10.244.9.0/24".into());
        let mut existing = node_object(&s, &NodeStatus::default());
        existing
            .metadata
            .labels
            .as_mut()
            .expect("labels")
            .insert("kubernetes.io/hostname".into(), "old".into());
        existing.spec.as_mut().expect("spec").pod_cidr = Some("10.244.3.0/24".into());
        let patch = adopt_patch(&existing, &s).expect("patch");
        assert_eq!(
            patch,
            serde_json::json!({"metadata": {"labels": {"kubernetes.io/hostname": "node-a"}}})
        );
        existing.spec.as_mut().expect("spec").pod_cidr = None;
        let patch = adopt_patch(&existing, &s).expect("patch");
        assert_eq!(patch["spec"]["podCIDR"], "10.244.9.0/24");
        let same = node_object(&s, &NodeStatus::default());
        assert_eq!(adopt_patch(&same, &s), None);
    }
}

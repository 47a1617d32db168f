//! Patch metadata of the built-in types the API server serves: which lists merge, by which key,
//! and which fields are atomic, organised by Go type as the `patchStrategy`/`patchMergeKey` struct
//! tags of k8s.io/api v1.33 declare them (kubernetes/api core/v1/types.go, apps/v1/types.go).
//!
//! Strategic merge patch and server-side apply both read this table. A field not listed here is
//! a plain field: a map merges recursively, a list is replaced as a whole (atomic).

/// How a list field (or a map field) of a Go type is patched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStrategy {
    /// No `patchStrategy` tag: the whole value is replaced (lists) or merged (maps).
    Replace,
    /// `patchStrategy:"merge"`: lists of objects merge by `merge_key`, lists of scalars are unioned.
    Merge,
}

/// Patch metadata of one field of a Go type.
#[derive(Debug, Clone, Copy)]
pub struct FieldMeta {
    /// JSON name of the field.
    pub name: &'static str,
    /// `patchStrategy` of the field.
    pub strategy: ListStrategy,
    /// `patchMergeKey`, for merging lists of objects.
    pub merge_key: Option<&'static str>,
    /// `patchStrategy` includes `retainKeys` (applies to the object, or each list item).
    pub retain_keys: bool,
    /// Server-side apply treats the value as one unit (`+structType=atomic`, `+mapType=atomic`).
    pub atomic: bool,
    /// The Go type of the value (or of each list item), when it has patch metadata of its own.
    pub elem: Option<&'static GoType>,
}

/// Patch metadata of one Go struct type.
#[derive(Debug)]
pub struct GoType {
    /// Go type name, for diagnostics.
    pub name: &'static str,
    /// Fields that carry patch metadata or lead to a type that does.
    pub fields: &'static [FieldMeta],
}

impl GoType {
    /// The metadata of the field called `name`, if it has any.
    pub fn field(&self, name: &str) -> Option<&'static FieldMeta> {
        self.fields.iter().find(|f| f.name == name)
    }
}

const fn plain(name: &'static str, elem: &'static GoType) -> FieldMeta {
    FieldMeta {
        name,
        strategy: ListStrategy::Replace,
        merge_key: None,
        retain_keys: false,
        atomic: false,
        elem: Some(elem),
    }
}

const fn merge(name: &'static str, key: &'static str) -> FieldMeta {
    FieldMeta {
        name,
        strategy: ListStrategy::Merge,
        merge_key: Some(key),
        retain_keys: false,
        atomic: false,
        elem: None,
    }
}

const fn merge_of(name: &'static str, key: &'static str, elem: &'static GoType) -> FieldMeta {
    FieldMeta {
        elem: Some(elem),
        ..merge(name, key)
    }
}

const fn merge_retain(name: &'static str, key: &'static str) -> FieldMeta {
    FieldMeta {
        retain_keys: true,
        ..merge(name, key)
    }
}

const fn merge_scalars(name: &'static str) -> FieldMeta {
    FieldMeta {
        name,
        strategy: ListStrategy::Merge,
        merge_key: None,
        retain_keys: false,
        atomic: false,
        elem: None,
    }
}

const fn atomic(name: &'static str) -> FieldMeta {
    FieldMeta {
        name,
        strategy: ListStrategy::Replace,
        merge_key: None,
        retain_keys: false,
        atomic: true,
        elem: None,
    }
}

const fn retain(name: &'static str) -> FieldMeta {
    FieldMeta {
        name,
        strategy: ListStrategy::Replace,
        merge_key: None,
        retain_keys: true,
        atomic: false,
        elem: None,
    }
}

/// metav1.ObjectMeta.
pub static OBJECT_META: GoType = GoType {
    name: "ObjectMeta",
    fields: &[merge("ownerReferences", "uid"), merge_scalars("finalizers")],
};

/// A type whose only patch metadata is in its ObjectMeta (ConfigMap, Secret, RBAC, …).
pub static OBJECT_ONLY: GoType = GoType {
    name: "Object",
    fields: &[plain("metadata", &OBJECT_META)],
};

/// core/v1 Container (also used for initContainers and ephemeralContainers).
pub static CONTAINER: GoType = GoType {
    name: "Container",
    fields: &[
        merge("ports", "containerPort"),
        merge("env", "name"),
        merge("volumeMounts", "mountPath"),
        merge("volumeDevices", "devicePath"),
    ],
};

/// core/v1 PodSpec. Tolerations have no merge key upstream, so they are replaced.
pub static POD_SPEC: GoType = GoType {
    name: "PodSpec",
    fields: &[
        merge_retain("volumes", "name"),
        merge_of("initContainers", "name", &CONTAINER),
        merge_of("containers", "name", &CONTAINER),
        merge_of("ephemeralContainers", "name", &CONTAINER),
        merge("imagePullSecrets", "name"),
        merge("hostAliases", "ip"),
        merge("topologySpreadConstraints", "topologyKey"),
        merge_retain("resourceClaims", "name"),
        merge("schedulingGates", "name"),
        atomic("nodeSelector"),
    ],
};

/// core/v1 PodStatus.
pub static POD_STATUS: GoType = GoType {
    name: "PodStatus",
    fields: &[
        merge("conditions", "type"),
        merge("podIPs", "ip"),
        merge("hostIPs", "ip"),
        merge_retain("resourceClaimStatuses", "name"),
    ],
};

/// core/v1 Pod.
pub static POD: GoType = GoType {
    name: "Pod",
    fields: &[
        plain("metadata", &OBJECT_META),
        plain("spec", &POD_SPEC),
        plain("status", &POD_STATUS),
    ],
};

/// core/v1 PodTemplateSpec, shared by every workload's `spec.template`.
pub static POD_TEMPLATE_SPEC: GoType = GoType {
    name: "PodTemplateSpec",
    fields: &[plain("metadata", &OBJECT_META), plain("spec", &POD_SPEC)],
};

/// A status whose conditions merge by `type` (apps, policy, namespaces, services).
pub static CONDITIONS_STATUS: GoType = GoType {
    name: "ConditionsStatus",
    fields: &[merge("conditions", "type")],
};

/// core/v1 ServiceSpec.
pub static SERVICE_SPEC: GoType = GoType {
    name: "ServiceSpec",
    fields: &[merge("ports", "port"), atomic("selector")],
};

/// core/v1 Service.
pub static SERVICE: GoType = GoType {
    name: "Service",
    fields: &[
        plain("metadata", &OBJECT_META),
        plain("spec", &SERVICE_SPEC),
        plain("status", &CONDITIONS_STATUS),
    ],
};

/// core/v1 NodeSpec. Taints carry no patch strategy upstream: they are replaced as a whole.
pub static NODE_SPEC: GoType = GoType {
    name: "NodeSpec",
    fields: &[merge_scalars("podCIDRs")],
};

/// core/v1 NodeStatus.
pub static NODE_STATUS: GoType = GoType {
    name: "NodeStatus",
    fields: &[merge("conditions", "type"), merge("addresses", "type")],
};

/// core/v1 Node.
pub static NODE: GoType = GoType {
    name: "Node",
    fields: &[
        plain("metadata", &OBJECT_META),
        plain("spec", &NODE_SPEC),
        plain("status", &NODE_STATUS),
    ],
};

/// core/v1 Namespace.
pub static NAMESPACE: GoType = GoType {
    name: "Namespace",
    fields: &[
        plain("metadata", &OBJECT_META),
        plain("status", &CONDITIONS_STATUS),
    ],
};

/// core/v1 ServiceAccount: `secrets` merge by name.
pub static SERVICE_ACCOUNT: GoType = GoType {
    name: "ServiceAccount",
    fields: &[plain("metadata", &OBJECT_META), merge("secrets", "name")],
};

/// apps/v1 DeploymentSpec.
pub static DEPLOYMENT_SPEC: GoType = GoType {
    name: "DeploymentSpec",
    fields: &[
        plain("template", &POD_TEMPLATE_SPEC),
        atomic("selector"),
        retain("strategy"),
    ],
};

/// apps/v1 ReplicaSetSpec and DaemonSetSpec: a template and an atomic selector.
pub static WORKLOAD_SPEC: GoType = GoType {
    name: "ReplicaSetSpec",
    fields: &[plain("template", &POD_TEMPLATE_SPEC), atomic("selector")],
};

/// apps/v1 Deployment.
pub static DEPLOYMENT: GoType = GoType {
    name: "Deployment",
    fields: &[
        plain("metadata", &OBJECT_META),
        plain("spec", &DEPLOYMENT_SPEC),
        plain("status", &CONDITIONS_STATUS),
    ],
};

/// apps/v1 ReplicaSet and DaemonSet.
pub static REPLICA_SET: GoType = GoType {
    name: "ReplicaSet",
    fields: &[
        plain("metadata", &OBJECT_META),
        plain("spec", &WORKLOAD_SPEC),
        plain("status", &CONDITIONS_STATUS),
    ],
};

/// policy/v1 PodDisruptionBudget.
pub static POD_DISRUPTION_BUDGET: GoType = GoType {
    name: "PodDisruptionBudget",
    fields: &[
        plain("metadata", &OBJECT_META),
        plain("status", &CONDITIONS_STATUS),
    ],
};

/// The patch metadata of a built-in `(apiVersion, kind)`, or `None` for kinds the server does not
/// know (custom resources), for which upstream refuses strategic merge patch.
pub fn type_for(api_version: &str, kind: &str) -> Option<&'static GoType> {
    let t = match (api_version, kind) {
        ("v1", "Pod") => &POD,
        ("v1", "Service") => &SERVICE,
        ("v1", "Node") => &NODE,
        ("v1", "Namespace") => &NAMESPACE,
        ("v1", "ServiceAccount") => &SERVICE_ACCOUNT,
        ("v1", "Endpoints" | "ConfigMap" | "Secret" | "Event" | "ResourceQuota" | "LimitRange") => {
            &OBJECT_ONLY
        }
        ("apps/v1", "Deployment") => &DEPLOYMENT,
        ("apps/v1", "ReplicaSet" | "DaemonSet") => &REPLICA_SET,
        ("apps/v1", "ControllerRevision") => &OBJECT_ONLY,
        ("autoscaling/v1", "Scale") => &OBJECT_ONLY,
        ("coordination.k8s.io/v1", "Lease") => &OBJECT_ONLY,
        ("discovery.k8s.io/v1", "EndpointSlice") => &OBJECT_ONLY,
        ("events.k8s.io/v1", "Event") => &OBJECT_ONLY,
        ("certificates.k8s.io/v1", "CertificateSigningRequest") => &OBJECT_ONLY,
        ("policy/v1", "PodDisruptionBudget") => &POD_DISRUPTION_BUDGET,
        (
            "rbac.authorization.k8s.io/v1",
            "ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding",
        ) => &OBJECT_ONLY,
        _ => return None,
    };
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        let cases: &[(&str, &str, &[&str], Option<&str>)] = &[
            (
                "apps/v1",
                "Deployment",
                &["spec", "template", "spec", "containers"],
                Some("name"),
            ),
            (
                "apps/v1",
                "DaemonSet",
                &["spec", "template", "spec", "volumes"],
                Some("name"),
            ),
            ("v1", "Pod", &["spec", "containers", "env"], Some("name")),
            (
                "v1",
                "Pod",
                &["spec", "containers", "ports"],
                Some("containerPort"),
            ),
            ("v1", "Service", &["spec", "ports"], Some("port")),
            ("v1", "Node", &["status", "addresses"], Some("type")),
            ("v1", "Pod", &["metadata", "ownerReferences"], Some("uid")),
            ("v1", "Pod", &["spec", "tolerations"], None),
        ];
        for (av, kind, path, want) in cases {
            let mut t = type_for(av, kind).map(|t| t as &GoType);
            let mut got = None;
            for (i, seg) in path.iter().enumerate() {
                let f = t.and_then(|t| t.field(seg));
                if i + 1 == path.len() {
                    got = f.and_then(|f| f.merge_key);
                }
                t = f.and_then(|f| f.elem);
            }
            assert_eq!(got, *want, "{av} {kind} {path:?}");
        }
        assert!(type_for("example.com/v1", "Widget").is_none());
    }
}

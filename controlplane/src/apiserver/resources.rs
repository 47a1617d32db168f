//! The resources the API server serves: one table read by discovery, OpenAPI, tables, routing
//! and the registry, so a resource added here appears everywhere at once.

/// The usual verbs of a stored, watchable resource.
pub const STANDARD_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// Verbs of a "virtual" resource that can only be created (reviews): nothing is stored.
pub const CREATE_ONLY: &[&str] = &["create"];

/// A subresource as discovery lists it (`pods/status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subresource {
    /// Name after the slash: `status`, `scale`, `binding`, `log`, …
    pub name: &'static str,
    /// Kind accepted and returned (`Pod` for status, `Scale` for scale, …).
    pub kind: &'static str,
    /// Group of that kind when it differs from the parent's (`autoscaling` for Scale).
    pub kind_group: &'static str,
    /// Version of that kind.
    pub kind_version: &'static str,
    /// Verbs discovery advertises.
    pub verbs: &'static [&'static str],
}

/// One REST resource of one group/version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceInfo {
    /// API group; empty for the core group.
    pub group: &'static str,
    /// Version within the group.
    pub version: &'static str,
    /// Plural, lower-case name used in URLs.
    pub plural: &'static str,
    /// Singular, lower-case name.
    pub singular: &'static str,
    /// Kind of the objects.
    pub kind: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Verbs discovery advertises.
    pub verbs: &'static [&'static str],
    /// kubectl short names.
    pub short_names: &'static [&'static str],
    /// Categories (`all`).
    pub categories: &'static [&'static str],
    /// Subresources.
    pub subresources: &'static [Subresource],
    /// Whether objects are stored (false for reviews and other create-only virtual resources).
    pub stored: bool,
}

impl ResourceInfo {
    /// `apiVersion` as objects carry it: `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// URL prefix of the group/version: `/api/v1` or `/apis/apps/v1`.
    pub fn group_version_path(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }

    /// The storage key prefix, as upstream lays out etcd: `/registry/<resource>/` for the core
    /// and most groups (`/registry/pods/`, `/registry/deployments/`), qualified by group where
    /// upstream does so to avoid clashes.
    pub fn storage_prefix(&self) -> String {
        match (self.group, self.plural) {
            ("discovery.k8s.io", "endpointslices") => "/registry/endpointslices/".to_string(),
            ("coordination.k8s.io", "leases") => "/registry/leases/".to_string(),
            ("certificates.k8s.io", p) => format!("/registry/{p}/"),
            ("rbac.authorization.k8s.io", p) => format!("/registry/{p}/"),
            ("events.k8s.io", "events") => "/registry/events/".to_string(),
            (_, "services") => "/registry/services/specs/".to_string(),
            (_, "endpoints") => "/registry/services/endpoints/".to_string(),
            (_, "nodes") => "/registry/minions/".to_string(),
            (_, p) => format!("/registry/{p}/"),
        }
    }

    /// The subresource named `name`, if this resource has it.
    pub fn subresource(&self, name: &str) -> Option<&'static Subresource> {
        self.subresources.iter().find(|s| s.name == name)
    }
}

const fn sub(
    name: &'static str,
    kind: &'static str,
    verbs: &'static [&'static str],
) -> Subresource {
    Subresource {
        name,
        kind,
        kind_group: "",
        kind_version: "",
        verbs,
    }
}

const GET_PATCH_UPDATE: &[&str] = &["get", "patch", "update"];
const SCALE: Subresource = Subresource {
    name: "scale",
    kind: "Scale",
    kind_group: "autoscaling",
    kind_version: "v1",
    verbs: GET_PATCH_UPDATE,
};

macro_rules! resource {
    ($group:expr, $version:expr, $plural:expr, $singular:expr, $kind:expr, $namespaced:expr,
     short: $short:expr, cats: $cats:expr, subs: $subs:expr) => {
        ResourceInfo {
            group: $group,
            version: $version,
            plural: $plural,
            singular: $singular,
            kind: $kind,
            namespaced: $namespaced,
            verbs: STANDARD_VERBS,
            short_names: $short,
            categories: $cats,
            subresources: $subs,
            stored: true,
        }
    };
}

const ALL: &[&str] = &["all"];
const NONE: &[&str] = &[];
const NO_SUBS: &[Subresource] = &[];

/// Every resource served, in discovery order.
pub static RESOURCES: &[ResourceInfo] = &[
    // core/v1
    resource!("", "v1", "namespaces", "namespace", "Namespace", false, short: &["ns"], cats: NONE,
        subs: &[sub("status", "Namespace", GET_PATCH_UPDATE), sub("finalize", "Namespace", &["update"])]),
    resource!("", "v1", "nodes", "node", "Node", false, short: &["no"], cats: NONE,
        subs: &[sub("status", "Node", GET_PATCH_UPDATE), sub("proxy", "NodeProxyOptions", &["create", "delete", "get", "patch", "update"])]),
    resource!("", "v1", "pods", "pod", "Pod", true, short: &["po"], cats: ALL,
    subs: &[
        sub("status", "Pod", GET_PATCH_UPDATE),
        sub("binding", "Binding", &["create"]),
        Subresource { name: "eviction", kind: "Eviction", kind_group: "policy", kind_version: "v1", verbs: &["create"] },
        sub("log", "Pod", &["get"]),
        sub("exec", "PodExecOptions", &["create", "get"]),
        sub("attach", "PodAttachOptions", &["create", "get"]),
        sub("portforward", "PodPortForwardOptions", &["create", "get"]),
        sub("ephemeralcontainers", "Pod", GET_PATCH_UPDATE),
    ]),
    resource!("", "v1", "services", "service", "Service", true, short: &["svc"], cats: ALL,
        subs: &[sub("status", "Service", GET_PATCH_UPDATE)]),
    resource!("", "v1", "endpoints", "endpoints", "Endpoints", true, short: &["ep"], cats: NONE, subs: NO_SUBS),
    resource!("", "v1", "configmaps", "configmap", "ConfigMap", true, short: &["cm"], cats: NONE, subs: NO_SUBS),
    resource!("", "v1", "secrets", "secret", "Secret", true, short: NONE, cats: NONE, subs: NO_SUBS),
    resource!("", "v1", "serviceaccounts", "serviceaccount", "ServiceAccount", true, short: &["sa"], cats: NONE,
        subs: &[Subresource { name: "token", kind: "TokenRequest", kind_group: "authentication.k8s.io", kind_version: "v1", verbs: &["create"] }]),
    resource!("", "v1", "events", "event", "Event", true, short: &["ev"], cats: NONE, subs: NO_SUBS),
    resource!("", "v1", "resourcequotas", "resourcequota", "ResourceQuota", true, short: &["quota"], cats: NONE,
        subs: &[sub("status", "ResourceQuota", GET_PATCH_UPDATE)]),
    resource!("", "v1", "limitranges", "limitrange", "LimitRange", true, short: &["limits"], cats: NONE, subs: NO_SUBS),
    // apps/v1
    resource!("apps", "v1", "deployments", "deployment", "Deployment", true, short: &["deploy"], cats: ALL,
        subs: &[sub("status", "Deployment", GET_PATCH_UPDATE), SCALE]),
    resource!("apps", "v1", "replicasets", "replicaset", "ReplicaSet", true, short: &["rs"], cats: ALL,
        subs: &[sub("status", "ReplicaSet", GET_PATCH_UPDATE), SCALE]),
    resource!("apps", "v1", "daemonsets", "daemonset", "DaemonSet", true, short: &["ds"], cats: ALL,
        subs: &[sub("status", "DaemonSet", GET_PATCH_UPDATE)]),
    resource!("apps", "v1", "controllerrevisions", "controllerrevision", "ControllerRevision", true, short: NONE, cats: NONE, subs: NO_SUBS),
    // coordination.k8s.io/v1
    resource!("coordination.k8s.io", "v1", "leases", "lease", "Lease", true, short: NONE, cats: NONE, subs: NO_SUBS),
    // discovery.k8s.io/v1
    resource!("discovery.k8s.io", "v1", "endpointslices", "endpointslice", "EndpointSlice", true, short: NONE, cats: NONE, subs: NO_SUBS),
    // events.k8s.io/v1 (same objects as core events upstream; stored apart here)
    resource!("events.k8s.io", "v1", "events", "event", "Event", true, short: &["ev"], cats: NONE, subs: NO_SUBS),
    // certificates.k8s.io/v1
    resource!("certificates.k8s.io", "v1", "certificatesigningrequests", "certificatesigningrequest", "CertificateSigningRequest", false, short: &["csr"], cats: NONE,
        subs: &[sub("status", "CertificateSigningRequest", GET_PATCH_UPDATE), sub("approval", "CertificateSigningRequest", GET_PATCH_UPDATE)]),
    // policy/v1
    resource!("policy", "v1", "poddisruptionbudgets", "poddisruptionbudget", "PodDisruptionBudget", true, short: &["pdb"], cats: NONE,
        subs: &[sub("status", "PodDisruptionBudget", GET_PATCH_UPDATE)]),
    // rbac.authorization.k8s.io/v1: stored so RBAC manifests apply; authorization allows every
    // authenticated user (documented), as a single-user cluster does.
    resource!("rbac.authorization.k8s.io", "v1", "clusterroles", "clusterrole", "ClusterRole", false, short: NONE, cats: NONE, subs: NO_SUBS),
    resource!("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "clusterrolebinding", "ClusterRoleBinding", false, short: NONE, cats: NONE, subs: NO_SUBS),
    resource!("rbac.authorization.k8s.io", "v1", "roles", "role", "Role", true, short: NONE, cats: NONE, subs: NO_SUBS),
    resource!("rbac.authorization.k8s.io", "v1", "rolebindings", "rolebinding", "RoleBinding", true, short: NONE, cats: NONE, subs: NO_SUBS),
    // Reviews: answered, never stored.
    ResourceInfo {
        group: "authentication.k8s.io",
        version: "v1",
        plural: "selfsubjectreviews",
        singular: "selfsubjectreview",
        kind: "SelfSubjectReview",
        namespaced: false,
        verbs: CREATE_ONLY,
        short_names: NONE,
        categories: NONE,
        subresources: NO_SUBS,
        stored: false,
    },
    ResourceInfo {
        group: "authentication.k8s.io",
        version: "v1",
        plural: "tokenreviews",
        singular: "tokenreview",
        kind: "TokenReview",
        namespaced: false,
        verbs: CREATE_ONLY,
        short_names: NONE,
        categories: NONE,
        subresources: NO_SUBS,
        stored: false,
    },
    ResourceInfo {
        group: "authorization.k8s.io",
        version: "v1",
        plural: "selfsubjectaccessreviews",
        singular: "selfsubjectaccessreview",
        kind: "SelfSubjectAccessReview",
        namespaced: false,
        verbs: CREATE_ONLY,
        short_names: NONE,
        categories: NONE,
        subresources: NO_SUBS,
        stored: false,
    },
    ResourceInfo {
        group: "authorization.k8s.io",
        version: "v1",
        plural: "subjectaccessreviews",
        singular: "subjectaccessreview",
        kind: "SubjectAccessReview",
        namespaced: false,
        verbs: CREATE_ONLY,
        short_names: NONE,
        categories: NONE,
        subresources: NO_SUBS,
        stored: false,
    },
];

/// Groups in discovery order, each with its (single) version.
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES {
        if !out.iter().any(|(g, _)| *g == r.group) {
            out.push((r.group, r.version));
        }
    }
    out
}

/// The resource served at `group`/`version`/`plural`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource of `apiVersion` + `kind` (as an object names itself).
pub fn find_kind(api_version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.kind == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_and_paths() {
        let pods = find("", "v1", "pods").expect("pods");
        assert_eq!(pods.api_version(), "v1");
        assert_eq!(pods.group_version_path(), "/api/v1");
        assert_eq!(pods.storage_prefix(), "/registry/pods/");
        let deploy = find_kind("apps/v1", "Deployment").expect("deployments");
        assert_eq!(deploy.group_version_path(), "/apis/apps/v1");
        assert_eq!(deploy.subresource("scale").map(|s| s.kind), Some("Scale"));
        assert!(find("", "v1", "nope").is_none());
        assert_eq!(groups()[0], ("", "v1"));
    }

    #[test]
    fn no_duplicate_resources() {
        for (i, a) in RESOURCES.iter().enumerate() {
            for b in &RESOURCES[i + 1..] {
                assert!(
                    !(a.group == b.group && a.plural == b.plural),
                    "{}/{} twice",
                    a.group,
                    a.plural
                );
            }
        }
    }
}

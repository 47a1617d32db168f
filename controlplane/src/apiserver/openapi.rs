//! OpenAPI documents of the served API: `/openapi/v3` (index), `/openapi/v3/<api|apis/...>`
//! (one OpenAPI 3.0 document per group/version) and `/openapi/v2` (one Swagger 2.0 document).
//!
//! Schemas come from k8s-openapi's `schemars` implementations (named like upstream,
//! `io.k8s.api.core.v1.Pod`), generated once with [`SchemaSettings::openapi3`] (refs to
//! `#/components/schemas/…`, a `$ref` with siblings wrapped in `allOf` as upstream does), then
//! completed with what kubectl reads and k8s-openapi does not carry:
//! - `x-kubernetes-group-version-kind` on every top-level kind (kubectl explain and client-side
//!   validation find a type by it), and list kinds (`PodList`) built from the table;
//! - paths per resource whose operations carry `x-kubernetes-action`, the operation's
//!   `x-kubernetes-group-version-kind` and the query parameters, notably `fieldValidation` on
//!   every POST/PUT/PATCH: kubectl only uses server-side field validation when every PATCH
//!   operation of the kind lists it;
//! - the patch-strategy extensions of the common lists (containers by name, env by name, …),
//!   which kubectl's client-side apply reads to build strategic merge patches.
//!
//! Documents are built on first use and cached for the life of the process.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use bytes::Bytes;
use k8s_openapi::api::{
    apps::v1 as apps, authentication::v1 as authn, authorization::v1 as authz,
    autoscaling::v1 as autoscaling, certificates::v1 as certs, coordination::v1 as coordination,
    core::v1 as core, discovery::v1 as disco, events::v1 as events, policy::v1 as policy,
    rbac::v1 as rbac,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::Resource;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

use super::resources::{groups, ResourceInfo, Subresource, RESOURCES};

const V3_PREFIX: &str = "#/components/schemas/";
const V2_PREFIX: &str = "#/definitions/";
const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.";

/// The server version the documents describe.
const INFO_VERSION: &str = "v1.33.0";

/// One top-level kind and the schema that describes it.
#[derive(Debug, Clone)]
struct KindSchema {
    group: &'static str,
    version: &'static str,
    kind: String,
    name: String,
}

/// Every schema, keyed by name, with v3 refs; plus which names are top-level kinds.
#[derive(Debug)]
struct Catalog {
    schemas: Map<String, Value>,
    kinds: Vec<KindSchema>,
}

impl Catalog {
    fn kind_schema(&self, group: &str, version: &str, kind: &str) -> Option<&str> {
        self.kinds
            .iter()
            .find(|k| k.group == group && k.version == version && k.kind == kind)
            .map(|k| k.name.as_str())
    }
}

fn add_kind<T: JsonSchema + Resource>(gen: &mut SchemaGenerator, kinds: &mut Vec<KindSchema>) {
    gen.subschema_for::<T>();
    kinds.push(KindSchema {
        group: T::GROUP,
        version: T::VERSION,
        kind: T::KIND.to_string(),
        name: T::schema_name().into_owned(),
    });
}

fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(build_catalog)
}

fn build_catalog() -> Catalog {
    let mut gen = SchemaSettings::openapi3()
        .with(|s| s.meta_schema = None)
        .into_generator();
    let mut kinds = Vec::new();
    macro_rules! kinds {
        ($($t:ty),* $(,)?) => { $( add_kind::<$t>(&mut gen, &mut kinds); )* };
    }
    kinds!(
        core::Namespace,
        core::Node,
        core::Pod,
        core::Service,
        core::Endpoints,
        core::ConfigMap,
        core::Secret,
        core::ServiceAccount,
        core::Event,
        core::ResourceQuota,
        core::LimitRange,
        core::Binding,
        apps::Deployment,
        apps::ReplicaSet,
        apps::DaemonSet,
        apps::ControllerRevision,
        coordination::Lease,
        disco::EndpointSlice,
        events::Event,
        certs::CertificateSigningRequest,
        policy::PodDisruptionBudget,
        policy::Eviction,
        rbac::ClusterRole,
        rbac::ClusterRoleBinding,
        rbac::Role,
        rbac::RoleBinding,
        authn::SelfSubjectReview,
        authn::TokenReview,
        authn::TokenRequest,
        authz::SelfSubjectAccessReview,
        authz::SubjectAccessReview,
        autoscaling::Scale,
        meta::Status,
        meta::APIVersions,
        meta::APIGroupList,
        meta::APIGroup,
        meta::APIResourceList,
    );
    gen.subschema_for::<meta::DeleteOptions>();
    gen.subschema_for::<meta::WatchEvent<core::Pod>>();
    let mut schemas = gen.take_definitions(true);

    // The generic WatchEvent<T> is named by its own schema_name; upstream has one
    // `WatchEvent` whose object is a RawExtension. Keep whatever name k8s-openapi used.
    fix_scalar_types(&mut schemas);
    schemas.insert(
        format!("{META}Patch"),
        json!({
            "description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body.",
            "type": "object",
        }),
    );

    // List kinds of the stored resources, built like upstream's `PodList`.
    for r in RESOURCES.iter().filter(|r| r.stored) {
        let Some(item) = kinds
            .iter()
            .find(|k| k.group == r.group && k.version == r.version && k.kind == r.kind)
            .map(|k| k.name.clone())
        else {
            continue;
        };
        let name = format!("{item}List");
        let list_kind = format!("{}List", r.kind);
        schemas.insert(name.clone(), list_schema(r, &item));
        kinds.push(KindSchema {
            group: r.group,
            version: r.version,
            kind: list_kind,
            name,
        });
    }

    for k in &kinds {
        if let Some(Value::Object(s)) = schemas.get_mut(&k.name) {
            s.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": k.group, "kind": k.kind, "version": k.version}]),
            );
        }
    }
    // DeleteOptions and WatchEvent are accepted by every group version.
    let mut gvs: Vec<(&str, &str)> = groups();
    for (g, v) in [("autoscaling", "v1"), ("policy", "v1")] {
        if !gvs.contains(&(g, v)) {
            gvs.push((g, v));
        }
    }
    for kind in ["DeleteOptions", "WatchEvent"] {
        let gvks: Vec<Value> = gvs
            .iter()
            .map(|(g, v)| json!({"group": g, "kind": kind, "version": v}))
            .collect();
        let name = format!("{META}{kind}");
        if let Some(Value::Object(s)) = schemas.get_mut(&name) {
            s.insert("x-kubernetes-group-version-kind".into(), Value::Array(gvks));
        }
    }
    add_patch_extensions(&mut schemas);
    Catalog { schemas, kinds }
}

fn list_schema(r: &ResourceInfo, item: &str) -> Value {
    json!({
        "description": format!("{}List is a list of {} objects.", r.kind, r.kind),
        "type": "object",
        "properties": {
            "apiVersion": {
                "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources",
                "type": "string",
            },
            "items": {
                "description": format!("List of {}.", r.plural),
                "type": "array",
                "items": {"$ref": format!("{V3_PREFIX}{item}")},
            },
            "kind": {
                "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
                "type": "string",
            },
            "metadata": {
                "allOf": [{"$ref": format!("{V3_PREFIX}{META}ListMeta")}],
                "description": "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
            },
        },
        "required": ["items"],
    })
}

/// Upstream publishes IntOrString and Quantity as strings with a format; k8s-openapi marks
/// them with `x-kubernetes-int-or-string` only, which kubectl explain prints as an object.
fn fix_scalar_types(schemas: &mut Map<String, Value>) {
    if let Some(Value::Object(s)) =
        schemas.get_mut("io.k8s.apimachinery.pkg.util.intstr.IntOrString")
    {
        s.remove("x-kubernetes-int-or-string");
        s.insert("type".into(), json!("string"));
        s.insert("format".into(), json!("int-or-string"));
    }
    if let Some(Value::Object(s)) = schemas.get_mut("io.k8s.apimachinery.pkg.api.resource.Quantity")
    {
        s.remove("x-kubernetes-int-or-string");
        s.insert("type".into(), json!("string"));
    }
}

/// `(schema, property, merge key, patch strategy, list type, list map keys)`, from the struct
/// tags of k8s.io/api v1.33.
type PatchExt = (
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
    &'static [&'static str],
);

#[rustfmt::skip]
const PATCH_EXTENSIONS: &[PatchExt] = &[
    ("io.k8s.api.core.v1.PodSpec", "containers", Some("name"), Some("merge"), Some("map"), &["name"]),
    ("io.k8s.api.core.v1.PodSpec", "initContainers", Some("name"), Some("merge"), Some("map"), &["name"]),
    ("io.k8s.api.core.v1.PodSpec", "ephemeralContainers", Some("name"), Some("merge"), Some("map"), &["name"]),
    ("io.k8s.api.core.v1.PodSpec", "volumes", Some("name"), Some("merge,retainKeys"), Some("map"), &["name"]),
    ("io.k8s.api.core.v1.PodSpec", "imagePullSecrets", Some("name"), Some("merge"), Some("map"), &["name"]),
    ("io.k8s.api.core.v1.PodSpec", "hostAliases", Some("ip"), Some("merge"), Some("map"), &["ip"]),
    ("io.k8s.api.core.v1.PodSpec", "topologySpreadConstraints", Some("topologyKey"), Some("merge"), Some("map"), &["topologyKey", "whenUnsatisfiable"]),
    ("io.k8s.api.core.v1.PodSpec", "resourceClaims", Some("name"), Some("merge,retainKeys"), Some("map"), &["name"]),
    ("io.k8s.api.core.v1.PodSpec", "schedulingGates", Some("name"), Some("merge"), Some("map"), &["name"]),
    ("io.k8s.api.core.v1.PodSpec", "tolerations", None, None, Some("atomic"), &[]),
    ("io.k8s.api.core.v1.PodSpec", "readinessGates", None, None, Some("atomic"), &[]),
    ("io.k8s.api.core.v1.Container", "env", Some("name"), Some("merge"), Some("map"), &["name"]),
    ("io.k8s.api.core.v1.Container", "ports", Some("containerPort"), Some("merge"), Some("map"), &["containerPort", "protocol"]),
    ("io.k8s.api.core.v1.Container", "volumeMounts", Some("mountPath"), Some("merge"), Some("map"), &["mountPath"]),
    ("io.k8s.api.core.v1.Container", "volumeDevices", Some("devicePath"), Some("merge"), Some("map"), &["devicePath"]),
    ("io.k8s.api.core.v1.Container", "envFrom", None, None, Some("atomic"), &[]),
    ("io.k8s.api.core.v1.EphemeralContainer", "env", Some("name"), Some("merge"), Some("map"), &["name"]),
    ("io.k8s.api.core.v1.EphemeralContainer", "ports", Some("containerPort"), Some("merge"), Some("map"), &["containerPort", "protocol"]),
    ("io.k8s.api.core.v1.EphemeralContainer", "volumeMounts", Some("mountPath"), Some("merge"), Some("map"), &["mountPath"]),
    ("io.k8s.api.core.v1.EphemeralContainer", "volumeDevices", Some("devicePath"), Some("merge"), Some("map"), &["devicePath"]),
    ("io.k8s.api.core.v1.ServiceSpec", "ports", Some("port"), Some("merge"), Some("map"), &["port", "protocol"]),
    ("io.k8s.api.core.v1.PodStatus", "conditions", Some("type"), Some("merge"), Some("map"), &["type"]),
    ("io.k8s.api.core.v1.NodeStatus", "conditions", Some("type"), Some("merge"), Some("map"), &["type"]),
    ("io.k8s.api.core.v1.NodeStatus", "addresses", Some("type"), Some("merge"), Some("atomic"), &[]),
    ("io.k8s.api.core.v1.NodeSpec", "podCIDRs", None, Some("merge"), Some("set"), &[]),
    ("io.k8s.api.core.v1.NamespaceStatus", "conditions", Some("type"), Some("merge"), Some("map"), &["type"]),
    ("io.k8s.api.apps.v1.DeploymentSpec", "strategy", None, Some("retainKeys"), None, &[]),
    ("io.k8s.api.apps.v1.DaemonSetSpec", "updateStrategy", None, Some("retainKeys"), None, &[]),
    ("io.k8s.api.apps.v1.DeploymentStatus", "conditions", Some("type"), Some("merge"), Some("map"), &["type"]),
    ("io.k8s.api.apps.v1.ReplicaSetStatus", "conditions", Some("type"), Some("merge"), Some("map"), &["type"]),
    ("io.k8s.api.apps.v1.DaemonSetStatus", "conditions", Some("type"), Some("merge"), Some("map"), &["type"]),
    ("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "ownerReferences", Some("uid"), Some("merge"), Some("map"), &["uid"]),
    ("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "finalizers", None, Some("merge"), Some("set"), &[]),
];

fn add_patch_extensions(schemas: &mut Map<String, Value>) {
    for (schema, prop, key, strategy, list_type, map_keys) in PATCH_EXTENSIONS {
        let Some(Value::Object(p)) = schemas
            .get_mut(*schema)
            .and_then(|s| s.get_mut("properties"))
            .and_then(|p| p.get_mut(*prop))
        else {
            continue;
        };
        if let Some(k) = key {
            p.insert("x-kubernetes-patch-merge-key".into(), json!(k));
        }
        if let Some(s) = strategy {
            p.insert("x-kubernetes-patch-strategy".into(), json!(s));
        }
        if let Some(t) = list_type {
            p.insert("x-kubernetes-list-type".into(), json!(t));
        }
        if !map_keys.is_empty() {
            p.insert("x-kubernetes-list-map-keys".into(), json!(map_keys));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Paths: a neutral model rendered as OpenAPI 3.0 or Swagger 2.0.

/// What an operation's request body is.
#[derive(Debug, Clone)]
enum Body {
    None,
    Schema(String),
    Patch,
    OptionalDeleteOptions,
}

/// What a successful response carries.
#[derive(Debug, Clone)]
enum Resp {
    Schema(String),
    Text,
}

#[derive(Debug, Clone)]
struct Op {
    method: &'static str,
    action: &'static str,
    id: String,
    description: String,
    query: &'static [&'static str],
    body: Body,
    resp: Resp,
    codes: &'static [&'static str],
    gvk: (&'static str, &'static str, String),
}

#[derive(Debug, Clone)]
struct PathItem {
    path: String,
    /// `name`, `namespace`, `path` path parameters in order, plus `pretty`.
    path_params: Vec<(&'static str, String)>,
    ops: Vec<Op>,
}

const LIST_Q: &[&str] = &[
    "allowWatchBookmarks",
    "continue",
    "fieldSelector",
    "labelSelector",
    "limit",
    "resourceVersion",
    "resourceVersionMatch",
    "sendInitialEvents",
    "timeoutSeconds",
    "watch",
];
const WRITE_Q: &[&str] = &["dryRun", "fieldManager", "fieldValidation"];
const PATCH_Q: &[&str] = &["dryRun", "fieldManager", "fieldValidation", "force"];
const DELETE_Q: &[&str] = &[
    "dryRun",
    "gracePeriodSeconds",
    "ignoreStoreReadErrorWithClusterBreakingPotential",
    "orphanDependents",
    "propagationPolicy",
];
const DELETECOLLECTION_Q: &[&str] = &[
    "continue",
    "dryRun",
    "fieldSelector",
    "gracePeriodSeconds",
    "ignoreStoreReadErrorWithClusterBreakingPotential",
    "labelSelector",
    "limit",
    "orphanDependents",
    "propagationPolicy",
    "resourceVersion",
    "resourceVersionMatch",
    "sendInitialEvents",
    "timeoutSeconds",
];
const LOG_Q: &[&str] = &[
    "container",
    "follow",
    "insecureSkipTLSVerifyBackend",
    "limitBytes",
    "previous",
    "sinceSeconds",
    "stream",
    "tailLines",
    "timestamps",
];
const EXEC_Q: &[&str] = &["command", "container", "stderr", "stdin", "stdout", "tty"];
const ATTACH_Q: &[&str] = &["container", "stderr", "stdin", "stdout", "tty"];
const PORTFORWARD_Q: &[&str] = &["ports"];
const NONE_Q: &[&str] = &[];

/// `(type, description)` of a query parameter.
fn query_param(name: &str) -> (&'static str, &'static str) {
    match name {
        "allowWatchBookmarks" => ("boolean", "allowWatchBookmarks requests watch events with type \"BOOKMARK\"."),
        "continue" => ("string", "The continue option should be set when retrieving more results from the server."),
        "fieldSelector" => ("string", "A selector to restrict the list of returned objects by their fields. Defaults to everything."),
        "labelSelector" => ("string", "A selector to restrict the list of returned objects by their labels. Defaults to everything."),
        "limit" => ("integer", "limit is a maximum number of responses to return for a list call."),
        "resourceVersion" => ("string", "resourceVersion sets a constraint on what resource versions a request may be served from."),
        "resourceVersionMatch" => ("string", "resourceVersionMatch determines how resourceVersion is applied to list calls."),
        "sendInitialEvents" => ("boolean", "`sendInitialEvents=true` may be set together with `watch=true`: the stream begins with synthetic events for all existing objects."),
        "timeoutSeconds" => ("integer", "Timeout for the list/watch call."),
        "watch" => ("boolean", "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications."),
        "dryRun" => ("string", "When present, indicates that modifications should not be persisted. Valid values are: - All: all dry run stages will be processed"),
        "fieldManager" => ("string", "fieldManager is a name associated with the actor or entity that is making these changes."),
        "fieldValidation" => ("string", "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore - Warn - Strict"),
        "force" => ("boolean", "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people."),
        "gracePeriodSeconds" => ("integer", "The duration in seconds before the object should be deleted."),
        "ignoreStoreReadErrorWithClusterBreakingPotential" => ("boolean", "if set to true, it will trigger an unsafe deletion of the resource in case the normal deletion flow fails with a corrupt object error."),
        "orphanDependents" => ("boolean", "Deprecated: please use the PropagationPolicy."),
        "propagationPolicy" => ("string", "Whether and how garbage collection will be performed: 'Orphan', 'Background' or 'Foreground'."),
        "container" => ("string", "The container for which to stream logs, or in which to execute or attach."),
        "follow" => ("boolean", "Follow the log stream of the pod."),
        "insecureSkipTLSVerifyBackend" => ("boolean", "insecureSkipTLSVerifyBackend indicates that the apiserver should not confirm the validity of the serving certificate of the backend it is connecting to."),
        "limitBytes" => ("integer", "If set, the number of bytes to read from the server before terminating the log output."),
        "previous" => ("boolean", "Return previous terminated container logs."),
        "sinceSeconds" => ("integer", "A relative time in seconds before the current time from which to show logs."),
        "stream" => ("string", "Specify which container log stream to return to the client: All, Stdout or Stderr."),
        "tailLines" => ("integer", "If set, the number of lines from the end of the logs to show."),
        "timestamps" => ("boolean", "If true, add an RFC3339 timestamp at the beginning of every line of log output."),
        "command" => ("string", "Command is the remote command to execute. argv array."),
        "stderr" => ("boolean", "Redirect the standard error stream of the pod for this call."),
        "stdin" => ("boolean", "Redirect the standard input stream of the pod for this call."),
        "stdout" => ("boolean", "Redirect the standard output stream of the pod for this call."),
        "tty" => ("boolean", "TTY if true indicates that a tty will be allocated for the exec call."),
        "ports" => ("integer", "List of ports to forward."),
        _ => ("string", ""),
    }
}

/// `rbac.authorization.k8s.io` → `RbacAuthorization`, `` → `Core`.
fn group_camel(group: &str) -> String {
    if group.is_empty() {
        return "Core".into();
    }
    group
        .trim_end_matches(".k8s.io")
        .split('.')
        .map(capitalize)
        .collect()
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Upstream's tag of a group version: `core_v1`, `apps_v1`, `rbacAuthorization_v1`.
fn tag(group: &str, version: &str) -> String {
    let g = group_camel(group);
    let mut c = g.chars();
    let g = match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    };
    format!("{g}_{version}")
}

fn paths_for(group: &str, version: &str) -> Vec<PathItem> {
    let cat = catalog();
    let mut out = Vec::new();
    let prefix = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    let gv_id = format!("{}{}", group_camel(group), capitalize(version));
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let Some(schema) = cat
            .kind_schema(r.group, r.version, r.kind)
            .map(str::to_string)
        else {
            continue;
        };
        let list_schema = format!("{schema}List");
        let ns = if r.namespaced { "Namespaced" } else { "" };
        let gvk = (r.group, r.version, r.kind.to_string());
        let has = |v: &str| r.verbs.contains(&v);
        let op =
            |method, action, verb: &str, suffix: &str, query, body, resp, codes, desc: String| Op {
                method,
                action,
                id: format!("{verb}{gv_id}{ns}{}{suffix}", r.kind),
                description: desc,
                query,
                body,
                resp,
                codes,
                gvk: gvk.clone(),
            };
        let ns_param = || {
            (
                "namespace",
                "object name and auth scope, such as for teams and projects".to_string(),
            )
        };
        let name_param = || ("name", format!("name of the {}", r.kind));
        let collection = if r.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("{prefix}/{}", r.plural)
        };
        let coll_params = if r.namespaced {
            vec![ns_param()]
        } else {
            vec![]
        };
        let mut item_params = vec![name_param()];
        item_params.extend(coll_params.clone());

        // Collection.
        let mut ops = Vec::new();
        if has("list") && r.stored {
            ops.push(op(
                "get",
                "list",
                "list",
                "",
                LIST_Q,
                Body::None,
                Resp::Schema(list_schema.clone()),
                &["200"],
                format!("list or watch objects of kind {}", r.kind),
            ));
        }
        if has("create") {
            ops.push(op(
                "post",
                "post",
                "create",
                "",
                WRITE_Q,
                Body::Schema(schema.clone()),
                Resp::Schema(schema.clone()),
                &["200", "201", "202"],
                format!("create a {}", r.kind),
            ));
        }
        if has("deletecollection") {
            ops.push(op(
                "delete",
                "deletecollection",
                "deleteCollection",
                "",
                DELETECOLLECTION_Q,
                Body::OptionalDeleteOptions,
                Resp::Schema(format!("{META}Status")),
                &["200"],
                format!("delete collection of {}", r.kind),
            ));
        }
        if !ops.is_empty() {
            out.push(PathItem {
                path: collection.clone(),
                path_params: coll_params.clone(),
                ops,
            });
        }
        // All namespaces.
        if r.namespaced && has("list") && r.stored {
            let mut o = op(
                "get",
                "list",
                "list",
                "ForAllNamespaces",
                LIST_Q,
                Body::None,
                Resp::Schema(list_schema.clone()),
                &["200"],
                format!("list or watch objects of kind {}", r.kind),
            );
            o.id = format!("list{gv_id}{}ForAllNamespaces", r.kind);
            out.push(PathItem {
                path: format!("{prefix}/{}", r.plural),
                path_params: vec![],
                ops: vec![o],
            });
        }
        // Item.
        if r.stored {
            let mut ops = Vec::new();
            if has("get") {
                ops.push(op(
                    "get",
                    "get",
                    "read",
                    "",
                    NONE_Q,
                    Body::None,
                    Resp::Schema(schema.clone()),
                    &["200"],
                    format!("read the specified {}", r.kind),
                ));
            }
            if has("update") {
                ops.push(op(
                    "put",
                    "put",
                    "replace",
                    "",
                    WRITE_Q,
                    Body::Schema(schema.clone()),
                    Resp::Schema(schema.clone()),
                    &["200", "201"],
                    format!("replace the specified {}", r.kind),
                ));
            }
            if has("patch") {
                ops.push(op(
                    "patch",
                    "patch",
                    "patch",
                    "",
                    PATCH_Q,
                    Body::Patch,
                    Resp::Schema(schema.clone()),
                    &["200", "201"],
                    format!("partially update the specified {}", r.kind),
                ));
            }
            if has("delete") {
                ops.push(op(
                    "delete",
                    "delete",
                    "delete",
                    "",
                    DELETE_Q,
                    Body::OptionalDeleteOptions,
                    Resp::Schema(schema.clone()),
                    &["200", "202"],
                    format!("delete a {}", r.kind),
                ));
            }
            if !ops.is_empty() {
                out.push(PathItem {
                    path: format!("{collection}/{{name}}"),
                    path_params: item_params.clone(),
                    ops,
                });
            }
        }
        // Subresources.
        for s in r.subresources {
            out.push(subresource_path(
                r,
                s,
                &collection,
                &item_params,
                &gv_id,
                ns,
            ));
        }
    }
    out
}

fn subresource_path(
    r: &ResourceInfo,
    s: &Subresource,
    collection: &str,
    item_params: &[(&'static str, String)],
    gv_id: &str,
    ns: &str,
) -> PathItem {
    let cat = catalog();
    let (g, v) = if s.kind_group.is_empty() && s.kind_version.is_empty() {
        (r.group, r.version)
    } else {
        (s.kind_group, s.kind_version)
    };
    let schema = cat.kind_schema(g, v, s.kind).map(str::to_string);
    let suffix = capitalize(s.name);
    let gvk = (g, v, s.kind.to_string());
    let mk = |method, action, verb: &str, query, body, resp, codes, desc: String| Op {
        method,
        action,
        id: format!("{verb}{gv_id}{ns}{}{suffix}", r.kind),
        description: desc,
        query,
        body,
        resp,
        codes,
        gvk: gvk.clone(),
    };
    let mut ops = Vec::new();
    let connect = matches!(s.name, "exec" | "attach" | "portforward" | "proxy");
    let resp = match (&schema, s.name) {
        (_, "log") => Resp::Text,
        (Some(sc), _) if !connect => Resp::Schema(sc.clone()),
        _ => Resp::Text,
    };
    let body = match &schema {
        Some(sc) if !connect => Body::Schema(sc.clone()),
        _ => Body::None,
    };
    let connect_q = match s.name {
        "exec" => EXEC_Q,
        "attach" => ATTACH_Q,
        "portforward" => PORTFORWARD_Q,
        _ => NONE_Q,
    };
    for verb in s.verbs {
        let what = format!(
            "{} of {} {}",
            s.name,
            r.kind,
            if connect { "(connect)" } else { "" }
        );
        match (*verb, connect) {
            ("get", true) => ops.push(mk(
                "get",
                "connect",
                "connectGet",
                connect_q,
                Body::None,
                Resp::Text,
                &["200"],
                format!("connect GET requests to {what}"),
            )),
            ("create", true) => ops.push(mk(
                "post",
                "connect",
                "connectPost",
                connect_q,
                Body::None,
                Resp::Text,
                &["200"],
                format!("connect POST requests to {what}"),
            )),
            ("update", true) => ops.push(mk(
                "put",
                "connect",
                "connectPut",
                NONE_Q,
                Body::None,
                Resp::Text,
                &["200"],
                format!("connect PUT requests to {what}"),
            )),
            ("patch", true) => ops.push(mk(
                "patch",
                "connect",
                "connectPatch",
                NONE_Q,
                Body::None,
                Resp::Text,
                &["200"],
                format!("connect PATCH requests to {what}"),
            )),
            ("delete", true) => ops.push(mk(
                "delete",
                "connect",
                "connectDelete",
                NONE_Q,
                Body::None,
                Resp::Text,
                &["200"],
                format!("connect DELETE requests to {what}"),
            )),
            ("get", false) => {
                let q = if s.name == "log" { LOG_Q } else { NONE_Q };
                ops.push(mk(
                    "get",
                    "get",
                    "read",
                    q,
                    Body::None,
                    resp.clone(),
                    &["200"],
                    format!("read {what}"),
                ));
            }
            ("create", false) => ops.push(mk(
                "post",
                "post",
                "create",
                WRITE_Q,
                body.clone(),
                resp.clone(),
                &["200", "201", "202"],
                format!("create {what}"),
            )),
            ("update", false) => ops.push(mk(
                "put",
                "put",
                "replace",
                WRITE_Q,
                body.clone(),
                resp.clone(),
                &["200", "201"],
                format!("replace {what}"),
            )),
            ("patch", false) => ops.push(mk(
                "patch",
                "patch",
                "patch",
                PATCH_Q,
                Body::Patch,
                resp.clone(),
                &["200", "201"],
                format!("partially update {what}"),
            )),
            _ => {}
        }
    }
    PathItem {
        path: format!("{collection}/{{name}}/{}", s.name),
        path_params: item_params.to_vec(),
        ops,
    }
}

const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
];
const PATCH_TYPES: &[&str] = &[
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];

fn gvk_json(gvk: &(&str, &str, String)) -> Value {
    json!({"group": gvk.0, "kind": gvk.2, "version": gvk.1})
}

fn path_param_v3(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "description": description, "required": true,
           "schema": {"type": "string", "uniqueItems": true}})
}

fn pretty_v3() -> Value {
    json!({"name": "pretty", "in": "query", "description": "If 'true', then the output is pretty printed.",
           "schema": {"type": "string", "uniqueItems": true}})
}

fn render_v3(items: &[PathItem]) -> Map<String, Value> {
    let mut paths = Map::new();
    for item in items {
        let mut p = Map::new();
        for op in &item.ops {
            let mut o = Map::new();
            o.insert("description".into(), json!(op.description));
            o.insert("operationId".into(), json!(op.id));
            o.insert("tags".into(), json!([tag(op.gvk.0, op.gvk.1)]));
            let params: Vec<Value> = op
                .query
                .iter()
                .map(|q| {
                    let (ty, desc) = query_param(q);
                    json!({"name": q, "in": "query", "description": desc,
                           "schema": {"type": ty, "uniqueItems": true}})
                })
                .collect();
            if !params.is_empty() {
                o.insert("parameters".into(), Value::Array(params));
            }
            match &op.body {
                Body::None => {}
                Body::Schema(s) => {
                    let content: Map<String, Value> = CONTENT_TYPES
                        .iter()
                        .map(|ct| {
                            (
                                ct.to_string(),
                                json!({"schema": {"$ref": format!("{V3_PREFIX}{s}")}}),
                            )
                        })
                        .collect();
                    o.insert(
                        "requestBody".into(),
                        json!({"content": content, "required": true}),
                    );
                }
                Body::Patch => {
                    let content: Map<String, Value> = PATCH_TYPES
                        .iter()
                        .map(|ct| {
                            (
                                ct.to_string(),
                                json!({"schema": {"$ref": format!("{V3_PREFIX}{META}Patch")}}),
                            )
                        })
                        .collect();
                    o.insert(
                        "requestBody".into(),
                        json!({"content": content, "required": true}),
                    );
                }
                Body::OptionalDeleteOptions => {
                    let content: Map<String, Value> = CONTENT_TYPES
                        .iter()
                        .map(|ct| (ct.to_string(), json!({"schema": {"$ref": format!("{V3_PREFIX}{META}DeleteOptions")}})))
                        .collect();
                    o.insert("requestBody".into(), json!({"content": content}));
                }
            }
            let mut responses = Map::new();
            for code in op.codes {
                let content: Value = match &op.resp {
                    Resp::Schema(s) => Value::Object(
                        CONTENT_TYPES
                            .iter()
                            .map(|ct| {
                                (
                                    ct.to_string(),
                                    json!({"schema": {"$ref": format!("{V3_PREFIX}{s}")}}),
                                )
                            })
                            .collect(),
                    ),
                    Resp::Text => json!({"*/*": {"schema": {"type": "string"}}}),
                };
                let desc = match *code {
                    "201" => "Created",
                    "202" => "Accepted",
                    _ => "OK",
                };
                responses.insert(
                    code.to_string(),
                    json!({"description": desc, "content": content}),
                );
            }
            responses.insert("401".into(), json!({"description": "Unauthorized"}));
            o.insert("responses".into(), Value::Object(responses));
            o.insert("x-kubernetes-action".into(), json!(op.action));
            o.insert("x-kubernetes-group-version-kind".into(), gvk_json(&op.gvk));
            p.insert(op.method.into(), Value::Object(o));
        }
        let mut params: Vec<Value> = item
            .path_params
            .iter()
            .map(|(n, d)| path_param_v3(n, d))
            .collect();
        params.push(pretty_v3());
        p.insert("parameters".into(), Value::Array(params));
        paths.insert(item.path.clone(), Value::Object(p));
    }
    paths
}

fn render_v2(items: &[PathItem]) -> Map<String, Value> {
    let mut paths = Map::new();
    for item in items {
        let mut p = Map::new();
        for op in &item.ops {
            let mut o = Map::new();
            o.insert("description".into(), json!(op.description));
            o.insert("operationId".into(), json!(op.id));
            o.insert("tags".into(), json!([tag(op.gvk.0, op.gvk.1)]));
            o.insert("schemes".into(), json!(["https"]));
            let mut params: Vec<Value> = Vec::new();
            match &op.body {
                Body::None => {}
                Body::Schema(s) => params
                    .push(json!({"name": "body", "in": "body", "required": true,
                    "schema": {"$ref": format!("{V2_PREFIX}{s}")}})),
                Body::Patch => params.push(json!({"name": "body", "in": "body", "required": true,
                    "schema": {"$ref": format!("{V2_PREFIX}{META}Patch")}})),
                Body::OptionalDeleteOptions => params.push(json!({"name": "body", "in": "body",
                    "schema": {"$ref": format!("{V2_PREFIX}{META}DeleteOptions")}})),
            }
            for q in op.query {
                let (ty, desc) = query_param(q);
                params.push(json!({"name": q, "in": "query", "description": desc, "type": ty, "uniqueItems": true}));
            }
            if !params.is_empty() {
                o.insert("parameters".into(), Value::Array(params));
            }
            let consumes: Vec<&str> = match &op.body {
                Body::Patch => PATCH_TYPES.to_vec(),
                _ => vec!["*/*"],
            };
            o.insert("consumes".into(), json!(consumes));
            let produces: Vec<&str> = match &op.resp {
                Resp::Schema(_) => CONTENT_TYPES.to_vec(),
                Resp::Text => vec!["*/*"],
            };
            o.insert("produces".into(), json!(produces));
            let mut responses = Map::new();
            for code in op.codes {
                let schema = match &op.resp {
                    Resp::Schema(s) => json!({"$ref": format!("{V2_PREFIX}{s}")}),
                    Resp::Text => json!({"type": "string"}),
                };
                let desc = match *code {
                    "201" => "Created",
                    "202" => "Accepted",
                    _ => "OK",
                };
                responses.insert(
                    code.to_string(),
                    json!({"description": desc, "schema": schema}),
                );
            }
            responses.insert("401".into(), json!({"description": "Unauthorized"}));
            o.insert("responses".into(), Value::Object(responses));
            o.insert("x-kubernetes-action".into(), json!(op.action));
            o.insert("x-kubernetes-group-version-kind".into(), gvk_json(&op.gvk));
            p.insert(op.method.into(), Value::Object(o));
        }
        let mut params: Vec<Value> = item
            .path_params
            .iter()
            .map(|(n, d)| json!({"name": n, "in": "path", "description": d, "required": true, "type": "string", "uniqueItems": true}))
            .collect();
        params.push(json!({"name": "pretty", "in": "query", "description": "If 'true', then the output is pretty printed.", "type": "string", "uniqueItems": true}));
        p.insert("parameters".into(), Value::Array(params));
        paths.insert(item.path.clone(), Value::Object(p));
    }
    paths
}

/// The discovery path of a "root" document (`api`, `apis`, `apis/<group>`).
fn discovery_op(path: &str) -> Option<(String, &'static str, String)> {
    let segs: Vec<&str> = path.split('/').collect();
    match segs.as_slice() {
        ["api"] => Some(("/api/".into(), "APIVersions", "getCoreAPIVersions".into())),
        ["apis"] => Some(("/apis/".into(), "APIGroupList", "getAPIVersions".into())),
        ["apis", g] if groups().iter().any(|(x, _)| !x.is_empty() && x == g) => Some((
            format!("/apis/{g}/"),
            "APIGroup",
            format!("get{}APIGroup", group_camel(g)),
        )),
        _ => None,
    }
}

fn discovery_paths(path: &str) -> Option<(Map<String, Value>, String)> {
    let (p, kind, id) = discovery_op(path)?;
    let schema = format!("{META}{kind}");
    let content: Map<String, Value> = CONTENT_TYPES
        .iter()
        .map(|ct| {
            (
                ct.to_string(),
                json!({"schema": {"$ref": format!("{V3_PREFIX}{schema}")}}),
            )
        })
        .collect();
    let mut paths = Map::new();
    paths.insert(
        p,
        json!({"get": {
            "description": "get available API versions",
            "operationId": id,
            "responses": {"200": {"description": "OK", "content": content},
                          "401": {"description": "Unauthorized"}},
        }}),
    );
    Some((paths, schema))
}

/// Every `$ref` target name (with the given prefix) in `v`.
fn collect_refs(v: &Value, prefix: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "$ref" {
                    if let Some(name) = x.as_str().and_then(|s| s.strip_prefix(prefix)) {
                        out.push(name.to_string());
                    }
                } else {
                    collect_refs(x, prefix, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_refs(x, prefix, out)),
        _ => {}
    }
}

/// `roots` and every schema they reference, transitively.
fn closure(roots: impl IntoIterator<Item = String>) -> Map<String, Value> {
    let cat = catalog();
    let mut seen = BTreeSet::new();
    let mut todo: Vec<String> = roots.into_iter().collect();
    while let Some(n) = todo.pop() {
        if !seen.insert(n.clone()) {
            continue;
        }
        if let Some(s) = cat.schemas.get(&n) {
            collect_refs(s, V3_PREFIX, &mut todo);
        }
    }
    seen.into_iter()
        .filter_map(|n| cat.schemas.get(&n).map(|s| (n, s.clone())))
        .collect()
}

fn v3_document(path: &str) -> Option<Value> {
    let segs: Vec<&str> = path.split('/').collect();
    let (paths, roots) = match segs.as_slice() {
        ["api", v] => {
            let items = paths_for("", v);
            (render_v3(&items), items)
        }
        ["apis", g, v] => {
            let items = paths_for(g, v);
            (render_v3(&items), items)
        }
        _ => {
            let (paths, schema) = discovery_paths(path)?;
            let schemas = closure([schema]);
            return Some(v3_wrap(paths, schemas));
        }
    };
    if roots.is_empty() {
        return None;
    }
    let mut refs = Vec::new();
    collect_refs(&Value::Object(paths.clone()), V3_PREFIX, &mut refs);
    refs.push(format!("{META}Status"));
    let schemas = closure(refs);
    Some(v3_wrap(paths, schemas))
}

fn v3_wrap(paths: Map<String, Value>, schemas: Map<String, Value>) -> Value {
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": INFO_VERSION},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"BearerToken": {"type": "apiKey", "description": "Bearer Token authentication", "name": "authorization", "in": "header"}},
        },
        "security": [{"BearerToken": []}],
    })
}

/// FNV-1a 64 of the document bytes, as upper-case hex (upstream uses SHA-512; clients treat
/// the hash as opaque, only as a cache key in the URL).
fn hash_hex(b: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for x in b {
        h ^= u64::from(*x);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016X}")
}

/// One served v3 document: its bytes and hash.
#[derive(Debug)]
struct V3Doc {
    bytes: Bytes,
    hash: String,
}

/// Every v3 document path served: `api`, `api/v1`, `apis`, `apis/<g>`, `apis/<g>/<v>`.
fn v3_paths() -> Vec<String> {
    let mut out = vec!["api".to_string(), "apis".to_string()];
    for (g, v) in groups() {
        if g.is_empty() {
            out.push(format!("api/{v}"));
        } else {
            out.push(format!("apis/{g}"));
            out.push(format!("apis/{g}/{v}"));
        }
    }
    out
}

fn v3_docs() -> &'static BTreeMap<String, V3Doc> {
    static DOCS: OnceLock<BTreeMap<String, V3Doc>> = OnceLock::new();
    DOCS.get_or_init(|| {
        v3_paths()
            .into_iter()
            .filter_map(|p| {
                let doc = v3_document(&p)?;
                let bytes = serde_json::to_vec(&doc).ok()?;
                let hash = hash_hex(&bytes);
                Some((
                    p,
                    V3Doc {
                        bytes: Bytes::from(bytes),
                        hash,
                    },
                ))
            })
            .collect()
    })
}

/// `GET /openapi/v3`: the index of documents, as kube-openapi's handler3 writes it:
/// `{"paths": {"api/v1": {"serverRelativeURL": "/openapi/v3/api/v1?hash=<HASH>"}, …}}`.
pub fn v3_index() -> Value {
    let paths: Map<String, Value> = v3_docs()
        .iter()
        .map(|(p, d)| {
            (
                p.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", d.hash)}),
            )
        })
        .collect();
    json!({ "paths": paths })
}

/// `GET /openapi/v3/<path>` (`api`, `api/v1`, `apis`, `apis/apps`, `apis/apps/v1`, no leading
/// slash): the OpenAPI 3.0 JSON document, `None` (404) for an unknown path.
pub fn v3_group_version(path: &str) -> Option<Bytes> {
    v3_docs()
        .get(path.trim_matches('/'))
        .map(|d| d.bytes.clone())
}

/// The hash of the v3 document at `path`, as the index advertises it (for the `ETag` header and
/// for redirecting a request whose `?hash=` is stale).
pub fn v3_hash(path: &str) -> Option<&'static str> {
    v3_docs()
        .get(path.trim_matches('/'))
        .map(|d| d.hash.as_str())
}

/// The JSON property names of every schema definition, keyed by definition name
/// (`io.k8s.api.core.v1.Pod` → `["apiVersion", "kind", "metadata", "spec", "status"]`); the
/// protobuf decoder recovers upstream field names from them.
pub fn definition_properties() -> BTreeMap<&'static str, Vec<&'static str>> {
    catalog()
        .schemas
        .iter()
        .map(|(name, schema)| {
            let props = schema
                .get("properties")
                .and_then(Value::as_object)
                .map(|p| p.keys().map(String::as_str).collect())
                .unwrap_or_default();
            (name.as_str(), props)
        })
        .collect()
}

/// Rewrites v3 refs to v2 refs, and an `allOf` holding a single `$ref` back into a `$ref` with
/// siblings (the Swagger 2.0 style of upstream's `/openapi/v2`).
fn to_v2(v: &mut Value) {
    match v {
        Value::Object(m) => {
            let single_ref = match m.get("allOf") {
                Some(Value::Array(a)) if a.len() == 1 => a[0].get("$ref").cloned(),
                _ => None,
            };
            if let Some(r) = single_ref {
                m.remove("allOf");
                m.insert("$ref".into(), r);
            }
            m.remove("nullable");
            if let Some(Value::String(r)) = m.get_mut("$ref") {
                if let Some(name) = r.strip_prefix(V3_PREFIX) {
                    *r = format!("{V2_PREFIX}{name}");
                }
            }
            m.values_mut().for_each(to_v2);
        }
        Value::Array(a) => a.iter_mut().for_each(to_v2),
        _ => {}
    }
}

fn v2_document() -> Value {
    let mut items = Vec::new();
    for (g, v) in groups() {
        items.extend(paths_for(g, v));
    }
    let mut definitions = Value::Object(catalog().schemas.clone());
    to_v2(&mut definitions);
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": INFO_VERSION},
        "paths": render_v2(&items),
        "definitions": definitions,
        "securityDefinitions": {"BearerToken": {"description": "Bearer Token authentication", "type": "apiKey", "name": "authorization", "in": "header"}},
        "security": [{"BearerToken": []}],
    })
}

/// `GET /openapi/v2`: the Swagger 2.0 JSON document of every served group version.
pub fn v2() -> Bytes {
    static V2: OnceLock<Bytes> = OnceLock::new();
    V2.get_or_init(|| Bytes::from(serde_json::to_vec(&v2_document()).unwrap_or_default()))
        .clone()
}

/// The `ETag` value (without quotes) of [`v2`].
pub fn v2_hash() -> String {
    static H: OnceLock<String> = OnceLock::new();
    H.get_or_init(|| hash_hex(&v2())).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(b: &Bytes) -> Value {
        serde_json::from_slice(b).expect("document is JSON")
    }

    fn assert_refs_resolve(doc: &Value, prefix: &str, defs: &Value) {
        let mut refs = Vec::new();
        collect_refs(doc, prefix, &mut refs);
        assert!(!refs.is_empty());
        for r in refs {
            assert!(defs.get(&r).is_some(), "dangling $ref {prefix}{r}");
        }
        // No ref of the other flavour slipped through.
        let other = if prefix == V3_PREFIX {
            V2_PREFIX
        } else {
            V3_PREFIX
        };
        let mut wrong = Vec::new();
        collect_refs(doc, other, &mut wrong);
        assert!(wrong.is_empty(), "foreign refs: {wrong:?}");
    }

    fn has_gvk(schema: &Value, group: &str, version: &str, kind: &str) -> bool {
        schema["x-kubernetes-group-version-kind"]
            .as_array()
            .is_some_and(|a| {
                a.iter()
                    .any(|g| g["group"] == group && g["version"] == version && g["kind"] == kind)
            })
    }

    #[test]
    fn index_lists_every_document() {
        let idx = v3_index();
        let paths = idx["paths"].as_object().expect("paths");
        for p in [
            "api",
            "apis",
            "api/v1",
            "apis/apps",
            "apis/apps/v1",
            "apis/coordination.k8s.io/v1",
        ] {
            let url = paths[p]["serverRelativeURL"].as_str().expect("url");
            assert!(url.starts_with(&format!("/openapi/v3/{p}?hash=")), "{url}");
            assert!(v3_group_version(p).is_some(), "{p}");
            let hash = v3_hash(p).expect("hash");
            assert!(url.ends_with(hash));
        }
        assert!(v3_group_version("apis/apps/v2").is_none());
        assert!(v3_group_version("apis/nope").is_none());
    }

    #[test]
    fn core_v1_document() {
        let doc = parse(&v3_group_version("api/v1").expect("api/v1"));
        assert_eq!(doc["openapi"], "3.0.0");
        let schemas = &doc["components"]["schemas"];
        assert_refs_resolve(&doc, V3_PREFIX, schemas);
        for name in [
            "io.k8s.api.core.v1.Pod",
            "io.k8s.api.core.v1.PodSpec",
            "io.k8s.api.core.v1.PodList",
            "io.k8s.api.core.v1.Binding",
            "io.k8s.api.policy.v1.Eviction",
            "io.k8s.api.authentication.v1.TokenRequest",
            "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
            "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
            "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
            "io.k8s.apimachinery.pkg.apis.meta.v1.Patch",
        ] {
            assert!(schemas.get(name).is_some(), "{name} missing");
        }
        assert!(has_gvk(&schemas["io.k8s.api.core.v1.Pod"], "", "v1", "Pod"));
        assert!(has_gvk(
            &schemas["io.k8s.api.core.v1.PodList"],
            "",
            "v1",
            "PodList"
        ));
        assert!(has_gvk(
            &schemas["io.k8s.api.policy.v1.Eviction"],
            "policy",
            "v1",
            "Eviction"
        ));
        assert!(has_gvk(
            &schemas["io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions"],
            "apps",
            "v1",
            "DeleteOptions"
        ));
        // Strategic-merge metadata kubectl apply relies on.
        let containers = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(containers["x-kubernetes-list-map-keys"], json!(["name"]));
        assert_eq!(
            schemas["io.k8s.api.core.v1.Container"]["properties"]["ports"]
                ["x-kubernetes-patch-merge-key"],
            "containerPort"
        );
        // IntOrString as upstream publishes it.
        assert_eq!(
            schemas["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["format"],
            "int-or-string"
        );
        // Paths.
        let paths = &doc["paths"];
        let item = &paths["/api/v1/namespaces/{namespace}/pods/{name}"];
        assert_eq!(item["get"]["x-kubernetes-action"], "get");
        assert_eq!(
            item["patch"]["x-kubernetes-group-version-kind"]["kind"],
            "Pod"
        );
        assert!(paths.get("/api/v1/pods").is_some());
        assert!(paths.get("/api/v1/nodes/{name}").is_some());
        assert!(paths
            .get("/api/v1/namespaces/{namespace}/pods/{name}/log")
            .is_some());
        assert!(paths
            .get("/api/v1/namespaces/{namespace}/pods/{name}/eviction")
            .is_some());
    }

    /// kubectl's query-param verifier: every PATCH operation carrying the kind's GVK must list
    /// `fieldValidation` among its own parameters; POST and PUT carry it too.
    #[test]
    fn every_write_has_field_validation() {
        for p in v3_docs().keys() {
            let doc = parse(&v3_group_version(p).expect("doc"));
            let Some(paths) = doc["paths"].as_object() else {
                continue;
            };
            for (path, item) in paths {
                for method in ["post", "put", "patch"] {
                    let Some(op) = item.get(method) else { continue };
                    if op["x-kubernetes-action"] == "connect" {
                        continue;
                    }
                    let ok = op["parameters"].as_array().is_some_and(|ps| {
                        ps.iter()
                            .any(|q| q["name"] == "fieldValidation" && q["in"] == "query")
                    });
                    assert!(ok, "{method} {path} lacks fieldValidation");
                    assert!(op["x-kubernetes-group-version-kind"].is_object());
                }
            }
        }
    }

    #[test]
    fn group_documents_have_their_kinds() {
        let doc = parse(&v3_group_version("apis/apps/v1").expect("apps"));
        let schemas = &doc["components"]["schemas"];
        assert_refs_resolve(&doc, V3_PREFIX, schemas);
        assert!(has_gvk(
            &schemas["io.k8s.api.apps.v1.Deployment"],
            "apps",
            "v1",
            "Deployment"
        ));
        assert!(has_gvk(
            &schemas["io.k8s.api.autoscaling.v1.Scale"],
            "autoscaling",
            "v1",
            "Scale"
        ));
        let scale = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"];
        assert_eq!(
            scale["patch"]["x-kubernetes-group-version-kind"]["kind"],
            "Scale"
        );
        let authn = parse(&v3_group_version("apis/authentication.k8s.io/v1").expect("authn"));
        let schemas = &authn["components"]["schemas"];
        assert!(has_gvk(
            &schemas["io.k8s.api.authentication.v1.SelfSubjectReview"],
            "authentication.k8s.io",
            "v1",
            "SelfSubjectReview"
        ));
        assert!(
            authn["paths"]["/apis/authentication.k8s.io/v1/selfsubjectreviews"]["post"].is_object()
        );
        for p in v3_docs().keys() {
            let doc = parse(&v3_group_version(p).expect("doc"));
            assert_refs_resolve(&doc, V3_PREFIX, &doc["components"]["schemas"]);
        }
        // Every resource of the table has a kind schema.
        for r in RESOURCES {
            assert!(
                catalog().kind_schema(r.group, r.version, r.kind).is_some(),
                "{}",
                r.kind
            );
        }
    }

    #[test]
    fn v2_document_is_consistent() {
        let doc = parse(&v2());
        assert_eq!(doc["swagger"], "2.0");
        let defs = &doc["definitions"];
        assert_refs_resolve(&doc, V2_PREFIX, defs);
        assert!(has_gvk(&defs["io.k8s.api.core.v1.Pod"], "", "v1", "Pod"));
        assert!(has_gvk(
            &defs["io.k8s.api.apps.v1.DeploymentList"],
            "apps",
            "v1",
            "DeploymentList"
        ));
        let patch =
            &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert!(patch["parameters"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["name"] == "fieldValidation")));
        assert_eq!(v2_hash(), v2_hash());
    }

    #[test]
    fn sizes_and_speed() {
        let t = std::time::Instant::now();
        let core = v3_group_version("api/v1").expect("core").len();
        let v2 = v2().len();
        let elapsed = t.elapsed();
        assert!((100_000..20_000_000).contains(&core), "core v1 size {core}");
        assert!((200_000..40_000_000).contains(&v2), "v2 size {v2}");
        // Generous in debug builds; release takes a fraction of this.
        assert!(elapsed.as_secs() < 20, "generation took {elapsed:?}");
    }
}

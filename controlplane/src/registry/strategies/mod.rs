//! The strategies of every served resource: typed decoding through k8s-openapi plus
//! per-kind defaulting, validation and spec/status split, like kube-apiserver's
//! pkg/registry/<group>/<resource>/strategy.go files.

pub mod apps;
pub mod core;
pub mod pods;
pub mod services;

use std::marker::PhantomData;

use k8s_openapi::api::{
    apps::v1 as apps_v1, certificates, coordination, core::v1 as core_v1, discovery,
};
use k8s_openapi::api::{events as events_api, policy, rbac};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::apiserver::resources::ResourceInfo;
use crate::registry::strategy::{DecodeError, Decoded, FieldError, Strategy};
use crate::registry::validation::{validate_object_meta, NameRule};

/// How a kind splits spec and status between the main resource and `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusSplit {
    /// No status: every write goes through the main resource.
    None,
    /// A status written only through `/status`; cleared on create.
    Status,
    /// As `Status`, but a client may set status on create (Nodes: the kubelet registers with it).
    StatusSettableOnCreate,
    /// As `Status`, and `/status` also keeps the old labels (apps workloads upstream).
    StatusKeepsLabels,
}

/// What differs between kinds, as plain functions: a strategy is a [`Rules`] value plus the
/// typed struct its objects decode into.
#[derive(Clone, Copy)]
pub struct Rules {
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Which format `metadata.name` must have.
    pub name_rule: NameRule,
    /// The spec/status split.
    pub status: StatusSplit,
    /// Whether a spec change bumps `metadata.generation`.
    pub generation: bool,
    /// Defaulting, on create and on every update.
    pub default: fn(&mut Value),
    /// Extra create preparation, after the status is cleared.
    pub prepare_create: fn(&mut Value),
    /// Extra update preparation (new, old), after the old status is restored.
    pub prepare_update: fn(&mut Value, &Value),
    /// Extra `/status` update preparation (new, old), after the old spec is restored.
    pub prepare_status_update: fn(&mut Value, &Value),
    /// Kind-specific validation beyond `metadata`.
    pub validate: fn(&Value) -> Vec<FieldError>,
    /// Kind-specific update validation (new, old), beyond validating the new object.
    pub validate_update: fn(&Value, &Value) -> Vec<FieldError>,
}

fn noop(_: &mut Value) {}
fn noop2(_: &mut Value, _: &Value) {}
fn no_errors(_: &Value) -> Vec<FieldError> {
    Vec::new()
}
fn no_errors2(_: &Value, _: &Value) -> Vec<FieldError> {
    Vec::new()
}

/// Rules of a kind with nothing special: DNS-subdomain names, no status, no defaults.
pub const BASE: Rules = Rules {
    namespaced: true,
    name_rule: NameRule::Subdomain,
    status: StatusSplit::None,
    generation: false,
    default: noop,
    prepare_create: noop,
    prepare_update: noop2,
    prepare_status_update: noop2,
    validate: no_errors,
    validate_update: no_errors2,
};

/// A strategy over the k8s-openapi type `K`: decodes through it and applies `rules`.
pub struct TypedStrategy<K> {
    rules: Rules,
    _kind: PhantomData<fn() -> K>,
}

impl<K> TypedStrategy<K> {
    /// A strategy for `K` with `rules`.
    pub fn new(rules: Rules) -> Self {
        Self {
            rules,
            _kind: PhantomData,
        }
    }
}

/// Decodes `object` through `K`: type errors become a [`DecodeError`] naming the field path,
/// fields `K` does not know are dropped and listed in `unknown_fields`.
pub fn decode_typed<K>(object: Value) -> Result<Decoded, DecodeError>
where
    K: DeserializeOwned + Serialize + k8s_openapi::Resource,
{
    let mut input = object;
    // apiVersion/kind were checked by the caller, and the output gets K's own: k8s-openapi
    // would reject a mismatch with a less helpful message.
    if let Some(m) = input.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
    }
    let typed: K = serde_path_to_error::deserialize(&input).map_err(|e| {
        let path = e.path().to_string();
        DecodeError {
            message: format!(
                "{kind} in version \"{version}\" cannot be handled as a {kind}: json: cannot decode field {path}: {inner}",
                kind = K::KIND,
                version = K::VERSION,
                inner = e.inner(),
            ),
        }
    })?;
    let output = serde_json::to_value(&typed).map_err(|e| DecodeError {
        message: format!("{} cannot be encoded: {e}", K::KIND),
    })?;
    let mut unknown_fields = Vec::new();
    unknown(&input, &output, "", &mut unknown_fields);
    Ok(Decoded {
        object: output,
        unknown_fields,
    })
}

/// Collects the paths of keys present in `input` but not in `output`.
fn unknown(input: &Value, output: &Value, path: &str, out: &mut Vec<String>) {
    match (input, output) {
        (Value::Object(i), Value::Object(o)) => {
            for (k, v) in i {
                if v.is_null() {
                    continue;
                }
                let p = format!("{path}.{k}");
                match o.get(k) {
                    None => out.push(p),
                    Some(ov) => unknown(v, ov, &p, out),
                }
            }
        }
        (Value::Array(i), Value::Array(o)) => {
            for (idx, (a, b)) in i.iter().zip(o).enumerate() {
                unknown(a, b, &format!("{path}[{idx}]"), out);
            }
        }
        _ => {}
    }
}

impl<K> Strategy for TypedStrategy<K>
where
    K: DeserializeOwned + Serialize + k8s_openapi::Resource,
{
    fn decode(&self, object: Value) -> Result<Decoded, DecodeError> {
        decode_typed::<K>(object)
    }

    fn default(&self, object: &mut Value) {
        (self.rules.default)(object);
    }

    fn prepare_for_create(&self, object: &mut Value) {
        if matches!(
            self.rules.status,
            StatusSplit::Status | StatusSplit::StatusKeepsLabels
        ) {
            if let Some(m) = object.as_object_mut() {
                m.remove("status");
            }
        }
        (self.rules.prepare_create)(object);
    }

    fn prepare_for_update(&self, new: &mut Value, old: &Value) {
        if self.rules.status != StatusSplit::None {
            keep_old(new, old, "status");
        }
        (self.rules.prepare_update)(new, old);
    }

    fn prepare_for_status_update(&self, new: &mut Value, old: &Value) {
        if self.rules.status != StatusSplit::None {
            let keys: Vec<String> = new
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, _)| k.clone())
                .chain(
                    old.as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, _)| k.clone()),
                )
                .filter(|k| !matches!(k.as_str(), "metadata" | "status" | "apiVersion" | "kind"))
                .collect();
            for k in keys {
                keep_old(new, old, &k);
            }
            if self.rules.status == StatusSplit::StatusKeepsLabels {
                let labels = old.pointer("/metadata/labels").cloned();
                if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                    match labels {
                        Some(l) => m.insert("labels".into(), l),
                        None => m.remove("labels"),
                    };
                }
            }
        }
        (self.rules.prepare_status_update)(new, old);
    }

    fn validate_create(&self, object: &Value) -> Vec<FieldError> {
        let mut errs = validate_object_meta(object, self.rules.namespaced, self.rules.name_rule);
        errs.extend((self.rules.validate)(object));
        errs
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        let mut errs = self.validate_create(new);
        errs.extend((self.rules.validate_update)(new, old));
        errs
    }

    fn tracks_generation(&self) -> bool {
        self.rules.generation
    }
}

/// A strategy for kinds without a typed struct here (create-only reviews): decodes as is.
pub struct Passthrough;

impl Strategy for Passthrough {
    fn decode(&self, object: Value) -> Result<Decoded, DecodeError> {
        Ok(Decoded {
            object,
            unknown_fields: Vec::new(),
        })
    }
}

/// The strategy of `resource`.
pub fn strategy_for(resource: &ResourceInfo) -> Box<dyn Strategy> {
    fn typed<K>(rules: Rules) -> Box<dyn Strategy>
    where
        K: DeserializeOwned + Serialize + k8s_openapi::Resource + 'static,
    {
        Box::new(TypedStrategy::<K>::new(rules))
    }
    let ns = resource.namespaced;
    match (resource.group, resource.kind) {
        ("", "Pod") => typed::<core_v1::Pod>(pods_rules(ns)),
        ("", "Service") => typed::<core_v1::Service>(services::rules(ns)),
        ("", "Namespace") => typed::<core_v1::Namespace>(core::namespace_rules()),
        ("", "Node") => typed::<core_v1::Node>(core::node_rules()),
        ("", "Endpoints") => typed::<core_v1::Endpoints>(core::endpoints_rules(ns)),
        ("", "ConfigMap") => typed::<core_v1::ConfigMap>(core::config_map_rules(ns)),
        ("", "Secret") => typed::<core_v1::Secret>(core::secret_rules(ns)),
        ("", "ServiceAccount") => typed::<core_v1::ServiceAccount>(Rules {
            namespaced: ns,
            ..BASE
        }),
        ("", "Event") => typed::<core_v1::Event>(Rules {
            namespaced: ns,
            ..BASE
        }),
        ("", "ResourceQuota") => typed::<core_v1::ResourceQuota>(core::resource_quota_rules(ns)),
        ("", "LimitRange") => typed::<core_v1::LimitRange>(Rules {
            namespaced: ns,
            ..BASE
        }),
        ("apps", "Deployment") => typed::<apps_v1::Deployment>(apps::deployment_rules(ns)),
        ("apps", "ReplicaSet") => typed::<apps_v1::ReplicaSet>(apps::replica_set_rules(ns)),
        ("apps", "DaemonSet") => typed::<apps_v1::DaemonSet>(apps::daemon_set_rules(ns)),
        ("apps", "ControllerRevision") => {
            typed::<apps_v1::ControllerRevision>(apps::controller_revision_rules(ns))
        }
        ("coordination.k8s.io", "Lease") => typed::<coordination::v1::Lease>(core::lease_rules(ns)),
        ("discovery.k8s.io", "EndpointSlice") => {
            typed::<discovery::v1::EndpointSlice>(core::endpoint_slice_rules(ns))
        }
        ("events.k8s.io", "Event") => typed::<events_api::v1::Event>(core::events_v1_rules(ns)),
        ("certificates.k8s.io", "CertificateSigningRequest") => {
            typed::<certificates::v1::CertificateSigningRequest>(core::csr_rules())
        }
        ("policy", "PodDisruptionBudget") => {
            typed::<policy::v1::PodDisruptionBudget>(core::pdb_rules(ns))
        }
        ("rbac.authorization.k8s.io", "ClusterRole") => {
            typed::<rbac::v1::ClusterRole>(core::role_rules(false))
        }
        ("rbac.authorization.k8s.io", "Role") => typed::<rbac::v1::Role>(core::role_rules(true)),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            typed::<rbac::v1::ClusterRoleBinding>(core::binding_rules(false))
        }
        ("rbac.authorization.k8s.io", "RoleBinding") => {
            typed::<rbac::v1::RoleBinding>(core::binding_rules(true))
        }
        _ => Box::new(Passthrough),
    }
}

fn pods_rules(namespaced: bool) -> Rules {
    Rules {
        namespaced,
        status: StatusSplit::Status,
        default: pods::default_pod,
        prepare_create: pods::prepare_pod_for_create,
        prepare_status_update: pods::prepare_pod_for_status_update,
        validate: |pod| pods::validate_pod_spec(pod.get("spec").unwrap_or(&Value::Null), "spec"),
        validate_update: pods::validate_pod_update,
        ..BASE
    }
}

/// Sets `obj[key] = value` when `obj` is an object and `key` is absent or null.
pub fn set_default(obj: &mut Value, key: &str, value: Value) {
    if let Some(m) = obj.as_object_mut() {
        match m.get(key) {
            None | Some(Value::Null) => {
                m.insert(key.to_string(), value);
            }
            Some(_) => {}
        }
    }
}

/// Runs `f` on every item of the array `obj[key]`, if there is one.
pub fn with_array_items(obj: &mut Value, key: &str, mut f: impl FnMut(&mut Value)) {
    if let Some(items) = obj.get_mut(key).and_then(Value::as_array_mut) {
        for item in items {
            f(item);
        }
    }
}

/// Sets `new[key]` to `old[key]`, removing it from `new` when `old` has none.
pub fn keep_old(new: &mut Value, old: &Value, key: &str) {
    let Some(m) = new.as_object_mut() else {
        return;
    };
    match old.get(key) {
        Some(v) => {
            m.insert(key.to_string(), v.clone());
        }
        None => {
            m.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::apiserver::resources::{find, RESOURCES};

    fn strategy(group: &str, plural: &str) -> Box<dyn Strategy> {
        match find(group, "v1", plural) {
            Some(r) => strategy_for(r),
            None => panic!("no resource {group}/{plural}"),
        }
    }

    #[test]
    fn every_stored_kind_has_a_typed_strategy() {
        for r in RESOURCES.iter().filter(|r| r.stored) {
            let s = strategy_for(r);
            // A typed decode drops unknown fields; Passthrough would keep them.
            let d = s.decode(json!({"metadata": {"name": "x"}, "bogus": 1}));
            let Ok(d) = d else {
                panic!("{}: {d:?}", r.kind);
            };
            assert_eq!(d.unknown_fields, [".bogus"], "{}", r.kind);
            assert_eq!(d.object["kind"], json!(r.kind), "{}", r.kind);
        }
    }

    #[test]
    fn unknown_fields_are_listed_with_paths() {
        let s = strategy("", "pods");
        let cases: &[(Value, &[&str])] = &[
            (
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "labels": {"any": "x"}, "annotations": {"b": "c"}},
                       "spec": {"containers": [{"name": "c", "image": "i", "imagee": "typo"}], "nodeSelector": {"k": "v"}}}),
                &[".spec.containers[0].imagee"],
            ),
            (
                json!({"metadata": {"name": "a", "creationTimestamp": null}, "spec": {"containers": [], "foo": null}}),
                &[],
            ),
            (
                json!({"metadata": {"name": "a", "bad": 1}, "status": {"phase": "Running", "extra": {}}}),
                &[".metadata.bad", ".status.extra"],
            ),
        ];
        for (input, want) in cases {
            let got = s.decode(input.clone()).map(|d| d.unknown_fields);
            assert_eq!(
                got,
                Ok(want.iter().map(|s| s.to_string()).collect()),
                "{input}"
            );
        }
        // Free-form maps round-trip fully.
        let cm = strategy("", "configmaps")
            .decode(json!({"metadata": {"name": "c"}, "data": {"weird key": "v"}}));
        assert_eq!(cm.map(|d| d.unknown_fields), Ok(vec![]));
    }

    #[test]
    fn type_errors_name_the_field() {
        let s = strategy("", "pods");
        let cases: &[(Value, &str)] = &[
            (
                json!({"metadata": {"name": "a"}, "spec": {"containers": "nginx"}}),
                "Pod in version \"v1\" cannot be handled as a Pod: json: cannot decode field spec.containers: invalid type: string \"nginx\", expected a sequence",
            ),
            (
                json!({"metadata": {"name": "a"}, "spec": {"containers": [{"name": "a", "ports": [{"containerPort": "80"}]}]}}),
                "Pod in version \"v1\" cannot be handled as a Pod: json: cannot decode field spec.containers[0].ports[0].containerPort: invalid type: string \"80\", expected i32",
            ),
        ];
        for (input, want) in cases {
            let got = s.decode(input.clone()).map_err(|e| e.message);
            assert_eq!(got, Err(want.to_string()));
        }
        let dep = strategy("apps", "deployments").decode(json!({"spec": {"replicas": "3"}}));
        assert!(dep.is_err_and(|e| e
            .message
            .starts_with("Deployment in version \"v1\" cannot be handled as a Deployment")));
    }

    #[test]
    fn status_split() {
        let pods = strategy("", "pods");
        let mut pod = json!({"metadata": {"name": "a"}, "spec": {"containers": []}, "status": {"phase": "Running"}});
        pods.prepare_for_create(&mut pod);
        assert_eq!(
            pod["status"],
            json!({"phase": "Pending", "qosClass": "BestEffort"})
        );

        let old = json!({"metadata": {"name": "a", "labels": {"l": "1"}}, "spec": {"x": 1}, "status": {"phase": "Running"}});
        let mut new = json!({"metadata": {"name": "a", "labels": {"l": "2"}}, "spec": {"x": 2}, "status": {"phase": "Failed"}});
        pods.prepare_for_update(&mut new, &old);
        assert_eq!(new["status"], json!({"phase": "Running"}));
        assert_eq!(new["spec"], json!({"x": 2}));

        let mut new = json!({"metadata": {"name": "a", "labels": {"l": "2"}}, "spec": {"x": 2}, "status": {"phase": "Failed"}});
        pods.prepare_for_status_update(&mut new, &old);
        assert_eq!(new["spec"], json!({"x": 1}));
        assert_eq!(new["status"], json!({"phase": "Failed"}));
        assert_eq!(new["metadata"]["labels"], json!({"l": "2"}));

        let deploys = strategy("apps", "deployments");
        let mut new = json!({"metadata": {"name": "a", "labels": {"l": "2"}}, "spec": {"x": 2}, "status": {"replicas": 1}});
        deploys.prepare_for_status_update(&mut new, &old);
        assert_eq!(new["metadata"]["labels"], json!({"l": "1"}));
        assert_eq!(new["status"], json!({"replicas": 1}));
        let mut created = json!({"metadata": {"name": "a"}, "spec": {}, "status": {"replicas": 5}});
        deploys.prepare_for_create(&mut created);
        assert_eq!(created["status"], json!({}));
        assert!(deploys.tracks_generation());
        assert!(!pods.tracks_generation());

        // Nodes register with their status; ConfigMaps have none to split.
        let nodes = strategy("", "nodes");
        let mut node = json!({"metadata": {"name": "n"}, "status": {"capacity": {"cpu": "2"}}});
        nodes.prepare_for_create(&mut node);
        assert_eq!(node["status"]["capacity"], json!({"cpu": "2"}));
        let cms = strategy("", "configmaps");
        let mut cm = json!({"metadata": {"name": "c"}, "data": {"a": "2"}});
        cms.prepare_for_update(&mut cm, &json!({"data": {"a": "1"}}));
        assert_eq!(cm["data"]["a"], json!("2"));
    }

    #[test]
    fn pod_create_validation_includes_metadata() {
        let s = strategy("", "pods");
        let pod = json!({"metadata": {"name": "Bad_Name", "namespace": "default"}, "spec": {"containers": [{"name": "a"}]}});
        let got: Vec<String> = s
            .validate_create(&pod)
            .iter()
            .map(FieldError::line)
            .collect();
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].starts_with("metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of"));
        assert_eq!(got[1], "spec.containers[0].image: Required value");
    }
}

//! API discovery documents, built from the resource table (`resources.rs`).
//!
//! Two shapes are served, as kube-apiserver does:
//! - legacy discovery: `/api` (`APIVersions`), `/apis` (`APIGroupList`), `/apis/<g>` (`APIGroup`)
//!   and `/api/v1`, `/apis/<g>/<v>` (`APIResourceList`);
//! - aggregated discovery (`apidiscovery.k8s.io` `APIGroupDiscoveryList`) on `/api` and `/apis`,
//!   chosen by the `Accept` header ([`negotiate`]). kubectl ≥ 1.27 asks for it first and then
//!   needs no per-group-version request at all.
//!
//! Everything here is pure: the router calls these functions and writes the `Value` as JSON with
//! the content type of the negotiated [`DiscoveryFormat`].

use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::resources::{groups, ResourceInfo, Subresource, RESOURCES};

/// `Content-Type` of aggregated discovery, `apidiscovery.k8s.io/v2` (kubectl ≥ 1.30).
pub const CONTENT_TYPE_AGGREGATED_V2: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
/// `Content-Type` of aggregated discovery, `apidiscovery.k8s.io/v2beta1` (kubectl 1.27–1.29).
pub const CONTENT_TYPE_AGGREGATED_V2BETA1: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";
/// `Content-Type` of legacy discovery documents.
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// Which discovery document a client asked for on `/api` or `/apis`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryFormat {
    /// `APIGroupDiscoveryList`; `v2` false means `apidiscovery.k8s.io/v2beta1`.
    Aggregated {
        /// `apidiscovery.k8s.io/v2` when true, `v2beta1` when false.
        v2: bool,
    },
    /// `APIVersions` / `APIGroupList`, plain `application/json`.
    Legacy,
}

impl DiscoveryFormat {
    /// The exact `Content-Type` to answer with. client-go compares the media type parameters
    /// `g`, `v` and `as` of the response (in any order) to decide how to decode the body, so an
    /// aggregated body sent as plain `application/json` would be misread as legacy discovery.
    pub fn content_type(self) -> &'static str {
        match self {
            DiscoveryFormat::Aggregated { v2: true } => CONTENT_TYPE_AGGREGATED_V2,
            DiscoveryFormat::Aggregated { v2: false } => CONTENT_TYPE_AGGREGATED_V2BETA1,
            DiscoveryFormat::Legacy => CONTENT_TYPE_JSON,
        }
    }

    /// `apiVersion` of an aggregated document, `None` for legacy.
    pub fn api_version(self) -> Option<&'static str> {
        match self {
            DiscoveryFormat::Aggregated { v2: true } => Some("apidiscovery.k8s.io/v2"),
            DiscoveryFormat::Aggregated { v2: false } => Some("apidiscovery.k8s.io/v2beta1"),
            DiscoveryFormat::Legacy => None,
        }
    }
}

/// Picks the discovery format from an `Accept` header: the first media range (in the client's
/// order, as client-go lists them by preference) that we can serve. An aggregated range must
/// be `application/json` with `g=apidiscovery.k8s.io`, `as=APIGroupDiscoveryList` and
/// `v=v2|v2beta1` (parameters in any order); a range with `q=0` is refused. Anything else that
/// accepts JSON, and an empty or unparsable header, gives [`DiscoveryFormat::Legacy`].
pub fn negotiate(accept: &str) -> DiscoveryFormat {
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let (mut g, mut v, mut as_, mut q_zero) = (None, None, None, false);
        for p in parts {
            let Some((k, val)) = p.split_once('=') else {
                continue;
            };
            let val = val.trim().trim_matches('"');
            match k.trim().to_ascii_lowercase().as_str() {
                "g" => g = Some(val.to_string()),
                "v" => v = Some(val.to_string()),
                "as" => as_ = Some(val.to_string()),
                "q" => q_zero = val.parse::<f32>().map(|q| q <= 0.0).unwrap_or(false),
                _ => {}
            }
        }
        if q_zero {
            continue;
        }
        let json_ok = matches!(media.as_str(), "application/json" | "application/*" | "*/*");
        if !json_ok {
            continue;
        }
        match (g.as_deref(), v.as_deref(), as_.as_deref()) {
            (None, None, None) => return DiscoveryFormat::Legacy,
            (Some("apidiscovery.k8s.io"), Some("v2"), Some("APIGroupDiscoveryList")) => {
                return DiscoveryFormat::Aggregated { v2: true }
            }
            (Some("apidiscovery.k8s.io"), Some("v2beta1"), Some("APIGroupDiscoveryList")) => {
                return DiscoveryFormat::Aggregated { v2: false }
            }
            // Some other "as=" (Table, PartialObjectMetadata...) is not a discovery format.
            _ => continue,
        }
    }
    DiscoveryFormat::Legacy
}

/// `GET /api`: the core group's `APIVersions`.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    })
}

fn group_json(name: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{name}/{version}"), "version": version});
    json!({
        "name": name,
        "versions": [gv.clone()],
        "preferredVersion": gv,
    })
}

/// `GET /apis`: every named group (not the core group), as an `APIGroupList`.
pub fn group_list() -> Value {
    let groups: Vec<Value> = groups()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, v)| group_json(g, v))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/<name>`: that group's `APIGroup`, `None` (404) for an unknown or the core group.
pub fn group(name: &str) -> Option<Value> {
    let (g, v) = groups()
        .into_iter()
        .find(|(g, _)| !g.is_empty() && *g == name)?;
    let mut doc = group_json(g, v);
    let obj = doc.as_object_mut()?;
    obj.insert("kind".into(), json!("APIGroup"));
    obj.insert("apiVersion".into(), json!("v1"));
    Some(doc)
}

/// A stable storage version hash of a resource: base64 of the 8-byte FNV-1a hash of
/// `group/version/kind` (upstream takes 8 bytes of a SHA-256 of the same string; clients only
/// compare the value for equality).
pub fn storage_version_hash(r: &ResourceInfo) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("{}/{}/{}", r.group, r.version, r.kind).bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    base64::engine::general_purpose::STANDARD.encode(h.to_be_bytes())
}

fn strs(v: &[&str]) -> Value {
    Value::Array(v.iter().map(|s| json!(s)).collect())
}

/// The group and version of a subresource's kind (empty in the table means "the parent's").
fn sub_gv(r: &ResourceInfo, s: &Subresource) -> (&'static str, &'static str) {
    if s.kind_group.is_empty() && s.kind_version.is_empty() {
        (r.group, r.version)
    } else {
        (s.kind_group, s.kind_version)
    }
}

fn resources_of<'a>(
    group: &'a str,
    version: &'a str,
) -> impl Iterator<Item = &'static ResourceInfo> + 'a {
    RESOURCES
        .iter()
        .filter(move |r| r.group == group && r.version == version)
}

/// `GET /api/v1` or `/apis/<group>/<version>`: the `APIResourceList`, with one entry per
/// resource and one per subresource (`pods/status`). `group` is empty for the core group.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut out = Vec::new();
    for r in resources_of(group, version) {
        let mut e = Map::new();
        e.insert("name".into(), json!(r.plural));
        e.insert("singularName".into(), json!(r.singular));
        e.insert("namespaced".into(), json!(r.namespaced));
        e.insert("kind".into(), json!(r.kind));
        e.insert("verbs".into(), strs(r.verbs));
        if !r.short_names.is_empty() {
            e.insert("shortNames".into(), strs(r.short_names));
        }
        if !r.categories.is_empty() {
            e.insert("categories".into(), strs(r.categories));
        }
        if r.stored {
            e.insert("storageVersionHash".into(), json!(storage_version_hash(r)));
        }
        out.push(Value::Object(e));
        for s in r.subresources {
            let mut e = Map::new();
            e.insert("name".into(), json!(format!("{}/{}", r.plural, s.name)));
            e.insert("singularName".into(), json!(""));
            e.insert("namespaced".into(), json!(r.namespaced));
            let (g, v) = sub_gv(r, s);
            if (g, v) != (r.group, r.version) {
                e.insert("group".into(), json!(g));
                e.insert("version".into(), json!(v));
            }
            e.insert("kind".into(), json!(s.kind));
            e.insert("verbs".into(), strs(s.verbs));
            out.push(Value::Object(e));
        }
    }
    if out.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": out,
    }))
}

fn aggregated_resource(r: &ResourceInfo) -> Value {
    let mut e = Map::new();
    e.insert("resource".into(), json!(r.plural));
    e.insert(
        "responseKind".into(),
        json!({"group": r.group, "version": r.version, "kind": r.kind}),
    );
    e.insert(
        "scope".into(),
        json!(if r.namespaced {
            "Namespaced"
        } else {
            "Cluster"
        }),
    );
    e.insert("singularResource".into(), json!(r.singular));
    e.insert("verbs".into(), strs(r.verbs));
    if !r.short_names.is_empty() {
        e.insert("shortNames".into(), strs(r.short_names));
    }
    if !r.categories.is_empty() {
        e.insert("categories".into(), strs(r.categories));
    }
    if !r.subresources.is_empty() {
        let subs: Vec<Value> = r
            .subresources
            .iter()
            .map(|s| {
                let (g, v) = sub_gv(r, s);
                json!({
                    "subresource": s.name,
                    "responseKind": {"group": g, "version": v, "kind": s.kind},
                    "verbs": strs(s.verbs),
                })
            })
            .collect();
        e.insert("subresources".into(), Value::Array(subs));
    }
    Value::Object(e)
}

fn aggregated_group(name: &str, version: &str) -> Value {
    let resources: Vec<Value> = resources_of(name, version)
        .map(aggregated_resource)
        .collect();
    json!({
        "metadata": {"name": name, "creationTimestamp": null},
        "versions": [{"version": version, "resources": resources, "freshness": "Current"}],
    })
}

fn aggregated_list(items: Vec<Value>, api_version: &str) -> Value {
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": api_version,
        "metadata": {},
        "items": items,
    })
}

/// `GET /api` with aggregated discovery: one item (the core group, name "").
pub fn aggregated_core() -> Value {
    aggregated_core_as(true)
}

/// `GET /apis` with aggregated discovery: one item per named group, in table order.
pub fn aggregated_groups() -> Value {
    aggregated_groups_as(true)
}

/// [`aggregated_core`] with the `apiVersion` of `v2` (true) or `v2beta1` (false); the two
/// versions have the same fields.
pub fn aggregated_core_as(v2: bool) -> Value {
    let api_version = DiscoveryFormat::Aggregated { v2 }
        .api_version()
        .unwrap_or("apidiscovery.k8s.io/v2");
    aggregated_list(vec![aggregated_group("", "v1")], api_version)
}

/// [`aggregated_groups`] with the `apiVersion` of `v2` (true) or `v2beta1` (false).
pub fn aggregated_groups_as(v2: bool) -> Value {
    let api_version = DiscoveryFormat::Aggregated { v2 }
        .api_version()
        .unwrap_or("apidiscovery.k8s.io/v2");
    let items = groups()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, v)| aggregated_group(g, v))
        .collect();
    aggregated_list(items, api_version)
}

/// Convenience for the router: the body and `Content-Type` of a discovery `path`
/// (`/api`, `/apis`, `/api/v1`, `/apis/<g>`, `/apis/<g>/<v>`, trailing slash allowed) for the
/// request's `Accept` header. `None` means 404.
pub fn respond(path: &str, accept: &str, server_address: &str) -> Option<(&'static str, Value)> {
    let path = path.trim_end_matches('/');
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let format = negotiate(accept);
    match segs.as_slice() {
        ["api"] => Some(match format {
            DiscoveryFormat::Aggregated { v2 } => (format.content_type(), aggregated_core_as(v2)),
            DiscoveryFormat::Legacy => (CONTENT_TYPE_JSON, core_versions(server_address)),
        }),
        ["apis"] => Some(match format {
            DiscoveryFormat::Aggregated { v2 } => (format.content_type(), aggregated_groups_as(v2)),
            DiscoveryFormat::Legacy => (CONTENT_TYPE_JSON, group_list()),
        }),
        ["api", v] => resource_list("", v).map(|d| (CONTENT_TYPE_JSON, d)),
        ["apis", g] => group(g).map(|d| (CONTENT_TYPE_JSON, d)),
        ["apis", g, v] => resource_list(g, v).map(|d| (CONTENT_TYPE_JSON, d)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECTL_ACCEPT: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
    const KUBECTL_127_ACCEPT: &str = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";

    #[test]
    fn negotiation() {
        assert_eq!(
            negotiate(KUBECTL_ACCEPT),
            DiscoveryFormat::Aggregated { v2: true }
        );
        assert_eq!(
            negotiate(KUBECTL_127_ACCEPT),
            DiscoveryFormat::Aggregated { v2: false }
        );
        // Parameter order does not matter; spaces are tolerated.
        assert_eq!(
            negotiate("application/json; as=APIGroupDiscoveryList; v=v2; g=apidiscovery.k8s.io"),
            DiscoveryFormat::Aggregated { v2: true }
        );
        assert_eq!(negotiate("application/json"), DiscoveryFormat::Legacy);
        assert_eq!(negotiate(""), DiscoveryFormat::Legacy);
        assert_eq!(negotiate("*/*"), DiscoveryFormat::Legacy);
        assert_eq!(
            negotiate("application/json;g=apidiscovery.k8s.io;v=v3;as=APIGroupDiscoveryList"),
            DiscoveryFormat::Legacy
        );
        assert_eq!(
            negotiate("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList;q=0,application/json"),
            DiscoveryFormat::Legacy
        );
        assert_eq!(
            DiscoveryFormat::Aggregated { v2: true }.content_type(),
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
        );
        assert_eq!(
            DiscoveryFormat::Aggregated { v2: false }.content_type(),
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
        );
    }

    #[test]
    fn legacy_documents() {
        let api = core_versions("10.0.0.1:6443");
        assert_eq!(api["kind"], "APIVersions");
        assert_eq!(api["versions"], json!(["v1"]));
        assert_eq!(
            api["serverAddressByClientCIDRs"][0]["serverAddress"],
            "10.0.0.1:6443"
        );

        let list = group_list();
        assert_eq!(list["kind"], "APIGroupList");
        let groups = list["groups"].as_array().expect("groups");
        assert!(groups.iter().all(|g| g["name"] != ""));
        let apps = groups.iter().find(|g| g["name"] == "apps").expect("apps");
        assert_eq!(apps["preferredVersion"]["groupVersion"], "apps/v1");
        assert_eq!(apps["versions"][0]["version"], "v1");

        let g = group("apps").expect("apps group");
        assert_eq!(g["kind"], "APIGroup");
        assert!(group("").is_none());
        assert!(group("nope.example.com").is_none());
    }

    #[test]
    fn resource_lists() {
        let core = resource_list("", "v1").expect("core");
        assert_eq!(core["groupVersion"], "v1");
        let res = core["resources"].as_array().expect("resources");
        let pods = res.iter().find(|r| r["name"] == "pods").expect("pods");
        assert_eq!(pods["kind"], "Pod");
        assert_eq!(pods["namespaced"], true);
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert_eq!(pods["categories"], json!(["all"]));
        assert!(pods["storageVersionHash"]
            .as_str()
            .is_some_and(|h| h.len() == 12));
        let status = res
            .iter()
            .find(|r| r["name"] == "pods/status")
            .expect("status");
        assert_eq!(status["kind"], "Pod");
        assert!(status.get("group").is_none());
        let eviction = res
            .iter()
            .find(|r| r["name"] == "pods/eviction")
            .expect("eviction");
        assert_eq!(eviction["group"], "policy");
        assert_eq!(eviction["version"], "v1");

        let apps = resource_list("apps", "v1").expect("apps");
        let scale = apps["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .find(|r| r["name"] == "deployments/scale")
            .expect("scale");
        assert_eq!(scale["group"], "autoscaling");
        assert_eq!(scale["kind"], "Scale");
        assert!(resource_list("apps", "v2").is_none());

        let authn = resource_list("authentication.k8s.io", "v1").expect("authn");
        assert!(authn["resources"][0].get("storageVersionHash").is_none());
    }

    #[test]
    fn storage_hash_is_stable_and_distinct() {
        let pods = crate::apiserver::resources::find("", "v1", "pods").expect("pods");
        let svc = crate::apiserver::resources::find("", "v1", "services").expect("svc");
        assert_eq!(storage_version_hash(pods), storage_version_hash(pods));
        assert_ne!(storage_version_hash(pods), storage_version_hash(svc));
    }

    #[test]
    fn aggregated_documents() {
        let core = aggregated_core();
        assert_eq!(core["kind"], "APIGroupDiscoveryList");
        assert_eq!(core["apiVersion"], "apidiscovery.k8s.io/v2");
        let items = core["items"].as_array().expect("items");
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["metadata"]["name"], "");
        let v1 = &items[0]["versions"][0];
        assert_eq!(v1["version"], "v1");
        assert_eq!(v1["freshness"], "Current");
        let pods = v1["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .find(|r| r["resource"] == "pods")
            .expect("pods");
        assert_eq!(pods["scope"], "Namespaced");
        assert_eq!(
            pods["responseKind"],
            json!({"group": "", "version": "v1", "kind": "Pod"})
        );
        let evict = pods["subresources"]
            .as_array()
            .expect("subs")
            .iter()
            .find(|s| s["subresource"] == "eviction")
            .expect("eviction");
        assert_eq!(evict["responseKind"]["group"], "policy");

        let groups = aggregated_groups();
        let names: Vec<&str> = groups["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|i| i["metadata"]["name"].as_str())
            .collect();
        assert!(names.contains(&"apps"));
        assert!(!names.contains(&""));
        let nodes_scope = &core["items"][0]["versions"][0]["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .find(|r| r["resource"] == "nodes")
            .expect("nodes")["scope"];
        assert_eq!(nodes_scope, "Cluster");
        assert_eq!(
            aggregated_groups_as(false)["apiVersion"],
            "apidiscovery.k8s.io/v2beta1"
        );
    }

    #[test]
    fn respond_routes() {
        let (ct, body) = respond("/api", KUBECTL_ACCEPT, "x:6443").expect("api");
        assert_eq!(ct, CONTENT_TYPE_AGGREGATED_V2);
        assert_eq!(body["kind"], "APIGroupDiscoveryList");
        let (ct, body) = respond("/apis/", "application/json", "x").expect("apis");
        assert_eq!(ct, CONTENT_TYPE_JSON);
        assert_eq!(body["kind"], "APIGroupList");
        let (_, body) = respond("/apis/apps/v1", KUBECTL_ACCEPT, "x").expect("apps");
        assert_eq!(body["kind"], "APIResourceList");
        assert!(respond("/apis/nope/v1", "", "x").is_none());
        assert!(respond("/api/v2", "", "x").is_none());
    }
}

//! Parsing a resource request: the URL into group/version/namespace/resource/name/subresource,
//! the query string, and content negotiation.

use std::collections::HashMap;

use axum::http::{HeaderMap, Method};
use bytes::Bytes;
use serde_json::Value;

use crate::apiserver::protobuf;
use crate::apiserver::resources::{self, ResourceInfo};
use crate::apiserver::status::{ApiError, ApiResult};
use crate::registry::generic::{DeleteOptions, FieldValidation, ListParams, WriteOptions};

/// A parsed resource URL.
#[derive(Debug, Clone)]
pub struct Target {
    /// The resource.
    pub res: &'static ResourceInfo,
    /// Namespace from the URL.
    pub namespace: Option<String>,
    /// Object name.
    pub name: Option<String>,
    /// Subresource (`status`, `scale`, …).
    pub subresource: Option<String>,
}

/// What a URL under `/api` or `/apis` names.
#[derive(Debug, Clone)]
pub enum Route {
    /// `/api/v1` or `/apis/<g>/<v>`: the resource list.
    GroupVersion {
        /// Group.
        group: String,
        /// Version.
        version: String,
    },
    /// `/apis/<g>`: the group.
    Group(String),
    /// A resource request.
    Resource(Target),
}

/// Parses `/api/v1/...` and `/apis/<g>/<v>/...`.
pub fn parse_path(path: &str) -> ApiResult<Route> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g] => return Ok(Route::Group((*g).to_string())),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::path_not_found()),
    };
    if rest.is_empty() {
        return Ok(Route::GroupVersion {
            group: group.to_string(),
            version: version.to_string(),
        });
    }
    // `/namespaces/<ns>/<resource>/...` unless it is the namespace's own subresource.
    let (namespace, rest) = match rest {
        ["namespaces", ns, r, tail @ ..] if !matches!(*r, "status" | "finalize") => {
            (Some((*ns).to_string()), {
                let mut v = vec![*r];
                v.extend_from_slice(tail);
                v
            })
        }
        other => (None, other.to_vec()),
    };
    let plural = rest[0];
    let res = resources::find(group, version, plural).ok_or_else(ApiError::path_not_found)?;
    let name = rest.get(1).map(|s| (*s).to_string());
    let subresource = rest.get(2).map(|s| (*s).to_string());
    if rest.len() > 3 {
        return Err(ApiError::path_not_found());
    }
    if let Some(sub) = &subresource {
        if res.subresource(sub).is_none() {
            return Err(ApiError::path_not_found());
        }
    }
    if namespace.is_some() && !res.namespaced {
        return Err(ApiError::path_not_found());
    }
    if res.namespaced && namespace.is_none() && name.is_some() {
        return Err(ApiError::path_not_found());
    }
    Ok(Route::Resource(Target {
        res,
        namespace,
        name,
        subresource,
    }))
}

/// Query parameters, single-valued (the ones the API uses).
#[derive(Debug, Clone, Default)]
pub struct Query(pub HashMap<String, String>);

impl Query {
    /// Parses a raw query string.
    pub fn parse(raw: Option<&str>) -> ApiResult<Self> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
        Ok(Self(pairs.into_iter().collect()))
    }

    /// A parameter, empty treated as absent.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    /// A boolean parameter (`true`, `1`).
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }

    /// An integer parameter; malformed gives 400.
    pub fn int(&self, key: &str) -> ApiResult<Option<i64>> {
        self.get(key)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| ApiError::bad_request(format!("invalid value for {key}: {v:?}")))
            })
            .transpose()
    }

    /// List parameters.
    pub fn list_params(&self) -> ApiResult<ListParams> {
        Ok(ListParams {
            label_selector: self.get("labelSelector").map(str::to_string),
            field_selector: self.get("fieldSelector").map(str::to_string),
            limit: self.int("limit")?.and_then(|l| usize::try_from(l).ok()),
            continue_token: self.get("continue").map(str::to_string),
        })
    }

    /// Write options; the field manager defaults from the user agent, as upstream.
    pub fn write_options(&self, headers: &HeaderMap) -> ApiResult<WriteOptions> {
        let field_validation = match self.get("fieldValidation") {
            None | Some("Warn") => FieldValidation::Warn,
            Some("Strict") => FieldValidation::Strict,
            Some("Ignore") => FieldValidation::Ignore,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                "fieldValidation must be one of \"Ignore\", \"Warn\", or \"Strict\", got {other:?}"
            )))
            }
        };
        let dry_run = match self.get("dryRun") {
            None => false,
            Some("All") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "Invalid dry run value {other:?}: supported values: \"All\""
                )))
            }
        };
        let field_manager = match self.get("fieldManager") {
            Some(m) => m.to_string(),
            None => headers
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|ua| {
                    ua.split('/')
                        .next()
                        .unwrap_or(ua)
                        .chars()
                        .take(128)
                        .collect()
                })
                .unwrap_or_else(|| "unknown".to_string()),
        };
        Ok(WriteOptions {
            dry_run,
            field_validation,
            field_manager,
        })
    }

    /// Delete options from the query (the body may add more).
    pub fn delete_options(&self) -> ApiResult<DeleteOptions> {
        Ok(DeleteOptions {
            grace_period_seconds: self.int("gracePeriodSeconds")?,
            propagation_policy: self.get("propagationPolicy").map(str::to_string),
            dry_run: self.get("dryRun") == Some("All"),
            ..Default::default()
        })
    }
}

/// Merges a `DeleteOptions` body into options from the query (body wins, as upstream).
pub fn merge_delete_body(mut opts: DeleteOptions, body: &Value) -> DeleteOptions {
    if let Some(g) = body.get("gracePeriodSeconds").and_then(Value::as_i64) {
        opts.grace_period_seconds = Some(g);
    }
    if let Some(p) = body.get("propagationPolicy").and_then(Value::as_str) {
        opts.propagation_policy = Some(p.to_string());
    }
    if body.get("orphanDependents").and_then(Value::as_bool) == Some(true)
        && opts.propagation_policy.is_none()
    {
        opts.propagation_policy = Some("Orphan".to_string());
    }
    if let Some(uid) = body.pointer("/preconditions/uid").and_then(Value::as_str) {
        opts.precondition_uid = Some(uid.to_string());
    }
    if let Some(rv) = body
        .pointer("/preconditions/resourceVersion")
        .and_then(Value::as_str)
    {
        opts.precondition_resource_version = Some(rv.to_string());
    }
    if body
        .get("dryRun")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|v| v == "All"))
    {
        opts.dry_run = true;
    }
    opts
}

/// The body's media type, without parameters.
pub fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_ascii_lowercase())
        .unwrap_or_else(|| "application/json".to_string())
}

/// Parses a JSON, YAML or Kubernetes protobuf object body into JSON; errors are 400s with the
/// parser's words.
pub fn parse_body(content_type: &str, body: &Bytes) -> ApiResult<Value> {
    if body.is_empty() {
        return Ok(Value::Null);
    }
    match content_type {
        "application/json"
        | "application/merge-patch+json"
        | "application/strategic-merge-patch+json"
        | "application/json-patch+json"
        | ""
        | "*/*" => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding JSON body: {e}"))),
        "application/yaml"
        | "application/apply-patch+yaml"
        | "application/x-yaml"
        | "text/yaml" => serde_yaml::from_slice::<Value>(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML body: {e}"))),
        "application/vnd.kubernetes.protobuf" => {
            let (api_version, kind, mut obj) =
                protobuf::decode_request(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
            if let Value::Object(m) = &mut obj {
                m.insert("apiVersion".into(), Value::String(api_version));
                m.insert("kind".into(), Value::String(kind));
            }
            Ok(obj)
        }
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

/// `includeObject` of a Table request.
pub fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

/// Whether a method is a read.
pub fn is_read(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(path: &str) -> Target {
        match parse_path(path).expect(path) {
            Route::Resource(t) => t,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn paths() {
        let t = target("/api/v1/namespaces/default/pods/web/status");
        assert_eq!(
            (
                t.res.plural,
                t.namespace.as_deref(),
                t.name.as_deref(),
                t.subresource.as_deref()
            ),
            ("pods", Some("default"), Some("web"), Some("status"))
        );
        let t = target("/api/v1/namespaces/kube-system");
        assert_eq!(
            (t.res.plural, t.name.as_deref()),
            ("namespaces", Some("kube-system"))
        );
        let t = target("/api/v1/namespaces/x/finalize");
        assert_eq!(
            (t.res.plural, t.name.as_deref(), t.subresource.as_deref()),
            ("namespaces", Some("x"), Some("finalize"))
        );
        let t = target("/apis/apps/v1/deployments");
        assert_eq!((t.res.plural, t.namespace), ("deployments", None));
        assert!(matches!(
            parse_path("/apis/apps/v1").expect("gv"),
            Route::GroupVersion { .. }
        ));
        assert!(matches!(
            parse_path("/apis/apps").expect("g"),
            Route::Group(_)
        ));
        assert!(parse_path("/api/v1/namespaces/default/nodes").is_err());
        assert!(parse_path("/api/v1/pods/web").is_err());
        assert!(parse_path("/api/v1/namespaces/d/pods/web/bogus").is_err());
    }

    #[test]
    fn table_negotiation_looks_at_the_preferred_type() {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::ACCEPT,
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
                .parse()
                .expect("hv"),
        );
        assert!(wants_table(&h));
        h.insert(
            http::header::ACCEPT,
            "application/json".parse().expect("hv"),
        );
        assert!(!wants_table(&h));
    }
}

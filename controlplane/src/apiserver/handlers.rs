//! The REST front: routes `/api`, `/apis`, `/openapi` and every resource URL to the registry.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::apiserver::auth::{Authenticator, UserInfo};
use crate::apiserver::request::{self, Query, Route, Target};
use crate::apiserver::resources::ResourceInfo;
use crate::apiserver::serviceaccount_token::{ServiceAccountAuthenticator, ServiceAccountTokens};
use crate::apiserver::status::{ApiError, ApiResult};
use crate::apiserver::watch::{self, Render, WatchBody};
use crate::apiserver::{discovery, openapi, patch, subresources, table};
use crate::registry::generic::{Filter, ListParams, Registry, RegistryOptions};
use crate::storage::cacher::{Cacher, CacherConfig};
use crate::storage::Store;

/// Request bodies above this get 413, as kube-apiserver's 3 MiB limit.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// Settings of the REST layer.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// Registry settings (service ranges).
    pub registry: RegistryOptions,
    /// Address clients should use, for `/api`'s serverAddressByClientCIDRs.
    pub server_address: String,
    /// The address and port the `kubernetes` Service's endpoints point at; `None` skips it.
    pub kubernetes_endpoint: Option<(std::net::IpAddr, u16)>,
    /// Events the watch cache keeps (one cache for all resources); a watch from further back
    /// gets 410 Gone, as upstream's `--default-watch-cache-size` window.
    pub watch_cache_size: usize,
    /// The server's authenticator chain (client certificates, token file); [`ApiState::new`]
    /// adds service-account tokens to it. TokenReview authenticates with it.
    pub authenticator: Authenticator,
    /// Service-account token keys and settings; `None` turns TokenRequest and service-account
    /// token authentication off.
    pub service_account_tokens: Option<Arc<ServiceAccountTokens>>,
    /// How to reach kubelets for `pods/log`, `exec`, `attach` and `portforward`; `None`
    /// connects without a client certificate.
    pub kubelet_client: Option<crate::apiserver::node_proxy::KubeletClientConfig>,
}

impl Default for ApiOptions {
    fn default() -> Self {
        Self {
            registry: RegistryOptions::default(),
            server_address: "127.0.0.1:6443".to_string(),
            kubernetes_endpoint: None,
            watch_cache_size: CacherConfig::default().event_buffer,
            authenticator: Authenticator::default(),
            service_account_tokens: None,
            kubelet_client: None,
        }
    }
}

/// Shared state of the REST layer.
pub struct ApiState {
    /// The registry.
    pub registry: Registry,
    /// Options.
    pub opts: ApiOptions,
    /// The full authenticator chain (with service-account tokens): serve with it.
    pub authenticator: Authenticator,
}

impl ApiState {
    /// Wraps `store` in a watch cache, builds the registry and creates the built-in objects
    /// (`default`, `kube-system`, `kube-public`, `kube-node-lease`, the `kubernetes` Service).
    pub async fn new(store: Arc<dyn Store>, opts: ApiOptions) -> crate::Result<Self> {
        let config = CacherConfig {
            event_buffer: opts.watch_cache_size.max(1),
            ..CacherConfig::default()
        };
        let cache: Arc<dyn Store> = Arc::new(Cacher::new(store, "/registry/", config).await?);
        let authenticator = match &opts.service_account_tokens {
            Some(tokens) => opts
                .authenticator
                .clone()
                .with_token_authenticator(Arc::new(ServiceAccountAuthenticator::new(
                    tokens.clone(),
                    cache.clone(),
                ))),
            None => opts.authenticator.clone(),
        };
        let state = Self {
            registry: Registry::new(cache, opts.registry.clone()),
            opts,
            authenticator,
        };
        crate::apiserver::bootstrap::run(&state).await?;
        Ok(state)
    }
}

/// The router of everything under `/api`, `/apis` and `/openapi`.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/api", get(api_root))
        .route("/apis", get(apis_root))
        .route("/openapi/v2", get(openapi_v2))
        .route("/openapi/v3", get(openapi_v3_index))
        .route("/openapi/v3/{*path}", get(openapi_v3))
        .fallback(resource_entry)
        .with_state(state)
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn with_warnings(mut resp: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let text = format!("299 - {}", serde_json::Value::String(w.clone()));
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append("Warning", v);
        }
    }
    resp
}

fn accept(headers: &HeaderMap) -> String {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

fn discovery_response(
    headers: &HeaderMap,
    aggregated: impl FnOnce() -> Value,
    legacy: impl FnOnce() -> Value,
) -> Response {
    match discovery::negotiate(&accept(headers)) {
        discovery::DiscoveryFormat::Aggregated { .. } => {
            let fmt = discovery::negotiate(&accept(headers));
            let mut resp = json_response(StatusCode::OK, &aggregated());
            if let Ok(v) = HeaderValue::from_str(fmt.content_type()) {
                resp.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            resp.headers_mut()
                .insert(header::VARY, HeaderValue::from_static("Accept"));
            resp
        }
        discovery::DiscoveryFormat::Legacy => json_response(StatusCode::OK, &legacy()),
    }
}

async fn api_root(State(st): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    discovery_response(&headers, discovery::aggregated_core, || {
        discovery::core_versions(&st.opts.server_address)
    })
}

async fn apis_root(headers: HeaderMap) -> Response {
    discovery_response(
        &headers,
        discovery::aggregated_groups,
        discovery::group_list,
    )
}

async fn openapi_v2() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        openapi::v2(),
    )
        .into_response()
}

async fn openapi_v3_index() -> Response {
    json_response(StatusCode::OK, &openapi::v3_index())
}

async fn openapi_v3(axum::extract::Path(path): axum::extract::Path<String>) -> Response {
    match openapi::v3_group_version(&path) {
        Some(doc) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            doc,
        )
            .into_response(),
        None => ApiError::path_not_found().into_response(),
    }
}

async fn resource_entry(State(st): State<Arc<ApiState>>, req: Request) -> Response {
    match resource(st, req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

/// Everything a handler needs about one request.
pub struct Call {
    /// Method.
    pub method: Method,
    /// Target.
    pub target: Target,
    /// Query.
    pub query: Query,
    /// Headers.
    pub headers: HeaderMap,
    /// Body bytes.
    pub body: Bytes,
    /// The authenticated user, when the auth layer ran.
    pub user: Option<UserInfo>,
    /// The request URI (multi-valued query parameters such as exec's `command`).
    pub uri: axum::http::Uri,
    /// The request's extensions (hyper's pending upgrade for exec, attach, port-forward).
    pub extensions: axum::http::Extensions,
}

impl Call {
    /// The body parsed as JSON or YAML by its content type.
    pub fn body_value(&self) -> ApiResult<Value> {
        request::parse_body(&request::content_type(&self.headers), &self.body)
    }

    /// DeleteOptions from the query and, when present, the body (the body wins).
    pub fn delete_options(&self) -> ApiResult<crate::registry::generic::DeleteOptions> {
        let opts = self.query.delete_options()?;
        let body = self.body_value()?;
        Ok(if body.is_object() {
            request::merge_delete_body(opts, &body)
        } else {
            opts
        })
    }

    /// The namespace as an option of `&str`.
    pub fn ns(&self) -> Option<&str> {
        self.target.namespace.as_deref()
    }

    /// The object name; 405 when the URL names none.
    pub fn name(&self) -> ApiResult<&str> {
        self.target
            .name
            .as_deref()
            .ok_or_else(|| ApiError::method_not_allowed(format!("{} requires a name", self.method)))
    }
}

async fn resource(st: Arc<ApiState>, req: Request) -> ApiResult<Response> {
    let (parts, body) = req.into_parts();
    let route = request::parse_path(parts.uri.path())?;
    let target = match route {
        Route::GroupVersion { group, version } => {
            return discovery::resource_list(&group, &version)
                .map(|v| json_response(StatusCode::OK, &v))
                .ok_or_else(ApiError::path_not_found);
        }
        Route::Group(g) => {
            return discovery::group(&g)
                .map(|v| json_response(StatusCode::OK, &v))
                .ok_or_else(ApiError::path_not_found);
        }
        Route::Resource(t) => t,
    };
    let body = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::too_large(MAX_BODY_BYTES))?;
    let call = Call {
        method: parts.method.clone(),
        query: Query::parse(parts.uri.query())?,
        user: parts.extensions.get::<UserInfo>().cloned(),
        uri: parts.uri,
        extensions: parts.extensions,
        headers: parts.headers,
        body,
        target,
    };
    if !call.target.res.stored {
        return subresources::review(&st, &call).await;
    }
    if let Some(sub) = call.target.subresource.clone() {
        return subresources::handle(&st, &call, &sub).await;
    }
    let res = call.target.res;
    match (call.method.clone(), call.target.name.is_some()) {
        (Method::GET, false) if call.query.flag("watch") => watch_list(&st, &call).await,
        (Method::GET, false) => list(&st, &call).await,
        (Method::GET, true) => {
            let obj = st.registry.get(res, call.ns(), call.name()?).await?;
            Ok(object_response(&call, StatusCode::OK, obj))
        }
        (Method::POST, false) => create(&st, &call).await,
        (Method::PUT, true) => update(&st, &call, None).await,
        (Method::PATCH, true) => patch_object(&st, &call, None).await,
        (Method::DELETE, true) => delete(&st, &call).await,
        (Method::DELETE, false) => delete_collection(&st, &call).await,
        (m, _) => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource: {m}"
        ))),
    }
}

/// An object, or a one-row Table when the client asked for one.
pub fn object_response(call: &Call, code: StatusCode, obj: Value) -> Response {
    if request::wants_table(&call.headers) {
        let t = table::to_table(
            call.target.res,
            &[obj],
            include_object(&call.query),
            json!({}),
            jiff::Timestamp::now(),
        );
        return json_response(code, &t);
    }
    json_response(code, &obj)
}

fn include_object(q: &Query) -> table::IncludeObject {
    match q.get("includeObject") {
        Some("None") => table::IncludeObject::None,
        Some("Object") => table::IncludeObject::Object,
        _ => table::IncludeObject::Metadata,
    }
}

async fn list(st: &ApiState, call: &Call) -> ApiResult<Response> {
    let res = call.target.res;
    let q = &call.query;
    if !request::wants_table(&call.headers)
        && q.get("labelSelector").is_none()
        && q.get("fieldSelector").is_none()
    {
        let limit = q.int("limit")?.and_then(|l| usize::try_from(l).ok());
        if let Some((items, rv, token)) = st
            .registry
            .list_raw(res, call.ns(), limit, q.get("continue"))
            .await?
        {
            return Ok(raw_list_response(res, &items, rv, token.as_deref()));
        }
    }
    let page = st
        .registry
        .list(res, call.ns(), &call.query.list_params()?)
        .await?;
    let mut meta = json!({"resourceVersion": page.resource_version.to_string()});
    if let Some(c) = &page.continue_token {
        meta["continue"] = json!(c);
    }
    if request::wants_table(&call.headers) {
        let t = table::to_table(
            res,
            &page.items,
            include_object(&call.query),
            meta,
            jiff::Timestamp::now(),
        );
        return Ok(json_response(StatusCode::OK, &t));
    }
    let body = json!({
        "kind": format!("{}List", res.kind),
        "apiVersion": res.api_version(),
        "metadata": meta,
        "items": page.items,
    });
    Ok(json_response(StatusCode::OK, &body))
}

/// A list body written from the stored bytes: each item is the stored JSON with its
/// `resourceVersion` spliced into `metadata`, so a 10,000-object list is copied, not parsed
/// and re-serialized.
fn raw_list_response(
    res: &ResourceInfo,
    items: &[crate::storage::KeyValue],
    rv: i64,
    token: Option<&str>,
) -> Response {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(t) = token {
        meta["continue"] = json!(t);
    }
    let total: usize = items.iter().map(|kv| kv.value.len() + 40).sum();
    let mut body = Vec::with_capacity(total + 256);
    body.extend_from_slice(
        format!(
            "{{\"kind\":\"{}List\",\"apiVersion\":\"{}\",\"metadata\":{meta},\"items\":[",
            res.kind,
            res.api_version()
        )
        .as_bytes(),
    );
    for (i, kv) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        splice_resource_version(&mut body, res, kv);
    }
    body.extend_from_slice(b"]}");
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// Appends `kv`'s stored object with `"resourceVersion"` added to its metadata. Stored objects
/// are serde_json output with sorted keys, so `"metadata":{` first appears at the top level
/// (only `apiVersion` and `kind` strings precede it); anything else takes the decoding path.
fn splice_resource_version(out: &mut Vec<u8>, res: &ResourceInfo, kv: &crate::storage::KeyValue) {
    const NEEDLE: &[u8] = b"\"metadata\":{";
    let rv = format!("\"resourceVersion\":\"{}\"", kv.mod_revision);
    let at = kv.value.windows(NEEDLE.len()).position(|w| w == NEEDLE);
    let stamped = kv.value.starts_with(b"{\"apiVersion\":");
    match at {
        Some(pos) if stamped && pos < 128 => {
            let split = pos + NEEDLE.len();
            out.extend_from_slice(&kv.value[..split]);
            out.extend_from_slice(rv.as_bytes());
            if kv.value.get(split) != Some(&b'}') {
                out.push(b',');
            }
            out.extend_from_slice(&kv.value[split..]);
        }
        _ => match Registry::decode(res, kv) {
            Ok(obj) => out.extend_from_slice(obj.to_string().as_bytes()),
            Err(e) => out.extend_from_slice(e.to_status().to_string().as_bytes()),
        },
    }
}

async fn watch_list(st: &ApiState, call: &Call) -> ApiResult<Response> {
    let res = call.target.res;
    let q = &call.query;
    let filter = Filter::new(res, q.get("labelSelector"), q.get("fieldSelector"))?;
    let render = if request::wants_table(&call.headers) {
        Render::Table
    } else {
        Render::Object
    };
    let timeout = q
        .int("timeoutSeconds")?
        .filter(|t| *t > 0)
        .map(|t| Duration::from_secs(t as u64))
        // Upstream picks 30–60 min at random; a fixed hour keeps clients reconnecting rarely.
        .unwrap_or(Duration::from_secs(3600));
    let send_initial = q.flag("sendInitialEvents");
    let rv = q.get("resourceVersion");
    let mut initial = VecDeque::new();
    let from = match rv {
        // "Get state and start at most recent" (unset) and "start at any" ("0") both begin
        // with the current objects as ADDED events.
        None | Some("0") => {
            let page = st
                .registry
                .list(
                    res,
                    call.ns(),
                    &ListParams {
                        label_selector: q.get("labelSelector").map(str::to_string),
                        field_selector: q.get("fieldSelector").map(str::to_string),
                        ..Default::default()
                    },
                )
                .await?;
            for obj in page.items {
                let obj = match render {
                    Render::Object => obj,
                    Render::Table => table::to_table(
                        res,
                        &[obj],
                        table::IncludeObject::Metadata,
                        json!({}),
                        jiff::Timestamp::now(),
                    ),
                };
                initial.push_back(watch::event_line("ADDED", &obj));
            }
            page.resource_version
        }
        Some(v) => v
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request(format!("invalid resource version: {v:?}")))?,
    };
    if send_initial && q.flag("allowWatchBookmarks") {
        initial.push_back(watch::event_line(
            "BOOKMARK",
            &watch::bookmark(res, from, true),
        ));
    }
    let prefix = Registry::prefix(res, call.ns());
    let events = match st.registry.store().watch(&prefix, from).await {
        Ok(s) => Some(s),
        Err(e) => {
            initial.push_back(watch::error_line(&ApiError::from_storage(res, "", &e)));
            None
        }
    };
    let body = WatchBody {
        initial,
        events,
        filter,
        res,
        render,
        bookmarks: q.flag("allowWatchBookmarks"),
        last_rv: from,
        timeout,
    };
    let resp = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(Body::from_stream(watch::stream(body)))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(resp)
}

async fn create(st: &ApiState, call: &Call) -> ApiResult<Response> {
    let res = call.target.res;
    let opts = call.query.write_options(&call.headers)?;
    let (obj, warnings) =
        st.registry
            .decode_input(res, call.body_value()?, opts.field_validation)?;
    let created = st.registry.create(res, call.ns(), obj, &opts).await?;
    Ok(with_warnings(
        object_response(call, StatusCode::CREATED, created),
        &warnings,
    ))
}

/// PUT of an object or its status.
pub async fn update(st: &ApiState, call: &Call, subresource: Option<&str>) -> ApiResult<Response> {
    let res = call.target.res;
    let opts = call.query.write_options(&call.headers)?;
    let (obj, warnings) =
        st.registry
            .decode_input(res, call.body_value()?, opts.field_validation)?;
    let existed = st.registry.get(res, call.ns(), call.name()?).await.is_ok();
    let updated = st
        .registry
        .update(res, call.ns(), call.name()?, obj, subresource, &opts)
        .await?;
    let code = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(with_warnings(
        object_response(call, code, updated),
        &warnings,
    ))
}

/// PATCH of an object or its status, any of the four patch types.
pub async fn patch_object(
    st: &ApiState,
    call: &Call,
    subresource: Option<&str>,
) -> ApiResult<Response> {
    let res = call.target.res;
    let name = call.name()?;
    let ct = request::content_type(&call.headers);
    let ptype = patch::PatchType::from_content_type(&ct)
        .ok_or_else(|| ApiError::unsupported_media_type(&ct))?;
    let opts = call.query.write_options(&call.headers)?;
    if ptype == patch::PatchType::Apply {
        return subresources::server_side_apply(st, call, subresource, &opts).await;
    }
    let patch_body = call.body.clone();
    let parsed = match ptype {
        patch::PatchType::Json => Value::Null,
        _ => call.body_value()?,
    };
    let mut warnings = Vec::new();
    let registry = &st.registry;
    let api_version = res.api_version();
    let updated = registry
        .guaranteed_update(res, call.ns(), name, subresource, &opts, |current| {
            let patched = apply_patch(
                ptype,
                &current,
                &patch_body,
                &parsed,
                &api_version,
                res.kind,
            )?;
            let (obj, w) = registry.decode_input(res, patched, opts.field_validation)?;
            warnings = w;
            Ok(obj)
        })
        .await?;
    Ok(with_warnings(
        object_response(call, StatusCode::OK, updated),
        &warnings,
    ))
}

/// Applies a non-apply patch to `current`.
pub fn apply_patch(
    ptype: patch::PatchType,
    current: &Value,
    raw: &Bytes,
    parsed: &Value,
    api_version: &str,
    kind: &str,
) -> ApiResult<Value> {
    match ptype {
        patch::PatchType::Json => patch::json_patch(current, raw).map_err(|e| patch_error(&e)),
        patch::PatchType::Merge => Ok(patch::merge_patch(current, parsed)),
        patch::PatchType::Strategic => {
            patch::strategic_merge_patch(current, parsed, api_version, kind)
                .map_err(|e| patch_error(&e))
        }
        patch::PatchType::Apply => Err(ApiError::internal(
            "apply patches take the server-side apply path",
        )),
    }
}

/// A patch failure as upstream reports it.
pub fn patch_error(e: &patch::PatchError) -> ApiError {
    match e.status_code() {
        415 => ApiError::unsupported_media_type("application/strategic-merge-patch+json"),
        400 => ApiError::bad_request(e.to_string()),
        code => ApiError {
            code,
            reason: "Invalid",
            message: e.to_string(),
            details: None,
        },
    }
}

async fn delete(st: &ApiState, call: &Call) -> ApiResult<Response> {
    let res = call.target.res;
    let opts = call.delete_options()?;
    let deleted = st
        .registry
        .delete(res, call.ns(), call.name()?, &opts)
        .await?;
    let code = if deleted.removed {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok(object_response(call, code, deleted.object))
}

async fn delete_collection(st: &ApiState, call: &Call) -> ApiResult<Response> {
    let res = call.target.res;
    let opts = call.delete_options()?;
    let page = st
        .registry
        .list(
            res,
            call.ns(),
            &ListParams {
                label_selector: call.query.get("labelSelector").map(str::to_string),
                field_selector: call.query.get("fieldSelector").map(str::to_string),
                ..Default::default()
            },
        )
        .await?;
    let mut items = Vec::new();
    for obj in page.items {
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .map(str::to_string);
        match st.registry.delete(res, ns.as_deref(), &name, &opts).await {
            Ok(d) => items.push(d.object),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let list = json!({
        "kind": format!("{}List", res.kind),
        "apiVersion": res.api_version(),
        "metadata": {"resourceVersion": page.resource_version.to_string()},
        "items": items,
    });
    Ok(json_response(StatusCode::OK, &list))
}

/// The `Scale` of a workload (`autoscaling/v1`).
pub fn scale_of(res: &ResourceInfo, obj: &Value) -> Value {
    let selector = obj
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            let mut pairs: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect();
            pairs.sort();
            pairs.join(",")
        })
        .unwrap_or_default();
    let _ = res;
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": obj.pointer("/metadata/name"),
            "namespace": obj.pointer("/metadata/namespace"),
            "uid": obj.pointer("/metadata/uid"),
            "resourceVersion": obj.pointer("/metadata/resourceVersion"),
            "creationTimestamp": obj.pointer("/metadata/creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
        "status": {
            "replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

/// JSON response helper for subresources.
pub fn respond(code: StatusCode, body: &Value) -> Response {
    json_response(code, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resources::find;

    fn kv(value: &str, rev: i64) -> crate::storage::KeyValue {
        crate::storage::KeyValue {
            key: "/registry/configmaps/default/x".into(),
            value: value.as_bytes().to_vec(),
            create_revision: rev,
            mod_revision: rev,
        }
    }

    #[test]
    fn raw_lists_splice_resource_versions() {
        let cms = find("", "v1", "configmaps").expect("configmaps");
        let mut out = Vec::new();
        splice_resource_version(
            &mut out,
            cms,
            &kv(
                r#"{"apiVersion":"v1","data":{"a":"b"},"kind":"ConfigMap","metadata":{"name":"x"}}"#,
                7,
            ),
        );
        let v: Value = serde_json::from_slice(&out).expect("valid json");
        assert_eq!(v["metadata"]["resourceVersion"], "7");
        assert_eq!(v["metadata"]["name"], "x");
        out.clear();
        splice_resource_version(
            &mut out,
            cms,
            &kv(r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{}}"#, 8),
        );
        let v: Value = serde_json::from_slice(&out).expect("valid json");
        assert_eq!(v["metadata"]["resourceVersion"], "8");
        // Not in the stored shape: decoded instead, still stamped.
        out.clear();
        splice_resource_version(
            &mut out,
            cms,
            &kv(r#"{"metadata":{"name":"y"},"apiVersion":"v1"}"#, 9),
        );
        let v: Value = serde_json::from_slice(&out).expect("valid json");
        assert_eq!(
            (
                v["metadata"]["resourceVersion"].as_str(),
                v["kind"].as_str()
            ),
            (Some("9"), Some("ConfigMap"))
        );
    }
}

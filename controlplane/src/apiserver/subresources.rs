//! Subresources (`status`, `scale`, `binding`, `eviction`, `finalize`, `approval`), reviews
//! answered without storage, and server-side apply.

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use crate::apiserver::handlers::{self, ApiState, Call};
use crate::apiserver::patch;
use crate::apiserver::resources;
use crate::apiserver::status::{self, ApiError, ApiResult};
use crate::registry::generic::{now_rfc3339, DeleteOptions, WriteOptions};

/// Dispatches `<resource>/<name>/<sub>`.
pub async fn handle(st: &ApiState, call: &Call, sub: &str) -> ApiResult<Response> {
    let res = call.target.res;
    let name = call.name()?.to_string();
    match (sub, call.method.clone()) {
        ("status", Method::GET) => {
            let obj = st.registry.get(res, call.ns(), &name).await?;
            Ok(handlers::object_response(call, StatusCode::OK, obj))
        }
        ("status", Method::PUT) => handlers::update(st, call, Some("status")).await,
        ("status", Method::PATCH) => handlers::patch_object(st, call, Some("status")).await,
        ("scale", Method::GET) => {
            let obj = st.registry.get(res, call.ns(), &name).await?;
            Ok(handlers::respond(
                StatusCode::OK,
                &handlers::scale_of(res, &obj),
            ))
        }
        ("scale", Method::PUT | Method::PATCH) => scale(st, call, &name).await,
        ("binding", Method::POST) => binding(st, call, &name).await,
        ("eviction", Method::POST) => eviction(st, call, &name).await,
        ("finalize", Method::PUT) => finalize(st, call, &name).await,
        ("approval", Method::PUT) => handlers::update(st, call, Some("status")).await,
        ("log" | "exec" | "attach" | "portforward" | "proxy", _) => {
            crate::apiserver::node_proxy::handle(st, call, sub).await
        }
        ("token", Method::POST) if res.plural == "serviceaccounts" => {
            crate::apiserver::serviceaccount_token::token_request(st, call, &name).await
        }
        (_, m) => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource: {m} {sub}"
        ))),
    }
}

async fn scale(st: &ApiState, call: &Call, name: &str) -> ApiResult<Response> {
    let res = call.target.res;
    let opts = call.query.write_options(&call.headers)?;
    let body = call.body_value()?;
    let ct = crate::apiserver::request::content_type(&call.headers);
    let is_patch = call.method == Method::PATCH;
    let ptype = if is_patch {
        Some(
            patch::PatchType::from_content_type(&ct)
                .ok_or_else(|| ApiError::unsupported_media_type(&ct))?,
        )
    } else {
        None
    };
    let raw = call.body.clone();
    let updated = st
        .registry
        .guaranteed_update(res, call.ns(), name, None, &opts, |mut current| {
            let scale_now = handlers::scale_of(res, &current);
            let wanted = match ptype {
                Some(p) => handlers::apply_patch(p, &scale_now, &raw, &body, "autoscaling/v1", "Scale")?,
                None => body.clone(),
            };
            if let Some(rv) = wanted.pointer("/metadata/resourceVersion").and_then(Value::as_str) {
                if !rv.is_empty() && Some(rv) != current.pointer("/metadata/resourceVersion").and_then(Value::as_str) {
                    return Err(ApiError::conflict(res, name, "the object has been modified; please apply your changes to the latest version and try again"));
                }
            }
            let replicas = wanted
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .ok_or_else(|| ApiError::bad_request("spec.replicas is required in a Scale"))?;
            current["spec"]["replicas"] = json!(replicas);
            Ok(current)
        })
        .await?;
    Ok(handlers::respond(
        StatusCode::OK,
        &handlers::scale_of(res, &updated),
    ))
}

async fn binding(st: &ApiState, call: &Call, name: &str) -> ApiResult<Response> {
    let res = call.target.res;
    let body = call.body_value()?;
    let node = body
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("binding target name is required"))?
        .to_string();
    let opts = call.query.write_options(&call.headers)?;
    st.registry
        .guaranteed_update(res, call.ns(), name, Some("binding"), &opts, |mut pod| {
            if pod
                .pointer("/metadata/deletionTimestamp")
                .is_some_and(|v| !v.is_null())
            {
                return Err(ApiError::conflict(
                    res,
                    name,
                    "pod is being deleted, cannot be assigned to a host",
                ));
            }
            if let Some(current) = pod
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            {
                return Err(ApiError::conflict(
                    res,
                    name,
                    &format!("pod {name} is already assigned to node \"{current}\""),
                ));
            }
            pod["spec"]["nodeName"] = json!(node);
            set_condition(&mut pod, "PodScheduled", "True", None);
            Ok(pod)
        })
        .await?;
    Ok(handlers::respond(
        StatusCode::CREATED,
        &status::success(None),
    ))
}

fn set_condition(obj: &mut Value, kind: &str, value: &str, reason: Option<&str>) {
    let now = now_rfc3339();
    if !obj.get("status").is_some_and(Value::is_object) {
        obj["status"] = json!({});
    }
    let conds = obj["status"]
        .as_object_mut()
        .map(|s| s.entry("conditions").or_insert_with(|| json!([])));
    let Some(Value::Array(list)) = conds else {
        return;
    };
    let mut cond =
        json!({"type": kind, "status": value, "lastProbeTime": null, "lastTransitionTime": now});
    if let Some(r) = reason {
        cond["reason"] = json!(r);
    }
    match list
        .iter_mut()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
    {
        Some(c) => *c = cond,
        None => list.push(cond),
    }
}

async fn eviction(st: &ApiState, call: &Call, name: &str) -> ApiResult<Response> {
    let res = call.target.res;
    let body = call.body_value()?;
    let mut opts = DeleteOptions::default();
    if let Some(d) = body.get("deleteOptions") {
        opts = crate::apiserver::request::merge_delete_body(opts, d);
    }
    // PodDisruptionBudgets are stored but not enforced yet: every eviction is allowed.
    st.registry.delete(res, call.ns(), name, &opts).await?;
    Ok(handlers::respond(
        StatusCode::CREATED,
        &status::success(None),
    ))
}

async fn finalize(st: &ApiState, call: &Call, name: &str) -> ApiResult<Response> {
    let res = call.target.res;
    let body = call.body_value()?;
    let wanted = body
        .pointer("/spec/finalizers")
        .cloned()
        .unwrap_or_else(|| json!([]));
    let opts = call.query.write_options(&call.headers)?;
    let updated = st
        .registry
        .guaranteed_update(res, call.ns(), name, Some("finalize"), &opts, |mut ns| {
            ns["spec"]["finalizers"] = wanted.clone();
            Ok(ns)
        })
        .await?;
    Ok(handlers::respond(StatusCode::OK, &updated))
}

/// Server-side apply (`application/apply-patch+yaml`).
pub async fn server_side_apply(
    st: &ApiState,
    call: &Call,
    subresource: Option<&str>,
    opts: &WriteOptions,
) -> ApiResult<Response> {
    let res = call.target.res;
    let name = call.name()?.to_string();
    let applied =
        patch::parse_apply_body(&call.body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if !applied.is_object() {
        return Err(ApiError::bad_request(
            "the apply configuration must be an object",
        ));
    }
    if call.query.get("fieldManager").is_none() {
        return Err(ApiError::bad_request(
            "PATCH requests of type apply must include a fieldManager",
        ));
    }
    let force = call.query.flag("force");
    let api_version = res.api_version();
    let map_conflict = |e: patch::ApplyError| match e {
        patch::ApplyError::Conflicts(conflicts) => {
            let causes: Vec<Value> = conflicts
                .iter()
                .map(|c| json!({"type": "FieldManagerConflict", "message": c.message(), "field": c.field_path}))
                .collect();
            let lines: Vec<String> = conflicts
                .iter()
                .map(|c| format!("- {}", c.message()))
                .collect();
            ApiError::conflict_with(
                format!(
                    "Apply failed with {} conflict{}: {}",
                    conflicts.len(),
                    if conflicts.len() == 1 { "" } else { "s" },
                    lines.join("\n")
                ),
                Some(json!({"causes": causes})),
            )
        }
        other => ApiError::bad_request(other.to_string()),
    };
    match st.registry.get(res, call.ns(), &name).await {
        Err(e) if e.code == 404 && subresource.is_none() => {
            let now = now_rfc3339();
            let obj = patch::server_side_apply(
                None,
                &applied,
                &opts.field_manager,
                force,
                &api_version,
                res.kind,
                &now,
            )
            .map_err(map_conflict)?;
            let (mut obj, warnings) = st.registry.decode_input(res, obj, opts.field_validation)?;
            if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                m.insert("name".into(), json!(name));
            }
            let created = st
                .registry
                .create(
                    res,
                    call.ns(),
                    obj,
                    &WriteOptions {
                        field_manager: opts.field_manager.clone(),
                        ..opts.clone()
                    },
                )
                .await?;
            let _ = warnings;
            Ok(handlers::object_response(
                call,
                StatusCode::CREATED,
                created,
            ))
        }
        Err(e) => Err(e),
        Ok(_) => {
            let registry = &st.registry;
            let updated = registry
                .guaranteed_update(res, call.ns(), &name, subresource, opts, |current| {
                    let now = now_rfc3339();
                    let merged = patch::server_side_apply(
                        Some(&current),
                        &applied,
                        &opts.field_manager,
                        force,
                        &api_version,
                        res.kind,
                        &now,
                    )
                    .map_err(map_conflict)?;
                    let (obj, _) = registry.decode_input(res, merged, opts.field_validation)?;
                    Ok(obj)
                })
                .await?;
            Ok(handlers::object_response(call, StatusCode::OK, updated))
        }
    }
}

/// Create-only review resources, answered from the request alone.
pub async fn review(st: &ApiState, call: &Call) -> ApiResult<Response> {
    if call.method != Method::POST || call.target.name.is_some() {
        return Err(ApiError::method_not_allowed("reviews only support create"));
    }
    let res = call.target.res;
    let body = call.body_value()?;
    let user = call
        .user
        .clone()
        .unwrap_or_else(crate::apiserver::auth::UserInfo::anonymous);
    let user_json = json!({
        "username": user.username,
        "uid": user.uid,
        "groups": user.groups,
        "extra": user.extra,
    });
    let status = match res.plural {
        "selfsubjectreviews" => json!({"userInfo": user_json}),
        "selfsubjectaccessreviews" | "subjectaccessreviews" => json!({
            "allowed": true,
            "reason": "oxlet authorizes every authenticated user",
        }),
        "tokenreviews" => crate::apiserver::serviceaccount_token::token_review(st, &body).await?,
        _ => return Err(ApiError::path_not_found()),
    };
    let mut out = if body.is_object() { body } else { json!({}) };
    out["apiVersion"] = json!(resources::ResourceInfo::api_version(res));
    out["kind"] = json!(res.kind);
    if !out.get("metadata").is_some_and(Value::is_object) {
        out["metadata"] = json!({});
    }
    out["metadata"]["creationTimestamp"] = json!(now_rfc3339());
    out["status"] = status;
    Ok(handlers::respond(StatusCode::CREATED, &out))
}

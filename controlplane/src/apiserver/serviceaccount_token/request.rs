//! The TokenRequest (`POST serviceaccounts/<name>/token`) and TokenReview handlers, as
//! upstream's pkg/registry/core/serviceaccount/storage/token.go and
//! pkg/registry/authentication/tokenreview/storage.go answer them.

use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use crate::apiserver::handlers::{self, ApiState, Call};
use crate::apiserver::resources;
use crate::apiserver::status::{ApiError, ApiResult};
use crate::registry::strategy::FieldError;

use super::claims::{ObjectRef, TokenClaims};
use super::{DEFAULT_EXPIRATION_SECONDS, MAX_EXPIRATION_SECONDS, MIN_EXPIRATION_SECONDS};

const API_VERSION: &str = "authentication.k8s.io/v1";

fn rfc3339(unix: i64) -> String {
    jiff::Timestamp::from_second(unix)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// 422 for a TokenRequest, shaped as upstream's `NewInvalid(TokenRequest.authentication.k8s.io, …)`.
fn invalid(name: &str, errors: &[FieldError]) -> ApiError {
    let reviews = resources::find("authentication.k8s.io", "v1", "tokenreviews");
    let mut e = match reviews {
        Some(res) => ApiError::invalid("TokenRequest.authentication.k8s.io", res, name, errors),
        None => ApiError::bad_request(
            errors
                .iter()
                .map(FieldError::line)
                .collect::<Vec<_>>()
                .join(", "),
        ),
    };
    if let Some(d) = e.details.as_mut() {
        d["kind"] = json!("TokenRequest");
    }
    e
}

fn core(plural: &str) -> ApiResult<&'static resources::ResourceInfo> {
    resources::find("", "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("resource {plural} is not served")))
}

fn string_list(v: Option<&Value>, field: &str) -> ApiResult<Vec<String>> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str().map(String::from).ok_or_else(|| {
                    ApiError::bad_request(format!("{field}: expected a list of strings"))
                })
            })
            .collect(),
        Some(_) => Err(ApiError::bad_request(format!(
            "{field}: expected a list of strings"
        ))),
    }
}

fn str_field<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// What the token is bound to.
#[derive(Default)]
struct Binding {
    pod: Option<ObjectRef>,
    secret: Option<ObjectRef>,
    node: Option<ObjectRef>,
}

async fn bind(st: &ApiState, ns: &str, sa: &str, bound: &Value) -> ApiResult<Binding> {
    let kind = str_field(bound, "/kind");
    let api_version = str_field(bound, "/apiVersion");
    let name = str_field(bound, "/name");
    let want_uid = str_field(bound, "/uid");
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let mut binding = Binding::default();
    let obj = match (group, kind) {
        ("", "Pod") => {
            let pod = st.registry.get(core("pods")?, Some(ns), name).await?;
            if str_field(&pod, "/spec/serviceAccountName") != sa {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token for serviceaccount {sa:?} to pod running with different serviceaccount name."
                )));
            }
            let node_name = str_field(&pod, "/spec/nodeName");
            if !node_name.is_empty() {
                // A missing node still leaves its name in the claims, as upstream does.
                let uid = match st.registry.get(core("nodes")?, None, node_name).await {
                    Ok(node) => str_field(&node, "/metadata/uid").to_string(),
                    Err(e) if e.code == 404 => String::new(),
                    Err(e) => return Err(e),
                };
                binding.node = Some(ObjectRef {
                    name: node_name.to_string(),
                    uid,
                });
            }
            binding.pod = Some(ObjectRef {
                name: name.to_string(),
                uid: str_field(&pod, "/metadata/uid").to_string(),
            });
            pod
        }
        ("", "Secret") => {
            let secret = st.registry.get(core("secrets")?, Some(ns), name).await?;
            binding.secret = Some(ObjectRef {
                name: name.to_string(),
                uid: str_field(&secret, "/metadata/uid").to_string(),
            });
            secret
        }
        ("", "Node") => {
            let node = st.registry.get(core("nodes")?, None, name).await?;
            binding.node = Some(ObjectRef {
                name: name.to_string(),
                uid: str_field(&node, "/metadata/uid").to_string(),
            });
            node
        }
        _ => {
            return Err(ApiError::bad_request(format!(
                "cannot bind token for serviceaccount {sa:?} to object of type \"{group}/{version}, Kind={kind}\""
            )))
        }
    };
    let uid = str_field(&obj, "/metadata/uid");
    if !want_uid.is_empty() && want_uid != uid {
        return Err(ApiError::conflict_with(
            format!(
                "Operation cannot be fulfilled on {kind} {name:?}: the UID in the bound object reference ({want_uid}) does not match the UID in record. The object might have been deleted and then recreated"
            ),
            Some(json!({"name": name, "group": group, "kind": kind})),
        ));
    }
    Ok(binding)
}

/// `POST /api/v1/namespaces/<ns>/serviceaccounts/<name>/token`: issues a token for the
/// service account, optionally bound to a pod, secret or node, and answers 201 with the
/// TokenRequest and its `status.token`.
pub async fn token_request(st: &ApiState, call: &Call, name: &str) -> ApiResult<Response> {
    let tokens = st.opts.service_account_tokens.as_ref().ok_or_else(|| {
        ApiError::unavailable("service account token issuance is not configured on this server")
    })?;
    let ns = call
        .ns()
        .ok_or_else(|| ApiError::bad_request("namespace is required"))?
        .to_string();
    let mut req = call.body_value()?;
    if req.is_null() {
        req = json!({});
    }
    if !req.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    for (field, want) in [("apiVersion", API_VERSION), ("kind", "TokenRequest")] {
        if let Some(have) = req.get(field).and_then(Value::as_str) {
            if have != want {
                return Err(ApiError::bad_request(format!(
                    "the {field} in the data ({have}) does not match the expected {field} ({want})"
                )));
            }
        }
    }
    let body_name = str_field(&req, "/metadata/name").to_string();
    if !body_name.is_empty() && body_name != name {
        return Err(invalid(
            name,
            &[FieldError::invalid(
                "metadata.name",
                &json!(body_name),
                "must match the service account name if specified",
            )],
        ));
    }
    let body_ns = str_field(&req, "/metadata/namespace").to_string();
    if !body_ns.is_empty() && body_ns != ns {
        return Err(invalid(
            name,
            &[FieldError::invalid(
                "metadata.namespace",
                &json!(body_ns),
                "must match the service account namespace if specified",
            )],
        ));
    }

    let sa = st
        .registry
        .get(core("serviceaccounts")?, Some(&ns), name)
        .await?;

    let spec = req.get("spec").cloned().unwrap_or_else(|| json!({}));
    let mut audiences = string_list(spec.get("audiences"), "spec.audiences")?;
    if audiences.is_empty() {
        audiences = tokens.api_audiences().to_vec();
    }
    let mut expiration = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => DEFAULT_EXPIRATION_SECONDS,
        Some(v) => v
            .as_i64()
            .ok_or_else(|| ApiError::bad_request("spec.expirationSeconds: expected an integer"))?,
    };
    if expiration < MIN_EXPIRATION_SECONDS {
        return Err(invalid(
            "",
            &[FieldError::invalid(
                "spec.expirationSeconds",
                &json!(expiration),
                "may not specify a duration less than 10 minutes",
            )],
        ));
    }
    if expiration > MAX_EXPIRATION_SECONDS {
        return Err(invalid(
            "",
            &[FieldError {
                reason: "FieldValueTooLong",
                field: "spec.expirationSeconds".into(),
                message: format!("Too long: may not be more than {MAX_EXPIRATION_SECONDS}"),
            }],
        ));
    }

    let bound = spec.get("boundObjectRef").filter(|b| b.is_object());
    let binding = match bound {
        Some(b) => bind(st, &ns, name, b).await?,
        None => Binding::default(),
    };

    let mut warning = None;
    if let Some(max) = tokens.max_expiration_seconds() {
        if expiration > max {
            warning = Some(format!(
                "requested expiration of {expiration} seconds shortened to {max} seconds"
            ));
            expiration = max;
        }
    }
    let (lifetime, warn_after) = tokens.lifetime(expiration, &audiences, binding.pod.is_some());
    let now = jiff::Timestamp::now().as_second();
    let claims = TokenClaims {
        issuer: tokens.issuer().to_string(),
        audiences: audiences.clone(),
        issued_at: now,
        expires_at: now + lifetime,
        id: uuid::Uuid::new_v4().to_string(),
        namespace: ns.clone(),
        service_account: ObjectRef {
            name: name.to_string(),
            uid: str_field(&sa, "/metadata/uid").to_string(),
        },
        pod: binding.pod,
        secret: binding.secret,
        node: binding.node,
        warn_after: warn_after.map(|w| now + w),
    };
    let token = tokens
        .sign(&claims)
        .map_err(|e| ApiError::internal(format!("failed to generate token: {e}")))?;
    tracing::debug!(namespace = %ns, serviceaccount = name, lifetime, "issued service account token");

    let mut out = req;
    out["apiVersion"] = json!(API_VERSION);
    out["kind"] = json!("TokenRequest");
    if !out.get("metadata").is_some_and(Value::is_object) {
        out["metadata"] = json!({});
    }
    out["metadata"]["name"] = json!(name);
    out["metadata"]["namespace"] = json!(ns);
    out["metadata"]["creationTimestamp"] = json!(rfc3339(now));
    let mut spec = spec;
    if !spec.is_object() {
        spec = json!({});
    }
    spec["audiences"] = json!(audiences);
    spec["expirationSeconds"] = json!(expiration);
    out["spec"] = spec;
    // As upstream: the reported expiry is the requested one, even for an extended token.
    out["status"] = json!({"token": token, "expirationTimestamp": rfc3339(now + expiration)});
    let mut resp = handlers::respond(StatusCode::CREATED, &out);
    if let Some(text) = warning {
        if let Ok(v) = HeaderValue::from_str(&format!("299 - {}", Value::String(text))) {
            resp.headers_mut().append("Warning", v);
        }
    }
    Ok(resp)
}

/// The `status` of a TokenReview: `spec.token` authenticated by the server's token
/// authenticators (token file, service-account tokens) for `spec.audiences`, or the API
/// audiences when it names none.
pub async fn token_review(st: &ApiState, review: &Value) -> ApiResult<Value> {
    let token = review
        .pointer("/spec/token")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if token.is_empty() {
        return Err(ApiError::bad_request(
            "token is required for TokenReview in authentication",
        ));
    }
    let mut audiences = string_list(review.pointer("/spec/audiences"), "spec.audiences")?;
    if audiences.is_empty() {
        audiences = st.authenticator.api_audiences().to_vec();
    }
    let result = st
        .authenticator
        .authenticate_bearer(token, &audiences)
        .await;
    let mut status = json!({"user": {}});
    if let Some(found) = result.user {
        let u = &found.user;
        let mut user = json!({"username": u.username, "groups": u.groups});
        if !u.uid.is_empty() {
            user["uid"] = json!(u.uid);
        }
        if !u.extra.is_empty() {
            user["extra"] = json!(u.extra);
        }
        status["authenticated"] = json!(true);
        status["user"] = user;
        if !found.audiences.is_empty() {
            status["audiences"] = json!(found.audiences);
        }
    }
    if let Some(error) = result.error {
        status["error"] = json!(error);
    }
    Ok(status)
}

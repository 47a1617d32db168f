//! API errors as Kubernetes `Status` bodies, built in one place so every handler answers with
//! the code, reason and message kubectl and client-go expect.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::apiserver::resources::ResourceInfo;
use crate::registry::strategy::FieldError;
use crate::storage;

/// An API failure: HTTP code, `Status.reason`, message and optional details.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `Status.reason` (`NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, …).
    pub reason: &'static str,
    /// Human message.
    pub message: String,
    /// `Status.details`, when upstream fills it.
    pub details: Option<Value>,
}

/// Result with [`ApiError`].
pub type ApiResult<T> = std::result::Result<T, ApiError>;

fn qualified(res: &ResourceInfo) -> String {
    if res.group.is_empty() {
        res.plural.to_string()
    } else {
        format!("{}.{}", res.plural, res.group)
    }
}

fn details(res: &ResourceInfo, name: &str) -> Value {
    json!({"name": name, "group": res.group, "kind": res.plural})
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403 Forbidden.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    /// 404 for a URL that names no resource.
    pub fn path_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// 404 `pods "web" not found`.
    pub fn not_found(res: &ResourceInfo, name: &str) -> Self {
        let mut e = Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(res)),
        );
        e.details = Some(details(res, name));
        e
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    /// 409 `pods "web" already exists`.
    pub fn already_exists(res: &ResourceInfo, name: &str) -> Self {
        let mut e = Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(res)),
        );
        e.details = Some(details(res, name));
        e
    }

    /// 409 optimistic-concurrency conflict, in upstream's words.
    pub fn conflict(res: &ResourceInfo, name: &str, why: &str) -> Self {
        let mut e = Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                qualified(res)
            ),
        );
        e.details = Some(details(res, name));
        e
    }

    /// 409 with an arbitrary message (e.g. server-side apply conflicts).
    pub fn conflict_with(message: impl Into<String>, details: Option<Value>) -> Self {
        let mut e = Self::new(409, "Conflict", message);
        e.details = details;
        e
    }

    /// 410 Expired: a watch or list from a compacted resourceVersion.
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 413 RequestEntityTooLarge.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
        )
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf; got {content_type:?}"),
        )
    }

    /// 422 Invalid with field causes: `Pod "web" is invalid: spec.containers[0].image: Required value`.
    pub fn invalid(kind: &str, res: &ResourceInfo, name: &str, errors: &[FieldError]) -> Self {
        let lines: Vec<String> = errors.iter().map(FieldError::line).collect();
        let joined = if lines.len() == 1 {
            lines[0].clone()
        } else {
            format!("[{}]", lines.join(", "))
        };
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| json!({"reason": e.reason, "message": e.message, "field": e.field}))
            .collect();
        Self {
            code: 422,
            reason: "Invalid",
            message: format!("{kind} \"{name}\" is invalid: {joined}"),
            details: Some(
                json!({"name": name, "group": res.group, "kind": kind, "causes": causes}),
            ),
        }
    }

    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// 503 ServiceUnavailable.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    /// Maps a storage failure on `res`/`name` to its API meaning.
    pub fn from_storage(res: &ResourceInfo, name: &str, err: &storage::Error) -> Self {
        match err {
            storage::Error::NotFound { .. } => Self::not_found(res, name),
            storage::Error::AlreadyExists { .. } => Self::already_exists(res, name),
            storage::Error::Conflict { .. } => Self::conflict(
                res,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ),
            storage::Error::Compacted { .. } => Self::gone(format!("too old resource version: {err}")),
            storage::Error::FutureRevision { .. } => Self::new(504, "Timeout", err.to_string()),
            _ => Self::internal(err.to_string()),
        }
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = self.to_status().to_string();
        (
            code,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }
}

/// A `Status` with `status: Success` (binding, eviction, deletecollection answers).
pub fn success(details: Option<Value>) -> Value {
    let mut s = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"});
    if let Some(d) = details {
        s["details"] = d;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resources::find;

    #[test]
    fn invalid_message_matches_upstream_shape() {
        let pods = find("", "v1", "pods").expect("pods");
        let e = ApiError::invalid(
            "Pod",
            pods,
            "web",
            &[FieldError::required("spec.containers[0].image")],
        );
        assert_eq!(e.code, 422);
        assert_eq!(
            e.message,
            "Pod \"web\" is invalid: spec.containers[0].image: Required value"
        );
        let s = e.to_status();
        assert_eq!(
            s["details"]["causes"][0]["field"],
            "spec.containers[0].image"
        );
        assert_eq!(s["reason"], "Invalid");
    }

    #[test]
    fn not_found_names_group_qualified_resource() {
        let d = find("apps", "v1", "deployments").expect("deployments");
        assert_eq!(
            ApiError::not_found(d, "x").message,
            "deployments.apps \"x\" not found"
        );
    }
}

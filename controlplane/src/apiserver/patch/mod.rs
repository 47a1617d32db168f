//! PATCH bodies: JSON patch, merge patch, strategic merge patch and server-side apply, as pure
//! functions over `serde_json::Value` objects. The REST handlers pick one by content type.

mod apply;
mod json;
mod merge;
pub mod merge_keys;
mod strategic;

pub use apply::{server_side_apply, update_managed_fields, ApplyError, Conflict};
pub use json::json_patch;
pub use merge::merge_patch;
pub use strategic::strategic_merge_patch;

use serde_json::Value;

/// The kinds of PATCH the API server accepts, by request `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml`: server-side apply (the body may be YAML or JSON).
    Apply,
}

impl PatchType {
    /// The patch type for a request `Content-Type` (parameters such as `charset` ignored), or
    /// `None` for anything else, `application/apply-patch+cbor` included: the caller answers 415.
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        let media = content_type.split(';').next().unwrap_or_default().trim();
        match media.to_ascii_lowercase().as_str() {
            "application/json-patch+json" => Some(Self::Json),
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" => Some(Self::Apply),
            _ => None,
        }
    }

    /// The media type of this patch type, as discovery and 415 messages list it.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json-patch+json",
            Self::Merge => "application/merge-patch+json",
            Self::Strategic => "application/strategic-merge-patch+json",
            Self::Apply => "application/apply-patch+yaml",
        }
    }
}

/// Why a patch could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The body is not a patch document of its type (not JSON/YAML, not a list of operations).
    /// Upstream answers 400.
    #[error("{0}")]
    Decode(String),
    /// The document parses but is malformed: an unknown `$patch` directive, a list item without
    /// its merge key, a `$retainKeys` mismatch. Upstream answers 400.
    #[error("{0}")]
    BadPatch(String),
    /// A well-formed patch failed to apply: a JSON patch `test` that did not match, a path that
    /// does not exist. Upstream answers 422.
    #[error("{0}")]
    Failed(String),
    /// Strategic merge patch was asked for a kind without patch metadata (custom resources).
    /// Upstream answers 415.
    #[error("strategic merge patch format is not supported for {kind} ({api_version})")]
    StrategicNotSupported {
        /// `apiVersion` of the target.
        api_version: String,
        /// `kind` of the target.
        kind: String,
    },
}

impl PatchError {
    /// The HTTP status upstream answers with for this error.
    pub fn status_code(&self) -> u16 {
        match self {
            Self::Decode(_) | Self::BadPatch(_) => 400,
            Self::Failed(_) => 422,
            Self::StrategicNotSupported { .. } => 415,
        }
    }
}

/// Decodes a server-side apply body, which kubectl sends as YAML or JSON (JSON is YAML).
pub fn parse_apply_body(body: &[u8]) -> Result<Value, PatchError> {
    let v: Value = serde_yaml::from_slice(body)
        .map_err(|e| PatchError::Decode(format!("error decoding YAML: {e}")))?;
    if !v.is_object() {
        return Err(PatchError::Decode(
            "an apply configuration must be an object".to_string(),
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        let cases = [
            ("application/json-patch+json", Some(PatchType::Json)),
            ("application/merge-patch+json", Some(PatchType::Merge)),
            (
                "application/strategic-merge-patch+json; charset=utf-8",
                Some(PatchType::Strategic),
            ),
            ("application/apply-patch+yaml", Some(PatchType::Apply)),
            ("application/apply-patch+cbor", None),
            ("application/json", None),
            ("", None),
        ];
        for (ct, want) in cases {
            assert_eq!(PatchType::from_content_type(ct), want, "{ct}");
        }
    }

    #[test]
    fn apply_bodies() {
        let yaml = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  k: v\n";
        assert_eq!(
            parse_apply_body(yaml).ok().map(|v| v["data"]["k"].clone()),
            Some(serde_json::json!("v"))
        );
        let json = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}}"#;
        assert!(parse_apply_body(json).is_ok());
        assert!(matches!(
            parse_apply_body(b"- a"),
            Err(PatchError::Decode(_))
        ));
        assert!(matches!(parse_apply_body(b"{"), Err(PatchError::Decode(_))));
    }
}

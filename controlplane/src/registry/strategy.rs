//! Per-resource behaviour of the generic registry, like kube-apiserver's `rest.RESTCreateStrategy`
//! / `RESTUpdateStrategy`: decoding, defaulting, validation and the spec/status split.
//!
//! Objects travel as `serde_json::Value` through the generic machinery; strategies check them
//! through the typed k8s-openapi structs.

use serde_json::Value;

/// One invalid field, as it appears in a 422 `Status`'s `details.causes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Upstream cause type: `FieldValueRequired`, `FieldValueInvalid`, `FieldValueNotSupported`,
    /// `FieldValueDuplicate`, `FieldValueForbidden`, `FieldValueTooLong`, `FieldValueTypeInvalid`.
    pub reason: &'static str,
    /// Field path as upstream prints it: `spec.containers[0].image`, `metadata.labels`.
    pub field: String,
    /// Human text after the path, e.g. `Required value` or
    /// `Invalid value: "Foo": a lowercase RFC 1123 subdomain must consist of …`.
    pub message: String,
}

impl FieldError {
    /// `field: Required value`.
    pub fn required(field: impl Into<String>) -> Self {
        Self {
            reason: "FieldValueRequired",
            field: field.into(),
            message: "Required value".to_string(),
        }
    }

    /// `field: Invalid value: <value>: detail`.
    pub fn invalid(field: impl Into<String>, value: &Value, detail: impl AsRef<str>) -> Self {
        Self {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: format!("Invalid value: {value}: {}", detail.as_ref()),
        }
    }

    /// `field: Unsupported value: <value>: supported values: "a", "b"`.
    pub fn not_supported(field: impl Into<String>, value: &Value, supported: &[&str]) -> Self {
        let list = supported
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        Self {
            reason: "FieldValueNotSupported",
            field: field.into(),
            message: format!("Unsupported value: {value}: supported values: {list}"),
        }
    }

    /// `field: Duplicate value: <value>`.
    pub fn duplicate(field: impl Into<String>, value: &Value) -> Self {
        Self {
            reason: "FieldValueDuplicate",
            field: field.into(),
            message: format!("Duplicate value: {value}"),
        }
    }

    /// `field: Forbidden: detail`.
    pub fn forbidden(field: impl Into<String>, detail: impl AsRef<str>) -> Self {
        Self {
            reason: "FieldValueForbidden",
            field: field.into(),
            message: format!("Forbidden: {}", detail.as_ref()),
        }
    }

    /// The full line as kubectl prints it: `spec.containers[0].image: Required value`.
    pub fn line(&self) -> String {
        format!("{}: {}", self.field, self.message)
    }
}

/// A request body that does not decode as the resource's type (wrong JSON types), or that has
/// unknown fields under `fieldValidation=Strict`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Human text, e.g. `json: cannot unmarshal string into Go struct field ...` style.
    pub message: String,
}

/// The outcome of decoding: the normalised object (unknown fields dropped, as kube-apiserver
/// prunes them) and the paths of the unknown fields (`.spec.containers[0].imagee`), which the
/// caller turns into warnings, a 400 or nothing according to `fieldValidation`.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The object after a round trip through its typed struct.
    pub object: Value,
    /// JSON paths of fields the type does not know, upstream's format: `.spec.foo`.
    pub unknown_fields: Vec<String>,
}

/// Per-resource behaviour. Implementations are pure: no I/O, no clock (timestamps, UIDs and
/// resourceVersions are the registry's job).
pub trait Strategy: Send + Sync {
    /// Decodes a client-sent object through the typed struct of this resource's kind.
    fn decode(&self, object: Value) -> Result<Decoded, DecodeError>;

    /// Fills defaults, as upstream's defaulters (and defaulting admission plugins) do, on create
    /// and on every update.
    fn default(&self, _object: &mut Value) {}

    /// Clears what a client may not set on create; for most resources with a status, `status`.
    fn prepare_for_create(&self, _object: &mut Value) {}

    /// On a main-resource update: keeps the old status (status only changes via `/status`).
    fn prepare_for_update(&self, _new: &mut Value, _old: &Value) {}

    /// On a `/status` update: keeps everything but status from the old object.
    fn prepare_for_status_update(&self, _new: &mut Value, _old: &Value) {}

    /// Validates a new object (after defaulting).
    fn validate_create(&self, _object: &Value) -> Vec<FieldError> {
        Vec::new()
    }

    /// Validates an update (after defaulting), including immutable fields.
    fn validate_update(&self, _new: &Value, _old: &Value) -> Vec<FieldError> {
        Vec::new()
    }

    /// Whether a change of `spec` bumps `metadata.generation`.
    fn tracks_generation(&self) -> bool {
        false
    }
}

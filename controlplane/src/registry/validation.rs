//! Shared validators with upstream's wording (k8s.io/apimachinery pkg/util/validation and
//! pkg/api/validation/objectmeta.go, kubernetes pkg/apis/core/validation/validation.go), so a
//! kubectl user sees the same `field: Invalid value: …` lines as against kube-apiserver.

use std::collections::HashSet;

use serde_json::{json, Value};

use crate::registry::strategy::FieldError;

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const CONFIG_MAP_KEY_FMT: &str = "[-._a-zA-Z0-9]+";

/// Longest DNS-1123 label (and label value, and qualified-name name part).
pub const DNS1123_LABEL_MAX_LENGTH: usize = 63;
/// Longest DNS-1123 subdomain.
pub const DNS1123_SUBDOMAIN_MAX_LENGTH: usize = 253;
/// Largest total size of a ConfigMap's or Secret's data, as upstream's `MaxSecretSize`.
pub const MAX_DATA_SIZE: usize = 1024 * 1024;
/// Largest total size of an object's annotations (`TotalAnnotationSizeLimitB`).
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

/// Upstream's `RegexError`: the message naming the regex and examples.
fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    let mut s = format!("{msg} (");
    if !examples.is_empty() {
        let quoted: Vec<String> = examples.iter().map(|e| format!("'{e}'")).collect();
        s.push_str("e.g. ");
        s.push_str(&quoted.join(",  or "));
        s.push_str(", ");
    }
    s.push_str("regex used for validation is '");
    s.push_str(fmt);
    s.push_str("')");
    s
}

fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

fn is_lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn is_alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

/// Matches `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
fn matches_dns1123_label(s: &str) -> bool {
    let (Some(first), Some(last)) = (s.chars().next(), s.chars().last()) else {
        return false;
    };
    is_lower_alnum(first)
        && is_lower_alnum(last)
        && s.chars().all(|c| is_lower_alnum(c) || c == '-')
}

/// Matches `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`.
fn matches_qualified_name_part(s: &str) -> bool {
    let (Some(first), Some(last)) = (s.chars().next(), s.chars().last()) else {
        return false;
    };
    is_alnum(first)
        && is_alnum(last)
        && s.chars()
            .all(|c| is_alnum(c) || matches!(c, '-' | '_' | '.'))
}

/// Problems with `s` as a DNS-1123 label (`IsDNS1123Label`); empty when valid.
pub fn is_dns1123_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !matches_dns1123_label(s) {
        errs.push(regex_error(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
            DNS1123_LABEL_FMT,
            &["my-name", "123-abc"],
        ));
    }
    errs
}

/// Problems with `s` as a DNS-1123 subdomain (`IsDNS1123Subdomain`); empty when valid.
pub fn is_dns1123_subdomain(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    if s.is_empty() || !s.split('.').all(matches_dns1123_label) {
        errs.push(regex_error(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

/// Problems with `s` as a DNS-1035 label (`IsDNS1035Label`, Service names); empty when valid.
pub fn is_dns1035_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !(matches_dns1123_label(s) && s.starts_with(|c: char| c.is_ascii_lowercase())) {
        errs.push(regex_error(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character",
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errs
}

/// Problems with `s` as a qualified name (label and annotation keys, `IsQualifiedName`).
pub fn is_qualified_name(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = s.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                for msg in is_dns1123_subdomain(prefix) {
                    errs.push(format!("prefix part {msg}"));
                }
            }
            *name
        }
        _ => {
            return vec![format!(
                "{} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(
                    "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
                    QUALIFIED_NAME_FMT,
                    &["MyName", "my.name", "123-abc"],
                )
            )];
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(format!(
            "name part {}",
            max_len_error(DNS1123_LABEL_MAX_LENGTH)
        ));
    }
    if !name.is_empty() && !matches_qualified_name_part(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"],
            )
        ));
    }
    errs
}

/// Problems with `s` as a label value (`IsValidLabelValue`).
pub fn is_valid_label_value(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !s.is_empty() && !matches_qualified_name_part(s) {
        errs.push(regex_error(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// Problems with `s` as a ConfigMap/Secret data key (`IsConfigMapKey`).
pub fn is_config_map_key(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    if s.is_empty()
        || !s
            .chars()
            .all(|c| is_alnum(c) || matches!(c, '-' | '_' | '.'))
    {
        errs.push(regex_error(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
            CONFIG_MAP_KEY_FMT,
            &["key.name", "KEY_NAME", "key-name"],
        ));
    }
    if s == "." {
        errs.push("must not be '.'".to_string());
    } else if s == ".." {
        errs.push("must not be '..'".to_string());
    } else if s.starts_with("..") {
        errs.push("must not start with '..'".to_string());
    }
    errs
}

/// Problems with `s` as a named port (`IsValidPortName`, IANA_SVC_NAME).
pub fn is_valid_port_name(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 15 {
        errs.push("must be no more than 15 characters".to_string());
    }
    if !s.chars().all(|c| is_lower_alnum(c) || c == '-') {
        errs.push(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_string(),
        );
    }
    if s.contains("--") {
        errs.push("must not contain consecutive hyphens".to_string());
    }
    if !s.chars().any(|c| c.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".to_string());
    }
    if s.starts_with('-') || s.ends_with('-') {
        errs.push("must not begin or end with a hyphen".to_string());
    }
    errs
}

/// Upstream's `InclusiveRangeError` text for ports.
pub const PORT_RANGE_MSG: &str = "must be between 1 and 65535, inclusive";

/// Checks a port number (`IsValidPortNum`): `field: Invalid value: 0: must be between 1 and 65535, inclusive`.
pub fn validate_port_num(value: &Value, field: &str) -> Vec<FieldError> {
    match value.as_i64() {
        Some(p) if (1..=65535).contains(&p) => Vec::new(),
        _ => vec![FieldError::invalid(field, value, PORT_RANGE_MSG)],
    }
}

/// A `FieldValueNotFound` error: `field: Not found: "data"`.
pub fn not_found(field: impl Into<String>, value: &Value) -> FieldError {
    FieldError {
        reason: "FieldValueNotFound",
        field: field.into(),
        message: format!("Not found: {value}"),
    }
}

/// A `FieldValueTooLong` error: `field: Too long: must have at most N bytes`.
pub fn too_long(field: impl Into<String>, max: usize) -> FieldError {
    FieldError {
        reason: "FieldValueTooLong",
        field: field.into(),
        message: format!("Too long: must have at most {max} bytes"),
    }
}

/// A `FieldValueTypeInvalid`-free helper: `field: Invalid value: <v>: field is immutable`.
pub fn immutable(field: impl Into<String>, value: &Value) -> FieldError {
    FieldError::invalid(field, value, "field is immutable")
}

/// Joins a path and a child name: `join("spec", "containers")` is `spec.containers`.
pub fn join(path: &str, child: &str) -> String {
    if path.is_empty() {
        child.to_string()
    } else {
        format!("{path}.{child}")
    }
}

/// Which rule an object's name must follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// DNS-1123 subdomain: most kinds.
    Subdomain,
    /// DNS-1123 label: namespaces.
    Label,
    /// DNS-1035 label: services.
    Dns1035,
    /// Path segment only (no `/`, `%`, `.` or `..`): RBAC objects, nodes' leases and the like.
    PathSegment,
}

impl NameRule {
    /// Problems with `name` under this rule.
    pub fn check(self, name: &str) -> Vec<String> {
        match self {
            NameRule::Subdomain => is_dns1123_subdomain(name),
            NameRule::Label => is_dns1123_label(name),
            NameRule::Dns1035 => is_dns1035_label(name),
            NameRule::PathSegment => {
                if name == "." || name == ".." {
                    vec![format!("may not be '{name}'")]
                } else if name.contains('/') {
                    vec!["may not contain '/'".to_string()]
                } else if name.contains('%') {
                    vec!["may not contain '%'".to_string()]
                } else {
                    Vec::new()
                }
            }
        }
    }
}

/// Validates `labels` (a map) at `path`: keys are qualified names, values label values.
pub fn validate_labels(labels: Option<&Value>, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(map) = labels.and_then(Value::as_object) else {
        return errs;
    };
    for (k, v) in map {
        for msg in is_qualified_name(k) {
            errs.push(FieldError::invalid(path, &json!(k), msg));
        }
        let value = v.as_str().unwrap_or_default();
        for msg in is_valid_label_value(value) {
            errs.push(FieldError::invalid(path, v, msg));
        }
    }
    errs
}

/// Validates annotations at `path`: keys are (lower-cased) qualified names, total size ≤ 256 KiB.
pub fn validate_annotations(annotations: Option<&Value>, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(map) = annotations.and_then(Value::as_object) else {
        return errs;
    };
    let mut total = 0usize;
    for (k, v) in map {
        for msg in is_qualified_name(&k.to_ascii_lowercase()) {
            errs.push(FieldError::invalid(path, &json!(k), msg));
        }
        total += k.len() + v.as_str().map_or(0, str::len);
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
    errs
}

/// Validates an object's `metadata` (`ValidateObjectMeta`): name (required, format),
/// generateName prefix, namespace presence, labels, annotations, finalizers, ownerReferences.
pub fn validate_object_meta(obj: &Value, namespaced: bool, rule: NameRule) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let meta = obj.get("metadata").unwrap_or(&Value::Null);
    let name = meta.get("name").and_then(Value::as_str).unwrap_or_default();
    let generate = meta
        .get("generateName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if name.is_empty() {
        if generate.is_empty() {
            errs.push(FieldError {
                reason: "FieldValueRequired",
                field: "metadata.name".into(),
                message: "Required value: name or generateName is required".into(),
            });
        }
    } else {
        for msg in rule.check(name) {
            errs.push(FieldError::invalid("metadata.name", &json!(name), msg));
        }
    }
    if !generate.is_empty() && rule != NameRule::PathSegment {
        // Upstream checks the prefix with a trailing '-' trimmed and an 'a' appended… simplified:
        // a generated name is the prefix plus alphanumerics, so the prefix must fit the rule
        // once something alphanumeric follows it.
        let probe = format!("{generate}a");
        for msg in rule.check(&probe) {
            errs.push(FieldError::invalid(
                "metadata.generateName",
                &json!(generate),
                msg,
            ));
        }
    }
    let ns = meta
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if namespaced {
        if ns.is_empty() {
            errs.push(FieldError::required("metadata.namespace"));
        } else {
            for msg in is_dns1123_label(ns) {
                errs.push(FieldError::invalid("metadata.namespace", &json!(ns), msg));
            }
        }
    } else if !ns.is_empty() {
        errs.push(FieldError::forbidden(
            "metadata.namespace",
            "not allowed on this type",
        ));
    }
    errs.extend(validate_labels(meta.get("labels"), "metadata.labels"));
    errs.extend(validate_annotations(
        meta.get("annotations"),
        "metadata.annotations",
    ));
    if let Some(fins) = meta.get("finalizers").and_then(Value::as_array) {
        let mut seen = HashSet::new();
        for (i, f) in fins.iter().enumerate() {
            let s = f.as_str().unwrap_or_default();
            for msg in is_qualified_name(s) {
                errs.push(FieldError::invalid(
                    format!("metadata.finalizers[{i}]"),
                    f,
                    msg,
                ));
            }
            if !seen.insert(s) {
                errs.push(FieldError::duplicate(
                    format!("metadata.finalizers[{i}]"),
                    f,
                ));
            }
        }
    }
    if let Some(refs) = meta.get("ownerReferences").and_then(Value::as_array) {
        let mut controllers = 0;
        for (i, r) in refs.iter().enumerate() {
            let p = format!("metadata.ownerReferences[{i}]");
            for f in ["apiVersion", "kind", "name", "uid"] {
                if r.get(f).and_then(Value::as_str).is_none_or(str::is_empty) {
                    let v = r.get(f).cloned().unwrap_or(json!(""));
                    errs.push(FieldError::invalid(
                        format!("{p}.{f}"),
                        &v,
                        format!("{f} must not be empty"),
                    ));
                }
            }
            if r.get("controller").and_then(Value::as_bool) == Some(true) {
                controllers += 1;
            }
        }
        if controllers > 1 {
            errs.push(FieldError::invalid(
                "metadata.ownerReferences",
                &Value::Array(refs.clone()),
                "Only one reference can have Controller set to true",
            ));
        }
    }
    errs
}

/// Validates a label selector (`metav1.LabelSelector`) at `path`: matchLabels syntax and
/// matchExpressions operators.
pub fn validate_label_selector(sel: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = validate_labels(sel.get("matchLabels"), &join(path, "matchLabels"));
    if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
        for (i, e) in exprs.iter().enumerate() {
            let p = format!("{}[{i}]", join(path, "matchExpressions"));
            let op = e
                .get("operator")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let n = e
                .get("values")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            match op {
                "In" | "NotIn" if n == 0 => errs.push(FieldError::required(format!("{p}.values"))),
                "Exists" | "DoesNotExist" if n > 0 => errs.push(FieldError::forbidden(
                    format!("{p}.values"),
                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                )),
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                _ => errs.push(FieldError::invalid(
                    format!("{p}.operator"),
                    &json!(op),
                    "not a valid selector operator",
                )),
            }
            let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
            for msg in is_qualified_name(key) {
                errs.push(FieldError::invalid(format!("{p}.key"), &json!(key), msg));
            }
        }
    }
    errs
}

/// Whether a label selector matches `labels`; an empty selector matches everything.
pub fn selector_matches(sel: &Value, labels: Option<&Value>) -> bool {
    let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    if let Some(ml) = sel.get("matchLabels").and_then(Value::as_object) {
        if ml.iter().any(|(k, v)| get(k) != v.as_str()) {
            return false;
        }
    }
    if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
            let values: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|vs| vs.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let ok = match e
                .get("operator")
                .and_then(Value::as_str)
                .unwrap_or_default()
            {
                "In" => get(key).is_some_and(|v| values.contains(&v)),
                "NotIn" => get(key).is_none_or(|v| !values.contains(&v)),
                "Exists" => get(key).is_some(),
                "DoesNotExist" => get(key).is_none(),
                _ => false,
            };
            if !ok {
                return false;
            }
        }
    }
    true
}

/// Whether a selector has neither matchLabels nor matchExpressions.
pub fn selector_is_empty(sel: &Value) -> bool {
    let empty = |k: &str| match sel.get(k) {
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        _ => true,
    };
    empty("matchLabels") && empty("matchExpressions")
}

/// A parsed resource quantity, as a float: enough to compare requests with limits.
pub fn parse_quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '+' | '-')))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    if num.is_empty() || num == "+" || num == "-" {
        return None;
    }
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => {
            let exp: i32 = e[1..].parse().ok()?;
            10f64.powi(exp)
        }
        _ => return None,
    };
    Some(n * mult)
}

/// Upstream's message for a malformed quantity.
pub const QUANTITY_REGEX_MSG: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names() {
        let cases: &[(&str, bool, bool, bool)] = &[
            // (name, label ok, subdomain ok, dns1035 ok)
            ("a", true, true, true),
            ("my-name", true, true, true),
            ("123-abc", true, true, false),
            ("example.com", false, true, false),
            ("Foo", false, false, false),
            ("-a", false, false, false),
            ("a-", false, false, false),
            ("a..b", false, false, false),
            ("", false, false, false),
        ];
        for (name, label, sub, d1035) in cases {
            assert_eq!(is_dns1123_label(name).is_empty(), *label, "label {name}");
            assert_eq!(
                is_dns1123_subdomain(name).is_empty(),
                *sub,
                "subdomain {name}"
            );
            assert_eq!(is_dns1035_label(name).is_empty(), *d1035, "1035 {name}");
        }
        assert_eq!(
            is_dns1123_label(&"a".repeat(64)),
            vec!["must be no more than 63 characters"]
        );
    }

    #[test]
    fn upstream_subdomain_message() {
        let errs = is_dns1123_subdomain("Foo");
        assert_eq!(
            errs,
            vec!["a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"]
        );
        assert_eq!(
            is_dns1123_label("Foo"),
            vec!["a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"]
        );
    }

    #[test]
    fn qualified_names_and_label_values() {
        let cases: &[(&str, usize)] = &[
            ("app", 0),
            ("app.kubernetes.io/name", 0),
            ("MyName", 0),
            ("/a", 1),
            ("a/", 1),
            ("a/b/c", 1),
            ("Example.com/a", 1),
            ("-a", 1),
        ];
        for (k, n) in cases {
            assert_eq!(
                is_qualified_name(k).len(),
                *n,
                "{k}: {:?}",
                is_qualified_name(k)
            );
        }
        assert!(is_valid_label_value("").is_empty());
        assert!(is_valid_label_value("my_value").is_empty());
        assert_eq!(is_valid_label_value("a b").len(), 1);
        assert_eq!(is_valid_label_value(&"a".repeat(64)).len(), 1);
    }

    #[test]
    fn config_keys_and_port_names() {
        assert!(is_config_map_key("KEY_name-1.txt").is_empty());
        assert_eq!(is_config_map_key("a/b").len(), 1);
        assert_eq!(is_config_map_key("..a"), vec!["must not start with '..'"]);
        assert!(is_valid_port_name("http").is_empty());
        assert_eq!(
            is_valid_port_name("80"),
            vec!["must contain at least one letter (a-z)"]
        );
        assert_eq!(
            is_valid_port_name("a--b"),
            vec!["must not contain consecutive hyphens"]
        );
    }

    #[test]
    fn object_meta() {
        let cases: &[(Value, bool, NameRule, &[&str])] = &[
            (
                json!({"metadata": {"name": "a", "namespace": "default"}}),
                true,
                NameRule::Subdomain,
                &[],
            ),
            (
                json!({"metadata": {"generateName": "a-", "namespace": "default"}}),
                true,
                NameRule::Subdomain,
                &[],
            ),
            (
                json!({"metadata": {"namespace": "default"}}),
                true,
                NameRule::Subdomain,
                &["metadata.name: Required value: name or generateName is required"],
            ),
            (
                json!({"metadata": {"name": "a.b"}}),
                false,
                NameRule::Label,
                &["metadata.name: Invalid value: \"a.b\": a lowercase RFC 1123 label"],
            ),
            (
                json!({"metadata": {"name": "a", "namespace": "d", "labels": {"bad key": "v"}}}),
                true,
                NameRule::Subdomain,
                &["metadata.labels: Invalid value: \"bad key\": name part must consist of"],
            ),
            (
                json!({"metadata": {"name": "a", "namespace": "d", "labels": {"k": "bad value"}}}),
                true,
                NameRule::Subdomain,
                &["metadata.labels: Invalid value: \"bad value\": a valid label must be"],
            ),
            (
                json!({"metadata": {"name": "a", "namespace": "d", "annotations": {"a/b/c": "x"}}}),
                true,
                NameRule::Subdomain,
                &["metadata.annotations: Invalid value: \"a/b/c\": a qualified name must"],
            ),
        ];
        for (obj, namespaced, rule, want) in cases {
            let got: Vec<String> = validate_object_meta(obj, *namespaced, *rule)
                .iter()
                .map(FieldError::line)
                .collect();
            assert_eq!(got.len(), want.len(), "{obj}: {got:?}");
            for (g, w) in got.iter().zip(want.iter()) {
                assert!(g.starts_with(w), "{g} !~ {w}");
            }
        }
    }

    #[test]
    fn selectors() {
        let labels = json!({"app": "a", "tier": "web"});
        let cases: &[(Value, bool)] = &[
            (json!({}), true),
            (json!({"matchLabels": {"app": "a"}}), true),
            (json!({"matchLabels": {"app": "b"}}), false),
            (
                json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web"]}]}),
                true,
            ),
            (
                json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["web"]}]}),
                false,
            ),
            (
                json!({"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}),
                true,
            ),
            (
                json!({"matchExpressions": [{"key": "x", "operator": "Exists"}]}),
                false,
            ),
        ];
        for (sel, want) in cases {
            assert_eq!(selector_matches(sel, Some(&labels)), *want, "{sel}");
        }
        assert!(selector_is_empty(&json!({"matchLabels": {}})));
        let errs = validate_label_selector(
            &json!({"matchExpressions": [{"key": "k", "operator": "In"}]}),
            "spec.selector",
        );
        assert_eq!(
            errs[0].line(),
            "spec.selector.matchExpressions[0].values: Required value"
        );
    }

    #[test]
    fn quantities() {
        let cases: &[(&str, Option<f64>)] = &[
            ("1", Some(1.0)),
            ("500m", Some(0.5)),
            ("1Gi", Some(1073741824.0)),
            ("2k", Some(2000.0)),
            ("1e3", Some(1000.0)),
            ("abc", None),
            ("1Q", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_quantity(s), *want, "{s}");
        }
    }
}

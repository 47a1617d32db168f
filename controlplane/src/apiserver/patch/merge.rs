//! RFC 7386 JSON merge patch (`application/merge-patch+json`).

use serde_json::Value;

/// Applies the RFC 7386 merge patch `patch` to `target`: objects merge recursively, `null`
/// deletes, anything else (lists included) replaces.
pub fn merge_patch(target: &Value, patch: &Value) -> Value {
    let mut doc = target.clone();
    json_patch::merge(&mut doc, patch);
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rfc7386() {
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b", "c": 1}),
                json!({"a": null}),
                json!({"c": 1}),
            ),
            (
                json!({"a": {"b": 1, "c": 2}}),
                json!({"a": {"b": null, "d": 3}}),
                json!({"a": {"c": 2, "d": 3}}),
            ),
            (json!({"l": [1, 2]}), json!({"l": [3]}), json!({"l": [3]})),
            (json!({"a": 1}), json!({"missing": null}), json!({"a": 1})),
            (json!({"a": 1}), json!([1]), json!([1])),
        ];
        for (target, patch, want) in cases {
            assert_eq!(merge_patch(&target, &patch), want, "{patch}");
        }
    }
}

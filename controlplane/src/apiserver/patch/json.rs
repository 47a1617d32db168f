//! RFC 6902 JSON patch (`application/json-patch+json`).

use serde_json::Value;

use super::PatchError;

/// Applies the RFC 6902 JSON patch document `patch` (raw request body) to `target`.
///
/// A body that is not a list of valid operations is [`PatchError::Decode`] (upstream: 400); an
/// operation that cannot be applied, including a failed `test`, is [`PatchError::Failed`]
/// (upstream: 422).
pub fn json_patch(target: &Value, patch: &[u8]) -> Result<Value, PatchError> {
    let ops: json_patch::Patch = serde_json::from_slice(patch)
        .map_err(|e| PatchError::Decode(format!("invalid JSON patch: {e}")))?;
    let mut doc = target.clone();
    json_patch::patch(&mut doc, &ops.0).map_err(|e| PatchError::Failed(e.to_string()))?;
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    type IsErr = fn(&PatchError) -> bool;

    #[test]
    fn operations() {
        let target =
            json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"replicas": 1}});
        let cases: &[(&str, Result<Value, IsErr>)] = &[
            (
                r#"[{"op":"add","path":"/metadata/labels/y","value":"2"}]"#,
                Ok(
                    json!({"metadata": {"name": "a", "labels": {"x": "1", "y": "2"}}, "spec": {"replicas": 1}}),
                ),
            ),
            (
                r#"[{"op":"replace","path":"/spec/replicas","value":3}]"#,
                Ok(
                    json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"replicas": 3}}),
                ),
            ),
            (
                r#"[{"op":"remove","path":"/metadata/labels/x"}]"#,
                Ok(json!({"metadata": {"name": "a", "labels": {}}, "spec": {"replicas": 1}})),
            ),
            (
                r#"[{"op":"test","path":"/spec/replicas","value":1},{"op":"replace","path":"/spec/replicas","value":2}]"#,
                Ok(
                    json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"replicas": 2}}),
                ),
            ),
            (
                r#"[{"op":"test","path":"/spec/replicas","value":7}]"#,
                Err(|e| matches!(e, PatchError::Failed(_))),
            ),
            (
                r#"[{"op":"remove","path":"/nope"}]"#,
                Err(|e| matches!(e, PatchError::Failed(_))),
            ),
            (
                r#"{"op":"add"}"#,
                Err(|e| matches!(e, PatchError::Decode(_))),
            ),
            (
                r#"[{"op":"frobnicate","path":"/a"}]"#,
                Err(|e| matches!(e, PatchError::Decode(_))),
            ),
        ];
        for (patch, want) in cases {
            match (json_patch(&target, patch.as_bytes()), want) {
                (Ok(got), Ok(want)) => assert_eq!(&got, want, "{patch}"),
                (Err(e), Err(check)) => assert!(check(&e), "{patch}: {e:?}"),
                (got, _) => panic!("{patch}: unexpected {got:?}"),
            }
        }
    }
}

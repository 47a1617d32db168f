//! Kubernetes strategic merge patch, as upstream's apimachinery `pkg/util/strategicpatch`
//! (patch.go) applies it on the server: maps merge recursively, `null` deletes, lists of objects
//! with a `patchMergeKey` merge by that key, other lists are replaced, and the directives
//! `$patch`, `$retainKeys`, `$setElementOrder/<list>` and `$deleteFromPrimitiveList/<list>` are
//! honoured. The patch metadata comes from [`super::merge_keys`].

use serde_json::{Map, Value};

use super::merge_keys::{self, FieldMeta, GoType, ListStrategy};
use super::PatchError;

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

/// Applies a strategic merge patch to `target`, an object of `apiVersion` `api_version` and kind
/// `kind`.
///
/// Returns [`PatchError::StrategicNotSupported`] for kinds without patch metadata (custom
/// resources), for which upstream answers 415, and [`PatchError::BadPatch`] for malformed
/// directives or list items lacking their merge key.
pub fn strategic_merge_patch(
    target: &Value,
    patch: &Value,
    api_version: &str,
    kind: &str,
) -> Result<Value, PatchError> {
    let ty = merge_keys::type_for(api_version, kind).ok_or_else(|| {
        PatchError::StrategicNotSupported {
            api_version: api_version.to_string(),
            kind: kind.to_string(),
        }
    })?;
    let Value::Object(patch) = patch else {
        return Err(PatchError::BadPatch(
            "a strategic merge patch must be a JSON object".to_string(),
        ));
    };
    let original = match target {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    let merged = merge_map(original, patch, Some(ty), Mode::Patch)?;
    Ok(Value::Object(merged.unwrap_or_default()))
}

/// Whether the merge is a strategic merge patch or the merge step of server-side apply, which
/// additionally replaces atomic fields (`+structType=atomic`, `+mapType=atomic`) as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Strategic merge patch.
    Patch,
    /// Server-side apply.
    Apply,
}

fn bad(msg: impl Into<String>) -> PatchError {
    PatchError::BadPatch(msg.into())
}

/// Merges `patch` into `original`. `Ok(None)` means the map itself is deleted (`$patch: delete`).
pub(crate) fn merge_map(
    mut original: Map<String, Value>,
    patch: &Map<String, Value>,
    ty: Option<&'static GoType>,
    mode: Mode,
) -> Result<Option<Map<String, Value>>, PatchError> {
    if let Some(directive) = patch.get(DIRECTIVE) {
        match directive.as_str() {
            // As upstream's handleDirectiveInMergeMap: replace takes the patch itself.
            Some("replace") => {
                let mut rest = patch.clone();
                rest.remove(DIRECTIVE);
                return merge_map(Map::new(), &rest, ty, mode);
            }
            Some("delete") => return Ok(None),
            _ => return Err(bad(format!("Unable to apply {directive} in a map: {DIRECTIVE} must be \"replace\" or \"delete\""))),
        }
    }

    if let Some(retain) = patch.get(RETAIN_KEYS) {
        let Value::Array(keys) = retain else {
            return Err(bad(format!(
                "{RETAIN_KEYS} must be a list of strings, got {retain}"
            )));
        };
        let mut names = Vec::with_capacity(keys.len());
        for k in keys {
            let Some(k) = k.as_str() else {
                return Err(bad(format!(
                    "{RETAIN_KEYS} must be a list of strings, got {retain}"
                )));
            };
            names.push(k);
        }
        for key in patch.keys() {
            if !key.starts_with('$') && !names.contains(&key.as_str()) {
                return Err(bad(format!(
                    "The content of the patch does not match the {RETAIN_KEYS} list: {key} is not in {retain}"
                )));
            }
        }
        original.retain(|k, _| names.contains(&k.as_str()));
    }

    let mut orders: Vec<(&str, &Vec<Value>)> = Vec::new();
    for (key, pv) in patch {
        if key == DIRECTIVE || key == RETAIN_KEYS {
            continue;
        }
        if let Some(list) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            let Value::Array(remove) = pv else {
                return Err(bad(format!("{key} must be a list, got {pv}")));
            };
            if let Some(Value::Array(items)) = original.get_mut(list) {
                items.retain(|v| !remove.contains(v));
            }
            continue;
        }
        if let Some(list) = key.strip_prefix(SET_ELEMENT_ORDER) {
            let Value::Array(order) = pv else {
                return Err(bad(format!("{key} must be a list, got {pv}")));
            };
            orders.push((list, order));
            continue;
        }
        if pv.is_null() {
            original.remove(key);
            continue;
        }
        let meta = ty.and_then(|t| t.field(key));
        let merged = merge_field(original.remove(key), pv, meta, mode)?;
        if let Some(v) = merged {
            original.insert(key.clone(), v);
        }
    }

    for (list, order) in orders {
        let key = ty.and_then(|t| t.field(list)).and_then(|m| m.merge_key);
        if let Some(Value::Array(items)) = original.get_mut(list) {
            reorder(items, order, key)?;
        }
    }
    Ok(Some(original))
}

/// Merges one field's patch value into its original value (absent when `original` is `None`).
fn merge_field(
    original: Option<Value>,
    pv: &Value,
    meta: Option<&'static FieldMeta>,
    mode: Mode,
) -> Result<Option<Value>, PatchError> {
    let elem = meta.and_then(|m| m.elem);
    let atomic = mode == Mode::Apply && meta.is_some_and(|m| m.atomic);
    match pv {
        Value::Object(pm) if !atomic => {
            let base = match original {
                Some(Value::Object(om)) => om,
                _ => Map::new(),
            };
            Ok(merge_map(base, pm, elem, mode)?.map(Value::Object))
        }
        Value::Array(pl) if meta.is_some_and(|m| m.strategy == ListStrategy::Merge) => {
            let base = match original {
                Some(Value::Array(ol)) => ol,
                _ => Vec::new(),
            };
            let Some(meta) = meta else {
                return Ok(Some(pv.clone()));
            };
            Ok(Some(Value::Array(merge_list(base, pl, meta, mode)?)))
        }
        _ => Ok(Some(pv.clone())),
    }
}

/// Merges a patch list into an original list of a field with `patchStrategy:"merge"`.
fn merge_list(
    mut original: Vec<Value>,
    patch: &[Value],
    meta: &'static FieldMeta,
    mode: Mode,
) -> Result<Vec<Value>, PatchError> {
    let Some(key) = meta.merge_key else {
        // A list of scalars with the merge strategy (finalizers): union, keeping the original order.
        if patch
            .iter()
            .any(|v| v.get(DIRECTIVE).and_then(Value::as_str) == Some("replace"))
        {
            return Ok(patch
                .iter()
                .filter(|v| v.get(DIRECTIVE).is_none())
                .cloned()
                .collect());
        }
        for v in patch {
            if !original.contains(v) {
                original.push(v.clone());
            }
        }
        return Ok(original);
    };

    // `{"$patch": "replace"}` in a list replaces the whole list with the other patch items.
    if patch
        .iter()
        .any(|v| v.get(DIRECTIVE).and_then(Value::as_str) == Some("replace"))
    {
        let mut out = Vec::new();
        for item in patch {
            let Value::Object(m) = item else {
                return Err(bad(format!(
                    "list items of {} must be objects, got {item}",
                    meta.name
                )));
            };
            if m.contains_key(DIRECTIVE) {
                continue;
            }
            if let Some(m) = merge_map(Map::new(), m, meta.elem, mode)? {
                out.push(Value::Object(m));
            }
        }
        return Ok(out);
    }

    for item in patch {
        let Value::Object(pm) = item else {
            return Err(bad(format!(
                "list items of {} must be objects, got {item}",
                meta.name
            )));
        };
        let Some(kv) = pm.get(key) else {
            return Err(bad(format!(
                "map: {item} does not contain declared merge key: {key}"
            )));
        };
        let pos = original.iter().position(|o| o.get(key) == Some(kv));
        match pm.get(DIRECTIVE).map(|d| d.as_str()) {
            None => {}
            Some(Some("delete")) => {
                original.retain(|o| o.get(key) != Some(kv));
                continue;
            }
            Some(Some("replace")) => {}
            Some(_) => {
                return Err(bad(format!(
                    "Unable to apply {} in list {}: {DIRECTIVE} must be \"replace\" or \"delete\"",
                    pm[DIRECTIVE], meta.name
                )))
            }
        }
        match pos {
            Some(i) => {
                let base = match std::mem::take(&mut original[i]) {
                    Value::Object(om) => om,
                    _ => Map::new(),
                };
                match merge_map(base, pm, meta.elem, mode)? {
                    Some(m) => original[i] = Value::Object(m),
                    None => {
                        original.remove(i);
                    }
                }
            }
            None => {
                if let Some(m) = merge_map(Map::new(), pm, meta.elem, mode)? {
                    original.push(Value::Object(m));
                }
            }
        }
    }
    Ok(original)
}

/// Reorders `items` as `$setElementOrder` asks: the items named in `order` take the slots those
/// items occupy, in the order given; items not named keep their place. For lists of objects the
/// order lists `{key: value}` objects, for lists of scalars the values themselves.
fn reorder(items: &mut [Value], order: &[Value], key: Option<&str>) -> Result<(), PatchError> {
    let ids: Vec<&Value> = match key {
        Some(k) => order
            .iter()
            .map(|o| {
                o.get(k).ok_or_else(|| {
                    bad(format!(
                        "{SET_ELEMENT_ORDER} item {o} does not contain merge key {k}"
                    ))
                })
            })
            .collect::<Result<_, _>>()?,
        None => order.iter().collect(),
    };
    let id_of = |v: &Value| -> Option<usize> {
        let id = match key {
            Some(k) => v.get(k)?,
            None => v,
        };
        ids.iter().position(|x| *x == id)
    };
    let mut slots: Vec<usize> = Vec::new();
    let mut named: Vec<(usize, Value)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if let Some(rank) = id_of(item) {
            slots.push(i);
            named.push((rank, item.clone()));
        }
    }
    named.sort_by_key(|(rank, _)| *rank);
    for (slot, (_, item)) in slots.into_iter().zip(named) {
        items[slot] = item;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(containers: Value, labels: Value) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": containers, "tolerations": [{"key": "a", "operator": "Exists"}]}
                }
            }
        })
    }

    #[test]
    fn kubectl_patches() {
        let base = deployment(
            json!([{"name": "app", "image": "nginx:1.24",
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}, {"name": "C", "value": "3"}],
                    "ports": [{"containerPort": 80, "protocol": "TCP"}]},
                   {"name": "side", "image": "busybox"}]),
            json!({"app": "web", "tier": "front"}),
        );
        struct Case {
            name: &'static str,
            patch: Value,
            check: fn(&Value),
        }
        let cases = [
            Case {
                name: "kubectl apply: image change",
                patch: json!({"spec": {"template": {"spec": {
                    "$setElementOrder/containers": [{"name": "app"}, {"name": "side"}],
                    "containers": [{"name": "app", "image": "nginx:1.25"}]}}}}),
                check: |v| {
                    let c = &v["spec"]["template"]["spec"]["containers"];
                    assert_eq!(c[0]["image"], "nginx:1.25");
                    assert_eq!(c[0]["env"].as_array().map(Vec::len), Some(3));
                    assert_eq!(c[1]["name"], "side");
                },
            },
            Case {
                name: "kubectl apply: env var removed with $patch delete",
                patch: json!({"spec": {"template": {"spec": {
                    "$setElementOrder/containers": [{"name": "app"}, {"name": "side"}],
                    "containers": [{"name": "app",
                        "$setElementOrder/env": [{"name": "A"}, {"name": "C"}],
                        "env": [{"name": "B", "$patch": "delete"}]}]}}}}),
                check: |v| {
                    let env = &v["spec"]["template"]["spec"]["containers"][0]["env"];
                    assert_eq!(
                        env,
                        &json!([{"name": "A", "value": "1"}, {"name": "C", "value": "3"}])
                    );
                },
            },
            Case {
                name: "env value removed by null",
                patch: json!({"spec": {"template": {"spec": {"containers": [
                    {"name": "app", "env": [{"name": "A", "value": null}]}]}}}}),
                check: |v| {
                    let env = &v["spec"]["template"]["spec"]["containers"][0]["env"];
                    assert_eq!(env[0], json!({"name": "A"}));
                },
            },
            Case {
                name: "kubectl apply: container added first",
                patch: json!({"spec": {"template": {"spec": {
                    "$setElementOrder/containers": [{"name": "init"}, {"name": "app"}, {"name": "side"}],
                    "containers": [{"name": "init", "image": "alpine"}]}}}}),
                check: |v| {
                    let names: Vec<_> = v["spec"]["template"]["spec"]["containers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|c| c["name"].clone())
                        .collect();
                    assert_eq!(names, vec![json!("init"), json!("app"), json!("side")]);
                },
            },
            Case {
                name: "kubectl apply: label removed",
                patch: json!({"metadata": {"labels": {"tier": null}}}),
                check: |v| assert_eq!(v["metadata"]["labels"], json!({"app": "web"})),
            },
            Case {
                name: "kubectl label",
                patch: json!({"metadata": {"labels": {"a": "b"}}}),
                check: |v| {
                    assert_eq!(
                        v["metadata"]["labels"],
                        json!({"app": "web", "tier": "front", "a": "b"})
                    )
                },
            },
            Case {
                name: "kubectl scale",
                patch: json!({"spec": {"replicas": 5}}),
                check: |v| {
                    assert_eq!(v["spec"]["replicas"], 5);
                    assert_eq!(
                        v["spec"]["selector"],
                        json!({"matchLabels": {"app": "web"}})
                    );
                },
            },
            Case {
                name: "tolerations are replaced",
                patch: json!({"spec": {"template": {"spec": {"tolerations": [{"key": "b", "operator": "Exists"}]}}}}),
                check: |v| {
                    assert_eq!(
                        v["spec"]["template"]["spec"]["tolerations"],
                        json!([{"key": "b", "operator": "Exists"}])
                    )
                },
            },
            Case {
                name: "container list replaced with $patch replace",
                patch: json!({"spec": {"template": {"spec": {"containers": [
                    {"$patch": "replace"}, {"name": "only", "image": "x"}]}}}}),
                check: |v| {
                    assert_eq!(
                        v["spec"]["template"]["spec"]["containers"],
                        json!([{"name": "only", "image": "x"}])
                    )
                },
            },
            Case {
                name: "map replaced with $patch replace",
                patch: json!({"metadata": {"labels": {"$patch": "replace", "z": "1"}}}),
                check: |v| assert_eq!(v["metadata"]["labels"], json!({"z": "1"})),
            },
            Case {
                name: "container port merged by containerPort",
                patch: json!({"spec": {"template": {"spec": {"containers": [
                    {"name": "app", "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 443}]}]}}}}),
                check: |v| {
                    assert_eq!(
                        v["spec"]["template"]["spec"]["containers"][0]["ports"],
                        json!([{"containerPort": 80, "protocol": "TCP", "name": "http"}, {"containerPort": 443}])
                    )
                },
            },
            Case {
                name: "finalizers: merge and delete from primitive list",
                patch: json!({"metadata": {"finalizers": ["b"], "$deleteFromPrimitiveList/finalizers": ["x"]}}),
                check: |v| assert_eq!(v["metadata"]["finalizers"], json!(["b"])),
            },
            Case {
                name: "retainKeys on deployment strategy",
                patch: json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
                check: |v| assert_eq!(v["spec"]["strategy"], json!({"type": "Recreate"})),
            },
        ];
        for case in cases {
            let mut target = base.clone();
            if case.name.starts_with("retainKeys") {
                target["spec"]["strategy"] =
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}});
            }
            if case.name.starts_with("finalizers") {
                target["metadata"]["finalizers"] = json!(["x"]);
            }
            let got = strategic_merge_patch(&target, &case.patch, "apps/v1", "Deployment")
                .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            (case.check)(&got);
        }
    }

    #[test]
    fn service_ports_and_node_addresses() {
        let svc = json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}});
        let got = strategic_merge_patch(
            &svc,
            &json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}]}}),
            "v1",
            "Service",
        );
        assert_eq!(
            got.ok(),
            Some(json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}, {"port": 443}]}}))
        );
        let node =
            json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}});
        let patch = json!({"status": {"addresses": [{"type": "Hostname", "address": "n1"}]}});
        let got = strategic_merge_patch(&node, &patch, "v1", "Node");
        assert_eq!(
            got.ok()
                .map(|v| v["status"]["addresses"].as_array().map(Vec::len)),
            Some(Some(2))
        );
    }

    type IsErr = fn(&PatchError) -> bool;

    #[test]
    fn errors() {
        let target = json!({"spec": {"template": {"spec": {"containers": [{"name": "a"}]}}}});
        let cases: &[(&str, &str, Value, IsErr)] = &[
            (
                "apps/v1",
                "Deployment",
                json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}),
                |e| matches!(e, PatchError::BadPatch(m) if m.contains("merge key: name")),
            ),
            (
                "apps/v1",
                "Deployment",
                json!({"spec": {"$patch": "bogus"}}),
                |e| matches!(e, PatchError::BadPatch(_)),
            ),
            ("apps/v1", "Deployment", json!([1]), |e| {
                matches!(e, PatchError::BadPatch(_))
            }),
            ("example.com/v1", "Widget", json!({}), |e| {
                matches!(e, PatchError::StrategicNotSupported { .. })
            }),
        ];
        for (av, kind, patch, want) in cases {
            match strategic_merge_patch(&target, patch, av, kind) {
                Err(e) => assert!(want(&e), "{patch}: {e:?}"),
                Ok(v) => panic!("{patch}: unexpected success {v}"),
            }
        }
    }
}

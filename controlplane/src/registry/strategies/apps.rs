//! apps/v1 workloads: defaults (pkg/apis/apps/v1/defaults.go), validation
//! (pkg/apis/apps/validation/validation.go) and the strategies of pkg/registry/apps.

use serde_json::{json, Value};

use crate::registry::strategy::FieldError;
use crate::registry::validation::{
    immutable, selector_is_empty, selector_matches, validate_annotations, validate_label_selector,
    validate_labels,
};

use super::pods::{default_pod_template, validate_pod_spec};
use super::{set_default, Rules, StatusSplit, BASE};

fn workload_rules(
    namespaced: bool,
    default: fn(&mut Value),
    validate: fn(&Value) -> Vec<FieldError>,
) -> Rules {
    Rules {
        namespaced,
        status: StatusSplit::StatusKeepsLabels,
        generation: true,
        default,
        prepare_create: |obj| {
            if let Some(m) = obj.as_object_mut() {
                m.insert("status".into(), json!({}));
            }
        },
        validate,
        validate_update: selector_immutable,
        ..BASE
    }
}

/// The rules of Deployments.
pub fn deployment_rules(namespaced: bool) -> Rules {
    workload_rules(namespaced, default_deployment, validate_deployment)
}

/// The rules of ReplicaSets.
pub fn replica_set_rules(namespaced: bool) -> Rules {
    workload_rules(namespaced, default_replica_set, validate_replica_set)
}

/// The rules of DaemonSets.
pub fn daemon_set_rules(namespaced: bool) -> Rules {
    workload_rules(namespaced, default_daemon_set, validate_daemon_set)
}

/// The rules of ControllerRevisions: `data` and `revision` are immutable.
pub fn controller_revision_rules(namespaced: bool) -> Rules {
    Rules {
        namespaced,
        validate: |cr| {
            let mut errs = Vec::new();
            if let Some(r) = cr
                .get("revision")
                .filter(|r| r.as_i64().is_some_and(|r| r < 0))
            {
                errs.push(FieldError::invalid(
                    "revision",
                    r,
                    "must be greater than or equal to 0",
                ));
            }
            errs
        },
        validate_update: |new, old| {
            let mut errs = Vec::new();
            for f in ["data", "revision"] {
                if new.get(f) != old.get(f) {
                    errs.push(immutable(f, new.get(f).unwrap_or(&Value::Null)));
                }
            }
            errs
        },
        ..BASE
    }
}

fn default_template(spec: &mut Value) {
    if let Some(t) = spec.get_mut("template") {
        default_pod_template(t);
    }
}

/// Defaults a Deployment (`SetDefaults_Deployment`).
pub fn default_deployment(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    set_default(spec, "replicas", json!(1));
    set_default(spec, "strategy", json!({}));
    if let Some(strategy) = spec.get_mut("strategy") {
        set_default(strategy, "type", json!("RollingUpdate"));
        if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
            set_default(strategy, "rollingUpdate", json!({}));
            if let Some(ru) = strategy.get_mut("rollingUpdate") {
                set_default(ru, "maxUnavailable", json!("25%"));
                set_default(ru, "maxSurge", json!("25%"));
            }
        }
    }
    set_default(spec, "revisionHistoryLimit", json!(10));
    set_default(spec, "progressDeadlineSeconds", json!(600));
    default_template(spec);
}

/// Defaults a ReplicaSet (`SetDefaults_ReplicaSet`).
pub fn default_replica_set(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    set_default(spec, "replicas", json!(1));
    default_template(spec);
}

/// Defaults a DaemonSet (`SetDefaults_DaemonSet`).
pub fn default_daemon_set(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    set_default(spec, "updateStrategy", json!({}));
    if let Some(strategy) = spec.get_mut("updateStrategy") {
        set_default(strategy, "type", json!("RollingUpdate"));
        if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
            set_default(strategy, "rollingUpdate", json!({}));
            if let Some(ru) = strategy.get_mut("rollingUpdate") {
                set_default(ru, "maxUnavailable", json!(1));
                set_default(ru, "maxSurge", json!(0));
            }
        }
    }
    set_default(spec, "revisionHistoryLimit", json!(10));
    default_template(spec);
}

fn non_negative(spec: &Value, key: &str, errs: &mut Vec<FieldError>) {
    if let Some(v) = spec.get(key).filter(|v| v.as_i64().is_some_and(|n| n < 0)) {
        errs.push(FieldError::invalid(
            format!("spec.{key}"),
            v,
            "must be greater than or equal to 0",
        ));
    }
}

/// An int-or-percent as (value, is_percent), or an error message.
fn int_or_percent(v: &Value) -> Result<(i64, bool), &'static str> {
    match v {
        Value::Number(n) => n.as_i64().map(|n| (n, false)).ok_or("must be an integer or percentage (e.g '5%')"),
        Value::String(s) => s
            .strip_suffix('%')
            .and_then(|p| p.parse::<i64>().ok())
            .map(|p| (p, true))
            .ok_or("a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')"),
        _ => Err("must be an integer or percentage (e.g '5%')"),
    }
}

/// Checks `maxUnavailable`/`maxSurge` (`ValidateRollingUpdateDeployment`).
fn validate_rolling_update(ru: &Value, path: &str, zero_msg: &str, errs: &mut Vec<FieldError>) {
    let mut zero = [false, false];
    for (i, key) in ["maxUnavailable", "maxSurge"].iter().enumerate() {
        let Some(v) = ru.get(*key).filter(|v| !v.is_null()) else {
            zero[i] = true;
            continue;
        };
        let p = format!("{path}.{key}");
        match int_or_percent(v) {
            Err(msg) => errs.push(FieldError::invalid(p, v, msg)),
            Ok((n, _)) if n < 0 => errs.push(FieldError::invalid(
                p,
                v,
                "must be greater than or equal to 0",
            )),
            Ok((n, true)) if n > 100 && *key == "maxUnavailable" => {
                errs.push(FieldError::invalid(p, v, "must not be greater than 100%"));
            }
            Ok((n, _)) => zero[i] = n == 0,
        }
    }
    if zero[0] && zero[1] {
        let v = ru.get("maxUnavailable").cloned().unwrap_or(json!(0));
        errs.push(FieldError::invalid(
            format!("{path}.maxUnavailable"),
            &v,
            zero_msg,
        ));
    }
}

/// Selector and template checks shared by the workloads (`ValidatePodTemplateSpecForReplicaSet`
/// and friends), with `what` the lower-case kind in upstream's "empty selector" message.
fn validate_selector_and_template(obj: &Value, what: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    non_negative(spec, "replicas", &mut errs);
    non_negative(spec, "minReadySeconds", &mut errs);
    non_negative(spec, "revisionHistoryLimit", &mut errs);
    let template = spec.get("template").unwrap_or(&Value::Null);
    let labels = template.pointer("/metadata/labels");
    match spec.get("selector").filter(|s| !s.is_null()) {
        None => errs.push(FieldError::required("spec.selector")),
        Some(sel) if selector_is_empty(sel) => {
            errs.push(FieldError::invalid(
                "spec.selector",
                sel,
                format!("empty selector is invalid for {what}"),
            ));
        }
        Some(sel) => {
            let sel_errs = validate_label_selector(sel, "spec.selector");
            let valid = sel_errs.is_empty();
            errs.extend(sel_errs);
            if valid && !selector_matches(sel, labels) {
                errs.push(FieldError::invalid(
                    "spec.template.metadata.labels",
                    labels.unwrap_or(&json!({})),
                    "`selector` does not match template `labels`",
                ));
            }
        }
    }
    if template.is_null() {
        errs.push(FieldError::required("spec.template"));
        return errs;
    }
    errs.extend(validate_labels(labels, "spec.template.metadata.labels"));
    errs.extend(validate_annotations(
        template.pointer("/metadata/annotations"),
        "spec.template.metadata.annotations",
    ));
    let pod_spec = template.get("spec").unwrap_or(&Value::Null);
    errs.extend(validate_pod_spec(pod_spec, "spec.template.spec"));
    if let Some(rp) = pod_spec.get("restartPolicy").filter(|v| !v.is_null()) {
        if rp.as_str() != Some("Always") {
            errs.push(FieldError::not_supported(
                "spec.template.spec.restartPolicy",
                rp,
                &["Always"],
            ));
        }
    }
    if pod_spec
        .get("activeDeadlineSeconds")
        .is_some_and(|v| !v.is_null())
    {
        errs.push(FieldError::forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            "activeDeadlineSeconds in ReplicaSet is not Supported",
        ));
    }
    errs
}

/// Validates a Deployment (`ValidateDeployment`, common cases).
pub fn validate_deployment(obj: &Value) -> Vec<FieldError> {
    let mut errs = validate_selector_and_template(obj, "deployment");
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    if let Some(strategy) = spec.get("strategy") {
        let ty = strategy
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("RollingUpdate");
        let ru = strategy.get("rollingUpdate").filter(|v| !v.is_null());
        match ty {
            "Recreate" => {
                if ru.is_some() {
                    errs.push(FieldError::forbidden(
                        "spec.strategy.rollingUpdate",
                        "may not be specified when strategy `type` is 'Recreate'",
                    ));
                }
            }
            "RollingUpdate" => {
                if let Some(ru) = ru {
                    validate_rolling_update(
                        ru,
                        "spec.strategy.rollingUpdate",
                        "may not be 0 when `maxSurge` is 0",
                        &mut errs,
                    );
                }
            }
            other => errs.push(FieldError::not_supported(
                "spec.strategy.type",
                &json!(other),
                &["Recreate", "RollingUpdate"],
            )),
        }
    }
    non_negative(spec, "progressDeadlineSeconds", &mut errs);
    if let (Some(pd), min) = (
        spec.get("progressDeadlineSeconds").and_then(Value::as_i64),
        spec.get("minReadySeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0),
    ) {
        if pd <= min {
            errs.push(FieldError::invalid(
                "spec.progressDeadlineSeconds",
                &json!(pd),
                "must be greater than minReadySeconds",
            ));
        }
    }
    errs
}

/// Validates a ReplicaSet (`ValidateReplicaSet`).
pub fn validate_replica_set(obj: &Value) -> Vec<FieldError> {
    // Upstream's ReplicaSet message says "deployment" too (copied validation code).
    validate_selector_and_template(obj, "deployment")
}

/// Validates a DaemonSet (`ValidateDaemonSet`).
pub fn validate_daemon_set(obj: &Value) -> Vec<FieldError> {
    let mut errs = validate_selector_and_template(obj, "daemonset");
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    if let Some(strategy) = spec.get("updateStrategy") {
        let ty = strategy
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("RollingUpdate");
        match ty {
            "OnDelete" => {}
            "RollingUpdate" => {
                if let Some(ru) = strategy.get("rollingUpdate").filter(|v| !v.is_null()) {
                    validate_rolling_update(
                        ru,
                        "spec.updateStrategy.rollingUpdate",
                        "cannot be 0 when maxSurge is 0",
                        &mut errs,
                    );
                }
            }
            other => errs.push(FieldError::not_supported(
                "spec.updateStrategy.type",
                &json!(other),
                &["OnDelete", "RollingUpdate"],
            )),
        }
    }
    errs
}

/// `spec.selector` may not change (apps/v1).
fn selector_immutable(new: &Value, old: &Value) -> Vec<FieldError> {
    let n = new.pointer("/spec/selector");
    if n != old.pointer("/spec/selector") {
        vec![immutable("spec.selector", n.unwrap_or(&Value::Null))]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `kubectl create deployment web --image=nginx` sends.
    fn kubectl_create_deployment() -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "nginx", "image": "nginx", "resources": {}}]}
                }
            },
            "status": {}
        })
    }

    #[test]
    fn deployment_defaults() {
        let mut d = kubectl_create_deployment();
        default_deployment(&mut d);
        let spec = &d["spec"];
        assert_eq!(
            spec["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(spec["revisionHistoryLimit"], json!(10));
        assert_eq!(spec["progressDeadlineSeconds"], json!(600));
        let pod = &spec["template"]["spec"];
        assert_eq!(pod["restartPolicy"], json!("Always"));
        assert_eq!(pod["containers"][0]["imagePullPolicy"], json!("Always"));
        // Admission-only pod defaults are not applied to templates.
        assert!(pod.get("serviceAccountName").is_none());
        assert!(pod.get("tolerations").is_none());
        assert!(
            validate_deployment(&d).is_empty(),
            "{:?}",
            validate_deployment(&d)
        );

        let mut recreate = json!({"spec": {"strategy": {"type": "Recreate"}}});
        default_deployment(&mut recreate);
        assert_eq!(recreate["spec"]["strategy"], json!({"type": "Recreate"}));
        assert_eq!(recreate["spec"]["replicas"], json!(1));
    }

    #[test]
    fn replica_and_daemon_set_defaults() {
        let mut rs = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "a:1"}]}}}});
        default_replica_set(&mut rs);
        assert_eq!(rs["spec"]["replicas"], json!(1));
        assert_eq!(
            rs["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
            json!("IfNotPresent")
        );
        let mut ds = json!({"spec": {}});
        default_daemon_set(&mut ds);
        assert_eq!(
            ds["spec"],
            json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}, "revisionHistoryLimit": 10})
        );
    }

    #[test]
    fn validation() {
        let base = {
            let mut d = kubectl_create_deployment();
            default_deployment(&mut d);
            d
        };
        let with = |f: &dyn Fn(&mut Value)| {
            let mut v = base.clone();
            f(&mut v);
            v
        };
        let cases: Vec<(Value, Vec<&str>)> = vec![
            (with(&|d| d["spec"].as_object_mut().map(|m| m.remove("selector")).map_or((), |_| ())), vec!["spec.selector: Required value"]),
            (
                with(&|d| d["spec"]["selector"] = json!({})),
                vec!["spec.selector: Invalid value: {}: empty selector is invalid for deployment"],
            ),
            (
                with(&|d| d["spec"]["selector"] = json!({"matchLabels": {"app": "other"}})),
                vec!["spec.template.metadata.labels: Invalid value: {\"app\":\"web\"}: `selector` does not match template `labels`"],
            ),
            (
                with(&|d| d["spec"]["replicas"] = json!(-1)),
                vec!["spec.replicas: Invalid value: -1: must be greater than or equal to 0"],
            ),
            (
                with(&|d| d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("")),
                vec!["spec.template.spec.containers[0].image: Required value"],
            ),
            (
                with(&|d| d["spec"]["template"]["spec"]["restartPolicy"] = json!("Never")),
                vec!["spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""],
            ),
            (
                with(&|d| d["spec"]["strategy"]["rollingUpdate"] = json!({"maxUnavailable": 0, "maxSurge": "0%"})),
                vec!["spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0"],
            ),
            (
                with(&|d| d["spec"]["strategy"] = json!({"type": "Recreate", "rollingUpdate": {}})),
                vec!["spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'"],
            ),
            (
                with(&|d| d["spec"]["progressDeadlineSeconds"] = json!(5)),
                vec![],
            ),
            (
                with(&|d| {
                    d["spec"]["progressDeadlineSeconds"] = json!(5);
                    d["spec"]["minReadySeconds"] = json!(10);
                }),
                vec!["spec.progressDeadlineSeconds: Invalid value: 5: must be greater than minReadySeconds"],
            ),
        ];
        for (d, want) in cases {
            let got: Vec<String> = validate_deployment(&d)
                .iter()
                .map(FieldError::line)
                .collect();
            assert_eq!(got, want, "{}", d["spec"]);
        }
    }

    #[test]
    fn selector_is_immutable() {
        let old = json!({"spec": {"selector": {"matchLabels": {"app": "a"}}}});
        let new = json!({"spec": {"selector": {"matchLabels": {"app": "b"}}}});
        let got: Vec<String> = selector_immutable(&new, &old)
            .iter()
            .map(FieldError::line)
            .collect();
        assert_eq!(got, ["spec.selector: Invalid value: {\"matchLabels\":{\"app\":\"b\"}}: field is immutable"]);
        assert!(selector_immutable(&old, &old).is_empty());
    }
}

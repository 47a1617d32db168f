//! Pods and pod templates: upstream's defaulters (pkg/apis/core/v1/defaults.go), the defaulting
//! admission plugins that need no lookups (Priority, DefaultTolerationSeconds; ServiceAccount
//! admission is registry::admission_serviceaccount), pod spec validation
//! (pkg/apis/core/validation/validation.go) and the pod strategy
//! (pkg/registry/core/pod/strategy.go).

use std::collections::{BTreeMap, HashSet};

use serde_json::{json, Value};

use crate::registry::strategy::FieldError;
use crate::registry::validation::{
    is_dns1123_label, is_valid_port_name, join, not_found, parse_quantity, validate_port_num,
    QUANTITY_REGEX_MSG,
};

use super::{set_default, with_array_items};

/// Container lists of a pod spec that hold ordinary containers.
const CONTAINER_LISTS: &[&str] = &["initContainers", "containers", "ephemeralContainers"];

/// Upstream's forbidden-update message for pods (`ValidatePodUpdate`).
pub const POD_UPDATE_FORBIDDEN: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// The default pull policy for `image` (`SetDefaults_Container`): `Always` for `:latest` or an
/// untagged, undigested image, else `IfNotPresent`.
pub fn default_pull_policy(image: &str) -> &'static str {
    if image.is_empty() || image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) if tag != "latest" => "IfNotPresent",
        _ => "Always",
    }
}

fn default_http_get(action: &mut Value) {
    if let Some(h) = action.get_mut("httpGet") {
        set_default(h, "path", json!("/"));
        set_default(h, "scheme", json!("HTTP"));
    }
}

fn default_probe(probe: &mut Value) {
    set_default(probe, "timeoutSeconds", json!(1));
    set_default(probe, "periodSeconds", json!(10));
    set_default(probe, "successThreshold", json!(1));
    set_default(probe, "failureThreshold", json!(3));
    default_http_get(probe);
}

fn default_container(c: &mut Value, host_network: bool) {
    let image = c
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    set_default(c, "imagePullPolicy", json!(default_pull_policy(&image)));
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    set_default(c, "resources", json!({}));
    with_array_items(c, "ports", |p| {
        set_default(p, "protocol", json!("TCP"));
        if host_network {
            if let Some(cp) = p.get("containerPort").cloned() {
                set_default(p, "hostPort", cp);
            }
        }
    });
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(probe).filter(|p| p.is_object()) {
            default_probe(p);
        }
    }
    if let Some(lc) = c.get_mut("lifecycle") {
        for h in ["postStart", "preStop"] {
            if let Some(h) = lc.get_mut(h) {
                default_http_get(h);
            }
        }
    }
    with_array_items(c, "env", |e| {
        if let Some(fr) = e.pointer_mut("/valueFrom/fieldRef") {
            set_default(fr, "apiVersion", json!("v1"));
        }
    });
}

fn default_volume(v: &mut Value) {
    let has_source = v
        .as_object()
        .is_some_and(|m| m.iter().any(|(k, val)| k != "name" && !val.is_null()));
    if !has_source {
        set_default(v, "emptyDir", json!({}));
    }
    for src in ["configMap", "secret", "downwardAPI", "projected"] {
        if let Some(s) = v.get_mut(src).filter(|s| s.is_object()) {
            set_default(s, "defaultMode", json!(420));
        }
    }
    if let Some(sources) = v
        .pointer_mut("/projected/sources")
        .and_then(Value::as_array_mut)
    {
        for s in sources {
            if let Some(t) = s.get_mut("serviceAccountToken") {
                set_default(t, "expirationSeconds", json!(3600));
            }
        }
    }
    if let Some(hp) = v.get_mut("hostPath") {
        set_default(hp, "type", json!(""));
    }
}

/// Defaults a pod spec as `SetDefaults_PodSpec` and the per-field defaulters do; used for pods
/// and for every pod template.
pub fn default_pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    let host_network = spec.get("hostNetwork").and_then(Value::as_bool) == Some(true);
    for list in CONTAINER_LISTS {
        with_array_items(spec, list, |c| default_container(c, host_network));
    }
    with_array_items(spec, "volumes", default_volume);
}

/// Defaults a pod template (`spec.template` of a workload): its spec only.
pub fn default_pod_template(template: &mut Value) {
    if let Some(spec) = template.get_mut("spec") {
        default_pod_spec(spec);
    }
}

/// The well-known priority classes' values, as the Priority admission plugin resolves them.
fn priority_of_class(class: &str) -> Option<i64> {
    match class {
        "system-node-critical" => Some(2_000_001_000),
        "system-cluster-critical" => Some(2_000_000_000),
        _ => None,
    }
}

/// Defaults a whole Pod: `SetDefaults_Pod`, the pod spec defaulters, and the defaulting
/// admission plugins Priority and DefaultTolerationSeconds.
pub fn default_pod(pod: &mut Value) {
    let Some(spec) = pod.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    // SetDefaults_Pod: requests default to limits.
    for list in ["initContainers", "containers"] {
        with_array_items(spec, list, |c| {
            let Some(limits) = c
                .pointer("/resources/limits")
                .and_then(Value::as_object)
                .cloned()
            else {
                return;
            };
            if let Some(res) = c.get_mut("resources") {
                set_default(res, "requests", json!({}));
                if let Some(req) = res.get_mut("requests").and_then(Value::as_object_mut) {
                    for (k, v) in limits {
                        req.entry(k).or_insert(v);
                    }
                }
            }
        });
    }
    set_default(spec, "enableServiceLinks", json!(true));
    default_pod_spec(spec);
    // v1 conversion: serviceAccountName falls back to the deprecated serviceAccount, which
    // mirrors it. `default` is ServiceAccount admission's job on create
    // (registry::admission_serviceaccount), since mirror pods must keep none.
    let sa = spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .or_else(|| {
            spec.get("serviceAccount")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        })
        .map(str::to_string);
    if let Some(sa) = sa {
        spec["serviceAccountName"] = json!(sa);
        spec["serviceAccount"] = json!(sa);
    }
    // Priority admission (without PriorityClass objects: only the built-in classes are known).
    if spec.get("priority").is_none_or(Value::is_null) {
        let class = spec
            .get("priorityClassName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        spec["priority"] = json!(priority_of_class(class).unwrap_or(0));
    }
    set_default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    // DefaultTolerationSeconds admission.
    let mut tolerations = spec
        .get("tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut changed = false;
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let present = tolerations.iter().any(|t| {
            let k = t.get("key").and_then(Value::as_str);
            let effect = t.get("effect").and_then(Value::as_str).unwrap_or_default();
            let op = t.get("operator").and_then(Value::as_str).unwrap_or("Equal");
            // A toleration of every taint (no key, Exists) also covers these.
            (k == Some(key) || (k.is_none_or(str::is_empty) && op == "Exists"))
                && (effect.is_empty() || effect == "NoExecute")
        });
        if !present {
            tolerations.push(json!({
                "key": key,
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            }));
            changed = true;
        }
    }
    if changed {
        spec["tolerations"] = Value::Array(tolerations);
    }
}

/// The QoS class of a pod spec (`GetPodQOS`): Guaranteed, Burstable or BestEffort.
pub fn qos_class(spec: &Value) -> &'static str {
    let mut any = false;
    let mut guaranteed = true;
    for list in ["initContainers", "containers"] {
        for c in spec
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let limits = c.pointer("/resources/limits").and_then(Value::as_object);
            let requests = c.pointer("/resources/requests").and_then(Value::as_object);
            let nonzero = |m: Option<&serde_json::Map<String, Value>>| {
                m.into_iter().flatten().any(|(k, v)| {
                    matches!(k.as_str(), "cpu" | "memory")
                        && v.as_str()
                            .and_then(parse_quantity)
                            .is_some_and(|q| q != 0.0)
                })
            };
            if nonzero(limits) || nonzero(requests) {
                any = true;
            }
            for r in ["cpu", "memory"] {
                let l = limits
                    .and_then(|m| m.get(r))
                    .and_then(Value::as_str)
                    .and_then(parse_quantity);
                let q = requests
                    .and_then(|m| m.get(r))
                    .and_then(Value::as_str)
                    .and_then(parse_quantity)
                    .or(l);
                if l.is_none() || l != q {
                    guaranteed = false;
                }
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn validate_quantities(
    map: Option<&Value>,
    path: &str,
    errs: &mut Vec<FieldError>,
) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (k, v) in map.and_then(Value::as_object).into_iter().flatten() {
        let p = format!("{path}[{k}]");
        let s = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => String::new(),
        };
        match parse_quantity(&s) {
            None => errs.push(FieldError::invalid(p, v, QUANTITY_REGEX_MSG)),
            Some(q) if q < 0.0 => errs.push(FieldError::invalid(
                p,
                v,
                "must be greater than or equal to 0",
            )),
            Some(q) => {
                out.insert(k.clone(), q);
            }
        }
    }
    out
}

fn validate_resources(res: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let limits_path = join(path, "limits");
    let requests_path = join(path, "requests");
    let limits = validate_quantities(res.get("limits"), &limits_path, errs);
    let requests = validate_quantities(res.get("requests"), &requests_path, errs);
    for (k, q) in &requests {
        if let Some(l) = limits.get(k) {
            if q > l {
                let req_text = res
                    .pointer(&format!("/requests/{k}"))
                    .cloned()
                    .unwrap_or(Value::Null);
                let lim_text = res
                    .pointer(&format!("/limits/{k}"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                errs.push(FieldError::invalid(
                    format!("{requests_path}[{k}]"),
                    &req_text,
                    format!("must be less than or equal to {k} limit of {lim_text}"),
                ));
            }
        }
    }
}

fn validate_probe(probe: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let handlers = ["exec", "httpGet", "tcpSocket", "grpc"];
    let n = handlers
        .iter()
        .filter(|h| probe.get(**h).is_some_and(|v| !v.is_null()))
        .count();
    if n == 0 {
        errs.push(FieldError {
            reason: "FieldValueRequired",
            field: path.to_string(),
            message: "Required value: must specify a handler type".into(),
        });
    } else if n > 1 {
        errs.push(FieldError::forbidden(
            path,
            "may not specify more than 1 handler type",
        ));
    }
    for f in [
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
    ] {
        if let Some(v) = probe.get(f).filter(|v| v.as_i64().is_some_and(|n| n < 1)) {
            errs.push(FieldError::invalid(
                join(path, f),
                v,
                "must be greater than or equal to 1",
            ));
        }
    }
    if let Some(v) = probe
        .get("initialDelaySeconds")
        .filter(|v| v.as_i64().is_some_and(|n| n < 0))
    {
        errs.push(FieldError::invalid(
            join(path, "initialDelaySeconds"),
            v,
            "must be greater than or equal to 0",
        ));
    }
    for (h, pp) in [("httpGet", "port"), ("tcpSocket", "port")] {
        if let Some(port) = probe.get(h).and_then(|a| a.get(pp)) {
            let p = format!("{path}.{h}.{pp}");
            match port {
                Value::String(s) => {
                    for msg in is_valid_port_name(s) {
                        errs.push(FieldError::invalid(&p, port, msg));
                    }
                }
                _ => errs.extend(validate_port_num(port, &p)),
            }
        }
    }
}

fn validate_container(
    c: &Value,
    path: &str,
    volumes: &HashSet<String>,
    errs: &mut Vec<FieldError>,
    ephemeral: bool,
) {
    // As upstream, whitespace is not trimmed: " " is a placeholder some tools put in templates.
    if c.get("image")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        errs.push(FieldError::required(join(path, "image")));
    }
    if let Some(policy) = c.get("imagePullPolicy").filter(|v| !v.is_null()) {
        let supported = ["Always", "IfNotPresent", "Never"];
        if !policy.as_str().is_some_and(|p| supported.contains(&p)) {
            errs.push(FieldError::not_supported(
                join(path, "imagePullPolicy"),
                policy,
                &supported,
            ));
        }
    }
    if let Some(policy) = c.get("terminationMessagePolicy").filter(|v| !v.is_null()) {
        let supported = ["File", "FallbackToLogsOnError"];
        if !policy.as_str().is_some_and(|p| supported.contains(&p)) {
            errs.push(FieldError::not_supported(
                join(path, "terminationMessagePolicy"),
                policy,
                &supported,
            ));
        }
    }
    let mut port_names = HashSet::new();
    for (i, p) in c
        .get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let pp = format!("{path}.ports[{i}]");
        if ephemeral {
            errs.push(FieldError::forbidden(
                &pp,
                "cannot be set for an Ephemeral Container",
            ));
            continue;
        }
        if let Some(name) = p
            .get("name")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            for msg in is_valid_port_name(name) {
                errs.push(FieldError::invalid(format!("{pp}.name"), &json!(name), msg));
            }
            if !port_names.insert(name.to_string()) {
                errs.push(FieldError::duplicate(format!("{pp}.name"), &json!(name)));
            }
        }
        match p.get("containerPort") {
            None | Some(Value::Null) => {
                errs.push(FieldError::required(format!("{pp}.containerPort")))
            }
            Some(v) if v.as_i64() == Some(0) => {
                errs.push(FieldError::required(format!("{pp}.containerPort")))
            }
            Some(v) => errs.extend(validate_port_num(v, &format!("{pp}.containerPort"))),
        }
        if let Some(hp) = p
            .get("hostPort")
            .filter(|v| v.as_i64().is_some_and(|n| n != 0))
        {
            errs.extend(validate_port_num(hp, &format!("{pp}.hostPort")));
        }
        if let Some(proto) = p.get("protocol").filter(|v| !v.is_null()) {
            let supported = ["SCTP", "TCP", "UDP"];
            if !proto.as_str().is_some_and(|s| supported.contains(&s)) {
                errs.push(FieldError::not_supported(
                    format!("{pp}.protocol"),
                    proto,
                    &supported,
                ));
            }
        }
    }
    for (i, e) in c
        .get("env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if e.get("name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            errs.push(FieldError::required(format!("{path}.env[{i}].name")));
        }
    }
    let mut mount_paths = HashSet::new();
    for (i, m) in c
        .get("volumeMounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let mp = format!("{path}.volumeMounts[{i}]");
        match m
            .get("name")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            None => errs.push(FieldError::required(format!("{mp}.name"))),
            Some(n) if !volumes.contains(n) => {
                errs.push(not_found(format!("{mp}.name"), &json!(n)))
            }
            Some(_) => {}
        }
        match m
            .get("mountPath")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            None => errs.push(FieldError::required(format!("{mp}.mountPath"))),
            Some(p) => {
                if !mount_paths.insert(p.to_string()) {
                    errs.push(FieldError::invalid(
                        format!("{mp}.mountPath"),
                        &json!(p),
                        "must be unique",
                    ));
                }
            }
        }
    }
    if let Some(res) = c.get("resources") {
        validate_resources(res, &join(path, "resources"), errs);
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get(probe).filter(|p| !p.is_null()) {
            if ephemeral {
                errs.push(FieldError::forbidden(
                    join(path, probe),
                    "cannot be set for an Ephemeral Container",
                ));
            } else {
                validate_probe(p, &join(path, probe), errs);
            }
        }
    }
}

/// Validates a pod spec at `path` (`spec` for pods, `spec.template.spec` for workloads).
pub fn validate_pod_spec(spec: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    // Volumes first: mounts refer to them.
    let mut volumes = HashSet::new();
    for (i, v) in spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let vp = format!("{path}.volumes[{i}].name");
        let name = v.get("name").and_then(Value::as_str).unwrap_or_default();
        if name.is_empty() {
            errs.push(FieldError::required(vp));
            continue;
        }
        for msg in is_dns1123_label(name) {
            errs.push(FieldError::invalid(&vp, &json!(name), msg));
        }
        if !volumes.insert(name.to_string()) {
            errs.push(FieldError::duplicate(vp, &json!(name)));
        }
        let sources: Vec<&String> = v
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, val)| k.as_str() != "name" && !val.is_null())
            .map(|(k, _)| k)
            .collect();
        if let Some(second) = sources.get(1) {
            errs.push(FieldError::forbidden(
                format!("{path}.volumes[{i}].{second}"),
                "may not specify more than 1 volume type",
            ));
        }
    }
    let containers = spec.get("containers").and_then(Value::as_array);
    if containers.is_none_or(Vec::is_empty) {
        errs.push(FieldError::required(join(path, "containers")));
    }
    let mut names = HashSet::new();
    for list in CONTAINER_LISTS {
        for (i, c) in spec
            .get(*list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let cp = format!("{path}.{list}[{i}]");
            let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
            if name.is_empty() {
                errs.push(FieldError::required(format!("{cp}.name")));
            } else {
                for msg in is_dns1123_label(name) {
                    errs.push(FieldError::invalid(format!("{cp}.name"), &json!(name), msg));
                }
                if !names.insert(name.to_string()) {
                    errs.push(FieldError::duplicate(format!("{cp}.name"), &json!(name)));
                }
            }
            validate_container(c, &cp, &volumes, &mut errs, *list == "ephemeralContainers");
        }
    }
    if let Some(rp) = spec.get("restartPolicy").filter(|v| !v.is_null()) {
        let supported = ["Always", "OnFailure", "Never"];
        if !rp.as_str().is_some_and(|s| supported.contains(&s)) {
            errs.push(FieldError::not_supported(
                join(path, "restartPolicy"),
                rp,
                &supported,
            ));
        }
    }
    if let Some(dp) = spec.get("dnsPolicy").filter(|v| !v.is_null()) {
        let supported = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
        if !dp.as_str().is_some_and(|s| supported.contains(&s)) {
            errs.push(FieldError::not_supported(
                join(path, "dnsPolicy"),
                dp,
                &supported,
            ));
        }
    }
    if let Some(v) = spec.get("activeDeadlineSeconds").filter(|v| !v.is_null()) {
        if !v
            .as_i64()
            .is_some_and(|n| (1..=i64::from(i32::MAX)).contains(&n))
        {
            errs.push(FieldError::invalid(
                join(path, "activeDeadlineSeconds"),
                v,
                "must be between 1 and 2147483647, inclusive",
            ));
        }
    }
    for (i, t) in spec
        .get("tolerations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let tp = format!("{path}.tolerations[{i}]");
        let op = t.get("operator").and_then(Value::as_str).unwrap_or("Equal");
        match op {
            "Equal" | "Exists" => {}
            other => errs.push(FieldError::not_supported(
                format!("{tp}.operator"),
                &json!(other),
                &["Equal", "Exists"],
            )),
        }
        if op == "Exists"
            && t.get("value")
                .and_then(Value::as_str)
                .is_some_and(|v| !v.is_empty())
        {
            errs.push(FieldError::invalid(
                format!("{tp}.operator"),
                &json!(op),
                "value must be empty when `operator` is 'Exists'",
            ));
        }
        if let Some(e) = t
            .get("effect")
            .and_then(Value::as_str)
            .filter(|e| !e.is_empty())
        {
            let supported = ["NoSchedule", "PreferNoSchedule", "NoExecute"];
            if !supported.contains(&e) {
                errs.push(FieldError::not_supported(
                    format!("{tp}.effect"),
                    &json!(e),
                    &supported,
                ));
            }
        }
    }
    errs
}

/// Validates a pod update beyond the new pod's own validity (`ValidatePodUpdate`): only
/// images, activeDeadlineSeconds, added tolerations and (while deleting, or from a negative
/// value to 1) terminationGracePeriodSeconds may change.
pub fn validate_pod_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let (Some(new_spec), Some(old_spec)) = (new.get("spec"), old.get("spec")) else {
        return errs;
    };
    // Start from the old spec and apply each allowed change; whatever still differs is
    // forbidden.
    let mut allowed = old_spec.clone();
    for list in ["containers", "initContainers"] {
        let new_list = new_spec.get(list).and_then(Value::as_array);
        if let (Some(nl), Some(ol)) = (
            new_list,
            allowed.get_mut(list).and_then(Value::as_array_mut),
        ) {
            if nl.len() == ol.len() {
                for (o, n) in ol.iter_mut().zip(nl) {
                    if let (Some(om), Some(img)) = (o.as_object_mut(), n.get("image")) {
                        om.insert("image".into(), img.clone());
                    }
                }
            }
        }
    }
    match (
        old_spec.get("activeDeadlineSeconds"),
        new_spec.get("activeDeadlineSeconds"),
    ) {
        (_, None | Some(Value::Null)) => {}
        (old_v, Some(n)) => {
            let ok = match old_v.and_then(Value::as_i64) {
                None => true,
                Some(o) => n.as_i64().is_some_and(|n| n <= o),
            };
            if ok {
                allowed["activeDeadlineSeconds"] = n.clone();
            }
        }
    }
    let old_tols = old_spec
        .get("tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(new_tols) = new_spec.get("tolerations").and_then(Value::as_array) {
        // Additions only: every old toleration is still there.
        if old_tols.iter().all(|t| new_tols.contains(t)) {
            allowed["tolerations"] = Value::Array(new_tols.clone());
        }
    }
    let deleting = new
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null());
    let old_grace = old_spec
        .get("terminationGracePeriodSeconds")
        .and_then(Value::as_i64);
    let new_grace = new_spec.get("terminationGracePeriodSeconds");
    if deleting
        || (old_grace.is_some_and(|g| g < 0) && new_grace.and_then(Value::as_i64) == Some(1))
    {
        if let Some(g) = new_grace {
            allowed["terminationGracePeriodSeconds"] = g.clone();
        }
    }
    if &allowed != new_spec {
        let changed = changed_fields(&allowed, new_spec);
        errs.push(FieldError::forbidden(
            "spec",
            format!("{POD_UPDATE_FORBIDDEN}\n  changed: {}", changed.join(", ")),
        ));
    }
    errs
}

/// Top-level spec fields (`spec.x`) that differ between `a` and `b`.
fn changed_fields(a: &Value, b: &Value) -> Vec<String> {
    let mut keys: Vec<&String> = a
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k)
        .chain(b.as_object().into_iter().flatten().map(|(k, _)| k))
        .collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(k.as_str()) != b.get(k.as_str()))
        .map(|k| format!("spec.{k}"))
        .collect()
}

/// Pod-specific create preparation (`podStrategy.PrepareForCreate`): a fresh status of phase
/// Pending with the computed QoS class.
pub fn prepare_pod_for_create(pod: &mut Value) {
    let qos = pod.get("spec").map_or("BestEffort", qos_class);
    if let Some(m) = pod.as_object_mut() {
        m.insert(
            "status".into(),
            json!({"phase": "Pending", "qosClass": qos}),
        );
    }
}

/// Pod-status update preparation (`podStatusStrategy.PrepareForUpdate`): spec and owner
/// references stay as they were.
pub fn prepare_pod_for_status_update(new: &mut Value, old: &Value) {
    super::keep_old(new, old, "spec");
    if let Some(refs) = old.pointer("/metadata/ownerReferences") {
        if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
            m.insert("ownerReferences".into(), refs.clone());
        }
    } else if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("ownerReferences");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `kubectl run nginx --image=nginx` sends.
    fn kubectl_run() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "nginx", "namespace": "default", "labels": {"run": "nginx"}},
            "spec": {"containers": [{"name": "nginx", "image": "nginx", "resources": {}}],
                     "dnsPolicy": "ClusterFirst", "restartPolicy": "Always"},
            "status": {}
        })
    }

    #[test]
    fn kubectl_run_gets_upstream_defaults() {
        let mut pod = kubectl_run();
        default_pod(&mut pod);
        let want = json!({
            "containers": [{
                "name": "nginx",
                "image": "nginx",
                "imagePullPolicy": "Always",
                "resources": {},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
            }],
            "dnsPolicy": "ClusterFirst",
            "enableServiceLinks": true,
            "preemptionPolicy": "PreemptLowerPriority",
            "priority": 0,
            "restartPolicy": "Always",
            "schedulerName": "default-scheduler",
            "securityContext": {},
            "terminationGracePeriodSeconds": 30,
            "tolerations": [
                {"effect": "NoExecute", "key": "node.kubernetes.io/not-ready", "operator": "Exists", "tolerationSeconds": 300},
                {"effect": "NoExecute", "key": "node.kubernetes.io/unreachable", "operator": "Exists", "tolerationSeconds": 300},
            ],
        });
        assert_eq!(pod["spec"], want);
        // Idempotent: defaulting again (as on every update) changes nothing.
        let again = pod.clone();
        default_pod(&mut pod);
        assert_eq!(pod, again);
    }

    #[test]
    fn pull_policies() {
        let cases = [
            ("nginx", "Always"),
            ("nginx:latest", "Always"),
            ("nginx:1.25", "IfNotPresent"),
            ("localhost:5000/nginx", "Always"),
            ("localhost:5000/nginx:1", "IfNotPresent"),
            ("nginx@sha256:abcd", "IfNotPresent"),
            ("", "IfNotPresent"),
        ];
        for (image, want) in cases {
            assert_eq!(default_pull_policy(image), want, "{image}");
        }
    }

    #[test]
    fn field_defaults() {
        let mut spec = json!({
            "hostNetwork": true,
            "containers": [{
                "name": "a", "image": "a:1",
                "ports": [{"containerPort": 80}],
                "livenessProbe": {"httpGet": {"port": 80}},
                "readinessProbe": {"tcpSocket": {"port": 80}, "periodSeconds": 5},
                "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
            }],
            "volumes": [{"name": "e"}, {"name": "c", "configMap": {"name": "x"}}, {"name": "s", "secret": {"secretName": "x"}}],
        });
        default_pod_spec(&mut spec);
        let c = &spec["containers"][0];
        assert_eq!(
            c["ports"][0],
            json!({"containerPort": 80, "hostPort": 80, "protocol": "TCP"})
        );
        assert_eq!(
            c["livenessProbe"],
            json!({"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
        );
        assert_eq!(c["readinessProbe"]["periodSeconds"], json!(5));
        assert_eq!(
            c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"],
            json!("v1")
        );
        assert_eq!(spec["volumes"][0], json!({"name": "e", "emptyDir": {}}));
        assert_eq!(spec["volumes"][1]["configMap"]["defaultMode"], json!(420));
        assert_eq!(spec["volumes"][2]["secret"]["defaultMode"], json!(420));
    }

    #[test]
    fn existing_tolerations_and_requests() {
        let mut pod = json!({"spec": {
            "containers": [{"name": "a", "image": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}],
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}],
            "priorityClassName": "system-node-critical",
        }});
        default_pod(&mut pod);
        let tols = pod["spec"]["tolerations"].as_array().map(Vec::len);
        assert_eq!(tols, Some(2));
        assert_eq!(pod["spec"]["tolerations"][0]["tolerationSeconds"], json!(5));
        assert_eq!(pod["spec"]["priority"], json!(2_000_001_000));
        assert_eq!(
            pod["spec"]["containers"][0]["resources"]["requests"],
            json!({"cpu": "1", "memory": "1Gi"})
        );
        assert_eq!(qos_class(&pod["spec"]), "Guaranteed");
        let mut everything =
            json!({"spec": {"containers": [], "tolerations": [{"operator": "Exists"}]}});
        default_pod(&mut everything);
        assert_eq!(
            everything["spec"]["tolerations"].as_array().map(Vec::len),
            Some(1)
        );
    }

    #[test]
    fn qos() {
        let cases = [
            (json!({"containers": [{"name": "a"}]}), "BestEffort"),
            (
                json!({"containers": [{"resources": {"requests": {"cpu": "1"}}}]}),
                "Burstable",
            ),
            (
                json!({"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1G"}}}]}),
                "Guaranteed",
            ),
            (
                json!({"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1G"}, "requests": {"cpu": "500m"}}}]}),
                "Burstable",
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(qos_class(&spec), want, "{spec}");
        }
    }

    #[test]
    fn pod_spec_validation() {
        let ok = json!({"containers": [{"name": "a", "image": "a"}]});
        let cases: &[(Value, &[&str])] = &[
            (ok.clone(), &[]),
            (json!({}), &["spec.containers: Required value"]),
            (json!({"containers": [{"name": "a"}]}), &["spec.containers[0].image: Required value"]),
            (
                json!({"containers": [{"name": "a", "image": "x"}, {"name": "a", "image": "y"}]}),
                &["spec.containers[1].name: Duplicate value: \"a\""],
            ),
            (
                json!({"containers": [{"name": "A", "image": "x"}]}),
                &["spec.containers[0].name: Invalid value: \"A\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"],
            ),
            (
                json!({"containers": [{"name": "a", "image": "x", "volumeMounts": [{"name": "data", "mountPath": "/d"}]}]}),
                &["spec.containers[0].volumeMounts[0].name: Not found: \"data\""],
            ),
            (
                json!({"containers": [{"name": "a", "image": "x", "volumeMounts": [{"name": "data", "mountPath": "/d"}]}], "volumes": [{"name": "data", "emptyDir": {}}]}),
                &[],
            ),
            (
                json!({"containers": [{"name": "a", "image": "x"}], "volumes": [{"name": "v", "emptyDir": {}}, {"name": "v", "emptyDir": {}}]}),
                &["spec.volumes[1].name: Duplicate value: \"v\""],
            ),
            (
                json!({"containers": [{"name": "a", "image": "x"}], "volumes": [{"name": "v", "emptyDir": {}, "secret": {}}]}),
                &["spec.volumes[0].secret: Forbidden: may not specify more than 1 volume type"],
            ),
            (
                json!({"containers": [{"name": "a", "image": "x", "ports": [{"containerPort": 70000, "protocol": "ICMP"}]}]}),
                &[
                    "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
                    "spec.containers[0].ports[0].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                ],
            ),
            (
                json!({"containers": [{"name": "a", "image": "x"}], "restartPolicy": "Sometimes"}),
                &["spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\""],
            ),
            (
                json!({"containers": [{"name": "a", "image": "x", "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}]}),
                &["spec.containers[0].resources.requests[cpu]: Invalid value: \"2\": must be less than or equal to cpu limit of 1"],
            ),
            (
                json!({"containers": [{"name": "a", "image": "x", "resources": {"limits": {"memory": "lots"}}}]}),
                &["spec.containers[0].resources.limits[memory]: Invalid value: \"lots\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"],
            ),
            (
                json!({"containers": [{"name": "a", "image": "x", "livenessProbe": {"periodSeconds": 0}}]}),
                &[
                    "spec.containers[0].livenessProbe: Required value: must specify a handler type",
                    "spec.containers[0].livenessProbe.periodSeconds: Invalid value: 0: must be greater than or equal to 1",
                ],
            ),
        ];
        for (spec, want) in cases {
            let got: Vec<String> = validate_pod_spec(spec, "spec")
                .iter()
                .map(FieldError::line)
                .collect();
            assert_eq!(got, *want, "{spec}");
        }
        let got: Vec<String> = validate_pod_spec(&json!({}), "spec.template.spec")
            .iter()
            .map(FieldError::line)
            .collect();
        assert_eq!(got, ["spec.template.spec.containers: Required value"]);
    }

    #[test]
    fn pod_updates() {
        let old = json!({"metadata": {}, "spec": {
            "containers": [{"name": "a", "image": "a:1"}],
            "terminationGracePeriodSeconds": 30,
            "tolerations": [{"key": "k", "operator": "Exists"}],
        }});
        let with = |f: &dyn Fn(&mut Value)| {
            let mut v = old.clone();
            f(&mut v);
            v
        };
        let cases: Vec<(Value, bool)> = vec![
            (
                with(&|p| p["spec"]["containers"][0]["image"] = json!("a:2")),
                true,
            ),
            (
                with(&|p| p["spec"]["activeDeadlineSeconds"] = json!(10)),
                true,
            ),
            (
                with(
                    &|p| p["spec"]["tolerations"] = json!([{"key": "k", "operator": "Exists"}, {"key": "j", "operator": "Exists"}]),
                ),
                true,
            ),
            (with(&|p| p["spec"]["tolerations"] = json!([])), false),
            (
                with(&|p| p["spec"]["containers"][0]["name"] = json!("b")),
                false,
            ),
            (
                with(&|p| p["spec"]["terminationGracePeriodSeconds"] = json!(5)),
                false,
            ),
            (
                with(&|p| {
                    p["spec"]["terminationGracePeriodSeconds"] = json!(5);
                    p["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
                }),
                true,
            ),
            (with(&|p| p["spec"]["nodeName"] = json!("n1")), false),
        ];
        for (new, ok) in cases {
            let errs = validate_pod_update(&new, &old);
            assert_eq!(errs.is_empty(), ok, "{new}: {errs:?}");
            if let Some(e) = errs.first() {
                assert_eq!(e.field, "spec");
                assert!(e.message.starts_with("Forbidden: pod updates may not change fields other than `spec.containers[*].image`"));
            }
        }
    }
}

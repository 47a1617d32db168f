//! The smaller kinds: Namespace, Node, ConfigMap, Secret, Endpoints, ResourceQuota, Lease,
//! EndpointSlice, events.k8s.io Event, CSR, PodDisruptionBudget and RBAC, after upstream's
//! defaults and validation for each (pkg/apis/<group>/validation).

use std::collections::HashSet;
use std::net::IpAddr;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::registry::strategy::FieldError;
use crate::registry::validation::{
    immutable, is_config_map_key, is_dns1123_label, is_qualified_name, parse_quantity, too_long,
    validate_label_selector, validate_port_num, NameRule, MAX_DATA_SIZE, QUANTITY_REGEX_MSG,
};

use super::{keep_old, set_default, with_array_items, Rules, StatusSplit, BASE};

/// The rules of Namespaces: the `kubernetes` finalizer and phase Active on create, the
/// `kubernetes.io/metadata.name` label always.
pub fn namespace_rules() -> Rules {
    Rules {
        namespaced: false,
        name_rule: NameRule::Label,
        status: StatusSplit::Status,
        default: default_namespace,
        prepare_create: |ns| {
            if let Some(m) = ns.as_object_mut() {
                m.insert("status".into(), json!({"phase": "Active"}));
                let spec = m.entry("spec").or_insert_with(|| json!({}));
                set_default(spec, "finalizers", json!([]));
                if let Some(f) = spec.get_mut("finalizers").and_then(Value::as_array_mut) {
                    if !f.contains(&json!("kubernetes")) {
                        f.push(json!("kubernetes"));
                    }
                }
            }
        },
        // Finalizers change only through /finalize.
        prepare_update: |new, old| {
            let fins = old.pointer("/spec/finalizers").cloned();
            if let Some(spec) = new.get_mut("spec") {
                match fins {
                    Some(f) => set_field(spec, "finalizers", f),
                    None => {
                        if let Some(m) = spec.as_object_mut() {
                            m.remove("finalizers");
                        }
                    }
                }
            }
        },
        validate: |ns| {
            let mut errs = Vec::new();
            for (i, f) in ns
                .pointer("/spec/finalizers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let s = f.as_str().unwrap_or_default();
                for msg in is_qualified_name(s) {
                    errs.push(FieldError::invalid(format!("spec.finalizers[{i}]"), f, msg));
                }
            }
            if let Some(p) = ns.pointer("/status/phase").filter(|p| !p.is_null()) {
                let supported = ["Active", "Terminating"];
                if !p.as_str().is_some_and(|s| supported.contains(&s)) {
                    errs.push(FieldError::not_supported("status.phase", p, &supported));
                }
            }
            errs
        },
        ..BASE
    }
}

fn set_field(obj: &mut Value, key: &str, v: Value) {
    if let Some(m) = obj.as_object_mut() {
        m.insert(key.to_string(), v);
    }
}

/// Defaults a Namespace: `SetDefaults_Namespace` (the name label) and `SetDefaults_NamespaceStatus`.
pub fn default_namespace(ns: &mut Value) {
    let name = ns
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if !name.is_empty() {
        if let Some(meta) = ns.get_mut("metadata") {
            set_default(meta, "labels", json!({}));
            if let Some(labels) = meta.get_mut("labels") {
                set_field(labels, "kubernetes.io/metadata.name", json!(name));
            }
        }
    }
    if ns.get("status").is_some_and(Value::is_object) {
        if let Some(status) = ns.get_mut("status") {
            set_default(status, "phase", json!("Active"));
        }
    }
}

/// The rules of Nodes: the kubelet registers with a status, so create keeps it.
pub fn node_rules() -> Rules {
    Rules {
        namespaced: false,
        status: StatusSplit::StatusSettableOnCreate,
        default: |node| {
            // SetDefaults_NodeStatus: allocatable defaults to capacity.
            if let Some(status) = node.get_mut("status").filter(|s| s.is_object()) {
                if let Some(cap) = status.get("capacity").cloned() {
                    set_default(status, "allocatable", cap);
                }
            }
        },
        validate: validate_node,
        validate_update: |new, old| {
            // podCIDR(s) may only go from unset to set.
            let mut errs = Vec::new();
            let old_cidrs = old
                .pointer("/spec/podCIDRs")
                .filter(|v| v.as_array().is_some_and(|a| !a.is_empty()));
            if let Some(o) = old_cidrs {
                if new.pointer("/spec/podCIDRs") != Some(o) {
                    errs.push(FieldError::forbidden(
                        "spec.podCIDRs",
                        "node updates may not change podCIDR except from \"\" to valid",
                    ));
                }
            }
            errs
        },
        ..BASE
    }
}

fn is_cidr(s: &str) -> bool {
    let Some((ip, prefix)) = s.split_once('/') else {
        return false;
    };
    let Ok(ip) = ip.parse::<IpAddr>() else {
        return false;
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    prefix.parse::<u8>().is_ok_and(|p| p <= max)
}

fn validate_node(node: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = node.get("spec").unwrap_or(&Value::Null);
    for (i, c) in spec
        .get("podCIDRs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if !c.as_str().is_some_and(is_cidr) {
            errs.push(FieldError::invalid(
                format!("spec.podCIDRs[{i}]"),
                c,
                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            ));
        }
    }
    for (i, t) in spec
        .get("taints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let key = t.get("key").and_then(Value::as_str).unwrap_or_default();
        for msg in is_qualified_name(key) {
            errs.push(FieldError::invalid(
                format!("spec.taints[{i}].key"),
                &json!(key),
                msg,
            ));
        }
        let effect = t.get("effect").cloned().unwrap_or(json!(""));
        let supported = ["NoSchedule", "PreferNoSchedule", "NoExecute"];
        if effect.as_str().is_none_or(str::is_empty) {
            errs.push(FieldError::required(format!("spec.taints[{i}].effect")));
        } else if !effect.as_str().is_some_and(|e| supported.contains(&e)) {
            errs.push(FieldError::not_supported(
                format!("spec.taints[{i}].effect"),
                &effect,
                &supported,
            ));
        }
    }
    errs
}

/// Data keys and total size of a ConfigMap or Secret. `decoded_len` measures one value.
fn validate_data(
    obj: &Value,
    keys: &[&str],
    decoded_len: fn(&Value) -> usize,
    size_path: &str,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut seen = HashSet::new();
    let mut total = 0usize;
    for field in keys {
        for (k, v) in obj
            .get(*field)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            for msg in is_config_map_key(k) {
                errs.push(FieldError::invalid(format!("{field}[{k}]"), &json!(k), msg));
            }
            if !seen.insert(k.clone()) {
                errs.push(FieldError::invalid(
                    format!("{field}[{k}]"),
                    &json!(k),
                    "duplicate of key present in data",
                ));
            }
            total += decoded_len(v);
        }
    }
    if total > MAX_DATA_SIZE {
        errs.push(too_long(size_path, MAX_DATA_SIZE));
    }
    errs
}

fn str_len(v: &Value) -> usize {
    v.as_str().map_or(0, str::len)
}

fn base64_len(v: &Value) -> usize {
    // Upstream counts decoded bytes; 3 bytes per 4 characters is exact up to padding.
    v.as_str()
        .map_or(0, |s| s.trim_end_matches('=').len() * 3 / 4)
}

/// Once `immutable: true`, data may not change and the flag may not be unset.
fn immutable_data(new: &Value, old: &Value, keys: &[&str]) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if old.get("immutable").and_then(Value::as_bool) != Some(true) {
        return errs;
    }
    if new.get("immutable").and_then(Value::as_bool) != Some(true) {
        errs.push(FieldError::forbidden(
            "immutable",
            "field is immutable when `immutable` is set",
        ));
    }
    for k in keys {
        if new.get(*k) != old.get(*k) {
            errs.push(FieldError::forbidden(
                *k,
                "field is immutable when `immutable` is set",
            ));
        }
    }
    errs
}

/// The rules of ConfigMaps.
pub fn config_map_rules(namespaced: bool) -> Rules {
    Rules {
        namespaced,
        validate: |cm| {
            validate_data(
                cm,
                &["data", "binaryData"],
                |v| str_len(v).max(base64_len(v)),
                "",
            )
        },
        validate_update: |new, old| immutable_data(new, old, &["data", "binaryData"]),
        ..BASE
    }
}

/// Defaults a Secret: type Opaque, and `stringData` folded into `data` as the v1 conversion
/// does (stringData wins and is never stored).
pub fn default_secret(secret: &mut Value) {
    set_default(secret, "type", json!("Opaque"));
    let Some(string_data) = secret.as_object_mut().and_then(|m| m.remove("stringData")) else {
        return;
    };
    set_default(secret, "data", json!({}));
    if let (Some(data), Some(sd)) = (
        secret.get_mut("data").and_then(Value::as_object_mut),
        string_data.as_object(),
    ) {
        for (k, v) in sd {
            let text = v.as_str().unwrap_or_default();
            data.insert(
                k.clone(),
                json!(base64::engine::general_purpose::STANDARD.encode(text)),
            );
        }
    }
}

fn validate_secret(secret: &Value) -> Vec<FieldError> {
    let mut errs = validate_data(secret, &["data"], base64_len, "data");
    let has = |k: &str| {
        secret
            .pointer(&format!(
                "/data/{}",
                k.replace('~', "~0").replace('/', "~1")
            ))
            .is_some()
    };
    match secret
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("Opaque")
    {
        "kubernetes.io/service-account-token" => {
            let key = "kubernetes.io/service-account.name";
            if secret
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(key))
                .is_none()
            {
                errs.push(FieldError::required(format!("metadata.annotations[{key}]")));
            }
        }
        "kubernetes.io/dockerconfigjson" if !has(".dockerconfigjson") => {
            errs.push(FieldError::required("data[.dockerconfigjson]"));
        }
        "kubernetes.io/dockercfg" if !has(".dockercfg") => {
            errs.push(FieldError::required("data[.dockercfg]"));
        }
        "kubernetes.io/tls" => {
            for k in ["tls.crt", "tls.key"] {
                if !has(k) {
                    errs.push(FieldError::required(format!("data[{k}]")));
                }
            }
        }
        _ => {}
    }
    errs
}

/// The rules of Secrets.
pub fn secret_rules(namespaced: bool) -> Rules {
    Rules {
        namespaced,
        default: default_secret,
        validate: validate_secret,
        validate_update: |new, old| {
            let mut errs = immutable_data(new, old, &["data"]);
            if new.get("type") != old.get("type") {
                errs.push(immutable("type", new.get("type").unwrap_or(&Value::Null)));
            }
            errs
        },
        ..BASE
    }
}

/// The rules of Endpoints: addresses are IPs, ports in range.
pub fn endpoints_rules(namespaced: bool) -> Rules {
    Rules {
        namespaced,
        default: |ep| {
            with_array_items(ep, "subsets", |s| {
                with_array_items(s, "ports", |p| set_default(p, "protocol", json!("TCP")));
            });
        },
        validate: |ep| {
            let mut errs = Vec::new();
            for (i, s) in ep
                .get("subsets")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                for list in ["addresses", "notReadyAddresses"] {
                    for (j, a) in s
                        .get(list)
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .enumerate()
                    {
                        let ip = a.get("ip").cloned().unwrap_or(json!(""));
                        if ip.as_str().is_none_or(|s| s.parse::<IpAddr>().is_err()) {
                            errs.push(FieldError::invalid(
                                format!("subsets[{i}].{list}[{j}].ip"),
                                &ip,
                                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                            ));
                        }
                    }
                }
                for (j, p) in s
                    .get("ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    let port = p.get("port").cloned().unwrap_or(json!(0));
                    errs.extend(validate_port_num(
                        &port,
                        &format!("subsets[{i}].ports[{j}].port"),
                    ));
                }
            }
            errs
        },
        ..BASE
    }
}

/// The rules of ResourceQuotas: hard limits are quantities.
pub fn resource_quota_rules(namespaced: bool) -> Rules {
    Rules {
        namespaced,
        status: StatusSplit::Status,
        validate: |rq| {
            let mut errs = Vec::new();
            for (k, v) in rq
                .pointer("/spec/hard")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                if v.as_str().is_none_or(|s| parse_quantity(s).is_none()) {
                    errs.push(FieldError::invalid(
                        format!("spec.hard[{k}]"),
                        v,
                        QUANTITY_REGEX_MSG,
                    ));
                }
            }
            errs
        },
        ..BASE
    }
}

/// The rules of Leases.
pub fn lease_rules(namespaced: bool) -> Rules {
    Rules {
        namespaced,
        validate: |lease| {
            let mut errs = Vec::new();
            if let Some(d) = lease
                .pointer("/spec/leaseDurationSeconds")
                .filter(|d| d.as_i64().is_some_and(|n| n <= 0))
            {
                errs.push(FieldError::invalid(
                    "spec.leaseDurationSeconds",
                    d,
                    "must be greater than 0",
                ));
            }
            if let Some(t) = lease
                .pointer("/spec/leaseTransitions")
                .filter(|d| d.as_i64().is_some_and(|n| n < 0))
            {
                errs.push(FieldError::invalid(
                    "spec.leaseTransitions",
                    t,
                    "must be greater than or equal to 0",
                ));
            }
            errs
        },
        ..BASE
    }
}

const ADDRESS_TYPES: &[&str] = &["FQDN", "IPv4", "IPv6"];

/// The rules of EndpointSlices.
pub fn endpoint_slice_rules(namespaced: bool) -> Rules {
    Rules {
        namespaced,
        default: |slice| {
            with_array_items(slice, "ports", |p| {
                set_default(p, "name", json!(""));
                set_default(p, "protocol", json!("TCP"));
            });
        },
        validate: validate_endpoint_slice,
        validate_update: |new, old| {
            if new.get("addressType") != old.get("addressType") {
                vec![immutable(
                    "addressType",
                    new.get("addressType").unwrap_or(&Value::Null),
                )]
            } else {
                Vec::new()
            }
        },
        ..BASE
    }
}

fn validate_endpoint_slice(slice: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let ty = slice
        .get("addressType")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if ty.is_empty() {
        errs.push(FieldError::required("addressType"));
    } else if !ADDRESS_TYPES.contains(&ty) {
        errs.push(FieldError::not_supported(
            "addressType",
            &json!(ty),
            ADDRESS_TYPES,
        ));
    }
    for (i, ep) in slice
        .get("endpoints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let addrs = ep.get("addresses").and_then(Value::as_array);
        match addrs.map_or(0, Vec::len) {
            0 => errs.push(FieldError::required(format!("endpoints[{i}].addresses"))),
            n if n > 100 => errs.push(FieldError {
                reason: "FieldValueTooMany",
                field: format!("endpoints[{i}].addresses"),
                message: format!("Too many: {n}: must have at most 100 items"),
            }),
            _ => {}
        }
        for (j, a) in addrs.into_iter().flatten().enumerate() {
            let s = a.as_str().unwrap_or_default();
            let ok = match ty {
                "IPv4" => s.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv4()),
                "IPv6" => s.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv6()),
                _ => true,
            };
            if !ok {
                let detail = if ty == "IPv4" {
                    "must be a valid IPv4 address"
                } else {
                    "must be a valid IPv6 address"
                };
                errs.push(FieldError::invalid(
                    format!("endpoints[{i}].addresses[{j}]"),
                    a,
                    detail,
                ));
            }
        }
    }
    let mut names = HashSet::new();
    for (i, p) in slice
        .get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let name = p.get("name").and_then(Value::as_str).unwrap_or_default();
        if !name.is_empty() {
            for msg in is_dns1123_label(name) {
                errs.push(FieldError::invalid(
                    format!("ports[{i}].name"),
                    &json!(name),
                    msg,
                ));
            }
        }
        if !names.insert(name.to_string()) {
            errs.push(FieldError::duplicate(
                format!("ports[{i}].name"),
                &json!(name),
            ));
        }
        if let Some(port) = p.get("port").filter(|v| !v.is_null()) {
            errs.extend(validate_port_num(port, &format!("ports[{i}].port")));
        }
        let proto = p.get("protocol").cloned().unwrap_or(json!("TCP"));
        let supported = ["SCTP", "TCP", "UDP"];
        if !proto.as_str().is_some_and(|s| supported.contains(&s)) {
            errs.push(FieldError::not_supported(
                format!("ports[{i}].protocol"),
                &proto,
                &supported,
            ));
        }
    }
    errs
}

/// The rules of events.k8s.io/v1 Events (`ValidateEventCreate` for v1 clients).
pub fn events_v1_rules(namespaced: bool) -> Rules {
    Rules {
        namespaced,
        validate: |ev| {
            let mut errs = Vec::new();
            for f in ["eventTime", "reportingController", "reportingInstance"] {
                if ev
                    .get(f)
                    .is_none_or(|v| v.is_null() || v.as_str() == Some(""))
                {
                    errs.push(FieldError::required(f));
                }
            }
            if let Some(t) = ev.get("type").and_then(Value::as_str) {
                if t != "Normal" && t != "Warning" {
                    errs.push(FieldError::not_supported(
                        "type",
                        &json!(t),
                        &["Normal", "Warning"],
                    ));
                }
            }
            errs
        },
        ..BASE
    }
}

/// The rules of CertificateSigningRequests: request and signerName required, spec immutable.
pub fn csr_rules() -> Rules {
    Rules {
        namespaced: false,
        name_rule: NameRule::PathSegment,
        status: StatusSplit::Status,
        prepare_update: |new, old| keep_old(new, old, "spec"),
        validate: |csr| {
            let mut errs = Vec::new();
            for f in ["request", "signerName"] {
                if csr
                    .pointer(&format!("/spec/{f}"))
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    errs.push(FieldError::required(format!("spec.{f}")));
                }
            }
            if csr
                .pointer("/spec/usages")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty)
            {
                errs.push(FieldError::required("spec.usages"));
            }
            errs
        },
        ..BASE
    }
}

/// The rules of PodDisruptionBudgets.
pub fn pdb_rules(namespaced: bool) -> Rules {
    Rules {
        namespaced,
        status: StatusSplit::Status,
        generation: true,
        validate: |pdb| {
            let mut errs = Vec::new();
            let spec = pdb.get("spec").unwrap_or(&Value::Null);
            let set = |k: &str| spec.get(k).is_some_and(|v| !v.is_null());
            if set("minAvailable") && set("maxUnavailable") {
                errs.push(FieldError::invalid(
                    "spec",
                    spec,
                    "minAvailable and maxUnavailable cannot be both set",
                ));
            }
            if let Some(sel) = spec.get("selector").filter(|s| !s.is_null()) {
                errs.extend(validate_label_selector(sel, "spec.selector"));
            }
            errs
        },
        ..BASE
    }
}

/// The rules of Roles (`namespaced`) and ClusterRoles.
pub fn role_rules(namespaced: bool) -> Rules {
    Rules {
        namespaced,
        name_rule: NameRule::PathSegment,
        validate: if namespaced {
            |r| validate_rules(r, true)
        } else {
            |r| validate_rules(r, false)
        },
        ..BASE
    }
}

fn validate_rules(role: &Value, namespaced: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let empty = |r: &Value, k: &str| r.get(k).and_then(Value::as_array).is_none_or(Vec::is_empty);
    for (i, r) in role
        .get("rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let p = format!("rules[{i}]");
        if empty(r, "verbs") {
            errs.push(FieldError {
                reason: "FieldValueRequired",
                field: format!("{p}.verbs"),
                message: "Required value: verbs must contain at least one value".into(),
            });
        }
        let non_resource = !empty(r, "nonResourceURLs");
        if non_resource {
            if namespaced {
                errs.push(FieldError::invalid(
                    format!("{p}.nonResourceURLs"),
                    r.get("nonResourceURLs").unwrap_or(&Value::Null),
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            if !empty(r, "apiGroups") || !empty(r, "resources") || !empty(r, "resourceNames") {
                errs.push(FieldError::invalid(
                    format!("{p}.nonResourceURLs"),
                    r.get("nonResourceURLs").unwrap_or(&Value::Null),
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
            continue;
        }
        if empty(r, "apiGroups") {
            errs.push(FieldError {
                reason: "FieldValueRequired",
                field: format!("{p}.apiGroups"),
                message: "Required value: resource rules must supply at least one api group".into(),
            });
        }
        if empty(r, "resources") {
            errs.push(FieldError {
                reason: "FieldValueRequired",
                field: format!("{p}.resources"),
                message: "Required value: resource rules must supply at least one resource".into(),
            });
        }
    }
    errs
}

/// The rules of RoleBindings (`namespaced`) and ClusterRoleBindings: roleRef is immutable.
pub fn binding_rules(namespaced: bool) -> Rules {
    Rules {
        namespaced,
        name_rule: NameRule::PathSegment,
        validate: if namespaced {
            |b| validate_binding(b, true)
        } else {
            |b| validate_binding(b, false)
        },
        validate_update: |new, old| {
            if new.get("roleRef") != old.get("roleRef") {
                vec![FieldError::invalid(
                    "roleRef",
                    new.get("roleRef").unwrap_or(&Value::Null),
                    "cannot change roleRef",
                )]
            } else {
                Vec::new()
            }
        },
        ..BASE
    }
}

fn validate_binding(b: &Value, namespaced: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let rr = b.get("roleRef").unwrap_or(&Value::Null);
    if rr.get("apiGroup").and_then(Value::as_str) != Some("rbac.authorization.k8s.io") {
        errs.push(FieldError::not_supported(
            "roleRef.apiGroup",
            rr.get("apiGroup").unwrap_or(&json!("")),
            &["rbac.authorization.k8s.io"],
        ));
    }
    let kinds: &[&str] = if namespaced {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    let kind = rr.get("kind").cloned().unwrap_or(json!(""));
    if !kind.as_str().is_some_and(|k| kinds.contains(&k)) {
        errs.push(FieldError::not_supported("roleRef.kind", &kind, kinds));
    }
    if rr
        .get("name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        errs.push(FieldError::required("roleRef.name"));
    }
    for (i, s) in b
        .get("subjects")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let p = format!("subjects[{i}]");
        if s.get("name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            errs.push(FieldError::required(format!("{p}.name")));
        }
        let kind = s.get("kind").cloned().unwrap_or(json!(""));
        let supported = ["ServiceAccount", "User", "Group"];
        if !kind.as_str().is_some_and(|k| supported.contains(&k)) {
            errs.push(FieldError::not_supported(
                format!("{p}.kind"),
                &kind,
                &supported,
            ));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::strategies::TypedStrategy;
    use crate::registry::strategy::Strategy;
    use k8s_openapi::api::core::v1 as core_v1;

    fn lines(errs: Vec<FieldError>) -> Vec<String> {
        errs.iter().map(FieldError::line).collect()
    }

    #[test]
    fn namespace_lifecycle() {
        let s = TypedStrategy::<core_v1::Namespace>::new(namespace_rules());
        let mut ns = json!({"metadata": {"name": "team-a"}, "status": {"phase": "Terminating"}});
        s.prepare_for_create(&mut ns);
        s.default(&mut ns);
        assert_eq!(
            ns,
            json!({"metadata": {"name": "team-a", "labels": {"kubernetes.io/metadata.name": "team-a"}},
                   "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
        );
        assert!(s.validate_create(&ns).is_empty());
        let mut bad = json!({"metadata": {"name": "a.b"}});
        s.default(&mut bad);
        let got = lines(s.validate_create(&bad));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with("metadata.name: Invalid value: \"a.b\": a lowercase RFC 1123 label")
        );
    }

    #[test]
    fn config_maps_and_secrets() {
        let cm = config_map_rules(true);
        let cases: &[(Value, &[&str])] = &[
            (json!({"data": {"a.txt": "x"}}), &[]),
            (
                json!({"data": {"a/b": "x"}}),
                &["data[a/b]: Invalid value: \"a/b\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"],
            ),
            (json!({"data": {"k": "x"}, "binaryData": {"k": "eA=="}}), &["binaryData[k]: Invalid value: \"k\": duplicate of key present in data"]),
            (json!({"data": {"k": "x".repeat(MAX_DATA_SIZE + 1)}}), &[": Too long: must have at most 1048576 bytes"]),
        ];
        for (obj, want) in cases {
            assert_eq!(lines((cm.validate)(obj)), *want);
        }
        let old = json!({"immutable": true, "data": {"k": "1"}});
        let new = json!({"immutable": true, "data": {"k": "2"}});
        assert_eq!(
            lines((cm.validate_update)(&new, &old)),
            ["data: Forbidden: field is immutable when `immutable` is set"]
        );

        let mut secret = json!({"metadata": {"name": "s"}, "stringData": {"password": "hunter2"}, "data": {"user": "YWRtaW4="}});
        default_secret(&mut secret);
        assert_eq!(
            secret,
            json!({"metadata": {"name": "s"}, "type": "Opaque", "data": {"user": "YWRtaW4=", "password": "aHVudGVyMg=="}})
        );
        let tls = json!({"type": "kubernetes.io/tls", "data": {"tls.crt": "eA=="}});
        assert_eq!(
            lines(validate_secret(&tls)),
            ["data[tls.key]: Required value"]
        );
        let sr = secret_rules(true);
        let changed_type = json!({"type": "kubernetes.io/tls"});
        assert_eq!(
            lines((sr.validate_update)(
                &changed_type,
                &json!({"type": "Opaque"})
            )),
            ["type: Invalid value: \"kubernetes.io/tls\": field is immutable"]
        );
    }

    #[test]
    fn endpoint_slices() {
        let r = endpoint_slice_rules(true);
        let mut slice = json!({"addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"]}], "ports": [{"port": 80}]});
        (r.default)(&mut slice);
        assert_eq!(
            slice["ports"][0],
            json!({"port": 80, "name": "", "protocol": "TCP"})
        );
        assert!((r.validate)(&slice).is_empty());
        let cases: &[(Value, &[&str])] = &[
            (json!({}), &["addressType: Required value"]),
            (json!({"addressType": "IPX"}), &["addressType: Unsupported value: \"IPX\": supported values: \"FQDN\", \"IPv4\", \"IPv6\""]),
            (json!({"addressType": "IPv4", "endpoints": [{"addresses": []}]}), &["endpoints[0].addresses: Required value"]),
            (json!({"addressType": "IPv4", "endpoints": [{"addresses": ["fd00::1"]}]}), &["endpoints[0].addresses[0]: Invalid value: \"fd00::1\": must be a valid IPv4 address"]),
        ];
        for (obj, want) in cases {
            assert_eq!(lines((r.validate)(obj)), *want);
        }
    }

    #[test]
    fn small_kinds() {
        let lease = lease_rules(true);
        assert_eq!(
            lines((lease.validate)(
                &json!({"spec": {"leaseDurationSeconds": 0}})
            )),
            ["spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0"]
        );
        let csr = csr_rules();
        assert_eq!(
            lines((csr.validate)(
                &json!({"spec": {"usages": ["client auth"]}})
            )),
            [
                "spec.request: Required value",
                "spec.signerName: Required value"
            ]
        );
        let node = node_rules();
        let mut n = json!({"status": {"capacity": {"cpu": "2"}}});
        (node.default)(&mut n);
        assert_eq!(n["status"]["allocatable"], json!({"cpu": "2"}));
        assert_eq!(
            lines((node.validate)(&json!({"spec": {"podCIDRs": ["10.0.0.0/33"], "taints": [{"key": "k", "effect": "Sometimes"}]}}))),
            [
                "spec.podCIDRs[0]: Invalid value: \"10.0.0.0/33\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                "spec.taints[0].effect: Unsupported value: \"Sometimes\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\"",
            ]
        );
        let ev = events_v1_rules(true);
        assert_eq!(
            lines((ev.validate)(&json!({"reportingController": "c"}))),
            [
                "eventTime: Required value",
                "reportingInstance: Required value"
            ]
        );
    }

    #[test]
    fn rbac() {
        let role = role_rules(true);
        assert_eq!(
            lines((role.validate)(
                &json!({"rules": [{"apiGroups": [""], "resources": ["pods"]}]})
            )),
            ["rules[0].verbs: Required value: verbs must contain at least one value"]
        );
        assert!((role.validate)(
            &json!({"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]})
        )
        .is_empty());
        let crb = binding_rules(false);
        let b = json!({"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"}, "subjects": [{"kind": "User", "name": "u"}]});
        assert_eq!(
            lines((crb.validate)(&b)),
            ["roleRef.kind: Unsupported value: \"Role\": supported values: \"ClusterRole\""]
        );
        let mut b2 = b.clone();
        b2["roleRef"]["name"] = json!("other");
        assert_eq!(lines((crb.validate_update)(&b2, &b)).len(), 1);
    }
}

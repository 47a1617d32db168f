//! Services: `SetDefaults_Service` plus the REST layer's IP family defaults, validation
//! (`ValidateService`, `ValidateServiceUpdate`) and the type-change cleanup of
//! pkg/registry/core/service/strategy.go (`dropTypeDependentFields`).
//!
//! ClusterIP and NodePort allocation happens in the registry (see `registry::allocator`)
//! between defaulting and validation.

use std::collections::HashSet;
use std::net::IpAddr;

use serde_json::{json, Value};

use crate::registry::strategy::FieldError;
use crate::registry::validation::{
    is_dns1123_label, is_dns1123_subdomain, is_valid_port_name, validate_labels, validate_port_num,
    NameRule,
};

use super::{set_default, with_array_items, Rules, StatusSplit, BASE};

const TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];

/// The rules of Services.
pub fn rules(namespaced: bool) -> Rules {
    Rules {
        namespaced,
        name_rule: NameRule::Dns1035,
        status: StatusSplit::Status,
        default: default_service,
        prepare_create: |svc| {
            if let Some(m) = svc.as_object_mut() {
                m.insert("status".into(), json!({"loadBalancer": {}}));
            }
        },
        prepare_update: drop_type_dependent_fields,
        validate: validate_service,
        validate_update: validate_service_update,
        ..BASE
    }
}

fn svc_type(svc: &Value) -> &str {
    svc.pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
}

/// Defaults a Service as `SetDefaults_Service` and the service REST storage do.
pub fn default_service(svc: &mut Value) {
    let Some(spec) = svc.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    set_default(spec, "type", json!("ClusterIP"));
    set_default(spec, "sessionAffinity", json!("None"));
    with_array_items(spec, "ports", |p| {
        set_default(p, "protocol", json!("TCP"));
        let unset = match p.get("targetPort") {
            None | Some(Value::Null) => true,
            Some(Value::Number(n)) => n.as_i64() == Some(0),
            Some(Value::String(s)) => s.is_empty(),
            Some(_) => false,
        };
        if unset {
            if let Some(port) = p.get("port").cloned() {
                p["targetPort"] = port;
            }
        }
    });
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if ty != "ExternalName" {
        set_default(spec, "internalTrafficPolicy", json!("Cluster"));
        set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
        let family = match spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .map(str::parse::<IpAddr>)
        {
            Some(Ok(IpAddr::V6(_))) => "IPv6",
            _ => "IPv4",
        };
        set_default(spec, "ipFamilies", json!([family]));
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        set_default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        set_default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if spec.get("sessionAffinity").and_then(Value::as_str) == Some("ClientIP") {
        set_default(spec, "sessionAffinityConfig", json!({}));
        if let Some(cfg) = spec.get_mut("sessionAffinityConfig") {
            set_default(cfg, "clientIP", json!({}));
            if let Some(c) = cfg.get_mut("clientIP") {
                set_default(c, "timeoutSeconds", json!(10800));
            }
        }
    }
}

/// After ClusterIP allocation: a SingleStack Service's `ipFamilies` follow its ClusterIP, so a
/// Service defaulted to `[IPv4]` before an IPv6 address was allocated gets `[IPv6]`.
/// Defaulting runs before allocation, so the registry calls this once the address is known.
pub fn fix_ip_families(svc: &mut Value) {
    let Some(spec) = svc.get_mut("spec") else {
        return;
    };
    if spec.get("ipFamilyPolicy").and_then(Value::as_str) != Some("SingleStack") {
        return;
    }
    let family = match spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .map(str::parse::<IpAddr>)
    {
        Some(Ok(IpAddr::V6(_))) => "IPv6",
        Some(Ok(IpAddr::V4(_))) => "IPv4",
        _ => return,
    };
    if let Some(m) = spec.as_object_mut() {
        m.insert("ipFamilies".into(), json!([family]));
    }
}

/// On a type change, drops what only the old type used and the client left as it was
/// (`dropTypeDependentFields`): NodePorts when leaving NodePort/LoadBalancer, ClusterIPs and
/// families when becoming ExternalName, the external traffic policy when no longer external.
fn drop_type_dependent_fields(new: &mut Value, old: &Value) {
    let (new_type, old_type) = (svc_type(new).to_string(), svc_type(old).to_string());
    if new_type == old_type {
        return;
    }
    let old_spec = old.get("spec").cloned().unwrap_or(Value::Null);
    let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let same = |spec: &serde_json::Map<String, Value>, k: &str| spec.get(k) == old_spec.get(k);
    if new_type == "ExternalName" {
        for k in [
            "clusterIP",
            "clusterIPs",
            "ipFamilies",
            "ipFamilyPolicy",
            "internalTrafficPolicy",
        ] {
            if same(spec, k) {
                spec.remove(k);
            }
        }
    }
    let external = |t: &str| t == "NodePort" || t == "LoadBalancer";
    if external(&old_type) && !external(&new_type) {
        if same(spec, "externalTrafficPolicy") {
            spec.remove("externalTrafficPolicy");
        }
        let old_ports = old_spec
            .get("ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for p in ports {
                let np = p.get("nodePort").cloned();
                if np.is_some() && old_ports.iter().any(|o| o.get("nodePort") == np.as_ref()) {
                    if let Some(m) = p.as_object_mut() {
                        m.remove("nodePort");
                    }
                }
            }
        }
    }
    if old_type == "LoadBalancer"
        && new_type != "LoadBalancer"
        && same(spec, "allocateLoadBalancerNodePorts")
    {
        spec.remove("allocateLoadBalancerNodePorts");
    }
}

fn check_supported(spec: &Value, key: &str, supported: &[&str], errs: &mut Vec<FieldError>) {
    if let Some(v) = spec.get(key).filter(|v| !v.is_null()) {
        if !v.as_str().is_some_and(|s| supported.contains(&s)) {
            errs.push(FieldError::not_supported(
                format!("spec.{key}"),
                v,
                supported,
            ));
        }
    }
}

/// Validates a Service's spec (`ValidateService`, the common cases).
pub fn validate_service(svc: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = svc.get("spec").unwrap_or(&Value::Null);
    let ty = svc_type(svc);
    check_supported(spec, "type", TYPES, &mut errs);
    check_supported(spec, "sessionAffinity", &["ClientIP", "None"], &mut errs);
    check_supported(
        spec,
        "internalTrafficPolicy",
        &["Cluster", "Local"],
        &mut errs,
    );
    check_supported(
        spec,
        "externalTrafficPolicy",
        &["Cluster", "Local"],
        &mut errs,
    );
    check_supported(
        spec,
        "ipFamilyPolicy",
        &["SingleStack", "PreferDualStack", "RequireDualStack"],
        &mut errs,
    );
    let cluster_ip = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let headless = cluster_ip == "None";
    let ports = spec.get("ports").and_then(Value::as_array);
    if ports.is_none_or(Vec::is_empty) && !headless && ty != "ExternalName" {
        errs.push(FieldError::required("spec.ports"));
    }
    if ty == "ExternalName" {
        let name = spec
            .get("externalName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if name.is_empty() {
            errs.push(FieldError::required("spec.externalName"));
        } else {
            for msg in is_dns1123_subdomain(name.trim_end_matches('.')) {
                errs.push(FieldError::invalid("spec.externalName", &json!(name), msg));
            }
        }
    } else if !cluster_ip.is_empty() && !headless && cluster_ip.parse::<IpAddr>().is_err() {
        errs.push(FieldError::invalid(
            "spec.clusterIPs[0]",
            &json!(cluster_ip),
            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        ));
    }
    if let Some(first) = spec.pointer("/clusterIPs/0").and_then(Value::as_str) {
        if !cluster_ip.is_empty() && first != cluster_ip {
            errs.push(FieldError::invalid(
                "spec.clusterIPs",
                spec.get("clusterIPs").unwrap_or(&Value::Null),
                "element [0] must match clusterIP",
            ));
        }
    }
    let many = ports.is_some_and(|p| p.len() > 1);
    let mut names = HashSet::new();
    let mut keys = HashSet::new();
    for (i, p) in ports.into_iter().flatten().enumerate() {
        let pp = format!("spec.ports[{i}]");
        let name = p.get("name").and_then(Value::as_str).unwrap_or_default();
        if name.is_empty() {
            if many {
                errs.push(FieldError::required(format!("{pp}.name")));
            }
        } else {
            for msg in is_dns1123_label(name) {
                errs.push(FieldError::invalid(format!("{pp}.name"), &json!(name), msg));
            }
            if !names.insert(name.to_string()) {
                errs.push(FieldError::duplicate(format!("{pp}.name"), &json!(name)));
            }
        }
        let port = p.get("port").cloned().unwrap_or(json!(0));
        errs.extend(validate_port_num(&port, &format!("{pp}.port")));
        let proto = p.get("protocol").cloned().unwrap_or(json!("TCP"));
        let supported = ["SCTP", "TCP", "UDP"];
        if !proto.as_str().is_some_and(|s| supported.contains(&s)) {
            errs.push(FieldError::not_supported(
                format!("{pp}.protocol"),
                &proto,
                &supported,
            ));
        }
        match p.get("targetPort") {
            Some(Value::String(s)) => {
                for msg in is_valid_port_name(s) {
                    errs.push(FieldError::invalid(
                        format!("{pp}.targetPort"),
                        &json!(s),
                        msg,
                    ));
                }
            }
            Some(v @ Value::Number(_)) => {
                errs.extend(validate_port_num(v, &format!("{pp}.targetPort")))
            }
            _ => {}
        }
        if let Some(np) = p
            .get("nodePort")
            .filter(|v| v.as_i64().is_some_and(|n| n != 0))
        {
            if ty == "ClusterIP" {
                errs.push(FieldError::forbidden(
                    format!("{pp}.nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            } else {
                errs.extend(validate_port_num(np, &format!("{pp}.nodePort")));
            }
        }
        let key = json!({"port": port, "protocol": proto});
        if !keys.insert(key.to_string()) {
            errs.push(FieldError::duplicate(pp, &key));
        }
    }
    if ty != "NodePort" && ty != "LoadBalancer" {
        if let Some(v) = spec.get("externalTrafficPolicy").filter(|v| !v.is_null()) {
            errs.push(FieldError::invalid(
                "spec.externalTrafficPolicy",
                v,
                "may only be set when `type` is 'NodePort' or 'LoadBalancer'",
            ));
        }
    }
    if spec.get("sessionAffinity").and_then(Value::as_str) == Some("ClientIP") {
        if let Some(t) = spec.pointer("/sessionAffinityConfig/clientIP/timeoutSeconds") {
            if !t.as_i64().is_some_and(|t| (1..=86400).contains(&t)) {
                errs.push(FieldError::invalid(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                    t,
                    "must be greater than 0 and less than 86400",
                ));
            }
        }
    }
    errs.extend(validate_labels(spec.get("selector"), "spec.selector"));
    errs
}

/// Update checks (`ValidateServiceUpdate`): a set ClusterIP may not change, except when the
/// Service becomes or stops being ExternalName.
pub fn validate_service_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let old_ip = old
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let new_ip = new
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let involves_external_name = svc_type(new) == "ExternalName" || svc_type(old) == "ExternalName";
    if !old_ip.is_empty() && !involves_external_name && new_ip != old_ip {
        errs.push(FieldError::invalid(
            "spec.clusterIPs[0]",
            &json!(new_ip),
            "may not change once set",
        ));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let cases: &[(Value, Value)] = &[
            (
                json!({"ports": [{"port": 80}]}),
                json!({"type": "ClusterIP", "sessionAffinity": "None", "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}],
                       "internalTrafficPolicy": "Cluster", "ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4"]}),
            ),
            (
                json!({"type": "NodePort", "clusterIP": "fd00::10", "ports": [{"port": 80, "targetPort": "http", "protocol": "UDP"}]}),
                json!({"type": "NodePort", "clusterIP": "fd00::10", "sessionAffinity": "None", "ports": [{"port": 80, "protocol": "UDP", "targetPort": "http"}],
                       "internalTrafficPolicy": "Cluster", "ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv6"], "externalTrafficPolicy": "Cluster"}),
            ),
            (
                json!({"type": "ExternalName", "externalName": "example.com", "sessionAffinity": "ClientIP"}),
                json!({"type": "ExternalName", "externalName": "example.com", "sessionAffinity": "ClientIP",
                       "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}}}),
            ),
            (
                json!({"type": "LoadBalancer", "ports": [{"port": 443, "targetPort": 0}]}),
                json!({"type": "LoadBalancer", "sessionAffinity": "None", "ports": [{"port": 443, "protocol": "TCP", "targetPort": 443}],
                       "internalTrafficPolicy": "Cluster", "ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4"],
                       "externalTrafficPolicy": "Cluster", "allocateLoadBalancerNodePorts": true}),
            ),
        ];
        for (spec, want) in cases {
            let mut svc = json!({"spec": spec});
            default_service(&mut svc);
            assert_eq!(&svc["spec"], want, "{spec}");
        }
    }

    fn lines(errs: Vec<FieldError>) -> Vec<String> {
        errs.iter().map(FieldError::line).collect()
    }

    #[test]
    fn validation() {
        let cases: &[(Value, &[&str])] = &[
            (json!({"type": "ClusterIP", "ports": [{"port": 80, "protocol": "TCP"}]}), &[]),
            (json!({"type": "ClusterIP"}), &["spec.ports: Required value"]),
            (json!({"type": "ClusterIP", "clusterIP": "None"}), &[]),
            (json!({"type": "ExternalName", "externalName": "db.example.com"}), &[]),
            (json!({"type": "ExternalName"}), &["spec.externalName: Required value"]),
            (
                json!({"type": "Weird", "ports": [{"port": 80}]}),
                &["spec.type: Unsupported value: \"Weird\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""],
            ),
            (
                json!({"ports": [{"port": 0, "protocol": "ICMP"}]}),
                &[
                    "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
                    "spec.ports[0].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                ],
            ),
            (
                json!({"ports": [{"name": "a", "port": 80}, {"name": "a", "port": 81}]}),
                &["spec.ports[1].name: Duplicate value: \"a\""],
            ),
            (json!({"ports": [{"port": 80}, {"port": 81}]}), &["spec.ports[0].name: Required value", "spec.ports[1].name: Required value"]),
            (
                json!({"ports": [{"name": "a", "port": 80, "protocol": "TCP"}, {"name": "b", "port": 80, "protocol": "TCP"}]}),
                &["spec.ports[1]: Duplicate value: {\"port\":80,\"protocol\":\"TCP\"}"],
            ),
            (
                json!({"type": "ClusterIP", "ports": [{"port": 80, "nodePort": 30080}]}),
                &["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"],
            ),
            (
                json!({"clusterIP": "10.0.0.300", "ports": [{"port": 80}]}),
                &["spec.clusterIPs[0]: Invalid value: \"10.0.0.300\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"],
            ),
            (
                json!({"type": "ClusterIP", "externalTrafficPolicy": "Local", "ports": [{"port": 80}]}),
                &["spec.externalTrafficPolicy: Invalid value: \"Local\": may only be set when `type` is 'NodePort' or 'LoadBalancer'"],
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(
                lines(validate_service(&json!({"spec": spec}))),
                *want,
                "{spec}"
            );
        }
    }

    #[test]
    fn updates() {
        let old = json!({"spec": {"type": "NodePort", "clusterIP": "10.43.0.5", "externalTrafficPolicy": "Cluster",
                                   "ports": [{"port": 80, "nodePort": 30080}]}});
        let changed = json!({"spec": {"type": "NodePort", "clusterIP": "10.43.0.6"}});
        assert_eq!(
            lines(validate_service_update(&changed, &old)),
            ["spec.clusterIPs[0]: Invalid value: \"10.43.0.6\": may not change once set"]
        );
        let external = json!({"spec": {"type": "ExternalName", "externalName": "x.example"}});
        assert!(validate_service_update(&external, &old).is_empty());

        let mut to_cluster_ip = json!({"spec": {"type": "ClusterIP", "clusterIP": "10.43.0.5", "externalTrafficPolicy": "Cluster",
                                                "ports": [{"port": 80, "nodePort": 30080}]}});
        drop_type_dependent_fields(&mut to_cluster_ip, &old);
        let mut v6 = json!({"spec": {"ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4"], "clusterIP": "fd00::10"}});
        fix_ip_families(&mut v6);
        assert_eq!(v6["spec"]["ipFamilies"], json!(["IPv6"]));
        assert_eq!(
            to_cluster_ip,
            json!({"spec": {"type": "ClusterIP", "clusterIP": "10.43.0.5", "ports": [{"port": 80}]}})
        );
    }
}

//! Kubernetes objects into the plain netrules [`Model`]. Pure: store snapshots in, model out.
//!
//! Mirrors upstream's `newServiceInfo` / `newBaseServiceInfo` (kubernetes/kubernetes
//! pkg/proxy/serviceport.go) and the EndpointSlice cache (pkg/proxy/endpointslicecache.go).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use oxlet_netrules::{Cidr, Endpoint, Model, Protocol, ServicePort, ServicePortName};

use crate::config::NodePortAddress;

/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Upstream's default ClientIP affinity timeout (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT: Duration = Duration::from_secs(10800);

/// Why one Service was left out of the model (the rest is still programmed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("service {namespace}/{name}: {reason}")]
pub struct ServiceError {
    /// Namespace of the Service.
    pub namespace: String,
    /// Name of the Service.
    pub name: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Node-level inputs of the model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// Our Node's name (decides [`Endpoint::is_local`]).
    pub node_name: String,
    /// Our Node's addresses (InternalIP, ExternalIP).
    pub node_ips: Vec<IpAddr>,
    /// Pod CIDRs.
    pub cluster_cidrs: Vec<Cidr>,
    /// Addresses accepting NodePorts; empty: every local address.
    pub nodeport_addresses: Vec<IpAddr>,
    /// `masqueradeAll`.
    pub masquerade_all: bool,
    /// `iptables.localhostNodePorts` in iptables mode.
    pub localhost_nodeports: bool,
}

/// The Node's InternalIP and ExternalIP addresses, in status order, without duplicates.
pub fn node_ips(node: &Node) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for a in node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
    {
        if a.type_ != "InternalIP" && a.type_ != "ExternalIP" {
            continue;
        }
        if let Ok(ip) = a.address.parse::<IpAddr>() {
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    out
}

/// The addresses NodePorts are accepted on: with no `nodePortAddresses`, or with `primary`,
/// the Node's own addresses; a CIDR selects the Node addresses inside it. An empty result
/// (Node not known yet) means every local address.
pub fn nodeport_addresses(config: &[NodePortAddress], node_ips: &[IpAddr]) -> Vec<IpAddr> {
    if config.is_empty() {
        return node_ips.to_vec();
    }
    let mut out: Vec<IpAddr> = Vec::new();
    for ip in node_ips {
        let selected = config.iter().any(|a| match a {
            NodePortAddress::Primary => true,
            NodePortAddress::Cidr(c) => cidr_contains(c, ip),
        });
        if selected && !out.contains(ip) {
            out.push(*ip);
        }
    }
    out
}

fn cidr_contains(c: &Cidr, ip: &IpAddr) -> bool {
    match (c.addr, ip) {
        (IpAddr::V4(net), IpAddr::V4(ip)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(c.prefix)).unwrap_or(0);
            u32::from(net) & mask == u32::from(*ip) & mask
        }
        (IpAddr::V6(net), IpAddr::V6(ip)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(c.prefix))
                .unwrap_or(0);
            u128::from(net) & mask == u128::from(*ip) & mask
        }
        _ => false,
    }
}

fn parse_protocol(p: Option<&str>) -> Option<Protocol> {
    match p.unwrap_or("TCP") {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        "SCTP" => Some(Protocol::Sctp),
        _ => None,
    }
}

fn port_u16(v: i32) -> Option<u16> {
    u16::try_from(v).ok().filter(|p| *p != 0)
}

/// The service ports of one Service, without endpoints. `Ok(empty)` for Services the proxy
/// ignores (ExternalName, headless, no ClusterIP yet); `Err` for a malformed one.
pub fn service_ports(svc: &Service) -> Result<Vec<(ServicePortName, ServicePort)>, ServiceError> {
    let namespace = svc.metadata.namespace.clone().unwrap_or_default();
    let name = svc.metadata.name.clone().unwrap_or_default();
    let err = |reason: String| ServiceError {
        namespace: namespace.clone(),
        name: name.clone(),
        reason,
    };
    let Some(spec) = &svc.spec else {
        return Ok(Vec::new());
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Ok(Vec::new());
    }
    let raw_ips: Vec<&str> = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ips.iter().map(String::as_str).collect(),
        _ => spec.cluster_ip.as_deref().into_iter().collect(),
    };
    if raw_ips.is_empty() || raw_ips.iter().any(|ip| ip.is_empty() || *ip == "None") {
        // Headless, or not allocated yet: nothing to proxy.
        return Ok(Vec::new());
    }
    let parse_ips = |field: &str, raw: &[&str]| -> Result<Vec<IpAddr>, ServiceError> {
        raw.iter()
            .map(|s| {
                s.parse::<IpAddr>()
                    .map_err(|_| err(format!("{field}: invalid IP address {s:?}")))
            })
            .collect()
    };
    let cluster_ips = parse_ips("spec.clusterIPs", &raw_ips)?;
    let external: Vec<&str> = spec
        .external_ips
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    let external_ips = parse_ips("spec.externalIPs", &external)?;
    let lb: Vec<&str> = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref())
        .filter(|ip| !ip.is_empty())
        .collect();
    let load_balancer_ips = parse_ips("status.loadBalancer.ingress", &lb)?;
    let has_node_ports = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
    let session_affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u64::try_from(t).ok())
            .filter(|t| *t > 0)
            .map_or(DEFAULT_AFFINITY_TIMEOUT, Duration::from_secs)
    });
    let external_traffic_local = spec.external_traffic_policy.as_deref() == Some("Local");
    let internal_traffic_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let mut out = Vec::new();
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        let protocol = parse_protocol(p.protocol.as_deref()).ok_or_else(|| {
            err(format!(
                "spec.ports[{i}].protocol: unsupported {:?}",
                p.protocol.as_deref().unwrap_or_default()
            ))
        })?;
        let port = port_u16(p.port)
            .ok_or_else(|| err(format!("spec.ports[{i}].port: invalid port {}", p.port)))?;
        let mut sp = ServicePort::new(cluster_ips.clone(), port);
        if has_node_ports {
            sp.node_port = p.node_port.and_then(port_u16);
        }
        sp.external_ips = external_ips.clone();
        sp.load_balancer_ips = load_balancer_ips.clone();
        sp.session_affinity = session_affinity;
        sp.external_traffic_local = external_traffic_local;
        sp.internal_traffic_local = internal_traffic_local;
        if external_traffic_local {
            sp.health_check_node_port = spec.health_check_node_port.and_then(port_u16);
        }
        let spn = ServicePortName::new(
            &namespace,
            &name,
            p.name.as_deref().unwrap_or_default(),
            protocol,
        );
        out.push((spn, sp));
    }
    Ok(out)
}

/// The `namespace/service` an EndpointSlice belongs to, from its service-name label.
pub fn slice_service(slice: &EndpointSlice) -> Option<(String, String)> {
    let svc = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some((
        slice.metadata.namespace.clone().unwrap_or_default(),
        svc.clone(),
    ))
}

/// What the proxy keeps of one EndpointSlice: its Service, ports and endpoints, with the
/// endpoints' locality already decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceInfo {
    /// The slice's name (slices of one Service are merged in name order).
    pub name: String,
    /// `namespace/name` of the Service, from the service-name label.
    pub service: Option<(String, String)>,
    /// `(name, protocol, port)` of each usable port.
    pub ports: Vec<(String, Protocol, u16)>,
    /// The endpoints, with `port` 0 (the port comes from `ports`).
    pub endpoints: Vec<Endpoint>,
    /// The `endpoints.kubernetes.io/last-change-trigger-time` annotation, if valid.
    pub trigger_time: Option<jiff::Timestamp>,
}

/// The parts of `slice` the proxy uses; endpoints on `node_name` are local. Slices of an
/// address type other than IPv4/IPv6 (FQDN) have no endpoints.
pub fn project_slice(slice: &EndpointSlice, node_name: &str) -> SliceInfo {
    let trigger_time = slice
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::endpoints_change_tracker::TRIGGER_TIME_ANNOTATION))
        .and_then(|t| t.parse().ok());
    let mut info = SliceInfo {
        name: slice.metadata.name.clone().unwrap_or_default(),
        service: slice_service(slice),
        ports: Vec::new(),
        endpoints: Vec::new(),
        trigger_time,
    };
    if slice.address_type != "IPv4" && slice.address_type != "IPv6" {
        return info;
    }
    info.ports = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some((
                p.name.clone().unwrap_or_default(),
                parse_protocol(p.protocol.as_deref())?,
                p.port.and_then(port_u16)?,
            ))
        })
        .collect();
    for ep in &slice.endpoints {
        // As upstream: only the first address of an endpoint is used.
        let Some(ip) = ep.addresses.first().and_then(|a| a.parse::<IpAddr>().ok()) else {
            continue;
        };
        let cond = ep.conditions.as_ref();
        // A nil ready condition means ready (upstream's EndpointConditions doc).
        let ready = cond.and_then(|c| c.ready).unwrap_or(true);
        let terminating = cond.and_then(|c| c.terminating).unwrap_or(false);
        let serving = cond.and_then(|c| c.serving).unwrap_or(ready);
        info.endpoints.push(Endpoint {
            ip,
            port: 0,
            ready,
            serving,
            terminating,
            is_local: ep.node_name.as_deref() == Some(node_name),
        });
    }
    info
}

/// Endpoints for the port named `port_name`/`protocol` from the slices of one Service, in
/// any order, deduplicated by address and port: the first slice by name wins.
pub fn merge_endpoints<'a>(
    slices: impl IntoIterator<Item = &'a SliceInfo>,
    port_name: &str,
    protocol: Protocol,
) -> Vec<Endpoint> {
    let mut sorted: Vec<&SliceInfo> = slices.into_iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out: BTreeMap<(IpAddr, u16), Endpoint> = BTreeMap::new();
    for slice in sorted {
        let Some(&(_, _, port)) = slice
            .ports
            .iter()
            .find(|(name, proto, _)| name == port_name && *proto == protocol)
        else {
            continue;
        };
        for ep in &slice.endpoints {
            out.entry((ep.ip, port))
                .or_insert(Endpoint { port, ..ep.clone() });
        }
    }
    out.into_values().collect()
}

/// Endpoints for the port named `port_name`/`protocol` from every slice given (the slices of
/// one Service), deduplicated by address and port: the first slice by name wins.
pub fn endpoints_for(
    slices: &[&EndpointSlice],
    port_name: &str,
    protocol: Protocol,
    node_name: &str,
) -> Vec<Endpoint> {
    let infos: Vec<SliceInfo> = slices.iter().map(|s| project_slice(s, node_name)).collect();
    merge_endpoints(&infos, port_name, protocol)
}

/// Builds the whole model. Malformed Services are left out and returned as errors; every
/// other Service is still in the model.
pub fn build(
    node: &NodeInfo,
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
) -> (Model, Vec<ServiceError>) {
    let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for s in slices {
        if let Some(key) = slice_service(s) {
            by_service.entry(key).or_default().push(s);
        }
    }
    let mut model = Model {
        node_name: node.node_name.clone(),
        node_ips: node.node_ips.clone(),
        cluster_cidrs: node.cluster_cidrs.clone(),
        nodeport_addresses: node.nodeport_addresses.clone(),
        masquerade_all: node.masquerade_all,
        localhost_nodeports: node.localhost_nodeports,
        services: BTreeMap::new(),
    };
    let mut errors = Vec::new();
    for svc in services {
        let ports = match service_ports(svc) {
            Ok(p) => p,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        for (spn, mut sp) in ports {
            let key = (spn.namespace.clone(), spn.name.clone());
            if let Some(slices) = by_service.get(&key) {
                sp.endpoints = endpoints_for(slices, &spn.port_name, spn.protocol, &node.node_name);
            }
            model.services.insert(spn, sp);
        }
    }
    errors.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    (model, errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ClientIPConfig, LoadBalancerIngress, LoadBalancerStatus, NodeAddress, NodeStatus,
        ServicePort as KPort, ServiceSpec, ServiceStatus, SessionAffinityConfig,
    };
    use k8s_openapi::api::discovery::v1::{
        Endpoint as KEndpoint, EndpointConditions, EndpointPort,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    // Address plan (as upstream proxier_test.go): pods 10.0.0.0/8, ClusterIPs 172.30.0.0/16,
    // node 192.168.0.2, external 1.2.3.4, load balancer 5.6.7.8.
    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn svc(name: &str, cluster_ip: &str, ports: Vec<KPort>) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some("ns1".into()),
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(cluster_ip.into()),
                cluster_ips: Some(vec![cluster_ip.into()]),
                type_: Some("ClusterIP".into()),
                ports: Some(ports),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn port(name: &str, port: i32, protocol: &str) -> KPort {
        KPort {
            name: Some(name.into()),
            port,
            protocol: Some(protocol.into()),
            ..Default::default()
        }
    }

    fn ep(addr: &str, node: &str, ready: Option<bool>, terminating: Option<bool>) -> KEndpoint {
        KEndpoint {
            addresses: vec![addr.into()],
            conditions: Some(EndpointConditions {
                ready,
                serving: None,
                terminating,
            }),
            node_name: Some(node.into()),
            ..Default::default()
        }
    }

    fn slice(name: &str, svc: &str, ports: Vec<(&str, i32)>, eps: Vec<KEndpoint>) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some("ns1".into()),
                name: Some(name.into()),
                labels: Some([(SERVICE_NAME_LABEL.to_string(), svc.to_string())].into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: eps,
            ports: Some(
                ports
                    .into_iter()
                    .map(|(n, p)| EndpointPort {
                        name: Some(n.into()),
                        port: Some(p),
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
        }
    }

    fn node() -> NodeInfo {
        NodeInfo {
            node_name: "node-a".into(),
            node_ips: vec![ip("192.168.0.2")],
            ..Default::default()
        }
    }

    #[test]
    fn cluster_ip_service_with_endpoints_from_two_slices() {
        let s = svc(
            "web",
            "172.30.0.41",
            vec![port("http", 80, "TCP"), port("dns", 53, "UDP")],
        );
        let a = slice(
            "web-a",
            "web",
            vec![("http", 8080)],
            vec![
                ep("10.0.1.1", "node-a", None, None),
                ep("10.0.1.2", "node-b", Some(false), Some(true)),
            ],
        );
        // A duplicate of 10.0.1.1 in a second slice (a slice being rebalanced) counts once.
        let b = slice(
            "web-b",
            "web",
            vec![("http", 8080)],
            vec![
                ep("10.0.1.1", "node-a", Some(true), None),
                ep("10.0.1.3", "node-b", Some(true), None),
            ],
        );
        let other = slice(
            "x",
            "other",
            vec![("http", 8080)],
            vec![ep("10.9.9.9", "n", None, None)],
        );
        let (m, errs) = build(
            &node(),
            &[Arc::new(s)],
            &[Arc::new(a), Arc::new(b), Arc::new(other)],
        );
        assert!(errs.is_empty());
        assert_eq!(m.services.len(), 2);
        let http = &m.services[&ServicePortName::new("ns1", "web", "http", Protocol::Tcp)];
        assert_eq!(http.cluster_ips, vec![ip("172.30.0.41")]);
        assert_eq!(http.port, 80);
        assert_eq!(
            http.endpoints,
            vec![
                Endpoint::ready(ip("10.0.1.1"), 8080, true),
                Endpoint {
                    ip: ip("10.0.1.2"),
                    port: 8080,
                    ready: false,
                    serving: false,
                    terminating: true,
                    is_local: false
                },
                Endpoint::ready(ip("10.0.1.3"), 8080, false),
            ]
        );
        // The UDP port has no matching slice port: no endpoints.
        let dns = &m.services[&ServicePortName::new("ns1", "web", "dns", Protocol::Udp)];
        assert!(dns.endpoints.is_empty());
        assert_eq!(m.node_name, "node-a");
    }

    #[test]
    fn node_port_external_lb_affinity_and_policies() {
        let mut s = svc("np", "172.30.0.42", vec![port("", 80, "TCP")]);
        let spec = s.spec.as_mut().expect("spec");
        spec.type_ = Some("LoadBalancer".into());
        spec.ports.as_mut().expect("ports")[0].node_port = Some(30080);
        spec.external_ips = Some(vec!["1.2.3.4".into()]);
        spec.session_affinity = Some("ClientIP".into());
        spec.external_traffic_policy = Some("Local".into());
        spec.internal_traffic_policy = Some("Local".into());
        spec.health_check_node_port = Some(30999);
        s.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(vec![
                    LoadBalancerIngress {
                        ip: Some("5.6.7.8".into()),
                        ..Default::default()
                    },
                    LoadBalancerIngress {
                        hostname: Some("lb.example".into()),
                        ..Default::default()
                    },
                ]),
            }),
            ..Default::default()
        });
        let (m, errs) = build(&node(), &[Arc::new(s.clone())], &[]);
        assert!(errs.is_empty());
        let p = &m.services[&ServicePortName::new("ns1", "np", "", Protocol::Tcp)];
        assert_eq!(p.node_port, Some(30080));
        assert_eq!(p.external_ips, vec![ip("1.2.3.4")]);
        assert_eq!(p.load_balancer_ips, vec![ip("5.6.7.8")]);
        assert_eq!(p.session_affinity, Some(DEFAULT_AFFINITY_TIMEOUT));
        assert!(p.external_traffic_local && p.internal_traffic_local);
        assert_eq!(p.health_check_node_port, Some(30999));

        s.spec.as_mut().expect("spec").session_affinity_config = Some(SessionAffinityConfig {
            client_ip: Some(ClientIPConfig {
                timeout_seconds: Some(60),
            }),
        });
        let (m, _) = build(&node(), &[Arc::new(s)], &[]);
        let p = &m.services[&ServicePortName::new("ns1", "np", "", Protocol::Tcp)];
        assert_eq!(p.session_affinity, Some(Duration::from_secs(60)));
    }

    #[test]
    fn headless_external_name_and_cluster_ip_node_port_are_ignored() {
        let headless = svc("headless", "None", vec![port("http", 80, "TCP")]);
        let mut ext = svc("ext", "", vec![]);
        ext.spec.as_mut().expect("spec").type_ = Some("ExternalName".into());
        // A ClusterIP Service carrying a stale nodePort gets no NodePort rule.
        let mut cip = svc("cip", "172.30.0.43", vec![port("http", 80, "TCP")]);
        cip.spec
            .as_mut()
            .expect("spec")
            .ports
            .as_mut()
            .expect("ports")[0]
            .node_port = Some(30001);
        let (m, errs) = build(
            &node(),
            &[Arc::new(headless), Arc::new(ext), Arc::new(cip)],
            &[],
        );
        assert!(errs.is_empty());
        assert_eq!(m.services.len(), 1);
        assert_eq!(m.services.values().next().map(|p| p.node_port), Some(None));
    }

    #[test]
    fn a_bad_service_is_skipped_and_the_rest_kept() {
        let bad = svc("bad", "300.1.2.3", vec![port("http", 80, "TCP")]);
        let mut bad_ext = svc("badext", "172.30.0.45", vec![port("http", 80, "TCP")]);
        bad_ext.spec.as_mut().expect("spec").external_ips = Some(vec!["nope".into()]);
        let bad_proto = svc("badproto", "172.30.0.46", vec![port("http", 80, "ICMP")]);
        let good = svc("good", "172.30.0.44", vec![port("http", 80, "TCP")]);
        let (m, errs) = build(
            &node(),
            &[
                Arc::new(bad),
                Arc::new(good),
                Arc::new(bad_ext),
                Arc::new(bad_proto),
            ],
            &[],
        );
        assert_eq!(m.services.len(), 1);
        assert!(m.services.contains_key(&ServicePortName::new(
            "ns1",
            "good",
            "http",
            Protocol::Tcp
        )));
        let names: Vec<&str> = errs.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, vec!["bad", "badext", "badproto"]);
        assert!(errs[0]
            .to_string()
            .contains("spec.clusterIPs: invalid IP address \"300.1.2.3\""));
    }

    #[test]
    fn node_addresses_and_nodeport_selection() {
        let n = Node {
            status: Some(NodeStatus {
                addresses: Some(vec![
                    NodeAddress {
                        type_: "Hostname".into(),
                        address: "node-a".into(),
                    },
                    NodeAddress {
                        type_: "InternalIP".into(),
                        address: "192.168.0.2".into(),
                    },
                    NodeAddress {
                        type_: "ExternalIP".into(),
                        address: "203.0.113.7".into(),
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let ips = node_ips(&n);
        assert_eq!(ips, vec![ip("192.168.0.2"), ip("203.0.113.7")]);
        assert_eq!(nodeport_addresses(&[], &ips), ips);
        assert_eq!(
            nodeport_addresses(
                &[NodePortAddress::Cidr(
                    "192.168.0.0/16".parse().expect("cidr")
                )],
                &ips
            ),
            vec![ip("192.168.0.2")]
        );
        assert_eq!(nodeport_addresses(&[NodePortAddress::Primary], &ips), ips);
    }
}

//! The plain model of service load-balancing that every renderer consumes.
//!
//! It mirrors what upstream kube-proxy keeps per service port (`ServicePortInfo`, `Endpoint`
//! in kubernetes/kubernetes pkg/proxy) without any Kubernetes type: the proxy crate fills it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

/// Everything one node needs to program service load-balancing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Model {
    /// The node's name (for logs; locality is already resolved into [`Endpoint::is_local`]).
    pub node_name: String,
    /// The node's own addresses.
    pub node_ips: Vec<IpAddr>,
    /// Pod CIDRs of the cluster: sources inside them are "local" (no masquerade to ClusterIPs).
    pub cluster_cidrs: Vec<Cidr>,
    /// Node addresses that accept NodePort traffic; empty means every local address.
    pub nodeport_addresses: Vec<IpAddr>,
    /// Masquerade all traffic to ClusterIPs, as kube-proxy's `--masquerade-all`.
    pub masquerade_all: bool,
    /// NodePorts also answer on 127.0.0.0/8, as kube-proxy's `iptables.localhostNodePorts`
    /// (IPv4 in iptables mode only; needs `net.ipv4.conf.all.route_localnet=1`). Off:
    /// localhost is excluded from NodePort matching in both modes.
    pub localhost_nodeports: bool,
    /// The service ports, sorted by name so that rendering is deterministic.
    pub services: BTreeMap<ServicePortName, ServicePort>,
}

/// An IP protocol a service port can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// The lower-case name nft and iptables use (`tcp`, `udp`, `sctp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The identity of one port of one service, as upstream's `ServicePortName`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortName {
    /// Namespace of the Service.
    pub namespace: String,
    /// Name of the Service.
    pub name: String,
    /// Name of the port (may be empty for a single unnamed port).
    pub port_name: String,
    /// Protocol of the port.
    pub protocol: Protocol,
}

impl ServicePortName {
    /// Builds a name from its parts.
    pub fn new(namespace: &str, name: &str, port_name: &str, protocol: Protocol) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            port_name: port_name.to_owned(),
            protocol,
        }
    }
}

impl fmt::Display for ServicePortName {
    /// `namespace/name:port` as upstream prints a `ServicePortName`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.name, self.port_name)
    }
}

/// One port of one service, with everything rendering needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// ClusterIPs (one per family at most, as Kubernetes allocates them).
    pub cluster_ips: Vec<IpAddr>,
    /// The service port.
    pub port: u16,
    /// The NodePort, if the service has one.
    pub node_port: Option<u16>,
    /// `spec.externalIPs`.
    pub external_ips: Vec<IpAddr>,
    /// LoadBalancer ingress IPs; treated like external IPs.
    pub load_balancer_ips: Vec<IpAddr>,
    /// ClientIP session affinity and its timeout; `None` is no affinity.
    pub session_affinity: Option<Duration>,
    /// `externalTrafficPolicy: Local`.
    pub external_traffic_local: bool,
    /// `internalTrafficPolicy: Local`.
    pub internal_traffic_local: bool,
    /// `healthCheckNodePort` (served by the proxy, not rendered into rules).
    pub health_check_node_port: Option<u16>,
    /// All endpoints of the port, in any order (rendering sorts them).
    pub endpoints: Vec<Endpoint>,
}

impl ServicePort {
    /// A ClusterIP service port with no endpoints and default policies.
    pub fn new(cluster_ips: Vec<IpAddr>, port: u16) -> Self {
        Self {
            cluster_ips,
            port,
            node_port: None,
            external_ips: Vec::new(),
            load_balancer_ips: Vec::new(),
            session_affinity: None,
            external_traffic_local: false,
            internal_traffic_local: false,
            health_check_node_port: None,
            endpoints: Vec::new(),
        }
    }

    /// Whether traffic can reach the service from outside the cluster, as upstream's
    /// `ExternallyAccessible` (NodePort, external IPs or LoadBalancer IPs).
    pub fn externally_accessible(&self) -> bool {
        self.node_port.is_some()
            || !self.external_ips.is_empty()
            || !self.load_balancer_ips.is_empty()
    }

    /// Whether the external policy is Local; only meaningful for externally accessible ports.
    pub fn external_policy_local(&self) -> bool {
        self.external_traffic_local && self.externally_accessible()
    }

    /// Whether some traffic uses the Cluster policy (upstream `UsesClusterEndpoints`).
    pub fn uses_cluster_endpoints(&self) -> bool {
        // As upstream: external traffic needs the Cluster endpoints even with a Local
        // external policy, for the short-circuit of pod and host traffic.
        !self.internal_traffic_local || self.externally_accessible()
    }

    /// Whether some traffic uses the Local policy (upstream `UsesLocalEndpoints`).
    pub fn uses_local_endpoints(&self) -> bool {
        self.internal_traffic_local || self.external_policy_local()
    }
}

/// One backend of a service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    /// Address of the backend.
    pub ip: IpAddr,
    /// Target port on the backend.
    pub port: u16,
    /// EndpointConditions.ready.
    pub ready: bool,
    /// EndpointConditions.serving.
    pub serving: bool,
    /// EndpointConditions.terminating.
    pub terminating: bool,
    /// Whether the backend runs on this node.
    pub is_local: bool,
}

impl Endpoint {
    /// A ready, serving, non-terminating endpoint.
    pub fn ready(ip: IpAddr, port: u16, is_local: bool) -> Self {
        Self {
            ip,
            port,
            ready: true,
            serving: true,
            terminating: false,
            is_local,
        }
    }

    /// A terminating endpoint that still serves (used only when nothing is ready).
    pub fn terminating(ip: IpAddr, port: u16, is_local: bool) -> Self {
        Self {
            ip,
            port,
            ready: false,
            serving: true,
            terminating: true,
            is_local,
        }
    }

    fn serving_terminating(&self) -> bool {
        self.serving && self.terminating
    }
}

/// An IP family: each family is rendered into its own table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4 (`ip` table, `iptables`).
    V4,
    /// IPv6 (`ip6` table, `ip6tables`).
    V6,
}

impl Family {
    /// Whether `ip` belongs to this family.
    pub fn contains(self, ip: &IpAddr) -> bool {
        match self {
            Family::V4 => ip.is_ipv4(),
            Family::V6 => ip.is_ipv6(),
        }
    }

    /// The nft table family and address-match keyword (`ip`, `ip6`).
    pub fn nft(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }

    /// The nft address type (`ipv4_addr`, `ipv6_addr`).
    pub fn nft_addr_type(self) -> &'static str {
        match self {
            Family::V4 => "ipv4_addr",
            Family::V6 => "ipv6_addr",
        }
    }
}

/// An IP network in CIDR notation (`10.0.0.0/8`, `fd00::/48`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    /// The network address.
    pub addr: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// Whether the network is IPv4.
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A string that is not a valid CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR {0:?}")]
pub struct InvalidCidr(pub String);

impl FromStr for Cidr {
    type Err = InvalidCidr;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidCidr(s.to_owned());
        let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(bad());
        }
        Ok(Self { addr, prefix })
    }
}

/// The endpoints a service port uses, split by traffic policy, as upstream's
/// `CategorizeEndpoints` (kubernetes/kubernetes pkg/proxy/topology.go).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CategorizedEndpoints<'a> {
    /// Endpoints for Cluster-policy traffic (empty if no traffic uses that policy).
    pub cluster: Vec<&'a Endpoint>,
    /// Endpoints for Local-policy traffic (empty if no traffic uses that policy).
    pub local: Vec<&'a Endpoint>,
    /// The union of both: every endpoint that gets an endpoint chain.
    pub all_reachable: Vec<&'a Endpoint>,
    /// Whether the service has any usable endpoint on any node.
    pub has_any: bool,
}

/// Splits `svc`'s endpoints (already filtered to one family by the caller) by policy.
///
/// Ready endpoints are used; if none is ready, serving-and-terminating ones are (the
/// upstream `ProxyTerminatingEndpoints` behaviour), separately for the cluster-wide and the
/// node-local set. The result is sorted by (ip, port) so rendering is deterministic.
pub fn categorize_endpoints<'a>(
    svc: &ServicePort,
    endpoints: &[&'a Endpoint],
) -> CategorizedEndpoints<'a> {
    let mut eps: Vec<&'a Endpoint> = endpoints.to_vec();
    eps.sort_by_key(|e| (e.ip, e.port));
    eps.dedup_by(|a, b| (a.ip, a.port) == (b.ip, b.port));

    let mut out = CategorizedEndpoints::default();
    if svc.uses_cluster_endpoints() {
        out.cluster = eps.iter().copied().filter(|e| e.ready).collect();
        if out.cluster.is_empty() {
            out.cluster = eps
                .iter()
                .copied()
                .filter(|e| e.serving_terminating())
                .collect();
        }
        out.has_any = !out.cluster.is_empty();
    }
    if !svc.uses_local_endpoints() {
        out.all_reachable = out.cluster.clone();
        return out;
    }
    let mut local_ready = false;
    let mut local_serving_terminating = false;
    for e in &eps {
        if e.ready {
            out.has_any = true;
            local_ready |= e.is_local;
        } else if e.serving_terminating() {
            out.has_any = true;
            local_serving_terminating |= e.is_local;
        }
    }
    if local_ready {
        out.local = eps
            .iter()
            .copied()
            .filter(|e| e.is_local && e.ready)
            .collect();
    } else if local_serving_terminating {
        out.local = eps
            .iter()
            .copied()
            .filter(|e| e.is_local && e.serving_terminating())
            .collect();
    }
    if !svc.uses_cluster_endpoints() {
        out.all_reachable = out.local.clone();
        return out;
    }
    let mut all = out.cluster.clone();
    for e in &out.local {
        if !all.contains(e) {
            all.push(e);
        }
    }
    all.sort_by_key(|e| (e.ip, e.port));
    out.all_reachable = all;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn ready_endpoints_win_over_terminating() {
        let svc = ServicePort::new(vec![ip("172.30.0.1")], 80);
        let a = Endpoint::ready(ip("10.0.0.2"), 80, false);
        let b = Endpoint::terminating(ip("10.0.0.1"), 80, false);
        let c = categorize_endpoints(&svc, &[&a, &b]);
        assert_eq!(c.cluster, vec![&a]);
        assert!(c.local.is_empty());
        assert_eq!(c.all_reachable, vec![&a]);
        assert!(c.has_any);
    }

    #[test]
    fn terminating_fallback_and_not_serving_ignored() {
        let svc = ServicePort::new(vec![ip("172.30.0.1")], 80);
        let a = Endpoint::terminating(ip("10.0.0.2"), 80, false);
        let mut b = Endpoint::terminating(ip("10.0.0.1"), 80, false);
        b.serving = false;
        let c = categorize_endpoints(&svc, &[&a, &b]);
        assert_eq!(c.cluster, vec![&a]);
        let none = categorize_endpoints(&svc, &[&b]);
        assert!(!none.has_any);
    }

    #[test]
    fn internal_local_uses_only_local_endpoints() {
        let mut svc = ServicePort::new(vec![ip("172.30.0.1")], 80);
        svc.internal_traffic_local = true;
        let a = Endpoint::ready(ip("10.0.0.2"), 80, false);
        let b = Endpoint::ready(ip("10.0.0.3"), 80, true);
        let c = categorize_endpoints(&svc, &[&a, &b]);
        assert!(c.cluster.is_empty());
        assert_eq!(c.local, vec![&b]);
        assert_eq!(c.all_reachable, vec![&b]);
        let remote_only = categorize_endpoints(&svc, &[&a]);
        assert!(remote_only.has_any && remote_only.local.is_empty());
    }

    #[test]
    fn external_local_keeps_cluster_endpoints_for_internal_traffic() {
        let mut svc = ServicePort::new(vec![ip("172.30.0.1")], 80);
        svc.node_port = Some(30080);
        svc.external_traffic_local = true;
        let a = Endpoint::ready(ip("10.0.0.2"), 80, false);
        let b = Endpoint::ready(ip("10.0.0.3"), 80, true);
        let c = categorize_endpoints(&svc, &[&b, &a]);
        assert_eq!(c.cluster, vec![&a, &b]);
        assert_eq!(c.local, vec![&b]);
        assert_eq!(c.all_reachable, vec![&a, &b]);
    }

    #[test]
    fn cidr_parses_and_prints() {
        let c: Cidr = "10.0.0.0/8".parse().expect("valid");
        assert_eq!(c.to_string(), "10.0.0.0/8");
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("fd00::/48".parse::<Cidr>().is_ok());
    }
}

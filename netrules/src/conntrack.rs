//! Stale UDP conntrack entries: which flows to a service point at a backend that no longer
//! serves it, as upstream's `CleanStaleEntries` (kubernetes/kubernetes
//! pkg/proxy/conntrack/cleanup.go).
//!
//! UDP has no connection to close: a client that keeps sending from the same port keeps
//! matching the old entry, and so the old DNAT target, until the entry times out. Pure: the
//! `conntrack -L` text and the model in, the deletions out; [`crate::apply::conntrack`] runs
//! them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::model::{Family, Model, Protocol};

/// The parts of one UDP conntrack entry the cleanup looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Entry {
    /// Destination of the original direction (the service address).
    pub orig_dst: IpAddr,
    /// Destination port of the original direction (the service port or NodePort).
    pub orig_dport: u16,
    /// Source of the reply direction: the DNAT target, or `orig_dst` if nothing DNATed it.
    pub reply_src: IpAddr,
}

/// One deletion, as `conntrack -D` arguments express it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stale {
    /// Flows to `dst:port` (ClusterIP, external or LoadBalancer IP) answered by `reply_src`.
    ServiceIp {
        /// The service address.
        dst: IpAddr,
        /// The service port.
        port: u16,
        /// The backend (or non-backend) that answers the flow.
        reply_src: IpAddr,
    },
    /// Flows to any local address on NodePort `port` answered by `reply_src`.
    NodePort {
        /// The NodePort.
        port: u16,
        /// The backend (or non-backend) that answers the flow.
        reply_src: IpAddr,
    },
}

impl Stale {
    /// The `conntrack` arguments deleting these flows in `family`.
    pub fn delete_args(&self, family: Family) -> Vec<String> {
        let mut args: Vec<String> = ["-D", "-p", "udp", "-f", family_arg(family)]
            .map(str::to_owned)
            .to_vec();
        match self {
            Stale::ServiceIp {
                dst,
                port,
                reply_src,
            } => args.extend([
                "--orig-dst".into(),
                dst.to_string(),
                "--orig-port-dst".into(),
                port.to_string(),
                "--reply-src".into(),
                reply_src.to_string(),
            ]),
            Stale::NodePort { port, reply_src } => args.extend([
                "--orig-port-dst".into(),
                port.to_string(),
                "--reply-src".into(),
                reply_src.to_string(),
            ]),
        }
        args
    }
}

/// `ipv4` / `ipv6`, the `conntrack -f` values.
pub fn family_arg(family: Family) -> &'static str {
    match family {
        Family::V4 => "ipv4",
        Family::V6 => "ipv6",
    }
}

/// Parses `conntrack -L -p udp` output. The first `dst=`/`dport=` of a line are the original
/// direction, the second `src=` the reply's; lines that do not parse are skipped.
pub fn parse_entries(text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut dst = None;
        let mut dport = None;
        let mut srcs = 0;
        let mut reply_src = None;
        for tok in line.split_whitespace() {
            if let Some(v) = tok.strip_prefix("src=") {
                srcs += 1;
                if srcs == 2 {
                    reply_src = v.parse::<IpAddr>().ok();
                }
            } else if let Some(v) = tok.strip_prefix("dst=") {
                if dst.is_none() {
                    dst = v.parse::<IpAddr>().ok();
                }
            } else if let Some(v) = tok.strip_prefix("dport=") {
                if dport.is_none() {
                    dport = v.parse::<u16>().ok();
                }
            }
        }
        if let (Some(orig_dst), Some(orig_dport), Some(reply_src)) = (dst, dport, reply_src) {
            out.push(Entry {
                orig_dst,
                orig_dport,
                reply_src,
            });
        }
    }
    out
}

/// The deletions that leave only flows answered by a serving endpoint of the service they
/// were sent to. Only UDP service ports with at least one serving endpoint count: without
/// one there is nothing better to send the flow to. Traffic policies and terminating state
/// are ignored, as upstream, so that UDP flows live as long as TCP connections would.
pub fn stale(model: &Model, family: Family, entries: &[Entry]) -> Vec<Stale> {
    let mut by_ip: BTreeMap<(IpAddr, u16), BTreeSet<IpAddr>> = BTreeMap::new();
    let mut by_node_port: BTreeMap<u16, BTreeSet<IpAddr>> = BTreeMap::new();
    for (name, svc) in &model.services {
        if name.protocol != Protocol::Udp {
            continue;
        }
        let serving: BTreeSet<IpAddr> = svc
            .endpoints
            .iter()
            .filter(|e| e.serving && family.contains(&e.ip))
            .map(|e| e.ip)
            .collect();
        if serving.is_empty() {
            continue;
        }
        for ip in svc
            .cluster_ips
            .iter()
            .chain(&svc.external_ips)
            .chain(&svc.load_balancer_ips)
            .filter(|ip| family.contains(ip))
        {
            by_ip.insert((*ip, svc.port), serving.clone());
        }
        if let Some(np) = svc.node_port {
            by_node_port.entry(np).or_default().extend(&serving);
        }
    }
    let mut out = BTreeSet::new();
    for e in entries.iter().filter(|e| family.contains(&e.orig_dst)) {
        if let Some(eps) = by_ip.get(&(e.orig_dst, e.orig_dport)) {
            if !eps.contains(&e.reply_src) {
                out.insert(Stale::ServiceIp {
                    dst: e.orig_dst,
                    port: e.orig_dport,
                    reply_src: e.reply_src,
                });
            }
        }
        if let Some(eps) = by_node_port.get(&e.orig_dport) {
            if !eps.contains(&e.reply_src) {
                out.insert(Stale::NodePort {
                    port: e.orig_dport,
                    reply_src: e.reply_src,
                });
            }
        }
    }
    out.into_iter().collect()
}

/// Whether `model` has a UDP service port of `family`, i.e. whether a cleanup can find
/// anything (callers skip listing conntrack otherwise).
pub fn has_udp(model: &Model, family: Family) -> bool {
    model.services.iter().any(|(n, s)| {
        n.protocol == Protocol::Udp && s.cluster_ips.iter().any(|ip| family.contains(ip))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Endpoint, ServicePort, ServicePortName};

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    const LISTING: &str = "\
udp      17 29 src=10.0.0.5 dst=172.30.0.10 sport=4000 dport=53 [UNREPLIED] src=10.0.1.2 dst=10.0.0.5 sport=53 dport=4000 mark=0 use=1
udp      17 29 src=10.0.0.5 dst=172.30.0.10 sport=4001 dport=53 src=10.0.2.2 dst=10.0.0.5 sport=53 dport=4001 [ASSURED] mark=0 use=1
udp      17 29 src=10.0.0.5 dst=172.30.0.10 sport=4002 dport=53 [UNREPLIED] src=172.30.0.10 dst=10.0.0.5 sport=53 dport=4002 mark=0 use=1
udp      17 29 src=192.168.0.2 dst=192.168.0.1 sport=4003 dport=30053 src=10.0.1.2 dst=192.168.0.1 sport=53 dport=4003 mark=0 use=1
udp      17 29 src=10.0.0.5 dst=8.8.8.8 sport=4004 dport=53 src=8.8.8.8 dst=10.0.0.5 sport=53 dport=4004 mark=0 use=1
garbage line
";

    #[test]
    fn parses_original_destination_and_reply_source() {
        let e = parse_entries(LISTING);
        assert_eq!(e.len(), 5);
        assert_eq!(
            e[0],
            Entry {
                orig_dst: ip("172.30.0.10"),
                orig_dport: 53,
                reply_src: ip("10.0.1.2")
            }
        );
        assert_eq!(e[2].reply_src, ip("172.30.0.10"));
        assert_eq!(e[3].orig_dport, 30053);
    }

    #[test]
    fn flows_not_answered_by_a_serving_endpoint_are_stale() {
        let mut m = Model::default();
        let mut dns = ServicePort::new(vec![ip("172.30.0.10")], 53);
        dns.node_port = Some(30053);
        dns.endpoints = vec![Endpoint::ready(ip("10.0.2.2"), 53, false)];
        m.services.insert(
            ServicePortName::new("kube-system", "dns", "dns", Protocol::Udp),
            dns.clone(),
        );
        // A TCP port of the same address is never cleaned.
        m.services.insert(
            ServicePortName::new("kube-system", "dns", "dns-tcp", Protocol::Tcp),
            dns,
        );
        let got = stale(&m, Family::V4, &parse_entries(LISTING));
        assert_eq!(
            got,
            vec![
                // 10.0.1.2 went away; the unDNATed flow from before the rules existed too.
                Stale::ServiceIp {
                    dst: ip("172.30.0.10"),
                    port: 53,
                    reply_src: ip("10.0.1.2")
                },
                Stale::ServiceIp {
                    dst: ip("172.30.0.10"),
                    port: 53,
                    reply_src: ip("172.30.0.10")
                },
                Stale::NodePort {
                    port: 30053,
                    reply_src: ip("10.0.1.2")
                },
            ]
        );
        assert_eq!(
            got[0].delete_args(Family::V4).join(" "),
            "-D -p udp -f ipv4 --orig-dst 172.30.0.10 --orig-port-dst 53 --reply-src 10.0.1.2"
        );
        assert_eq!(
            got[2].delete_args(Family::V4).join(" "),
            "-D -p udp -f ipv4 --orig-port-dst 30053 --reply-src 10.0.1.2"
        );
        assert!(stale(&m, Family::V6, &parse_entries(LISTING)).is_empty());
        assert!(has_udp(&m, Family::V4) && !has_udp(&m, Family::V6));
    }

    #[test]
    fn a_service_without_serving_endpoints_keeps_its_flows() {
        let mut m = Model::default();
        let mut dns = ServicePort::new(vec![ip("172.30.0.10")], 53);
        dns.endpoints = vec![Endpoint::terminating(ip("10.0.2.2"), 53, false)];
        dns.endpoints[0].serving = false;
        m.services.insert(
            ServicePortName::new("kube-system", "dns", "dns", Protocol::Udp),
            dns,
        );
        assert!(stale(&m, Family::V4, &parse_entries(LISTING)).is_empty());
    }
}

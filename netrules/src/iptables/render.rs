//! `render(&Model, Family) -> IptablesRules`: the same behaviour as the nft renderer in
//! iptables-restore form, modelled on upstream's iptables mode
//! (kubernetes/kubernetes pkg/proxy/iptables/proxier.go) with `OXLET-` chain names.
//!
//! The text is meant for `iptables-restore --noflush`: only the chains it declares are
//! flushed and rewritten; the jumps from the built-in chains ([`JUMPS`]) are added by the
//! applier, idempotently.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;

use crate::model::{
    categorize_endpoints, Cidr, Endpoint, Family, Model, Protocol, ServicePort, ServicePortName,
};
use crate::names;

/// nat chain dispatching service addresses.
pub const SERVICES: &str = "OXLET-SERVICES";
/// nat chain dispatching NodePorts.
pub const NODEPORTS: &str = "OXLET-NODEPORTS";
/// nat chain run from POSTROUTING; masquerades marked packets.
pub const POSTROUTING: &str = "OXLET-POSTROUTING";
/// nat chain setting the masquerade mark.
pub const MARK_MASQ: &str = "OXLET-MARK-MASQ";
/// filter chain for external destinations without endpoints (NodePorts, external IPs).
pub const EXTERNAL_SERVICES: &str = "OXLET-EXTERNAL-SERVICES";

/// Jumps from built-in chains into ours: (table, built-in chain, match arguments, our chain).
pub const JUMPS: &[(&str, &str, &str, &str)] = &[
    (
        "filter",
        "INPUT",
        "-m conntrack --ctstate NEW",
        EXTERNAL_SERVICES,
    ),
    ("filter", "FORWARD", "-m conntrack --ctstate NEW", SERVICES),
    (
        "filter",
        "FORWARD",
        "-m conntrack --ctstate NEW",
        EXTERNAL_SERVICES,
    ),
    ("filter", "OUTPUT", "-m conntrack --ctstate NEW", SERVICES),
    ("nat", "PREROUTING", "", SERVICES),
    ("nat", "OUTPUT", "", SERVICES),
    ("nat", "POSTROUTING", "", POSTROUTING),
];

/// Our chains in one table and their rules (each a full `-A CHAIN …` line).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    /// Chain names in declaration order.
    pub chains: Vec<String>,
    /// `-A …` lines in order.
    pub rules: Vec<String>,
}

/// The rendered iptables rules for one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IptablesRules {
    /// IPv4 (`iptables-restore`) or IPv6 (`ip6tables-restore`).
    pub family: Family,
    /// Our chains in the filter table.
    pub filter: Table,
    /// Our chains in the nat table.
    pub nat: Table,
}

/// The chain names of applied rules: all a later run needs to delete what it no longer uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IptablesChains {
    /// Our chains in the filter table.
    pub filter: BTreeSet<String>,
    /// Our chains in the nat table.
    pub nat: BTreeSet<String>,
}

impl IptablesRules {
    /// The names of the chains these rules declare.
    pub fn chain_names(&self) -> IptablesChains {
        IptablesChains {
            filter: self.filter.chains.iter().cloned().collect(),
            nat: self.nat.chains.iter().cloned().collect(),
        }
    }

    /// The `iptables-restore --noflush` input. Chains of `previous` (the last applied rules)
    /// that are no longer rendered are flushed and deleted (`-X`) in the same run.
    pub fn to_restore(&self, previous: Option<&IptablesRules>) -> String {
        self.to_restore_after(previous.map(IptablesRules::chain_names).as_ref())
    }

    /// [`IptablesRules::to_restore`] knowing only the chain names of the previous rules.
    pub fn to_restore_after(&self, previous: Option<&IptablesChains>) -> String {
        let mut out = String::new();
        for (name, table, prev) in [
            ("filter", &self.filter, previous.map(|p| &p.filter)),
            ("nat", &self.nat, previous.map(|p| &p.nat)),
        ] {
            let _ = writeln!(out, "*{name}");
            let current: BTreeSet<&str> = table.chains.iter().map(String::as_str).collect();
            let stale: Vec<&str> = prev
                .map(|p| {
                    p.iter()
                        .map(String::as_str)
                        .filter(|c| !current.contains(c))
                        .collect()
                })
                .unwrap_or_default();
            for c in table
                .chains
                .iter()
                .map(String::as_str)
                .chain(stale.iter().copied())
            {
                let _ = writeln!(out, ":{c} - [0:0]");
            }
            for r in &table.rules {
                let _ = writeln!(out, "{r}");
            }
            for c in stale {
                let _ = writeln!(out, "-X {c}");
            }
            let _ = writeln!(out, "COMMIT");
        }
        out
    }
}

/// Renders `model` for `family`. Pure and deterministic.
pub fn render(model: &Model, family: Family) -> IptablesRules {
    let mut cidrs: Vec<Cidr> = model
        .cluster_cidrs
        .iter()
        .copied()
        .filter(|c| family.contains(&c.addr))
        .collect();
    cidrs.sort();
    // iptables matches one source network per rule: like upstream's LocalTrafficDetector,
    // the first pod CIDR of the family is the one used.
    let cluster_cidr = cidrs.first().copied();
    let mut r = Renderer {
        model,
        family,
        cluster_cidr,
        filter: Table::default(),
        nat: Table::default(),
    };
    r.filter.chains = vec![SERVICES.into(), EXTERNAL_SERVICES.into()];
    r.nat.chains = vec![
        SERVICES.into(),
        NODEPORTS.into(),
        POSTROUTING.into(),
        MARK_MASQ.into(),
    ];
    r.nat.rules.extend([
        format!("-A {POSTROUTING} -m mark ! --mark 0x4000/0x4000 -j RETURN"),
        format!("-A {POSTROUTING} -j MARK --xor-mark 0x4000"),
        format!("-A {POSTROUTING} -m comment --comment \"oxlet service traffic requiring SNAT\" -j MASQUERADE --random-fully"),
        format!("-A {MARK_MASQ} -j MARK --or-mark 0x4000"),
    ]);
    let mut nodeport_rules = Vec::new();
    for (spn, svc) in &model.services {
        if svc.cluster_ips.iter().any(|ip| family.contains(ip)) {
            r.service(spn, svc, &mut nodeport_rules);
        }
    }
    // NodePort dispatch comes last in OXLET-SERVICES, after every service address.
    // Localhost NodePorts, as upstream: never for IPv6, for IPv4 only when asked for (the
    // proxy sets route_localnet then).
    let localhost = family == Family::V4 && model.localhost_nodeports;
    if model.nodeport_addresses.is_empty() {
        let exclude = match family {
            Family::V6 => " ! -d ::1/128",
            Family::V4 if !localhost => " ! -d 127.0.0.0/8",
            Family::V4 => "",
        };
        r.nat.rules.push(format!(
            "-A {SERVICES} -m comment --comment \"oxlet service nodeports\" -m addrtype --dst-type LOCAL{exclude} -j {NODEPORTS}"
        ));
    } else {
        let mut ips: Vec<&IpAddr> = model
            .nodeport_addresses
            .iter()
            .filter(|ip| family.contains(ip))
            .collect();
        ips.sort();
        ips.dedup();
        let mut dests: Vec<String> = ips.into_iter().map(host).collect();
        if localhost {
            dests.push("127.0.0.0/8".into());
        }
        for d in dests {
            r.nat.rules.push(format!(
                "-A {SERVICES} -m comment --comment \"oxlet service nodeports\" -d {d} -j {NODEPORTS}"
            ));
        }
    }
    if localhost {
        // route_localnet lets packets to 127.0.0.0/8 be routed from outside too
        // (kubernetes/kubernetes#90259): only DNATed ones may pass.
        r.filter.rules.push(format!(
            "-A {EXTERNAL_SERVICES} -m comment --comment \"block incoming localnet connections\" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP"
        ));
    }
    r.nat.rules.extend(nodeport_rules);
    IptablesRules {
        family,
        filter: r.filter,
        nat: r.nat,
    }
}

struct Renderer<'a> {
    model: &'a Model,
    family: Family,
    cluster_cidr: Option<Cidr>,
    filter: Table,
    nat: Table,
}

fn host(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(_) => format!("{ip}/32"),
        IpAddr::V6(_) => format!("{ip}/128"),
    }
}

fn proto_match(p: Protocol) -> String {
    format!("-p {p} -m {p}")
}

impl Renderer<'_> {
    fn reject(&self, p: Protocol) -> String {
        match (p, self.family) {
            (Protocol::Tcp, _) => "REJECT --reject-with tcp-reset".into(),
            (_, Family::V4) => "REJECT --reject-with icmp-port-unreachable".into(),
            (_, Family::V6) => "REJECT --reject-with icmp6-port-unreachable".into(),
        }
    }

    fn service(
        &mut self,
        spn: &ServicePortName,
        svc: &ServicePort,
        nodeport_rules: &mut Vec<String>,
    ) {
        let fam = self.family;
        let p = spn.protocol;
        let pm = proto_match(p);
        let eps: Vec<&Endpoint> = svc
            .endpoints
            .iter()
            .filter(|e| fam.contains(&e.ip))
            .collect();
        let cat = categorize_endpoints(svc, &eps);

        let svc_chain = names::ipt_service_chain(spn);
        let svl_chain = names::ipt_local_chain(spn);
        let ext_chain = names::ipt_external_chain(spn);
        let uses_cluster_chain = !cat.cluster.is_empty() && svc.uses_cluster_endpoints();
        let uses_local_chain = !cat.local.is_empty() && svc.uses_local_endpoints();
        let (internal_chain, has_internal) = if svc.internal_traffic_local {
            (&svl_chain, cat.has_any && !cat.local.is_empty())
        } else {
            (&svc_chain, cat.has_any)
        };
        let (external_policy_chain, has_external) = if svc.external_policy_local() {
            (&svl_chain, cat.has_any && !cat.local.is_empty())
        } else {
            (&svc_chain, cat.has_any)
        };
        let uses_external_chain = cat.has_any && svc.externally_accessible();
        let verdict = if cat.has_any {
            "DROP".to_owned()
        } else {
            self.reject(p)
        };
        let port = svc.port;

        let mut cluster_ips: Vec<&IpAddr> = svc
            .cluster_ips
            .iter()
            .filter(|ip| fam.contains(ip))
            .collect();
        cluster_ips.sort();
        cluster_ips.dedup();
        let mut external_ips: Vec<&IpAddr> = svc
            .external_ips
            .iter()
            .chain(&svc.load_balancer_ips)
            .filter(|ip| fam.contains(ip))
            .collect();
        external_ips.sort();
        external_ips.dedup();

        for ip in &cluster_ips {
            let d = host(ip);
            if has_internal {
                self.nat.rules.push(format!(
                    "-A {SERVICES} -m comment --comment \"{spn} cluster IP\" -d {d} {pm} --dport {port} -j {internal_chain}"
                ));
            } else {
                let why = if cat.has_any {
                    "has no local endpoints"
                } else {
                    "has no endpoints"
                };
                self.filter.rules.push(format!(
                    "-A {SERVICES} -m comment --comment \"{spn} {why}\" -d {d} {pm} --dport {port} -j {verdict}"
                ));
            }
        }
        for ip in &external_ips {
            let d = host(ip);
            if cat.has_any {
                self.nat.rules.push(format!(
                    "-A {SERVICES} -m comment --comment \"{spn} external IP\" -d {d} {pm} --dport {port} -j {ext_chain}"
                ));
            }
            if !has_external {
                self.filter.rules.push(format!(
                    "-A {EXTERNAL_SERVICES} -m comment --comment \"{spn} has no usable endpoints\" -d {d} {pm} --dport {port} -j {verdict}"
                ));
            }
        }
        if let Some(np) = svc.node_port {
            if cat.has_any {
                nodeport_rules.push(format!("-A {NODEPORTS} -m comment --comment \"{spn}\" {pm} --dport {np} -j {ext_chain}"));
            }
            if !has_external {
                self.filter.rules.push(format!(
                    "-A {EXTERNAL_SERVICES} -m comment --comment \"{spn} has no usable endpoints\" -m addrtype --dst-type LOCAL {pm} --dport {np} -j {verdict}"
                ));
            }
        }

        if uses_external_chain {
            self.nat.chains.push(ext_chain.clone());
            if !svc.external_policy_local() {
                self.nat.rules.push(format!(
                    "-A {ext_chain} -m comment --comment \"masquerade traffic for {spn} external destinations\" -j {MARK_MASQ}"
                ));
            } else {
                if let Some(c) = self.cluster_cidr {
                    self.nat.rules.push(format!(
                        "-A {ext_chain} -m comment --comment \"pod traffic for {spn} external destinations\" -s {c} -j {svc_chain}"
                    ));
                }
                self.nat.rules.push(format!(
                    "-A {ext_chain} -m comment --comment \"masquerade LOCAL traffic for {spn} external destinations\" -m addrtype --src-type LOCAL -j {MARK_MASQ}"
                ));
                self.nat.rules.push(format!(
                    "-A {ext_chain} -m comment --comment \"route LOCAL traffic for {spn} external destinations\" -m addrtype --src-type LOCAL -j {svc_chain}"
                ));
            }
            if has_external {
                self.nat
                    .rules
                    .push(format!("-A {ext_chain} -j {external_policy_chain}"));
            }
        }

        for (chain, used, endpoints) in [
            (&svc_chain, uses_cluster_chain, &cat.cluster),
            (&svl_chain, uses_local_chain, &cat.local),
        ] {
            if !used {
                continue;
            }
            self.nat.chains.push(chain.clone());
            if chain == internal_chain && has_internal {
                for ip in &cluster_ips {
                    let src = match (self.model.masquerade_all, self.cluster_cidr) {
                        (false, Some(c)) => format!(" ! -s {c}"),
                        _ => String::new(),
                    };
                    self.nat.rules.push(format!(
                        "-A {chain} -m comment --comment \"{spn} cluster IP\"{src} -d {} {pm} --dport {port} -j {MARK_MASQ}",
                        host(ip)
                    ));
                }
            }
            if let Some(timeout) = svc.session_affinity {
                for ep in endpoints.iter() {
                    let sep = names::ipt_endpoint_chain(spn, ep);
                    let secs = timeout.as_secs().max(1);
                    self.nat.rules.push(format!(
                        "-A {chain} -m comment --comment \"{spn} -> {}\" -m recent --name {sep} --rcheck --seconds {secs} --reap -j {sep}",
                        ep_addr(ep)
                    ));
                }
            }
            let n = endpoints.len();
            for (i, ep) in endpoints.iter().enumerate() {
                let sep = names::ipt_endpoint_chain(spn, ep);
                let comment = format!("-m comment --comment \"{spn} -> {}\"", ep_addr(ep));
                if i + 1 < n {
                    let prob = 1.0 / (n - i) as f64;
                    self.nat.rules.push(format!(
                        "-A {chain} {comment} -m statistic --mode random --probability {prob:.10} -j {sep}"
                    ));
                } else {
                    self.nat
                        .rules
                        .push(format!("-A {chain} {comment} -j {sep}"));
                }
            }
        }

        for ep in &cat.all_reachable {
            let sep = names::ipt_endpoint_chain(spn, ep);
            self.nat.chains.push(sep.clone());
            let comment = format!("-m comment --comment \"{spn}\"");
            self.nat.rules.push(format!(
                "-A {sep} {comment} -s {} -j {MARK_MASQ}",
                host(&ep.ip)
            ));
            let recent = if svc.session_affinity.is_some() {
                format!(" -m recent --name {sep} --set")
            } else {
                String::new()
            };
            self.nat.rules.push(format!(
                "-A {sep} {comment}{recent} {pm} -j DNAT --to-destination {}",
                ep_addr(ep)
            ));
        }
    }
}

fn ep_addr(ep: &Endpoint) -> String {
    match ep.ip {
        IpAddr::V4(v4) => format!("{v4}:{}", ep.port),
        IpAddr::V6(v6) => format!("[{v6}]:{}", ep.port),
    }
}

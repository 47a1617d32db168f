//! `render(&Model, Family) -> Ruleset`: the pure nftables layout, modelled on upstream
//! kube-proxy's nftables mode (kubernetes/kubernetes pkg/proxy/nftables/proxier.go).

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::{Chain, Element, Ruleset, ServiceRules, Set};
use crate::model::{
    categorize_endpoints, Cidr, Endpoint, Family, Model, ServicePort, ServicePortName,
};
use crate::names;

/// The packet mark bit that asks `masquerading` to SNAT (upstream's default `0x4000`).
pub const MASQUERADE_MARK: &str = "0x4000";

/// Chain that sets the masquerade mark.
pub const MARK_MASQ_CHAIN: &str = "mark-for-masquerade";
/// Chain run from postrouting that masquerades marked packets.
pub const MASQUERADING_CHAIN: &str = "masquerading";
/// Chain dispatching service traffic through `service-ips` and `service-nodeports`.
pub const SERVICES_CHAIN: &str = "services";
/// Filter chain rejecting or dropping traffic to services without usable endpoints.
pub const ENDPOINTS_CHECK_CHAIN: &str = "service-endpoints-check";
/// Helper chain behind `@no-endpoint-services` / `@no-endpoint-nodeports`.
pub const REJECT_CHAIN: &str = "reject-chain";
/// Verdict map: `addr . proto . port` of ClusterIPs, external IPs, LB IPs.
pub const SERVICE_IPS_MAP: &str = "service-ips";
/// Verdict map: `proto . port` of NodePorts.
pub const SERVICE_NODEPORTS_MAP: &str = "service-nodeports";
/// Verdict map: service addresses with no usable endpoint.
pub const NO_ENDPOINT_SERVICES_MAP: &str = "no-endpoint-services";
/// Verdict map: NodePorts with no usable endpoint.
pub const NO_ENDPOINT_NODEPORTS_MAP: &str = "no-endpoint-nodeports";
/// Set of node addresses accepting NodePorts (only when `nodeport_addresses` is set).
pub const NODEPORT_IPS_SET: &str = "nodeport-ips";

/// Renders `model` into the content of the `family` table. Pure and deterministic:
/// services are visited in name order and endpoints in address order.
pub fn render(model: &Model, family: Family) -> Ruleset {
    let ctx = Ctx::new(model, family);
    let services = model
        .services
        .iter()
        .filter(|(_, svc)| ctx.has_family(svc))
        .map(|(name, svc)| (name.clone(), ctx.service(name, svc)))
        .collect::<BTreeMap<_, _>>();
    Ruleset {
        services,
        ..render_base(model, family)
    }
}

/// The part of the ruleset that does not depend on services (maps, hooked and helper
/// chains): `render` without its `services`. Depends only on the node-level fields of
/// `model` (addresses, pod CIDRs, NodePort addresses, masquerade-all).
pub fn render_base(model: &Model, family: Family) -> Ruleset {
    let ctx = Ctx::new(model, family);
    Ruleset {
        family,
        base_sets: ctx.base_sets(),
        base_elements: ctx.base_elements(),
        base_chains: ctx.base_chains(),
        services: BTreeMap::new(),
        stale_chains: Default::default(),
    }
}

/// The objects of one service port, exactly as [`render`] would give them for `svc` under
/// `model`'s node-level fields (`svc` need not be in `model.services`); `None` when the port
/// has no ClusterIP of `family`. Lets a caller re-render only the services that changed.
pub fn render_service(
    model: &Model,
    family: Family,
    spn: &ServicePortName,
    svc: &ServicePort,
) -> Option<ServiceRules> {
    let ctx = Ctx::new(model, family);
    ctx.has_family(svc).then(|| ctx.service(spn, svc))
}

struct Ctx<'a> {
    model: &'a Model,
    family: Family,
    ipx: &'static str,
    /// Pod CIDRs of this family: the "local traffic detector" of upstream.
    cluster_cidrs: Vec<Cidr>,
}

impl<'a> Ctx<'a> {
    fn new(model: &'a Model, family: Family) -> Self {
        let mut cluster_cidrs: Vec<Cidr> = model
            .cluster_cidrs
            .iter()
            .copied()
            .filter(|c| family.contains(&c.addr))
            .collect();
        cluster_cidrs.sort();
        cluster_cidrs.dedup();
        Self {
            model,
            family,
            ipx: family.nft(),
            cluster_cidrs,
        }
    }

    fn has_family(&self, svc: &ServicePort) -> bool {
        svc.cluster_ips.iter().any(|ip| self.family.contains(ip))
    }

    fn addr(&self) -> &'static str {
        self.family.nft_addr_type()
    }

    /// `ip saddr 10.0.0.0/8` or `ip saddr { a, b }`, with `!=` when `negate`.
    fn saddr_in_cluster(&self, negate: bool) -> Option<String> {
        let op = if negate { "!= " } else { "" };
        match self.cluster_cidrs.as_slice() {
            [] => None,
            [one] => Some(format!("{} saddr {op}{one}", self.ipx)),
            many => {
                let list: Vec<String> = many.iter().map(Cidr::to_string).collect();
                Some(format!("{} saddr {op}{{ {} }}", self.ipx, list.join(", ")))
            }
        }
    }

    fn nodeport_match(&self) -> String {
        if self.model.nodeport_addresses.is_empty() {
            // As upstream's MatchAll: every local address but loopback (NodePorts on
            // localhost would need route_localnet).
            let no_localhost = match self.family {
                Family::V4 => "ip daddr != 127.0.0.0/8",
                Family::V6 => "ip6 daddr != ::1",
            };
            format!("fib daddr type local {no_localhost}")
        } else {
            format!("{} daddr @{NODEPORT_IPS_SET}", self.ipx)
        }
    }

    fn base_sets(&self) -> Vec<Set> {
        let a = self.addr();
        let mut sets = vec![
            map(
                NO_ENDPOINT_NODEPORTS_MAP,
                "inet_proto . inet_service",
                "vmap to drop or reject packets to service nodeports with no endpoints",
            ),
            map(
                NO_ENDPOINT_SERVICES_MAP,
                &format!("{a} . inet_proto . inet_service"),
                "vmap to drop or reject packets to services with no endpoints",
            ),
        ];
        if !self.model.nodeport_addresses.is_empty() {
            sets.push(Set {
                name: NODEPORT_IPS_SET.into(),
                is_map: false,
                spec: format!("type {a} ; comment \"IPs that accept NodePort traffic\" ;"),
            });
        }
        sets.push(map(
            SERVICE_IPS_MAP,
            &format!("{a} . inet_proto . inet_service"),
            "ClusterIP, ExternalIP and LoadBalancer IP traffic",
        ));
        sets.push(map(
            SERVICE_NODEPORTS_MAP,
            "inet_proto . inet_service",
            "NodePort traffic",
        ));
        sets
    }

    fn base_elements(&self) -> Vec<Element> {
        let mut ips: Vec<IpAddr> = self
            .model
            .nodeport_addresses
            .iter()
            .copied()
            .filter(|ip| self.family.contains(ip) && !ip.is_loopback())
            .collect();
        ips.sort();
        ips.dedup();
        ips.into_iter()
            .map(|ip| Element {
                set: NODEPORT_IPS_SET.into(),
                key: ip.to_string(),
                value: None,
            })
            .collect()
    }

    fn base_chains(&self) -> Vec<Chain> {
        let hooked = |name: &str, hook: &str, rules: Vec<String>| Chain {
            name: name.into(),
            hook: Some(hook.into()),
            comment: None,
            rules,
        };
        let check = format!("ct state new jump {ENDPOINTS_CHECK_CHAIN}");
        let ipx = self.ipx;
        let nodeports = self.nodeport_match();
        let reject_rules = vec![
            // A TCP reset makes connect() fail at once with ECONNREFUSED; other protocols get
            // the family's ICMP port-unreachable, nft's default `reject`.
            "meta l4proto tcp reject with tcp reset".to_owned(),
            "reject".to_owned(),
        ];
        vec![
            // Input and forward come after prerouting's DNAT anyway; the priority only
            // orders them before other filter chains, as upstream.
            hooked(
                "filter-input",
                "type filter hook input priority -110",
                vec![check.clone()],
            ),
            hooked(
                "filter-forward",
                "type filter hook forward priority -110",
                vec![check.clone()],
            ),
            // The node's own traffic is checked after the output DNAT (dstnat + 10): what an
            // external chain short-circuits to the cluster endpoints (Local policy without
            // local endpoints) is already DNATed and must not be dropped. Only packets no
            // rule DNATed still carry the service address here.
            hooked(
                "filter-output",
                "type filter hook output priority -90",
                vec![check],
            ),
            // nft 1.0.6 rejects `priority dstnat` for the nat output hook: numbers everywhere.
            hooked(
                "nat-prerouting",
                "type nat hook prerouting priority -100",
                vec![format!("jump {SERVICES_CHAIN}")],
            ),
            hooked(
                "nat-output",
                "type nat hook output priority -100",
                vec![format!("jump {SERVICES_CHAIN}")],
            ),
            hooked(
                "nat-postrouting",
                "type nat hook postrouting priority 100",
                vec![format!("jump {MASQUERADING_CHAIN}")],
            ),
            Chain {
                rules: vec![format!("mark set mark or {MASQUERADE_MARK}")],
                ..Chain::new(MARK_MASQ_CHAIN)
            },
            Chain {
                rules: vec![
                    format!("mark and {MASQUERADE_MARK} == 0 return"),
                    format!("mark set mark xor {MASQUERADE_MARK}"),
                    "masquerade fully-random".to_owned(),
                ],
                ..Chain::new(MASQUERADING_CHAIN)
            },
            Chain {
                comment: Some("helper for @no-endpoint-services / @no-endpoint-nodeports".into()),
                rules: reject_rules,
                ..Chain::new(REJECT_CHAIN)
            },
            Chain {
                rules: vec![
                    format!(
                        "{ipx} daddr . meta l4proto . th dport vmap @{NO_ENDPOINT_SERVICES_MAP}"
                    ),
                    format!(
                        "{nodeports} meta l4proto . th dport vmap @{NO_ENDPOINT_NODEPORTS_MAP}"
                    ),
                ],
                ..Chain::new(ENDPOINTS_CHECK_CHAIN)
            },
            Chain {
                rules: vec![
                    format!("{ipx} daddr . meta l4proto . th dport vmap @{SERVICE_IPS_MAP}"),
                    format!("{nodeports} meta l4proto . th dport vmap @{SERVICE_NODEPORTS_MAP}"),
                ],
                ..Chain::new(SERVICES_CHAIN)
            },
        ]
    }

    /// The per-service-port objects, following upstream's `syncProxyRules` loop body.
    fn service(&self, spn: &ServicePortName, svc: &ServicePort) -> ServiceRules {
        let fam = self.family;
        let ipx = self.ipx;
        let proto = spn.protocol.as_str();
        let eps: Vec<&Endpoint> = svc
            .endpoints
            .iter()
            .filter(|e| fam.contains(&e.ip))
            .collect();
        let cat = categorize_endpoints(svc, &eps);

        let cluster_chain = names::service_chain(spn);
        let local_chain = names::local_chain(spn);
        let external_chain = names::external_chain(spn);
        let uses_cluster_chain = !cat.cluster.is_empty() && svc.uses_cluster_endpoints();
        let uses_local_chain = !cat.local.is_empty() && svc.uses_local_endpoints();

        let (internal_chain, has_internal) = if svc.internal_traffic_local {
            (&local_chain, cat.has_any && !cat.local.is_empty())
        } else {
            (&cluster_chain, cat.has_any)
        };
        let (external_policy_chain, has_external) = if svc.external_policy_local() {
            (&local_chain, cat.has_any && !cat.local.is_empty())
        } else {
            (&cluster_chain, cat.has_any)
        };
        // Built even without external endpoints, for the short-circuit of pod/host traffic.
        let uses_external_chain = cat.has_any && svc.externally_accessible();

        let reject = format!("goto {REJECT_CHAIN}");
        // No endpoints at all: reject. Endpoints, but none for this policy: drop, as upstream.
        let internal_verdict = if cat.has_any {
            "drop".to_owned()
        } else {
            reject.clone()
        };
        let external_verdict = internal_verdict.clone();

        let mut out = ServiceRules::default();
        let port = svc.port.to_string();
        let key = |ip: &IpAddr| format!("{ip} . {proto} . {port}");
        let el = |set: &str, key: String, value: String| Element {
            set: set.into(),
            key,
            value: Some(value),
        };

        let mut cluster_ips: Vec<&IpAddr> = svc
            .cluster_ips
            .iter()
            .filter(|ip| fam.contains(ip))
            .collect();
        cluster_ips.sort();
        cluster_ips.dedup();
        for ip in &cluster_ips {
            if has_internal {
                out.elements.push(el(
                    SERVICE_IPS_MAP,
                    key(ip),
                    format!("goto {internal_chain}"),
                ));
            } else {
                out.elements.push(el(
                    NO_ENDPOINT_SERVICES_MAP,
                    key(ip),
                    internal_verdict.clone(),
                ));
            }
        }
        let mut external_ips: Vec<&IpAddr> = svc
            .external_ips
            .iter()
            .chain(&svc.load_balancer_ips)
            .filter(|ip| fam.contains(ip))
            .collect();
        external_ips.sort();
        external_ips.dedup();
        for ip in &external_ips {
            if cat.has_any {
                out.elements.push(el(
                    SERVICE_IPS_MAP,
                    key(ip),
                    format!("goto {external_chain}"),
                ));
            }
            if !has_external {
                out.elements.push(el(
                    NO_ENDPOINT_SERVICES_MAP,
                    key(ip),
                    external_verdict.clone(),
                ));
            }
        }
        if let Some(np) = svc.node_port {
            let k = format!("{proto} . {np}");
            if cat.has_any {
                out.elements.push(el(
                    SERVICE_NODEPORTS_MAP,
                    k.clone(),
                    format!("goto {external_chain}"),
                ));
            }
            if !has_external {
                out.elements
                    .push(el(NO_ENDPOINT_NODEPORTS_MAP, k, external_verdict.clone()));
            }
        }

        // Chains: external, then the policy chains, then one per endpoint.
        if uses_external_chain {
            let mut c = Chain::new(&external_chain);
            if !svc.external_policy_local() {
                // Cluster policy may cross nodes: masquerade so replies come back through us.
                c.rules.push(format!("jump {MARK_MASQ_CHAIN}"));
            } else {
                if let Some(pods) = self.saddr_in_cluster(false) {
                    c.rules.push(format!(
                        "{pods} goto {cluster_chain} comment \"short-circuit pod traffic\""
                    ));
                }
                // The host's own traffic has a local source address that the endpoint
                // could not answer directly: masquerade it, and ignore the Local policy.
                c.rules.push(format!("fib saddr type local jump {MARK_MASQ_CHAIN} comment \"masquerade local traffic\""));
                c.rules.push(format!("fib saddr type local goto {cluster_chain} comment \"short-circuit local traffic\""));
            }
            if has_external {
                c.rules.push(format!("goto {external_policy_chain}"));
            }
            out.chains.push(c);
        }

        let masq_rules = |chain: &mut Chain| {
            if !has_internal {
                return;
            }
            for ip in &cluster_ips {
                let head = format!("{ipx} daddr {ip} {proto} dport {port}");
                // Off-cluster clients reaching a ClusterIP through this node (a static route
                // to the service range) are masqueraded; with no pod CIDR known, all are.
                let rule = match (self.model.masquerade_all, self.saddr_in_cluster(true)) {
                    (false, Some(not_pods)) => format!("{head} {not_pods} jump {MARK_MASQ_CHAIN}"),
                    _ => format!("{head} jump {MARK_MASQ_CHAIN}"),
                };
                chain.rules.push(rule);
            }
        };

        let dispatch = |chain: &mut Chain, endpoints: &[&Endpoint]| {
            if svc.session_affinity.is_some() {
                for ep in endpoints {
                    chain.rules.push(format!(
                        "{ipx} saddr @{} goto {}",
                        names::affinity_set(spn, ep),
                        names::endpoint_chain(spn, ep)
                    ));
                }
            }
            // Uniform choice as a cascade: endpoint i of n is taken with probability
            // 1/(n-i) when the ones before it were not, the last one unconditionally (as
            // the iptables renderer's statistic rules). Not upstream's anonymous
            // `numgen … vmap { … }`: each of those is an anonymous set, and the kernel names
            // a new one by scanning every set of the table, so a full sync of 10k services
            // spends most of a minute there.
            let n = endpoints.len();
            for (i, ep) in endpoints.iter().enumerate() {
                let target = names::endpoint_chain(spn, ep);
                if i + 1 < n {
                    chain
                        .rules
                        .push(format!("numgen random mod {} == 0 goto {target}", n - i));
                } else {
                    chain.rules.push(format!("goto {target}"));
                }
            }
        };

        if uses_cluster_chain {
            let mut c = Chain::new(&cluster_chain);
            if *internal_chain == cluster_chain {
                masq_rules(&mut c);
            }
            dispatch(&mut c, &cat.cluster);
            out.chains.push(c);
        }
        if uses_local_chain {
            let mut c = Chain::new(&local_chain);
            if *internal_chain == local_chain {
                masq_rules(&mut c);
            }
            dispatch(&mut c, &cat.local);
            out.chains.push(c);
        }

        for ep in &cat.all_reachable {
            let mut c = Chain::new(names::endpoint_chain(spn, ep));
            // Hairpin: a backend reaching itself through the service must be masqueraded,
            // or it would answer itself directly.
            c.rules
                .push(format!("{ipx} saddr {} jump {MARK_MASQ_CHAIN}", ep.ip));
            if let Some(timeout) = svc.session_affinity {
                let set = names::affinity_set(spn, ep);
                let secs = timeout.as_secs().max(1);
                out.sets.push(Set {
                    name: set.clone(),
                    is_map: false,
                    spec: format!(
                        "type {} ; flags dynamic,timeout ; timeout {secs}s ;",
                        self.addr()
                    ),
                });
                c.rules
                    .push(format!("update @{set} {{ {ipx} saddr timeout {secs}s }}"));
            }
            let dest = match ep.ip {
                IpAddr::V4(v4) => format!("{v4}:{}", ep.port),
                IpAddr::V6(v6) => format!("[{v6}]:{}", ep.port),
            };
            c.rules.push(format!("meta l4proto {proto} dnat to {dest}"));
            out.chains.push(c);
        }
        out
    }
}

fn map(name: &str, key: &str, comment: &str) -> Set {
    Set {
        name: name.into(),
        is_map: true,
        spec: format!("type {key} : verdict ; comment \"{comment}\" ;"),
    }
}

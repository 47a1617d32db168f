//! Golden tests: each feature's model rendered to nft and iptables-restore text and compared
//! in full with `tests/golden/<case>.{nft,iptables}` (`OXLET_BLESS=1` rewrites them).

mod common;

use common::*;
use oxlet_netrules::{iptables, nft, Endpoint, Family, Model, Protocol, ServicePortName};

fn check(case: &str, model: &Model, family: Family) {
    let rules = nft::render(model, family);
    assert_golden(&format!("{case}.nft"), &rules.to_nft_script());
    let ipt = iptables::render(model, family);
    assert_golden(&format!("{case}.iptables"), &ipt.to_restore(None));
    // Rendering is deterministic: the same model gives the same text.
    assert_eq!(nft::render(model, family), rules);
}

fn with(services: Vec<(ServicePortName, oxlet_netrules::ServicePort)>) -> Model {
    let mut m = base_model();
    m.services.extend(services);
    m
}

#[test]
fn empty_model_has_only_base_rules() {
    check("base", &base_model(), Family::V4);
}

#[test]
fn cluster_ip_with_several_endpoints() {
    // Endpoints are given out of order: rendering sorts them.
    let s = svc(
        "172.30.0.41",
        &[
            ep("10.180.0.3", 80),
            ep("10.180.0.1", 80),
            ep("10.180.0.2", 80),
        ],
    );
    check(
        "cluster_ip",
        &with(vec![(spn("ns1", "svc1"), s)]),
        Family::V4,
    );
}

#[test]
fn no_endpoints_rejects() {
    let mut s = svc("172.30.0.42", &[]);
    s.node_port = Some(30042);
    s.external_ips = vec![ip("192.168.99.42")];
    check(
        "no_endpoints",
        &with(vec![(spn("ns2", "svc2"), s)]),
        Family::V4,
    );
}

#[test]
fn node_port() {
    let mut s = svc("172.30.0.43", &[ep("10.180.0.3", 8080)]);
    s.node_port = Some(30043);
    check(
        "node_port",
        &with(vec![(spn("ns3", "svc3"), s)]),
        Family::V4,
    );
}

#[test]
fn localhost_node_ports() {
    // iptables: 127.0.0.0/8 stays in NodePort matching and martian localnet traffic is
    // dropped; nftables has no localhost NodePorts, so its text equals node_port's.
    let mut s = svc("172.30.0.43", &[ep("10.180.0.1", 80)]);
    s.node_port = Some(30043);
    let mut m = with(vec![(spn("ns3", "svc3"), s)]);
    m.localhost_nodeports = true;
    check("localhost_node_ports", &m, Family::V4);
    // With listed NodePort addresses, 127.0.0.0/8 joins the list.
    m.nodeport_addresses = vec![ip(NODE_IP)];
    check("localhost_node_ports_listed", &m, Family::V4);
}

#[test]
fn node_port_on_listed_addresses() {
    let mut m = with(vec![]);
    m.nodeport_addresses = vec![ip(NODE_IP), ip("127.0.0.1")];
    let mut s = svc("172.30.0.43", &[ep("10.180.0.3", 8080)]);
    s.node_port = Some(30043);
    m.services.insert(spn("ns3", "svc3"), s);
    check("node_port_addresses", &m, Family::V4);
}

#[test]
fn external_ip() {
    let mut s = svc("172.30.0.44", &[ep("10.180.0.4", 80)]);
    s.external_ips = vec![ip("192.168.99.44")];
    check(
        "external_ip",
        &with(vec![(spn("ns4", "svc4"), s)]),
        Family::V4,
    );
}

#[test]
fn load_balancer_ip() {
    let mut s = svc("172.30.0.45", &[ep("10.180.0.5", 80)]);
    s.load_balancer_ips = vec![ip("1.2.3.45")];
    s.node_port = Some(30045);
    check(
        "load_balancer",
        &with(vec![(spn("ns5", "svc5"), s)]),
        Family::V4,
    );
}

#[test]
fn session_affinity() {
    let s = affinity(
        svc("172.30.0.46", &[ep("10.180.0.1", 80), ep("10.180.0.2", 80)]),
        10800,
    );
    check("affinity", &with(vec![(spn("ns6", "svc6"), s)]), Family::V4);
}

#[test]
fn external_local_with_local_endpoints() {
    let mut s = svc(
        "172.30.0.47",
        &[ep("10.180.0.2", 80), local_ep("10.0.1.7", 80)],
    );
    s.node_port = Some(30047);
    s.load_balancer_ips = vec![ip("1.2.3.47")];
    s.external_traffic_local = true;
    s.health_check_node_port = Some(30000);
    check(
        "external_local",
        &with(vec![(spn("ns7", "svc7"), s)]),
        Family::V4,
    );
}

#[test]
fn external_local_without_local_endpoints() {
    let mut s = svc("172.30.0.48", &[ep("10.180.0.2", 80)]);
    s.node_port = Some(30048);
    s.load_balancer_ips = vec![ip("1.2.3.48")];
    s.external_traffic_local = true;
    check(
        "external_local_none",
        &with(vec![(spn("ns8", "svc8"), s)]),
        Family::V4,
    );
}

#[test]
fn internal_local() {
    let mut with_local = svc(
        "172.30.0.49",
        &[ep("10.180.0.2", 80), local_ep("10.0.1.9", 80)],
    );
    with_local.internal_traffic_local = true;
    let mut without = svc("172.30.0.50", &[ep("10.180.0.2", 80)]);
    without.internal_traffic_local = true;
    check(
        "internal_local",
        &with(vec![
            (spn("ns9", "local"), with_local),
            (spn("ns9", "remote-only"), without),
        ]),
        Family::V4,
    );
}

#[test]
fn terminating_endpoints_fallback() {
    let mut gone = Endpoint::terminating(ip("10.180.0.9"), 80, false);
    gone.serving = false;
    let s = svc(
        "172.30.0.51",
        &[Endpoint::terminating(ip("10.180.0.8"), 80, false), gone],
    );
    check(
        "terminating",
        &with(vec![(spn("ns10", "svc10"), s)]),
        Family::V4,
    );
}

#[test]
fn ipv6_dual_stack() {
    let mut s = svc(
        "fd00:30::41",
        &[
            ep("fd00:10::1", 80),
            ep("10.180.0.1", 80),
            ep("fd00:10::2", 80),
        ],
    );
    s.cluster_ips.push(ip("172.30.0.52"));
    s.node_port = Some(30052);
    s.external_ips = vec![ip("2001:db8::52"), ip("192.168.99.52")];
    let mut udp = svc("fd00:30::53", &[]);
    udp.port = 53;
    let m = with(vec![
        (spn("ns11", "dual"), s),
        (
            ServicePortName::new("ns11", "dns", "dns", Protocol::Udp),
            udp,
        ),
    ]);
    check("ipv6", &m, Family::V6);
    // The v4 table of the same model holds the dual-stack service's IPv4 half only.
    check("ipv6_v4half", &m, Family::V4);
}

#[test]
fn masquerade_all() {
    let mut m = with(vec![(
        spn("ns12", "svc12"),
        svc("172.30.0.53", &[ep("10.180.0.1", 80)]),
    )]);
    m.masquerade_all = true;
    check("masquerade_all", &m, Family::V4);
}

#[test]
fn no_cluster_cidr_masquerades_all_cluster_ip_traffic() {
    let mut m = with(vec![(
        spn("ns13", "svc13"),
        svc("172.30.0.54", &[ep("10.180.0.1", 80)]),
    )]);
    m.cluster_cidrs.clear();
    check("no_cluster_cidr", &m, Family::V4);
}

#[test]
fn sctp_and_udp_ports() {
    let mut u = svc("172.30.0.55", &[ep("10.180.0.1", 53)]);
    u.port = 53;
    let s = svc("172.30.0.56", &[]);
    let m = with(vec![
        (ServicePortName::new("ns14", "dns", "dns", Protocol::Udp), u),
        (ServicePortName::new("ns14", "sctp", "", Protocol::Sctp), s),
    ]);
    check("protocols", &m, Family::V4);
}

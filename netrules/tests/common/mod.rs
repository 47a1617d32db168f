//! Shared by the integration tests: the address plan, model builders and golden comparison.
#![allow(dead_code)]

pub mod topo;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use oxlet_netrules::{Cidr, Endpoint, Model, Protocol, ServicePort, ServicePortName};

// Address plan, as upstream's proxier_test.go: pods 10.0.0.0/8 (this node's pods in
// 10.0.1.0/24), ClusterIPs 172.30.0.0/16, node 192.168.0.2, external IPs 192.168.99.0/24,
// LoadBalancer IPs 1.2.3.0/24; IPv6 pods fd00:10::/64, ClusterIPs fd00:30::/108.
pub const NODE_IP: &str = "192.168.0.2";
pub const POD_CIDR: &str = "10.0.0.0/8";

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|_| panic!("bad test address {s}"))
}

pub fn cidr(s: &str) -> Cidr {
    s.parse().unwrap_or_else(|_| panic!("bad test CIDR {s}"))
}

pub fn base_model() -> Model {
    Model {
        node_name: "node1".into(),
        node_ips: vec![ip(NODE_IP), ip("fd00:168::2")],
        cluster_cidrs: vec![cidr(POD_CIDR), cidr("fd00:10::/64")],
        nodeport_addresses: vec![],
        masquerade_all: false,
        localhost_nodeports: false,
        services: BTreeMap::new(),
    }
}

pub fn spn(ns: &str, name: &str) -> ServicePortName {
    ServicePortName::new(ns, name, "p80", Protocol::Tcp)
}

pub fn svc(cluster_ip: &str, endpoints: &[Endpoint]) -> ServicePort {
    let mut s = ServicePort::new(vec![ip(cluster_ip)], 80);
    s.endpoints = endpoints.to_vec();
    s
}

pub fn ep(addr: &str, port: u16) -> Endpoint {
    Endpoint::ready(ip(addr), port, false)
}

pub fn local_ep(addr: &str, port: u16) -> Endpoint {
    Endpoint::ready(ip(addr), port, true)
}

pub fn affinity(mut s: ServicePort, secs: u64) -> ServicePort {
    s.session_affinity = Some(Duration::from_secs(secs));
    s
}

/// Compares `actual` with `tests/golden/<name>`; with `OXLET_BLESS=1` writes it instead.
pub fn assert_golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("OXLET_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "read {}: {e} (run with OXLET_BLESS=1 to create it)",
            path.display()
        )
    });
    assert_text_eq(&expected, actual, name);
}

/// Asserts equal texts, printing a line diff (`-` expected, `+` actual) on mismatch.
pub fn assert_text_eq(expected: &str, actual: &str, what: &str) {
    if expected == actual {
        return;
    }
    panic!(
        "{what} differs (- expected, + actual):\n{}",
        line_diff(expected, actual)
    );
}

/// A unified-style line diff by longest common subsequence.
pub fn line_diff(a: &str, b: &str) -> String {
    let a: Vec<&str> = a.lines().collect();
    let b: Vec<&str> = b.lines().collect();
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            out.push_str(&format!("  {}\n", a[i]));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push_str(&format!("+ {}\n", b[j]));
            j += 1;
        } else {
            out.push_str(&format!("- {}\n", a[i]));
            i += 1;
        }
    }
    out
}

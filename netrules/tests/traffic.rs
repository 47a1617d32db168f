//! Real packets through the rendered rules, each scenario in both modes (nftables and
//! iptables): external and LoadBalancer IPs, Local traffic policy (drop without local
//! endpoints, client source kept), terminating endpoints, IPv6 and dual-stack, established
//! connections across a full resync, stale UDP conntrack entries, localhost NodePorts
//! (iptables, only when asked for), and cleanup of both families. Each test builds its own
//! namespaces (`common::topo`); nothing touches the host's ruleset.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use common::topo::*;
use common::*;
use oxlet_netrules::apply::conntrack::Conntrack;
use oxlet_netrules::apply::{set_sysctl, Command};
use oxlet_netrules::{Endpoint, Family, Model, Protocol, ServicePort, ServicePortName};

/// The topology's model: node addresses of both families, pods in 10.0.0.0/8 and fd00:10::/32.
fn topo_model() -> Model {
    let mut m = base_model();
    m.node_ips = vec![ip(NODE_ADDR), ip(NODE_ADDR6)];
    m.cluster_cidrs = vec![cidr("10.0.0.0/8"), cidr("fd00:10::/32")];
    m
}

fn port(cluster_ips: &[&str], port: u16, endpoints: Vec<Endpoint>) -> ServicePort {
    let mut s = ServicePort::new(cluster_ips.iter().map(|i| ip(i)).collect(), port);
    s.endpoints = endpoints;
    s
}

fn both(target: u16) -> Vec<Endpoint> {
    vec![ep(B1, target), ep(B2, target)]
}

fn both6(target: u16) -> Vec<Endpoint> {
    vec![ep(B1_6, target), ep(B2_6, target)]
}

/// Asserts both backends answered `n` connections between them, and nothing failed.
fn assert_spread(ns: &oxlet_e2e::netns::Netns, to: &str, n: usize) -> Result<Vec<Outcome>> {
    let out = connect_many(ns, addr(to), n)?;
    let seen = tally(&out);
    ensure!(
        seen.len() == 2 && seen.contains_key("b1") && seen.contains_key("b2"),
        "{to}: expected answers from b1 and b2 only, got {seen:?}"
    );
    Ok(out)
}

/// Asserts a fast refusal (TCP reset from the reject rule).
fn assert_refused(ns: &oxlet_e2e::netns::Netns, to: &str) -> Result<()> {
    let start = Instant::now();
    let out = connect_many(ns, addr(to), 1)?;
    ensure!(
        out == vec![Outcome::Failed(std::io::ErrorKind::ConnectionRefused)],
        "{to}: {out:?}"
    );
    ensure!(
        start.elapsed() < Duration::from_millis(500),
        "{to}: refusal took {:?}",
        start.elapsed()
    );
    Ok(())
}

fn external_and_load_balancer_ips(mode: Mode) -> Result<()> {
    let topo = Topology::new()?;
    let mut rules = Rules::new(mode, &topo.node);
    let mut m = topo_model();
    let mut web = port(&["172.30.0.20"], 80, both(NAME_PORT));
    web.external_ips = vec![ip("192.168.99.20")];
    web.load_balancer_ips = vec![ip("1.2.3.20")];
    m.services.insert(spn("ns", "web"), web);
    let mut none = port(&["172.30.0.21"], 80, vec![]);
    none.external_ips = vec![ip("192.168.99.21")];
    none.load_balancer_ips = vec![ip("1.2.3.21")];
    m.services.insert(spn("ns", "none"), none);
    rules.apply(&m)?;

    for to in ["192.168.99.20:80", "1.2.3.20:80"] {
        let out = assert_spread(&topo.client, to, 40)?;
        // Cluster policy: external traffic is masqueraded to the node's address.
        for o in &out {
            let expected = match o.name() {
                Some("b1") => ip(NODE_TO_B1),
                _ => ip("10.0.2.1"),
            };
            ensure!(o.peer() == Some(expected), "{to}: {o:?}");
        }
    }
    for to in ["192.168.99.21:80", "1.2.3.21:80", "172.30.0.21:80"] {
        assert_refused(&topo.client, to)?;
    }
    // Another port of the external IP is not ours: not answered.
    let out = connect_many(&topo.client, addr("192.168.99.20:81"), 1)?;
    ensure!(!matches!(out[0], Outcome::Answer(_)), "{out:?}");
    Ok(())
}

#[test]
fn external_and_load_balancer_ips_nft() -> Result<()> {
    external_and_load_balancer_ips(Mode::Nft)
}

#[test]
fn external_and_load_balancer_ips_iptables() -> Result<()> {
    external_and_load_balancer_ips(Mode::Iptables)
}

fn local_policy(mode: Mode) -> Result<()> {
    let topo = Topology::new()?;
    let mut rules = Rules::new(mode, &topo.node);
    let name = spn("ns", "local");
    let model = |b1_local: bool, local_policy: bool| {
        let mut m = topo_model();
        let mut s = port(
            &["172.30.0.30"],
            80,
            vec![
                Endpoint::ready(ip(B1), NAME_PORT, b1_local),
                ep(B2, NAME_PORT),
            ],
        );
        s.node_port = Some(30030);
        s.external_ips = vec![ip("192.168.99.30")];
        s.external_traffic_local = local_policy;
        m.services.insert(name.clone(), s);
        m
    };

    // No endpoint on this node: external traffic is dropped (not refused: other nodes may
    // have endpoints, and a load balancer health check already steers away from us).
    rules.apply(&model(false, true))?;
    for to in ["192.168.0.1:30030", "192.168.99.30:80"] {
        let out = connect_many(&topo.client, addr(to), 1)?;
        ensure!(is_drop(&out[0]), "{to}: expected a drop, got {out:?}");
    }
    // Internal traffic uses the Cluster policy: the ClusterIP still works.
    assert_spread(&topo.client, "172.30.0.30:80", 30)?;
    // The node's own traffic to its NodePort or the external IP is short-circuited to all
    // endpoints.
    for to in ["192.168.0.1:30030", "192.168.99.30:80"] {
        assert_spread(&topo.node, to, 30)?;
    }

    // b1 runs here: only b1 serves external traffic, and sees the client's own address.
    rules.apply(&model(true, true))?;
    for to in ["192.168.0.1:30030", "192.168.99.30:80"] {
        let out = connect_many(&topo.client, addr(to), 20)?;
        for o in &out {
            ensure!(
                o.name() == Some("b1") && o.peer() == Some(ip(CLIENT_ADDR)),
                "{to}: expected b1 seeing {CLIENT_ADDR}, got {o:?}"
            );
        }
    }

    // Cluster policy, for contrast: both backends, and the client's address is hidden.
    rules.apply(&model(true, false))?;
    let out = assert_spread(&topo.client, "192.168.0.1:30030", 40)?;
    ensure!(
        out.iter().all(|o| o.peer() != Some(ip(CLIENT_ADDR))),
        "{out:?}"
    );
    Ok(())
}

#[test]
fn local_policy_nft() -> Result<()> {
    local_policy(Mode::Nft)
}

#[test]
fn local_policy_iptables() -> Result<()> {
    local_policy(Mode::Iptables)
}

fn terminating_endpoints(mode: Mode) -> Result<()> {
    let topo = Topology::new()?;
    let mut rules = Rules::new(mode, &topo.node);
    let name = spn("ns", "term");
    let with = |eps: Vec<Endpoint>| {
        let mut m = topo_model();
        m.services
            .insert(name.clone(), port(&["172.30.0.40"], 80, eps));
        m
    };
    let b2_terminating = Endpoint::terminating(ip(B2), NAME_PORT, false);

    // A ready endpoint wins: the terminating one gets nothing.
    rules.apply(&with(vec![ep(B1, NAME_PORT), b2_terminating.clone()]))?;
    let seen = tally(&connect_many(&topo.client, addr("172.30.0.40:80"), 30)?);
    ensure!(seen.len() == 1 && seen.get("b1") == Some(&30), "{seen:?}");

    // Nothing ready any more: the terminating endpoint that still serves takes the traffic.
    let mut b1_gone = ep(B1, NAME_PORT);
    b1_gone.ready = false;
    b1_gone.serving = false;
    b1_gone.terminating = true;
    rules.apply(&with(vec![b1_gone.clone(), b2_terminating.clone()]))?;
    let seen = tally(&connect_many(&topo.client, addr("172.30.0.40:80"), 30)?);
    ensure!(seen.len() == 1 && seen.get("b2") == Some(&30), "{seen:?}");

    // It stops serving too: no usable endpoint, connections are refused.
    let mut b2_done = b2_terminating;
    b2_done.serving = false;
    rules.apply(&with(vec![b1_gone, b2_done]))?;
    assert_refused(&topo.client, "172.30.0.40:80")
}

#[test]
fn terminating_endpoints_nft() -> Result<()> {
    terminating_endpoints(Mode::Nft)
}

#[test]
fn terminating_endpoints_iptables() -> Result<()> {
    terminating_endpoints(Mode::Iptables)
}

fn ipv6_and_dual_stack(mode: Mode) -> Result<()> {
    let topo = Topology::new()?;
    let mut rules = Rules::new(mode, &topo.node);
    let mut m = topo_model();
    let mut eps = both(NAME_PORT);
    eps.extend(both6(NAME_PORT));
    let mut web = port(&["172.30.0.60", "fd00:30::60"], 80, eps);
    web.node_port = Some(30060);
    m.services.insert(spn("ns", "web"), web);
    m.services
        .insert(spn("ns", "empty"), port(&["fd00:30::61"], 80, vec![]));
    m.services.insert(
        spn("ns", "sticky"),
        affinity(port(&["fd00:30::62"], 80, both6(NAME_PORT)), 600),
    );
    rules.apply(&m)?;

    // Both families of one dual-stack Service, from the client and from the node.
    for to in ["172.30.0.60:80", "[fd00:30::60]:80", "[fd00:168::1]:30060"] {
        assert_spread(&topo.client, to, 40)?;
    }
    let out = assert_spread(&topo.node, "[fd00:30::60]:80", 20)?;
    // Each family is served by endpoints of that family.
    ensure!(
        out.iter().all(|o| o.peer().is_some_and(|p| p.is_ipv6())),
        "{out:?}"
    );
    assert_refused(&topo.client, "[fd00:30::61]:80")?;
    let seen = tally(&connect_many(&topo.client, addr("[fd00:30::62]:80"), 20)?);
    ensure!(
        seen.len() == 1 && seen.values().all(|&n| n == 20),
        "affinity broken: {seen:?}"
    );

    // An IPv6 endpoint removed: traffic stops going to it; IPv4 is untouched.
    m.services
        .get_mut(&spn("ns", "web"))
        .context("web")?
        .endpoints
        .retain(|e| e.ip != ip(B2_6));
    rules.apply(&m)?;
    let seen = tally(&connect_many(&topo.client, addr("[fd00:30::60]:80"), 30)?);
    ensure!(seen.len() == 1 && seen.get("b1") == Some(&30), "{seen:?}");
    assert_spread(&topo.client, "172.30.0.60:80", 40)?;

    // Cleanup removes both families.
    rules.cleanup()?;
    let tables = sh(&topo.node, &["nft", "list", "tables"])?;
    ensure!(!tables.contains("oxlet"), "tables left: {tables}");
    for tool in ["iptables-save", "ip6tables-save"] {
        let saved = sh(&topo.node, &[tool])?;
        ensure!(!saved.contains("OXLET"), "{tool}:\n{saved}");
    }
    let out = connect_many(&topo.client, addr("[fd00:30::60]:80"), 1)?;
    ensure!(!matches!(out[0], Outcome::Answer(_)), "{out:?}");
    Ok(())
}

#[test]
fn ipv6_and_dual_stack_nft() -> Result<()> {
    ipv6_and_dual_stack(Mode::Nft)
}

#[test]
fn ipv6_and_dual_stack_iptables() -> Result<()> {
    ipv6_and_dual_stack(Mode::Iptables)
}

/// One line through an established echo connection; the answer names the backend.
fn echo(conn: &mut TcpStream, reader: &mut BufReader<TcpStream>, line: &str) -> Result<String> {
    conn.write_all(format!("{line}\n").as_bytes())?;
    let mut answer = String::new();
    reader.read_line(&mut answer)?;
    Ok(answer.trim_end().to_string())
}

fn established_connections_survive_a_full_resync(mode: Mode) -> Result<()> {
    let topo = Topology::new()?;
    let mut rules = Rules::new(mode, &topo.node);
    let mut m = topo_model();
    m.services.insert(
        spn("ns", "echo"),
        port(&["172.30.0.50"], 9090, both(ECHO_PORT)),
    );
    rules.apply(&m)?;

    let to = addr("172.30.0.50:9090");
    let mut conn = topo
        .client
        .run_in(move || TcpStream::connect_timeout(&to, Duration::from_secs(2)))??;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let first = echo(&mut conn, &mut reader, "one")?;
    let backend = first.split(':').next().unwrap_or_default().to_string();
    ensure!(backend == "b1" || backend == "b2", "{first}");

    // What a restarted proxy does: rewrite everything (nft recreates the table).
    rules.apply_full(&m)?;
    let second = echo(&mut conn, &mut reader, "two")?;
    ensure!(second == format!("{backend}: two"), "{second}");

    // The endpoint this connection uses goes away: new connections avoid it, and the
    // established one keeps its conntrack entry, as upstream (TCP is not cleaned up).
    let keep = if backend == "b1" { B2 } else { B1 };
    m.services
        .get_mut(&spn("ns", "echo"))
        .context("echo")?
        .endpoints
        .retain(|e| e.ip == ip(keep));
    rules.apply(&m)?;
    let third = echo(&mut conn, &mut reader, "three")?;
    ensure!(third == format!("{backend}: three"), "{third}");
    let to = addr("172.30.0.50:9090");
    let other = topo.client.run_in(move || -> Result<String> {
        let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
        c.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut r = BufReader::new(c.try_clone()?);
        echo(&mut c, &mut r, "new")
    })??;
    ensure!(!other.starts_with(&backend), "{other}");
    Ok(())
}

#[test]
fn established_connections_survive_a_full_resync_nft() -> Result<()> {
    established_connections_survive_a_full_resync(Mode::Nft)
}

#[test]
fn established_connections_survive_a_full_resync_iptables() -> Result<()> {
    established_connections_survive_a_full_resync(Mode::Iptables)
}

fn stale_udp_flows_are_cleaned(mode: Mode) -> Result<()> {
    let topo = Topology::new()?;
    let mut rules = Rules::new(mode, &topo.node);
    let name = ServicePortName::new("ns", "dns", "dns", Protocol::Udp);
    let with = |v4: &str, v6: &str| {
        let mut m = topo_model();
        let mut s = port(
            &["172.30.0.70", "fd00:30::70"],
            53,
            vec![ep(v4, UDP_PORT), ep(v6, UDP_PORT)],
        );
        s.node_port = Some(30070);
        m.services.insert(name.clone(), s);
        m
    };
    let conntrack = Conntrack::new(Command::in_netns(&topo.node.path()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    let first = with(B1, B1_6);
    rules.apply(&first)?;
    // Fixed client ports: every datagram of a client is one flow, one conntrack entry.
    let targets = [
        ("192.168.0.2:4000", "172.30.0.70:53"),
        ("192.168.0.2:4001", "192.168.0.1:30070"),
        ("[fd00:168::2]:4000", "[fd00:30::70]:53"),
    ];
    let mut clients = Vec::new();
    for (local, to) in targets {
        let c = UdpClient::bind(&topo.client, addr(local))?;
        let answer = c.ask(addr(to))?;
        ensure!(
            answer.as_deref().is_some_and(|a| a.starts_with("b1 ")),
            "{to}: {answer:?}"
        );
        clients.push((c, to));
    }
    // Nothing stale while the endpoint serves.
    for family in [Family::V4, Family::V6] {
        ensure!(rt.block_on(conntrack.clean_stale(&first, family))? == 0);
    }

    // The endpoint moves to b2: the old flows still go to b1 (the problem cleanup solves)…
    let second = with(B2, B2_6);
    rules.apply(&second)?;
    for (c, to) in &clients {
        let answer = c.ask(addr(to))?;
        ensure!(
            answer.as_deref().is_some_and(|a| a.starts_with("b1 ")),
            "{to} before cleanup: {answer:?}"
        );
    }
    // …until their entries are deleted: the same flows then reach b2.
    let v4 = rt.block_on(conntrack.clean_stale(&second, Family::V4))?;
    let v6 = rt.block_on(conntrack.clean_stale(&second, Family::V6))?;
    ensure!(v4 >= 2 && v6 >= 1, "deletions: v4 {v4}, v6 {v6}");
    for (c, to) in &clients {
        let answer = c.ask(addr(to))?;
        ensure!(
            answer.as_deref().is_some_and(|a| a.starts_with("b2 ")),
            "{to} after cleanup: {answer:?}"
        );
    }
    let left = rt.block_on(conntrack.list_udp(Family::V4))?;
    ensure!(
        left.iter().all(|e| e.reply_src != ip(B1)),
        "entries to b1 left: {left:?}"
    );
    Ok(())
}

#[test]
fn stale_udp_flows_are_cleaned_nft() -> Result<()> {
    stale_udp_flows_are_cleaned(Mode::Nft)
}

#[test]
fn stale_udp_flows_are_cleaned_iptables() -> Result<()> {
    stale_udp_flows_are_cleaned(Mode::Iptables)
}

/// NodePorts on 127.0.0.1: refused (not DNATed) unless asked for; when asked for (iptables
/// mode, route_localnet set) the node's own localhost connections reach both backends.
fn localhost_node_ports(mode: Mode) -> Result<()> {
    let topo = Topology::new()?;
    let mut rules = Rules::new(mode, &topo.node);
    let model = |localhost: bool| {
        let mut m = topo_model();
        let mut s = port(&["172.30.0.80"], 80, both(NAME_PORT));
        s.node_port = Some(30080);
        m.services.insert(spn("ns", "lh"), s);
        m.localhost_nodeports = localhost;
        m
    };
    rules.apply(&model(false))?;
    assert_spread(&topo.node, "192.168.0.1:30080", 20)?;
    let out = connect_many(&topo.node, addr("127.0.0.1:30080"), 1)?;
    ensure!(
        out == vec![Outcome::Failed(std::io::ErrorKind::ConnectionRefused)],
        "localhost NodePort answered without being asked for: {out:?}"
    );

    if mode == Mode::Iptables {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let cmd = Command::in_netns(&topo.node.path());
        rt.block_on(set_sysctl(&cmd, "net.ipv4.conf.all.route_localnet", "1"))?;
        rules.apply(&model(true))?;
        assert_spread(&topo.node, "127.0.0.1:30080", 30)?;
        // Other node addresses keep working beside it.
        assert_spread(&topo.client, "192.168.0.1:30080", 20)?;
    }
    Ok(())
}

#[test]
fn localhost_node_ports_nft() -> Result<()> {
    localhost_node_ports(Mode::Nft)
}

#[test]
fn localhost_node_ports_iptables() -> Result<()> {
    localhost_node_ports(Mode::Iptables)
}

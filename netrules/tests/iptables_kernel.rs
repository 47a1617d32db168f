//! Real-kernel tests of the iptables renderer: `iptables-restore --noflush` in a private
//! "node" namespace, real TCP traffic from a client namespace to two backends. Needs root;
//! touches only the namespaces it creates.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use common::topo::*;
use common::*;
use oxlet_netrules::apply::iptables::Iptables;
use oxlet_netrules::apply::Command;
use oxlet_netrules::iptables::render;
use oxlet_netrules::{Family, Model};

fn model() -> Model {
    let mut m = base_model();
    m.node_ips = vec![ip(NODE_ADDR)];
    let both = [ep(B1, 8080), ep(B2, 8080)];
    let mut web = svc("172.30.0.10", &both);
    web.node_port = Some(30080);
    m.services.insert(spn("default", "web"), web);
    m.services
        .insert(spn("default", "empty"), svc("172.30.0.11", &[]));
    m.services.insert(
        spn("default", "sticky"),
        affinity(svc("172.30.0.12", &both), 600),
    );
    m
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|_| panic!("bad address {s}"))
}

#[test]
fn iptables_rules_balance_reject_nodeport_pin_and_clean_up() -> Result<()> {
    let topo = Topology::new()?;
    let ipt = Iptables::new(Command::in_netns(&topo.node.path()), Family::V4);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let m = model();
    let rules = render(&m, Family::V4);
    rt.block_on(ipt.apply(&rules, None))
        .context("first apply")?;
    // Applying twice keeps one jump per built-in chain (idempotent).
    rt.block_on(ipt.apply(&rules, Some(&rules)))
        .context("second apply")?;
    let saved = sh(&topo.node, &["iptables-save", "-t", "nat"])?;
    ensure!(
        saved.matches("-A PREROUTING -j OXLET-SERVICES").count() == 1,
        "{saved}"
    );

    let seen = tally(&connect_many(&topo.client, addr("172.30.0.10:80"), 50)?);
    ensure!(
        seen.get("b1").copied().unwrap_or(0) >= 5 && seen.get("b2").copied().unwrap_or(0) >= 5,
        "{seen:?}"
    );

    let start = Instant::now();
    let out = connect_many(&topo.client, addr("172.30.0.11:80"), 1)?;
    ensure!(
        out == vec![Outcome::Failed(std::io::ErrorKind::ConnectionRefused)],
        "{out:?}"
    );
    ensure!(
        start.elapsed() < Duration::from_millis(500),
        "refusal took {:?}",
        start.elapsed()
    );

    let seen = tally(&connect_many(&topo.client, addr("192.168.0.1:30080"), 30)?);
    ensure!(
        seen.contains_key("b1") && seen.contains_key("b2") && seen.len() == 2,
        "{seen:?}"
    );

    let seen = tally(&connect_many(&topo.client, addr("172.30.0.12:80"), 20)?);
    ensure!(seen.len() == 1, "affinity broken: {seen:?}");

    // Remove backend 2 from "web": its chain is deleted, new connections avoid it.
    let mut m2 = m.clone();
    m2.services
        .get_mut(&spn("default", "web"))
        .context("web")?
        .endpoints
        .retain(|e| e.ip == ip(B1));
    let rules2 = render(&m2, Family::V4);
    rt.block_on(ipt.apply(&rules2, Some(&rules)))
        .context("apply without b2")?;
    let seen = tally(&connect_many(&topo.client, addr("172.30.0.10:80"), 30)?);
    ensure!(seen.len() == 1 && seen.get("b1") == Some(&30), "{seen:?}");
    let gone: Vec<&String> = rules
        .nat
        .chains
        .iter()
        .filter(|c| !rules2.nat.chains.contains(c))
        .collect();
    ensure!(gone.len() == 1, "{gone:?}");
    let saved = sh(&topo.node, &["iptables-save", "-t", "nat"])?;
    ensure!(
        !saved.contains(gone[0].as_str()),
        "{} still present:\n{saved}",
        gone[0]
    );

    rt.block_on(ipt.cleanup()).context("cleanup")?;
    for table in ["nat", "filter"] {
        let saved = sh(&topo.node, &["iptables-save", "-t", table])?;
        ensure!(
            !saved.contains("OXLET"),
            "{table} still has our rules:\n{saved}"
        );
    }
    rt.block_on(ipt.cleanup()).context("second cleanup")?;
    Ok(())
}

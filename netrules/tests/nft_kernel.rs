//! Real-kernel tests: rendered nft transactions applied with `nft -f -` in a private "node"
//! network namespace, checked by listing the table and by real TCP traffic from a client
//! namespace to two backend namespaces. Needs root; touches only the namespaces it creates.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use common::topo::*;
use common::*;
use oxlet_netrules::apply::nft::Nft;
use oxlet_netrules::apply::Command;
use oxlet_netrules::nft::{diff, render};
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

fn rt() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

#[test]
fn nft_rules_balance_reject_nodeport_and_pin_clients() -> Result<()> {
    let topo = Topology::new()?;
    let nft = Nft::new(Command::in_netns(&topo.node.path()));
    let rt = rt()?;
    let rules = render(&model(), Family::V4);
    let tx = diff(None, &rules);
    rt.block_on(nft.apply(&tx)).context("apply full sync")?;

    // The kernel holds every chain we rendered, and its listing parses back.
    let listing = rt.block_on(nft.list_table(Family::V4))?;
    ensure!(
        rules.missing_from_listing(&listing).is_empty(),
        "missing chains: {:?}",
        rules.missing_from_listing(&listing)
    );
    sh_stdin(&topo.node, &["nft", "-c", "-f", "-"], &listing)
        .context("listing does not parse back")?;

    // ClusterIP from a client outside the cluster: both backends answer.
    let seen = tally(&connect_many(&topo.client, addr("172.30.0.10:80"), 50)?);
    ensure!(
        seen.get("b1").copied().unwrap_or(0) >= 5 && seen.get("b2").copied().unwrap_or(0) >= 5,
        "{seen:?}"
    );
    ensure!(
        seen.values().sum::<usize>() == seen.get("b1").unwrap_or(&0) + seen.get("b2").unwrap_or(&0),
        "{seen:?}"
    );

    // ClusterIP from the node itself (nat output hook).
    let seen = tally(&connect_many(&topo.node, addr("172.30.0.10:80"), 10)?);
    ensure!(seen.keys().all(|k| k == "b1" || k == "b2"), "{seen:?}");

    // No endpoints: refused at once (TCP reset), from the client and from the node.
    for ns in [&topo.client, &topo.node] {
        let start = Instant::now();
        let out = connect_many(ns, addr("172.30.0.11:80"), 1)?;
        ensure!(
            out == vec![Outcome::Failed(std::io::ErrorKind::ConnectionRefused)],
            "{out:?}"
        );
        ensure!(
            start.elapsed() < Duration::from_millis(500),
            "refusal took {:?}",
            start.elapsed()
        );
    }

    // NodePort on the node's address, from the client.
    let seen = tally(&connect_many(&topo.client, addr("192.168.0.1:30080"), 30)?);
    ensure!(
        seen.contains_key("b1") && seen.contains_key("b2") && seen.len() == 2,
        "{seen:?}"
    );

    // Session affinity: one client, one backend.
    let seen = tally(&connect_many(&topo.client, addr("172.30.0.12:80"), 20)?);
    ensure!(
        seen.len() == 1 && seen.values().all(|&n| n == 20),
        "affinity broken: {seen:?}"
    );
    Ok(())
}

#[test]
fn nft_partial_sync_removes_an_endpoint_and_cleanup_leaves_nothing() -> Result<()> {
    let topo = Topology::new()?;
    let nft = Nft::new(Command::in_netns(&topo.node.path()));
    let rt = rt()?;
    let m = model();
    let first = diff(None, &render(&m, Family::V4));
    rt.block_on(nft.apply(&first))?;
    let seen = tally(&connect_many(&topo.client, addr("172.30.0.10:80"), 30)?);
    ensure!(seen.len() == 2, "{seen:?}");

    // Drop backend 2 from "web": a small partial transaction; new connections avoid b2.
    let mut m2 = m.clone();
    m2.services
        .get_mut(&spn("default", "web"))
        .context("web")?
        .endpoints
        .retain(|e| e.ip == ip(B1));
    let second = diff(Some(first.applied()), &render(&m2, Family::V4));
    ensure!(
        !second.is_full() && second.len() < 15,
        "{}",
        second.to_nft_script()
    );
    rt.block_on(nft.apply(&second))
        .context("apply partial sync")?;
    let seen = tally(&connect_many(&topo.client, addr("172.30.0.10:80"), 30)?);
    ensure!(seen.len() == 1 && seen.get("b1") == Some(&30), "{seen:?}");

    // The emptied endpoint chain is still there, empty; the next sync deletes it.
    let stale = second
        .applied()
        .stale_chains
        .iter()
        .next()
        .context("one stale chain")?
        .clone();
    ensure!(rt.block_on(nft.list_table(Family::V4))?.contains(&stale));
    let third = diff(Some(second.applied()), &render(&m2, Family::V4));
    rt.block_on(nft.apply(&third))?;
    ensure!(
        !rt.block_on(nft.list_table(Family::V4))?.contains(&stale),
        "{stale} not deleted"
    );

    // Endpoint comes back, and a service is removed: still partial, traffic follows.
    let mut m3 = m.clone();
    m3.services.remove(&spn("default", "sticky"));
    let fourth = diff(Some(third.applied()), &render(&m3, Family::V4));
    rt.block_on(nft.apply(&fourth))?;
    let seen = tally(&connect_many(&topo.client, addr("172.30.0.10:80"), 30)?);
    ensure!(seen.len() == 2, "{seen:?}");

    // A full sync over an existing table works too (add + delete + recreate).
    rt.block_on(nft.apply(&diff(None, &render(&m3, Family::V4))))?;

    // Tampering is visible: someone recreates our table empty behind our back.
    let chain = oxlet_netrules::names::service_chain(&spn("default", "web"));
    sh(&topo.node, &["nft", "delete", "table", "ip", "oxlet"])?;
    sh(&topo.node, &["nft", "add", "table", "ip", "oxlet"])?;
    let listing = rt.block_on(nft.list_table(Family::V4))?;
    let missing = render(&m3, Family::V4).missing_from_listing(&listing);
    ensure!(
        missing.contains(&chain) && missing.len() == render(&m3, Family::V4).chain_names().len(),
        "{missing:?}"
    );

    rt.block_on(nft.cleanup())?;
    let tables = sh(&topo.node, &["nft", "list", "tables"])?;
    ensure!(!tables.contains("oxlet"), "tables left: {tables}");
    // Cleanup of nothing is not an error.
    rt.block_on(nft.cleanup())?;
    // With the table gone, the service is unreachable (no route to b1 from the client).
    let out = connect_many(&topo.client, addr("172.30.0.10:80"), 1)?;
    ensure!(!matches!(out[0], Outcome::Answer(_)), "{out:?}");
    Ok(())
}

#[test]
fn nft_error_carries_stderr() -> Result<()> {
    let ns = oxlet_e2e::netns::Netns::new("nre")?;
    let nft = Nft::new(Command::in_netns(&ns.path()));
    let err = rt()?
        .block_on(nft.run_script("add rule ip oxlet nowhere accept\n"))
        .expect_err("must fail");
    let stderr = err.stderr().context("a CommandFailed")?;
    ensure!(stderr.contains("No such file or directory"), "{stderr}");
    ensure!(err.to_string().contains(stderr.trim()), "{err}");
    Ok(())
}

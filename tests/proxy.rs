//! `oxlet proxy` end to end: the real binary against `oxlet server`, programming rules inside a
//! "node" network namespace wired by veths to two backend namespaces and a client namespace,
//! checked with real TCP traffic, in both modes. Nothing touches the host's ruleset: the proxy
//! always runs with `--netns`.
//!
//! Address plan: backends 10.244.1.2 and 10.244.2.2 (node side .1), client 192.168.50.2,
//! node 192.168.50.1 (its InternalIP); ClusterIPs come from the server's 10.43.0.0/16.

mod proxy_support;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};
use oxlet_e2e::server::{Backend, TestServer};
use proxy_support::*;
use serde_json::json;

const PORT: (&str, u16, &str) = ("http", 8080, "TCP");

async fn scenario(mode: &str) -> Result<()> {
    let topo = Topology::new()?;
    let server = TestServer::start(Path::new(BIN), Backend::Sqlite, &[])?;
    let client = client_for(&server).await?;
    let dir = TempDir::new(mode)?;

    create_node(&client).await?;
    // No selector: the endpoints come from our own EndpointSlice, as a controller would write.
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc = services
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "echo"},
                "spec": {"type": "NodePort", "ports": [
                    {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}
                ]},
            }))?,
        )
        .await?;
    let spec = svc.spec.context("service spec")?;
    let cluster_ip: IpAddr = spec.cluster_ip.context("clusterIP")?.parse()?;
    let node_port = spec
        .ports
        .and_then(|p| p.first().and_then(|p| p.node_port))
        .context("nodePort")?;
    let cluster = SocketAddr::new(cluster_ip, 80);
    let nodeport = SocketAddr::new(NODE_IP.parse()?, u16::try_from(node_port)?);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    slices
        .create(
            &PostParams::default(),
            &slice("echo", PORT, &[(B1, "node-a"), (B2, "node-b")])?,
        )
        .await?;

    let netns = topo.node.path();
    let mut args = proxy_args(dir.path(), &server, mode, &netns)?;
    args.push("--iptables-localhost-nodeports".into());
    let mut proxy = Proxy::start(dir.path(), &args)?;
    let body = proxy.wait_healthy()?;
    let health: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(health["nodeEligible"], true, "{body}");
    assert!(
        health["lastUpdated"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{body}"
    );

    // The ClusterIP reaches both backends from the node.
    wait_answers(&topo.node, cluster, 20, "ClusterIP to both backends", |a| {
        a.iter().any(|s| s == "b1") && a.iter().any(|s| s == "b2")
    })?;
    // The NodePort from another host (the client namespace).
    wait_answers(
        &topo.client,
        nodeport,
        10,
        "NodePort from the client",
        |a| a.iter().all(|s| s == "b1" || s == "b2"),
    )?;

    // Localhost NodePorts were asked for: iptables mode serves them and set route_localnet;
    // nftables mode has none, as upstream, and leaves the sysctl alone.
    let localhost = SocketAddr::new("127.0.0.1".parse()?, nodeport.port());
    let route_localnet = topo
        .node
        .exec(["sysctl", "-n", "net.ipv4.conf.all.route_localnet"])?;
    if mode == "iptables" {
        assert_eq!(route_localnet.trim(), "1");
        wait_answers(&topo.node, localhost, 10, "NodePort on localhost", |a| {
            a.iter().all(|s| s == "b1" || s == "b2")
        })?;
    } else {
        assert_eq!(route_localnet.trim(), "0");
        let refused = fetch(&topo.node, localhost)?;
        assert!(
            matches!(&refused, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
            "{refused:?}"
        );
    }

    let (code, metrics) = http_get(&proxy.metrics, "/metrics")?;
    assert_eq!(code, 200);
    for name in [
        "kubeproxy_sync_proxy_rules_duration_seconds_bucket",
        "kubeproxy_sync_full_proxy_rules_duration_seconds",
        "kubeproxy_sync_partial_proxy_rules_duration_seconds",
        "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
        "kubeproxy_sync_proxy_rules_nftables_sync_failures_total",
        "kubeproxy_network_programming_duration_seconds",
        "kubeproxy_sync_proxy_rules_service_changes_total",
        "kubeproxy_sync_proxy_rules_endpoint_changes_total",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }

    // An endpoint removed from the slice gets no more traffic.
    replace_slice(&slices, "echo", PORT, &[(B1, "node-a")]).await?;
    wait_answers(&topo.node, cluster, 20, "only b1 after removing b2", |a| {
        a.iter().all(|s| s == "b1")
    })?;

    // No endpoints: connections are refused at once instead of timing out.
    replace_slice(&slices, "echo", PORT, &[]).await?;
    wait_answers(&topo.node, cluster, 3, "refusal without endpoints", |a| {
        a.iter().all(|s| s.contains("refused"))
    })?;
    let started = Instant::now();
    let refused = fetch(&topo.node, cluster)?;
    assert!(
        matches!(&refused, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
        "{refused:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    replace_slice(&slices, "echo", PORT, &[(B1, "node-a"), (B2, "node-b")]).await?;
    wait_answers(&topo.node, cluster, 20, "both backends again", |a| {
        a.iter().any(|s| s == "b1") && a.iter().any(|s| s == "b2")
    })?;

    // Someone flushes our rules: the periodic sync (2s) puts them back.
    match mode {
        "nftables" => {
            topo.node.exec(["nft", "delete", "table", "ip", "oxlet"])?;
        }
        _ => {
            topo.node
                .exec(["iptables", "-w", "-t", "nat", "-F", "OXLET-SERVICES"])?;
        }
    }
    wait_answers(&topo.node, cluster, 10, "repair after tampering", |a| {
        a.iter().all(|s| s == "b1" || s == "b2")
    })?;

    // A stopped proxy leaves its rules in place, and a restarted one keeps them working.
    let log = proxy.stop()?;
    assert!(log.contains("synced proxy rules"), "{log}");
    wait_answers(
        &topo.node,
        cluster,
        5,
        "rules survive the proxy's exit",
        |a| a.iter().all(|s| s == "b1" || s == "b2"),
    )?;
    let mut proxy = Proxy::start(dir.path(), &args)?;
    proxy.wait_healthy()?;
    replace_slice(&slices, "echo", PORT, &[(B2, "node-b")]).await?;
    wait_answers(&topo.node, cluster, 20, "only b2 after restart", |a| {
        a.iter().all(|s| s == "b2")
    })?;
    proxy.stop()?;

    // --cleanup removes everything, in both modes.
    cleanup_leaves_nothing(&topo.node, &["iptables-save"])?;
    let after = fetch(&topo.node, cluster)?;
    assert!(
        after.is_err(),
        "traffic still proxied after cleanup: {after:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_nftables_end_to_end() -> Result<()> {
    scenario("nftables").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_iptables_end_to_end() -> Result<()> {
    scenario("iptables").await
}

#[test]
fn proxy_config_errors_exit_64_before_touching_anything() {
    let out = Command::new(BIN)
        .args(["proxy", "--proxy-mode", "ipvs", "--netns", "/nonexistent"])
        .output()
        .expect("run oxlet");
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mode: unsupported value \"ipvs\""), "{err}");
}

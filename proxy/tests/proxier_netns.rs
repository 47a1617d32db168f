//! `Proxier::sync` against the real `nft` inside a private network namespace: the first sync
//! is full, a change is a partial sync, and a periodic sync that finds our table deleted by
//! someone else repairs it with a full one. Stores are filled by hand (no API server).

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher::Event;
use oxlet_e2e::netns::Netns;
use oxlet_e2e::netns_traffic::{http_get_raw, http_status};
use oxlet_netrules::apply::Command as NetCommand;
use oxlet_proxy::config::KubeProxyConfiguration;
use oxlet_proxy::endpoints_change_tracker::EndpointsChangeTracker;
use oxlet_proxy::healthz::ProxyHealth;
use oxlet_proxy::metrics::Metrics;
use oxlet_proxy::proxier::Proxier;
use oxlet_proxy::service_change_tracker::ServiceChangeTracker;
use oxlet_proxy::sync_runner::SyncReason;
use prometheus_client::registry::Registry;
use serde_json::json;

/// `nft` inside the test's namespace; fails the test with nft's stderr.
fn nft(ns: &Netns, args: &[&str]) -> String {
    let mut argv = vec!["nft"];
    argv.extend_from_slice(args);
    ns.exec(argv).expect("nft in the test namespace")
}

/// How many syncs of `kind` (`full`, `partial`) the histogram recorded.
fn count(registry: &Registry, kind: &str) -> u64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("encode metrics");
    let name = format!("kubeproxy_sync_{kind}_proxy_rules_duration_seconds_count ");
    text.lines()
        .find_map(|l| l.strip_prefix(&name))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from\n{text}"))
}

fn service() -> Service {
    serde_json::from_value(json!({
        "metadata": {"namespace": "ns1", "name": "web"},
        "spec": {"clusterIP": "172.30.0.41", "ports": [{"name": "http", "port": 80}]},
    }))
    .expect("service")
}

fn slice(ips: &[&str]) -> EndpointSlice {
    let eps: Vec<_> = ips.iter().map(|ip| json!({"addresses": [ip]})).collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": "ns1", "name": "web-1",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": eps,
    }))
    .expect("slice")
}

#[tokio::test]
async fn partial_syncs_and_repair_after_tampering() {
    let ns = Netns::new("pxt").expect("create a test netns (needs root)");
    let services = Arc::new(ServiceChangeTracker::new());
    let slices = Arc::new(EndpointsChangeTracker::new("node-a"));
    let (nodes, _node_writer): (_, Writer<Node>) = reflector::store();
    services.apply(&Event::Apply(service()));
    slices.apply(&Event::Apply(slice(&["10.0.1.1"])));

    let mut file = KubeProxyConfiguration {
        mode: Some("nftables".into()),
        ..Default::default()
    };
    file.set_defaults();
    let config = file.validate().expect("valid config");
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let health = Arc::new(ProxyHealth::new(config.sync_period * 2));
    let mut proxier = Proxier::new(
        &config,
        "node-a".into(),
        NetCommand::in_netns(&ns.path()),
        nodes,
        services.clone(),
        slices.clone(),
        metrics,
        health.clone(),
    );

    assert!(proxier.sync(SyncReason::Initial).await);
    let table = nft(&ns, &["list", "table", "ip", "oxlet"]);
    assert!(
        table.contains("172.30.0.41") && table.contains("10.0.1.1"),
        "{table}"
    );
    assert_eq!(count(&registry, "full"), 1);
    assert!(health.check(std::time::SystemTime::now()).0);

    slices.apply(&Event::Apply(slice(&["10.0.1.2"])));
    assert!(proxier.sync(SyncReason::Change).await);
    let table = nft(&ns, &["list", "table", "ip", "oxlet"]);
    // The old endpoint chain is flushed (no longer a goto target) and deleted a sync later.
    assert!(
        table.contains("dnat to 10.0.1.2:8080") && !table.contains("dnat to 10.0.1.1"),
        "{table}"
    );
    assert_eq!(count(&registry, "partial"), 1);

    // Nothing changed and nothing tampered with: a periodic sync stays partial.
    assert!(proxier.sync(SyncReason::Periodic).await);
    assert_eq!(count(&registry, "partial"), 2);
    let table = nft(&ns, &["list", "table", "ip", "oxlet"]);
    assert!(!table.contains("10.0.1.1"), "stale chain left: {table}");

    nft(&ns, &["delete", "table", "ip", "oxlet"]);
    assert!(proxier.sync(SyncReason::Periodic).await);
    assert_eq!(count(&registry, "full"), 2);
    let table = nft(&ns, &["list", "table", "ip", "oxlet"]);
    assert!(table.contains("10.0.1.2"), "{table}");
}

/// A plain HTTP GET from inside `ns`: (status, body), or the connect error.
fn http_get_in(ns: &Netns, port: u16) -> std::io::Result<(u16, String)> {
    ns.run_in(move || -> std::io::Result<(u16, String)> {
        let out = http_get_raw(("127.0.0.1", port), "x", "/healthz")?;
        let code = http_status(&out).unwrap_or(0);
        let head_end = out.find("\r\n\r\n").unwrap_or(out.len());
        assert!(
            out[..head_end]
                .to_ascii_lowercase()
                .contains("x-content-type-options: nosniff"),
            "{out}"
        );
        Ok((code, out[head_end..].trim().to_string()))
    })
    .expect("thread in the test namespace")
}

fn lb_service(policy: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {"namespace": "ns1", "name": "web"},
        "spec": {"type": "LoadBalancer", "clusterIP": "172.30.0.41",
                 "externalTrafficPolicy": policy, "healthCheckNodePort": 32100,
                 "ports": [{"name": "http", "port": 80, "nodePort": 30080}]},
    }))
    .expect("service")
}

fn slice_on(node: &str) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"namespace": "ns1", "name": "web-1",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["10.0.1.1"], "nodeName": node,
                       "conditions": {"ready": true}}],
    }))
    .expect("slice")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_node_port_follows_local_endpoints() {
    use oxlet_proxy::service_health::ServiceHealthServer;
    let ns = Netns::new("pxh").expect("create a test netns (needs root)");
    let services = Arc::new(ServiceChangeTracker::new());
    let slices = Arc::new(EndpointsChangeTracker::new("node-a"));
    let (nodes, _node_writer): (_, Writer<Node>) = reflector::store();
    services.apply(&Event::Apply(lb_service("Local")));
    slices.apply(&Event::Apply(slice_on("node-b")));

    let mut file = KubeProxyConfiguration {
        mode: Some("nftables".into()),
        ..Default::default()
    };
    file.set_defaults();
    let config = file.validate().expect("valid config");
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let health = Arc::new(ProxyHealth::new(config.sync_period * 2));
    let token = tokio_util::sync::CancellationToken::new();
    let servers = Arc::new(ServiceHealthServer::new(
        "node-a".into(),
        health.clone(),
        None,
        Some(ns.path()),
        token.clone(),
    ));
    let mut proxier = Proxier::new(
        &config,
        "node-a".into(),
        NetCommand::in_netns(&ns.path()),
        nodes,
        services.clone(),
        slices.clone(),
        metrics,
        health.clone(),
    )
    .with_service_health(servers.clone());

    // The only endpoint runs on another node: this node fails the check.
    assert!(proxier.sync(SyncReason::Initial).await);
    let (code, body) = http_get_in(&ns, 32100).expect("health check port open");
    assert_eq!(code, 503, "{body}");
    assert_eq!(
        body,
        r#"{"service":{"namespace":"ns1","name":"web"},"localEndpoints":0,"serviceProxyHealthy":true}"#
    );

    // The endpoint moves here: 200.
    slices.apply(&Event::Apply(slice_on("node-a")));
    assert!(proxier.sync(SyncReason::Change).await);
    let (code, body) = http_get_in(&ns, 32100).expect("health check port open");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(r#""localEndpoints":1"#), "{body}");

    // Cluster policy: no health check any more, the port is closed.
    services.apply(&Event::Apply(lb_service("Cluster")));
    assert!(proxier.sync(SyncReason::Change).await);
    assert!(servers.ports().is_empty());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match http_get_in(&ns, 32100) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            other => assert!(
                std::time::Instant::now() < deadline,
                "port still answers: {other:?}"
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    token.cancel();
    servers.shutdown().await;
}

//! `oxlet proxy` end to end, the behaviours that need a running proxy over time, in both modes:
//! an established connection survives a proxy restart (whose first sync recreates every rule),
//! a UDP flow follows its Service to a new backend (stale conntrack entries deleted), the
//! healthCheckNodePort of a Local LoadBalancer Service answers from outside the node by local
//! endpoints, and `--cleanup` leaves nothing in either family. Real binary against
//! `oxlet server`, rules inside the test's "node" namespace (see `proxy_support`).

mod proxy_support;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};
use oxlet_e2e::netns_traffic::UdpClient;
use oxlet_e2e::server::{Backend, TestServer};
use proxy_support::*;
use serde_json::{json, Value};

const ECHO: (&str, u16, &str) = ("echo", ECHO_PORT, "TCP");
const DNS: (&str, u16, &str) = ("dns", UDP_PORT, "UDP");
const WEB: (&str, u16, &str) = ("http", NAME_PORT, "TCP");
const HEALTH_PORT: u16 = 32555;

async fn create_service(api: &Api<Service>, spec: Value) -> Result<Service> {
    Ok(api
        .create(&PostParams::default(), &serde_json::from_value(spec)?)
        .await?)
}

fn cluster_addr(svc: &Service, port: u16) -> Result<SocketAddr> {
    let ip: IpAddr = svc
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .context("clusterIP")?
        .parse()?;
    Ok(SocketAddr::new(ip, port))
}

/// Polls `f` (an unavoidable poll on traffic or an HTTP port) until it returns `Some`.
fn until<T>(what: &str, mut f: impl FnMut() -> Result<Option<T>, String>) -> Result<T> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::from("never ran");
    while Instant::now() < deadline {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("{what}: not reached within 30s; last: {last}")
}

/// The health check as a load balancer sees it: from the client namespace, on the node's
/// address.
fn health(client: &oxlet_e2e::netns::Netns, port: u16, want_code: u16) -> Result<Value> {
    let addr = format!("{NODE_IP}:{port}");
    until(&format!("health check {want_code}"), || {
        let addr = addr.clone();
        let got = client
            .run_in(move || http_get(&addr, "/"))
            .map_err(|e| e.to_string())?;
        match got {
            Ok((code, body)) if code == want_code => serde_json::from_str(&body)
                .map(Some)
                .map_err(|e| format!("{e}: {body}")),
            Ok((code, body)) => Err(format!("{code} {body}")),
            Err(e) => Err(e.to_string()),
        }
    })
}

async fn scenario(mode: &str) -> Result<()> {
    let topo = Topology::new()?;
    let server = TestServer::start(Path::new(BIN), Backend::Sqlite, &[])?;
    let client = client_for(&server).await?;
    let dir = TempDir::new(&format!("traffic-{mode}"))?;
    create_node(&client).await?;

    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let echo = create_service(
        &services,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo"},
               "spec": {"ports": [{"name": "echo", "port": 9090, "protocol": "TCP"}]}}),
    )
    .await?;
    let dns = create_service(
        &services,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "dns"},
               "spec": {"ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}}),
    )
    .await?;
    create_service(
        &services,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lb"},
               "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                        "healthCheckNodePort": HEALTH_PORT,
                        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}),
    )
    .await?;
    for s in [
        slice("echo", ECHO, &[(B1, "node-b"), (B2, "node-b")])?,
        slice("dns", DNS, &[(B1, "node-b")])?,
        slice("lb", WEB, &[(B1, "node-b")])?,
    ] {
        slices.create(&PostParams::default(), &s).await?;
    }
    let echo_addr = cluster_addr(&echo, 9090)?;
    let dns_addr = cluster_addr(&dns, 53)?;

    let netns = topo.node.path();
    let args = proxy_args(dir.path(), &server, mode, &netns)?;
    let mut proxy = Proxy::start(dir.path(), &args)?;
    proxy.wait_healthy()?;

    // healthCheckNodePort: the only endpoint is on another node, so this node says 503…
    let body = health(&topo.client, HEALTH_PORT, 503)?;
    ensure!(
        body == json!({"service": {"namespace": "default", "name": "lb"},
                       "localEndpoints": 0, "serviceProxyHealthy": true}),
        "{body}"
    );
    // …and 200 once an endpoint runs here.
    replace_slice(&slices, "lb", WEB, &[(B1, "node-a"), (B2, "node-b")]).await?;
    let body = health(&topo.client, HEALTH_PORT, 200)?;
    ensure!(body["localEndpoints"] == 1, "{body}");

    // A UDP flow (fixed client port) reaches b1; when the Service moves to b2, the proxy
    // deletes the flow's conntrack entry and the same flow reaches b2.
    let udp = UdpClient::bind(&topo.client, format!("{CLIENT_IP}:4053").parse()?)?;
    until("UDP to b1", || match udp.ask(dns_addr) {
        Ok(Some(a)) if a == "b1" => Ok(Some(())),
        other => Err(format!("{other:?}")),
    })?;
    replace_slice(&slices, "dns", DNS, &[(B2, "node-b")]).await?;
    until("the same UDP flow to b2", || match udp.ask(dns_addr) {
        Ok(Some(a)) if a == "b2" => Ok(Some(())),
        other => Err(format!("{other:?}")),
    })?;

    // An established connection survives the proxy's exit and a restart, whose first sync
    // rewrites every rule (nftables: the table is deleted and recreated).
    let mut conn = EchoConn::open(&topo.client, echo_addr)?;
    let first = conn.say("one")?;
    let backend = first.split(':').next().unwrap_or_default().to_string();
    ensure!(backend == "b1" || backend == "b2", "{first}");
    let log = proxy.stop()?;
    ensure!(log.contains("synced proxy rules"), "{log}");
    ensure!(conn.say("two")? == format!("{backend}: two"));
    let mut proxy = Proxy::start(dir.path(), &args)?;
    proxy.wait_healthy()?;
    ensure!(
        proxy.log().contains("full=true"),
        "the restarted proxy's first sync is full:\n{}",
        proxy.log()
    );
    ensure!(conn.say("three")? == format!("{backend}: three"));
    // New connections still work, and the restarted proxy serves the health check again.
    let other = EchoConn::open(&topo.client, echo_addr)?.say("new")?;
    ensure!(
        other.starts_with("b1:") || other.starts_with("b2:"),
        "{other}"
    );
    health(&topo.client, HEALTH_PORT, 200)?;
    proxy.stop()?;

    // --cleanup leaves nothing in either family.
    cleanup_leaves_nothing(&topo.node, &["iptables-save", "ip6tables-save"])?;
    // Nothing answers the ClusterIP any more (the health check port closed with the proxy).
    let after = EchoConn::open(&topo.client, echo_addr);
    ensure!(after.is_err(), "traffic still proxied after cleanup");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_traffic_nftables() -> Result<()> {
    scenario("nftables").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_traffic_iptables() -> Result<()> {
    scenario("iptables").await
}

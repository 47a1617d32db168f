//! `oxlet proxy` end to end: the real binary against `oxlet server`, programming rules inside a
//! "node" network namespace wired by veths to two backend namespaces and a client namespace,
//! checked with real TCP traffic, in both modes. Nothing touches the host's ruleset: the proxy
//! always runs with `--netns`.
//!
//! Address plan: backends 10.244.1.2 and 10.244.2.2 (node side .1), client 192.168.50.2,
//! node 192.168.50.1 (its InternalIP); ClusterIPs come from the server's 10.43.0.0/16.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use oxlet_e2e::netns::Netns;
use oxlet_e2e::server::{Backend, TestServer};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_oxlet");
const NODE_IP: &str = "192.168.50.1";
const B1: &str = "10.244.1.2";
const B2: &str = "10.244.2.2";

/// A directory for configs and logs, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Result<Self> {
        let p = std::env::temp_dir().join(format!("oxt-proxy-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&p)?;
        Ok(Self(p))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The namespaces of one test and the backends' listeners.
struct Topology {
    node: Netns,
    client: Netns,
    _backends: Vec<Netns>,
}

fn wire(node: &Netns, peer: &Netns, node_if: &str, node_ip: &str, peer_ip: &str) -> Result<()> {
    node.exec([
        "ip",
        "link",
        "add",
        node_if,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        peer.name(),
    ])?;
    node.exec([
        "ip",
        "addr",
        "add",
        &format!("{node_ip}/24"),
        "dev",
        node_if,
    ])?;
    node.exec(["ip", "link", "set", node_if, "up"])?;
    peer.exec(["ip", "addr", "add", &format!("{peer_ip}/24"), "dev", "eth0"])?;
    peer.exec(["ip", "link", "set", "eth0", "up"])?;
    peer.exec(["ip", "route", "add", "default", "via", node_ip])?;
    Ok(())
}

/// A TCP server in `ns` answering every connection with `name` and closing.
fn serve_name(ns: &Netns, name: &'static str) -> Result<()> {
    let listener = ns.run_in(|| TcpListener::bind("0.0.0.0:8080"))??;
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let _ = conn.write_all(name.as_bytes());
        }
    });
    Ok(())
}

impl Topology {
    fn new() -> Result<Self> {
        let node = Netns::new("pxn")?;
        let b1 = Netns::new("pxb")?;
        let b2 = Netns::new("pxb")?;
        let client = Netns::new("pxc")?;
        wire(&node, &b1, "vb1", "10.244.1.1", B1)?;
        wire(&node, &b2, "vb2", "10.244.2.1", B2)?;
        wire(&node, &client, "vc", NODE_IP, "192.168.50.2")?;
        node.exec(["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        // A route for ClusterIPs, as a real node's default route: without one, connect()
        // fails before the nat hook sees the packet. Unproxied traffic goes to the client
        // namespace, which listens on nothing.
        node.exec(["ip", "route", "add", "default", "via", "192.168.50.2"])?;
        serve_name(&b1, "b1")?;
        serve_name(&b2, "b2")?;
        Ok(Self {
            node,
            client,
            _backends: vec![b1, b2],
        })
    }
}

/// One TCP exchange from inside `ns`: the backend's name, or the connect error.
fn fetch(ns: &Netns, addr: SocketAddr) -> Result<std::io::Result<String>> {
    ns.run_in(move || -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
}

/// Polls until `ok` holds for the set of answers of `tries` fetches, or fails with the last.
fn wait_answers(
    ns: &Netns,
    addr: SocketAddr,
    tries: usize,
    what: &str,
    ok: impl Fn(&[String]) -> bool,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = Vec::new();
    while Instant::now() < deadline {
        last.clear();
        for _ in 0..tries {
            last.push(match fetch(ns, addr)? {
                Ok(s) => s,
                Err(e) => format!("error: {e}"),
            });
        }
        if ok(&last) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("{what}: not reached within 30s; last answers {last:?}")
}

fn free_addr() -> Result<String> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.to_string())
}

/// A running `oxlet proxy` with its log file.
struct Proxy {
    child: Child,
    log: PathBuf,
    healthz: String,
    metrics: String,
}

impl Proxy {
    fn start(dir: &Path, args: &[String]) -> Result<Self> {
        let healthz = free_addr()?;
        let metrics = free_addr()?;
        let log = dir.join(format!("proxy-{}.log", healthz.replace(':', "_")));
        let f = std::fs::File::create(&log)?;
        let child = Command::new(BIN)
            .arg("proxy")
            .args(args)
            .args([
                "--healthz-bind-address",
                &healthz,
                "--metrics-bind-address",
                &metrics,
            ])
            .env("RUST_LOG", "info,oxlet_netrules=debug")
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .spawn()?;
        Ok(Self {
            child,
            log,
            healthz,
            metrics,
        })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for /healthz to answer 200 (the first sync succeeded).
    fn wait_healthy(&mut self) -> Result<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("proxy exited ({status}):\n{}", self.log());
            }
            match http_get(&self.healthz, "/healthz") {
                Ok((200, body)) => return Ok(body),
                Ok((code, body)) => last = format!("{code} {body}"),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("proxy not healthy after 30s: {last}\n{}", self.log())
    }

    fn stop(mut self) -> Result<String> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status()?;
        if !sent.success() {
            bail!("kill -TERM {pid}: {sent}");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("proxy exited with {status}:\n{}", self.log());
                }
                return Ok(self.log());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("proxy ignored SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.0 GET on loopback: (status, body).
fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status line")?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((code, body.to_string()))
}

async fn client_for(server: &TestServer) -> Result<Client> {
    let kc = Kubeconfig::read_from(server.kubeconfig())?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

fn slice(endpoints: &[(&str, &str)]) -> Result<EndpointSlice> {
    let eps: Vec<_> = endpoints
        .iter()
        .map(|(ip, node)| json!({"addresses": [ip], "conditions": {"ready": true}, "nodeName": node}))
        .collect();
    Ok(serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "echo-1",
            "namespace": "default",
            "labels": {
                "kubernetes.io/service-name": "echo",
                "endpointslice.kubernetes.io/managed-by": "oxlet-proxy-test"
            }
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": eps,
    }))?)
}

async fn replace_slice(api: &Api<EndpointSlice>, endpoints: &[(&str, &str)]) -> Result<()> {
    let current = api.get("echo-1").await?;
    let mut next = slice(endpoints)?;
    next.metadata.resource_version = current.metadata.resource_version;
    api.replace("echo-1", &PostParams::default(), &next).await?;
    Ok(())
}

async fn scenario(mode: &str) -> Result<()> {
    let topo = Topology::new()?;
    let server = TestServer::start(Path::new(BIN), Backend::Sqlite, &[])?;
    let client = client_for(&server).await?;
    let dir = TempDir::new(mode)?;

    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": "node-a"},
            }))?,
        )
        .await?;
    let status = json!({"status": {"addresses": [{"type": "InternalIP", "address": NODE_IP}]}});
    nodes
        .patch_status(
            "node-a",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&status),
        )
        .await?;
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
            &slice(&[(B1, "node-a"), (B2, "node-b")])?,
        )
        .await?;

    // Periods short enough that the periodic repair happens within the test.
    let config = dir.path().join("kube-proxy.yaml");
    std::fs::write(
        &config,
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
         mode: iptables\nclusterCIDR: 10.244.0.0/16\n\
         nftables:\n  syncPeriod: 2s\n  minSyncPeriod: 100ms\n\
         iptables:\n  syncPeriod: 2s\n  minSyncPeriod: 100ms\n",
    )?;
    let netns = topo.node.path();
    let kubeconfig = server.kubeconfig().display().to_string();
    let args: Vec<String> = [
        "--config",
        &config.display().to_string(),
        "--kubeconfig",
        &kubeconfig,
        "--proxy-mode",
        mode,
        "--netns",
        &netns,
        "--hostname-override",
        "node-a",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
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
    replace_slice(&slices, &[(B1, "node-a")]).await?;
    wait_answers(&topo.node, cluster, 20, "only b1 after removing b2", |a| {
        a.iter().all(|s| s == "b1")
    })?;

    // No endpoints: connections are refused at once instead of timing out.
    replace_slice(&slices, &[]).await?;
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

    replace_slice(&slices, &[(B1, "node-a"), (B2, "node-b")]).await?;
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
    replace_slice(&slices, &[(B2, "node-b")]).await?;
    wait_answers(&topo.node, cluster, 20, "only b2 after restart", |a| {
        a.iter().all(|s| s == "b2")
    })?;
    proxy.stop()?;

    // --cleanup removes everything, in both modes.
    let out = Command::new(BIN)
        .args(["proxy", "--cleanup", "--netns", &netns])
        .output()?;
    assert!(
        out.status.success(),
        "cleanup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tables = topo.node.exec(["nft", "list", "tables"])?;
    assert!(!tables.contains("oxlet"), "{tables}");
    let saved = topo.node.exec(["iptables-save"])?;
    assert!(!saved.contains("OXLET"), "{saved}");
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

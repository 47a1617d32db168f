//! Shared by the `oxlet proxy` end-to-end tests: a "node" network namespace wired by veths
//! to two backend namespaces and a client namespace, backends serving TCP and UDP, the real
//! `oxlet proxy` binary with its log, and API helpers. The proxy always runs with `--netns`:
//! nothing touches the host's ruleset.
//!
//! Address plan: backends 10.244.1.2 and 10.244.2.2 (node side .1), client 192.168.50.2,
//! node 192.168.50.1 (its InternalIP); ClusterIPs come from the server's 10.43.0.0/16.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use oxlet_e2e::netns::Netns;
use oxlet_e2e::netns_traffic::{
    addrs_up, default_routes, echo_lines, http_get_raw, http_status, read_answer, veth,
};
use oxlet_e2e::server::TestServer;
use serde_json::json;

pub const BIN: &str = env!("CARGO_BIN_EXE_oxlet");
pub const NODE_IP: &str = "192.168.50.1";
pub const CLIENT_IP: &str = "192.168.50.2";
pub const B1: &str = "10.244.1.2";
pub const B2: &str = "10.244.2.2";
/// Backends answer their name on this TCP port and close.
pub const NAME_PORT: u16 = 8080;
/// Backends echo lines as `<name>: <line>` on this TCP port.
pub const ECHO_PORT: u16 = 9090;
/// Backends answer each datagram with their name on this UDP port.
pub const UDP_PORT: u16 = 5353;

/// A directory for configs and logs, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Result<Self> {
        let p = std::env::temp_dir().join(format!("oxt-proxy-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&p)?;
        Ok(Self(p))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The namespaces of one test (the backends' servers live as long as the process).
pub struct Topology {
    pub node: Netns,
    pub client: Netns,
    pub backends: Vec<Netns>,
}

fn wire(node: &Netns, peer: &Netns, node_if: &str, node_ip: &str, peer_ip: &str) -> Result<()> {
    veth(node, node_if, peer)?;
    addrs_up(node, node_if, &[format!("{node_ip}/24")])?;
    addrs_up(peer, "eth0", &[format!("{peer_ip}/24")])?;
    default_routes(peer, &[node_ip])
}

/// TCP name, TCP echo and UDP name servers of backend `name` in `ns`, on threads that end
/// with the test process (their sockets keep the namespace alive until then).
fn serve(ns: &Netns, name: &'static str) -> Result<()> {
    let (names, echo, udp) = ns.run_in(|| -> std::io::Result<_> {
        Ok((
            TcpListener::bind(("0.0.0.0", NAME_PORT))?,
            TcpListener::bind(("0.0.0.0", ECHO_PORT))?,
            UdpSocket::bind(("0.0.0.0", UDP_PORT))?,
        ))
    })??;
    std::thread::spawn(move || {
        for mut conn in names.incoming().flatten() {
            let _ = conn.write_all(name.as_bytes());
        }
    });
    std::thread::spawn(move || {
        for conn in echo.incoming().flatten() {
            std::thread::spawn(move || echo_lines(name, conn));
        }
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((_, from)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(name.as_bytes(), from);
        }
    });
    Ok(())
}

impl Topology {
    pub fn new() -> Result<Self> {
        let node = Netns::new("pxn")?;
        let b1 = Netns::new("pxb")?;
        let b2 = Netns::new("pxb")?;
        let client = Netns::new("pxc")?;
        wire(&node, &b1, "vb1", "10.244.1.1", B1)?;
        wire(&node, &b2, "vb2", "10.244.2.1", B2)?;
        wire(&node, &client, "vc", NODE_IP, CLIENT_IP)?;
        node.exec(["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        // A route for ClusterIPs, as a real node's default route: without one, connect()
        // fails before the nat hook sees the packet. Unproxied traffic goes to the client
        // namespace, which listens on nothing.
        default_routes(&node, &[CLIENT_IP])?;
        serve(&b1, "b1")?;
        serve(&b2, "b2")?;
        Ok(Self {
            node,
            client,
            backends: vec![b1, b2],
        })
    }
}

/// One TCP exchange from inside `ns`: the backend's name, or the connect error.
pub fn fetch(ns: &Netns, addr: SocketAddr) -> Result<std::io::Result<String>> {
    ns.run_in(move || read_answer(addr, Duration::from_secs(2)))
}

/// Polls until `ok` holds for the set of answers of `tries` fetches, or fails with the last.
pub fn wait_answers(
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

/// An established TCP connection to an echo port, opened from inside a namespace.
pub struct EchoConn {
    conn: TcpStream,
    reader: BufReader<TcpStream>,
}

impl EchoConn {
    pub fn open(ns: &Netns, addr: SocketAddr) -> Result<Self> {
        let conn =
            ns.run_in(move || TcpStream::connect_timeout(&addr, Duration::from_secs(2)))??;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        let reader = BufReader::new(conn.try_clone()?);
        Ok(Self { conn, reader })
    }

    /// Sends `line`, returns the answer (`<backend>: <line>`).
    pub fn say(&mut self, line: &str) -> Result<String> {
        self.conn.write_all(format!("{line}\n").as_bytes())?;
        let mut answer = String::new();
        self.reader.read_line(&mut answer)?;
        Ok(answer.trim_end().to_string())
    }
}

pub fn free_addr() -> Result<String> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.to_string())
}

/// A running `oxlet proxy` with its log file.
pub struct Proxy {
    child: Child,
    log: PathBuf,
    pub healthz: String,
    pub metrics: String,
}

impl Proxy {
    pub fn start(dir: &Path, args: &[String]) -> Result<Self> {
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
            .env("NO_COLOR", "1")
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

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for /healthz to answer 200 (the first sync succeeded).
    pub fn wait_healthy(&mut self) -> Result<String> {
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

    /// Stops the proxy with SIGTERM and waits for a clean exit; returns its log.
    pub fn stop(mut self) -> Result<String> {
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

/// A minimal HTTP/1.0 GET: (status, body).
pub fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    let out = http_get_raw(addr, addr, path)?;
    let code = http_status(&out).context("no status line")?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((code, body.to_string()))
}

pub async fn client_for(server: &TestServer) -> Result<Client> {
    let kc = Kubeconfig::read_from(server.kubeconfig())?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// Runs `oxlet proxy --cleanup` on `node`, then checks that no `oxlet` nft table is left and
/// no `OXLET` chain in the output of each of `saves` (`iptables-save`, `ip6tables-save`).
pub fn cleanup_leaves_nothing(node: &Netns, saves: &[&str]) -> Result<()> {
    let out = Command::new(BIN)
        .args(["proxy", "--cleanup", "--netns", &node.path()])
        .output()?;
    ensure!(
        out.status.success(),
        "cleanup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tables = node.exec(["nft", "list", "tables"])?;
    ensure!(!tables.contains("oxlet"), "{tables}");
    for tool in saves {
        let saved = node.exec([tool])?;
        ensure!(!saved.contains("OXLET"), "{tool}:\n{saved}");
    }
    Ok(())
}

/// Creates Node `node-a` with InternalIP [`NODE_IP`].
pub async fn create_node(client: &Client) -> Result<()> {
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
    Ok(())
}

/// An EndpointSlice `<service>-1` of `service` with one port and ready `endpoints`
/// (address, node name), as the EndpointSlice controller would write it.
pub fn slice(
    service: &str,
    port: (&str, u16, &str),
    endpoints: &[(&str, &str)],
) -> Result<EndpointSlice> {
    let eps: Vec<_> = endpoints
        .iter()
        .map(|(ip, node)| json!({"addresses": [ip], "conditions": {"ready": true}, "nodeName": node}))
        .collect();
    Ok(serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{service}-1"),
            "namespace": "default",
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "oxlet-proxy-test"
            }
        },
        "addressType": "IPv4",
        "ports": [{"name": port.0, "port": port.1, "protocol": port.2}],
        "endpoints": eps,
    }))?)
}

/// Replaces `<service>-1` with a slice of `endpoints`.
pub async fn replace_slice(
    api: &Api<EndpointSlice>,
    service: &str,
    port: (&str, u16, &str),
    endpoints: &[(&str, &str)],
) -> Result<()> {
    let name = format!("{service}-1");
    let current = api.get(&name).await?;
    let mut next = slice(service, port, endpoints)?;
    next.metadata.resource_version = current.metadata.resource_version;
    api.replace(&name, &PostParams::default(), &next).await?;
    Ok(())
}

/// The common `oxlet proxy` arguments: config file with short periods, the server's
/// kubeconfig, the mode, the node's netns, node name `node-a`.
pub fn proxy_args(dir: &Path, server: &TestServer, mode: &str, netns: &str) -> Result<Vec<String>> {
    // Periods short enough that the periodic repair happens within a test.
    let config = dir.join("kube-proxy.yaml");
    std::fs::write(
        &config,
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
         mode: iptables\nclusterCIDR: 10.244.0.0/16\n\
         nftables:\n  syncPeriod: 2s\n  minSyncPeriod: 100ms\n\
         iptables:\n  syncPeriod: 2s\n  minSyncPeriod: 100ms\n",
    )?;
    Ok([
        "--config",
        &config.display().to_string(),
        "--kubeconfig",
        &server.kubeconfig().display().to_string(),
        "--proxy-mode",
        mode,
        "--netns",
        netns,
        "--hostname-override",
        "node-a",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect())
}

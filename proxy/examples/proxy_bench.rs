//! Benchmark of the service proxy (not a test): for N services × 5 endpoints, in nftables and
//! iptables mode, the time of a full sync (compute and apply), of a one-service change with
//! all N present, the rule count, and the connect latency to the first and the last service;
//! then the RSS of a real `oxlet proxy` watching 10k Services through `oxlet server`.
//!
//! Everything programs rules inside network namespaces it creates ("node", "client",
//! "backend"); the host's ruleset is never touched.
//!
//! ```text
//! cargo build --release --bin oxlet
//! cargo run --release -p oxlet-proxy --example proxy-bench -- [--counts 1000,10000,30000]
//!     [--modes nftables,iptables] [--samples 300] [--rss-services 10000] [--oxlet PATH]
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher::Event;
use oxlet_e2e::netns::Netns;
use oxlet_e2e::netns_traffic::{addrs_up, default_routes, read_answer, veth};
use oxlet_netrules::apply::Command as NetCommand;
use oxlet_netrules::{Family, Model};
use oxlet_proxy::config::{Config, KubeProxyConfiguration};
use oxlet_proxy::endpoints_change_tracker::EndpointsChangeTracker;
use oxlet_proxy::healthz::ProxyHealth;
use oxlet_proxy::metrics::Metrics;
use oxlet_proxy::proxier::Proxier;
use oxlet_proxy::service_change_tracker::ServiceChangeTracker;
use oxlet_proxy::sync_runner::SyncReason;
use prometheus_client::registry::Registry;
use serde_json::json;

/// Endpoints per service.
const ENDPOINTS: usize = 5;
/// The node's pod CIDR (the backends' addresses are inside it).
const POD_CIDR: &str = "10.0.0.0/8";
/// Where the real backends live: five addresses on one veth, one server on each.
const BACKEND_NET: [u8; 3] = [10, 0, 1];
/// Partial syncs measured per size (median reported).
const PARTIAL_RUNS: usize = 9;

struct Args {
    counts: Vec<usize>,
    modes: Vec<String>,
    samples: usize,
    rss_services: usize,
    oxlet: PathBuf,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        counts: vec![1000, 10_000, 30_000],
        modes: vec!["nftables".into(), "iptables".into()],
        samples: 300,
        rss_services: 10_000,
        oxlet: Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/oxlet"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--counts" => {
                args.counts = value()?
                    .split(',')
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| s.trim().parse())
                    .collect::<Result<_, _>>()?
            }
            "--modes" => args.modes = value()?.split(',').map(str::to_owned).collect(),
            "--samples" => args.samples = value()?.parse()?,
            "--rss-services" => args.rss_services = value()?.parse()?,
            "--oxlet" => args.oxlet = value()?.into(),
            other => bail!("unknown argument {other}"),
        }
    }
    for m in &args.modes {
        ensure!(m == "nftables" || m == "iptables", "unknown mode {m}");
    }
    Ok(args)
}

/// The ClusterIP of service `i` (10.96.0.0/12 has room for a million).
fn cluster_ip(i: usize) -> Ipv4Addr {
    let n = u32::from(Ipv4Addr::new(10, 96, 0, 10)) + i as u32;
    Ipv4Addr::from(n)
}

/// Endpoint `j` of service `i`: the real backends for the first and the last service, unique
/// (unreachable, never connected to) pod addresses for the others.
fn endpoint_ip(i: usize, j: usize, last: usize) -> Ipv4Addr {
    if i == 0 || i == last {
        let [a, b, c] = BACKEND_NET;
        return Ipv4Addr::new(a, b, c, 2 + j as u8);
    }
    let n = u32::from(Ipv4Addr::new(10, 128, 0, 0)) + (i * ENDPOINTS + j) as u32;
    Ipv4Addr::from(n)
}

fn service(i: usize) -> Result<Service> {
    Ok(serde_json::from_value(json!({
        "metadata": {"namespace": "bench", "name": format!("svc-{i:05}")},
        "spec": {"type": "ClusterIP", "clusterIP": cluster_ip(i).to_string(),
                 "clusterIPs": [cluster_ip(i).to_string()],
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]},
    }))?)
}

fn slice(i: usize, last: usize, endpoints: usize) -> Result<EndpointSlice> {
    let eps: Vec<_> = (0..endpoints)
        .map(|j| {
            json!({"addresses": [endpoint_ip(i, j, last).to_string()],
                   "conditions": {"ready": true}, "nodeName": "node-b"})
        })
        .collect();
    Ok(serde_json::from_value(json!({
        "metadata": {"namespace": "bench", "name": format!("svc-{i:05}-abcde"),
                     "labels": {"kubernetes.io/service-name": format!("svc-{i:05}")}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": eps,
    }))?)
}

/// client (192.168.0.2) ⇄ node (192.168.0.1 | 10.0.1.1) ⇄ backend (10.0.1.2-6, one server
/// answering on every address).
struct Topology {
    node: Netns,
    client: Netns,
    _backend: Netns,
}

fn sh(ns: &Netns, argv: &[&str]) -> Result<String> {
    ns.exec(argv.iter().copied())
}

impl Topology {
    fn new() -> Result<Self> {
        let node = Netns::new("pbn")?;
        let client = Netns::new("pbc")?;
        let backend = Netns::new("pbb")?;
        sh(&node, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        for (peer, ifname, net) in [(&client, "vc", "192.168.0"), (&backend, "vb", "10.0.1")] {
            veth(&node, ifname, peer)?;
            addrs_up(&node, ifname, &[format!("{net}.1/24")])?;
            let hosts = if ifname == "vc" { 1 } else { ENDPOINTS };
            let peer_addrs: Vec<String> =
                (0..hosts).map(|j| format!("{net}.{}/24", 2 + j)).collect();
            addrs_up(peer, "eth0", &peer_addrs)?;
            default_routes(peer, &[format!("{net}.1")])?;
        }
        // Service addresses route toward the client (a real node's default route): only
        // the rules make them answer.
        default_routes(&node, &["192.168.0.2"])?;
        let listener = backend.run_in(|| TcpListener::bind("0.0.0.0:8080"))??;
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let _ = conn.write_all(b"ok");
            }
        });
        Ok(Self {
            node,
            client,
            _backend: backend,
        })
    }
}

fn config(mode: &str) -> Result<Config> {
    let mut file = KubeProxyConfiguration {
        mode: Some(mode.into()),
        cluster_cidr: Some(POD_CIDR.into()),
        ..Default::default()
    };
    file.set_defaults();
    Ok(file.validate()?)
}

/// Results for one mode and size.
#[derive(Debug, Default, Clone)]
struct Run {
    full_compute: Duration,
    full_total: Duration,
    partial_compute: Duration,
    partial_total: Duration,
    rules: usize,
    elements: usize,
    chains: usize,
    first: Latency,
    last: Latency,
}

#[derive(Debug, Default, Clone, Copy)]
struct Latency {
    p50: Duration,
    p99: Duration,
}

fn latency(mut v: Vec<Duration>) -> Latency {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    Latency {
        p50: at(0.5),
        p99: at(0.99),
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Connects `samples` times to each of `a` and `b`, alternating, and times connect + answer.
fn connect_latency(
    ns: &Netns,
    a: SocketAddr,
    b: SocketAddr,
    samples: usize,
) -> Result<(Latency, Latency)> {
    let (ta, tb) = ns.run_in(move || -> Result<(Vec<Duration>, Vec<Duration>)> {
        let once = |to: SocketAddr| -> Result<Duration> {
            let start = Instant::now();
            let buf =
                read_answer(to, Duration::from_secs(2)).with_context(|| format!("connect {to}"))?;
            ensure!(buf == "ok", "{to} answered {buf:?}");
            Ok(start.elapsed())
        };
        // Warm up both paths (ARP, conntrack tables, caches).
        for _ in 0..20 {
            once(a)?;
            once(b)?;
        }
        let (mut ta, mut tb) = (Vec::new(), Vec::new());
        for _ in 0..samples {
            ta.push(once(a)?);
            tb.push(once(b)?);
        }
        Ok((ta, tb))
    })??;
    Ok((latency(ta), latency(tb)))
}

/// Rendering alone, from the proxier's model: the text of a full sync (nft) or of the
/// iptables-restore input, without running any tool.
fn render_only(mode: &str, model: &Model) -> Duration {
    let started = Instant::now();
    let bytes = if mode == "nftables" {
        oxlet_netrules::nft::full_sync(&oxlet_netrules::nft::render(model, Family::V4))
            .to_nft_script()
            .len()
    } else {
        oxlet_netrules::iptables::render(model, Family::V4)
            .to_restore(None)
            .len()
    };
    let elapsed = started.elapsed();
    std::hint::black_box(bytes);
    elapsed
}

async fn run_rules(mode: &str, n: usize, samples: usize) -> Result<Run> {
    let topo = Topology::new()?;
    let last = n - 1;
    let services = Arc::new(ServiceChangeTracker::new());
    let slices = Arc::new(EndpointsChangeTracker::new("node-a"));
    let (nodes, _node_writer): (_, Writer<Node>) = reflector::store();
    for i in 0..n {
        services.apply(&Event::Apply(service(i)?));
        slices.apply(&Event::Apply(slice(i, last, ENDPOINTS)?));
    }
    let config = config(mode)?;
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let health = Arc::new(ProxyHealth::new(config.sync_period * 2));
    let mut proxier = Proxier::new(
        &config,
        "node-a".into(),
        NetCommand::in_netns(&topo.node.path()),
        nodes,
        services.clone(),
        slices.clone(),
        metrics,
        health,
    );
    let mut run = Run::default();

    // Full sync: the proxier's whole sync (model from the trackers, render, apply).
    ensure!(proxier.sync(SyncReason::Initial).await, "full sync failed");
    run.full_total = proxier.last_sync().total;
    let model = proxier.model().context("model after a sync")?.clone();
    run.full_compute = render_only(mode, &model);
    if mode == "nftables" {
        let r = oxlet_netrules::nft::render(&model, Family::V4);
        run.chains = r.chain_names().len();
        run.rules = r
            .base_chains
            .iter()
            .chain(r.services.values().flat_map(|s| s.chains.iter()))
            .map(|c| c.rules.len())
            .sum();
        run.elements =
            r.base_elements.len() + r.services.values().map(|s| s.elements.len()).sum::<usize>();
    } else {
        let r = oxlet_netrules::iptables::render(&model, Family::V4);
        run.chains = r.filter.chains.len() + r.nat.chains.len();
        run.rules = r.filter.rules.len() + r.nat.rules.len();
    }
    drop(model);

    // One service changes (an endpoint goes, then comes back), all others present.
    let target = n / 2;
    let (mut computes, mut totals) = (Vec::new(), Vec::new());
    for k in 0..PARTIAL_RUNS {
        let endpoints = if k % 2 == 0 { ENDPOINTS - 1 } else { ENDPOINTS };
        slices.apply(&Event::Apply(slice(target, last, endpoints)?));
        ensure!(
            proxier.sync(SyncReason::Change).await,
            "partial sync failed"
        );
        let stats = proxier.last_sync();
        ensure!(stats.changed_ports == 1, "{stats:?}");
        computes.push(stats.total - stats.apply);
        totals.push(stats.total);
    }
    run.partial_compute = median(computes);
    run.partial_total = median(totals);

    let first = SocketAddr::new(cluster_ip(0).into(), 80);
    let lastaddr = SocketAddr::new(cluster_ip(last).into(), 80);
    let (a, b) = connect_latency(&topo.client, first, lastaddr, samples)?;
    run.first = a;
    run.last = b;
    Ok(run)
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else if ms >= 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

/// `VmRSS` and `VmHWM` of `pid` in KiB.
fn rss(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{name} missing"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

struct RssRun {
    services: usize,
    create_secs: f64,
    first_sync: Duration,
    rss_kib: u64,
    hwm_kib: u64,
    idle_rss_kib: u64,
}

/// Creates `n` Services and their EndpointSlices in a fresh `oxlet server`, runs the real
/// `oxlet proxy` (nftables, in a private netns) until it has programmed them all, and reads
/// its memory.
async fn run_rss(oxlet: &Path, n: usize) -> Result<RssRun> {
    use futures::StreamExt;
    use kube::api::{Api, PostParams};
    let server =
        oxlet_e2e::server::TestServer::start(oxlet, oxlet_e2e::server::Backend::Sqlite, &[])?;
    let kc = kube::config::Kubeconfig::read_from(server.kubeconfig())?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await?;
    let client = kube::Client::try_from(cfg)?;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "bench"}}))?,
        )
        .await?;
    let topo = Topology::new()?;
    let dir = tempfile::tempdir()?;
    let log_path = dir.path().join("proxy.log");

    // The proxy starts first and idles on an empty cluster: its baseline.
    let healthz = free_port()?;
    let mut child = std::process::Command::new(oxlet)
        .args([
            "proxy",
            "--kubeconfig",
            &server.kubeconfig().display().to_string(),
            "--proxy-mode",
            "nftables",
            "--netns",
            &topo.node.path(),
            "--hostname-override",
            "node-a",
            "--cluster-cidr",
            POD_CIDR,
            "--healthz-bind-address",
            &format!("127.0.0.1:{healthz}"),
            "--metrics-bind-address",
            "",
        ])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path)?)
        .spawn()?;
    let pid = child.id();
    let result = async {
        wait_for(Duration::from_secs(60), || {
            Ok(std::fs::read_to_string(&log_path)?.contains("synced proxy rules"))
        })?;
        let (idle_rss_kib, _) = rss(pid)?;

        let services: Api<Service> = Api::namespaced(client.clone(), "bench");
        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "bench");
        let started = Instant::now();
        let last = n - 1;
        let results: Vec<Result<()>> = futures::stream::iter(0..n)
            .map(|i| {
                let (services, slices) = (services.clone(), slices.clone());
                async move {
                    let mut svc = service(i)?;
                    // The server allocates ClusterIPs from its own range.
                    if let Some(spec) = svc.spec.as_mut() {
                        spec.cluster_ip = None;
                        spec.cluster_ips = None;
                    }
                    services.create(&PostParams::default(), &svc).await?;
                    slices
                        .create(&PostParams::default(), &slice(i, last, ENDPOINTS)?)
                        .await?;
                    Ok(())
                }
            })
            .buffer_unordered(32)
            .collect()
            .await;
        for r in results {
            r?;
        }
        let create_secs = started.elapsed().as_secs_f64();
        // Synced when a sync summary reports all n services (plus `default/kubernetes`).
        let started = Instant::now();
        wait_for(Duration::from_secs(600), || {
            let log = std::fs::read_to_string(&log_path)?;
            Ok(log
                .lines()
                .filter(|l| l.contains("synced proxy rules"))
                .filter_map(|l| l.split("services=").nth(1))
                .filter_map(|v| v.split_whitespace().next()?.parse::<usize>().ok())
                .any(|count| count >= n))
        })?;
        let first_sync = started.elapsed();
        let (rss_kib, hwm_kib) = rss(pid)?;
        Ok(RssRun {
            services: n,
            create_secs,
            first_sync,
            rss_kib,
            hwm_kib,
            idle_rss_kib,
        })
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Polls `f` until true; an unavoidable poll on a log file, with a deadline.
fn wait_for(deadline: Duration, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if f()? {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("condition not met within {deadline:?}")
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let load_before = loadavg();
    let mut runs: BTreeMap<(String, usize), Run> = BTreeMap::new();
    for mode in &args.modes {
        for &n in &args.counts {
            eprintln!("{mode} × {n} services …");
            let run = rt.block_on(run_rules(mode, n, args.samples))?;
            eprintln!("  {run:?}");
            runs.insert((mode.clone(), n), run);
        }
    }
    let rss_run = if args.rss_services > 0 {
        ensure!(
            args.oxlet.exists(),
            "{} missing: cargo build --release --bin oxlet, or --oxlet PATH",
            args.oxlet.display()
        );
        eprintln!("RSS of oxlet proxy with {} services …", args.rss_services);
        Some(rt.block_on(run_rss(&args.oxlet, args.rss_services))?)
    } else {
        None
    };
    let load_after = loadavg();

    // The table: one column per mode and size.
    let cols: Vec<&(String, usize)> = runs.keys().collect();
    let mut header = String::from("| measure |");
    let mut sep = String::from("|---|");
    for (mode, n) in &cols {
        header.push_str(&format!(" {mode} {n} |"));
        sep.push_str("---|");
    }
    println!("{header}\n{sep}");
    let row = |name: &str, f: &dyn Fn(&Run) -> String| {
        let mut line = format!("| {name} |");
        for k in &cols {
            line.push_str(&format!(" {} |", f(&runs[*k])));
        }
        println!("{line}");
    };
    row("full sync: model, render and apply", &|r| ms(r.full_total));
    row("full sync: rendering alone, no tool run", &|r| {
        ms(r.full_compute)
    });
    row("one-service change: whole sync (median of 9)", &|r| {
        ms(r.partial_total)
    });
    row("one-service change: sync minus the tool run", &|r| {
        ms(r.partial_compute)
    });
    row("rules (nft: in chains, plus map elements)", &|r| {
        if r.elements > 0 {
            format!("{} + {} elements", r.rules, r.elements)
        } else {
            r.rules.to_string()
        }
    });
    row("chains", &|r| r.chains.to_string());
    row("connect+answer, first service p50 / p99", &|r| {
        format!("{} / {}", us(r.first.p50), us(r.first.p99))
    });
    row("connect+answer, last service p50 / p99", &|r| {
        format!("{} / {}", us(r.last.p50), us(r.last.p99))
    });
    row("last vs first (p50)", &|r| {
        format!(
            "{:+.1}%",
            (r.last.p50.as_secs_f64() / r.first.p50.as_secs_f64() - 1.0) * 100.0
        )
    });
    if let Some(r) = rss_run {
        println!();
        println!("| oxlet proxy (nftables) watching | value |\n|---|---|");
        println!(
            "| idle, empty cluster: RSS | {:.1} MiB |",
            r.idle_rss_kib as f64 / 1024.0
        );
        println!(
            "| {} Services + EndpointSlices created in | {:.1} s |",
            r.services, r.create_secs
        );
        println!(
            "| all {} programmed after the last create | {} |",
            r.services,
            ms(r.first_sync)
        );
        println!(
            "| RSS with {} services (peak) | {:.1} MiB ({:.1} MiB) |",
            r.services,
            r.rss_kib as f64 / 1024.0,
            r.hwm_kib as f64 / 1024.0
        );
    }
    println!();
    println!(
        "samples per latency: {}; load average before: {load_before}; after: {load_after}",
        args.samples
    );
    Ok(())
}

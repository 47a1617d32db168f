//! `controllers_bench`: the bundled scheduler's throughput and the recovery from a lost node,
//! measured against `oxlet server` (each phase in a fresh server) on simulated nodes
//! (`oxlet_e2e::sim_node`), printed as one markdown table (the "Scheduler and controllers"
//! section of docs/benchmarks.md).
//!
//! A command, not a test: it measures and reports, it asserts nothing. Targets are printed
//! next to the numbers; a missed target is a finding, not a failure.
//!
//! ```text
//! cargo build --release --bin oxlet
//! cargo run --release -p oxlet-e2e --bin controllers_bench
//! ```
//!
//! Phases:
//! 1. burst: `--pods` pods are created while no node exists (each is marked Unschedulable),
//!    then `--nodes` nodes register; the time from the first to the last binding gives the
//!    scheduler's binds per second on a full queue (nodes only heartbeat, pods stay Pending).
//! 2. stream: the nodes exist and run pods; `--pods` pods are created 32 at a time; time until
//!    every one is bound, then Running and Ready.
//! 3. node loss: a Deployment of `--pods` replicas over the nodes, with tolerationSeconds
//!    `--toleration` for unreachable/not-ready and `--node-monitor-grace-period` `--grace`;
//!    the busiest node's kubelet stops: time until it is Unknown and tainted, until its pods
//!    are evicted, and from the end of grace period plus toleration (the taint's `timeAdded`
//!    plus `--toleration`) until every replacement is bound, and Running and Ready, elsewhere.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use oxlet_e2e::server::{Backend, TestServer};
use oxlet_e2e::sim_node::{SimConfig, SimNodes};
use serde_json::json;

/// Benchmark the scheduler and controllers and print a markdown table.
#[derive(Parser, Debug)]
#[command(name = "controllers_bench")]
struct Args {
    /// The `oxlet` binary to run as the server.
    #[arg(long, default_value = "target/release/oxlet")]
    oxlet: PathBuf,
    /// Pods (and Deployment replicas in the node-loss phase).
    #[arg(long, default_value_t = 1000)]
    pods: usize,
    /// Simulated nodes.
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// `--node-monitor-grace-period` of the node-loss phase, seconds.
    #[arg(long, default_value_t = 8)]
    grace: u64,
    /// tolerationSeconds of the node-loss phase's pods.
    #[arg(long, default_value_t = 5)]
    toleration: i64,
    /// Creates in flight.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Phases to run, comma separated: burst, stream, loss.
    #[arg(long, value_delimiter = ',', default_value = "burst,stream,loss")]
    phases: Vec<String>,
    /// Extra argument for `oxlet server` in every phase (repeatable), e.g.
    /// `--server-arg=--controllers=scheduler,serviceaccount` to measure the scheduler alone.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// Record the server with `perf record -g` into this file during the burst's binding.
    #[arg(long)]
    perf: Option<PathBuf>,
}

/// CPU seconds (user + system) a process has used, from /proc/<pid>/stat.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let hz = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0);
    Ok(ticks / hz)
}

/// What the watch saw of one pod, by name.
#[derive(Debug, Default, Clone)]
struct Seen {
    node: Option<String>,
    bound_at: Option<Instant>,
    ready_at: Option<Instant>,
    deleting_at: Option<Instant>,
    gone: bool,
}

type Track = Arc<Mutex<HashMap<String, Seen>>>;

fn lock(t: &Track) -> std::sync::MutexGuard<'_, HashMap<String, Seen>> {
    t.lock().unwrap_or_else(|e| e.into_inner())
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Records, from a watch, when each pod of `api` was first seen bound, Ready and deleting.
fn track(api: Api<Pod>) -> (Track, tokio::task::JoinHandle<()>) {
    let seen: Track = Arc::default();
    let out = seen.clone();
    let task = tokio::spawn(async move {
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            let now = Instant::now();
            let (pod, gone) = match ev {
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => (p, false),
                Ok(watcher::Event::Delete(p)) => (p, true),
                _ => continue,
            };
            let mut map = lock(&seen);
            let s = map.entry(pod.name_any()).or_default();
            s.gone |= gone;
            if let Some(n) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
                s.node.get_or_insert(n);
                s.bound_at.get_or_insert(now);
            }
            if is_ready(&pod) {
                s.ready_at.get_or_insert(now);
            }
            if pod.metadata.deletion_timestamp.is_some() {
                s.deleting_at.get_or_insert(now);
            }
        }
    });
    (out, task)
}

/// Polls `check` every 20 ms until it returns a value, for at most `limit`.
async fn until<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn client_of(server: &TestServer) -> Result<Client> {
    let kc = kube::config::Kubeconfig::read_from(server.kubeconfig())?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(Client::try_from(cfg)?)
}

async fn start(args: &Args, mut extra: Vec<String>) -> Result<TestServer> {
    let bin = args.oxlet.clone();
    extra.extend(args.server_args.iter().cloned());
    tokio::task::spawn_blocking(move || {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        TestServer::start(&bin, Backend::Sqlite, &extra)
    })
    .await?
}

/// A namespace with its default ServiceAccount (pods are refused without it).
async fn namespace(client: &Client, name: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": name}}))?,
    )
    .await?;
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
    let deadline = Instant::now() + Duration::from_secs(60);
    while sas.get_opt("default").await?.is_none() {
        if Instant::now() > deadline {
            bail!("no default ServiceAccount in {name}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn add_nodes(sims: &SimNodes, n: usize, conc: usize) -> Result<()> {
    let mut adds = futures::stream::iter(0..n)
        .map(|i| async move { sims.add(&format!("node-{i:03}"), &[]).await })
        .buffer_unordered(conc);
    while let Some(r) = adds.next().await {
        r?;
    }
    Ok(())
}

fn pod(name: &str) -> Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "c", "image": "docker.io/oxlet/bench:v1",
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]},
    }))?)
}

/// Creates `n` pods `p-NNNN`, `conc` in flight; returns the wall time.
async fn create_pods(api: &Api<Pod>, n: usize, conc: usize) -> Result<Duration> {
    let started = Instant::now();
    let mut creates = futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &pod(&format!("p-{i:04}"))?)
                    .await
                    .with_context(|| format!("create p-{i:04}"))?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(conc);
    while let Some(r) = creates.next().await {
        r?;
    }
    Ok(started.elapsed())
}

fn spread(seen: &HashMap<String, Seen>) -> (usize, usize) {
    let mut per: BTreeMap<&str, usize> = BTreeMap::new();
    for s in seen.values().filter(|s| !s.gone && s.deleting_at.is_none()) {
        if let Some(n) = &s.node {
            *per.entry(n).or_default() += 1;
        }
    }
    (
        per.values().copied().min().unwrap_or(0),
        per.values().copied().max().unwrap_or(0),
    )
}

#[derive(Debug, Default)]
struct Burst {
    server_cpu: f64,
    unschedulable_after: Duration,
    nodes_joined: Duration,
    first_bind: Duration,
    last_bind: Duration,
    spread: (usize, usize),
}

async fn burst(args: &Args) -> Result<Burst> {
    let server = start(args, Vec::new()).await?;
    let client = client_of(&server).await?;
    namespace(&client, "burst").await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "burst");
    let t0 = Instant::now();
    create_pods(&pods, args.pods, args.concurrency).await?;
    // Every pod tried once and parked as Unschedulable (no node exists).
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let parked = pods
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| {
                        cs.iter().any(|c| {
                            c.type_ == "PodScheduled"
                                && c.reason.as_deref() == Some("Unschedulable")
                        })
                    })
            })
            .count();
        if parked == args.pods {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {parked} pods marked Unschedulable");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let unschedulable_after = t0.elapsed();
    // Past the first retry backoff (1 s), so the node events move every pod straight back.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (seen, watch) = track(pods.clone());
    let sims = SimNodes::start(
        client.clone(),
        SimConfig {
            renew_interval: Duration::from_secs(10),
            cpu: "32".into(),
            memory: "64Gi".into(),
            run_pods: false,
            ..Default::default()
        },
    );
    let pid = server.pid().context("server pid")?;
    let perf = match &args.perf {
        Some(out) => Some(
            std::process::Command::new("perf")
                .args(["record", "-F", "499", "-g", "-p", &pid.to_string(), "-o"])
                .arg(out)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .context("start perf record")?,
        ),
        None => None,
    };
    let cpu0 = cpu_seconds(pid)?;
    let t1 = Instant::now();
    add_nodes(&sims, args.nodes, 16).await?;
    let nodes_joined = t1.elapsed();
    let n = args.pods;
    let (first, last) = until("every pod bound", Duration::from_secs(300), || {
        let map = lock(&seen);
        let times: Vec<Instant> = map.values().filter_map(|s| s.bound_at).collect();
        (times.len() >= n).then(|| {
            (
                times.iter().min().copied().unwrap_or(t1),
                times.iter().max().copied().unwrap_or(t1),
            )
        })
    })
    .await?;
    let server_cpu = cpu_seconds(pid)? - cpu0;
    if let Some(mut perf) = perf {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(perf.id())?),
            nix::sys::signal::Signal::SIGINT,
        );
        let _ = perf.wait();
    }
    let spread = spread(&lock(&seen));
    watch.abort();
    drop(sims);
    Ok(Burst {
        server_cpu,
        unschedulable_after,
        nodes_joined,
        first_bind: first.saturating_duration_since(t1),
        last_bind: last.saturating_duration_since(t1),
        spread,
    })
}

#[derive(Debug, Default)]
struct Stream {
    created: Duration,
    all_bound: Duration,
    all_ready: Duration,
    spread: (usize, usize),
}

async fn stream(args: &Args) -> Result<Stream> {
    let server = start(args, Vec::new()).await?;
    let client = client_of(&server).await?;
    let sims = SimNodes::start(
        client.clone(),
        SimConfig {
            renew_interval: Duration::from_secs(10),
            cpu: "32".into(),
            memory: "64Gi".into(),
            ..Default::default()
        },
    );
    add_nodes(&sims, args.nodes, 16).await?;
    namespace(&client, "stream").await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "stream");
    let (seen, watch) = track(pods.clone());
    let t0 = Instant::now();
    let created = create_pods(&pods, args.pods, args.concurrency).await?;
    let n = args.pods;
    let all = |f: fn(&Seen) -> Option<Instant>| {
        let seen = seen.clone();
        move || {
            let map = lock(&seen);
            let times: Vec<Instant> = map.values().filter_map(f).collect();
            (times.len() >= n).then(|| times.iter().max().copied().unwrap_or(t0))
        }
    };
    let bound = until(
        "every pod bound",
        Duration::from_secs(300),
        all(|s| s.bound_at),
    )
    .await?;
    let ready = until(
        "every pod Ready",
        Duration::from_secs(300),
        all(|s| s.ready_at),
    )
    .await?;
    let spread = spread(&lock(&seen));
    watch.abort();
    drop(sims);
    Ok(Stream {
        created,
        all_bound: bound.saturating_duration_since(t0),
        all_ready: ready.saturating_duration_since(t0),
        spread,
    })
}

#[derive(Debug, Default)]
struct Loss {
    rolled_out: Duration,
    lost_pods: usize,
    to_tainted: Duration,
    taint_to_evicted: Duration,
    expiry_to_bound: f64,
    expiry_to_ready: f64,
    silence_to_ready: Duration,
    spread: (usize, usize),
}

/// Seconds from `from` to `to` (negative when `to` is earlier).
fn secs_between(from: Instant, to: Instant) -> f64 {
    if to >= from {
        to.duration_since(from).as_secs_f64()
    } else {
        -from.duration_since(to).as_secs_f64()
    }
}

async fn node_loss(args: &Args) -> Result<Loss> {
    let server = start(
        args,
        vec![
            format!("--node-monitor-grace-period={}s", args.grace),
            "--node-monitor-period=500ms".to_string(),
        ],
    )
    .await?;
    let client = client_of(&server).await?;
    let sims = SimNodes::start(
        client.clone(),
        SimConfig {
            renew_interval: Duration::from_secs(1),
            cpu: "32".into(),
            memory: "64Gi".into(),
            ..Default::default()
        },
    );
    add_nodes(&sims, args.nodes, 16).await?;
    namespace(&client, "loss").await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "loss");
    let (seen, watch) = track(pods.clone());
    let t = args.toleration;
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": args.pods, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {
                    "tolerations": [
                        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": t},
                        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": t}],
                    "containers": [{"name": "c", "image": "docker.io/oxlet/web:v1",
                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}},
    }))?;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "loss");
    let t0 = Instant::now();
    deploys.create(&PostParams::default(), &d).await?;
    let replicas = i32::try_from(args.pods)?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let st = deploys.get("web").await?.status.unwrap_or_default();
        if st.available_replicas == Some(replicas) && st.updated_replicas == Some(replicas) {
            break;
        }
        if Instant::now() > deadline {
            bail!("deployment not rolled out: {st:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rolled_out = t0.elapsed();
    // The busiest node goes silent.
    let (lost_node, lost) = {
        let map = lock(&seen);
        let mut per: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, s) in map
            .iter()
            .filter(|(_, s)| !s.gone && s.deleting_at.is_none())
        {
            if let Some(n) = &s.node {
                per.entry(n.clone()).or_default().push(name.clone());
            }
        }
        per.into_iter()
            .max_by_key(|(_, v)| v.len())
            .context("no pods placed")?
    };
    let silenced = Instant::now();
    sims.silence(&lost_node);
    let nodes: Api<Node> = Api::all(client.clone());
    let (tainted_at, time_added) = loop {
        let n = nodes.get(&lost_node).await?;
        let taint = n
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .into_iter()
            .flatten()
            .find(|t| t.key == "node.kubernetes.io/unreachable" && t.effect == "NoExecute")
            .and_then(|t| t.time_added.clone());
        if let Some(added) = taint {
            break (Instant::now(), added.0);
        }
        if silenced.elapsed() > Duration::from_secs(args.grace + 120) {
            bail!("{lost_node} never tainted");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The instant tolerations expire: the taint's timeAdded plus tolerationSeconds, moved
    // onto this process's monotonic clock.
    let expiry_wall = time_added + SignedDuration::from_secs(t);
    let wall_now = Timestamp::now();
    let mono_now = Instant::now();
    let ahead = expiry_wall.duration_since(wall_now);
    let expiry = if ahead.is_negative() {
        mono_now - Duration::try_from(-ahead).unwrap_or_default()
    } else {
        mono_now + Duration::try_from(ahead).unwrap_or_default()
    };
    let evicted = until("lost pods evicted", Duration::from_secs(300), || {
        let map = lock(&seen);
        let times: Vec<Instant> = lost
            .iter()
            .filter_map(|n| map.get(n).and_then(|s| s.deleting_at))
            .collect();
        (times.len() == lost.len()).then(|| times.iter().max().copied().unwrap_or(silenced))
    })
    .await?;
    let n = args.pods;
    let lost_name = lost_node.clone();
    let replaced = |ready: bool| {
        let seen = seen.clone();
        let lost_name = lost_name.clone();
        move || {
            let map = lock(&seen);
            let live: Vec<&Seen> = map
                .values()
                .filter(|s| !s.gone && s.deleting_at.is_none())
                .filter(|s| s.node.as_deref().is_some_and(|x| x != lost_name))
                .filter(|s| !ready || s.ready_at.is_some())
                .collect();
            (live.len() >= n).then(|| {
                live.iter()
                    .filter_map(|s| if ready { s.ready_at } else { s.bound_at })
                    .max()
                    .unwrap_or(silenced)
            })
        }
    };
    let bound = until(
        "replacements bound",
        Duration::from_secs(300),
        replaced(false),
    )
    .await?;
    let ready = until(
        "replacements Ready",
        Duration::from_secs(300),
        replaced(true),
    )
    .await?;
    let spread = spread(&lock(&seen));
    watch.abort();
    drop(sims);
    Ok(Loss {
        rolled_out,
        lost_pods: lost.len(),
        to_tainted: tainted_at.saturating_duration_since(silenced),
        taint_to_evicted: evicted.saturating_duration_since(tainted_at),
        expiry_to_bound: secs_between(expiry, bound),
        expiry_to_ready: secs_between(expiry, ready),
        silence_to_ready: ready.saturating_duration_since(silenced),
        spread,
    })
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|e| format!("unreadable: {e}"))
}

fn s(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if !args.oxlet.exists() {
        bail!(
            "{} missing: build it with `cargo build --release --bin oxlet` or pass --oxlet",
            args.oxlet.display()
        );
    }
    if args.pods == 0 || args.nodes == 0 || args.concurrency == 0 {
        bail!("--pods, --nodes and --concurrency must be positive");
    }
    let load_before = loadavg();
    let started = Timestamp::now();
    let on = |p: &str| args.phases.iter().any(|x| x == p);
    let b = if on("burst") {
        burst(&args).await.context("burst phase")?
    } else {
        Burst::default()
    };
    let st = if on("stream") {
        stream(&args).await.context("stream phase")?
    } else {
        Stream::default()
    };
    let l = if on("loss") {
        node_loss(&args).await.context("node-loss phase")?
    } else {
        Loss::default()
    };
    let load_after = loadavg();
    let (p, n) = (args.pods, args.nodes);
    let window = b.last_bind.saturating_sub(b.first_bind).as_secs_f64();
    let binds = if window > 0.0 {
        p as f64 / window
    } else {
        f64::INFINITY
    };
    println!("Started {started}; load average before {load_before}, after {load_after}.\n");
    println!("| measure | result | target |");
    println!("|---|---|---|");
    println!(
        "| burst: {p} pending pods, {n} nodes join; binds/s from first to last binding | **{binds:.0} binds/s** (first bound {} after the nodes started joining, last {}; {n} nodes joined in {}) | ≥ 500 binds/s |",
        s(b.first_bind), s(b.last_bind), s(b.nodes_joined)
    );
    println!(
        "| burst: pods per node after; server CPU from nodes joining to last binding | min {} / max {}; {:.2} CPU s ({:.0}% of the window) | |",
        b.spread.0,
        b.spread.1,
        b.server_cpu,
        100.0 * b.server_cpu / b.last_bind.as_secs_f64().max(1e-9)
    );
    println!(
        "| burst: {p} pods created and marked Unschedulable (no node) | {} | |",
        s(b.unschedulable_after)
    );
    let stream_rate = p as f64 / st.all_bound.as_secs_f64().max(1e-9);
    println!(
        "| stream: {p} pods created ({} in flight) onto {n} running nodes; created / all bound / all Running+Ready | {} / {} ({stream_rate:.0} pods/s end to end) / {} | |",
        args.concurrency, s(st.created), s(st.all_bound), s(st.all_ready)
    );
    println!(
        "| stream: pods per node after | min {} / max {} | |",
        st.spread.0, st.spread.1
    );
    println!(
        "| node loss: Deployment of {p} replicas created → all available | {} | |",
        s(l.rolled_out)
    );
    println!(
        "| node loss: pods on the silenced node | {} | |",
        l.lost_pods
    );
    println!(
        "| node loss: silence → Ready=Unknown + unreachable taints (grace {} s) | {} | |",
        args.grace,
        s(l.to_tainted)
    );
    println!(
        "| node loss: taint → all its pods evicted (tolerationSeconds {}) | {} | |",
        args.toleration,
        s(l.taint_to_evicted)
    );
    println!(
        "| node loss: grace + toleration expiry → every replacement bound elsewhere | **{:.2} s** | ≤ 5 s |",
        l.expiry_to_bound
    );
    println!(
        "| node loss: grace + toleration expiry → every replacement Running and Ready | {:.2} s | |",
        l.expiry_to_ready
    );
    println!(
        "| node loss: silence → every replacement Running and Ready | {} | |",
        s(l.silence_to_ready)
    );
    println!(
        "| node loss: pods per live node after | min {} / max {} | |",
        l.spread.0, l.spread.1
    );
    Ok(())
}

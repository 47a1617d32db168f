//! `kubelet-bench`: pod start latency through `oxlet kubelet` against the raw CRI floor measured
//! in the same run, and the kubelet's RSS/CPU idle and with 100 pods; prints a markdown table
//! (the "Kubelet" section of docs/benchmarks.md).
//!
//! A command, not a test: it measures and reports; missed targets are findings.
//!
//! ```text
//! cargo build --release --bin oxlet
//! cargo run --release -p oxlet-e2e --bin kubelet-bench
//! ```

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use oxlet_cri::{image_spec, ImageService, RuntimeService};
use oxlet_e2e::node_env::{NodeEnv, NodeOptions};
use oxlet_e2e::runtime_env::container_config;
use serde_json::json;

/// Benchmark pod start latency and print a markdown table.
#[derive(Parser, Debug)]
#[command(name = "kubelet-bench")]
struct Args {
    /// The `oxlet` binary to run as server and kubelet.
    #[arg(long, default_value = "target/release/oxlet")]
    oxlet: PathBuf,
    /// Batch sizes (pods created at once).
    #[arg(long, value_delimiter = ',', default_value = "1,30,100")]
    batches: Vec<usize>,
    /// Sequential sandbox+container starts for the raw CRI floor.
    #[arg(long, default_value_t = 20)]
    floor_samples: usize,
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// RSS in bytes and CPU ticks (utime+stime) of a process.
fn proc_stats(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').map(|(_, r)| r).context("stat")?;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok((rss_kb * 1024, ticks))
}

/// RSS and CPU % over `window`.
async fn sample(pid: u32, window: Duration) -> Result<(f64, f64)> {
    let (_, t0) = proc_stats(pid)?;
    tokio::time::sleep(window).await;
    let (rss, t1) = proc_stats(pid)?;
    let hz = 100.0;
    let cpu = (t1 - t0) as f64 / hz / window.as_secs_f64() * 100.0;
    Ok((rss as f64 / (1024.0 * 1024.0), cpu))
}

async fn cri_floor(env: &NodeEnv, samples: usize) -> Result<Vec<Duration>> {
    let cri = &env.env.cri;
    cri.pull_image(&image_spec("docker.io/library/busybox:latest"), None, None)
        .await?;
    let mut out = Vec::new();
    for i in 0..samples {
        let mut cfg = env.env.pod_config(&format!("floor{i}"))?;
        if let Some(m) = cfg.metadata.as_mut() {
            m.uid = format!("floor-{i}-{}", std::process::id());
        }
        let c = container_config("c", "docker.io/library/busybox:latest", &["sleep", "3600"]);
        let t = Instant::now();
        let sb = cri.run_pod_sandbox(&cfg, "").await?;
        let id = cri.create_container(&sb, &c, &cfg).await?;
        cri.start_container(&id).await?;
        out.push(t.elapsed());
        cri.stop_pod_sandbox(&sb).await?;
        cri.remove_pod_sandbox(&sb).await?;
    }
    out.sort();
    Ok(out)
}

/// The runtime's own limit for `n` pods started at once: each pod's time from the common start
/// to its container running, with all RunPodSandbox/CreateContainer/StartContainer calls issued
/// concurrently.
async fn cri_concurrent(env: &NodeEnv, n: usize) -> Result<Vec<Duration>> {
    let cri = &env.env.cri;
    let mut configs = Vec::new();
    for i in 0..n {
        let mut cfg = env.env.pod_config(&format!("conc{n}-{i}"))?;
        if let Some(m) = cfg.metadata.as_mut() {
            m.uid = format!("conc-{n}-{i}-{}", std::process::id());
        }
        configs.push(cfg);
    }
    let c = container_config("c", "docker.io/library/busybox:latest", &["sleep", "3600"]);
    let start = Instant::now();
    let runs = configs.iter().map(|cfg| {
        let c = c.clone();
        async move {
            let sb = cri.run_pod_sandbox(cfg, "").await?;
            let id = cri.create_container(&sb, &c, cfg).await?;
            cri.start_container(&id).await?;
            anyhow::Ok((sb, start.elapsed()))
        }
    });
    let results = futures::future::join_all(runs).await;
    let mut out = Vec::new();
    for r in results {
        let (sb, d) = r?;
        out.push(d);
        cri.stop_pod_sandbox(&sb).await?;
        cri.remove_pod_sandbox(&sb).await?;
    }
    out.sort();
    Ok(out)
}

async fn batch(env: &NodeEnv, n: usize) -> Result<Vec<Duration>> {
    let ns = format!("bench-{n}");
    let nss: Api<Namespace> = Api::all(env.client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
    )
    .await?;
    // The namespace's default ServiceAccount must exist before pods are admitted.
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(env.client.clone(), &ns);
    let deadline = Instant::now() + Duration::from_secs(30);
    while sas.get_opt("default").await?.is_none() {
        if Instant::now() > deadline {
            bail!("no default ServiceAccount in {ns}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &ns);
    let list = pods.list(&ListParams::default()).await?;
    let rv = list.metadata.resource_version.unwrap_or_default();
    let mut stream = pods.watch(&WatchParams::default(), &rv).await?.boxed();
    let mut created: HashMap<String, Instant> = HashMap::new();
    for i in 0..n {
        let name = format!("p{i}");
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"nodeName": env.node_name, "terminationGracePeriodSeconds": 0,
                     "automountServiceAccountToken": false,
                     "containers": [{"name": "c", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                                     "command": ["sleep", "3600"]}]}
        }))?;
        created.insert(name, Instant::now());
        pods.create(&PostParams::default(), &pod).await?;
    }
    let mut lat = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    while lat.len() < n {
        let ev = tokio::time::timeout_at(deadline.into(), stream.next())
            .await
            .context("pods did not all reach Running")?;
        let Some(ev) = ev else { bail!("watch ended") };
        if let WatchEvent::Modified(p) = ev? {
            let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
            if running {
                if let Some(t) = p.metadata.name.as_ref().and_then(|n| created.remove(n)) {
                    lat.push(t.elapsed());
                }
            }
        }
    }
    lat.sort();
    Ok(lat)
}

async fn cleanup(env: &NodeEnv, n: usize) -> Result<()> {
    let ns = format!("bench-{n}");
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &ns);
    pods.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    while !pods.list(&ListParams::default()).await?.items.is_empty() {
        if Instant::now() > deadline {
            bail!("pods in {ns} not gone");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let oxlet = std::fs::canonicalize(&args.oxlet).with_context(|| {
        format!(
            "{} (cargo build --release --bin oxlet)",
            args.oxlet.display()
        )
    })?;
    eprintln!("starting server, containerd and kubelet…");
    let env = NodeEnv::start("kbench", &oxlet, NodeOptions::default()).await?;
    let pid = env.kubelet_pid().context("kubelet pid")?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (idle_rss, idle_cpu) = sample(pid, Duration::from_secs(10)).await?;
    eprintln!("raw CRI floor ({} sequential pods)…", args.floor_samples);
    let floor = cri_floor(&env, args.floor_samples).await?;
    let floor_p50 = pct(&floor, 0.5);
    let mut rows = Vec::new();
    let mut busy = None;
    for &n in &args.batches {
        eprintln!("batch of {n} pods…");
        let lat = batch(&env, n).await?;
        if n == *args.batches.iter().max().unwrap_or(&n) {
            busy = Some(sample(pid, Duration::from_secs(10)).await?);
        }
        cleanup(&env, n).await?;
        let raw = cri_concurrent(&env, n).await?;
        rows.push((
            n,
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            pct(&raw, 0.5),
            pct(&raw, 0.99),
        ));
    }
    println!("| pods at once | create → Running p50 | p99 | p50 / sequential floor p50 | raw CRI, same count at once: p50 | p99 | kubelet p50 / raw p50 |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for (n, p50, p99, r50, r99) in &rows {
        println!(
            "| {n} | {} | {} | {:.2}× | {} | {} | {:.2}× |",
            ms(*p50),
            ms(*p99),
            p50.as_secs_f64() / floor_p50.as_secs_f64(),
            ms(*r50),
            ms(*r99),
            p50.as_secs_f64() / r50.as_secs_f64()
        );
    }
    println!();
    println!(
        "Raw CRI floor (RunPodSandbox + CreateContainer + StartContainer, {} sequential): p50 {}, p99 {}",
        floor.len(),
        ms(floor_p50),
        ms(pct(&floor, 0.99))
    );
    println!("Kubelet idle: RSS {idle_rss:.1} MiB, CPU {idle_cpu:.1}%");
    if let Some((rss, cpu)) = busy {
        println!(
            "Kubelet with {} pods running: RSS {rss:.1} MiB, CPU {cpu:.1}%",
            args.batches.iter().max().unwrap_or(&0)
        );
    }
    drop(env);
    Ok(())
}

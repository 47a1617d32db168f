//! `apiserver-bench`: throughput and latency of `oxlet server` on SQLite and on etcd, each in a
//! fresh server, printed as one markdown table (the "API server" section of docs/benchmarks.md).
//!
//! A command, not a test: it measures and reports, it asserts nothing. Targets are printed next
//! to the numbers; a missed target is a finding, not a failure.
//!
//! ```text
//! cargo build --release --bin oxlet
//! cargo run --release -p oxlet-e2e --bin apiserver-bench -- --backend both
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use futures::StreamExt;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, Pod, PodSpec};
use kube::api::{
    Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::client::{ClientBuilder, ConfigExt};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use oxlet_e2e::server::{Backend, TestServer};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;
use tower::ServiceBuilder;

/// Benchmark the bundled API server and print a markdown table.
#[derive(Parser, Debug)]
#[command(name = "apiserver-bench")]
struct Args {
    /// Which store(s) to measure, each in a fresh `oxlet server`.
    #[arg(long, value_enum, default_value_t = Which::Both)]
    backend: Which,
    /// ConfigMaps to create and get, and Pods to create and list.
    #[arg(long, default_value_t = 10_000)]
    count: usize,
    /// The `oxlet` binary to run as the server.
    #[arg(long, default_value = "target/release/oxlet")]
    oxlet: PathBuf,
    /// Requests in flight for creates and gets.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Concurrent watchers in the watch-latency phase.
    #[arg(long, default_value_t = 100)]
    watchers: usize,
    /// ConfigMap updates written in the watch-latency phase.
    #[arg(long, default_value_t = 1_000)]
    watch_updates: usize,
    /// Steady write rate (updates per second) in the watch-latency phase.
    #[arg(long, default_value_t = 200.0)]
    watch_rate: f64,
    /// Extra argument for `oxlet server` (repeatable), e.g. `--server-arg=--controllers=-scheduler`
    /// to tell the API server's own cost from the bundled scheduler's.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Which {
    Sqlite,
    Etcd,
    Both,
}

/// Watchers are spread over this many HTTP/2 connections, as many clients would open them.
const WATCH_CONNECTIONS: usize = 4;
/// Connections (and tasks) in the "few clients" create variant.
const MULTI_CLIENTS: usize = 4;
/// Samples of each full list.
const LIST_SAMPLES: usize = 5;
/// Page size of the paginated list.
const PAGE_SIZE: u32 = 500;

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if !args.oxlet.exists() {
        bail!(
            "{} missing: build it with `cargo build --release --bin oxlet` or pass --oxlet",
            args.oxlet.display()
        );
    }
    if args.count == 0 || args.concurrency == 0 || args.watchers == 0 || args.watch_rate <= 0.0 {
        bail!("--count, --concurrency, --watchers and --watch-rate must be positive");
    }
    let backends: &[Backend] = match args.backend {
        Which::Sqlite => &[Backend::Sqlite],
        Which::Etcd => &[Backend::Etcd],
        Which::Both => &[Backend::Sqlite, Backend::Etcd],
    };
    let load_before = loadavg();
    let started = now_utc();
    let mut runs = Vec::new();
    for &backend in backends {
        runs.push(run_backend(&args, backend).await?);
    }
    let load_after = loadavg();
    print_report(&args, &runs, &started, &load_before, &load_after);
    Ok(())
}

/// Everything measured against one backend.
#[derive(Default)]
struct Run {
    name: &'static str,
    create_h2: Throughput,
    create_multi: Throughput,
    create_h1: Throughput,
    get_h2: Throughput,
    pod_create: Throughput,
    list_raw_ms: Vec<f64>,
    list_bytes: usize,
    list_typed_ms: Vec<f64>,
    paged_ms: f64,
    pages: usize,
    paged_items: usize,
    watch: WatchResult,
    rss_idle_kb: u64,
    rss_after_kb: u64,
    hwm_kb: u64,
    phases: Vec<Phase>,
    server_log_bytes: u64,
}

/// Requests completed (or failed) in a timed phase.
#[derive(Default, Clone)]
struct Throughput {
    n: usize,
    wall: Duration,
    errors: usize,
    first_error: Option<String>,
    /// Per-request latency in ms, sorted.
    latency_ms: Vec<f64>,
}

impl Throughput {
    fn per_sec(&self) -> f64 {
        (self.n - self.errors) as f64 / self.wall.as_secs_f64()
    }
}

/// Delivery latencies of the watch phase.
#[derive(Default)]
struct WatchResult {
    latency_ms: Vec<f64>,
    expected: usize,
    errors: usize,
    write_wall: Duration,
    write_errors: usize,
    write_latency_ms: Vec<f64>,
}

/// CPU seconds used by each process during one phase.
struct Phase {
    name: String,
    wall: Duration,
    server_cpu: f64,
    etcd_cpu: Option<f64>,
    bench_cpu: f64,
}

/// /proc readings of the processes involved.
struct Probe {
    server: u32,
    etcd: Option<u32>,
    ticks: f64,
}

struct CpuSample {
    at: Instant,
    server: f64,
    etcd: Option<f64>,
    bench: f64,
}

impl Probe {
    fn sample(&self) -> Result<CpuSample> {
        Ok(CpuSample {
            at: Instant::now(),
            server: cpu_ticks(&self.server.to_string())? / self.ticks,
            etcd: match self.etcd {
                Some(pid) => Some(cpu_ticks(&pid.to_string())? / self.ticks),
                None => None,
            },
            bench: cpu_ticks("self")? / self.ticks,
        })
    }

    fn phase(&self, name: &str, since: &CpuSample) -> Result<Phase> {
        let now = self.sample()?;
        Ok(Phase {
            name: name.to_string(),
            wall: now.at - since.at,
            server_cpu: now.server - since.server,
            etcd_cpu: now.etcd.zip(since.etcd).map(|(a, b)| a - b),
            bench_cpu: now.bench - since.bench,
        })
    }
}

async fn run_backend(args: &Args, backend: Backend) -> Result<Run> {
    let name = match backend {
        Backend::Sqlite => "SQLite",
        Backend::Etcd => "etcd",
    };
    eprintln!("== {name}: starting oxlet server");
    let extra: Vec<&str> = args.server_args.iter().map(String::as_str).collect();
    let server = TestServer::start(&args.oxlet, backend, &extra)?;
    let pid = server.pid().context("server has no PID")?;
    let etcd = match server.etcd_endpoint() {
        Some(endpoint) => Some(find_etcd_pid(&endpoint)?),
        None => None,
    };
    let ticks = clock_ticks()?;
    let probe = Probe {
        server: pid,
        etcd,
        ticks,
    };
    let mut run = Run {
        name,
        ..Run::default()
    };
    // Idle: ready, no client yet; a moment for start-up work (bootstrap objects) to settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    run.rss_idle_kb = proc_status_kb(pid, "VmRSS")?;

    let kubeconfig = server.kubeconfig();
    let h2 = h2_client(&kubeconfig).await?;
    let h1 = h1_client(&kubeconfig).await?;
    for ns in [
        "bench-cm",
        "bench-cm-multi",
        "bench-cm-h1",
        "bench-pods",
        "bench-watch",
    ] {
        create_namespace(&h2, ns).await?;
    }
    // Open the HTTP/2 connection before timing anything.
    Api::<ConfigMap>::namespaced(h2.clone(), "bench-cm")
        .list(&ListParams::default().limit(1))
        .await?;

    let n = args.count;
    let conc = args.concurrency;
    let payload = "x".repeat(1024);

    eprintln!("== {name}: {n} ConfigMap creates, 1 HTTP/2 connection, {conc} in flight");
    let t = probe.sample()?;
    let cms = Api::<ConfigMap>::namespaced(h2.clone(), "bench-cm");
    run.create_h2 = bounded(0..n, conc, |i| {
        let cms = cms.clone();
        let cm = config_map(&format!("cm-{i:06}"), &payload);
        async move { cms.create(&PostParams::default(), &cm).await.map(drop) }
    })
    .await;
    run.phases.push(probe.phase("ConfigMap create (h2)", &t)?);

    let extra = (n / 5).max(1);
    eprintln!(
        "== {name}: {extra} ConfigMap creates, {MULTI_CLIENTS} HTTP/2 connections x {} in flight",
        conc / MULTI_CLIENTS
    );
    let t = probe.sample()?;
    run.create_multi = create_multi(&kubeconfig, extra, conc, &payload).await?;
    run.phases
        .push(probe.phase("ConfigMap create (4 x h2)", &t)?);

    eprintln!("== {name}: {extra} ConfigMap creates, kube-rs default client (HTTP/1.1 pool), {conc} in flight");
    let t = probe.sample()?;
    let cms_h1 = Api::<ConfigMap>::namespaced(h1.clone(), "bench-cm-h1");
    run.create_h1 = bounded(0..extra, conc, |i| {
        let cms = cms_h1.clone();
        let cm = config_map(&format!("cm-{i:06}"), &payload);
        async move { cms.create(&PostParams::default(), &cm).await.map(drop) }
    })
    .await;
    run.phases
        .push(probe.phase("ConfigMap create (h1 pool)", &t)?);

    eprintln!("== {name}: {n} ConfigMap GETs, 1 HTTP/2 connection, {conc} in flight");
    let t = probe.sample()?;
    run.get_h2 = bounded(0..n, conc, |i| {
        let cms = cms.clone();
        async move { cms.get(&format!("cm-{i:06}")).await.map(drop) }
    })
    .await;
    run.phases.push(probe.phase("ConfigMap get (h2)", &t)?);

    eprintln!("== {name}: {n} Pod creates, 1 HTTP/2 connection, {conc} in flight");
    let t = probe.sample()?;
    let pods = Api::<Pod>::namespaced(h2.clone(), "bench-pods");
    run.pod_create = bounded(0..n, conc, |i| {
        let pods = pods.clone();
        let pod = pod(&format!("pod-{i:06}"));
        async move { pods.create(&PostParams::default(), &pod).await.map(drop) }
    })
    .await;
    run.phases.push(probe.phase("Pod create (h2)", &t)?);

    eprintln!("== {name}: list all pods, {LIST_SAMPLES} times each way");
    let t = probe.sample()?;
    for _ in 0..LIST_SAMPLES {
        let start = Instant::now();
        let request = http::Request::get("/api/v1/pods").body(Vec::new())?;
        let body = h2.request_text(request).await?;
        run.list_raw_ms.push(ms(start.elapsed()));
        run.list_bytes = body.len();
    }
    run.phases.push(probe.phase("Pod list, raw body", &t)?);
    let t = probe.sample()?;
    let all_pods = Api::<Pod>::all(h2.clone());
    for _ in 0..LIST_SAMPLES {
        let start = Instant::now();
        let list = all_pods.list(&ListParams::default()).await?;
        run.list_typed_ms.push(ms(start.elapsed()));
        if list.items.len() < n {
            bail!("listed {} pods, created {n}", list.items.len());
        }
    }
    run.phases.push(probe.phase("Pod list, typed", &t)?);

    let t = probe.sample()?;
    let start = Instant::now();
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(PAGE_SIZE);
        if let Some(c) = &token {
            lp = lp.continue_token(c);
        }
        let page = all_pods.list(&lp).await?;
        run.pages += 1;
        run.paged_items += page.items.len();
        token = page.metadata.continue_.filter(|c| !c.is_empty());
        if token.is_none() {
            break;
        }
    }
    run.paged_ms = ms(start.elapsed());
    run.phases
        .push(probe.phase("Pod list, limit=500 pages", &t)?);

    eprintln!(
        "== {name}: {} watchers, {} updates at {}/s",
        args.watchers, args.watch_updates, args.watch_rate
    );
    let t = probe.sample()?;
    run.watch = watch_latency(&kubeconfig, &h2, args).await?;
    run.phases.push(probe.phase("Watch fan-out", &t)?);

    // After the run: let the last responses and watch streams drain before reading.
    tokio::time::sleep(Duration::from_secs(1)).await;
    run.rss_after_kb = proc_status_kb(pid, "VmRSS")?;
    run.hwm_kb = proc_status_kb(pid, "VmHWM")?;
    run.server_log_bytes = std::fs::metadata(server.data_dir().join("server.log"))
        .map(|m| m.len())
        .unwrap_or(0);
    drop(server);
    Ok(run)
}

/// Runs `f(i)` for every `i` with at most `conc` in flight; counts failures rather than stopping.
async fn bounded<F, Fut>(items: std::ops::Range<usize>, conc: usize, f: F) -> Throughput
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<(), kube::Error>>,
{
    let n = items.len();
    let start = Instant::now();
    let mut results = futures::stream::iter(items)
        .map(|i| {
            let fut = f(i);
            async move {
                let t = Instant::now();
                let r = fut.await;
                (t.elapsed(), r)
            }
        })
        .buffer_unordered(conc);
    let mut out = Throughput {
        n,
        ..Throughput::default()
    };
    while let Some((took, r)) = results.next().await {
        out.latency_ms.push(ms(took));
        if let Err(e) = r {
            out.errors += 1;
            out.first_error.get_or_insert_with(|| e.to_string());
        }
    }
    out.wall = start.elapsed();
    out.latency_ms.sort_by(f64::total_cmp);
    out
}

/// `n` creates from `MULTI_CLIENTS` clients, each on its own HTTP/2 connection and task.
async fn create_multi(
    kubeconfig: &Path,
    n: usize,
    conc: usize,
    payload: &str,
) -> Result<Throughput> {
    let mut clients = Vec::new();
    for _ in 0..MULTI_CLIENTS {
        let client = h2_client(kubeconfig).await?;
        Api::<ConfigMap>::namespaced(client.clone(), "bench-cm-multi")
            .list(&ListParams::default().limit(1))
            .await?;
        clients.push(client);
    }
    let per_client = conc.div_ceil(MULTI_CLIENTS);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (k, client) in clients.into_iter().enumerate() {
        let lo = n * k / MULTI_CLIENTS;
        let hi = n * (k + 1) / MULTI_CLIENTS;
        let payload = payload.to_string();
        tasks.spawn(async move {
            let cms = Api::<ConfigMap>::namespaced(client, "bench-cm-multi");
            bounded(lo..hi, per_client, |i| {
                let cms = cms.clone();
                let cm = config_map(&format!("cm-{i:06}"), &payload);
                async move { cms.create(&PostParams::default(), &cm).await.map(drop) }
            })
            .await
        });
    }
    let mut out = Throughput {
        n,
        ..Throughput::default()
    };
    while let Some(part) = tasks.join_next().await {
        let part = part.context("create task")?;
        out.errors += part.errors;
        if out.first_error.is_none() {
            out.first_error = part.first_error;
        }
        out.latency_ms.extend(part.latency_ms);
    }
    out.wall = start.elapsed();
    out.latency_ms.sort_by(f64::total_cmp);
    Ok(out)
}

/// Number of ConfigMaps the watch phase's updates rotate over.
const WATCHED_OBJECTS: usize = 10;

/// Opens `args.watchers` watches from the current resourceVersion, writes `args.watch_updates`
/// patches at `args.watch_rate`/s, each carrying its send time, and collects receive − send.
async fn watch_latency(kubeconfig: &Path, writer: &Client, args: &Args) -> Result<WatchResult> {
    let ns = "bench-watch";
    let cms = Api::<ConfigMap>::namespaced(writer.clone(), ns);
    for i in 0..WATCHED_OBJECTS {
        cms.create(&PostParams::default(), &config_map(&format!("w-{i}"), ""))
            .await?;
    }
    let rv = cms
        .list(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .context("list has no resourceVersion")?;

    // One clock for send and receive: both sides are in this process.
    let epoch = Instant::now();
    let mut conns = Vec::new();
    for _ in 0..WATCH_CONNECTIONS {
        conns.push(h2_client(kubeconfig).await?);
    }
    let mut streams = Vec::new();
    for w in 0..args.watchers {
        let api = Api::<ConfigMap>::namespaced(conns[w % WATCH_CONNECTIONS].clone(), ns);
        // The response headers have arrived when this returns: the watch is registered, and it
        // starts at `rv`, so no update written after this point can be missed.
        let stream = api
            .watch(&WatchParams::default().timeout(290), &rv)
            .await
            .with_context(|| format!("open watch {w}"))?;
        streams.push(stream.boxed());
    }

    let expected = args.watch_updates;
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let mut watchers = tokio::task::JoinSet::new();
    for mut stream in streams {
        let mut done = done_rx.clone();
        watchers.spawn(async move {
            let mut lat = Vec::with_capacity(expected);
            let mut errors = 0usize;
            let mut seen = 0usize;
            // Deadline armed only once the writer is done: 30 s of grace after the last write.
            let grace = async {
                // An Err means the sender is gone, which also means the writes are over.
                let _ = done.wait_for(|d| *d).await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            };
            tokio::pin!(grace);
            while seen < expected {
                let next = tokio::select! {
                    next = stream.next() => next,
                    _ = &mut grace => break,
                };
                let received = epoch.elapsed();
                match next {
                    Some(Ok(WatchEvent::Modified(cm))) => {
                        let sent = cm
                            .data
                            .as_ref()
                            .and_then(|d| d.get("sent-ns"))
                            .and_then(|s| s.parse::<u64>().ok());
                        if let Some(sent) = sent {
                            seen += 1;
                            lat.push(ms(received.saturating_sub(Duration::from_nanos(sent))));
                        }
                    }
                    Some(Ok(WatchEvent::Error(_))) | Some(Err(_)) => errors += 1,
                    Some(Ok(_)) => {}
                    None => break,
                }
            }
            (lat, errors)
        });
    }

    let period = Duration::from_secs_f64(1.0 / args.watch_rate);
    let mut tick = tokio::time::interval(period);
    let mut writes = tokio::task::JoinSet::new();
    let write_start = Instant::now();
    for seq in 0..expected {
        tick.tick().await;
        let cms = cms.clone();
        writes.spawn(async move {
            let t = Instant::now();
            let sent = epoch.elapsed().as_nanos().to_string();
            let patch = serde_json::json!({ "data": { "sent-ns": sent, "seq": seq.to_string() } });
            let r = cms
                .patch(
                    &format!("w-{}", seq % WATCHED_OBJECTS),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await;
            (t.elapsed(), r.is_ok())
        });
    }
    let mut out = WatchResult {
        expected: expected * args.watchers,
        ..WatchResult::default()
    };
    while let Some(w) = writes.join_next().await {
        let (took, ok) = w.context("write task")?;
        out.write_latency_ms.push(ms(took));
        if !ok {
            out.write_errors += 1;
        }
    }
    out.write_wall = write_start.elapsed();
    done_tx.send_replace(true);
    while let Some(w) = watchers.join_next().await {
        let (lat, errors) = w.context("watcher task")?;
        out.latency_ms.extend(lat);
        out.errors += errors;
    }
    out.latency_ms.sort_by(f64::total_cmp);
    out.write_latency_ms.sort_by(f64::total_cmp);
    Ok(out)
}

fn config_map(name: &str, payload: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            "payload".to_string(),
            payload.to_string(),
        )])),
        ..ConfigMap::default()
    }
}

fn pod(name: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".to_string(),
                image: Some("busybox".to_string()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

async fn create_namespace(client: &Client, name: &str) -> Result<()> {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .with_context(|| format!("create namespace {name}"))?;
    Ok(())
}

async fn load_config(kubeconfig: &Path) -> Result<Config> {
    let kc = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("read {}", kubeconfig.display()))?;
    Ok(Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?)
}

/// kube-rs's default client: with rustls it offers only HTTP/1.1, so concurrent requests open a
/// pool of connections, one per request in flight.
async fn h1_client(kubeconfig: &Path) -> Result<Client> {
    Ok(Client::try_from(load_config(kubeconfig).await?)?)
}

/// A kube-rs client over a single HTTP/2 connection (ALPN `h2`), so concurrent requests are
/// streams multiplexed on it, as client-go does. kube-rs 5 only enables HTTP/1.1 in its rustls
/// connector, hence the hand-built stack: same TLS config, base URI, auth and headers layers.
async fn h2_client(kubeconfig: &Path) -> Result<Client> {
    let config = load_config(kubeconfig).await?;
    let mut tls = config.rustls_client_config()?;
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let tls = TlsConnector::from(Arc::new(tls));
    let connector = tower::service_fn(move |uri: http::Uri| Box::pin(connect_h2(tls.clone(), uri)));
    let hyper_client: hyper_util::client::legacy::Client<_, kube::client::Body> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build(connector);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(|e: hyper_util::client::legacy::Error| -> BoxError { Box::new(e) })
        .service(hyper_client);
    Ok(ClientBuilder::new(service, config.default_namespace.clone()).build())
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn connect_h2(tls: TlsConnector, uri: http::Uri) -> io::Result<H2Stream> {
    let host = uri
        .host()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "URI without host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let tcp = TcpStream::connect((host.as_str(), port)).await?;
    tcp.set_nodelay(true)?;
    let name =
        ServerName::try_from(host).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let stream = tls.connect(name, tcp).await?;
    if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
        return Err(io::Error::other("server did not negotiate h2"));
    }
    Ok(H2Stream(TokioIo::new(stream)))
}

/// A TLS stream that tells hyper it negotiated HTTP/2.
struct H2Stream(TokioIo<TlsStream<TcpStream>>);

impl Connection for H2Stream {
    fn connected(&self) -> Connected {
        Connected::new().negotiated_h2()
    }
}

impl hyper::rt::Read for H2Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for H2Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// The private etcd TestServer started: the process listening on `endpoint`, found by its
/// command line.
fn find_etcd_pid(endpoint: &str) -> Result<u32> {
    let needle = format!("--listen-client-urls={endpoint}");
    for entry in std::fs::read_dir("/proc").context("read /proc")? {
        let entry = entry.context("read /proc")?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // Processes may exit while we look: unreadable entries are skipped.
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline
            .split(|&b| b == 0)
            .any(|arg| arg == needle.as_bytes())
        {
            return Ok(pid);
        }
    }
    bail!("no process with {needle}")
}

/// A `kB` field of /proc/<pid>/status.
fn proc_status_kb(pid: u32, key: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("{key} missing in {path}"))
}

/// utime + stime of /proc/<pid>/stat, in clock ticks.
fn cpu_ticks(pid: &str) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    // The command name (field 2) may hold spaces; fields after it start with state (field 3).
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("malformed {path}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> Result<f64> {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .with_context(|| format!("malformed {path}"))
    };
    // utime is field 14, stime field 15: indexes 11 and 12 counting from state.
    Ok(field(11)? + field(12)?)
}

/// Clock ticks per second, the unit of /proc/<pid>/stat times (`getconf CLK_TCK`: sysconf is
/// unsafe to call directly here and nix gates it behind a feature the workspace does not enable).
fn clock_ticks() -> Result<f64> {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .context("run getconf CLK_TCK")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|t| *t > 0.0)
        .with_context(|| format!("getconf CLK_TCK printed {text:?}"))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|e| format!("unreadable: {e}"))
}

fn now_utc() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The q-quantile of sorted samples (nearest rank).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn median(samples: &[f64]) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    quantile(&s, 0.5)
}

fn mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

fn rate_cell(t: &Throughput) -> String {
    let mut s = format!(
        "{:.0}/s (p50 {:.1} ms, p99 {:.1} ms)",
        t.per_sec(),
        quantile(&t.latency_ms, 0.5),
        quantile(&t.latency_ms, 0.99)
    );
    if t.errors > 0 {
        s.push_str(&format!(
            "; {} of {} failed: {}",
            t.errors,
            t.n,
            t.first_error.as_deref().unwrap_or("")
        ));
    }
    s
}

fn print_report(args: &Args, runs: &[Run], started: &str, load_before: &str, load_after: &str) {
    let n = args.count;
    let conc = args.concurrency;
    let extra = (n / 5).max(1);
    let mut header = String::from("| measure |");
    let mut rule = String::from("|---|");
    for r in runs {
        header.push_str(&format!(" {} |", r.name));
        rule.push_str("---|");
    }
    header.push_str(" target |");
    rule.push_str("---|");
    println!("{header}\n{rule}");
    let row = |label: String, cell: &dyn Fn(&Run) -> String, target: &str| {
        let mut line = format!("| {label} |");
        for r in runs {
            line.push_str(&format!(" {} |", cell(r)));
        }
        line.push_str(&format!(" {target} |"));
        println!("{line}");
    };
    row(
        format!("ConfigMap creates/s, {n} × ~1 KiB, 1 HTTP/2 conn, {conc} in flight"),
        &|r| rate_cell(&r.create_h2),
        "≥ 2,000/s SQLite, ≥ 500/s etcd",
    );
    row(
        format!(
            "ConfigMap creates/s, {extra}, {MULTI_CLIENTS} HTTP/2 conns × {}",
            conc.div_ceil(MULTI_CLIENTS)
        ),
        &|r| rate_cell(&r.create_multi),
        "",
    );
    row(
        format!("ConfigMap creates/s, {extra}, kube-rs default client (HTTP/1.1 pool), {conc} in flight"),
        &|r| rate_cell(&r.create_h1),
        "",
    );
    row(
        format!("ConfigMap gets/s, {n}, 1 HTTP/2 conn, {conc} in flight"),
        &|r| rate_cell(&r.get_h2),
        "",
    );
    row(
        format!("Pod creates/s, {n}, 1 HTTP/2 conn, {conc} in flight"),
        &|r| rate_cell(&r.pod_create),
        "",
    );
    row(
        format!("List {n} pods, one call, until last byte (median of {LIST_SAMPLES})"),
        &|r| {
            format!(
                "{:.0} ms ({:.1} MiB)",
                median(&r.list_raw_ms),
                r.list_bytes as f64 / 1048576.0
            )
        },
        "≤ 200 ms",
    );
    row(
        format!("List {n} pods, one call, kube-rs typed `Api::list` (median of {LIST_SAMPLES})"),
        &|r| format!("{:.0} ms", median(&r.list_typed_ms)),
        "",
    );
    row(
        format!("List {n} pods, limit={PAGE_SIZE} pages, total (typed)"),
        &|r| {
            format!(
                "{:.0} ms ({} pages, {} items)",
                r.paged_ms, r.pages, r.paged_items
            )
        },
        "",
    );
    row(
        format!(
            "Watch delivery p50 / p99, {} watchers ({WATCH_CONNECTIONS} HTTP/2 conns), {} updates at {}/s",
            args.watchers, args.watch_updates, args.watch_rate
        ),
        &|r| {
            let w = &r.watch;
            let mut s = format!(
                "{:.1} / {:.1} ms (max {:.0} ms)",
                quantile(&w.latency_ms, 0.5),
                quantile(&w.latency_ms, 0.99),
                quantile(&w.latency_ms, 1.0)
            );
            if w.latency_ms.len() != w.expected || w.errors > 0 {
                s.push_str(&format!(
                    "; received {} of {} events, {} watch errors",
                    w.latency_ms.len(),
                    w.expected,
                    w.errors
                ));
            }
            s
        },
        "p99 ≤ 50 ms",
    );
    row(
        "Watch phase writes: achieved rate, patch p50 / p99".to_string(),
        &|r| {
            let w = &r.watch;
            let mut s = format!(
                "{:.0}/s, {:.1} / {:.1} ms",
                args.watch_updates as f64 / w.write_wall.as_secs_f64(),
                quantile(&w.write_latency_ms, 0.5),
                quantile(&w.write_latency_ms, 0.99)
            );
            if w.write_errors > 0 {
                s.push_str(&format!("; {} failed", w.write_errors));
            }
            s
        },
        "",
    );
    row(
        "Server RSS idle after start".to_string(),
        &|r| mib(r.rss_idle_kb),
        "≤ 30 MB",
    );
    row(
        "Server RSS after the run (peak)".to_string(),
        &|r| format!("{} ({})", mib(r.rss_after_kb), mib(r.hwm_kb)),
        "",
    );

    println!();
    println!("CPU seconds per phase (server / etcd / bench client) and wall time:");
    println!();
    for r in runs {
        println!(
            "| {} phase | wall | server CPU | etcd CPU | bench CPU |",
            r.name
        );
        println!("|---|---|---|---|---|");
        for p in &r.phases {
            println!(
                "| {} | {:.2} s | {:.2} s ({:.0}%) | {} | {:.2} s ({:.0}%) |",
                p.name,
                p.wall.as_secs_f64(),
                p.server_cpu,
                100.0 * p.server_cpu / p.wall.as_secs_f64(),
                p.etcd_cpu
                    .map(|c| format!("{c:.2} s ({:.0}%)", 100.0 * c / p.wall.as_secs_f64()))
                    .unwrap_or_else(|| "—".to_string()),
                p.bench_cpu,
                100.0 * p.bench_cpu / p.wall.as_secs_f64()
            );
        }
        println!();
        println!(
            "{} server log: {:.1} MiB",
            r.name,
            r.server_log_bytes as f64 / 1048576.0
        );
        println!();
    }
    println!(
        "Started {started}; load average before {load_before}, after {load_after}; {} CPUs; \
         server args: {:?}.",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        args.server_args
    );
}

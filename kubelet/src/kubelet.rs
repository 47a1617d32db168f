//! The kubelet as a whole (upstream's `Kubelet.Run`): connects to the runtime, registers the
//! node, keeps its Lease and status fresh, writes the CNI config, watches the pods bound to it
//! and runs one worker per pod, relisting the runtime every second (PLEG).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ContainerImage, Node, Pod};
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use kube::Client;
use oxlet_cri::{RemoteRuntime, Runtime};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, info_span, warn, Instrument};

use crate::backoff::BackoffMap;
use crate::cgroups::CgroupManager;
use crate::config::KubeletConfiguration;
use crate::error::{Error, Result};
use crate::events::KubeEventSink;
use crate::fieldpath::NodeAllocatable;
use crate::image_manager::ImageManager;
use crate::node::host::{self, HostReader, Quantity};
use crate::node::lease::{self, LeaseConfig};
use crate::node::register::{register, NodeSpec};
use crate::node::status::{self, NodeHealth, StaticStatus, StatusConfig, StatusSource};
use crate::pod_sync::{NodeFacts, PodContext, PodSettings};
use crate::pod_workers::PodWorkers;
use crate::prober::ProbeManager;
use crate::runtime_state;
use crate::volumes::{KubeVolumeSource, VolumeManager};

/// How the kubelet treats CNI configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CniMode {
    /// Write a bridge conflist for the node's pod CIDR into the runtime's CNI conf dir.
    Auto,
    /// Leave CNI to the cluster (a CNI DaemonSet, or a runtime already configured).
    None,
}

/// Everything `oxlet kubelet` is started with.
#[derive(Debug, Clone)]
pub struct KubeletOptions {
    /// Kubeconfig; None uses the in-cluster config or `$KUBECONFIG`/`~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// The KubeletConfiguration (defaults applied).
    pub config: KubeletConfiguration,
    /// Node name instead of the hostname.
    pub hostname_override: Option<String>,
    /// Node IPs to report instead of the detected one.
    pub node_ips: Vec<IpAddr>,
    /// `--node-labels`.
    pub node_labels: BTreeMap<String, String>,
    /// `--root-dir` (/var/lib/kubelet).
    pub root_dir: PathBuf,
    /// `--pod-logs-dir`-like location of pod log directories (/var/log/pods).
    pub pod_logs_dir: PathBuf,
    /// CNI handling.
    pub cni: CniMode,
    /// Name of the CNI network written in [`CniMode::Auto`].
    pub cni_network_name: String,
    /// Bridge device of that network.
    pub cni_bridge: String,
    /// How often the runtime is relisted.
    pub pleg_period: Duration,
}

impl Default for KubeletOptions {
    fn default() -> Self {
        Self {
            kubeconfig: None,
            config: KubeletConfiguration::default(),
            hostname_override: None,
            node_ips: Vec::new(),
            node_labels: BTreeMap::new(),
            root_dir: PathBuf::from("/var/lib/kubelet"),
            pod_logs_dir: PathBuf::from("/var/log/pods"),
            cni: CniMode::None,
            cni_network_name: "oxlet".into(),
            cni_bridge: "cni0".into(),
            pleg_period: Duration::from_secs(1),
        }
    }
}

/// Node health and images from CRI.
struct CriStatus {
    runtime: Arc<dyn Runtime>,
}

#[async_trait::async_trait]
impl StatusSource for CriStatus {
    async fn health(&self) -> NodeHealth {
        match self.runtime.status(false).await {
            Ok(s) => {
                let mut h = NodeHealth::default();
                for c in s.status.map(|s| s.conditions).unwrap_or_default() {
                    let msg = if c.message.is_empty() {
                        c.reason.clone()
                    } else {
                        c.message.clone()
                    };
                    match c.r#type.as_str() {
                        "RuntimeReady" => {
                            h.runtime_ready = c.status;
                            h.runtime_message = msg;
                        }
                        "NetworkReady" => {
                            h.network_ready = c.status;
                            h.network_message = msg;
                        }
                        _ => {}
                    }
                }
                h
            }
            Err(e) => NodeHealth {
                runtime_ready: false,
                runtime_message: format!(
                    "container runtime status check may not have completed yet: {e}"
                ),
                ..Default::default()
            },
        }
    }

    async fn images(&self) -> Option<Vec<ContainerImage>> {
        let images = self.runtime.list_images(None).await.ok()?;
        let mut out: Vec<ContainerImage> = images
            .into_iter()
            .map(|i| {
                let mut names = i.repo_digests.clone();
                names.extend(i.repo_tags.iter().cloned());
                ContainerImage {
                    names: Some(names),
                    size_bytes: Some(i.size as i64),
                }
            })
            .collect();
        // Upstream sorts by size, largest first, and reports at most 50.
        out.sort_by_key(|i| std::cmp::Reverse(i.size_bytes));
        out.truncate(50);
        Some(out)
    }
}

async fn client(kubeconfig: Option<&PathBuf>) -> Result<Client> {
    let err = |e: String| Error::ConfigDecode(format!("kubeconfig: {e}"));
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| err(e.to_string()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| err(e.to_string()))?,
    };
    Client::try_from(config).map_err(|e| err(e.to_string()))
}

/// Runs the kubelet until `cancel` fires. Pods keep running when the kubelet stops, as
/// upstream; the next start finds them again.
pub async fn run(opts: KubeletOptions, cancel: CancellationToken) -> Result<()> {
    let cfg = &opts.config;
    let client = client(opts.kubeconfig.as_ref()).await?;
    let io = |op: &'static str, p: &std::path::Path| {
        let path = p.display().to_string();
        move |source| Error::Io { op, path, source }
    };
    std::fs::create_dir_all(&opts.root_dir).map_err(io("create", &opts.root_dir))?;
    std::fs::create_dir_all(&opts.pod_logs_dir).map_err(io("create", &opts.pod_logs_dir))?;

    info!(endpoint = %cfg.container_runtime_endpoint, "connecting to the container runtime");
    let remote = tokio::select! {
        _ = cancel.cancelled() => return Ok(()),
        r = RemoteRuntime::connect_with_retry(&cfg.container_runtime_endpoint, Duration::from_secs(120)) => r,
    }
    .map_err(|e| Error::Runtime(e.to_string()))?;
    let runtime: Arc<dyn Runtime> = Arc::new(remote);
    let version = runtime
        .version()
        .await
        .map_err(|e| Error::Runtime(e.to_string()))?;
    let runtime_name = version.runtime_name.clone();
    info!(runtime = %runtime_name, version = %version.runtime_version, "container runtime ready");

    // Node facts.
    let reader = HostReader::default();
    let node_name = match &opts.hostname_override {
        Some(n) => n.to_lowercase(),
        None => reader.hostname()?,
    };
    let cap = reader.capacity(&opts.root_dir)?;
    let allocatable_list = host::allocatable(&cap, cfg)?;
    let q = |k: &str| {
        allocatable_list
            .get(k)
            .and_then(|q| Quantity::parse(&q.0).ok())
            .map(|q| q.0)
            .unwrap_or(0)
    };
    let allocatable = NodeAllocatable {
        cpu_milli: q("cpu"),
        memory_bytes: q("memory") / 1000,
        ephemeral_storage_bytes: q("ephemeral-storage") / 1000,
    };
    let node_ips: Vec<String> = if opts.node_ips.is_empty() {
        reader
            .internal_ip()
            .map(|ip| vec![ip.to_string()])
            .unwrap_or_default()
    } else {
        opts.node_ips.iter().map(|ip| ip.to_string()).collect()
    };
    let mut addresses = host::addresses(None, &node_name);
    addresses.splice(
        0..0,
        node_ips
            .iter()
            .map(|ip| k8s_openapi::api::core::v1::NodeAddress {
                type_: "InternalIP".into(),
                address: ip.clone(),
            }),
    );
    let base = StaticStatus {
        capacity: host::capacity(&cap, cfg.max_pods),
        allocatable: allocatable_list.clone(),
        node_info: reader.node_info(
            None,
            &format!("{}://{}", runtime_name, version.runtime_version),
        ),
        addresses,
        kubelet_port: cfg.port,
    };
    let source: Arc<dyn StatusSource> = Arc::new(CriStatus {
        runtime: runtime.clone(),
    });
    let health = source.health().await;
    let images = source.images().await;
    let initial = status::status_at(&base, &[], &health, images, jiff::Timestamp::now());
    let mut spec = NodeSpec::new(&node_name, &opts.node_labels);
    spec.taints = cfg.register_with_taints.clone();
    spec.pod_cidr = cfg.pod_cidr.clone();
    let node = tokio::select! {
        _ = cancel.cancelled() => return Ok(()),
        n = register(&client, &spec, &initial) => n?,
    };

    let tasks = TaskTracker::new();
    let root = cancel.clone();
    let spawn =
        |name: &'static str,
         fut: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>| {
            let root = root.clone();
            tasks.spawn(
                async move {
                    fut.await;
                    if !root.is_cancelled() {
                        error!(task = name, "kubelet task ended unexpectedly; stopping");
                        root.cancel();
                    }
                }
                .instrument(info_span!("task", name)),
            );
        };
    spawn(
        "node_lease",
        Box::pin(lease::run(
            client.clone(),
            &node,
            LeaseConfig::from_duration_seconds(cfg.node_lease_duration_seconds),
            cancel.child_token(),
        )),
    );
    spawn(
        "node_status",
        Box::pin(status::run(
            client.clone(),
            node_name.clone(),
            base,
            source,
            StatusConfig::from_config(cfg),
            node.status.clone(),
            cancel.child_token(),
        )),
    );
    if opts.cni == CniMode::Auto {
        spawn(
            "cni_config",
            Box::pin(cni_config_loop(
                client.clone(),
                runtime.clone(),
                node_name.clone(),
                cfg.pod_cidr.clone(),
                opts.clone(),
                cancel.child_token(),
            )),
        );
    }

    // Pods.
    let events = KubeEventSink::start(client.clone(), node_name.clone(), cancel.child_token());
    let (probe_tx, mut probe_rx) = tokio::sync::mpsc::unbounded_channel();
    let cgroups = match CgroupManager::detect(&cfg.cgroup_root) {
        Ok(cg) => {
            if let Err(e) = cg.ensure_qos_cgroups() {
                warn!(error = %e, "creating QoS cgroups failed; the runtime creates pod cgroups");
            }
            Some(cg)
        }
        Err(e) => {
            warn!(error = %e, "cgroups not usable; pod cgroups left to the runtime");
            None
        }
    };
    let ctx = Arc::new(PodContext {
        client: client.clone(),
        runtime: runtime.clone(),
        runtime_name: runtime_name.clone(),
        events: events.clone(),
        images: ImageManager::new(runtime.clone(), events.clone()),
        volumes: VolumeManager::new(
            &opts.root_dir,
            Arc::new(KubeVolumeSource::new(client.clone())),
        ),
        probes: ProbeManager::new(
            runtime.clone(),
            events.clone(),
            probe_tx,
            cancel.child_token(),
        ),
        cgroups,
        env_source: Arc::new(crate::container::KubeEnvSource::new(client.clone())),
        node: NodeFacts {
            name: node_name.clone(),
            host_ips: node_ips.clone(),
            allocatable,
        },
        settings: PodSettings {
            cluster_dns: cfg.cluster_dns.clone(),
            cluster_domain: cfg.cluster_domain.clone(),
            resolv_conf: PathBuf::from(&cfg.resolv_conf),
            pod_logs_dir: opts.pod_logs_dir.clone(),
            cgroup_root: cfg.cgroup_root.clone(),
        },
        container_backoff: BackoffMap::containers(),
    });
    let workers = Arc::new(PodWorkers::new(ctx.clone(), cancel.child_token()));
    let known: Arc<std::sync::Mutex<Option<HashSet<String>>>> =
        Arc::new(std::sync::Mutex::new(None));

    spawn(
        "pod_source",
        Box::pin(pod_source(
            client.clone(),
            node_name.clone(),
            workers.clone(),
            known.clone(),
            cancel.child_token(),
        )),
    );
    let static_uids: Arc<std::sync::Mutex<HashSet<String>>> = Arc::default();
    if !cfg.static_pod_path.is_empty() {
        spawn(
            "static_pods",
            Box::pin(crate::static_pods::run(
                PathBuf::from(&cfg.static_pod_path),
                client.clone(),
                node_name.clone(),
                workers.clone(),
                static_uids.clone(),
                cancel.child_token(),
            )),
        );
    }
    spawn(
        "pleg",
        Box::pin(pleg(
            runtime.clone(),
            workers.clone(),
            known.clone(),
            static_uids.clone(),
            opts.pleg_period,
            cancel.child_token(),
        )),
    );
    {
        let workers = workers.clone();
        let cancel = cancel.child_token();
        spawn(
            "probe_updates",
            Box::pin(async move {
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        u = probe_rx.recv() => match u {
                            Some(u) => workers.wake(&u.pod_uid),
                            None => break,
                        }
                    }
                }
            }),
        );
    }
    {
        let server_cfg = crate::server::ServerConfig {
            bind: std::net::SocketAddr::new(
                cfg.address.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
                cfg.port as u16,
            ),
            cert_dir: opts.root_dir.join("pki"),
            tls_cert_file: (!cfg.tls_cert_file.is_empty())
                .then(|| PathBuf::from(&cfg.tls_cert_file)),
            tls_private_key_file: (!cfg.tls_private_key_file.is_empty())
                .then(|| PathBuf::from(&cfg.tls_private_key_file)),
            client_ca_file: client_ca_file(cfg),
            node_name: node_name.clone(),
            node_ips: node_ips.iter().filter_map(|ip| ip.parse().ok()).collect(),
            healthz_port: (cfg.healthz_port > 0).then_some(cfg.healthz_port as u16),
        };
        let runtime = runtime.clone();
        let cancel = cancel.child_token();
        spawn(
            "server",
            Box::pin(async move {
                if let Err(e) = crate::server::serve(server_cfg, runtime, cancel.clone()).await {
                    error!(error = %e, "kubelet server failed");
                }
                // The server ending on its own is only fine at shutdown.
                cancel.cancelled().await;
            }),
        );
    }
    info!(node = %node_name, "kubelet running");
    cancel.cancelled().await;
    info!("kubelet stopping; pods keep running");
    workers.shutdown().await;
    tasks.close();
    tasks.wait().await;
    Ok(())
}

fn client_ca_file(cfg: &KubeletConfiguration) -> Option<PathBuf> {
    cfg.authentication
        .as_ref()
        .and_then(|a| a.get("x509"))
        .and_then(|x| x.get("clientCAFile"))
        .and_then(|f| f.as_str())
        .filter(|f| !f.is_empty())
        .map(PathBuf::from)
}

/// Watches the pods bound to this node and feeds the workers.
async fn pod_source(
    client: Client,
    node_name: String,
    workers: Arc<PodWorkers>,
    known: Arc<std::sync::Mutex<Option<HashSet<String>>>>,
    cancel: CancellationToken,
) {
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
    let mut stream = watcher::watcher(api, config).boxed();
    let mut init: HashSet<String> = HashSet::new();
    let mut current: HashSet<String> = HashSet::new();
    loop {
        let ev = tokio::select! {
            _ = cancel.cancelled() => return,
            ev = stream.try_next() => ev,
        };
        match ev {
            Ok(Some(Event::Init)) => init.clear(),
            Ok(Some(Event::InitApply(pod))) if crate::static_pods::is_mirror(&pod) => {}
            Ok(Some(Event::Apply(pod))) | Ok(Some(Event::Delete(pod)))
                if crate::static_pods::is_mirror(&pod) => {}
            Ok(Some(Event::InitApply(pod))) => {
                if let Some(uid) = pod.metadata.uid.clone() {
                    init.insert(uid);
                }
                workers.update(Arc::new(pod));
            }
            Ok(Some(Event::InitDone)) => {
                // Pods that vanished while the watch was down are deleted now.
                for gone in current.difference(&init) {
                    workers.remove(gone);
                }
                current = std::mem::take(&mut init);
                if let Ok(mut k) = known.lock() {
                    *k = Some(current.clone());
                }
            }
            Ok(Some(Event::Apply(pod))) => {
                if let Some(uid) = pod.metadata.uid.clone() {
                    current.insert(uid.clone());
                    if let Ok(mut k) = known.lock() {
                        if let Some(k) = k.as_mut() {
                            k.insert(uid);
                        }
                    }
                }
                workers.update(Arc::new(pod));
            }
            Ok(Some(Event::Delete(pod))) => {
                if let Some(uid) = pod.metadata.uid.as_deref() {
                    current.remove(uid);
                    if let Ok(mut k) = known.lock() {
                        if let Some(k) = k.as_mut() {
                            k.remove(uid);
                        }
                    }
                    workers.remove(uid);
                }
            }
            Ok(None) => return,
            Err(e) => {
                warn!(error = %e, "pod watch failed; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

/// Relists the runtime every `period`; wakes the worker of every pod whose containers or
/// sandboxes changed, and tears down runtime pods the API does not know.
async fn pleg(
    runtime: Arc<dyn Runtime>,
    workers: Arc<PodWorkers>,
    known: Arc<std::sync::Mutex<Option<HashSet<String>>>>,
    static_uids: Arc<std::sync::Mutex<HashSet<String>>>,
    period: Duration,
    cancel: CancellationToken,
) {
    let mut last: HashMap<String, Vec<(String, u8)>> = HashMap::new();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut orphan_check = 0u32;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let pods = match runtime_state::list_pods(runtime.as_ref()).await {
            Ok(p) => p,
            Err(e) => {
                debug!(error = %e, "relist failed");
                continue;
            }
        };
        let mut now: HashMap<String, Vec<(String, u8)>> = HashMap::new();
        for (uid, p) in &pods {
            let fp = p.fingerprint();
            if last.get(uid) != Some(&fp) {
                workers.wake(uid);
            }
            now.insert(uid.clone(), fp);
        }
        last = now;
        orphan_check += 1;
        if orphan_check % 10 == 0 {
            let known = known.lock().ok().and_then(|k| k.clone());
            if let Some(known) = known {
                let active = workers.uids();
                let statics = static_uids.lock().map(|s| s.clone()).unwrap_or_default();
                for uid in pods.keys() {
                    if !known.contains(uid) && !active.contains(uid) && !statics.contains(uid) {
                        info!(uid = %uid, "runtime pod unknown to the API; tearing it down");
                        workers.kill_orphan(uid);
                    }
                }
            }
        }
    }
}

/// Writes the bridge conflist once the pod CIDR is known (from the Node, or the config).
async fn cni_config_loop(
    client: Client,
    runtime: Arc<dyn Runtime>,
    node_name: String,
    configured: Option<String>,
    opts: KubeletOptions,
    cancel: CancellationToken,
) {
    let api: Api<Node> = Api::all(client);
    let conf_dir = crate::cni::runtime_conf_dir(runtime.as_ref()).await;
    let ipam_dir = opts.root_dir.join("cni/networks");
    let mut written: Option<String> = None;
    loop {
        let cidr = match api.get_opt(&node_name).await {
            Ok(Some(n)) => n
                .spec
                .and_then(|s| s.pod_cidr)
                .or_else(|| configured.clone()),
            Ok(None) => configured.clone(),
            Err(e) => {
                debug!(error = %e, "reading node for podCIDR failed");
                None
            }
        };
        if let Some(cidr) = cidr {
            if written.as_deref() != Some(cidr.as_str()) {
                let text = crate::cni::conflist(
                    &opts.cni_network_name,
                    &opts.cni_bridge,
                    &cidr,
                    &ipam_dir,
                );
                match crate::cni::write_conflist(&conf_dir, &text) {
                    Ok(_) => {
                        info!(%cidr, dir = %conf_dir.display(), "CNI config written");
                        written = Some(cidr);
                    }
                    Err(e) => warn!(error = %e, "writing CNI config failed"),
                }
            }
        } else if written.is_none() {
            debug!("waiting for the node's podCIDR");
        }
        let wait = if written.is_some() { 30 } else { 2 };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(wait)) => {}
        }
    }
}

//! `oxlet agent`: the node half of a cluster (like `k3s agent`) in one process: a managed
//! private containerd with a registry mirror serving the bundled images, the kubelet and the
//! service proxy, against any API server.
//!
//! One tokio runtime, one shutdown token. containerd and the registry are child processes in
//! process groups of their own; a supervisor task per child turns an unexpected exit into an
//! error that stops the agent (exit code 1) rather than restarting it: the service manager
//! (systemd, or the operator) decides about restarts, as for upstream's kubelet.
//!
//! Stopping (SIGTERM/SIGINT) stops the proxy and the kubelet first, then the registry and
//! containerd by PID (SIGTERM, SIGKILL after a grace period). Pods keep running, as with
//! upstream's kubelet: their containerd shims outlive containerd, and the next start
//! reconnects to them.

pub mod containerd;
pub mod process;
pub mod registry;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use kube::config::{KubeConfigOptions, Kubeconfig};
use oxlet_kubelet::KubeletOptions;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::prereq;

/// EX_USAGE: invalid flags, reported before anything starts.
const EX_USAGE: u8 = 64;
/// How long the kubelet and the proxy get to finish after shutdown.
const COMPONENT_GRACE: Duration = Duration::from_secs(15);
/// How long containerd may take to open its socket.
const CONTAINERD_START: Duration = Duration::from_secs(60);

/// Flags of `oxlet agent` (upstream kubelet names where one exists).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Kubeconfig of the API server to join (used by the kubelet and the proxy).
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// Directory for containerd, the registry mirror, bundled images (`<dir>/images`), the
    /// kubelet's files and pod logs.
    #[arg(long, default_value = "/var/lib/oxlet/agent")]
    pub data_dir: PathBuf,
    /// Use this CRI endpoint instead of starting a private containerd (and no registry mirror).
    #[arg(long)]
    pub container_runtime_endpoint: Option<String>,
    /// The node's identity and the kubelet's cgroup and network names.
    #[command(flatten)]
    pub node: NodeArgs,
    /// Labels to add when registering, `k=v,k2=v2`.
    #[arg(long, value_delimiter = ',')]
    pub node_labels: Vec<String>,
    /// Taints to add when registering, `key=value:Effect,key:Effect`.
    #[arg(long, value_delimiter = ',')]
    pub register_with_taints: Vec<String>,
    /// Pod CIDR when the API server assigns none.
    #[arg(long)]
    pub pod_cidr: Option<String>,
    /// Pod CIDR range of the whole cluster, for the proxy's masquerade rules.
    #[arg(long)]
    pub cluster_cidr: Option<String>,
    /// Run no service proxy (another one handles Services).
    #[arg(long)]
    pub disable_proxy: bool,
    /// CA bundle the kubelet server verifies client certificates against (the API server's
    /// kubelet client certificate); without it the kubelet server accepts any client.
    #[arg(long)]
    pub client_ca_file: Option<PathBuf>,
}

/// Node flags `oxlet agent` and `oxlet standalone` share.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    /// Node IP(s) to report, comma separated (default: the address of the default route).
    #[arg(long, value_delimiter = ',')]
    pub node_ip: Vec<IpAddr>,
    /// Node name instead of the hostname.
    #[arg(long)]
    pub hostname_override: Option<String>,
    /// Root cgroup for pods (cgroupRoot).
    #[arg(long)]
    pub cgroup_root: Option<String>,
    /// Name of the CNI network the kubelet writes.
    #[arg(long, default_value = "oxlet", hide = true)]
    pub cni_network_name: String,
}

/// The private containerd and its registry mirror.
#[derive(Debug, Clone)]
pub struct Managed {
    /// containerd's files.
    pub containerd: containerd::Layout,
    /// The registry's files.
    pub registry: registry::Layout,
    /// Bundled images (OCI archives or layouts).
    pub images_dir: PathBuf,
}

/// The validated agent configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// The node's name (kubelet and proxy agree on it).
    pub node_name: String,
    /// Set when the agent runs its own containerd.
    pub managed: Option<Managed>,
    /// The kubelet's options.
    pub kubelet: KubeletOptions,
    /// The proxy's configuration, unless disabled.
    pub proxy: Option<oxlet_proxy::config::Config>,
    /// The kubeconfig both use.
    pub kubeconfig: PathBuf,
}

impl Config {
    /// What must hold before starting (binaries, free ports).
    pub fn needs(&self) -> prereq::Needs {
        let port = |ip: &str, port: i32| {
            let ip: IpAddr = ip.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            SocketAddr::new(ip, port as u16)
        };
        let k = &self.kubelet.config;
        let mut ports = vec![(port(&k.address, k.port), "the kubelet server".to_string())];
        if k.healthz_port > 0 {
            ports.push((
                port("127.0.0.1", k.healthz_port),
                "the kubelet's /healthz".into(),
            ));
        }
        if let Some(p) = &self.proxy {
            ports.extend(
                p.healthz_bind_address
                    .map(|a| (a, "the proxy's /healthz".into())),
            );
            ports.extend(
                p.metrics_bind_address
                    .map(|a| (a, "the proxy's /metrics".into())),
            );
        }
        prereq::Needs {
            managed_runtime: self.managed.is_some(),
            proxy: self.proxy.is_some(),
            ports,
        }
    }
}

/// The node name as the kubelet computes it: the override or the kernel's hostname, lower case.
fn node_name(hostname_override: Option<&str>) -> anyhow::Result<String> {
    match hostname_override {
        Some(h) if !h.is_empty() => Ok(h.to_lowercase()),
        _ => Ok(std::fs::read_to_string("/proc/sys/kernel/hostname")
            .context("read /proc/sys/kernel/hostname")?
            .trim()
            .to_lowercase()),
    }
}

/// Flags into the configuration (no side effects).
pub fn config(args: &Args) -> anyhow::Result<Config> {
    let node_name = node_name(args.node.hostname_override.as_deref())?;
    let managed = match &args.container_runtime_endpoint {
        Some(_) => None,
        None => Some(Managed {
            containerd: containerd::Layout::new(args.data_dir.join("containerd")),
            registry: registry::Layout::new(args.data_dir.join("registry")),
            images_dir: args.data_dir.join("images"),
        }),
    };
    let endpoint = match (&args.container_runtime_endpoint, &managed) {
        (Some(e), _) => e.clone(),
        (None, Some(m)) => m.containerd.endpoint(),
        (None, None) => anyhow::bail!("no container runtime: neither managed nor given"),
    };
    let kubelet_args = super::kubelet::Args {
        kubeconfig: Some(args.kubeconfig.clone()),
        config: None,
        container_runtime_endpoint: Some(endpoint),
        hostname_override: Some(node_name.clone()),
        node_ip: args.node.node_ip.clone(),
        node_labels: args.node_labels.clone(),
        register_with_taints: args.register_with_taints.clone(),
        root_dir: args.data_dir.join("kubelet"),
        pod_manifest_path: None,
        cgroup_root: args.node.cgroup_root.clone(),
        max_pods: None,
        pod_cidr: args.pod_cidr.clone(),
        cni_config: "auto".into(),
        cni_network_name: args.node.cni_network_name.clone(),
    };
    let mut kubelet = super::kubelet::options(&kubelet_args)?;
    let pod_logs = args.data_dir.join("logs").join("pods");
    kubelet.config.pod_logs_dir = pod_logs.display().to_string();
    kubelet.pod_logs_dir = pod_logs;
    if let Some(ca) = &args.client_ca_file {
        kubelet.config.authentication = serde_json::from_value(serde_json::json!({
            "x509": { "clientCAFile": ca }
        }))
        .context("--client-ca-file")?;
    }
    let proxy = if args.disable_proxy {
        None
    } else {
        use oxlet_proxy::config::{KubeProxyConfiguration, Overrides};
        let mut file = KubeProxyConfiguration::default();
        file.set_defaults();
        file.apply(&Overrides {
            kubeconfig: Some(args.kubeconfig.display().to_string()),
            hostname_override: Some(node_name.clone()),
            mode: Some("nftables".into()),
            cluster_cidr: args.cluster_cidr.clone(),
            ..Default::default()
        });
        Some(file.validate().context("proxy configuration")?)
    };
    Ok(Config {
        data_dir: args.data_dir.clone(),
        node_name,
        managed,
        kubelet,
        proxy,
        kubeconfig: args.kubeconfig.clone(),
    })
}

/// Runs the agent until SIGTERM/SIGINT.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let cfg = match config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("oxlet agent: {e:#}");
            return Ok(ExitCode::from(EX_USAGE));
        }
    };
    if !cfg.kubeconfig.is_file() {
        eprintln!(
            "oxlet agent: --kubeconfig {}: no such file",
            cfg.kubeconfig.display()
        );
        return Ok(ExitCode::from(EX_USAGE));
    }
    let problems = prereq::check(&prereq::Host::current(), &cfg.needs());
    if !problems.is_empty() {
        return Ok(prereq::report("agent", &problems));
    }
    let shutdown = CancellationToken::new();
    super::signals::spawn_signal_handler(shutdown.clone())?;
    serve(cfg, shutdown, None).await?;
    Ok(ExitCode::SUCCESS)
}

type Tasks = JoinSet<(&'static str, anyhow::Result<()>)>;

/// Runs the node until `shutdown` fires (Ok) or a part of it fails (Err, after stopping the
/// rest and cancelling `shutdown`). Progress lines go to stdout; `started` is told when the
/// runtime is up and the kubelet and proxy have been started.
pub async fn serve(
    cfg: Config,
    shutdown: CancellationToken,
    started: Option<oneshot::Sender<()>>,
) -> anyhow::Result<()> {
    let stop_processes = CancellationToken::new();
    let mut processes = Tasks::new();
    let result = run_node(cfg, &shutdown, &stop_processes, &mut processes, started).await;
    if result.is_err() {
        shutdown.cancel();
    }
    // The kubelet and the proxy are stopped by now; the runtime goes last.
    stop_processes.cancel();
    while let Some(joined) = processes.join_next().await {
        match joined {
            Ok((_, Ok(()))) => {}
            Ok((name, Err(e))) => tracing::error!(process = name, "{e:#}"),
            Err(e) => tracing::error!(error = %e, "process supervisor panicked"),
        }
    }
    result
}

async fn run_node(
    cfg: Config,
    shutdown: &CancellationToken,
    stop_processes: &CancellationToken,
    processes: &mut Tasks,
    started: Option<oneshot::Sender<()>>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("create {}", cfg.data_dir.display()))?;
    if let Some(managed) = &cfg.managed {
        if !start_runtime(managed, shutdown, stop_processes, processes).await? {
            return Ok(());
        }
    }

    let mut components = Tasks::new();
    {
        let opts = cfg.kubelet.clone();
        let token = shutdown.child_token();
        components.spawn(
            async move {
                let r = oxlet_kubelet::run(opts, token).await;
                ("kubelet", r.map_err(anyhow::Error::from))
            }
            .instrument(tracing::info_span!("kubelet")),
        );
    }
    if let Some(proxy) = cfg.proxy.clone() {
        let client = client(&cfg.kubeconfig).await?;
        let token = shutdown.child_token();
        components.spawn(
            async move {
                let r = oxlet_proxy::run(proxy, client, token).await;
                ("proxy", r.map_err(anyhow::Error::from))
            }
            .instrument(tracing::info_span!("proxy")),
        );
    }
    println!(
        "oxlet: node {} starting (kubelet{})",
        cfg.node_name,
        if cfg.proxy.is_some() { ", proxy" } else { "" }
    );
    if let Some(tx) = started {
        let _ = tx.send(());
    }

    // Shutdown is checked first: the proxy may finish before this task notices the token,
    // and a part that ended because of shutdown has not failed.
    let result = tokio::select! {
        biased;
        _ = shutdown.cancelled() => Ok(()),
        Some(joined) = components.join_next() => ended(joined, shutdown),
        Some(joined) = processes.join_next() => ended(joined, shutdown),
    };
    if let Err(e) = &result {
        tracing::error!("{e:#}; stopping");
        shutdown.cancel();
    }
    let drained = tokio::time::timeout(COMPONENT_GRACE, async {
        while let Some(joined) = components.join_next().await {
            match joined {
                Ok((name, Ok(()))) => tracing::info!(component = name, "stopped"),
                Ok((name, Err(e))) => tracing::error!(component = name, "{e:#}"),
                Err(e) => tracing::error!(error = %e, "component task panicked"),
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "kubelet/proxy still busy {COMPONENT_GRACE:?} after shutdown; abandoning them"
        );
        components.abort_all();
    }
    result
}

/// What a supervised task's end means: a failure, unless it ended cleanly at shutdown.
fn ended(
    joined: Result<(&'static str, anyhow::Result<()>), tokio::task::JoinError>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    match joined {
        Ok((name, Ok(()))) if shutdown.is_cancelled() => {
            tracing::info!(component = name, "stopped");
            Ok(())
        }
        Ok((name, Ok(()))) => Err(anyhow::anyhow!("{name} ended unexpectedly")),
        Ok((name, Err(e))) => Err(e.context(format!("{name} failed"))),
        Err(e) => Err(anyhow::anyhow!("a task panicked: {e}")),
    }
}

/// Starts the registry (when there are bundled images) and containerd, waits for containerd
/// and loads the images into the registry. Returns false when shutdown came first.
async fn start_runtime(
    m: &Managed,
    shutdown: &CancellationToken,
    stop_processes: &CancellationToken,
    processes: &mut Tasks,
) -> anyhow::Result<bool> {
    m.containerd.check()?;
    m.containerd.write()?;
    std::fs::create_dir_all(&m.registry.dir)
        .with_context(|| format!("create {}", m.registry.dir.display()))?;
    let images = registry::scan(&m.images_dir)?;
    let mirror = if images.is_empty() {
        println!(
            "oxlet: no bundled images in {}; pods pull from their registries",
            m.images_dir.display()
        );
        // No mirror: drop those of an earlier run.
        let certs_d = m.containerd.certs_d();
        std::fs::remove_dir_all(&certs_d)
            .and_then(|()| std::fs::create_dir_all(&certs_d))
            .with_context(|| format!("empty {}", certs_d.display()))?;
        None
    } else {
        println!(
            "oxlet: waiting for the image registry ({} bundled images)",
            images.len()
        );
        let (process, addr) = registry::start(&m.registry).await?;
        registry::write_mirrors(
            &m.containerd.certs_d(),
            &addr,
            &registry::mirrored_hosts(&images),
        )?;
        let stop = stop_processes.clone();
        processes.spawn(async move {
            (
                "registry",
                process.supervise(stop, registry::STOP_GRACE).await,
            )
        });
        Some(addr)
    };

    let mut process = m.containerd.spawn().await?;
    println!(
        "oxlet: waiting for containerd ({})",
        m.containerd.socket().display()
    );
    tokio::select! {
        r = containerd::wait_ready(&m.containerd, &mut process, CONTAINERD_START) => {
            if let Err(e) = r {
                process.stop(containerd::STOP_GRACE).await;
                return Err(e);
            }
        }
        _ = shutdown.cancelled() => {
            process.stop(containerd::STOP_GRACE).await;
            return Ok(false);
        }
    }
    let stop = stop_processes.clone();
    processes.spawn(async move {
        (
            "containerd",
            process.supervise(stop, containerd::STOP_GRACE).await,
        )
    });

    if let Some(addr) = mirror {
        tokio::select! {
            r = registry::push(&m.registry, &addr, &images) => r.context("load the bundled images into the registry")?,
            _ = shutdown.cancelled() => return Ok(false),
        }
    }
    Ok(true)
}

async fn client(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let kc = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("read kubeconfig {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("load kubeconfig {}", kubeconfig.display()))?;
    kube::Client::try_from(config).context("build the API client")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(extra: &[&str]) -> Args {
        let mut argv = vec!["agent", "--kubeconfig", "/etc/kc", "--data-dir", "/d"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).expect("flags").args
    }

    #[test]
    fn managed_runtime_paths_live_under_the_data_dir() {
        let c = config(&parse(&[
            "--hostname-override",
            "Node-A",
            "--node-labels",
            "a=b",
        ]))
        .expect("config");
        assert_eq!(c.node_name, "node-a");
        assert_eq!(c.kubelet.hostname_override.as_deref(), Some("node-a"));
        assert_eq!(
            c.kubelet.config.container_runtime_endpoint,
            "unix:///d/containerd/containerd.sock"
        );
        assert_eq!(c.kubelet.root_dir, PathBuf::from("/d/kubelet"));
        assert_eq!(c.kubelet.pod_logs_dir, PathBuf::from("/d/logs/pods"));
        assert_eq!(c.kubelet.cni, oxlet_kubelet::CniMode::Auto);
        assert_eq!(c.kubelet.node_labels["a"], "b");
        let m = c.managed.as_ref().expect("managed");
        assert_eq!(m.images_dir, PathBuf::from("/d/images"));
        assert_eq!(m.registry.dir, PathBuf::from("/d/registry"));
        let p = c.proxy.as_ref().expect("proxy");
        assert_eq!(p.mode, oxlet_proxy::config::ProxyMode::Nftables);
        assert_eq!(p.hostname_override.as_deref(), Some("node-a"));
        let needs = c.needs();
        assert!(needs.managed_runtime && needs.proxy);
        assert_eq!(needs.ports.len(), 4, "{:?}", needs.ports);
    }

    #[test]
    fn an_external_runtime_and_no_proxy() {
        let c = config(&parse(&[
            "--container-runtime-endpoint",
            "unix:///run/containerd/containerd.sock",
            "--disable-proxy",
            "--client-ca-file",
            "/ca.crt",
        ]))
        .expect("config");
        assert!(c.managed.is_none());
        assert!(c.proxy.is_none());
        assert_eq!(
            c.kubelet.config.container_runtime_endpoint,
            "unix:///run/containerd/containerd.sock"
        );
        let ca = serde_json::to_value(&c.kubelet.config.authentication).expect("json");
        assert_eq!(ca["x509"]["clientCAFile"], "/ca.crt");
        assert!(!c.needs().managed_runtime);
    }

    #[test]
    fn bad_flags_are_config_errors() {
        assert!(config(&parse(&["--register-with-taints", "a=b:Sometimes"])).is_err());
        assert!(config(&parse(&["--node-labels", "novalue"])).is_err());
    }
}

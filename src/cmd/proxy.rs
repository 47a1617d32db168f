//! `oxlet proxy`: the service proxy, with kube-proxy's flag names and config file.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use kube::config::{KubeConfigOptions, Kubeconfig};
use oxlet_proxy::config::{self, Config, KubeProxyConfiguration, Overrides};
use tokio_util::sync::CancellationToken;

/// EX_USAGE: invalid flags or config, reported before anything is bound or written.
const EX_USAGE: u8 = 64;

/// Flags of `oxlet proxy` (upstream kube-proxy names).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// KubeProxyConfiguration file (kubeproxy.config.k8s.io/v1alpha1); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Kubeconfig file; without it (and without clientConnection.kubeconfig) the config is
    /// inferred (in-cluster or $KUBECONFIG).
    #[arg(long)]
    kubeconfig: Option<String>,
    /// Node name to use instead of the hostname.
    #[arg(long)]
    hostname_override: Option<String>,
    /// Rule backend: nftables or iptables.
    #[arg(long)]
    proxy_mode: Option<String>,
    /// Pod CIDR(s) of the cluster, comma separated.
    #[arg(long)]
    cluster_cidr: Option<String>,
    /// CIDRs (or "primary") selecting node addresses that accept NodePorts, comma separated.
    #[arg(long, value_delimiter = ',')]
    nodeport_addresses: Option<Vec<String>>,
    /// ip:port of /healthz ("" disables it).
    #[arg(long)]
    healthz_bind_address: Option<String>,
    /// ip:port of /metrics ("" disables it).
    #[arg(long)]
    metrics_bind_address: Option<String>,
    /// Masquerade all traffic sent to Service IPs.
    #[arg(long)]
    masquerade_all: bool,
    /// iptables mode: NodePorts also answer on 127.0.0.0/8 (sets route_localnet). Off unless
    /// given, unlike upstream's default.
    #[arg(long)]
    iptables_localhost_nodeports: bool,
    /// Remove every rule the proxy installed (both modes) and exit.
    #[arg(long)]
    cleanup: bool,
    /// oxlet-specific (tests): program rules inside this network namespace (a path such as
    /// /var/run/netns/NAME) via nsenter.
    #[arg(long)]
    netns: Option<String>,
}

/// Reads, merges and validates the configuration; errors name the field or flag.
fn load(args: &Args) -> anyhow::Result<Config> {
    let mut file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--config: read {}", path.display()))?;
            let (file, warnings) =
                config::parse(&text).with_context(|| format!("--config {}", path.display()))?;
            for w in warnings {
                tracing::warn!(file = %path.display(), "{w}");
            }
            file
        }
        None => KubeProxyConfiguration::default(),
    };
    file.set_defaults();
    file.apply(&Overrides {
        kubeconfig: args.kubeconfig.clone(),
        hostname_override: args.hostname_override.clone(),
        mode: args.proxy_mode.clone(),
        cluster_cidr: args.cluster_cidr.clone(),
        node_port_addresses: args.nodeport_addresses.clone(),
        healthz_bind_address: args.healthz_bind_address.clone(),
        metrics_bind_address: args.metrics_bind_address.clone(),
        masquerade_all: args.masquerade_all.then_some(true),
        localhost_node_ports: args.iptables_localhost_nodeports.then_some(true),
    });
    let mut config = file.validate()?;
    if let Some(ns) = &args.netns {
        if !std::path::Path::new(ns).exists() {
            anyhow::bail!("--netns: {ns} does not exist");
        }
        config.netns = Some(ns.clone());
    }
    Ok(config)
}

async fn client(config: &Config) -> anyhow::Result<kube::Client> {
    let kube_config = match &config.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("load kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("infer the API server config")?,
    };
    kube::Client::try_from(kube_config).context("build the API client")
}

/// Runs the proxy (or `--cleanup`).
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = match load(&args) {
        Ok(c) => c,
        Err(err) => {
            eprintln!("oxlet proxy: {err:#}");
            return Ok(ExitCode::from(EX_USAGE));
        }
    };
    if args.cleanup {
        let errors = oxlet_proxy::cleanup(config.netns.as_deref()).await;
        for err in &errors {
            tracing::error!(%err, "cleanup failed");
        }
        return Ok(if errors.is_empty() {
            tracing::info!("removed the proxy's rules");
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let client = client(&config).await?;
    let shutdown = CancellationToken::new();
    super::signals::spawn_signal_handler(shutdown.clone())?;
    oxlet_proxy::run(config, client, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

//! `oxlet kubelet`: the kubelet against any API server, with upstream's flag names.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use k8s_openapi::api::core::v1::Taint;
use oxlet_kubelet::{config, CniMode, KubeletOptions};
use tokio_util::sync::CancellationToken;

/// EX_USAGE: invalid flags or config, reported before anything starts.
const EX_USAGE: u8 = 64;

/// Flags of `oxlet kubelet` (upstream kubelet names; flags override the config file).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Kubeconfig for the API server; without it the config is inferred (in-cluster or
    /// $KUBECONFIG).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// KubeletConfiguration file (kubelet.config.k8s.io/v1beta1).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// CRI endpoint, e.g. unix:///run/containerd/containerd.sock.
    #[arg(long)]
    pub container_runtime_endpoint: Option<String>,
    /// Node name instead of the hostname.
    #[arg(long)]
    pub hostname_override: Option<String>,
    /// Node IP(s) to report, comma separated (default: the address of the default route).
    #[arg(long, value_delimiter = ',')]
    pub node_ip: Vec<IpAddr>,
    /// Labels to add when registering, `k=v,k2=v2`.
    #[arg(long, value_delimiter = ',')]
    pub node_labels: Vec<String>,
    /// Taints to add when registering, `key=value:Effect,key:Effect`.
    #[arg(long, value_delimiter = ',')]
    pub register_with_taints: Vec<String>,
    /// Directory for the kubelet's files (pod volumes, certificates).
    #[arg(long, default_value = "/var/lib/kubelet")]
    pub root_dir: PathBuf,
    /// Directory of static pod manifests (staticPodPath).
    #[arg(long)]
    pub pod_manifest_path: Option<PathBuf>,
    /// Root cgroup for pods (cgroupRoot).
    #[arg(long)]
    pub cgroup_root: Option<String>,
    /// Most pods this node runs (maxPods).
    #[arg(long)]
    pub max_pods: Option<i32>,
    /// Pod CIDR when the API server assigns none (podCIDR).
    #[arg(long)]
    pub pod_cidr: Option<String>,
    /// `auto`: write a bridge CNI config for the node's pod CIDR into the runtime's CNI conf
    /// dir; `none`: leave CNI to the cluster.
    #[arg(long, default_value = "none")]
    pub cni_config: String,
    /// Name of the CNI network written with `--cni-config=auto`.
    #[arg(long, default_value = "oxlet", hide = true)]
    pub cni_network_name: String,
}

fn parse_labels(items: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in items.iter().filter(|s| !s.is_empty()) {
        let Some((k, v)) = item.split_once('=') else {
            bail!("--node-labels: {item:?} is not key=value");
        };
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// Parses upstream's taint syntax: `key[=value]:Effect`.
fn parse_taint(s: &str) -> anyhow::Result<Taint> {
    let Some((kv, effect)) = s.rsplit_once(':') else {
        bail!("--register-with-taints: {s:?} is not key=value:Effect");
    };
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        bail!("--register-with-taints: invalid effect {effect:?} in {s:?}");
    }
    let (key, value) = match kv.split_once('=') {
        Some((k, v)) => (k, Some(v.to_string())),
        None => (kv, None),
    };
    if key.is_empty() {
        bail!("--register-with-taints: empty key in {s:?}");
    }
    Ok(Taint {
        key: key.to_string(),
        value,
        effect: effect.to_string(),
        time_added: None,
    })
}

/// Flags and config file into the kubelet's options (no side effects).
pub fn options(args: &Args) -> anyhow::Result<KubeletOptions> {
    let mut cfg = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("read {}", path.display()))?;
            let (cfg, warnings) = config::parse(&text)?;
            for w in warnings {
                tracing::warn!(config = %path.display(), "{w}");
            }
            cfg
        }
        None => config::KubeletConfiguration::default(),
    };
    if let Some(e) = &args.container_runtime_endpoint {
        cfg.container_runtime_endpoint = e.clone();
    }
    if let Some(r) = &args.cgroup_root {
        cfg.cgroup_root = r.clone();
    }
    if let Some(m) = args.max_pods {
        cfg.max_pods = m;
    }
    if let Some(c) = &args.pod_cidr {
        cfg.pod_cidr = Some(c.clone());
    }
    if let Some(p) = &args.pod_manifest_path {
        cfg.static_pod_path = p.display().to_string();
    }
    for t in args.register_with_taints.iter().filter(|s| !s.is_empty()) {
        cfg.register_with_taints.push(parse_taint(t)?);
    }
    let problems = cfg.validate();
    if !problems.is_empty() {
        bail!("invalid KubeletConfiguration: {}", problems.join("; "));
    }
    let cni = match args.cni_config.as_str() {
        "auto" => CniMode::Auto,
        "none" | "" => CniMode::None,
        other => bail!("--cni-config: expected auto or none, got {other:?}"),
    };
    Ok(KubeletOptions {
        kubeconfig: args.kubeconfig.clone(),
        hostname_override: args.hostname_override.clone(),
        node_ips: args.node_ip.clone(),
        node_labels: parse_labels(&args.node_labels)?,
        root_dir: args.root_dir.clone(),
        pod_logs_dir: PathBuf::from(&cfg.pod_logs_dir),
        cni,
        cni_network_name: args.cni_network_name.clone(),
        config: cfg,
        ..Default::default()
    })
}

/// Runs the kubelet until SIGTERM/SIGINT.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let opts = match options(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("oxlet kubelet: {e:#}");
            return Ok(ExitCode::from(EX_USAGE));
        }
    };
    let shutdown = CancellationToken::new();
    super::signals::spawn_signal_handler(shutdown.clone())?;
    oxlet_kubelet::run(opts, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taints_and_labels() {
        let t = parse_taint("dedicated=gpu:NoSchedule").expect("taint");
        assert_eq!(
            (t.key.as_str(), t.value.as_deref(), t.effect.as_str()),
            ("dedicated", Some("gpu"), "NoSchedule")
        );
        let t = parse_taint("spot:NoExecute").expect("taint");
        assert_eq!(
            (t.key.as_str(), t.value, t.effect.as_str()),
            ("spot", None, "NoExecute")
        );
        assert!(parse_taint("x=y:Bogus").is_err());
        assert!(parse_taint("nokey").is_err());
        let l = parse_labels(&["a=b".into(), "c=".into()]).expect("labels");
        assert_eq!(l["a"], "b");
        assert_eq!(l["c"], "");
        assert!(parse_labels(&["bad".into()]).is_err());
    }
}

//! The scheduler and controllers: ordinary API clients (kube-rs), as kube-controller-manager
//! and kube-scheduler are, so every decision is visible as API writes and Events and they
//! would work against any API server.
//!
//! Each loop is named as upstream's `--controllers` names it and can be turned off one by one
//! (`--controllers=*,-nodeipam`).

pub mod node_ipam;
pub mod node_lifecycle;
pub mod scheduler;

pub mod common;
pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod endpointslice;
pub mod garbagecollector;
pub mod informers;
pub mod namespace;
pub mod podgc;
pub mod replicaset;
pub mod root_ca_publisher;
pub mod serviceaccount;

use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

/// Every loop, by its upstream name.
pub const ALL: &[&str] = &[
    "scheduler",
    "nodelifecycle",
    "nodeipam",
    "replicaset",
    "deployment",
    "daemonset",
    "endpointslice",
    "endpoints",
    "namespace",
    "garbagecollector",
    "serviceaccount",
    "podgc",
    "rootcacertpublisher",
];

/// Periods and ranges of the loops; tests shorten them through flags, never by sleeping.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// `--node-monitor-grace-period`: silence after which a node is `Ready=Unknown` (40s).
    pub node_monitor_grace_period: Duration,
    /// `--node-monitor-period`: how often node health is checked (5s).
    pub node_monitor_period: Duration,
    /// Default `tolerationSeconds` for not-ready/unreachable (DefaultTolerationSeconds, 300).
    pub default_toleration_seconds: i64,
    /// `--cluster-cidr` for node IPAM; `None` disables allocation.
    pub cluster_cidr: Option<String>,
    /// `--node-cidr-mask-size` (24).
    pub node_cidr_mask_size: u8,
    /// `--terminated-pod-gc-threshold` (12500).
    pub terminated_pod_gc_threshold: usize,
    /// How often the pod GC runs (upstream's fixed `gcCheckPeriod`, 20s); pods on a deleted
    /// node go after two runs.
    pub pod_gc_period: Duration,
    /// The cluster CA bundle (PEM) the root CA publisher puts in every namespace's
    /// `kube-root-ca.crt` (kube-controller-manager's `--root-ca-file`, or its kubeconfig's CA).
    pub root_ca_cert: Option<String>,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        Self {
            node_monitor_grace_period: Duration::from_secs(40),
            node_monitor_period: Duration::from_secs(5),
            default_toleration_seconds: 300,
            cluster_cidr: Some("10.42.0.0/16".to_string()),
            node_cidr_mask_size: 24,
            terminated_pod_gc_threshold: 12500,
            pod_gc_period: podgc::GC_CHECK_PERIOD,
            root_ca_cert: None,
        }
    }
}

/// Which loops run, from `--controllers` syntax: `*` for all, `name` to add, `-name` to remove.
pub fn enabled(spec: &str) -> Result<Vec<&'static str>, String> {
    let mut on: Vec<&'static str> = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if item == "*" {
            on = ALL.to_vec();
            continue;
        }
        let (remove, name) = match item.strip_prefix('-') {
            Some(n) => (true, n),
            None => (false, item),
        };
        let Some(known) = ALL.iter().find(|k| **k == name) else {
            return Err(format!(
                "unknown controller {name:?}; known: {}",
                ALL.join(", ")
            ));
        };
        if remove {
            on.retain(|k| k != known);
        } else if !on.contains(known) {
            on.push(known);
        }
    }
    Ok(on)
}

/// What every loop gets.
#[derive(Clone)]
pub struct Context {
    /// A client of the API server.
    pub client: kube::Client,
    /// Periods and ranges.
    pub options: ControllerOptions,
    /// Cancelled on shutdown.
    pub shutdown: CancellationToken,
}

/// Starts the enabled loops on `tasks`, with the shared informers they read; each logs why
/// it ended. A loop (or shared watch) that ends while `shutdown` is live is a bug: it
/// cancels `shutdown` so the process exits and is restarted.
pub fn spawn(tasks: &mut JoinSet<()>, ctx: Context, enabled: &[&'static str]) {
    let (shared, drivers) = informers::Informers::start(&ctx.client, enabled);
    for (what, driver) in drivers {
        let shutdown = ctx.shutdown.clone();
        let span = tracing::info_span!("informer", resource = what);
        tasks.spawn(
            async move {
                tokio::select! {
                    _ = shutdown.cancelled() => tracing::info!("stopped"),
                    why = driver => {
                        tracing::error!(why, "shared watch ended while the server runs");
                        shutdown.cancel();
                    }
                }
            }
            .instrument(span),
        );
    }
    for name in enabled {
        let ctx = ctx.clone();
        let shared = shared.clone();
        let name = *name;
        let span = tracing::info_span!("controller", name);
        tasks.spawn(
            async move {
                let shutdown = ctx.shutdown.clone();
                let result = run_one(name, ctx, shared).await;
                if shutdown.is_cancelled() {
                    tracing::info!("stopped");
                } else {
                    tracing::error!(?result, "controller ended while the server runs");
                    shutdown.cancel();
                }
            }
            .instrument(span),
        );
    }
}

// The loops' own arms are added above the catch-all as each loop lands.
#[allow(clippy::match_single_binding)]
async fn run_one(name: &str, ctx: Context, shared: informers::Informers) -> Result<(), String> {
    match name {
        "scheduler" => scheduler::run(ctx, shared).await,
        "nodelifecycle" => node_lifecycle::run(ctx, shared).await,
        "nodeipam" => node_ipam::run(ctx).await,
        "replicaset" => replicaset::run(ctx, shared).await,
        "deployment" => deployment::run(ctx, shared).await,
        "daemonset" => daemonset::run(ctx, shared).await,
        "endpointslice" => endpointslice::run(ctx, shared).await,
        "endpoints" => endpoints::run(ctx, shared).await,
        "namespace" => namespace::run(ctx).await,
        "garbagecollector" => garbagecollector::run(ctx).await,
        "serviceaccount" => serviceaccount::run(ctx).await,
        "podgc" => podgc::run(ctx, shared).await,
        "rootcacertpublisher" => root_ca_publisher::run(ctx).await,
        // Loops register here as they are written; an unwritten one waits for shutdown
        // and says so once, rather than pretending to work.
        other => {
            tracing::warn!(
                controller = other,
                "not implemented yet; nothing runs for it"
            );
            ctx.shutdown.cancelled().await;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controllers_flag() {
        assert_eq!(enabled("*").expect("all").len(), ALL.len());
        let some = enabled("*,-nodeipam,-scheduler").expect("some");
        assert!(!some.contains(&"nodeipam") && !some.contains(&"scheduler"));
        assert_eq!(
            enabled("replicaset,deployment").expect("two"),
            vec!["replicaset", "deployment"]
        );
        assert!(enabled("bogus").is_err());
    }
}

//! Wiring: the servers, the three reflectors, the wait for their caches, the sync loop, and
//! `--cleanup`.

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use oxlet_netrules::apply::iptables::Iptables;
use oxlet_netrules::apply::nft::Nft;
use oxlet_netrules::apply::Command;
use oxlet_netrules::Family;
use prometheus_client::registry::Registry;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{Config, ProxyMode};
use crate::endpoints_change_tracker::EndpointsChangeTracker;
use crate::error::{Error, Result};
use crate::healthz::{self, ProxyHealth};
use crate::metrics::Metrics;
use crate::model;
use crate::proxier::Proxier;
use crate::service_change_tracker::ServiceChangeTracker;
use crate::service_health::ServiceHealthServer;
use crate::sync_runner::{SyncRunner, Trigger};

/// How long tasks get to finish after shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The command runner for `config.netns` (nsenter) or the host.
pub fn command_for(netns: Option<&str>) -> Command {
    netns.map_or_else(Command::host, Command::in_netns)
}

/// The Node name: `hostnameOverride`, else the kernel's hostname, lower-cased as upstream.
pub fn node_name(config: &Config) -> Result<String> {
    if let Some(h) = &config.hostname_override {
        return Ok(h.clone());
    }
    let path = "/proc/sys/kernel/hostname";
    std::fs::read_to_string(path)
        .map(|h| h.trim().to_lowercase())
        .map_err(|source| Error::Io {
            op: "read",
            path: path.into(),
            source,
        })
}

/// Removes everything the proxy installs, in both modes and both families
/// (`kube-proxy --cleanup`). Returns the errors met; the rest is still cleaned.
pub async fn cleanup(netns: Option<&str>) -> Vec<oxlet_netrules::Error> {
    let cmd = command_for(netns);
    let mut errors = Vec::new();
    if let Err(e) = Nft::new(cmd.clone()).cleanup().await {
        errors.push(e);
    }
    for family in [Family::V4, Family::V6] {
        if let Err(e) = Iptables::new(cmd.clone(), family).cleanup().await {
            errors.push(e);
        }
    }
    errors
}

/// Runs the proxy until `shutdown` is cancelled, serving its own metrics registry.
pub async fn run(config: Config, client: Client, shutdown: CancellationToken) -> Result<()> {
    run_with_registry(config, client, Registry::default(), shutdown).await
}

/// [`run`] with a registry the caller made (other components may have registered in it).
pub async fn run_with_registry(
    config: Config,
    client: Client,
    mut registry: Registry,
    shutdown: CancellationToken,
) -> Result<()> {
    let node_name = node_name(&config)?;
    let metrics = Metrics::register(&mut registry);
    let registry = Arc::new(registry);
    // As upstream's ProxierHealthServer: unhealthy when no sync succeeded for 2 × syncPeriod.
    let health = Arc::new(ProxyHealth::new(config.sync_period * 2));
    let token = shutdown.child_token();
    let mut tasks: JoinSet<(&'static str, Result<()>)> = JoinSet::new();

    // Bind both ports before anything else, so a taken port fails startup.
    if let Some(addr) = config.healthz_bind_address {
        let listener = healthz::bind("healthz", addr).await?;
        tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "serving /healthz");
        let router = healthz::healthz_router(health.clone());
        let t = token.clone();
        tasks.spawn(
            async move {
                let r = healthz::serve(listener, router, t).await;
                (
                    "healthz",
                    r.map_err(|source| io_err("serve /healthz", source)),
                )
            }
            .instrument(tracing::info_span!("healthz_server")),
        );
    }
    if let Some(addr) = config.metrics_bind_address {
        let listener = healthz::bind("metrics", addr).await?;
        tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "serving /metrics");
        let router = healthz::metrics_router(registry.clone());
        let t = token.clone();
        tasks.spawn(
            async move {
                let r = healthz::serve(listener, router, t).await;
                (
                    "metrics",
                    r.map_err(|source| io_err("serve /metrics", source)),
                )
            }
            .instrument(tracing::info_span!("metrics_server")),
        );
    }

    let cmd = command_for(config.netns.as_deref());
    if config.localhost_node_ports {
        // Asked for: without it the kernel drops DNATed packets from 127.0.0.0/8 as martians.
        oxlet_netrules::apply::set_sysctl(&cmd, "net.ipv4.conf.all.route_localnet", "1").await?;
        tracing::info!("net.ipv4.conf.all.route_localnet=1 for localhost NodePorts");
    }
    // As upstream's cleanupLeftovers: remove what the other mode may have left behind.
    let leftovers = match config.mode {
        ProxyMode::Nftables => {
            let mut errs = Vec::new();
            for family in [Family::V4, Family::V6] {
                if let Err(e) = Iptables::new(cmd.clone(), family).cleanup().await {
                    errs.push(e);
                }
            }
            errs
        }
        ProxyMode::Iptables => Nft::new(cmd.clone())
            .cleanup()
            .await
            .err()
            .into_iter()
            .collect(),
    };
    for err in leftovers {
        tracing::debug!(%err, "cleaning up the other mode's rules failed");
    }

    let runner = SyncRunner::new(config.min_sync_period, config.sync_period);
    let trigger = runner.trigger();
    let service_changes = Arc::new(ServiceChangeTracker::new());
    let endpoint_changes = Arc::new(EndpointsChangeTracker::new(&node_name));

    // Services and EndpointSlices go into the change trackers, which keep only what the
    // rules need (see `projection`); each relevant change asks for a sync.
    {
        let (tracker, trigger) = (service_changes.clone(), trigger.clone());
        let stream = watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .map_ok(move |ev| {
            if tracker.apply(&ev) {
                trigger.notify();
            }
        });
        tasks.spawn(drive("services", stream, token.clone()));
    }
    {
        let (tracker, trigger) = (endpoint_changes.clone(), trigger.clone());
        let stream = watcher(
            Api::<EndpointSlice>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .map_ok(move |ev| {
            if tracker.apply(&ev) {
                trigger.notify();
            }
        });
        tasks.spawn(drive("endpointslices", stream, token.clone()));
    }
    let (nodes, writer) = reflector::store::<Node>();
    {
        let (reader, trigger) = (nodes.clone(), trigger.clone());
        let cfg = watcher::Config::default().fields(&format!("metadata.name={node_name}"));
        let stream = watcher(Api::<Node>::all(client.clone()), cfg)
            .default_backoff()
            .map_ok(move |ev| {
                on_node_event(&reader, &ev, &trigger);
                ev
            });
        tasks.spawn(drive(
            "node",
            reflector::reflector(writer, stream),
            token.clone(),
        ));
    }

    // As upstream's isInitialized: no rule is written from half a cache.
    let ready = async {
        service_changes.wait_ready().await;
        endpoint_changes.wait_ready().await;
        if !wait_ready(&nodes).await {
            return Err(Error::StoreNotReady("node"));
        }
        Ok(())
    };
    let outcome = tokio::select! {
        _ = token.cancelled() => Ok(()),
        r = ready => r,
        Some(ended) = tasks.join_next() => task_ended(&token, ended),
    };
    let outcome = match outcome {
        Ok(()) if !token.is_cancelled() => {
            tracing::info!(node = %node_name, mode = config.mode.as_str(), "caches synced, programming rules");
            let recorder = Recorder::new(
                client.clone(),
                Reporter {
                    controller: "kube-proxy".into(),
                    instance: Some(node_name.clone()),
                },
            );
            let service_health = Arc::new(ServiceHealthServer::new(
                node_name.clone(),
                health.clone(),
                Some(recorder),
                config.netns.clone(),
                token.child_token(),
            ));
            let proxier = Arc::new(tokio::sync::Mutex::new(
                Proxier::new(
                    &config,
                    node_name.clone(),
                    cmd,
                    nodes,
                    service_changes,
                    endpoint_changes,
                    metrics,
                    health,
                )
                .with_service_health(service_health.clone()),
            ));
            let sync = runner.run(token.clone(), move |reason| {
                let proxier = proxier.clone();
                async move { proxier.lock().await.sync(reason).await }
            });
            let outcome = tokio::select! {
                _ = sync => Ok(()),
                Some(ended) = tasks.join_next() => task_ended(&token, ended),
            };
            token.cancel();
            if tokio::time::timeout(SHUTDOWN_GRACE, service_health.shutdown())
                .await
                .is_err()
            {
                tracing::warn!("health check servers still had open connections at shutdown");
            }
            outcome
        }
        other => other,
    };
    if outcome.is_err() {
        tracing::error!("a proxy task ended while the proxy was running; shutting down");
    }
    token.cancel();
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while let Some(ended) = tasks.join_next().await {
            match ended {
                Ok((name, Ok(()))) => tracing::debug!(task = name, "task ended"),
                Ok((name, Err(err))) => {
                    tracing::warn!(task = name, %err, "task ended with an error")
                }
                Err(err) => tracing::warn!(%err, "task panicked or was aborted"),
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            remaining = tasks.len(),
            "tasks still running after the shutdown grace period; aborting them"
        );
        tasks.abort_all();
    }
    outcome
}

fn io_err(op: &'static str, source: std::io::Error) -> Error {
    Error::Io {
        op,
        path: String::new(),
        source,
    }
}

/// A task ended: fine during shutdown (it saw the token first), a bug otherwise.
fn task_ended(
    token: &CancellationToken,
    ended: std::result::Result<(&'static str, Result<()>), tokio::task::JoinError>,
) -> Result<()> {
    if token.is_cancelled() {
        if let Ok((name, r)) = &ended {
            tracing::debug!(task = name, ok = r.is_ok(), "task ended during shutdown");
        }
        return Ok(());
    }
    Err(match ended {
        Ok((name, Ok(()))) => {
            tracing::error!(task = name, "task ended unexpectedly");
            Error::TaskEnded(name)
        }
        Ok((name, Err(err))) => {
            tracing::error!(task = name, %err, "task failed");
            Error::TaskEnded(name)
        }
        Err(err) => {
            tracing::error!(%err, "task panicked");
            Error::TaskEnded("unknown (panicked)")
        }
    })
}

async fn wait_ready<K>(store: &Store<K>) -> bool
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store.wait_until_ready().await.is_ok()
}

/// Asks for a sync when our Node's addresses or deletion change. Runs before the reflector
/// stores the event, so `reader` still holds the previous version; a (re)list always ends in
/// a sync request.
fn on_node_event(reader: &Store<Node>, ev: &watcher::Event<Node>, trigger: &Trigger) {
    let key =
        |n: Option<&Node>| n.map(|n| (model::node_ips(n), n.metadata.deletion_timestamp.clone()));
    match ev {
        watcher::Event::Apply(obj) | watcher::Event::InitApply(obj) => {
            let previous = reader.get(&ObjectRef::from_obj(obj));
            if key(previous.as_deref()) != key(Some(obj)) {
                trigger.notify();
            }
        }
        watcher::Event::Delete(_) | watcher::Event::InitDone => trigger.notify(),
        watcher::Event::Init => {}
    }
}

/// Drives one watch stream until shutdown; watch errors are retried by the backoff and
/// logged here.
async fn drive<S, T>(
    name: &'static str,
    stream: S,
    token: CancellationToken,
) -> (&'static str, Result<()>)
where
    S: futures::Stream<Item = std::result::Result<T, watcher::Error>> + Send,
{
    let mut stream = std::pin::pin!(stream);
    loop {
        tokio::select! {
            _ = token.cancelled() => return (name, Ok(())),
            item = stream.next() => match item {
                Some(Ok(_)) => {}
                Some(Err(err)) => tracing::warn!(watch = name, %err, "watch failed, retrying"),
                None => return (name, Err(Error::TaskEnded(name))),
            },
        }
    }
}

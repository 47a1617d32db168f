//! One sync: store snapshots → [`Model`](oxlet_netrules::Model) → rules applied, as
//! upstream's `syncProxyRules` (kubernetes/kubernetes pkg/proxy/nftables/proxier.go).
//!
//! nftables syncs are partial (only changed service ports, from the last successfully applied
//! ruleset) unless forced full: first sync, after any failure, or when a periodic sync finds
//! our table changed behind our back. iptables syncs always rewrite all our chains
//! (`iptables-restore --noflush`), which repairs tampering by themselves.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::Store;
use oxlet_netrules::apply::conntrack::Conntrack;
use oxlet_netrules::apply::iptables::Iptables;
use oxlet_netrules::apply::nft::Nft;
use oxlet_netrules::apply::Command;
use oxlet_netrules::iptables::IptablesRules;
use oxlet_netrules::nft::Ruleset;
use oxlet_netrules::{Family, Model};
use tracing::Instrument;

use crate::config::{Config, NodePortAddress, ProxyMode};
use crate::endpoints_change_tracker::EndpointsChangeTracker;
use crate::healthz::ProxyHealth;
use crate::metrics::{unix_now, Metrics};
use crate::model::{self, NodeInfo};
use crate::service_change_tracker::ServiceChangeTracker;
use crate::service_health::{health_check_ports, local_ready_endpoints, ServiceHealthServer};
use crate::sync_runner::SyncReason;

/// The stores a sync reads.
#[derive(Clone)]
pub struct Stores {
    /// All Services.
    pub services: Store<Service>,
    /// All EndpointSlices.
    pub slices: Store<EndpointSlice>,
    /// Our Node (zero or one object).
    pub nodes: Store<Node>,
}

/// The sync state between runs.
pub struct Proxier {
    mode: ProxyMode,
    node_name: String,
    cluster_cidrs: Vec<oxlet_netrules::Cidr>,
    nodeport_config: Vec<NodePortAddress>,
    masquerade_all: bool,
    cmd: Command,
    stores: Stores,
    service_changes: Arc<ServiceChangeTracker>,
    endpoint_changes: Arc<EndpointsChangeTracker>,
    metrics: Metrics,
    health: Arc<ProxyHealth>,
    service_health: Option<Arc<ServiceHealthServer>>,
    families: BTreeSet<Family>,
    nft_applied: BTreeMap<Family, Ruleset>,
    ipt_applied: BTreeMap<Family, IptablesRules>,
    need_full: bool,
    sync_id: u64,
}

/// What one sync did, for the summary log.
#[derive(Debug, Default)]
struct Summary {
    services: usize,
    endpoints: usize,
    skipped: usize,
    operations: usize,
}

impl Proxier {
    /// A proxier that has applied nothing yet (its first sync is full).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: &Config,
        node_name: String,
        cmd: Command,
        stores: Stores,
        service_changes: Arc<ServiceChangeTracker>,
        endpoint_changes: Arc<EndpointsChangeTracker>,
        metrics: Metrics,
        health: Arc<ProxyHealth>,
    ) -> Self {
        Self {
            mode: config.mode,
            node_name,
            cluster_cidrs: config.cluster_cidrs.clone(),
            nodeport_config: config.node_port_addresses.clone(),
            masquerade_all: config.masquerade_all,
            cmd,
            stores,
            service_changes,
            endpoint_changes,
            metrics,
            health,
            service_health: None,
            families: [Family::V4].into(),
            nft_applied: BTreeMap::new(),
            ipt_applied: BTreeMap::new(),
            need_full: true,
            sync_id: 0,
        }
    }

    /// Also keeps the healthCheckNodePort servers in line with each successful sync.
    pub fn with_service_health(mut self, servers: Arc<ServiceHealthServer>) -> Self {
        self.service_health = Some(servers);
        self
    }

    /// Runs one sync; returns whether the rules are now what the stores say.
    pub async fn sync(&mut self, reason: SyncReason) -> bool {
        self.sync_id += 1;
        self.metrics.last_queued_timestamp.set(unix_now());
        let mut full = self.need_full || reason == SyncReason::Initial;
        if !full && reason == SyncReason::Periodic && self.mode == ProxyMode::Nftables {
            full = self.table_tampered().await;
        }
        let span = tracing::info_span!(
            "sync",
            sync_id = self.sync_id,
            reason = reason.as_str(),
            full
        );
        self.sync_inner(full).instrument(span).await
    }

    /// Whether a family's table lacks chains we applied (someone flushed or edited it).
    async fn table_tampered(&self) -> bool {
        let nft = Nft::new(self.cmd.clone());
        for (family, applied) in &self.nft_applied {
            match nft.list_table(*family).await {
                Ok(listing) => {
                    let missing = applied.missing_from_listing(&listing);
                    if !missing.is_empty() {
                        tracing::warn!(
                            table = %applied.table(),
                            missing = missing.len(),
                            "our table was changed by someone else, doing a full sync"
                        );
                        return true;
                    }
                }
                Err(err) => {
                    tracing::warn!(table = %applied.table(), %err, "cannot list our table, doing a full sync");
                    return true;
                }
            }
        }
        false
    }

    fn build_model(&self) -> (Model, usize) {
        let node = self.stores.nodes.state().into_iter().next();
        let node_ips = node.as_deref().map(model::node_ips).unwrap_or_default();
        let eligible = node
            .as_deref()
            .is_none_or(|n| n.metadata.deletion_timestamp.is_none());
        self.health.set_node_eligible(eligible);
        if node.is_none() {
            tracing::debug!(node = %self.node_name, "own Node not found; NodePorts on every local address");
        }
        let info = NodeInfo {
            node_name: self.node_name.clone(),
            nodeport_addresses: model::nodeport_addresses(&self.nodeport_config, &node_ips),
            node_ips,
            cluster_cidrs: self.cluster_cidrs.clone(),
            masquerade_all: self.masquerade_all,
        };
        let (model, errors) = model::build(
            &info,
            &self.stores.services.state(),
            &self.stores.slices.state(),
        );
        for e in &errors {
            tracing::warn!(namespace = %e.namespace, name = %e.name, reason = %e.reason, "service skipped");
        }
        (model, errors.len())
    }

    async fn sync_inner(&mut self, full: bool) -> bool {
        let started = Instant::now();
        let service_changes = self.service_changes.take();
        let endpoint_changes = self.endpoint_changes.take();
        self.metrics
            .service_changes
            .inc_by(service_changes.len() as u64);
        self.metrics
            .endpoint_changes
            .inc_by(endpoint_changes.services.len() as u64);
        let (model, skipped) = self.build_model();
        // A family is programmed once anything of it appears, and stays programmed.
        let has_v6 = model.node_ips.iter().any(|ip| ip.is_ipv6())
            || model.cluster_cidrs.iter().any(|c| !c.is_ipv4())
            || model
                .services
                .values()
                .any(|s| s.cluster_ips.iter().any(|ip| ip.is_ipv6()));
        if has_v6 {
            self.families.insert(Family::V6);
        }
        let mut summary = Summary {
            services: model.services.len(),
            endpoints: model.services.values().map(|s| s.endpoints.len()).sum(),
            skipped,
            operations: 0,
        };
        let result = match self.mode {
            ProxyMode::Nftables => self.apply_nft(&model, full, &mut summary).await,
            ProxyMode::Iptables => self.apply_iptables(&model, &mut summary).await,
        };
        let elapsed = started.elapsed().as_secs_f64();
        self.metrics.sync_duration.observe(elapsed);
        if full {
            self.metrics.sync_full_duration.observe(elapsed);
        } else {
            self.metrics.sync_partial_duration.observe(elapsed);
        }
        match result {
            Ok(()) => {
                self.need_full = false;
                self.metrics.last_timestamp.set(unix_now());
                self.health.updated(SystemTime::now());
                let now = Timestamp::now();
                for t in endpoint_changes.trigger_times.values() {
                    if let Ok(d) = std::time::Duration::try_from(now.duration_since(*t)) {
                        self.metrics
                            .network_programming_duration
                            .observe(d.as_secs_f64());
                    }
                }
                self.after_sync(&model).await;
                tracing::info!(
                    services = summary.services,
                    endpoints = summary.endpoints,
                    skipped = summary.skipped,
                    changed_services = service_changes.len(),
                    changed_endpoints = endpoint_changes.services.len(),
                    operations = summary.operations,
                    elapsed_ms = (elapsed * 1000.0) as u64,
                    "synced proxy rules"
                );
                true
            }
            Err(err) => {
                // As upstream: after a failure the kernel state is unknown, so the next
                // sync starts from scratch.
                self.need_full = true;
                match self.mode {
                    ProxyMode::Nftables => self.metrics.nftables_sync_failures.inc(),
                    ProxyMode::Iptables => self.metrics.iptables_restore_failures.inc(),
                };
                tracing::error!(%err, "sync failed, the next sync is full");
                false
            }
        }
    }

    /// What follows a successful sync, as upstream's `syncProxyRules` tail: health check
    /// servers and stale UDP flows. Failures here are logged; the rules are in place.
    async fn after_sync(&self, model: &Model) {
        if let Some(servers) = &self.service_health {
            // As upstream: every address without nodePortAddresses, else the selected ones.
            let addresses = if self.nodeport_config.is_empty() {
                Vec::new()
            } else {
                model.nodeport_addresses.clone()
            };
            servers.set_addresses(addresses);
            servers.sync_services(&health_check_ports(model)).await;
            servers.sync_endpoints(&local_ready_endpoints(model));
        }
        let conntrack = Conntrack::new(self.cmd.clone());
        for family in &self.families {
            // Listing conntrack costs; a model without UDP services has nothing to clean.
            if !oxlet_netrules::conntrack::has_udp(model, *family) {
                continue;
            }
            match conntrack.clean_stale(model, *family).await {
                Ok(0) => {}
                Ok(deleted) => {
                    tracing::info!(family = ?family, deleted, "deleted stale UDP conntrack entries")
                }
                Err(err) => tracing::warn!(family = ?family, %err, "conntrack cleanup failed"),
            }
        }
    }

    async fn apply_nft(
        &mut self,
        model: &Model,
        full: bool,
        summary: &mut Summary,
    ) -> Result<(), oxlet_netrules::Error> {
        let nft = Nft::new(self.cmd.clone());
        for family in self.families.clone() {
            let new = oxlet_netrules::nft::render(model, family);
            let tx = if full {
                oxlet_netrules::nft::full_sync(&new)
            } else {
                oxlet_netrules::nft::diff(self.nft_applied.get(&family), &new)
            };
            summary.operations += tx.len();
            tracing::trace!(script = %tx.to_nft_script(), "nft transaction");
            nft.apply(&tx).await?;
            self.nft_applied.insert(family, tx.into_applied());
        }
        Ok(())
    }

    async fn apply_iptables(
        &mut self,
        model: &Model,
        summary: &mut Summary,
    ) -> Result<(), oxlet_netrules::Error> {
        for family in self.families.clone() {
            let rules = oxlet_netrules::iptables::render(model, family);
            // Chains of the last applied rules that are gone get deleted (declaring them
            // first makes that safe even when a failed run left them absent).
            let previous = self.ipt_applied.get(&family);
            summary.operations += rules.filter.rules.len() + rules.nat.rules.len();
            Iptables::new(self.cmd.clone(), family)
                .apply(&rules, previous)
                .await?;
            self.ipt_applied.insert(family, rules);
        }
        Ok(())
    }
}

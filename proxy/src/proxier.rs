//! One sync: tracked changes → [`Model`](oxlet_netrules::Model) → rules applied, as upstream's
//! `syncProxyRules` (kubernetes/kubernetes pkg/proxy/nftables/proxier.go).
//!
//! The model is kept between syncs and updated only for the Services whose ports or endpoints
//! changed, so a sync's cost follows the number of changes. nftables syncs are partial (the
//! changed service ports' chains, sets and map elements) unless forced full: first sync, after
//! any failure, when node-level inputs change, or when a periodic sync finds chains of our
//! table gone. A full sync renders and streams the table service by service; no rendered
//! ruleset is kept, only the names of its chains (as hashes) and the stale ones. iptables
//! syncs always rewrite all our chains (`iptables-restore --noflush`), which repairs tampering
//! by itself.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::Store;
use oxlet_netrules::apply::conntrack::Conntrack;
use oxlet_netrules::apply::iptables::Iptables;
use oxlet_netrules::apply::nft::Nft;
use oxlet_netrules::apply::Command;
use oxlet_netrules::iptables::IptablesChains;
use oxlet_netrules::nft::ServiceRules;
use oxlet_netrules::{Family, Model, ServicePort, ServicePortName};
use tracing::Instrument;

use crate::config::{Config, NodePortAddress, ProxyMode};
use crate::endpoints_change_tracker::EndpointsChangeTracker;
use crate::healthz::ProxyHealth;
use crate::metrics::{unix_now, Metrics};
use crate::model;
use crate::projection::ObjectKey;
use crate::service_change_tracker::ServiceChangeTracker;
use crate::service_health::{health_check_ports, local_ready_endpoints, ServiceHealthServer};
use crate::sync_runner::SyncReason;

/// What the kernel holds of one family's nft table, as far as the next sync needs to know.
#[derive(Debug, Default)]
struct NftApplied {
    /// Hashes of the chains that must exist (tamper detection).
    chains: HashSet<u64>,
    /// Chains a partial sync flushed; the next one deletes them.
    stale: BTreeSet<String>,
}

/// One service port whose model changed in this sync: before and after.
type PortChange = (ServicePortName, Option<ServicePort>, Option<ServicePort>);

/// The sync state between runs.
pub struct Proxier {
    mode: ProxyMode,
    node_name: String,
    cluster_cidrs: Vec<oxlet_netrules::Cidr>,
    nodeport_config: Vec<NodePortAddress>,
    masquerade_all: bool,
    localhost_nodeports: bool,
    cmd: Command,
    nodes: Store<Node>,
    services: Arc<ServiceChangeTracker>,
    endpoints: Arc<EndpointsChangeTracker>,
    metrics: Metrics,
    health: Arc<ProxyHealth>,
    service_health: Option<Arc<ServiceHealthServer>>,
    families: BTreeSet<Family>,
    model: Option<Model>,
    nft_applied: BTreeMap<Family, NftApplied>,
    ipt_applied: BTreeMap<Family, IptablesChains>,
    need_full: bool,
    sync_id: u64,
    last: SyncStats,
}

/// What one sync did (summary log, benchmarks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Whether the tables were recreated.
    pub full: bool,
    /// Service ports whose model changed.
    pub changed_ports: usize,
    /// nft commands or iptables rules sent.
    pub operations: usize,
    /// Time spent running the tools (for a full nft sync, which streams, this includes
    /// rendering the services).
    pub apply: std::time::Duration,
    /// The whole sync.
    pub total: std::time::Duration,
}

type Summary = SyncStats;

fn hash_name(name: &str) -> u64 {
    let mut h = DefaultHasher::new();
    name.hash(&mut h);
    h.finish()
}

/// The first key of `service`'s ports in a model (names order by namespace, name, port name,
/// protocol; the empty port name and TCP sort first).
fn first_port_of(service: &ObjectKey) -> ServicePortName {
    ServicePortName::new(&service.0, &service.1, "", oxlet_netrules::Protocol::Tcp)
}

impl Proxier {
    /// A proxier that has applied nothing yet (its first sync is full). `nodes` holds our own
    /// Node (zero or one object); the trackers are fed by the Service and EndpointSlice
    /// watches.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: &Config,
        node_name: String,
        cmd: Command,
        nodes: Store<Node>,
        services: Arc<ServiceChangeTracker>,
        endpoints: Arc<EndpointsChangeTracker>,
        metrics: Metrics,
        health: Arc<ProxyHealth>,
    ) -> Self {
        Self {
            mode: config.mode,
            node_name,
            cluster_cidrs: config.cluster_cidrs.clone(),
            nodeport_config: config.node_port_addresses.clone(),
            masquerade_all: config.masquerade_all,
            localhost_nodeports: config.localhost_node_ports,
            cmd,
            nodes,
            services,
            endpoints,
            metrics,
            health,
            service_health: None,
            families: [Family::V4].into(),
            model: None,
            nft_applied: BTreeMap::new(),
            ipt_applied: BTreeMap::new(),
            need_full: true,
            sync_id: 0,
            last: SyncStats::default(),
        }
    }

    /// Also keeps the healthCheckNodePort servers in line with each successful sync.
    pub fn with_service_health(mut self, servers: Arc<ServiceHealthServer>) -> Self {
        self.service_health = Some(servers);
        self
    }

    /// What the last sync did.
    pub fn last_sync(&self) -> SyncStats {
        self.last
    }

    /// The model of the last sync (`None` before the first).
    pub fn model(&self) -> Option<&Model> {
        self.model.as_ref()
    }

    /// Runs one sync; returns whether the rules are now what the trackers say.
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
            match nft.list_chain_names(*family).await {
                Ok(names) => {
                    let present: HashSet<u64> = names.iter().map(|n| hash_name(n)).collect();
                    let missing = applied.chains.difference(&present).count();
                    if missing > 0 {
                        tracing::warn!(
                            family = ?family,
                            missing,
                            "our table was changed by someone else, doing a full sync"
                        );
                        return true;
                    }
                }
                Err(err) => {
                    tracing::warn!(family = ?family, %err, "cannot list our chains, doing a full sync");
                    return true;
                }
            }
        }
        false
    }

    /// The node-level part of the model from our Node and the configuration.
    fn node_model(&self) -> Model {
        let node = self.nodes.state().into_iter().next();
        let node_ips = node.as_deref().map(model::node_ips).unwrap_or_default();
        let eligible = node
            .as_deref()
            .is_none_or(|n| n.metadata.deletion_timestamp.is_none());
        self.health.set_node_eligible(eligible);
        if node.is_none() {
            tracing::debug!(node = %self.node_name, "own Node not found; NodePorts on every local address");
        }
        Model {
            node_name: self.node_name.clone(),
            nodeport_addresses: model::nodeport_addresses(&self.nodeport_config, &node_ips),
            node_ips,
            cluster_cidrs: self.cluster_cidrs.clone(),
            masquerade_all: self.masquerade_all,
            localhost_nodeports: self.localhost_nodeports,
            services: BTreeMap::new(),
        }
    }

    /// The ports of `service` with their endpoints, as the trackers have them now.
    fn service_model(&self, service: &ObjectKey) -> Vec<(ServicePortName, ServicePort)> {
        match self.services.get(service) {
            Some(Ok(ports)) => ports
                .into_iter()
                .map(|(spn, mut sp)| {
                    sp.endpoints =
                        self.endpoints
                            .endpoints_for(service, &spn.port_name, spn.protocol);
                    (spn, sp)
                })
                .collect(),
            // Deleted, or malformed (logged when it was seen).
            _ => Vec::new(),
        }
    }

    /// Brings the model up to date: whole when `rebuild` (or there is none yet), else only
    /// for `changed` Services. Returns the service ports that changed (all of them on a
    /// rebuild).
    fn update_model(
        &mut self,
        base: Model,
        changed: &BTreeSet<ObjectKey>,
        rebuild: bool,
    ) -> Vec<PortChange> {
        let mut model = match self.model.take() {
            Some(m) if !rebuild => m,
            _ => {
                let mut keys = Vec::new();
                self.services.for_each(|k, _| keys.push(k.clone()));
                let mut m = base;
                for key in keys {
                    m.services.extend(self.service_model(&key));
                }
                let changes = m
                    .services
                    .iter()
                    .map(|(n, s)| (n.clone(), None, Some(s.clone())))
                    .collect();
                self.model = Some(m);
                return changes;
            }
        };
        let mut changes = Vec::new();
        for service in changed {
            let old: Vec<(ServicePortName, ServicePort)> = model
                .services
                .range(first_port_of(service)..)
                .take_while(|(n, _)| n.namespace == service.0 && n.name == service.1)
                .map(|(n, s)| (n.clone(), s.clone()))
                .collect();
            for (n, _) in &old {
                model.services.remove(n);
            }
            let new = self.service_model(service);
            let mut old: BTreeMap<ServicePortName, ServicePort> = old.into_iter().collect();
            for (n, s) in new {
                let before = old.remove(&n);
                if before.as_ref() != Some(&s) {
                    changes.push((n.clone(), before, Some(s.clone())));
                }
                model.services.insert(n, s);
            }
            changes.extend(old.into_iter().map(|(n, s)| (n, Some(s), None)));
        }
        self.model = Some(model);
        changes
    }

    async fn sync_inner(&mut self, full: bool) -> bool {
        let started = Instant::now();
        let service_changes = self.services.take();
        let endpoint_changes = self.endpoints.take();
        self.metrics
            .service_changes
            .inc_by(service_changes.len() as u64);
        self.metrics
            .endpoint_changes
            .inc_by(endpoint_changes.services.len() as u64);
        let base = self.node_model();
        let base_changed = self.model.as_ref().is_none_or(|m| {
            (&m.node_ips, &m.nodeport_addresses) != (&base.node_ips, &base.nodeport_addresses)
        });
        let changed: BTreeSet<ObjectKey> = service_changes
            .iter()
            .chain(&endpoint_changes.services)
            .cloned()
            .collect();
        let port_changes = self.update_model(base, &changed, base_changed);
        let full = full || base_changed;
        let Some(model) = self.model.take() else {
            return false;
        };
        // A family is programmed once anything of it appears, and stays programmed; its
        // table starts with a full sync.
        let has_v6 = model.node_ips.iter().any(|ip| ip.is_ipv6())
            || model.cluster_cidrs.iter().any(|c| !c.is_ipv4())
            || model
                .services
                .values()
                .any(|s| s.cluster_ips.iter().any(|ip| ip.is_ipv6()));
        let full = full || (has_v6 && self.families.insert(Family::V6));
        let mut summary = Summary {
            full,
            changed_ports: port_changes.len(),
            ..Default::default()
        };
        let result = match self.mode {
            ProxyMode::Nftables if full => self.nft_full(&model, &mut summary).await,
            ProxyMode::Nftables => self.nft_partial(&model, &port_changes, &mut summary).await,
            ProxyMode::Iptables => self.apply_iptables(&model, &mut summary).await,
        };
        summary.total = started.elapsed();
        self.last = summary;
        let elapsed = summary.total.as_secs_f64();
        self.metrics.sync_duration.observe(elapsed);
        if full {
            self.metrics.sync_full_duration.observe(elapsed);
        } else {
            self.metrics.sync_partial_duration.observe(elapsed);
        }
        let ok = match result {
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
                    services = model.services.len(),
                    endpoints = model
                        .services
                        .values()
                        .map(|s| s.endpoints.len())
                        .sum::<usize>(),
                    skipped = self.services.skipped(),
                    changed_services = service_changes.len(),
                    changed_endpoints = endpoint_changes.services.len(),
                    changed_ports = summary.changed_ports,
                    operations = summary.operations,
                    apply_ms = summary.apply.as_millis() as u64,
                    elapsed_ms = (elapsed * 1000.0) as u64,
                    "synced proxy rules"
                );
                true
            }
            Err(err) => {
                // As upstream: after a failure the kernel state is unknown, so the next
                // sync starts from scratch (from the model, which is up to date).
                self.need_full = true;
                match self.mode {
                    ProxyMode::Nftables => self.metrics.nftables_sync_failures.inc(),
                    ProxyMode::Iptables => self.metrics.iptables_restore_failures.inc(),
                };
                tracing::error!(%err, "sync failed, the next sync is full");
                false
            }
        };
        self.model = Some(model);
        ok
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

    /// Recreates each family's table from the model, rendering and streaming one service at
    /// a time so the whole ruleset never sits in memory.
    async fn nft_full(
        &mut self,
        model: &Model,
        summary: &mut Summary,
    ) -> Result<(), oxlet_netrules::Error> {
        let nft = Nft::new(self.cmd.clone());
        for family in self.families.clone() {
            let base = oxlet_netrules::nft::render_base(model, family);
            let table = base.table();
            let mut chains: HashSet<u64> = base
                .base_chains
                .iter()
                .map(|c| hash_name(&c.name))
                .collect();
            let mut ops = 0usize;
            let header = oxlet_netrules::nft::full_sync_header(&base);
            ops += header.len();
            let services = model.services.iter().filter_map(|(spn, svc)| {
                oxlet_netrules::nft::render_service(model, family, spn, svc)
            });
            let lines = header.into_iter().chain(services.flat_map(|rules| {
                chains.extend(rules.chains.iter().map(|c| hash_name(&c.name)));
                let lines = oxlet_netrules::nft::service_lines(&table, &rules);
                ops += lines.len();
                lines
            }));
            let t = Instant::now();
            let result = nft.run_lines(lines).await;
            summary.apply += t.elapsed();
            summary.operations += ops;
            result?;
            self.nft_applied.insert(
                family,
                NftApplied {
                    chains,
                    stale: BTreeSet::new(),
                },
            );
        }
        Ok(())
    }

    /// Rewrites only the changed service ports' objects.
    async fn nft_partial(
        &mut self,
        model: &Model,
        changes: &[PortChange],
        summary: &mut Summary,
    ) -> Result<(), oxlet_netrules::Error> {
        let nft = Nft::new(self.cmd.clone());
        for family in self.families.clone() {
            let applied = self.nft_applied.entry(family).or_default();
            let render = |spn: &ServicePortName, svc: &Option<ServicePort>| {
                svc.as_ref()
                    .and_then(|s| oxlet_netrules::nft::render_service(model, family, spn, s))
                    .unwrap_or_default()
            };
            let rendered: Vec<(ServiceRules, ServiceRules)> = changes
                .iter()
                .map(|(spn, old, new)| (render(spn, old), render(spn, new)))
                .collect();
            let pairs: Vec<(&ServiceRules, &ServiceRules)> =
                rendered.iter().map(|(a, b)| (a, b)).collect();
            let table = format!("{} {}", family.nft(), oxlet_netrules::nft::TABLE);
            let tx = oxlet_netrules::nft::partial_sync(&table, &pairs, &applied.stale);
            summary.operations += tx.ops.len();
            if !tx.ops.is_empty() {
                tracing::trace!(script = %tx.to_nft_script(), "nft transaction");
                let t = Instant::now();
                let result = nft.run_script(&tx.to_nft_script()).await;
                summary.apply += t.elapsed();
                result?;
            }
            for (before, after) in &rendered {
                for c in &before.chains {
                    applied.chains.remove(&hash_name(&c.name));
                }
                applied
                    .chains
                    .extend(after.chains.iter().map(|c| hash_name(&c.name)));
            }
            applied.stale = tx.stale_chains;
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
            summary.operations += rules.filter.rules.len() + rules.nat.rules.len();
            let t = Instant::now();
            let result = Iptables::new(self.cmd.clone(), family)
                .apply_after(&rules, self.ipt_applied.get(&family))
                .await;
            summary.apply += t.elapsed();
            result?;
            self.ipt_applied.insert(family, rules.chain_names());
        }
        Ok(())
    }
}

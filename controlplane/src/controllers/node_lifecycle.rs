//! Node lifecycle (kube-controller-manager's `nodelifecycle`, with its taint-eviction
//! manager): node health from Leases and heartbeats, `Ready=Unknown` for silent nodes,
//! not-ready/unreachable taints, and eviction of pods that do not tolerate NoExecute taints.
//!
//! As upstream's `tryUpdateNodeHealth`, a node's health is when this controller last *saw*
//! its heartbeat move (the Lease's renewTime or the Ready condition's lastHeartbeatTime,
//! whichever is newer), on its own clock, so clock skew between node and control plane does
//! not matter, and after a controller restart every node gets a full grace period.
//! The decisions ([`decide`], [`eviction_deadline`]) are pure; [`run`] is the shell.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::Resource as _;
use serde_json::json;
use tokio::task::JoinSet;

use super::informers::Informers;
use super::scheduler::filter::tolerates;
use super::Context;

/// Taint of a node whose Ready condition is False.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// Taint of a node whose Ready condition is Unknown (silent).
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// Namespace of node Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// Conditions set to Unknown when a node goes silent (upstream `nodeConditionTypes`).
pub const CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// The last heartbeat seen of a node and when this controller saw it change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// Newest of the Lease renewTime and the Ready lastHeartbeatTime.
    pub heartbeat: Option<Timestamp>,
    /// Local time the heartbeat last moved (or the controller first saw the node).
    pub probed: Instant,
}

/// Folds a new reading of a node's heartbeat into its health.
pub fn observe(prev: Option<Health>, heartbeat: Option<Timestamp>, now: Instant) -> Health {
    match prev {
        Some(p) if heartbeat <= p.heartbeat => p,
        _ => Health {
            heartbeat,
            probed: now,
        },
    }
}

/// The heartbeat of `node`: the newer of its Lease's renewTime and its Ready condition's
/// lastHeartbeatTime.
pub fn heartbeat_of(node: &Node, lease: Option<&Lease>) -> Option<Timestamp> {
    let renew = lease
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.renew_time.as_ref())
        .map(|t| t.0);
    let hb = ready_condition(node)
        .and_then(|c| c.last_heartbeat_time.as_ref())
        .map(|t| t.0);
    renew.max(hb)
}

fn ready_condition(node: &Node) -> Option<&NodeCondition> {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
}

/// The Ready condition's status: True, False or Unknown (also when absent).
pub fn ready_status(node: &Node) -> &str {
    ready_condition(node).map_or("Unknown", |c| c.status.as_str())
}

/// What to do about one node this pass.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decision {
    /// Set Ready, MemoryPressure, DiskPressure and PIDPressure to Unknown.
    pub mark_unknown: bool,
    /// The Ready status after this pass.
    pub ready: String,
    /// The node's new taint list, when it changes.
    pub taints: Option<Vec<Taint>>,
}

fn lifecycle_taint(t: &Taint) -> bool {
    (t.key == TAINT_NOT_READY || t.key == TAINT_UNREACHABLE)
        && (t.effect == "NoExecute" || t.effect == "NoSchedule")
}

/// The decision for `node` given whether it has been silent beyond the grace period: a
/// silent node is marked Unknown; Unknown gets the unreachable taints, False the not-ready
/// ones, True neither (NoExecute and NoSchedule each, as upstream's taint-based eviction and
/// TaintNodesByCondition do together).
pub fn decide(node: &Node, silent: bool, now: Timestamp) -> Decision {
    let reported = ready_status(node);
    // A node that never posted a Ready condition gets the Unknown conditions written too.
    let mark_unknown = silent && (reported != "Unknown" || ready_condition(node).is_none());
    let ready = if silent { "Unknown" } else { reported };
    let wanted_key = match ready {
        "True" => None,
        "False" => Some(TAINT_NOT_READY),
        _ => Some(TAINT_UNREACHABLE),
    };
    let current = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let mut taints: Vec<Taint> = current
        .iter()
        .filter(|t| !lifecycle_taint(t) || Some(t.key.as_str()) == wanted_key)
        .cloned()
        .collect();
    if let Some(key) = wanted_key {
        for effect in ["NoSchedule", "NoExecute"] {
            if !taints.iter().any(|t| t.key == key && t.effect == effect) {
                taints.push(Taint {
                    key: key.to_string(),
                    effect: effect.to_string(),
                    value: None,
                    time_added: Some(Time(now)),
                });
            }
        }
    }
    Decision {
        mark_unknown,
        ready: ready.to_string(),
        taints: (taints != current).then_some(taints),
    }
}

/// When `pod` must leave a node with these taints (upstream taint-eviction manager): `None`
/// to stay (no NoExecute taint, or every one tolerated forever); otherwise the time, which
/// is `since(taint)` plus the shortest tolerationSeconds among the tolerations used, or
/// right away (`since` of the first untolerated taint) when a taint is not tolerated.
pub fn eviction_deadline(
    pod: &Pod,
    taints: &[Taint],
    since: impl Fn(&Taint) -> Timestamp,
) -> Option<Timestamp> {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    let mut deadline: Option<Timestamp> = None;
    for taint in taints.iter().filter(|t| t.effect == "NoExecute") {
        let used: Vec<_> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        let at = if used.is_empty() {
            since(taint)
        } else if used.iter().any(|t| t.toleration_seconds.is_none()) {
            // A toleration without seconds tolerates forever.
            continue;
        } else {
            let secs = used
                .iter()
                .filter_map(|t| t.toleration_seconds)
                .min()
                .unwrap_or(0)
                .max(0);
            since(taint) + SignedDuration::from_secs(secs)
        };
        deadline = Some(deadline.map_or(at, |d| d.min(at)));
    }
    deadline
}

struct Shell {
    client: kube::Client,
    nodes: Store<Node>,
    leases: Store<Lease>,
    pods: Store<Pod>,
    grace: Duration,
    health: HashMap<String, Health>,
    last_ready: HashMap<String, String>,
    /// When a NoExecute taint without timeAdded was first seen, by (node, key).
    first_seen: HashMap<(String, String), Timestamp>,
    evicted: HashSet<String>,
    /// Pods (uid) with an eviction scheduled, for the "Cancelling deletion" event.
    scheduled: HashMap<String, k8s_openapi::api::core::v1::ObjectReference>,
    /// Pods (uid) already marked not ready because their node is not ready.
    marked: HashSet<String>,
    /// Nodes seen, with their object references, for the Registered/Removing events.
    registered: HashMap<String, k8s_openapi::api::core::v1::ObjectReference>,
    recorder: super::common::Events,
}

impl Shell {
    /// One monitor pass; returns the next eviction deadline, if any.
    async fn pass(&mut self) -> Option<Instant> {
        let now = Instant::now();
        let wall = Timestamp::now();
        let nodes = self.nodes.state();
        let names: HashSet<&str> = nodes
            .iter()
            .filter_map(|n| n.metadata.name.as_deref())
            .collect();
        let gone: Vec<String> = self
            .registered
            .keys()
            .filter(|n| !names.contains(n.as_str()))
            .cloned()
            .collect();
        for name in gone {
            if let Some(reference) = self.registered.remove(&name) {
                self.record(
                    &reference,
                    EventType::Normal,
                    "RemovingNode",
                    format!("Node {name} event: Removing Node {name} from Controller"),
                )
                .await;
            }
        }
        for node in &nodes {
            let name = node.metadata.name.clone().unwrap_or_default();
            if !self.registered.contains_key(&name) {
                let reference = node.object_ref(&());
                self.record(
                    &reference,
                    EventType::Normal,
                    "RegisteredNode",
                    format!("Node {name} event: Registered Node {name} in Controller"),
                )
                .await;
                self.registered.insert(name, reference);
            }
        }
        self.health.retain(|n, _| names.contains(n.as_str()));
        self.last_ready.retain(|n, _| names.contains(n.as_str()));
        self.first_seen
            .retain(|(n, _), _| names.contains(n.as_str()));
        let mut noexec: HashMap<String, Vec<Taint>> = HashMap::new();
        let mut not_ready: HashSet<String> = HashSet::new();
        for node in &nodes {
            let name = node.metadata.name.clone().unwrap_or_default();
            let lease = self
                .leases
                .get(&ObjectRef::new(&name).within(LEASE_NAMESPACE));
            let h = observe(
                self.health.get(&name).copied(),
                heartbeat_of(node, lease.as_deref()),
                now,
            );
            self.health.insert(name.clone(), h);
            let silent = now.saturating_duration_since(h.probed) > self.grace;
            let d = decide(node, silent, wall);
            if let Some(taints) = &d.taints {
                self.write_taints(node, taints).await;
            }
            if d.mark_unknown {
                self.mark_unknown(node, wall).await;
            }
            if d.ready != "True" {
                not_ready.insert(name.clone());
            }
            let prev = self.last_ready.insert(name.clone(), d.ready.clone());
            if prev.as_deref() == Some("True") && d.ready != "True" {
                self.record(
                    &node.object_ref(&()),
                    EventType::Normal,
                    "NodeNotReady",
                    format!("Node {name} status is now: NodeNotReady"),
                )
                .await;
            }
            let taints = d
                .taints
                .clone()
                .or_else(|| node.spec.as_ref().and_then(|s| s.taints.clone()))
                .unwrap_or_default();
            let taints: Vec<Taint> = taints
                .into_iter()
                .filter(|t| t.effect == "NoExecute")
                .collect();
            for t in &taints {
                if t.time_added.is_none() {
                    self.first_seen
                        .entry((name.clone(), t.key.clone()))
                        .or_insert(wall);
                }
            }
            self.first_seen
                .retain(|(n, k), _| n != &name || taints.iter().any(|t| &t.key == k));
            if !taints.is_empty() {
                noexec.insert(name, taints);
            }
        }
        self.mark_pods_not_ready(&not_ready, wall).await;
        self.evict(&noexec, now, wall).await
    }

    /// Pods on a node that is not ready are not ready either: their Ready condition is set
    /// False (so Services stop sending them traffic) with a NodeNotReady Warning, once per
    /// pod, as upstream's `MarkPodsNotReady`.
    async fn mark_pods_not_ready(&mut self, not_ready: &HashSet<String>, wall: Timestamp) {
        let pods = self.pods.state();
        let on_bad_node = |p: &Pod| {
            !terminal(p)
                && p.spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_deref())
                    .is_some_and(|n| not_ready.contains(n))
        };
        let keep: HashSet<&str> = pods
            .iter()
            .filter(|p| on_bad_node(p))
            .filter_map(|p| p.metadata.uid.as_deref())
            .collect();
        self.marked.retain(|u| keep.contains(u.as_str()));
        let todo: Vec<Arc<Pod>> = pods
            .iter()
            .filter(|p| on_bad_node(p))
            .filter(|p| {
                let ready = p
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                ready
                    && !self
                        .marked
                        .contains(p.metadata.uid.as_deref().unwrap_or_default())
            })
            .cloned()
            .collect();
        let (client, recorder) = (self.client.clone(), self.recorder.clone());
        let marked: Vec<Option<String>> = futures::stream::iter(todo)
            .map(|pod| mark_not_ready(client.clone(), recorder.clone(), pod, wall))
            .buffer_unordered(WRITES_IN_FLIGHT)
            .collect()
            .await;
        self.marked.extend(marked.into_iter().flatten());
    }

    async fn write_taints(&self, node: &Node, taints: &[Taint]) {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        let api: Api<Node> = Api::all(self.client.clone());
        // The resourceVersion makes this a compare-and-swap: a concurrent change to the
        // taints (an admin's `kubectl taint`) is never overwritten; the next pass retries.
        let patch = json!({
            "metadata": {"resourceVersion": node.metadata.resource_version},
            "spec": {"taints": taints},
        });
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => tracing::info!(
                node = name,
                taints = ?taints.iter().map(|t| format!("{}:{}", t.key, t.effect)).collect::<Vec<_>>(),
                "node taints updated"
            ),
            Err(error) => tracing::warn!(node = name, %error, "updating taints failed; will retry"),
        }
    }

    async fn mark_unknown(&self, node: &Node, wall: Timestamp) {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        let existing = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let conditions: Vec<serde_json::Value> = CONDITIONS
            .iter()
            .map(|kind| {
                let old = existing.iter().find(|c| c.type_ == *kind);
                json!({
                    "type": kind,
                    "status": "Unknown",
                    "reason": "NodeStatusUnknown",
                    "message": "Kubelet stopped posting node status.",
                    "lastHeartbeatTime": old.and_then(|c| c.last_heartbeat_time.clone()),
                    "lastTransitionTime": Time(wall),
                })
            })
            .collect();
        let api: Api<Node> = Api::all(self.client.clone());
        let patch = json!({"status": {"conditions": conditions}});
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            Ok(_) => tracing::info!(node = name, "node stopped posting status; marked Unknown"),
            Err(error) => {
                tracing::warn!(node = name, %error, "marking node Unknown failed; will retry")
            }
        }
    }

    async fn evict(
        &mut self,
        noexec: &HashMap<String, Vec<Taint>>,
        now: Instant,
        wall: Timestamp,
    ) -> Option<Instant> {
        let pods = self.pods.state();
        let live: HashSet<&str> = pods
            .iter()
            .filter_map(|p| p.metadata.uid.as_deref())
            .collect();
        self.evicted.retain(|u| live.contains(u.as_str()));
        let mut next: Option<Instant> = None;
        let mut still_scheduled: HashSet<String> = HashSet::new();
        let mut due: Vec<(Arc<Pod>, String)> = Vec::new();
        for pod in &pods {
            let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
                continue;
            };
            let Some(taints) = noexec.get(node) else {
                continue;
            };
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            if pod.metadata.deletion_timestamp.is_some()
                || terminal(pod)
                || self.evicted.contains(&uid)
            {
                continue;
            }
            let since = |t: &Taint| {
                t.time_added.as_ref().map(|t| t.0).unwrap_or_else(|| {
                    self.first_seen
                        .get(&(node.to_string(), t.key.clone()))
                        .copied()
                        .unwrap_or(wall)
                })
            };
            let Some(deadline) = eviction_deadline(pod, taints, since) else {
                continue;
            };
            still_scheduled.insert(uid.clone());
            self.scheduled
                .entry(uid.clone())
                .or_insert_with(|| pod.object_ref(&()));
            if deadline > wall {
                let wait = Duration::try_from(deadline.duration_since(wall))
                    .unwrap_or(Duration::from_secs(1));
                let at = now + wait;
                next = Some(next.map_or(at, |n| n.min(at)));
                continue;
            }
            due.push((pod.clone(), node.to_string()));
        }
        // Evictions run side by side: a lost node's pods all fall due at once, and each
        // takes an Event, a status write and a delete.
        let (client, recorder) = (self.client.clone(), self.recorder.clone());
        let done: Vec<Option<String>> = futures::stream::iter(due)
            .map(|(pod, node)| evict_one(client.clone(), recorder.clone(), pod, node, wall))
            .buffer_unordered(WRITES_IN_FLIGHT)
            .collect()
            .await;
        for uid in done.into_iter().flatten() {
            self.scheduled.remove(&uid);
            self.evicted.insert(uid);
        }
        // Evictions no longer due (the taint went, or the pod went): say so for live pods.
        let cancelled: Vec<String> = self
            .scheduled
            .keys()
            .filter(|u| !still_scheduled.contains(*u))
            .cloned()
            .collect();
        for uid in cancelled {
            let Some(reference) = self.scheduled.remove(&uid) else {
                continue;
            };
            let terminating = pods.iter().any(|p| {
                p.metadata.uid.as_deref() == Some(uid.as_str())
                    && p.metadata.deletion_timestamp.is_some()
            });
            if live.contains(uid.as_str()) && !terminating && !self.evicted.contains(&uid) {
                let who = format!(
                    "{}/{}",
                    reference.namespace.as_deref().unwrap_or_default(),
                    reference.name.as_deref().unwrap_or_default()
                );
                self.record(
                    &reference,
                    EventType::Normal,
                    "TaintManagerEviction",
                    format!("Cancelling deletion of Pod {who}"),
                )
                .await;
            }
        }
        next
    }

    async fn record(
        &self,
        reference: &k8s_openapi::api::core::v1::ObjectReference,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        self.recorder
            .publish(reference, type_, reason, reason, note)
            .await;
    }
}

/// Whether the pod has finished (it holds nothing on its node and is not evicted).
fn terminal(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Pod status writes and evictions in flight at once.
const WRITES_IN_FLIGHT: usize = 16;

/// Sets the pod's Ready condition False with a NodeNotReady Warning; its uid when done.
async fn mark_not_ready(
    client: kube::Client,
    recorder: super::common::Events,
    pod: Arc<Pod>,
    wall: Timestamp,
) -> Option<String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client, &ns);
    let patch = json!({"status": {"conditions": [
        {"type": "Ready", "status": "False", "lastTransitionTime": Time(wall)}]}});
    match api
        .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
    {
        Ok(_) => {
            recorder
                .publish(
                    &pod.object_ref(&()),
                    EventType::Warning,
                    "NodeNotReady",
                    "NodeNotReady",
                    "Node is not ready".to_string(),
                )
                .await;
            pod.metadata.uid.clone()
        }
        Err(kube::Error::Api(s)) if s.code == 404 => None,
        Err(error) => {
            tracing::warn!(pod = %format!("{ns}/{name}"), %error, "marking pod not ready failed; will retry");
            None
        }
    }
}

/// Evicts one pod for a NoExecute taint of `node`, as upstream's taint eviction: an Event,
/// the DisruptionTarget condition, then the (graceful) delete. Its uid when done.
async fn evict_one(
    client: kube::Client,
    recorder: super::common::Events,
    pod: Arc<Pod>,
    node: String,
    wall: Timestamp,
) -> Option<String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client, &ns);
    recorder
        .publish(
            &pod.object_ref(&()),
            EventType::Normal,
            "TaintManagerEviction",
            "TaintManagerEviction",
            format!("Marking for deletion Pod {ns}/{name}"),
        )
        .await;
    let condition = json!({"status": {"conditions": [{
        "type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager",
        "message": "Taint manager: deleting due to NoExecute taint",
        "lastTransitionTime": Time(wall)}]}});
    if let Err(error) = api
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Strategic(&condition),
        )
        .await
    {
        tracing::debug!(pod = %format!("{ns}/{name}"), %error, "DisruptionTarget condition not set");
    }
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {
            tracing::info!(pod = %format!("{ns}/{name}"), node, "evicted for NoExecute taint");
            pod.metadata.uid.clone()
        }
        Err(kube::Error::Api(s)) if s.code == 404 => pod.metadata.uid.clone(),
        Err(error) => {
            tracing::warn!(pod = %format!("{ns}/{name}"), %error, "eviction failed; will retry");
            None
        }
    }
}

fn drive<K>(
    tasks: &mut JoinSet<()>,
    api: Api<K>,
    cfg: watcher::Config,
    what: &'static str,
) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store::<K>();
    let stream = reflector::reflector(writer, watcher::watcher(api, cfg).default_backoff());
    tasks.spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            if let Err(error) = ev {
                tracing::warn!(watch = what, %error, "watch failed; retrying");
            }
        }
    });
    reader
}

/// Runs node lifecycle until `ctx.shutdown`, on the shared node and pod informers.
pub async fn run(ctx: Context, shared: Informers) -> Result<(), String> {
    let client = ctx.client.clone();
    let mut watches = JoinSet::new();
    let (shared_nodes, shared_pods) = (shared.nodes()?, shared.pods()?);
    let (nodes, pods) = (shared_nodes.store(), shared_pods.store());
    let leases = drive(
        &mut watches,
        Api::<Lease>::namespaced(client.clone(), LEASE_NAMESPACE),
        watcher::Config::default(),
        "leases",
    );
    let ready = async {
        shared_nodes.ready().await.is_ok()
            && shared_pods.ready().await.is_ok()
            && leases.wait_until_ready().await.is_ok()
    };
    tokio::select! {
        _ = ctx.shutdown.cancelled() => return Ok(()),
        ok = ready => if !ok {
            return Err("a store was dropped before it was ready".to_string());
        },
    }
    let mut shell = Shell {
        client: client.clone(),
        nodes,
        leases,
        pods,
        grace: ctx.options.node_monitor_grace_period,
        health: HashMap::new(),
        last_ready: HashMap::new(),
        first_seen: HashMap::new(),
        evicted: HashSet::new(),
        scheduled: HashMap::new(),
        marked: HashSet::new(),
        registered: HashMap::new(),
        recorder: super::common::Events::new(&client, "node-controller"),
    };
    tracing::info!(
        grace = ?ctx.options.node_monitor_grace_period,
        period = ?ctx.options.node_monitor_period,
        "node lifecycle started"
    );
    let period = ctx
        .options
        .node_monitor_period
        .max(Duration::from_millis(10));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_eviction: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            _ = tick.tick() => {}
            _ = sleep_until(next_eviction) => {}
            Some(ended) = watches.join_next() => {
                return Err(format!("a watch task ended: {ended:?}"));
            }
        }
        next_eviction = shell.pass().await;
    }
    watches.shutdown().await;
    Ok(())
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn node(ready: Option<&str>, taints: Value) -> Node {
        let conditions = match ready {
            Some(r) => {
                json!([{"type": "Ready", "status": r, "lastHeartbeatTime": "2025-01-01T00:00:05Z"}])
            }
            None => json!([]),
        };
        serde_json::from_value(json!({
            "metadata": {"name": "n"},
            "spec": {"taints": taints},
            "status": {"conditions": conditions},
        }))
        .expect("node")
    }

    fn keys(d: &Decision) -> Option<Vec<String>> {
        d.taints.as_ref().map(|ts| {
            ts.iter()
                .map(|t| format!("{}:{}", t.key, t.effect))
                .collect()
        })
    }

    #[test]
    fn decisions() {
        let now = ts("2025-01-01T00:01:00Z");
        let unreachable = json!([
            {"key": TAINT_UNREACHABLE, "effect": "NoSchedule"},
            {"key": TAINT_UNREACHABLE, "effect": "NoExecute"}]);
        // (name, node, silent, mark unknown, ready after, new taints)
        type Case<'a> = (&'a str, Node, bool, bool, &'a str, Option<Vec<&'a str>>);
        let cases: Vec<Case> = vec![
            (
                "healthy",
                node(Some("True"), json!([])),
                false,
                false,
                "True",
                None,
            ),
            (
                "silent → Unknown + unreachable",
                node(
                    Some("True"),
                    json!([{"key": "other", "effect": "NoSchedule"}]),
                ),
                true,
                true,
                "Unknown",
                Some(vec![
                    "other:NoSchedule",
                    "node.kubernetes.io/unreachable:NoSchedule",
                    "node.kubernetes.io/unreachable:NoExecute",
                ]),
            ),
            (
                "already Unknown and tainted",
                node(Some("Unknown"), unreachable.clone()),
                true,
                false,
                "Unknown",
                None,
            ),
            (
                "reports False → not-ready",
                node(Some("False"), json!([])),
                false,
                false,
                "False",
                Some(vec![
                    "node.kubernetes.io/not-ready:NoSchedule",
                    "node.kubernetes.io/not-ready:NoExecute",
                ]),
            ),
            (
                "back to True → taints removed, others kept",
                node(
                    Some("True"),
                    json!([{"key": "other", "effect": "NoSchedule"}, {"key": TAINT_UNREACHABLE, "effect": "NoExecute"}]),
                ),
                false,
                false,
                "True",
                Some(vec!["other:NoSchedule"]),
            ),
            (
                "never posted → Unknown",
                node(None, json!([])),
                true,
                true,
                "Unknown",
                Some(vec![
                    "node.kubernetes.io/unreachable:NoSchedule",
                    "node.kubernetes.io/unreachable:NoExecute",
                ]),
            ),
        ];
        for (name, n, silent, mark, ready, taints) in cases {
            let d = decide(&n, silent, now);
            assert_eq!(d.mark_unknown, mark, "{name}");
            assert_eq!(d.ready, ready, "{name}");
            assert_eq!(
                keys(&d),
                taints.map(|v| v.iter().map(|s| s.to_string()).collect()),
                "{name}"
            );
        }
    }

    #[test]
    fn health_moves_only_with_newer_heartbeats() {
        let t0 = Instant::now();
        let h = observe(None, Some(ts("2025-01-01T00:00:05Z")), t0);
        assert_eq!(h.probed, t0);
        let later = t0 + Duration::from_secs(10);
        assert_eq!(
            observe(Some(h), Some(ts("2025-01-01T00:00:05Z")), later).probed,
            t0
        );
        assert_eq!(
            observe(Some(h), Some(ts("2025-01-01T00:00:06Z")), later).probed,
            later
        );
        let lease: Lease = serde_json::from_value(json!({
            "metadata": {"name": "n"}, "spec": {"renewTime": "2025-01-01T00:00:09.000000Z"}}))
        .expect("lease");
        let n = node(Some("True"), json!([]));
        assert_eq!(
            heartbeat_of(&n, Some(&lease)),
            Some(ts("2025-01-01T00:00:09Z"))
        );
        assert_eq!(heartbeat_of(&n, None), Some(ts("2025-01-01T00:00:05Z")));
    }

    #[test]
    fn eviction_deadlines() {
        let added = ts("2025-01-01T00:00:00Z");
        let taint = |key: &str, effect: &str| Taint {
            key: key.into(),
            effect: effect.into(),
            value: None,
            time_added: Some(Time(added)),
        };
        let pod = |tols: Value| -> Pod {
            serde_json::from_value(
                json!({"metadata": {"name": "p"}, "spec": {"containers": [], "tolerations": tols}}),
            )
            .expect("pod")
        };
        let since = |t: &Taint| t.time_added.as_ref().map(|t| t.0).unwrap_or(added);
        let unreachable = [taint(TAINT_UNREACHABLE, "NoExecute")];
        let cases: Vec<(&str, Pod, Vec<Taint>, Option<&str>)> = vec![
            (
                "untolerated: now",
                pod(json!([])),
                unreachable.to_vec(),
                Some("2025-01-01T00:00:00Z"),
            ),
            (
                "tolerated for 300 s",
                pod(
                    json!([{"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]),
                ),
                unreachable.to_vec(),
                Some("2025-01-01T00:05:00Z"),
            ),
            (
                "tolerated forever",
                pod(
                    json!([{"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}]),
                ),
                unreachable.to_vec(),
                None,
            ),
            (
                "NoSchedule taints never evict",
                pod(json!([])),
                vec![taint(TAINT_UNREACHABLE, "NoSchedule")],
                None,
            ),
            (
                "shortest of the tolerations used",
                pod(json!([
                    {"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60},
                    {"key": TAINT_UNREACHABLE, "operator": "Exists", "tolerationSeconds": 1}])),
                unreachable.to_vec(),
                Some("2025-01-01T00:00:01Z"),
            ),
            (
                "one untolerated taint among tolerated ones",
                pod(
                    json!([{"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}]),
                ),
                vec![
                    taint(TAINT_UNREACHABLE, "NoExecute"),
                    taint("other", "NoExecute"),
                ],
                Some("2025-01-01T00:00:00Z"),
            ),
        ];
        for (name, p, taints, want) in cases {
            assert_eq!(
                eviction_deadline(&p, &taints, since),
                want.map(ts),
                "{name}"
            );
        }
    }
}

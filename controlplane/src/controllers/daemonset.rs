//! The DaemonSet controller: one pod per eligible node, placed through required node
//! affinity on `metadata.name` (the scheduler binds it, as upstream since 1.12; this loop
//! never sets `nodeName`), rolled by RollingUpdate on template change, as upstream's
//! pkg/controller/daemon.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    Toleration,
};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tokio::task::JoinSet;

use super::common::{self, api_err, Result};
use super::informers::Informers;
use super::replicaset::{pod_from_template, Expectations};
use super::Context;

/// The label carrying the template revision hash on daemon pods.
pub const CONTROLLER_REVISION_HASH: &str = "controller-revision-hash";

struct Ctx {
    client: kube::Client,
    pods: Store<Pod>,
    nodes: Store<Node>,
    recorder: common::Events,
    expectations: Expectations,
}

/// Runs the loop until shutdown, on the shared pod and node informers.
pub async fn run(ctx: Context, shared: Informers) -> Result<(), String> {
    let client = ctx.client.clone();
    let pods = shared.pods()?;
    let nodes = shared.nodes()?;
    pods.ready().await?;
    nodes.ready().await?;
    // A node joining, leaving or changing labels or taints concerns every DaemonSet.
    let node_events = nodes.changes().map(|_| ());
    let state = Arc::new(Ctx {
        recorder: common::recorder(&client, "daemonset-controller"),
        client: client.clone(),
        pods: pods.store(),
        nodes: nodes.store(),
        expectations: Expectations::default(),
    });
    let stream = Controller::new(Api::<DaemonSet>::all(client), watcher::Config::default())
        .owns_shared_stream(pods.changes())
        .reconcile_all_on(node_events)
        .graceful_shutdown_on(ctx.shutdown.clone().cancelled_owned())
        .run(reconcile, common::error_policy, state);
    common::drive(stream, JoinSet::new(), ctx.shutdown).await
}

use futures::StreamExt as _;

/// The tolerations every daemon pod gets (upstream's `AddOrUpdateDaemonPodTolerations`).
pub fn daemon_tolerations(existing: &[Toleration], host_network: bool) -> Vec<Toleration> {
    let mut out = existing.to_vec();
    let mut add = |key: &str, effect: &str| {
        if !out
            .iter()
            .any(|t| t.key.as_deref() == Some(key) && t.effect.as_deref() == Some(effect))
        {
            out.push(Toleration {
                key: Some(key.into()),
                operator: Some("Exists".into()),
                effect: Some(effect.into()),
                ..Default::default()
            });
        }
    };
    add("node.kubernetes.io/not-ready", "NoExecute");
    add("node.kubernetes.io/unreachable", "NoExecute");
    add("node.kubernetes.io/disk-pressure", "NoSchedule");
    add("node.kubernetes.io/memory-pressure", "NoSchedule");
    add("node.kubernetes.io/pid-pressure", "NoSchedule");
    add("node.kubernetes.io/unschedulable", "NoSchedule");
    if host_network {
        add("node.kubernetes.io/network-unavailable", "NoSchedule");
    }
    out
}

// Taint and node-selector matching are the scheduler's, as upstream's DaemonSet controller
// uses the scheduler's helpers: one definition of what "tolerates" and "matches" mean.
use crate::controllers::scheduler::filter::requirement_matches;
pub use crate::controllers::scheduler::filter::tolerates;

/// Whether `node` satisfies a required node selector (terms ORed, requirements ANDed).
pub fn node_selector_matches(sel: &NodeSelector, node: &Node) -> bool {
    let labels = common::labels_of(&node.metadata);
    let name = node.name_any();
    sel.node_selector_terms.iter().any(|term| {
        let exprs = term.match_expressions.as_deref().unwrap_or_default();
        let fields = term.match_fields.as_deref().unwrap_or_default();
        if exprs.is_empty() && fields.is_empty() {
            return false;
        }
        exprs
            .iter()
            .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
            && fields
                .iter()
                .all(|r| r.key == "metadata.name" && requirement_matches(r, Some(&name)))
    })
}

/// Whether a daemon pod should be placed on `node` and whether an existing one may keep
/// running there (upstream's `NodeShouldRunDaemonPod`): nodeSelector, required affinity and
/// taints; NoSchedule taints block new pods, NoExecute ones also evict.
pub fn should_run(ds: &DaemonSet, node: &Node) -> (bool, bool) {
    let spec = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .unwrap_or_default();
    let labels = common::labels_of(&node.metadata);
    if let Some(ns) = &spec.node_selector {
        if !ns.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            return (false, false);
        }
    }
    if let Some(req) = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
    {
        if !node_selector_matches(req, node) {
            return (false, false);
        }
    }
    let tolerations = daemon_tolerations(
        spec.tolerations.as_deref().unwrap_or_default(),
        spec.host_network.unwrap_or(false),
    );
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let untolerated = |effect: &str| {
        taints
            .iter()
            .filter(|t| t.effect == effect)
            .any(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
    };
    let no_execute = untolerated("NoExecute");
    (!no_execute && !untolerated("NoSchedule"), !no_execute)
}

/// Required node affinity pinning a pod to `node` by name (upstream's
/// `ReplaceDaemonSetPodNodeNameNodeAffinity`): other required terms are replaced.
pub fn pin_to_node(affinity: Option<Affinity>, node: &str) -> Affinity {
    let mut affinity = affinity.unwrap_or_default();
    let na = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    na.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node.into()]),
            }]),
        }],
    });
    affinity
}

/// The node a daemon pod is for: its `nodeName`, else the pinned affinity.
pub fn pod_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = &spec.node_name {
        return Some(n.clone());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref()?.first().cloned())
}

/// What one sync does: pods to create (by node) and delete (by name), plus status counts.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Nodes getting a new pod.
    pub create: Vec<String>,
    /// Pods to delete.
    pub delete: Vec<String>,
    /// Status counts.
    pub status: StatusCounts,
}

/// DaemonSet status counts.
#[derive(Debug, Default, PartialEq, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusCounts {
    /// Nodes that should run the pod.
    pub desired_number_scheduled: i32,
    /// Such nodes running it.
    pub current_number_scheduled: i32,
    /// Nodes running it that should not.
    pub number_misscheduled: i32,
    /// Nodes whose daemon pod is ready.
    pub number_ready: i32,
    /// Nodes whose daemon pod has the current template.
    pub updated_number_scheduled: i32,
    /// Nodes whose daemon pod is available.
    pub number_available: i32,
    /// desired - available.
    pub number_unavailable: i32,
    /// Generation seen.
    pub observed_generation: i64,
}

/// A node's old and updated daemon pod (at most one of each).
type OldAndNew = (Option<Arc<Pod>>, Option<Arc<Pod>>);

/// Plans one sync (upstream's `manage` + `rollingUpdate` + `updateDaemonSetStatus`): `pods`
/// are the DaemonSet's, `hash` the current template hash. With `maxSurge`, a new pod starts
/// beside the old one and the old one goes once the new one is available.
pub fn plan(
    ds: &DaemonSet,
    nodes: &[Arc<Node>],
    pods: &[Arc<Pod>],
    hash: &str,
    now: Timestamp,
) -> common::Result<Plan> {
    let spec = ds.spec.clone().unwrap_or_default();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let available = |p: &Pod| common::pod_is_available(p, min_ready, now);
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate";
    let ru = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());
    let mut by_node: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
    let mut out = Plan::default();
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        match pod_node(pod) {
            Some(n) => by_node.entry(n).or_default().push(pod.clone()),
            None => out.delete.push(pod.name_any()),
        }
    }
    let node_names: BTreeSet<String> = nodes.iter().map(|n| n.name_any()).collect();
    for (node, pods) in &by_node {
        if !node_names.contains(node) {
            out.delete.extend(pods.iter().map(|p| p.name_any()));
        }
    }
    let is_updated =
        |p: &Pod| p.labels().get(CONTROLLER_REVISION_HASH).map(String::as_str) == Some(hash);
    let desired = nodes.iter().filter(|n| should_run(ds, n).0).count();
    let desired = i32::try_from(desired).unwrap_or(i32::MAX);
    let max_surge = if rolling {
        common::scaled_value(ru.and_then(|r| r.max_surge.as_ref()), desired, true, 0)?.max(0)
    } else {
        0
    };
    // Nodes running the daemon pod, with their old and updated pod (at most one of each).
    let mut running: Vec<(String, OldAndNew)> = Vec::new();
    let st = &mut out.status;
    for node in nodes {
        let name = node.name_any();
        let (run, keep) = should_run(ds, node);
        let mut here: Vec<Arc<Pod>> = by_node.get(&name).cloned().unwrap_or_default();
        // Failed daemon pods are replaced (upstream deletes them, with backoff).
        let (failed, live): (Vec<_>, Vec<_>) = here
            .drain(..)
            .partition(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed"));
        out.delete.extend(failed.iter().map(|p| p.name_any()));
        let mut live = live;
        if run {
            st.desired_number_scheduled += 1;
        }
        if !keep {
            out.delete.extend(live.iter().map(|p| p.name_any()));
            if !live.is_empty() {
                st.number_misscheduled += 1;
            }
            continue;
        }
        if live.is_empty() {
            if run {
                out.create.push(name);
            }
            continue;
        }
        if !run {
            st.number_misscheduled += 1;
            continue;
        }
        live.sort_by_key(|p| {
            p.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second())
                .unwrap_or(0)
        });
        // Status reads the oldest pod of the node, as upstream.
        let first = live[0].clone();
        st.current_number_scheduled += 1;
        if common::pod_is_ready(&first) {
            st.number_ready += 1;
        }
        if available(&first) {
            st.number_available += 1;
        }
        if is_updated(&first) {
            st.updated_number_scheduled += 1;
        }
        let (mut old, mut new) = (None, None);
        if max_surge > 0 {
            // Surging: the oldest pod of each revision stays; the old one goes once it is
            // not ready or the new one is available (upstream's `podsShouldBeOnNode`).
            for p in &live {
                let slot = if is_updated(p) { &mut new } else { &mut old };
                if slot.is_none() {
                    *slot = Some(p.clone());
                } else {
                    out.delete.push(p.name_any());
                }
            }
            if let (Some(o), Some(n)) = (&old, &new) {
                if !common::pod_is_ready(o) || available(n) {
                    out.delete.push(o.name_any());
                    old = None;
                }
            }
        } else {
            // One pod per node: keep the oldest, as upstream.
            out.delete.extend(live[1..].iter().map(|p| p.name_any()));
            if is_updated(&first) {
                new = Some(first);
            } else {
                old = Some(first);
            }
        }
        running.push((name, (old, new)));
    }
    st.number_unavailable = (st.desired_number_scheduled - st.number_available).max(0);
    st.observed_generation = ds.metadata.generation.unwrap_or(0);

    if rolling && max_surge == 0 {
        let max_unavailable = common::scaled_value(
            ru.and_then(|r| r.max_unavailable.as_ref()),
            st.desired_number_scheduled,
            true,
            1,
        )?
        .max(1);
        // Unavailable now: desired nodes without an available pod (missing ones included).
        let mut unavailable = st.desired_number_scheduled - st.number_available;
        for (_, (old, _)) in running {
            let Some(pod) = old else { continue };
            if !available(&pod) {
                out.delete.push(pod.name_any());
            } else if unavailable < max_unavailable {
                out.delete.push(pod.name_any());
                unavailable += 1;
            }
        }
    } else if rolling {
        // Surge (upstream's `rollingUpdate` with maxSurge): a new pod beside the old one, on
        // every node whose old pod is unavailable and on up to maxSurge others at a time.
        let mut surging = 0;
        let mut allowed = Vec::new();
        let mut candidates = Vec::new();
        for (name, (old, new)) in running {
            match (old, new) {
                (None, _) => {}
                (Some(o), None) => {
                    if !available(&o) {
                        allowed.push(name);
                    } else if surging < max_surge {
                        candidates.push(name);
                    }
                }
                (Some(_), Some(n)) => {
                    if !available(&n) {
                        surging += 1;
                    }
                }
            }
        }
        let room = usize::try_from((max_surge - surging).max(0)).unwrap_or(0);
        out.create.extend(allowed);
        out.create.extend(candidates.into_iter().take(room));
    }
    out.delete.sort();
    out.delete.dedup();
    Ok(out)
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Ctx>) -> Result<Action> {
    common::ready(&ctx.pods, "pods").await?;
    common::ready(&ctx.nodes, "nodes").await?;
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = ds.namespace().unwrap_or_default();
    let name = ds.name_any();
    let uid = ds.metadata.uid.clone().unwrap_or_default();
    let spec = ds.spec.clone().unwrap_or_default();
    let hash = common::template_hash(
        &spec.template,
        ds.status.as_ref().and_then(|s| s.collision_count),
    );
    ensure_revision(&ctx, &ds, &hash).await?;
    let pods: Vec<Arc<Pod>> = common::pods_in(&ctx.pods, &ns)
        .into_iter()
        .filter(|p| common::is_controlled_by(&p.metadata, &uid))
        .collect();
    let nodes = ctx.nodes.state();
    let plan = plan(&ds, &nodes, &pods, &hash, Timestamp::now())?;
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    // Pods are created and deleted first; the status is written whatever happened there,
    // as upstream's syncDaemonSet, and a failure is returned after it.
    let acted: Result<()> = async {
        if !ctx.expectations.satisfied(&uid, &pods) {
            return Ok(());
        }
        let mut created = Vec::new();
        let mut deleted = Vec::new();
        for node in &plan.create {
            let mut template = spec.template.clone();
            template
                .metadata
                .get_or_insert_with(Default::default)
                .labels
                .get_or_insert_with(Default::default)
                .insert(CONTROLLER_REVISION_HASH.into(), hash.clone());
            if let Some(ps) = template.spec.as_mut() {
                ps.affinity = Some(pin_to_node(ps.affinity.take(), node));
                ps.tolerations = Some(daemon_tolerations(
                    ps.tolerations.as_deref().unwrap_or_default(),
                    ps.host_network.unwrap_or(false),
                ));
            }
            let pod = pod_from_template(
                &template,
                common::new_controller_ref(ds.as_ref()),
                &ns,
                format!("{name}-"),
            );
            let p = match pods_api.create(&PostParams::default(), &pod).await {
                Ok(p) => p,
                Err(e) => {
                    ctx.expectations.expect(&uid, created, deleted);
                    common::warning(
                        &ctx.recorder,
                        ds.as_ref(),
                        "FailedCreate",
                        "Create",
                        format!("Error creating: {}", common::error_message(&e)),
                    )
                    .await;
                    return Err(api_err(format!(
                        "create daemon pod of {ns}/{name} for node {node}"
                    ))(e));
                }
            };
            common::event(
                &ctx.recorder,
                ds.as_ref(),
                "SuccessfulCreate",
                "Create",
                format!("Created pod: {}", p.name_any()),
            )
            .await;
            created.push(p.name_any());
        }
        for pname in &plan.delete {
            match pods_api.delete(pname, &DeleteParams::default()).await {
                Ok(_) => {
                    common::event(
                        &ctx.recorder,
                        ds.as_ref(),
                        "SuccessfulDelete",
                        "Delete",
                        format!("Deleted pod: {pname}"),
                    )
                    .await;
                    if let Some(p) = pods.iter().find(|p| &p.name_any() == pname) {
                        deleted.push(p.metadata.uid.clone().unwrap_or_default());
                    }
                }
                Err(e) if common::is_not_found(&e) => {}
                Err(e) => return Err(api_err(format!("delete daemon pod {ns}/{pname}"))(e)),
            }
        }
        ctx.expectations.expect(&uid, created, deleted);
        Ok(())
    }
    .await;
    let cur = ds.status.clone().unwrap_or_default();
    let old = StatusCounts {
        desired_number_scheduled: cur.desired_number_scheduled,
        current_number_scheduled: cur.current_number_scheduled,
        number_misscheduled: cur.number_misscheduled,
        number_ready: cur.number_ready,
        updated_number_scheduled: cur.updated_number_scheduled.unwrap_or(0),
        number_available: cur.number_available.unwrap_or(0),
        number_unavailable: cur.number_unavailable.unwrap_or(0),
        observed_generation: cur.observed_generation.unwrap_or(0),
    };
    if old != plan.status {
        let api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &ns);
        match api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"status": plan.status})),
            )
            .await
        {
            Ok(_) => {}
            Err(e) if common::is_not_found(&e) => {}
            Err(e) => {
                return Err(api_err(format!("update status of daemonset {ns}/{name}"))(
                    e,
                ))
            }
        }
    }
    acted?;
    let busy =
        !plan.create.is_empty() || !plan.delete.is_empty() || plan.status.number_unavailable > 0;
    Ok(Action::requeue(if busy {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(300)
    }))
}

/// Keeps a ControllerRevision `<ds>-<hash>` for the current template, so `kubectl rollout
/// history daemonset` lists revisions.
async fn ensure_revision(ctx: &Ctx, ds: &DaemonSet, hash: &str) -> Result<()> {
    let ns = ds.namespace().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &ns);
    let name = format!("{}-{hash}", ds.name_any());
    if api
        .get_opt(&name)
        .await
        .map_err(api_err(format!("get controllerrevision {ns}/{name}")))?
        .is_some()
    {
        return Ok(());
    }
    let uid = ds.metadata.uid.clone().unwrap_or_default();
    let existing = api
        .list(&Default::default())
        .await
        .map_err(api_err(format!("list controllerrevisions in {ns}")))?;
    let revision = existing
        .items
        .iter()
        .filter(|r| common::is_controlled_by(&r.metadata, &uid))
        .map(|r| r.revision)
        .max()
        .unwrap_or(0)
        + 1;
    let mut labels = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(CONTROLLER_REVISION_HASH.into(), hash.into());
    let template = ds.spec.as_ref().map(|s| &s.template);
    let cr = ControllerRevision {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            labels: Some(labels),
            owner_references: Some(vec![common::new_controller_ref(ds)]),
            ..Default::default()
        },
        data: Some(k8s_openapi::apimachinery::pkg::runtime::RawExtension(
            serde_json::json!({"spec": {"template": template}}),
        )),
        revision,
    };
    match api.create(&PostParams::default(), &cr).await {
        Ok(_) => Ok(()),
        Err(e) if common::is_conflict(&e) => Ok(()),
        Err(e) => Err(api_err(format!("create controllerrevision {ns}/{name}"))(e)),
    }
}

/// The DaemonSets a change to `pod` concerns (its controller).
pub fn pod_daemonset(pod: &Pod) -> Option<ObjectRef<DaemonSet>> {
    let r = common::controller_ref(&pod.metadata).filter(|r| r.kind == "DaemonSet")?;
    Some(ObjectRef::new(&r.name).within(pod.metadata.namespace.as_deref().unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DaemonSetSpec;
    use k8s_openapi::api::core::v1::Taint;
    use k8s_openapi::api::core::v1::{NodeSpec, PodCondition, PodSpec, PodStatus, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, labels: &[(&str, &str)], taints: &[(&str, &str)]) -> Arc<Node> {
        Arc::new(Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(
                    taints
                        .iter()
                        .map(|(k, e)| Taint {
                            key: k.to_string(),
                            effect: e.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            status: None,
        })
    }

    fn ds(node_selector: Option<(&str, &str)>) -> DaemonSet {
        DaemonSet {
            metadata: ObjectMeta {
                name: Some("agent".into()),
                generation: Some(2),
                ..Default::default()
            },
            spec: Some(DaemonSetSpec {
                template: PodTemplateSpec {
                    metadata: None,
                    spec: Some(PodSpec {
                        node_selector: node_selector
                            .map(|(k, v)| [(k.to_string(), v.to_string())].into()),
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            status: None,
        }
    }

    fn pod(name: &str, node: &str, hash: &str, ready: bool) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some([(CONTROLLER_REVISION_HASH.to_string(), hash.to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                affinity: Some(pin_to_node(None, node)),
                ..Default::default()
            }),
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn eligibility() {
        let d = ds(Some(("role", "edge")));
        let cases = [
            (node("a", &[("role", "edge")], &[]), (true, true)),
            (node("b", &[], &[]), (false, false)),
            (
                node("c", &[("role", "edge")], &[("dedicated", "NoSchedule")]),
                (false, true),
            ),
            (
                node("d", &[("role", "edge")], &[("dedicated", "NoExecute")]),
                (false, false),
            ),
            // Automatic tolerations.
            (
                node(
                    "e",
                    &[("role", "edge")],
                    &[
                        ("node.kubernetes.io/unschedulable", "NoSchedule"),
                        ("node.kubernetes.io/not-ready", "NoExecute"),
                    ],
                ),
                (true, true),
            ),
        ];
        for (n, want) in cases {
            assert_eq!(should_run(&d, &n), want, "{}", n.name_any());
        }
    }

    #[test]
    fn plan_creates_deletes_and_rolls() {
        let d = ds(None);
        let nodes = vec![
            node("a", &[], &[]),
            node("b", &[], &[]),
            node("c", &[], &[]),
        ];
        let now = Timestamp::now();
        // a: current, b: old and ready, c: missing, gone: a vanished node.
        let pods = vec![
            pod("p-a", "a", "h2", true),
            pod("p-b", "b", "h1", true),
            pod("p-gone", "gone", "h2", true),
        ];
        let p = plan(&d, &nodes, &pods, "h2", now).expect("plan");
        assert_eq!(p.create, vec!["c".to_string()]);
        // c is missing, so one unavailable already: maxUnavailable 1 keeps p-b for now.
        assert_eq!(p.delete, vec!["p-gone".to_string()]);
        assert_eq!(
            p.status,
            StatusCounts {
                desired_number_scheduled: 3,
                current_number_scheduled: 2,
                number_misscheduled: 0,
                number_ready: 2,
                updated_number_scheduled: 1,
                number_available: 2,
                number_unavailable: 1,
                observed_generation: 2
            }
        );
        let pods = vec![
            pod("p-a", "a", "h2", true),
            pod("p-b", "b", "h1", true),
            pod("p-c", "c", "h2", true),
        ];
        let p = plan(&d, &nodes, &pods, "h2", now).expect("plan");
        assert_eq!(p.delete, vec!["p-b".to_string()]);
        assert!(p.create.is_empty());
    }

    #[test]
    fn surge_rolls_one_node_at_a_time() {
        let mut d = ds(None);
        if let Some(s) = d.spec.as_mut() {
            s.update_strategy = Some(
                serde_json::from_value(serde_json::json!(
                    {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
                ))
                .expect("strategy"),
            );
        }
        let nodes = vec![
            node("a", &[], &[]),
            node("b", &[], &[]),
            node("c", &[], &[]),
        ];
        let now = Timestamp::now();
        let aged = |name: &str, node: &str, hash: &str, ready: bool, created: i64| {
            let mut p = (*pod(name, node, hash, ready)).clone();
            p.metadata.creation_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    Timestamp::from_second(created).expect("valid"),
                ));
            Arc::new(p)
        };
        // All old and available: one new pod beside the first old one, nothing deleted.
        let olds = vec![
            aged("a1", "a", "h1", true, 1),
            aged("b1", "b", "h1", true, 1),
            aged("c1", "c", "h1", true, 1),
        ];
        let p = plan(&d, &nodes, &olds, "h2", now).expect("plan");
        assert_eq!((p.create, p.delete), (vec!["a".to_string()], vec![]));
        // The surge pod is not ready yet: wait, the old one serves.
        let mut pods = olds.clone();
        pods.push(aged("a2", "a", "h2", false, 2));
        let p = plan(&d, &nodes, &pods, "h2", now).expect("plan");
        assert!(p.create.is_empty() && p.delete.is_empty(), "{p:?}");
        assert_eq!(p.status.updated_number_scheduled, 0);
        assert_eq!(p.status.number_available, 3);
        // Available: the old one goes and the next node surges.
        pods.pop();
        pods.push(aged("a2", "a", "h2", true, 2));
        let p = plan(&d, &nodes, &pods, "h2", now).expect("plan");
        assert_eq!(
            (p.create, p.delete),
            (vec!["b".to_string()], vec!["a1".to_string()])
        );
        // An unavailable old pod is replaced at once, beyond the surge budget.
        let pods = vec![
            aged("a1", "a", "h1", true, 1),
            aged("a2", "a", "h2", false, 2),
            aged("b1", "b", "h1", true, 1),
            aged("c1", "c", "h1", false, 1),
        ];
        let p = plan(&d, &nodes, &pods, "h2", now).expect("plan");
        assert_eq!(p.create, vec!["c".to_string()]);
        assert!(p.delete.is_empty(), "{p:?}");
    }

    #[test]
    fn pinned_pods_name_their_node() {
        assert_eq!(pod_node(&pod("x", "n1", "h", false)).as_deref(), Some("n1"));
        let sel = pin_to_node(None, "n1")
            .node_affinity
            .and_then(|n| n.required_during_scheduling_ignored_during_execution)
            .expect("required");
        assert!(node_selector_matches(&sel, &node("n1", &[], &[])));
        assert!(!node_selector_matches(&sel, &node("n2", &[], &[])));
    }
}

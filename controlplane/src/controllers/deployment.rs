//! The Deployment controller: one ReplicaSet per pod template (named by the template hash),
//! rolled by RollingUpdate or Recreate, with revision annotations so `kubectl rollout
//! status|history|undo|restart` work, as upstream's pkg/controller/deployment.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tokio::task::JoinSet;

use super::common::{self, api_err, Error, Result};
use super::informers::Informers;
use super::Context;

/// The label carrying the template hash on ReplicaSets and their pods.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// Revision of a ReplicaSet (and of the deployment's newest one).
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Revisions a ReplicaSet had before being rolled back to.
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// Desired replicas of the deployment, on its ReplicaSets.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// replicas + maxSurge, on its ReplicaSets.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// Deployment annotations never copied to ReplicaSets (upstream's `skipCopyAnnotation`).
const SKIP_COPY: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

struct Ctx {
    client: kube::Client,
    replicasets: Store<ReplicaSet>,
    pods: Store<Pod>,
    recorder: common::Events,
}

/// Runs the loop until shutdown, on the shared pod and ReplicaSet informers.
pub async fn run(ctx: Context, shared: Informers) -> Result<(), String> {
    let client = ctx.client.clone();
    let rss = shared.replicasets()?;
    let pods = shared.pods()?;
    rss.ready().await?;
    pods.ready().await?;
    let controller = Controller::new(
        Api::<Deployment>::all(client.clone()),
        watcher::Config::default(),
    );
    let d_store = controller.store();
    let state = Arc::new(Ctx {
        recorder: common::recorder(&client, "deployment-controller"),
        client,
        replicasets: rss.store(),
        pods: pods.store(),
    });
    let stream = controller
        .watches_shared_stream(rss.changes(), move |rs: Arc<ReplicaSet>| {
            rs_owners(&d_store, &rs)
        })
        .watches_shared_stream(pods.changes(), |pod: Arc<Pod>| {
            // Recreate waits for old pods to go; a pod's deletion wakes its deployment through
            // the ReplicaSet name (`<deployment>-<hash>`).
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            let rs = common::controller_ref(&pod.metadata)
                .filter(|r| r.kind == "ReplicaSet")?
                .name
                .clone();
            let hash = pod
                .metadata
                .labels
                .as_ref()?
                .get(POD_TEMPLATE_HASH)?
                .clone();
            let d = rs.strip_suffix(&format!("-{hash}"))?.to_string();
            Some(ObjectRef::<Deployment>::new(&d).within(&ns))
        })
        .graceful_shutdown_on(ctx.shutdown.clone().cancelled_owned())
        .run(reconcile, common::error_policy, state);
    common::drive(stream, JoinSet::new(), ctx.shutdown).await
}

fn rs_owners(store: &Store<Deployment>, rs: &ReplicaSet) -> Vec<ObjectRef<Deployment>> {
    let ns = rs.metadata.namespace.clone().unwrap_or_default();
    if let Some(r) = common::controller_ref(&rs.metadata) {
        return if r.kind == "Deployment" {
            vec![ObjectRef::new(&r.name).within(&ns)]
        } else {
            Vec::new()
        };
    }
    let labels = common::labels_of(&rs.metadata);
    store
        .state()
        .iter()
        .filter(|d| d.metadata.namespace.as_deref() == Some(ns.as_str()))
        .filter(|d| {
            common::selector(d.spec.as_ref().map(|s| &s.selector)).is_ok_and(|s| s.matches(&labels))
        })
        .map(|d| ObjectRef::from_obj(d.as_ref()))
        .collect()
}

/// The revision number of a ReplicaSet (0 when unset or invalid).
pub fn revision(meta: &ObjectMeta) -> i64 {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// The template without the `pod-template-hash` label (upstream's `EqualIgnoreHash`).
fn without_hash(t: &PodTemplateSpec) -> serde_json::Value {
    let mut t = t.clone();
    if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(POD_TEMPLATE_HASH);
        if labels.is_empty() {
            if let Some(m) = t.metadata.as_mut() {
                m.labels = None;
            }
        }
    }
    serde_json::to_value(t).unwrap_or_default()
}

/// Whether two templates are equal apart from the hash label.
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    without_hash(a) == without_hash(b)
}

/// `maxSurge` and `maxUnavailable` resolved against `replicas`: surge rounds up, unavailable
/// down, and both zero becomes unavailable 1 (upstream's `ResolveFenceposts`).
pub fn resolve_fenceposts(d: &Deployment, replicas: i32) -> Result<(i32, i32)> {
    let ru = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let pct25 = k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("25%".into());
    let surge = common::scaled_value(
        Some(ru.and_then(|r| r.max_surge.as_ref()).unwrap_or(&pct25)),
        replicas,
        true,
        0,
    )?;
    let unavailable = common::scaled_value(
        Some(
            ru.and_then(|r| r.max_unavailable.as_ref())
                .unwrap_or(&pct25),
        ),
        replicas,
        false,
        0,
    )?;
    if surge == 0 && unavailable == 0 {
        return Ok((0, 1));
    }
    Ok((surge, unavailable))
}

/// One ReplicaSet as the rolling planner sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RsCounts {
    /// `spec.replicas`.
    pub spec: i32,
    /// `status.availableReplicas`.
    pub available: i32,
    /// `status.replicas` (pods that exist).
    pub actual: i32,
}

/// The next replica counts of one RollingUpdate step: the new ReplicaSet and the old ones
/// (oldest first, as given), as upstream's `reconcileNewReplicaSet` then
/// `reconcileOldReplicaSets` (with `cleanupUnhealthyReplicas`).
pub fn rolling_step(
    replicas: i32,
    max_surge: i32,
    max_unavailable: i32,
    new: RsCounts,
    olds: &[RsCounts],
) -> (i32, Vec<i32>) {
    let mut olds_next: Vec<i32> = olds.iter().map(|o| o.spec).collect();
    let total: i32 = new.spec + olds_next.iter().sum::<i32>();
    let new_next = if new.spec > replicas {
        replicas
    } else if new.spec < replicas {
        let max_total = replicas + max_surge;
        if total >= max_total {
            new.spec
        } else {
            new.spec + (max_total - total).min(replicas - new.spec)
        }
    } else {
        new.spec
    };
    // Old ReplicaSets shrink against the new one's current spec, not the planned one, as
    // upstream (one step per sync; the next sync sees the new counts).
    let all_pods: i32 = new.spec + olds_next.iter().sum::<i32>();
    let min_available = replicas - max_unavailable;
    let new_unavailable = new.spec - new.available;
    let mut max_scaled_down = all_pods - min_available - new_unavailable;
    if max_scaled_down > 0 {
        // Unhealthy old replicas go first, they do not count towards availability.
        for (i, o) in olds.iter().enumerate() {
            if max_scaled_down <= 0 {
                break;
            }
            let unhealthy = (olds_next[i] - o.available).max(0);
            let cut = unhealthy.min(max_scaled_down);
            olds_next[i] -= cut;
            max_scaled_down -= cut;
        }
        let available: i32 = new.available + olds.iter().map(|o| o.available).sum::<i32>();
        let mut budget = (available - min_available).min(max_scaled_down);
        for next in olds_next.iter_mut() {
            if budget <= 0 {
                break;
            }
            let cut = (*next).min(budget);
            *next -= cut;
            budget -= cut;
        }
    }
    (new_next, olds_next)
}

fn counts(rs: &ReplicaSet) -> RsCounts {
    let st = rs.status.clone().unwrap_or_default();
    RsCounts {
        spec: rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0),
        available: st.available_replicas.unwrap_or(0),
        actual: st.replicas,
    }
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action> {
    common::ready(&ctx.replicasets, "replicasets").await?;
    common::ready(&ctx.pods, "pods").await?;
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = d.namespace().unwrap_or_default();
    let name = d.name_any();
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let spec = d.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1);
    let selector = common::selector(Some(&spec.selector))?;
    if selector.is_empty() {
        return Err(Error::Invalid(format!(
            "deployment {ns}/{name}: empty selector selects everything"
        )));
    }
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);

    // Claim ReplicaSets: adopt orphans that match, release owned ones that no longer do.
    let mut owned: Vec<ReplicaSet> = Vec::new();
    for rs in ctx
        .replicasets
        .state()
        .iter()
        .filter(|r| r.metadata.namespace.as_deref() == Some(ns.as_str()))
    {
        let matches = selector.matches(&common::labels_of(&rs.metadata));
        match common::controller_ref(&rs.metadata) {
            Some(r) if r.uid == uid => {
                if matches {
                    owned.push(rs.as_ref().clone());
                } else {
                    let patch = common::owner_refs_patch(&rs.metadata, None, Some(&uid));
                    rs_api
                        .patch(
                            &rs.name_any(),
                            &PatchParams::default(),
                            &Patch::Merge(patch),
                        )
                        .await
                        .map_err(api_err(format!(
                            "release replicaset {ns}/{}",
                            rs.name_any()
                        )))?;
                }
            }
            None if matches && rs.metadata.deletion_timestamp.is_none() => {
                let patch = common::owner_refs_patch(
                    &rs.metadata,
                    Some(common::new_controller_ref(d.as_ref())),
                    None,
                );
                if let Ok(rs) = rs_api
                    .patch(
                        &rs.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(patch),
                    )
                    .await
                {
                    owned.push(rs);
                }
            }
            _ => {}
        }
    }
    let template = spec.template.clone();
    let new_idx = owned.iter().position(|rs| {
        rs.spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .is_some_and(|t| equal_ignore_hash(t, &template))
    });
    let mut new_rs = new_idx.map(|i| owned[i].clone());
    let mut olds: Vec<ReplicaSet> = owned
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != new_idx)
        .map(|(_, r)| r.clone())
        .collect();
    olds.sort_by_key(|r| (revision(&r.metadata), created_at(r)));
    let max_old_revision = olds
        .iter()
        .map(|r| revision(&r.metadata))
        .max()
        .unwrap_or(0);
    let paused = spec.paused.unwrap_or(false);
    let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
    let (max_surge, max_unavailable) = if recreate {
        (0, 0)
    } else {
        resolve_fenceposts(&d, replicas)?
    };
    let now = Timestamp::now();
    // The status as this sync changes it before counting (upstream writes these condition
    // changes at once; here they go out with the counts below).
    let mut current = d.status.clone().unwrap_or_default();
    check_paused_conditions(&d, &mut current, now);
    // A replica count change while a rollout is under way (or paused) is spread over the
    // ReplicaSets proportionally before anything rolls (upstream's `isScalingEvent`).
    let scaling = new_rs
        .iter()
        .chain(olds.iter())
        .filter(|r| counts(r).spec > 0)
        .any(|r| annotation_i32(r, DESIRED_REPLICAS).is_some_and(|v| v != replicas));
    let rollout = !paused && !scaling;

    // The new ReplicaSet's revision is always the newest (a rollback moves the old one up),
    // and it carries the deployment's annotations (change-cause).
    if let Some(rs) = new_rs.as_mut() {
        let want_rev = max_old_revision + 1;
        let ann = copied_annotations(&d);
        let cur = revision(&rs.metadata);
        let stale = cur < want_rev || ann.iter().any(|(k, v)| rs.annotations().get(k) != Some(v));
        if stale {
            let mut ann = ann;
            ann.insert(REVISION.into(), cur.max(want_rev).to_string());
            if cur > 0 && cur < want_rev {
                let hist = rs
                    .annotations()
                    .get(REVISION_HISTORY)
                    .map(|h| format!("{h},{cur}"))
                    .unwrap_or(cur.to_string());
                ann.insert(REVISION_HISTORY.into(), hist);
            }
            *rs = rs_api
                .patch(
                    &rs.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({"metadata": {"annotations": ann}})),
                )
                .await
                .map_err(api_err(format!(
                    "annotate replicaset {ns}/{}",
                    rs.name_any()
                )))?;
        }
        if has_progress_deadline(&d) && get_condition(&current, PROGRESSING).is_none() {
            set_condition(
                &mut current,
                new_condition(
                    PROGRESSING,
                    "True",
                    FOUND_NEW_RS,
                    format!("Found new replica set \"{}\"", rs.name_any()),
                    now,
                ),
            );
        }
    }

    let sizes = Sizes {
        replicas,
        max_surge,
    };
    if !rollout {
        // Upstream's `sync`: scale only; a paused deployment also prunes its history.
        let mut all: Vec<ReplicaSet> = olds.clone();
        all.extend(new_rs.clone());
        let inputs: Vec<ScaleRs> = all.iter().map(scale_input).collect();
        let new_pos = new_rs.as_ref().map(|_| all.len() - 1);
        let status_replicas = d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let targets = scale_targets(
            replicas,
            max_surge,
            !recreate,
            status_replicas,
            new_pos,
            &inputs,
        );
        for (rs, to) in all.iter_mut().zip(targets) {
            let stale =
                counts(rs).spec > 0 && annotation_i32(rs, DESIRED_REPLICAS) != Some(replicas);
            if to != counts(rs).spec || stale {
                scale(&ctx, &d, &rs_api, rs, to, sizes).await?;
            }
        }
        if new_rs.is_some() {
            new_rs = all.pop();
        }
        olds = all;
        if paused {
            cleanup(&d, &rs_api, &olds).await?;
        }
    } else if recreate {
        // Old ReplicaSets go to 0 and their pods must be gone before the new one scales up.
        let mut scaled = false;
        for rs in olds.iter_mut() {
            if counts(rs).spec > 0 {
                scale(&ctx, &d, &rs_api, rs, 0, sizes).await?;
                scaled = true;
            }
        }
        let old_uids: Vec<String> = olds.iter().filter_map(|r| r.metadata.uid.clone()).collect();
        let old_pods_running = common::pods_in(&ctx.pods, &ns).iter().any(|p| {
            common::controller_ref(&p.metadata).is_some_and(|r| old_uids.contains(&r.uid))
                && !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
        });
        if !scaled && !old_pods_running {
            let mut rs = match new_rs.take() {
                Some(rs) => rs,
                None => {
                    let rs =
                        create_new_rs(&ctx, &d, &rs_api, max_old_revision + 1, replicas, sizes)
                            .await?;
                    created_condition(&d, &mut current, &rs, now);
                    rs
                }
            };
            if counts(&rs).spec != replicas {
                scale(&ctx, &d, &rs_api, &mut rs, replicas, sizes).await?;
            }
            new_rs = Some(rs);
        }
        cleanup(&d, &rs_api, &olds).await?;
    } else {
        let mut rs = match new_rs.take() {
            Some(rs) => rs,
            None => {
                let total: i32 = olds.iter().map(|r| counts(r).spec).sum();
                let initial = if total == 0 {
                    replicas
                } else {
                    rolling_step(
                        replicas,
                        max_surge,
                        max_unavailable,
                        RsCounts {
                            spec: 0,
                            available: 0,
                            actual: 0,
                        },
                        &olds.iter().map(counts).collect::<Vec<_>>(),
                    )
                    .0
                };
                let rs =
                    create_new_rs(&ctx, &d, &rs_api, max_old_revision + 1, initial, sizes).await?;
                created_condition(&d, &mut current, &rs, now);
                rs
            }
        };
        let old_counts: Vec<RsCounts> = olds.iter().map(counts).collect();
        let (new_next, old_next) = rolling_step(
            replicas,
            max_surge,
            max_unavailable,
            counts(&rs),
            &old_counts,
        );
        if new_next != counts(&rs).spec {
            scale(&ctx, &d, &rs_api, &mut rs, new_next, sizes).await?;
        }
        for (old, next) in olds.iter_mut().zip(old_next) {
            if next != counts(old).spec {
                scale(&ctx, &d, &rs_api, old, next, sizes).await?;
            }
        }
        new_rs = Some(rs);
        cleanup(&d, &rs_api, &olds).await?;
    }

    // The deployment's revision follows its newest ReplicaSet.
    if let Some(rs) = &new_rs {
        let rev = revision(&rs.metadata).to_string();
        if rev != "0" && d.annotations().get(REVISION) != Some(&rev) {
            let d_api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
            d_api
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(
                        serde_json::json!({"metadata": {"annotations": {REVISION: rev}}}),
                    ),
                )
                .await
                .map_err(api_err(format!("annotate deployment {ns}/{name}")))?;
        }
    }

    let mut all: Vec<&ReplicaSet> = olds.iter().collect();
    if let Some(rs) = &new_rs {
        all.push(rs);
    }
    let status = next_status(
        &d,
        &current,
        new_rs.as_ref(),
        &all,
        max_unavailable,
        rollout,
        now,
    );
    if !same_status(d.status.as_ref(), &status) {
        let d_api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
        match d_api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"status": status})),
            )
            .await
        {
            Ok(_) => {}
            Err(e) if common::is_not_found(&e) => {}
            Err(e) => {
                return Err(api_err(format!("update status of deployment {ns}/{name}"))(
                    e,
                ))
            }
        }
    }
    let settled = deployment_complete(replicas, &status);
    let mut after = if settled {
        Duration::from_secs(300)
    } else {
        Duration::from_secs(5)
    };
    if let Some(deadline) = progress_check_after(&d, &status, now) {
        after = after.min(deadline);
    }
    Ok(Action::requeue(after))
}

fn created_at(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .unwrap_or(0)
}

fn annotation_i32(rs: &ReplicaSet, key: &str) -> Option<i32> {
    rs.annotations().get(key).and_then(|v| v.parse().ok())
}

fn scale_input(rs: &ReplicaSet) -> ScaleRs {
    let c = counts(rs);
    ScaleRs {
        spec: c.spec,
        available: c.available,
        desired: annotation_i32(rs, DESIRED_REPLICAS),
        max_replicas: annotation_i32(rs, MAX_REPLICAS),
        created: created_at(rs),
    }
}

/// The Progressing condition of a freshly created new ReplicaSet.
fn created_condition(
    d: &Deployment,
    current: &mut DeploymentStatus,
    rs: &ReplicaSet,
    now: Timestamp,
) {
    if has_progress_deadline(d) {
        set_condition(
            current,
            new_condition(
                PROGRESSING,
                "True",
                NEW_RS_CREATED,
                format!("Created new replica set \"{}\"", rs.name_any()),
                now,
            ),
        );
    }
}

/// The deployment's replica count and surge, which every ReplicaSet scale records.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    replicas: i32,
    max_surge: i32,
}

/// One ReplicaSet as proportional scaling sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleRs {
    /// `spec.replicas`.
    pub spec: i32,
    /// `status.availableReplicas`.
    pub available: i32,
    /// The `desired-replicas` annotation.
    pub desired: Option<i32>,
    /// The `max-replicas` annotation.
    pub max_replicas: Option<i32>,
    /// Creation time (seconds), for ties.
    pub created: i64,
}

/// The sizes the ReplicaSets get when the deployment is scaled (upstream's `scale`): the one
/// active (or newest) ReplicaSet takes all replicas; a saturated new one leaves the old ones
/// at 0; otherwise a rolling deployment spreads the difference to `replicas + maxSurge`
/// proportionally to each one's share (its size against its `max-replicas`), largest first,
/// leftovers to the largest. `rss` are oldest first; `new` indexes the new one.
pub fn scale_targets(
    replicas: i32,
    max_surge: i32,
    rolling: bool,
    status_replicas: i32,
    new: Option<usize>,
    rss: &[ScaleRs],
) -> Vec<i32> {
    let mut out: Vec<i32> = rss.iter().map(|r| r.spec).collect();
    if rss.is_empty() {
        return out;
    }
    let active: Vec<usize> = (0..rss.len()).filter(|i| rss[*i].spec > 0).collect();
    match active.len() {
        0 => {
            // Nothing runs: the new one, else the newest old one, takes everything.
            let newest_old = (0..rss.len())
                .filter(|i| Some(*i) != new)
                .max_by_key(|i| rss[*i].created);
            if let Some(i) = new.or(newest_old) {
                out[i] = replicas;
            }
            return out;
        }
        1 => {
            out[active[0]] = replicas;
            return out;
        }
        _ => {}
    }
    if let Some(n) = new {
        let r = rss[n];
        if r.spec == replicas && r.desired == Some(replicas) && r.available == replicas {
            for i in active.into_iter().filter(|i| *i != n) {
                out[i] = 0;
            }
            return out;
        }
    }
    if !rolling {
        return out;
    }
    let total: i32 = active.iter().map(|i| rss[*i].spec).sum();
    let allowed = if replicas > 0 {
        replicas + max_surge
    } else {
        0
    };
    let to_add = allowed - total;
    let mut order = active;
    // Equal sizes: scaling up favours newer ReplicaSets, scaling down older ones.
    if to_add > 0 {
        order.sort_by_key(|i| {
            (
                std::cmp::Reverse(rss[*i].spec),
                std::cmp::Reverse(rss[*i].created),
            )
        });
    } else {
        order.sort_by_key(|i| (std::cmp::Reverse(rss[*i].spec), rss[*i].created));
    }
    if to_add == 0 {
        return out;
    }
    let mut added = 0;
    for i in &order {
        let r = rss[*i];
        let proportion = if r.spec == 0 || to_add == added {
            0
        } else {
            let fraction = if replicas == 0 {
                -r.spec
            } else {
                let annotated = r.max_replicas.unwrap_or(status_replicas);
                if annotated <= 0 {
                    0
                } else {
                    let size =
                        f64::from(r.spec) * f64::from(replicas + max_surge) / f64::from(annotated);
                    size.round() as i32 - r.spec
                }
            };
            let left = to_add - added;
            if to_add > 0 {
                fraction.min(left)
            } else {
                fraction.max(left)
            }
        };
        out[*i] = r.spec + proportion;
        added += proportion;
    }
    if let Some(first) = order.first() {
        out[*first] = (out[*first] + to_add - added).max(0);
    }
    out
}

fn copied_annotations(d: &Deployment) -> BTreeMap<String, String> {
    d.annotations()
        .iter()
        .filter(|(k, _)| !SKIP_COPY.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Sets `rs` to `to` replicas with the deployment's size annotations; a size change is an
/// Event (upstream's `scaleReplicaSetAndRecordEvent`).
async fn scale(
    ctx: &Ctx,
    d: &Deployment,
    api: &Api<ReplicaSet>,
    rs: &mut ReplicaSet,
    to: i32,
    sizes: Sizes,
) -> Result<()> {
    let from = counts(rs).spec;
    let rs_name = rs.name_any();
    let patch = serde_json::json!({
        "metadata": {"annotations": {
            DESIRED_REPLICAS: sizes.replicas.to_string(),
            MAX_REPLICAS: (sizes.replicas + sizes.max_surge).to_string(),
        }},
        "spec": {"replicas": to},
    });
    *rs = api
        .patch(&rs_name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map_err(api_err(format!("scale replicaset {rs_name}")))?;
    if to != from {
        let dir = if to > from { "up" } else { "down" };
        common::event(
            &ctx.recorder,
            d,
            "ScalingReplicaSet",
            "Scale",
            format!("Scaled {dir} replica set {rs_name} from {from} to {to}"),
        )
        .await;
    }
    Ok(())
}

/// The ReplicaSet a deployment's template gets (upstream's `getNewReplicaSet`).
pub fn new_replicaset(
    d: &Deployment,
    revision: i64,
    replicas: i32,
    max_surge: i32,
    desired: i32,
) -> ReplicaSet {
    let spec = d.spec.clone().unwrap_or_default();
    let collision = d.status.as_ref().and_then(|s| s.collision_count);
    let hash = common::template_hash(&spec.template, collision);
    let mut template = spec.template.clone();
    let meta = template.metadata.get_or_insert_with(Default::default);
    meta.labels
        .get_or_insert_with(Default::default)
        .insert(POD_TEMPLATE_HASH.into(), hash.clone());
    let mut selector: LabelSelector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(Default::default)
        .insert(POD_TEMPLATE_HASH.into(), hash.clone());
    let mut ann = copied_annotations(d);
    ann.insert(REVISION.into(), revision.to_string());
    ann.insert(DESIRED_REPLICAS.into(), desired.to_string());
    ann.insert(MAX_REPLICAS.into(), (desired + max_surge).to_string());
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{}-{hash}", d.name_any())),
            namespace: d.namespace(),
            labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
            annotations: Some(ann),
            owner_references: Some(vec![common::new_controller_ref(d)]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    }
}

async fn create_new_rs(
    ctx: &Ctx,
    d: &Deployment,
    api: &Api<ReplicaSet>,
    rev: i64,
    replicas: i32,
    sizes: Sizes,
) -> Result<ReplicaSet> {
    let rs = new_replicaset(d, rev, replicas, sizes.max_surge, sizes.replicas);
    let rs_name = rs.name_any();
    match api.create(&PostParams::default(), &rs).await {
        Ok(created) => {
            if replicas > 0 {
                common::event(
                    &ctx.recorder,
                    d,
                    "ScalingReplicaSet",
                    "Scale",
                    format!("Scaled up replica set {rs_name} from 0 to {replicas}"),
                )
                .await;
            }
            Ok(created)
        }
        Err(e) if common::is_conflict(&e) => {
            // A ReplicaSet of that name exists with another template or owner: a hash
            // collision. Bump collisionCount so the next sync picks another name.
            let existing = api
                .get(&rs_name)
                .await
                .map_err(api_err(format!("get replicaset {rs_name}")))?;
            let same = common::is_controlled_by(
                &existing.metadata,
                d.metadata.uid.as_deref().unwrap_or_default(),
            ) && existing
                .spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .zip(d.spec.as_ref())
                .is_some_and(|(t, s)| equal_ignore_hash(t, &s.template));
            if same {
                return Ok(existing);
            }
            let count = d
                .status
                .as_ref()
                .and_then(|s| s.collision_count)
                .unwrap_or(0)
                + 1;
            let d_api: Api<Deployment> =
                Api::namespaced(ctx.client.clone(), &d.namespace().unwrap_or_default());
            d_api
                .patch_status(
                    &d.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({"status": {"collisionCount": count}})),
                )
                .await
                .map_err(api_err("bump collisionCount"))?;
            Err(Error::Invalid(format!(
                "replicaset {rs_name} exists with another template; collisionCount now {count}"
            )))
        }
        Err(e) => Err(api_err(format!("create replicaset {rs_name}"))(e)),
    }
}

/// Deletes the oldest fully scaled-down ReplicaSets beyond `revisionHistoryLimit` (10).
async fn cleanup(d: &Deployment, api: &Api<ReplicaSet>, olds: &[ReplicaSet]) -> Result<()> {
    let limit = usize::try_from(
        d.spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .unwrap_or(10)
            .max(0),
    )
    .unwrap_or(0);
    let idle: Vec<&ReplicaSet> = olds
        .iter()
        .filter(|r| {
            counts(r).spec == 0 && counts(r).actual == 0 && r.metadata.deletion_timestamp.is_none()
        })
        .collect();
    if idle.len() <= limit {
        return Ok(());
    }
    for rs in &idle[..idle.len() - limit] {
        match api
            .delete(&rs.name_any(), &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(e) if common::is_not_found(&e) => {}
            Err(e) => {
                return Err(api_err(format!("delete old replicaset {}", rs.name_any()))(
                    e,
                ))
            }
        }
    }
    Ok(())
}

/// The Progressing condition type.
const PROGRESSING: &str = "Progressing";
/// The Available condition type.
const AVAILABLE: &str = "Available";
/// Reasons of the Progressing condition, as upstream's deployment util.
const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
const RS_UPDATED: &str = "ReplicaSetUpdated";
/// Progressing=False: no progress within `progressDeadlineSeconds`.
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
const PAUSED: &str = "DeploymentPaused";
const RESUMED: &str = "DeploymentResumed";

/// Whether the deployment has a progress deadline (`progressDeadlineSeconds`, not MaxInt32).
pub fn has_progress_deadline(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .is_some_and(|s| s != i32::MAX)
}

fn get_condition<'a>(st: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    st.conditions.as_ref()?.iter().find(|c| c.type_ == type_)
}

fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Upstream's `SetDeploymentCondition`: the same status and reason changes nothing (the
/// update time stays); the same status keeps the transition time.
fn set_condition(st: &mut DeploymentStatus, mut cond: DeploymentCondition) {
    let conds = st.conditions.get_or_insert_with(Vec::new);
    if let Some(old) = conds.iter().find(|c| c.type_ == cond.type_) {
        if old.status == cond.status && old.reason == cond.reason {
            return;
        }
        if old.status == cond.status {
            cond.last_transition_time = old.last_transition_time.clone();
        }
    }
    conds.retain(|c| c.type_ != cond.type_);
    conds.push(cond);
}

fn remove_condition(st: &mut DeploymentStatus, type_: &str) {
    if let Some(conds) = st.conditions.as_mut() {
        conds.retain(|c| c.type_ != type_);
    }
}

/// Progressing=Unknown while paused (DeploymentPaused) and once resumed (DeploymentResumed),
/// unless a timeout was reported (upstream's `checkPausedConditions`).
pub fn check_paused_conditions(d: &Deployment, st: &mut DeploymentStatus, now: Timestamp) {
    if !has_progress_deadline(d) {
        return;
    }
    let reason = get_condition(st, PROGRESSING).and_then(|c| c.reason.clone());
    if reason.as_deref() == Some(TIMED_OUT) {
        return;
    }
    let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
    let shows_paused = reason.as_deref() == Some(PAUSED);
    if paused && !shows_paused {
        let c = new_condition(
            PROGRESSING,
            "Unknown",
            PAUSED,
            "Deployment is paused".into(),
            now,
        );
        set_condition(st, c);
    } else if !paused && shows_paused {
        let c = new_condition(
            PROGRESSING,
            "Unknown",
            RESUMED,
            "Deployment is resumed".into(),
            now,
        );
        set_condition(st, c);
    }
}

/// Whether every replica is updated and available (upstream's `DeploymentComplete`).
pub fn deployment_complete(replicas: i32, st: &DeploymentStatus) -> bool {
    st.updated_replicas.unwrap_or(0) == replicas
        && st.replicas.unwrap_or(0) == replicas
        && st.available_replicas.unwrap_or(0) == replicas
}

/// Whether `new` shows progress over `old` (upstream's `DeploymentProgressing`).
fn progressing(old: &DeploymentStatus, new: &DeploymentStatus) -> bool {
    let v = |x: Option<i32>| x.unwrap_or(0);
    let old_olds = v(old.replicas) - v(old.updated_replicas);
    let new_olds = v(new.replicas) - v(new.updated_replicas);
    v(new.updated_replicas) > v(old.updated_replicas)
        || new_olds < old_olds
        || v(new.ready_replicas) > v(old.ready_replicas)
        || v(new.available_replicas) > v(old.available_replicas)
}

/// Whether the Progressing condition of `st` is older than the deadline at `now`.
fn timed_out(d: &Deployment, st: &DeploymentStatus, now: Timestamp) -> bool {
    let Some(c) = get_condition(st, PROGRESSING) else {
        return false;
    };
    match c.reason.as_deref() {
        Some(NEW_RS_AVAILABLE) => false,
        Some(TIMED_OUT) => true,
        _ => {
            let secs = d
                .spec
                .as_ref()
                .and_then(|s| s.progress_deadline_seconds)
                .unwrap_or(i32::MAX);
            c.last_update_time
                .as_ref()
                .is_some_and(|t| t.0 + SignedDuration::from_secs(i64::from(secs)) < now)
        }
    }
}

/// The deployment's next status from its ReplicaSets (upstream's `calculateStatus`, then,
/// when `rollout`, the Progressing condition of `syncRolloutStatus` with the progress
/// deadline). `current` is the status so far, with this sync's condition changes.
pub fn next_status(
    d: &Deployment,
    current: &DeploymentStatus,
    new_rs: Option<&ReplicaSet>,
    all: &[&ReplicaSet],
    max_unavailable: i32,
    rollout: bool,
    now: Timestamp,
) -> DeploymentStatus {
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let sum = |f: &dyn Fn(&ReplicaSet) -> i32| all.iter().map(|r| f(r)).sum::<i32>();
    let st = |r: &ReplicaSet| r.status.clone().unwrap_or_default();
    let actual = sum(&|r| st(r).replicas);
    let available = sum(&|r| st(r).available_replicas.unwrap_or(0));
    let ready = sum(&|r| st(r).ready_replicas.unwrap_or(0));
    let total_spec = sum(&|r| counts(r).spec);
    let updated = new_rs.map(|r| st(r).replicas).unwrap_or(0);
    let mut next = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(actual),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        unavailable_replicas: Some((total_spec - available).max(0)),
        conditions: current.conditions.clone(),
        collision_count: current.collision_count,
        terminating_replicas: None,
    };
    set_condition(
        &mut next,
        if available >= replicas - max_unavailable {
            new_condition(
                AVAILABLE,
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
                now,
            )
        } else {
            new_condition(
                AVAILABLE,
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
                now,
            )
        },
    );
    if !rollout {
        return next;
    }
    if !has_progress_deadline(d) {
        remove_condition(&mut next, PROGRESSING);
        return next;
    }
    let cur = get_condition(current, PROGRESSING);
    let was_complete =
        actual == updated && cur.and_then(|c| c.reason.as_deref()) == Some(NEW_RS_AVAILABLE);
    if was_complete {
        return next;
    }
    let what = match new_rs {
        Some(rs) => format!("ReplicaSet \"{}\"", rs.name_any()),
        None => format!("Deployment \"{}\"", d.name_any()),
    };
    if deployment_complete(replicas, &next) {
        let c = new_condition(
            PROGRESSING,
            "True",
            NEW_RS_AVAILABLE,
            format!("{what} has successfully progressed."),
            now,
        );
        set_condition(&mut next, c);
    } else if progressing(current, &next) {
        // Progress refreshes the update time the deadline counts from, even with the same
        // reason (upstream removes and re-adds the condition).
        let mut c = new_condition(
            PROGRESSING,
            "True",
            RS_UPDATED,
            format!("{what} is progressing."),
            now,
        );
        if let Some(old) = cur.filter(|o| o.status == "True") {
            c.last_transition_time = old.last_transition_time.clone();
        }
        remove_condition(&mut next, PROGRESSING);
        set_condition(&mut next, c);
    } else if timed_out(d, &next, now) {
        let c = new_condition(
            PROGRESSING,
            "False",
            TIMED_OUT,
            format!("{what} has timed out progressing."),
            now,
        );
        set_condition(&mut next, c);
    }
    next
}

/// How long until the deployment must be looked at again for its progress deadline
/// (upstream's `requeueStuckDeployment`), if at all.
pub fn progress_check_after(
    d: &Deployment,
    st: &DeploymentStatus,
    now: Timestamp,
) -> Option<Duration> {
    if !has_progress_deadline(d) || d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false) {
        return None;
    }
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let c = get_condition(st, PROGRESSING)?;
    if deployment_complete(replicas, st) || c.reason.as_deref() == Some(TIMED_OUT) {
        return None;
    }
    let secs = d.spec.as_ref()?.progress_deadline_seconds?;
    let due = c.last_update_time.as_ref()?.0 + SignedDuration::from_secs(i64::from(secs));
    let left = Duration::try_from(due.duration_since(now)).unwrap_or(Duration::ZERO);
    // Condition times have whole seconds: one more second makes sure the deadline passed.
    Some(left + Duration::from_secs(1))
}

fn same_status(old: Option<&DeploymentStatus>, new: &DeploymentStatus) -> bool {
    let strip = |s: &DeploymentStatus| {
        let mut s = s.clone();
        for c in s.conditions.iter_mut().flatten() {
            c.last_update_time = None;
            c.last_transition_time = None;
        }
        // Zero counts are omitted by the server's round trip; compare them as zero.
        for f in [
            &mut s.replicas,
            &mut s.updated_replicas,
            &mut s.ready_replicas,
            &mut s.available_replicas,
            &mut s.unavailable_replicas,
        ] {
            if f.is_none() {
                *f = Some(0);
            }
        }
        s
    };
    old.is_some_and(|o| strip(o) == strip(new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn c(spec: i32, available: i32) -> RsCounts {
        RsCounts {
            spec,
            available,
            actual: spec,
        }
    }

    #[test]
    fn rolling_steps() {
        // (replicas, surge, unavailable, new, olds) -> (new', olds')
        type Case = (i32, i32, i32, RsCounts, Vec<RsCounts>, (i32, Vec<i32>));
        let cases: Vec<Case> = vec![
            // Fresh rollout of 3 with 25%: surge 1, unavailable 0.
            (3, 1, 0, c(0, 0), vec![c(3, 3)], (1, vec![3])),
            // New pod available: one old goes.
            (3, 1, 0, c(1, 1), vec![c(3, 3)], (1, vec![2])),
            (3, 1, 0, c(1, 1), vec![c(2, 2)], (2, vec![2])),
            (3, 1, 0, c(3, 3), vec![c(1, 1)], (3, vec![0])),
            // Unhealthy old replicas are cut first, even with no availability budget.
            (3, 1, 1, c(1, 1), vec![c(3, 1)], (1, vec![1])),
            // An unavailable new pod blocks any scale down at the availability floor.
            (3, 1, 0, c(1, 0), vec![c(3, 1)], (1, vec![3])),
            // maxUnavailable 1, surge 0: one old goes before the new one grows.
            (2, 0, 1, c(0, 0), vec![c(2, 2)], (0, vec![1])),
            (2, 0, 1, c(0, 0), vec![c(1, 1)], (1, vec![1])),
            // Settled.
            (3, 1, 0, c(3, 3), vec![], (3, vec![])),
            // Scale down of the new one.
            (2, 1, 0, c(5, 5), vec![], (2, vec![])),
        ];
        for (replicas, surge, unavail, new, olds, want) in cases {
            assert_eq!(
                rolling_step(replicas, surge, unavail, new, &olds),
                want,
                "{replicas} {surge} {unavail} {new:?} {olds:?}"
            );
        }
    }

    fn deployment(surge: Option<IntOrString>, unavailable: Option<IntOrString>) -> Deployment {
        Deployment {
            spec: Some(DeploymentSpec {
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: surge,
                        max_unavailable: unavailable,
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn fenceposts() {
        let s = |v: &str| Some(IntOrString::String(v.into()));
        let i = |v: i32| Some(IntOrString::Int(v));
        let cases = [
            (deployment(s("25%"), s("25%")), 10, (3, 2)),
            (deployment(None, None), 3, (1, 0)),
            (deployment(i(0), i(0)), 3, (0, 1)),
            (deployment(i(2), s("50%")), 5, (2, 2)),
        ];
        for (d, replicas, want) in cases {
            assert_eq!(resolve_fenceposts(&d, replicas).expect("valid"), want);
        }
    }

    fn srs(spec: i32, max_replicas: i32, created: i64) -> ScaleRs {
        ScaleRs {
            spec,
            available: spec,
            desired: Some(10),
            max_replicas: Some(max_replicas),
            created,
        }
    }

    #[test]
    fn proportional_scaling() {
        // (name, replicas, surge, rolling, new index, sets oldest first) -> sizes
        type Case<'a> = (
            &'a str,
            i32,
            i32,
            bool,
            Option<usize>,
            Vec<ScaleRs>,
            Vec<i32>,
        );
        let mid_rollout = vec![srs(8, 13, 1), srs(5, 13, 2)];
        let cases: Vec<Case> = vec![
            (
                "one active takes all",
                5,
                2,
                true,
                Some(0),
                vec![srs(3, 4, 1)],
                vec![5],
            ),
            (
                "none active: the new one",
                4,
                1,
                true,
                Some(1),
                vec![srs(0, 4, 1), srs(0, 4, 2)],
                vec![0, 4],
            ),
            (
                "none active, no new one: the newest old one",
                4,
                1,
                true,
                None,
                vec![srs(0, 4, 1), srs(0, 4, 2)],
                vec![0, 4],
            ),
            (
                "saturated new one: old ones to zero",
                10,
                3,
                true,
                Some(1),
                vec![srs(2, 13, 1), srs(10, 13, 2)],
                vec![0, 10],
            ),
            (
                "10 -> 20 mid-rollout",
                20,
                5,
                true,
                Some(1),
                mid_rollout.clone(),
                vec![15, 10],
            ),
            (
                "10 -> 5 mid-rollout",
                5,
                2,
                true,
                Some(1),
                mid_rollout.clone(),
                vec![4, 3],
            ),
            (
                "to zero",
                0,
                0,
                true,
                Some(1),
                mid_rollout.clone(),
                vec![0, 0],
            ),
            (
                "Recreate keeps sizes",
                20,
                0,
                false,
                Some(1),
                mid_rollout,
                vec![8, 5],
            ),
        ];
        for (name, replicas, surge, rolling, new, rss, want) in cases {
            assert_eq!(
                scale_targets(replicas, surge, rolling, 10, new, &rss),
                want,
                "{name}"
            );
        }
    }

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).expect("valid")
    }

    fn with_deadline(secs: i32, paused: bool) -> Deployment {
        let mut d = deployment(None, None);
        d.metadata.name = Some("web".into());
        d.metadata.generation = Some(2);
        if let Some(s) = d.spec.as_mut() {
            s.replicas = Some(3);
            s.progress_deadline_seconds = Some(secs);
            s.paused = Some(paused);
        }
        d
    }

    fn rs_with(spec: i32, replicas: i32, available: i32) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some("web-abc".into()),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(spec),
                ..Default::default()
            }),
            status: Some(k8s_openapi::api::apps::v1::ReplicaSetStatus {
                replicas,
                available_replicas: Some(available),
                ready_replicas: Some(available),
                ..Default::default()
            }),
        }
    }

    fn progressing_of(st: &DeploymentStatus) -> (String, String, Option<i64>) {
        let c = get_condition(st, PROGRESSING).expect("Progressing");
        (
            c.status.clone(),
            c.reason.clone().unwrap_or_default(),
            c.last_update_time.as_ref().map(|t| t.0.as_second()),
        )
    }

    #[test]
    fn progress_deadline() {
        let d = with_deadline(10, false);
        let mut current = DeploymentStatus::default();
        set_condition(
            &mut current,
            new_condition(PROGRESSING, "True", NEW_RS_CREATED, "x".into(), ts(100)),
        );
        let stuck = rs_with(1, 0, 0);
        // No progress within the deadline: unchanged, and a check is due when it passes.
        let st = next_status(&d, &current, Some(&stuck), &[&stuck], 0, true, ts(105));
        assert_eq!(
            progressing_of(&st),
            ("True".into(), NEW_RS_CREATED.into(), Some(100))
        );
        assert_eq!(
            progress_check_after(&d, &st, ts(105)),
            Some(Duration::from_secs(6))
        );
        // Past it: Progressing=False, ProgressDeadlineExceeded; no further checks.
        let st = next_status(&d, &current, Some(&stuck), &[&stuck], 0, true, ts(111));
        assert_eq!(
            progressing_of(&st),
            ("False".into(), TIMED_OUT.into(), Some(111))
        );
        assert_eq!(
            get_condition(&st, PROGRESSING)
                .and_then(|c| c.message.clone())
                .as_deref(),
            Some("ReplicaSet \"web-abc\" has timed out progressing.")
        );
        assert_eq!(progress_check_after(&d, &st, ts(111)), None);
        // Progress (a pod became available) refreshes the update time.
        let better = rs_with(1, 1, 1);
        let st2 = next_status(&d, &st, Some(&better), &[&better], 0, true, ts(112));
        assert_eq!(
            progressing_of(&st2),
            ("True".into(), RS_UPDATED.into(), Some(112))
        );
        // Complete: NewReplicaSetAvailable, which sticks.
        let done = rs_with(3, 3, 3);
        let st3 = next_status(&d, &st2, Some(&done), &[&done], 0, true, ts(113));
        assert_eq!(progressing_of(&st3).1, NEW_RS_AVAILABLE);
        assert_eq!(st3.observed_generation, Some(2));
        let st4 = next_status(&d, &st3, Some(&done), &[&done], 0, true, ts(500));
        assert_eq!(progressing_of(&st4), progressing_of(&st3));
        assert_eq!(
            get_condition(&st4, AVAILABLE)
                .and_then(|c| c.reason.clone())
                .as_deref(),
            Some("MinimumReplicasAvailable")
        );
        // Without a deadline there is no Progressing condition.
        let no_deadline = with_deadline(i32::MAX, false);
        let st5 = next_status(&no_deadline, &st3, Some(&done), &[&done], 0, true, ts(500));
        assert!(get_condition(&st5, PROGRESSING).is_none());
    }

    #[test]
    fn paused_conditions() {
        let now = ts(100);
        let mut st = DeploymentStatus::default();
        check_paused_conditions(&with_deadline(600, true), &mut st, now);
        assert_eq!(
            progressing_of(&st),
            ("Unknown".into(), PAUSED.into(), Some(100))
        );
        // Paused, the status sync keeps it; resuming says so.
        check_paused_conditions(&with_deadline(600, true), &mut st, ts(200));
        assert_eq!(progressing_of(&st).2, Some(100));
        check_paused_conditions(&with_deadline(600, false), &mut st, ts(300));
        assert_eq!(
            progressing_of(&st),
            ("Unknown".into(), RESUMED.into(), Some(300))
        );
        // A reported timeout is never hidden by pausing.
        let mut timed = DeploymentStatus::default();
        set_condition(
            &mut timed,
            new_condition(PROGRESSING, "False", TIMED_OUT, "x".into(), now),
        );
        check_paused_conditions(&with_deadline(600, true), &mut timed, ts(200));
        assert_eq!(progressing_of(&timed).1, TIMED_OUT);
        // Paused deployments are not checked for progress.
        assert_eq!(
            progress_check_after(&with_deadline(600, true), &st, now),
            None
        );
    }

    #[test]
    fn new_replicaset_carries_hash_and_revision() {
        let mut d = deployment(None, None);
        d.metadata.name = Some("web".into());
        d.metadata.uid = Some("u".into());
        d.metadata.annotations = Some(
            [
                ("kubernetes.io/change-cause".to_string(), "v2".to_string()),
                (REVISION.to_string(), "1".to_string()),
            ]
            .into(),
        );
        if let Some(s) = d.spec.as_mut() {
            s.template.metadata = Some(ObjectMeta {
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            });
            s.selector.match_labels = Some([("app".to_string(), "web".to_string())].into());
        }
        let rs = new_replicaset(&d, 2, 1, 1, 3);
        let hash = rs.labels()[POD_TEMPLATE_HASH].clone();
        assert_eq!(rs.name_any(), format!("web-{hash}"));
        assert_eq!(rs.annotations()[REVISION], "2");
        assert_eq!(rs.annotations()["kubernetes.io/change-cause"], "v2");
        assert_eq!(rs.annotations()[MAX_REPLICAS], "4");
        let spec = rs.spec.expect("spec");
        assert_eq!(
            spec.selector.match_labels.expect("labels")[POD_TEMPLATE_HASH],
            hash
        );
        let t = spec.template.expect("template");
        assert!(equal_ignore_hash(&t, &d.spec.expect("spec").template));
        assert_eq!(
            common::controller_ref(&rs.metadata).map(|r| r.uid.as_str()),
            Some("u")
        );
    }
}

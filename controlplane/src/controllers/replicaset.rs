//! The ReplicaSet controller: keeps `spec.replicas` pods matching the selector, owned through
//! controller references, as upstream's pkg/controller/replicaset/replica_set.go.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, ResourceExt};
use tokio::task::JoinSet;

use super::common::{self, api_err, Result};
use super::informers::Informers;
use super::Context;

/// Pods created or deleted per sync at most (upstream's `BurstReplicas`).
const BURST_REPLICAS: usize = 500;
/// How long unmet expectations block a sync before they are forgotten (upstream: 5 minutes).
const EXPECTATIONS_TTL: Duration = Duration::from_secs(60);

/// Creations and deletions issued but not yet seen in the pod store, per owner uid, as
/// upstream's `ControllerExpectations`: syncing on a stale cache would create twice.
#[derive(Default)]
pub struct Expectations {
    inner: Mutex<HashMap<String, Pending>>,
}

struct Pending {
    creates: HashSet<String>,
    deletes: HashSet<String>,
    at: Instant,
}

impl Expectations {
    /// Records pod names created and pod uids deleted for `owner`.
    pub fn expect(&self, owner: &str, creates: Vec<String>, deletes: Vec<String>) {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(
            owner.to_string(),
            Pending {
                creates: creates.into_iter().collect(),
                deletes: deletes.into_iter().collect(),
                at: Instant::now(),
            },
        );
    }

    /// Whether the store shows every expected creation and deletion (or they expired).
    pub fn satisfied(&self, owner: &str, pods: &[Arc<Pod>]) -> bool {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Some(p) = map.get(owner) else { return true };
        let names: HashSet<&str> = pods
            .iter()
            .map(|p| p.metadata.name.as_deref().unwrap_or_default())
            .collect();
        let live: HashSet<&str> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.metadata.uid.as_deref())
            .collect();
        let done = p.creates.iter().all(|n| names.contains(n.as_str()))
            && p.deletes.iter().all(|u| !live.contains(u.as_str()));
        if done || p.at.elapsed() > EXPECTATIONS_TTL {
            map.remove(owner);
            return true;
        }
        false
    }
}

struct Ctx {
    client: kube::Client,
    pods: Store<Pod>,
    recorder: common::Events,
    expectations: Expectations,
}

/// Every object is reconciled at least this often, in case a change was missed (a loop
/// that falls far behind the shared watch); a reconcile with nothing to do reads only
/// local stores.
const RESYNC: Duration = Duration::from_secs(5);

/// Runs the loop until shutdown, on the shared pod and ReplicaSet informers.
pub async fn run(ctx: Context, shared: Informers) -> Result<(), String> {
    let client = ctx.client.clone();
    let pods = shared.pods()?;
    let rss = shared.replicasets()?;
    pods.ready().await?;
    rss.ready().await?;
    let rs_store = rss.store();
    let state = Arc::new(Ctx {
        recorder: common::recorder(&client, "replicaset-controller"),
        client,
        pods: pods.store(),
        expectations: Expectations::default(),
    });
    let stream = Controller::for_shared_stream(rss.changes(), rs_store.clone())
        .watches_shared_stream(pods.changes(), move |pod: Arc<Pod>| {
            pod_owners::<ReplicaSet>(&rs_store, &pod, |rs| {
                rs.spec.as_ref().and_then(|s| s.selector.clone().into())
            })
        })
        .graceful_shutdown_on(ctx.shutdown.clone().cancelled_owned())
        .run(reconcile, common::error_policy, state);
    common::drive(stream, JoinSet::new(), ctx.shutdown).await
}

/// The controllers a pod change concerns: its controller if it has one of kind `K`,
/// otherwise every `K` in its namespace whose selector matches it (adoption).
pub fn pod_owners<K>(
    store: &Store<K>,
    pod: &Pod,
    selector: impl Fn(&K) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
) -> Vec<ObjectRef<K>>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    if let Some(r) = common::controller_ref(&pod.metadata) {
        if r.kind == K::kind(&()) {
            return vec![ObjectRef::new(&r.name).within(&ns)];
        }
        return Vec::new();
    }
    let labels = common::labels_of(&pod.metadata);
    store
        .state()
        .iter()
        .filter(|o| o.meta().namespace.as_deref() == Some(ns.as_str()))
        .filter(|o| common::selector(selector(o).as_ref()).is_ok_and(|s| s.matches(&labels)))
        .map(|o| ObjectRef::from_obj(o.as_ref()))
        .collect()
}

/// Delete preference of a pod (lower goes first), as upstream's `ActivePods` ordering:
/// unscheduled < scheduled, pending < unknown < running, not ready < ready, more restarts
/// first, newer first.
pub fn deletion_rank(pod: &Pod) -> (u8, u8, u8, i64, std::cmp::Reverse<i64>) {
    let scheduled = u8::from(
        pod.spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .is_some(),
    );
    let phase = match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Running") => 2,
        _ => 1,
    };
    let ready = u8::from(common::pod_is_ready(pod));
    let restarts: i64 = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| i64::from(c.restart_count)).sum())
        .unwrap_or(0);
    let created = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .unwrap_or(0);
    (
        scheduled,
        phase,
        ready,
        -restarts,
        std::cmp::Reverse(created),
    )
}

/// The pods to delete to go down by `n`, preferring the least useful.
pub fn pods_to_delete(pods: &[Arc<Pod>], n: usize) -> Vec<Arc<Pod>> {
    let mut sorted: Vec<Arc<Pod>> = pods.to_vec();
    sorted.sort_by_key(|p| deletion_rank(p));
    sorted.truncate(n);
    sorted
}

/// A pod from `template` owned by `owner` (upstream's `GetPodFromTemplate`).
pub fn pod_from_template(
    template: &PodTemplateSpec,
    owner_ref: k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    namespace: &str,
    generate_name: String,
) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name),
            namespace: Some(namespace.to_string()),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![owner_ref]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Ctx>) -> Result<Action> {
    common::ready(&ctx.pods, "pods").await?;
    let ns = rs.namespace().unwrap_or_default();
    let name = rs.name_any();
    let uid = rs.metadata.uid.clone().unwrap_or_default();
    let spec = rs.spec.clone().unwrap_or_default();
    let selector = common::selector(Some(&spec.selector))?;
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let all = common::pods_in(&ctx.pods, &ns);

    // Claim: adopt matching orphans, release owned pods that no longer match (upstream's
    // PodControllerRefManager). A deleting owner adopts nothing.
    let mut owned: Vec<Arc<Pod>> = Vec::new();
    for pod in &all {
        let matches = selector.matches(&common::labels_of(&pod.metadata));
        match common::controller_ref(&pod.metadata) {
            Some(r) if r.uid == uid => {
                if matches {
                    owned.push(pod.clone());
                } else if rs.metadata.deletion_timestamp.is_none() {
                    let patch = common::owner_refs_patch(&pod.metadata, None, Some(&uid));
                    match pods_api
                        .patch(
                            &pod.name_any(),
                            &PatchParams::default(),
                            &Patch::Merge(patch),
                        )
                        .await
                    {
                        Ok(_) => {}
                        Err(e) if common::is_not_found(&e) => {}
                        Err(e) => {
                            return Err(api_err(format!("release pod {ns}/{}", pod.name_any()))(e))
                        }
                    }
                }
            }
            None if matches
                && pod.metadata.deletion_timestamp.is_none()
                && rs.metadata.deletion_timestamp.is_none() =>
            {
                let patch = common::owner_refs_patch(
                    &pod.metadata,
                    Some(common::new_controller_ref(rs.as_ref())),
                    None,
                );
                match pods_api
                    .patch(
                        &pod.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(patch),
                    )
                    .await
                {
                    Ok(p) => owned.push(Arc::new(p)),
                    Err(e) if common::is_not_found(&e) || common::is_conflict(&e) => {}
                    Err(e) => return Err(api_err(format!("adopt pod {ns}/{}", pod.name_any()))(e)),
                }
            }
            _ => {}
        }
    }
    let active: Vec<Arc<Pod>> = owned
        .iter()
        .filter(|p| common::pod_is_active(p))
        .cloned()
        .collect();

    if rs.metadata.deletion_timestamp.is_none() && ctx.expectations.satisfied(&uid, &owned) {
        let want = usize::try_from(spec.replicas.unwrap_or(1).max(0)).unwrap_or(0);
        if active.len() < want {
            let n = (want - active.len()).min(BURST_REPLICAS);
            let template = spec.template.clone().unwrap_or_default();
            let mut created = Vec::new();
            for _ in 0..n {
                let pod = pod_from_template(
                    &template,
                    common::new_controller_ref(rs.as_ref()),
                    &ns,
                    format!("{name}-"),
                );
                match pods_api.create(&PostParams::default(), &pod).await {
                    Ok(p) => {
                        let pname = p.name_any();
                        common::event(
                            &ctx.recorder,
                            rs.as_ref(),
                            "SuccessfulCreate",
                            "Create",
                            format!("Created pod: {pname}"),
                        )
                        .await;
                        created.push(pname);
                    }
                    Err(e) => {
                        ctx.expectations.expect(&uid, created, Vec::new());
                        // Upstream's pod control: the failure is visible on the owner.
                        if !common::is_not_found(&e) {
                            common::warning(
                                &ctx.recorder,
                                rs.as_ref(),
                                "FailedCreate",
                                "Create",
                                format!("Error creating: {}", common::error_message(&e)),
                            )
                            .await;
                        }
                        return Err(api_err(format!("create pod for replicaset {ns}/{name}"))(e));
                    }
                }
            }
            ctx.expectations.expect(&uid, created, Vec::new());
        } else if active.len() > want {
            let doomed = pods_to_delete(&active, (active.len() - want).min(BURST_REPLICAS));
            let mut deleted = Vec::new();
            for pod in doomed {
                let pname = pod.name_any();
                match pods_api.delete(&pname, &DeleteParams::default()).await {
                    Ok(_) => {
                        common::event(
                            &ctx.recorder,
                            rs.as_ref(),
                            "SuccessfulDelete",
                            "Delete",
                            format!("Deleted pod: {pname}"),
                        )
                        .await;
                        deleted.push(pod.metadata.uid.clone().unwrap_or_default());
                    }
                    Err(e) if common::is_not_found(&e) => {}
                    Err(e) => {
                        ctx.expectations.expect(&uid, Vec::new(), deleted);
                        common::warning(
                            &ctx.recorder,
                            rs.as_ref(),
                            "FailedDelete",
                            "Delete",
                            format!("Error deleting: {}", common::error_message(&e)),
                        )
                        .await;
                        return Err(api_err(format!("delete pod {ns}/{pname}"))(e));
                    }
                }
            }
            ctx.expectations.expect(&uid, Vec::new(), deleted);
        }
    }

    let status = compute_status(&rs, &active, Timestamp::now());
    let current = rs.status.clone().unwrap_or_default();
    let changed = status != StatusView::from(&current);
    if changed {
        let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
        match rs_api
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
                return Err(api_err(format!("update status of replicaset {ns}/{name}"))(
                    e,
                ))
            }
        }
    }
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    if min_ready > 0 && status.ready_replicas != status.available_replicas {
        return Ok(Action::requeue(Duration::from_secs(
            u64::try_from(min_ready).unwrap_or(1).max(1),
        )));
    }
    if !ctx.expectations.satisfied(&uid, &owned) {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    Ok(Action::requeue(RESYNC))
}

/// The status fields this controller owns.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusView {
    /// Active pods.
    pub replicas: i32,
    /// Active pods whose labels match the template's.
    pub fully_labeled_replicas: i32,
    /// Ready pods.
    pub ready_replicas: i32,
    /// Pods ready for minReadySeconds.
    pub available_replicas: i32,
    /// The generation these counts are for.
    pub observed_generation: i64,
}

impl From<&k8s_openapi::api::apps::v1::ReplicaSetStatus> for StatusView {
    fn from(s: &k8s_openapi::api::apps::v1::ReplicaSetStatus) -> Self {
        StatusView {
            replicas: s.replicas,
            fully_labeled_replicas: s.fully_labeled_replicas.unwrap_or(0),
            ready_replicas: s.ready_replicas.unwrap_or(0),
            available_replicas: s.available_replicas.unwrap_or(0),
            observed_generation: s.observed_generation.unwrap_or(0),
        }
    }
}

/// Counts the status of `rs` from its active pods (upstream's `calculateStatus`).
pub fn compute_status(rs: &ReplicaSet, active: &[Arc<Pod>], now: Timestamp) -> StatusView {
    let spec = rs.spec.clone().unwrap_or_default();
    let template_labels = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let count = |f: &dyn Fn(&Pod) -> bool| {
        i32::try_from(active.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
    };
    StatusView {
        replicas: count(&|_| true),
        fully_labeled_replicas: count(&|p| {
            let l = common::labels_of(&p.metadata);
            template_labels.iter().all(|(k, v)| l.get(k) == Some(v))
        }),
        ready_replicas: count(&common::pod_is_ready),
        available_replicas: count(&|p| {
            common::pod_is_available(p, spec.min_ready_seconds.unwrap_or(0), now)
        }),
        observed_generation: rs.metadata.generation.unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn pod(name: &str, node: Option<&str>, phase: &str, ready: bool, created: i64) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(format!("uid-{name}")),
                creation_timestamp: Some(Time(Timestamp::from_second(created).expect("valid"))),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(Into::into),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    last_transition_time: Some(Time(
                        Timestamp::from_second(created).expect("valid"),
                    )),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn deletion_preference() {
        let pods = vec![
            pod("ready-old", Some("n"), "Running", true, 100),
            pod("ready-new", Some("n"), "Running", true, 200),
            pod("notready", Some("n"), "Running", false, 50),
            pod("pending", Some("n"), "Pending", false, 50),
            pod("unscheduled", None, "Pending", false, 10),
        ];
        let order: Vec<String> = pods_to_delete(&pods, 5)
            .iter()
            .map(|p| p.name_any())
            .collect();
        assert_eq!(
            order,
            [
                "unscheduled",
                "pending",
                "notready",
                "ready-new",
                "ready-old"
            ]
        );
        assert_eq!(pods_to_delete(&pods, 2).len(), 2);
    }

    #[test]
    fn status_counts() {
        let mut rs = ReplicaSet::default();
        rs.metadata.generation = Some(3);
        rs.spec = Some(k8s_openapi::api::apps::v1::ReplicaSetSpec {
            min_ready_seconds: Some(60),
            ..Default::default()
        });
        let pods = vec![
            pod("a", Some("n"), "Running", true, 0),
            pod("b", Some("n"), "Running", true, 1000),
            pod("c", None, "Pending", false, 0),
        ];
        let now = Timestamp::from_second(1030).expect("valid");
        let st = compute_status(&rs, &pods, now);
        assert_eq!(
            st,
            StatusView {
                replicas: 3,
                fully_labeled_replicas: 3,
                ready_replicas: 2,
                available_replicas: 1,
                observed_generation: 3
            }
        );
    }

    #[test]
    fn expectations_wait_for_the_store() {
        let e = Expectations::default();
        e.expect("rs", vec!["a".into()], vec!["uid-b".into()]);
        let b = pod("b", None, "Running", true, 0);
        assert!(!e.satisfied("rs", std::slice::from_ref(&b)));
        assert!(!e.satisfied("rs", &[pod("a", None, "Pending", false, 0), b]));
        assert!(e.satisfied("rs", &[pod("a", None, "Pending", false, 0)]));
        assert!(e.satisfied("other", &[]));
    }
}

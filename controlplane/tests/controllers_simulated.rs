//! The scheduler and every workload loop together against the real API server (in-process,
//! free loopback port, own SQLite), on simulated nodes (`oxlet_e2e::sim_node`: test code
//! registers Nodes, renews their Leases and reports bound pods Running and Ready):
//! a Deployment survives the loss of a node as Kubernetes does, a cordoned node gets nothing
//! new, a DaemonSet follows nodes joining and leaving, every decision is an Event; progress
//! deadlines, paused scaling and DaemonSet surge updates.
//!
//! Periods are shortened through `ControllerOptions`; waits poll on conditions with generous
//! deadlines and print the last state they saw.

mod support;
use support::Cluster;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::ResourceExt;
use oxlet_controlplane::controllers::ControllerOptions;
use oxlet_e2e::sim_node::{SimConfig, SimNodes};
use serde_json::{json, Value};

/// Generous: the suite runs beside others on a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(90);
const GRACE: Duration = Duration::from_secs(4);
/// tolerationSeconds of the deployments' unreachable/not-ready tolerations.
const TOLERATION: i64 = 2;

const LOOPS: &[&str] = &[
    "scheduler",
    "nodelifecycle",
    "replicaset",
    "deployment",
    "daemonset",
    "garbagecollector",
    "serviceaccount",
    "podgc",
];

fn options() -> ControllerOptions {
    ControllerOptions {
        node_monitor_grace_period: GRACE,
        node_monitor_period: Duration::from_millis(300),
        pod_gc_period: Duration::from_secs(1),
        cluster_cidr: None,
        ..Default::default()
    }
}

async fn start() -> Result<(Cluster, SimNodes)> {
    let cluster = support::start(LOOPS, options()).await?;
    let sims = SimNodes::start(
        cluster.client.clone(),
        SimConfig {
            renew_interval: Duration::from_millis(400),
            ..Default::default()
        },
    );
    Ok((cluster, sims))
}

/// Polls `check` until it returns `Ok(Ok(v))` or [`DEADLINE`] passes.
async fn eventually<T, F, Fut>(what: &str, check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<std::result::Result<T, String>>>,
{
    support::eventually(what, DEADLINE, Duration::from_millis(100), check).await
}

fn tolerations(seconds: i64) -> Value {
    json!([
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds},
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds},
    ])
}

fn deployment(name: &str, replicas: i32, image: &str, extra_spec: Value) -> Result<Deployment> {
    let mut d = json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"tolerations": tolerations(TOLERATION), "containers": [{"name": "c", "image": image,
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}},
        }
    });
    if let (Some(spec), Some(extra)) = (d["spec"].as_object_mut(), extra_spec.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    Ok(serde_json::from_value(d)?)
}

fn node_of(p: &Pod) -> Option<String> {
    p.spec.as_ref().and_then(|s| s.node_name.clone())
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Live (not terminating) pods with `app=<app>`, by node ("" when unbound).
async fn placement(pods: &Api<Pod>, app: &str) -> Result<BTreeMap<String, Vec<Pod>>> {
    let mut by_node: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
    for p in pods
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await?
        .items
    {
        if p.metadata.deletion_timestamp.is_none() {
            by_node
                .entry(node_of(&p).unwrap_or_default())
                .or_default()
                .push(p);
        }
    }
    Ok(by_node)
}

fn counts(by_node: &BTreeMap<String, Vec<Pod>>) -> BTreeMap<String, usize> {
    by_node
        .iter()
        .map(|(n, ps)| (n.clone(), ps.len()))
        .collect()
}

/// Waits until the deployment is rolled out with `replicas` pods, all Running and Ready on
/// nodes in `allowed`; returns the pods per node.
async fn settled(
    client: &kube::Client,
    ns: &str,
    name: &str,
    replicas: i32,
    allowed: &[&str],
) -> Result<BTreeMap<String, Vec<Pod>>> {
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    eventually(
        &format!("{name} settled with {replicas} on {allowed:?}"),
        || async {
            let d = deploys.get(name).await?;
            let st = d.status.clone().unwrap_or_default();
            let by_node = placement(&pods, name).await?;
            let total: usize = by_node.values().map(Vec::len).sum();
            let ok = st.observed_generation >= d.metadata.generation
                && st.updated_replicas == Some(replicas)
                && st.available_replicas == Some(replicas)
                && st.replicas == Some(replicas)
                && total == usize::try_from(replicas).unwrap_or(0)
                && by_node.keys().all(|n| allowed.contains(&n.as_str()))
                && by_node.values().flatten().all(is_ready);
            Ok(if ok {
                Ok(by_node)
            } else {
                Err(format!(
                    "status {:?}/{:?}/{:?} placement {:?}",
                    st.replicas,
                    st.updated_replicas,
                    st.available_replicas,
                    counts(&by_node)
                ))
            })
        },
    )
    .await
}

fn taints(n: &Node) -> Vec<(String, String)> {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|t| (t.key, t.effect))
        .collect()
}

fn ready_status(n: &Node) -> String {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.clone())
        .unwrap_or_default()
}

/// Every Event, by (reason, regarding kind, regarding name).
async fn events(client: &kube::Client) -> Result<Vec<Event>> {
    let api: Api<Event> = Api::all(client.clone());
    Ok(api.list(&ListParams::default()).await?.items)
}

fn describe(evs: &[Event]) -> String {
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for e in evs {
        let r = e.regarding.clone().unwrap_or_default();
        seen.insert(format!(
            "{} {}/{}",
            e.reason.clone().unwrap_or_default(),
            r.kind.unwrap_or_default(),
            r.name.unwrap_or_default()
        ));
    }
    seen.into_iter().collect::<Vec<_>>().join(", ")
}

/// Waits for an Event with `reason` about a `kind` whose name satisfies `name`, and whose
/// note satisfies `note`.
async fn wait_event(
    client: &kube::Client,
    reason: &str,
    kind: &str,
    name: impl Fn(&str) -> bool,
    note: impl Fn(&str) -> bool,
) -> Result<Event> {
    eventually(&format!("{reason} event about a {kind}"), || async {
        let evs = events(client).await?;
        let found = evs.iter().find(|e| {
            let r = e.regarding.clone().unwrap_or_default();
            e.reason.as_deref() == Some(reason)
                && r.kind.as_deref() == Some(kind)
                && name(r.name.as_deref().unwrap_or_default())
                && note(e.note.as_deref().unwrap_or_default())
        });
        Ok(match found {
            Some(e) => Ok(e.clone()),
            None => Err(describe(&evs)),
        })
    })
    .await
}

fn any(_: &str) -> bool {
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_loss_cordon_daemonset_and_events() -> Result<()> {
    let (cluster, sims) = start().await?;
    let c = &cluster.client;
    let ns = "shop";
    support::create_namespace(c, ns).await?;
    for n in ["n1", "n2", "n3"] {
        sims.add(n, &[]).await?;
    }
    let nodes: Api<Node> = Api::all(c.clone());
    let pods: Api<Pod> = Api::namespaced(c.clone(), ns);
    let deploys: Api<Deployment> = Api::namespaced(c.clone(), ns);
    let daemons: Api<DaemonSet> = Api::namespaced(c.clone(), ns);

    // A DaemonSet and a Deployment spread over the three nodes.
    let ds: DaemonSet = serde_json::from_value(json!({
        "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}},
                "spec": {"containers": [{"name": "c", "image": "agent:v1"}]}}}
    }))?;
    daemons.create(&PostParams::default(), &ds).await?;
    deploys
        .create(
            &PostParams::default(),
            &deployment("web", 6, "web:v1", json!({}))?,
        )
        .await?;
    let by_node = settled(c, ns, "web", 6, &["n1", "n2", "n3"]).await?;
    assert_eq!(
        by_node.len(),
        3,
        "spread over every node: {:?}",
        counts(&by_node)
    );
    let agents = |want: Vec<&'static str>| {
        let pods = pods.clone();
        async move {
            eventually(&format!("agent pods Ready on {want:?}"), || async {
                let by_node = placement(&pods, "agent").await?;
                let on: Vec<&str> = by_node.keys().map(String::as_str).collect();
                let ok = on == want && by_node.values().all(|ps| ps.len() == 1 && is_ready(&ps[0]));
                Ok(if ok {
                    Ok(())
                } else {
                    Err(format!("{:?}", counts(&by_node)))
                })
            })
            .await
        }
    };
    agents(vec!["n1", "n2", "n3"]).await?;

    // A cordoned node gets nothing new: three more replicas land on n1 and n2 only.
    let before_n3 = by_node.get("n3").map(Vec::len).unwrap_or(0);
    nodes
        .patch(
            "n3",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"unschedulable": true}})),
        )
        .await?;
    // The scheduler sees the cordon before the scale: wait until the node shows it.
    eventually("n3 cordoned", || async {
        let n = nodes.get("n3").await?;
        Ok(if n.spec.and_then(|s| s.unschedulable) == Some(true) {
            Ok(())
        } else {
            Err("not yet".into())
        })
    })
    .await?;
    deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 9}})),
        )
        .await?;
    let by_node = settled(c, ns, "web", 9, &["n1", "n2", "n3"]).await?;
    assert_eq!(
        by_node.get("n3").map(Vec::len).unwrap_or(0),
        before_n3,
        "nothing new on the cordoned node: {:?}",
        counts(&by_node)
    );
    nodes
        .patch(
            "n3",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"unschedulable": false}})),
        )
        .await?;

    // n1's kubelet dies.
    let lost: BTreeSet<String> = by_node
        .get("n1")
        .into_iter()
        .flatten()
        .map(|p| p.name_any())
        .collect();
    ensure!(
        !lost.is_empty(),
        "n1 runs some web pods: {:?}",
        counts(&by_node)
    );
    let silenced = Instant::now();
    sims.silence("n1");
    let n1 = eventually("n1 Unknown with unreachable taints", || async {
        let n = nodes.get("n1").await?;
        let t = taints(&n);
        let ok = ready_status(&n) == "Unknown"
            && t.contains(&("node.kubernetes.io/unreachable".into(), "NoExecute".into()))
            && t.contains(&("node.kubernetes.io/unreachable".into(), "NoSchedule".into()));
        Ok(if ok {
            Ok(n)
        } else {
            Err(format!("{} {t:?}", ready_status(&n)))
        })
    })
    .await?;
    let tainted_after = silenced.elapsed();
    assert!(
        tainted_after >= GRACE - Duration::from_secs(1),
        "tainted only after the grace period: {tainted_after:?}"
    );
    let taint_added = n1
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .find(|t| t.key == "node.kubernetes.io/unreachable" && t.effect == "NoExecute")
        .and_then(|t| t.time_added.clone())
        .context("timeAdded on the unreachable taint")?;
    for n in ["n2", "n3"] {
        let node = nodes.get(n).await?;
        assert_eq!(ready_status(&node), "True", "{n} stays Ready");
        assert!(
            taints(&node).is_empty(),
            "{n} untainted: {:?}",
            taints(&node)
        );
    }

    // Its web pods are evicted after their toleration and replaced on n2 and n3; the agent
    // pod tolerates the taint forever and stays (not ready, like every pod there).
    let by_node = settled(c, ns, "web", 9, &["n2", "n3"]).await?;
    assert!(
        by_node
            .values()
            .flatten()
            .all(|p| !lost.contains(&p.name_any())),
        "replacements are new pods"
    );
    for name in &lost {
        let ev = wait_event(
            c,
            "TaintManagerEviction",
            "Pod",
            |n| n == name.as_str(),
            |n| n == format!("Marking for deletion Pod {ns}/{name}"),
        )
        .await?;
        let at = ev.event_time.context("eventTime")?.0;
        let waited = at.duration_since(taint_added.0);
        assert!(
            waited >= k8s_openapi::jiff::SignedDuration::from_secs(TOLERATION),
            "{name} evicted {waited:?} after the taint, before its toleration"
        );
        let p = pods.get(name).await?;
        assert!(
            p.metadata.deletion_timestamp.is_some(),
            "{name} terminating"
        );
        let disruption = p
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "DisruptionTarget"))
            .and_then(|c| c.reason.clone());
        assert_eq!(
            disruption.as_deref(),
            Some("DeletionByTaintManager"),
            "{name}"
        );
    }
    let agent_on_n1 = placement(&pods, "agent")
        .await?
        .get("n1")
        .cloned()
        .unwrap_or_default();
    assert_eq!(agent_on_n1.len(), 1, "the agent stays on n1");
    eventually("the agent on n1 marked not ready", || async {
        let p = pods.get(&agent_on_n1[0].name_any()).await?;
        Ok(if is_ready(&p) {
            Err("still Ready".into())
        } else {
            Ok(())
        })
    })
    .await?;

    // n1 comes back: untainted, and its kubelet finishes the evicted pods.
    sims.revive("n1").await?;
    eventually("n1 Ready and untainted", || async {
        let n = nodes.get("n1").await?;
        let ok = ready_status(&n) == "True" && taints(&n).is_empty();
        Ok(if ok {
            Ok(())
        } else {
            Err(format!("{} {:?}", ready_status(&n), taints(&n)))
        })
    })
    .await?;
    eventually("evicted pods gone", || async {
        let left: Vec<String> = pods
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .map(|p| p.name_any())
            .filter(|n| lost.contains(n))
            .collect();
        Ok(if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        })
    })
    .await?;
    agents(vec!["n1", "n2", "n3"]).await?;

    // Scaling down deletes pods (SuccessfulDelete); the DaemonSet follows nodes joining and
    // leaving (the pods of a deleted node are collected by the pod GC, then replaced).
    deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await?;
    settled(c, ns, "web", 4, &["n1", "n2", "n3"]).await?;
    sims.add("n4", &[]).await?;
    agents(vec!["n1", "n2", "n3", "n4"]).await?;
    sims.remove("n2").await?;
    agents(vec!["n1", "n3", "n4"]).await?;
    settled(c, ns, "web", 4, &["n1", "n3", "n4"]).await?;

    // An unschedulable pod says why.
    let p: Pod = serde_json::from_value(json!({"metadata": {"name": "nowhere"},
        "spec": {"nodeSelector": {"disk": "none"}, "containers": [{"name": "c", "image": "i"}]}}))?;
    pods.create(&PostParams::default(), &p).await?;

    // Every decision above is an Event with upstream's reason.
    let is = |want: &'static str| move |n: &str| n == want;
    let starts = |want: &'static str| move |n: &str| n.starts_with(want);
    wait_event(c, "Scheduled", "Pod", starts("web-"), |n| {
        n.starts_with("Successfully assigned shop/web-")
    })
    .await?;
    wait_event(c, "FailedScheduling", "Pod", is("nowhere"), |n| {
        n.starts_with("0/3 nodes are available:")
            && n.contains("didn't match Pod's node affinity/selector")
    })
    .await?;
    wait_event(c, "SuccessfulCreate", "ReplicaSet", starts("web-"), |n| {
        n.starts_with("Created pod: web-")
    })
    .await?;
    wait_event(c, "SuccessfulDelete", "ReplicaSet", starts("web-"), |n| {
        n.starts_with("Deleted pod: web-")
    })
    .await?;
    wait_event(c, "ScalingReplicaSet", "Deployment", is("web"), |n| {
        n.contains("from 9 to 4")
    })
    .await?;
    wait_event(c, "SuccessfulCreate", "DaemonSet", is("agent"), |n| {
        n.starts_with("Created pod: agent-")
    })
    .await?;
    wait_event(c, "RegisteredNode", "Node", is("n4"), |n| {
        n == "Node n4 event: Registered Node n4 in Controller"
    })
    .await?;
    wait_event(c, "RemovingNode", "Node", is("n2"), |n| {
        n == "Node n2 event: Removing Node n2 from Controller"
    })
    .await?;
    wait_event(c, "NodeNotReady", "Node", is("n1"), |n| {
        n == "Node n1 status is now: NodeNotReady"
    })
    .await?;
    let warn = wait_event(c, "NodeNotReady", "Pod", starts("agent-"), |n| {
        n == "Node is not ready"
    })
    .await?;
    assert_eq!(warn.type_.as_deref(), Some("Warning"));
    wait_event(c, "TaintManagerEviction", "Pod", starts("web-"), any).await?;
    drop(sims);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_deadline_and_paused_scaling() -> Result<()> {
    let (cluster, sims) = start().await?;
    let c = &cluster.client;
    let ns = "deadline";
    support::create_namespace(c, ns).await?;
    for n in ["n1", "n2"] {
        sims.add(n, &[]).await?;
    }
    let deploys: Api<Deployment> = Api::namespaced(c.clone(), ns);
    let progressing = |want_status: &'static str, want_reason: &'static str| {
        let deploys = deploys.clone();
        async move {
            eventually(
                &format!("Progressing={want_status} {want_reason}"),
                || async {
                    let d = deploys.get("api").await?;
                    let st = d.status.unwrap_or_default();
                    let cond = st
                        .conditions
                        .unwrap_or_default()
                        .into_iter()
                        .find(|c| c.type_ == "Progressing");
                    let ok = cond.as_ref().is_some_and(|c| {
                        c.status == want_status && c.reason.as_deref() == Some(want_reason)
                    });
                    Ok(match cond {
                        Some(c) if ok => Ok(c),
                        other => Err(format!("{other:?}")),
                    })
                },
            )
            .await
        }
    };
    // Pods that fit no node: no progress within 3 s.
    let created = Instant::now();
    deploys
        .create(
            &PostParams::default(),
            &deployment(
                "api",
                2,
                "api:v1",
                json!({"progressDeadlineSeconds": 3,
                    "template": {"metadata": {"labels": {"app": "api"}},
                        "spec": {"nodeSelector": {"disk": "none"}, "containers": [{"name": "c", "image": "api:v1"}]}}}),
            )?,
        )
        .await?;
    let cond = progressing("False", "ProgressDeadlineExceeded").await?;
    assert!(
        created.elapsed() >= Duration::from_secs(2),
        "not before the deadline"
    );
    let msg = cond.message.unwrap_or_default();
    assert!(
        msg.starts_with("ReplicaSet \"api-") && msg.ends_with("\" has timed out progressing."),
        "{msg}"
    );
    // A fixed template rolls out and completes.
    deploys
        .patch(
            "api",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"nodeSelector": null}}}})),
        )
        .await?;
    settled(c, ns, "api", 2, &["n1", "n2"]).await?;
    progressing("True", "NewReplicaSetAvailable").await?;

    // Paused: a template change waits, but scaling happens.
    deploys
        .patch(
            "api",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": true}})),
        )
        .await?;
    progressing("Unknown", "DeploymentPaused").await?;
    deploys
        .patch(
            "api",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"replicas": 4, "template": {"spec": {"containers": [{"name": "c", "image": "api:v2"}]}}}})),
        )
        .await?;
    let pods: Api<Pod> = Api::namespaced(c.clone(), ns);
    eventually("paused deployment scaled to 4 pods of v1", || async {
        let by_node = placement(&pods, "api").await?;
        let images: Vec<String> = by_node
            .values()
            .flatten()
            .filter(|p| is_ready(p))
            .filter_map(|p| {
                p.spec
                    .as_ref()
                    .map(|s| s.containers[0].image.clone().unwrap_or_default())
            })
            .collect();
        let ok = images.len() == 4 && images.iter().all(|i| i == "api:v1");
        Ok(if ok {
            Ok(())
        } else {
            Err(format!("{images:?}"))
        })
    })
    .await?;
    deploys
        .patch(
            "api",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": false}})),
        )
        .await?;
    let by_node = settled(c, ns, "api", 4, &["n1", "n2"]).await?;
    assert!(
        by_node.values().flatten().all(|p| p
            .spec
            .as_ref()
            .map(|s| s.containers[0].image.as_deref())
            == Some(Some("api:v2"))),
        "resumed rollout replaced every pod"
    );
    progressing("True", "NewReplicaSetAvailable").await?;
    drop(sims);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_surge_update_keeps_every_node_served() -> Result<()> {
    let (cluster, sims) = start().await?;
    let c = &cluster.client;
    let ns = "surge";
    support::create_namespace(c, ns).await?;
    for n in ["n1", "n2", "n3"] {
        sims.add(n, &[]).await?;
    }
    let daemons: Api<DaemonSet> = Api::namespaced(c.clone(), ns);
    let ds: DaemonSet = serde_json::from_value(json!({
        "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": {"app": "agent"}},
                "spec": {"containers": [{"name": "c", "image": "agent:v1"}]}}}
    }))?;
    daemons.create(&PostParams::default(), &ds).await?;
    let pods: Api<Pod> = Api::namespaced(c.clone(), ns);
    let rolled = |image: &'static str| {
        let pods = pods.clone();
        let daemons = daemons.clone();
        async move {
            eventually(&format!("one ready {image} agent per node"), || async {
                let by_node = placement(&pods, "agent").await?;
                let st = daemons.get("agent").await?.status.unwrap_or_default();
                let ok = by_node.len() == 3
                    && by_node.values().all(|ps| {
                        ps.len() == 1
                            && is_ready(&ps[0])
                            && ps[0]
                                .spec
                                .as_ref()
                                .and_then(|s| s.containers[0].image.as_deref())
                                == Some(image)
                    })
                    && st.updated_number_scheduled == Some(3)
                    && st.number_available == Some(3);
                Ok(if ok {
                    Ok(())
                } else {
                    Err(format!("{:?} {st:?}", counts(&by_node)))
                })
            })
            .await
        }
    };
    rolled("agent:v1").await?;

    // Watch every pod while the template changes: each node always has a ready pod, and at
    // some point one node runs two (the surge).
    let most_on_a_node = Arc::new(Mutex::new(0usize));
    let bare_nodes: Arc<Mutex<Vec<String>>> = Arc::default();
    let watch = {
        let (most, bare) = (most_on_a_node.clone(), bare_nodes.clone());
        let (reader, writer) = kube::runtime::reflector::store::<Pod>();
        let stream = kube::runtime::reflector::reflector(
            writer,
            watcher(pods.clone(), watcher::Config::default()).default_backoff(),
        );
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            let mut synced = false;
            while let Some(ev) = stream.next().await {
                // Judge only a complete store: during a (re)list it fills object by object.
                match ev {
                    Ok(watcher::Event::InitDone) => synced = true,
                    Ok(watcher::Event::Init) => {
                        synced = false;
                        continue;
                    }
                    Ok(_) if synced => {}
                    _ => continue,
                }
                let mut ready: HashMap<String, usize> = HashMap::new();
                let mut live: HashMap<String, usize> = HashMap::new();
                for p in reader.state() {
                    let Some(n) = node_of(&p) else { continue };
                    if p.metadata.deletion_timestamp.is_none() {
                        *live.entry(n.clone()).or_default() += 1;
                        if is_ready(&p) {
                            *ready.entry(n).or_default() += 1;
                        }
                    }
                }
                if let Ok(mut m) = most.lock() {
                    *m = (*m).max(live.values().copied().max().unwrap_or(0));
                }
                for n in ["n1", "n2", "n3"] {
                    if ready.get(n).copied().unwrap_or(0) == 0 {
                        let seen: Vec<String> = reader
                            .state()
                            .iter()
                            .map(|p| {
                                format!(
                                    "{}@{:?} ready={} deleting={}",
                                    p.name_any(),
                                    node_of(p),
                                    is_ready(p),
                                    p.metadata.deletion_timestamp.is_some()
                                )
                            })
                            .collect();
                        if let Ok(mut b) = bare.lock() {
                            b.push(format!("{n}: {seen:?}"));
                        }
                    }
                }
            }
        })
    };
    daemons
        .patch(
            "agent",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "agent:v2"}]}}}})),
        )
        .await?;
    rolled("agent:v2").await?;
    watch.abort();
    let most = *most_on_a_node
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    assert_eq!(most, 2, "a new pod ran beside the old one");
    let bare = bare_nodes
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    assert!(
        bare.is_empty(),
        "nodes left without a ready agent: {bare:?}"
    );
    drop(sims);
    Ok(())
}

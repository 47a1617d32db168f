//! The scheduler, node lifecycle and node IPAM loops against the real API server, started
//! in-process on a free loopback port with its own data dir and SQLite, with simulated
//! nodes: test code registers Node objects, renews their Leases (stoppable, to make a node
//! go silent) and marks bound pods Running as a kubelet would.
//!
//! Every wait is on a watch with a deadline and prints the last state it saw on timeout.

mod support;
use support::Cluster;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use futures::StreamExt as _;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt as _};
use oxlet_controlplane::controllers::ControllerOptions;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// Generous: the suite runs beside others on a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(60);

/// Short periods so failures show within seconds.
fn fast_options() -> ControllerOptions {
    ControllerOptions {
        node_monitor_grace_period: Duration::from_secs(3),
        node_monitor_period: Duration::from_millis(500),
        cluster_cidr: Some("10.244.0.0/16".to_string()),
        node_cidr_mask_size: 24,
        ..Default::default()
    }
}

/// The server with `loops` (see tests/support).
async fn start(loops: &[&'static str], options: ControllerOptions) -> Result<Cluster> {
    support::start(loops, options).await
}

/// Waits on a watch of `api` until `pred` holds for an object; on timeout the error shows
/// the last object seen.
async fn wait_for<K>(api: Api<K>, what: &str, mut pred: impl FnMut(&K) -> bool) -> Result<K>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default,
{
    let last: Arc<Mutex<Option<String>>> = Arc::default();
    let seen = last.clone();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .applied_objects();
    let found = tokio::time::timeout(WAIT, async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            let Ok(obj) = item else { continue };
            if pred(&obj) {
                return Some(obj);
            }
            if let Ok(mut l) = seen.lock() {
                *l = Some(format!("{obj:?}"));
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(obj)) => Ok(obj),
        _ => {
            let last = last.lock().map(|l| l.clone()).unwrap_or_default();
            bail!("timed out waiting for {what}; last seen: {last:?}")
        }
    }
}

/// Waits for the named object to satisfy `pred`.
async fn wait_named<K>(api: Api<K>, name: &str, what: &str, pred: impl Fn(&K) -> bool) -> Result<K>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default,
{
    let name = name.to_string();
    wait_for(api, what, move |o: &K| {
        o.meta().name.as_deref() == Some(name.as_str()) && pred(o)
    })
    .await
}

fn node_json(name: &str, labels: Value, taints: Value, unschedulable: bool) -> Value {
    let mut labels = labels;
    labels["kubernetes.io/hostname"] = json!(name);
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": taints, "unschedulable": unschedulable},
    })
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

fn ready_status(ready: &str) -> Value {
    let t = now();
    json!({"status": {
        "capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"},
        "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"},
        "conditions": [{"type": "Ready", "status": ready, "reason": "KubeletReady",
            "message": "kubelet is posting ready status", "lastHeartbeatTime": t, "lastTransitionTime": t}],
    }})
}

/// A simulated kubelet: registers the node, renews its Lease every 500 ms and marks its
/// bound pods Running, until `stop` is cancelled.
struct SimNode {
    stop: CancellationToken,
}

impl Drop for SimNode {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn register(client: &kube::Client, node: Value, cpu: &str) -> Result<()> {
    let name = node["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .create(&PostParams::default(), &serde_json::from_value(node)?)
        .await
        .with_context(|| format!("create node {name}"))?;
    let mut status = ready_status("True");
    status["status"]["capacity"]["cpu"] = json!(cpu);
    status["status"]["allocatable"]["cpu"] = json!(cpu);
    nodes
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .with_context(|| format!("node {name} status"))?;
    Ok(())
}

/// Starts heartbeats (Lease renewals) and the pod-status loop for `name`.
fn heartbeat(client: &kube::Client, name: &str, mark_running: bool) -> SimNode {
    let stop = CancellationToken::new();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let pods: Api<Pod> = Api::all(client.clone());
    let node = name.to_string();
    let token = stop.clone();
    tokio::spawn(async move {
        let lease = json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": node, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": now()},
        });
        let _ = leases
            .patch(
                &node,
                &PatchParams::apply("sim-kubelet").force(),
                &Patch::Apply(&lease),
            )
            .await;
        // A kubelet renews on a timer: time is the subject here.
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let watch = watcher(
            pods,
            watcher::Config::default().fields(&format!("spec.nodeName={node}")),
        )
        .default_backoff()
        .applied_objects();
        let mut watch = std::pin::pin!(watch);
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tick.tick() => {
                    let patch = json!({"spec": {"renewTime": now()}});
                    let _ = leases.patch(&node, &PatchParams::default(), &Patch::Merge(&patch)).await;
                }
                Some(Ok(pod)) = watch.next(), if mark_running => {
                    let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
                    if phase.as_deref() == Some("Pending") || phase.is_none() {
                        let ns = pod.metadata.namespace.clone().unwrap_or_default();
                        let api: Api<Pod> = Api::namespaced(leases_client(&leases), &ns);
                        let status = json!({"status": {"phase": "Running"}});
                        let _ = api
                            .patch_status(
                                pod.metadata.name.as_deref().unwrap_or_default(),
                                &PatchParams::default(),
                                &Patch::Merge(&status),
                            )
                            .await;
                    }
                }
            }
        }
    });
    SimNode { stop }
}

fn leases_client(api: &Api<Lease>) -> kube::Client {
    api.clone().into_client()
}

async fn add_node(client: &kube::Client, node: Value, cpu: &str) -> Result<SimNode> {
    let name = node["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    register(client, node, cpu).await?;
    Ok(heartbeat(client, &name, true))
}

async fn create_pod(client: &kube::Client, ns: &str, pod: Value) -> Result<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    Ok(api
        .create(&PostParams::default(), &serde_json::from_value(pod)?)
        .await?)
}

fn pod_json(name: &str, cpu: &str, extra_spec: Value) -> Value {
    let mut spec = json!({"containers": [{"name": "c", "image": "busybox",
        "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}]});
    if let (Some(s), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
        for (k, v) in extra {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
}

fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

async fn wait_bound(client: &kube::Client, ns: &str, name: &str) -> Result<String> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod = wait_named(api, name, &format!("pod {name} bound"), |p: &Pod| {
        node_of(p).is_some()
    })
    .await?;
    Ok(node_of(&pod).unwrap_or_default().to_string())
}

async fn wait_unschedulable(
    client: &kube::Client,
    ns: &str,
    name: &str,
    message: &str,
) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let want = message.to_string();
    wait_named(
        api,
        name,
        &format!("pod {name} Unschedulable: {message}"),
        move |p: &Pod| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .any(|c| {
                    c.type_ == "PodScheduled"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("Unschedulable")
                        && c.message.as_deref() == Some(want.as_str())
                })
        },
    )
    .await?;
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let pod = name.to_string();
    let want = message.to_string();
    wait_for(
        events,
        &format!("FailedScheduling event for {name}"),
        move |e: &Event| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(pod.as_str())
                && e.reason.as_deref() == Some("FailedScheduling")
                && e.type_.as_deref() == Some("Warning")
                && e.note.as_deref() == Some(want.as_str())
        },
    )
    .await?;
    Ok(())
}

async fn make_namespace(client: &kube::Client, name: &str) -> Result<()> {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": name}}))?,
    )
    .await?;
    // Pods need their ServiceAccount (ServiceAccount admission); the serviceaccount loop that
    // would create it does not run in these tests.
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), name);
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "default"}}))?,
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_spread_and_respect_constraints() -> Result<()> {
    let cluster = start(&["scheduler"], fast_options()).await?;
    let c = &cluster.client;
    make_namespace(c, "sched").await?;
    let mut sims = Vec::new();
    for n in ["a", "b", "c"] {
        sims.push(add_node(c, node_json(n, json!({}), json!([]), false), "2").await?);
    }
    for i in 0..6 {
        create_pod(
            c,
            "sched",
            pod_json(&format!("spread-{i}"), "100m", json!({})),
        )
        .await?;
    }
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..6 {
        *per_node
            .entry(wait_bound(c, "sched", &format!("spread-{i}")).await?)
            .or_default() += 1;
    }
    // LeastAllocated with the assume cache: the emptiest node wins each time.
    assert_eq!(
        per_node,
        BTreeMap::from([("a".into(), 2), ("b".into(), 2), ("c".into(), 2)]),
        "pods spread evenly"
    );
    // The simulated kubelet marked them Running.
    let pods: Api<Pod> = Api::namespaced(c.clone(), "sched");
    wait_named(pods.clone(), "spread-0", "spread-0 Running", |p: &Pod| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    })
    .await?;

    // A dedicated, tainted ssd node and a cordoned one.
    sims.push(
        add_node(
            c,
            node_json(
                "d",
                json!({"disk": "ssd"}),
                json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]),
                false,
            ),
            "2",
        )
        .await?,
    );
    sims.push(add_node(c, node_json("e", json!({}), json!([]), true), "2").await?);

    let toleration =
        json!([{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]);
    create_pod(
        c,
        "sched",
        pod_json(
            "ssd-ok",
            "100m",
            json!({"nodeSelector": {"disk": "ssd"}, "tolerations": toleration}),
        ),
    )
    .await?;
    assert_eq!(wait_bound(c, "sched", "ssd-ok").await?, "d");

    create_pod(
        c,
        "sched",
        pod_json(
            "ssd-untolerated",
            "100m",
            json!({"nodeSelector": {"disk": "ssd"}}),
        ),
    )
    .await?;
    wait_unschedulable(
        c,
        "sched",
        "ssd-untolerated",
        "0/5 nodes are available: 1 node(s) had untolerated taint {dedicated: db}, \
         1 node(s) were unschedulable, 3 node(s) didn't match Pod's node affinity/selector.",
    )
    .await?;

    // Required node affinity with matchFields picks the named node.
    create_pod(
        c,
        "sched",
        pod_json(
            "affinity",
            "100m",
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["b"]}]}]
            }}}}),
        ),
    )
    .await?;
    assert_eq!(wait_bound(c, "sched", "affinity").await?, "b");

    // Too big for every node; fits once a 4-cpu node registers.
    create_pod(c, "sched", pod_json("big", "3", json!({}))).await?;
    wait_unschedulable(
        c,
        "sched",
        "big",
        "0/5 nodes are available: 1 node(s) had untolerated taint {dedicated: db}, \
         1 node(s) were unschedulable, 3 Insufficient cpu.",
    )
    .await?;
    sims.push(add_node(c, node_json("f", json!({}), json!([]), false), "4").await?);
    assert_eq!(wait_bound(c, "sched", "big").await?, "f");

    // Host ports: the second pod claiming 8080/TCP cannot share a node with the first.
    let port = |name: &str| {
        let mut p = pod_json(
            name,
            "100m",
            json!({"nodeSelector": {"kubernetes.io/hostname": "a"}}),
        );
        p["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80, "hostPort": 8080}]);
        p
    };
    create_pod(c, "sched", port("port-1")).await?;
    assert_eq!(wait_bound(c, "sched", "port-1").await?, "a");
    create_pod(c, "sched", port("port-2")).await?;
    wait_unschedulable(
        c,
        "sched",
        "port-2",
        "0/6 nodes are available: 1 node(s) didn't have free ports for the requested pod ports, \
         1 node(s) had untolerated taint {dedicated: db}, 1 node(s) were unschedulable, \
         3 node(s) didn't match Pod's node affinity/selector.",
    )
    .await?;
    // Deleting the holder frees the port; the waiting pod is retried and bound.
    pods.delete("port-1", &DeleteParams::default().grace_period(0))
        .await?;
    assert_eq!(wait_bound(c, "sched", "port-2").await?, "a");
    drop(sims);
    Ok(())
}

fn has_taint(node: &Node, key: &str, effect: &str) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .any(|t| t.key == key && t.effect == effect)
}

fn condition<'a>(
    node: &'a Node,
    kind: &str,
) -> Option<&'a k8s_openapi::api::core::v1::NodeCondition> {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == kind))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_node_is_tainted_and_its_pods_evicted() -> Result<()> {
    let cluster = start(&["scheduler", "nodelifecycle"], fast_options()).await?;
    let c = &cluster.client;
    make_namespace(c, "life").await?;
    let sim_a = add_node(c, node_json("a", json!({}), json!([]), false), "2").await?;
    let _sim_b = add_node(c, node_json("b", json!({}), json!([]), false), "2").await?;
    let on_a = json!({"kubernetes.io/hostname": "a"});
    let short = json!([
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 1},
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 1},
    ]);
    let forever = json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}]);
    create_pod(
        c,
        "life",
        pod_json(
            "short",
            "100m",
            json!({"nodeSelector": on_a, "tolerations": short}),
        ),
    )
    .await?;
    create_pod(
        c,
        "life",
        pod_json(
            "forever",
            "100m",
            json!({"nodeSelector": on_a, "tolerations": forever}),
        ),
    )
    .await?;
    create_pod(
        c,
        "life",
        pod_json("default", "100m", json!({"nodeSelector": on_a})),
    )
    .await?;
    for p in ["short", "forever", "default"] {
        assert_eq!(wait_bound(c, "life", p).await?, "a");
    }

    // Node a goes silent.
    let silenced = Instant::now();
    sim_a.stop.cancel();
    let nodes: Api<Node> = Api::all(c.clone());
    let node = wait_named(
        nodes.clone(),
        "a",
        "node a Unknown and unreachable-tainted",
        |n: &Node| {
            condition(n, "Ready").is_some_and(|c| c.status == "Unknown")
                && has_taint(n, "node.kubernetes.io/unreachable", "NoExecute")
                && has_taint(n, "node.kubernetes.io/unreachable", "NoSchedule")
        },
    )
    .await?;
    assert!(
        silenced.elapsed() >= Duration::from_secs(2),
        "not before the grace period: {:?}",
        silenced.elapsed()
    );
    for kind in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
        let cond = condition(&node, kind).with_context(|| format!("{kind} condition"))?;
        assert_eq!(cond.status, "Unknown", "{kind}");
        assert_eq!(cond.reason.as_deref(), Some("NodeStatusUnknown"), "{kind}");
        assert_eq!(
            cond.message.as_deref(),
            Some("Kubelet stopped posting node status.")
        );
    }
    let b = nodes.get("b").await?;
    assert!(
        b.spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_none_or(Vec::is_empty),
        "b untouched: {b:?}"
    );

    // The pod tolerating for 1 s is evicted; the others stay (forever, and the 300 s default).
    let pods: Api<Pod> = Api::namespaced(c.clone(), "life");
    let evicted = wait_for(pods.clone(), "short evicted", |p: &Pod| {
        p.metadata.name.as_deref() == Some("short") && p.metadata.deletion_timestamp.is_some()
    });
    // Deleted outright would also do; a pod bound to a node is deleted gracefully.
    let gone = async {
        kube::runtime::wait::await_condition(
            pods.clone(),
            "short",
            kube::runtime::wait::conditions::is_deleted(""),
        )
        .await
    };
    tokio::select! {
        r = evicted => { r?; }
        _ = gone => {}
    }
    let events: Api<Event> = Api::namespaced(c.clone(), "life");
    wait_for(events, "TaintManagerEviction event", |e: &Event| {
        e.reason.as_deref() == Some("TaintManagerEviction")
            && e.note.as_deref() == Some("Marking for deletion Pod life/short")
    })
    .await?;
    let node_events: Api<Event> = Api::namespaced(c.clone(), "default");
    wait_for(node_events, "NodeNotReady event", |e: &Event| {
        e.reason.as_deref() == Some("NodeNotReady")
            && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("a")
    })
    .await?;
    for p in ["forever", "default"] {
        let pod = pods.get(p).await?;
        assert!(
            pod.metadata.deletion_timestamp.is_none(),
            "{p} kept: {pod:?}"
        );
    }

    // Node a comes back: fresh heartbeat and Ready=True; the taints go.
    let _sim_a = heartbeat(c, "a", true);
    nodes
        .patch_status(
            "a",
            &PatchParams::default(),
            &Patch::Merge(&ready_status("True")),
        )
        .await?;
    wait_named(nodes.clone(), "a", "node a untainted", |n: &Node| {
        condition(n, "Ready").is_some_and(|c| c.status == "True")
            && n.spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .is_none_or(Vec::is_empty)
    })
    .await?;

    // Node b reports Ready=False itself: not-ready taints instead.
    nodes
        .patch_status(
            "b",
            &PatchParams::default(),
            &Patch::Merge(&ready_status("False")),
        )
        .await?;
    wait_named(
        nodes.clone(),
        "b",
        "node b not-ready-tainted",
        |n: &Node| {
            has_taint(n, "node.kubernetes.io/not-ready", "NoExecute")
                && has_taint(n, "node.kubernetes.io/not-ready", "NoSchedule")
                && !has_taint(n, "node.kubernetes.io/unreachable", "NoExecute")
        },
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_ipam_gives_distinct_pod_cidrs() -> Result<()> {
    let cluster = start(&["nodeipam"], fast_options()).await?;
    let c = &cluster.client;
    let nodes: Api<Node> = Api::all(c.clone());
    let names = ["n0", "n1", "n2", "n3"];
    let creates = names.iter().map(|n| {
        let nodes = nodes.clone();
        async move {
            let node: Node = serde_json::from_value(node_json(n, json!({}), json!([]), false))?;
            nodes.create(&PostParams::default(), &node).await?;
            anyhow::Ok(())
        }
    });
    for r in futures::future::join_all(creates).await {
        r?;
    }
    let mut cidrs: HashMap<String, String> = HashMap::new();
    for n in names {
        let node = wait_named(nodes.clone(), n, &format!("{n} podCIDR"), |n: &Node| {
            n.spec.as_ref().and_then(|s| s.pod_cidr.as_ref()).is_some()
        })
        .await?;
        let spec = node.spec.context("spec")?;
        let cidr = spec.pod_cidr.context("podCIDR")?;
        assert_eq!(spec.pod_cidrs, Some(vec![cidr.clone()]), "podCIDRs of {n}");
        cidrs.insert(n.to_string(), cidr);
    }
    let mut all: Vec<&String> = cidrs.values().collect();
    all.sort();
    assert_eq!(
        all,
        vec![
            "10.244.0.0/24",
            "10.244.1.0/24",
            "10.244.2.0/24",
            "10.244.3.0/24"
        ],
        "distinct, first free: {cidrs:?}"
    );
    // A deleted node's range is reused by the next node (first free).
    let freed = cidrs["n1"].clone();
    nodes.delete("n1", &DeleteParams::default()).await?;
    kube::runtime::wait::await_condition(
        nodes.clone(),
        "n1",
        kube::runtime::wait::conditions::is_deleted(""),
    )
    .await?;
    let node: Node = serde_json::from_value(node_json("n4", json!({}), json!([]), false))?;
    nodes.create(&PostParams::default(), &node).await?;
    let n4 = wait_named(nodes.clone(), "n4", "n4 podCIDR", |n: &Node| {
        n.spec.as_ref().and_then(|s| s.pod_cidr.as_ref()).is_some()
    })
    .await?;
    assert_eq!(n4.spec.and_then(|s| s.pod_cidr), Some(freed));
    Ok(())
}

/// Throughput of the scheduler: 1,000 pods over 100 simulated nodes (no heartbeats needed:
/// only the scheduler runs). `cargo test -p oxlet-controlplane --test controllers_scheduling
/// -- --ignored --nocapture throughput`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; prints pods bound per second"]
async fn throughput_1000_pods_100_nodes() -> Result<()> {
    let cluster = start(&["scheduler"], fast_options()).await?;
    let c = &cluster.client;
    make_namespace(c, "bench").await?;
    for i in 0..100 {
        register(
            c,
            node_json(&format!("node-{i:03}"), json!({}), json!([]), false),
            "32",
        )
        .await?;
    }
    let pods: Api<Pod> = Api::namespaced(c.clone(), "bench");
    let started = Instant::now();
    let bound = {
        let pods = pods.clone();
        async move {
            let mut seen = std::collections::HashSet::new();
            let stream = watcher(pods, watcher::Config::default())
                .default_backoff()
                .applied_objects();
            let mut stream = std::pin::pin!(stream);
            while let Some(Ok(p)) = stream.next().await {
                if node_of(&p).is_some() {
                    seen.insert(p.metadata.name.clone().unwrap_or_default());
                    if seen.len() == 1000 {
                        return Some(Instant::now());
                    }
                }
            }
            None
        }
    };
    let bound = tokio::spawn(bound);
    let mut creates = futures::stream::iter(0..1000)
        .map(|i| {
            let pods = pods.clone();
            async move {
                let pod: Pod =
                    serde_json::from_value(pod_json(&format!("p-{i:04}"), "10m", json!({})))?;
                pods.create(&PostParams::default(), &pod).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(16);
    while let Some(r) = creates.next().await {
        r?;
    }
    let created = started.elapsed();
    let done = tokio::time::timeout(Duration::from_secs(300), bound)
        .await
        .context("1000 pods not bound within 300 s")??
        .context("watch ended")?;
    let total = done - started;
    println!(
        "created 1000 pods in {created:?}; all bound after {total:?}: {:.0} pods/s",
        1000.0 / total.as_secs_f64()
    );
    Ok(())
}

//! The workload controllers (replicaset, deployment, daemonset, endpointslice, endpoints,
//! namespace, garbagecollector, serviceaccount) against the real API server, started
//! in-process on a free loopback port with its own SQLite data dir. No kubelet or scheduler
//! runs: a fake kubelet task binds pods to nodes (DaemonSet pods to the node their affinity
//! names), marks them Running+Ready with an IP, and confirms graceful deletions.

mod support;
use support::Cluster;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, ResourceExt};
use oxlet_controlplane::controllers::{daemonset::pod_node, ControllerOptions};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const LOOPS: &[&str] = &[
    "replicaset",
    "deployment",
    "daemonset",
    "endpointslice",
    "endpoints",
    "namespace",
    "garbagecollector",
    "serviceaccount",
];
const DEADLINE: Duration = Duration::from_secs(60);

/// An API server with the loops, a fake kubelet and one node.
async fn start() -> Result<Cluster> {
    let mut cluster = support::start(LOOPS, ControllerOptions::default()).await?;
    let (client, shutdown) = (cluster.client.clone(), cluster.shutdown.clone());
    cluster.tasks.spawn(fake_kubelet(client.clone(), shutdown));
    let nodes: Api<Node> = Api::all(client);
    nodes
        .create(&PostParams::default(), &node("node-1", json!({})))
        .await?;
    Ok(cluster)
}

fn node(name: &str, labels: Value) -> Node {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))
        .expect("valid node")
}

/// Plays scheduler and kubelet: binds unbound pods, reports them Running and Ready with an IP
/// once, and confirms graceful deletion of bound pods.
async fn fake_kubelet(client: kube::Client, shutdown: CancellationToken) {
    let ips = AtomicU32::new(1);
    let api: Api<Pod> = Api::all(client.clone());
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .applied_objects();
    futures::pin_mut!(stream);
    loop {
        let pod = tokio::select! {
            _ = shutdown.cancelled() => return,
            ev = stream.next() => match ev {
                Some(Ok(p)) => p,
                Some(Err(_)) => continue,
                None => return,
            },
        };
        let ns = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let bound = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        if pod.metadata.deletion_timestamp.is_some() {
            if bound.is_some() {
                let _ = pods
                    .delete(&name, &DeleteParams::default().grace_period(0))
                    .await;
            }
            continue;
        }
        let Some(node) = bound else {
            let target = pod_node(&pod).unwrap_or_else(|| "node-1".into());
            let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name}, "target": {"kind": "Node", "name": target}});
            let _ = pods
                .create_subresource::<Value, Value>(
                    "binding",
                    &name,
                    &PostParams::default(),
                    &binding,
                )
                .await;
            continue;
        };
        let _ = node;
        let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
        if phase.as_deref() != Some("Running") {
            let n = ips.fetch_add(1, Ordering::Relaxed);
            let ip = format!("10.244.{}.{}", n / 250, n % 250 + 1);
            let now = k8s_openapi::jiff::Timestamp::now().to_string();
            let status = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}]}});
            let _ = pods
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                .await;
        }
    }
}

/// Polls `check` until it returns `Ok(Ok(v))` or [`DEADLINE`] passes.
async fn eventually<T, F, Fut>(what: &str, check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<std::result::Result<T, String>>>,
{
    support::eventually(what, DEADLINE, Duration::from_millis(200), check).await
}

fn deployment(name: &str, replicas: i32, image: &str, strategy: Value) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": strategy,
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": image, "ports": [{"name": "http", "containerPort": 8080}]}]}},
        }
    }))
    .expect("valid deployment")
}

async fn deployment_state(api: &Api<Deployment>, name: &str) -> Result<(Deployment, String)> {
    let d = api.get(name).await?;
    let st = d.status.clone().unwrap_or_default();
    let desc = format!(
        "generation {:?} observed {:?} replicas {:?} updated {:?} available {:?} revision {:?}",
        d.metadata.generation,
        st.observed_generation,
        st.replicas,
        st.updated_replicas,
        st.available_replicas,
        d.annotations().get("deployment.kubernetes.io/revision")
    );
    Ok((d, desc))
}

/// What `kubectl rollout status` waits for.
async fn rolled_out(
    client: &kube::Client,
    ns: &str,
    name: &str,
    replicas: i32,
) -> Result<Deployment> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    eventually(
        &format!("deployment {ns}/{name} rolled out with {replicas}"),
        || async {
            let (d, desc) = deployment_state(&api, name).await?;
            let st = d.status.clone().unwrap_or_default();
            let done = st.observed_generation >= d.metadata.generation
                && st.updated_replicas == Some(replicas)
                && st.replicas == Some(replicas)
                && st.available_replicas == Some(replicas);
            Ok(if done { Ok(d) } else { Err(desc) })
        },
    )
    .await
}

async fn owned_rs(
    client: &kube::Client,
    ns: &str,
    d: &Deployment,
) -> Result<BTreeMap<String, (i32, String)>> {
    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
    let uid = d.metadata.uid.clone().unwrap_or_default();
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|r| r.owner_references().iter().any(|o| o.uid == uid))
        .map(|r| {
            let rev = r
                .annotations()
                .get("deployment.kubernetes.io/revision")
                .cloned()
                .unwrap_or_default();
            (
                r.name_any(),
                (r.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0), rev),
            )
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_scales_and_rolls() -> Result<()> {
    let c = start().await?;
    let ns = "deploy";
    support::create_namespace(&c.client, ns).await?;
    let api: Api<Deployment> = Api::namespaced(c.client.clone(), ns);
    let strategy =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}});
    let mut d = deployment("web", 3, "img:v1", strategy);
    d.metadata.annotations =
        Some([("kubernetes.io/change-cause".to_string(), "v1".to_string())].into());
    api.create(&PostParams::default(), &d).await?;
    let d = rolled_out(&c.client, ns, "web", 3).await?;
    assert_eq!(
        d.annotations()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("1")
    );
    let conds = d
        .status
        .clone()
        .unwrap_or_default()
        .conditions
        .unwrap_or_default();
    let reason = |t: &str| {
        conds
            .iter()
            .find(|c| c.type_ == t)
            .and_then(|c| c.reason.clone())
    };
    assert_eq!(
        reason("Available").as_deref(),
        Some("MinimumReplicasAvailable")
    );
    assert_eq!(
        reason("Progressing").as_deref(),
        Some("NewReplicaSetAvailable")
    );

    // Scale up then down.
    api.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 5}})),
    )
    .await?;
    rolled_out(&c.client, ns, "web", 5).await?;
    api.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 2}})),
    )
    .await?;
    let d = rolled_out(&c.client, ns, "web", 2).await?;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), ns);
    eventually("2 live pods", || async {
        let live = pods
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .count();
        Ok(if live == 2 {
            Ok(())
        } else {
            Err(format!("{live} live pods"))
        })
    })
    .await?;
    let first = owned_rs(&c.client, ns, &d).await?;
    assert_eq!(first.len(), 1, "{first:?}");

    // Template change: a new ReplicaSet at revision 2, the old one scaled to 0.
    api.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({
        "metadata": {"annotations": {"kubernetes.io/change-cause": "v2"}},
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "img:v2"}]}}}})),
    )
    .await?;
    let d = rolled_out(&c.client, ns, "web", 2).await?;
    assert_eq!(
        d.annotations()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("2")
    );
    let all = eventually("old replicaset scaled to 0", || async {
        let all = owned_rs(&c.client, ns, &d).await?;
        let ok = all.len() == 2
            && all.values().any(|(n, r)| *n == 0 && r == "1")
            && all.values().any(|(n, r)| *n == 2 && r == "2");
        Ok(if ok { Ok(all) } else { Err(format!("{all:?}")) })
    })
    .await?;
    // Rollout history reads the change-cause from the ReplicaSets.
    let rs_api: Api<ReplicaSet> = Api::namespaced(c.client.clone(), ns);
    for name in all.keys() {
        let rs = rs_api.get(name).await?;
        let rev = rs
            .annotations()
            .get("deployment.kubernetes.io/revision")
            .cloned()
            .unwrap_or_default();
        let cause = rs
            .annotations()
            .get("kubernetes.io/change-cause")
            .cloned()
            .unwrap_or_default();
        assert_eq!(cause, format!("v{rev}"), "replicaset {name}");
        assert!(rs.labels().contains_key("pod-template-hash"));
    }

    // Undo as kubectl does it: the old template back; the old ReplicaSet becomes revision 3.
    let old_name = all
        .iter()
        .find(|(_, (_, r))| r == "1")
        .map(|(n, _)| n.clone())
        .context("revision 1")?;
    let mut template = rs_api
        .get(&old_name)
        .await?
        .spec
        .and_then(|s| s.template)
        .context("template")?;
    if let Some(l) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        l.remove("pod-template-hash");
    }
    api.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"template": template}})),
    )
    .await?;
    rolled_out(&c.client, ns, "web", 2).await?;
    eventually("rolled back replicaset at revision 3", || async {
        let rs = rs_api.get(&old_name).await?;
        let rev = rs
            .annotations()
            .get("deployment.kubernetes.io/revision")
            .cloned();
        let replicas = rs.spec.as_ref().and_then(|s| s.replicas);
        Ok(if rev.as_deref() == Some("3") && replicas == Some(2) {
            Ok(())
        } else {
            Err(format!("{rev:?} {replicas:?}"))
        })
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_recreate_and_paused() -> Result<()> {
    let c = start().await?;
    let ns = "recreate";
    support::create_namespace(&c.client, ns).await?;
    let api: Api<Deployment> = Api::namespaced(c.client.clone(), ns);
    api.create(
        &PostParams::default(),
        &deployment("job", 2, "img:v1", json!({"type": "Recreate"})),
    )
    .await?;
    let d = rolled_out(&c.client, ns, "job", 2).await?;
    api.patch("job", &PatchParams::default(), &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "img:v2"}]}}}}))).await?;
    let d2 = rolled_out(&c.client, ns, "job", 2).await?;
    assert_eq!(
        d2.annotations()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("2")
    );
    let all = owned_rs(&c.client, ns, &d).await?;
    assert_eq!(all.values().filter(|(n, _)| *n == 0).count(), 1, "{all:?}");

    // Paused: a template change creates no ReplicaSet until resumed.
    api.patch(
        "job",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"paused": true}})),
    )
    .await?;
    api.patch("job", &PatchParams::default(), &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "img:v3"}]}}}}))).await?;
    eventually("paused condition", || async {
        let (d, desc) = deployment_state(&api, "job").await?;
        let paused = d
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.reason.as_deref() == Some("DeploymentPaused"));
        Ok(if paused { Ok(()) } else { Err(desc) })
    })
    .await?;
    assert_eq!(
        owned_rs(&c.client, ns, &d).await?.len(),
        2,
        "no new ReplicaSet while paused"
    );
    api.patch(
        "job",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"paused": false}})),
    )
    .await?;
    let d3 = rolled_out(&c.client, ns, "job", 2).await?;
    assert_eq!(
        d3.annotations()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("3")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_follows_nodes() -> Result<()> {
    let c = start().await?;
    let ns = "ds";
    support::create_namespace(&c.client, ns).await?;
    let nodes: Api<Node> = Api::all(c.client.clone());
    nodes
        .create(
            &PostParams::default(),
            &node("edge-1", json!({"role": "edge"})),
        )
        .await?;
    let mut tainted = node("edge-tainted", json!({"role": "edge"}));
    tainted.spec = Some(serde_json::from_value(
        json!({"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}),
    )?);
    nodes.create(&PostParams::default(), &tainted).await?;
    let api: Api<DaemonSet> = Api::namespaced(c.client.clone(), ns);
    let ds: DaemonSet = serde_json::from_value(json!({
        "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}},
                "spec": {"nodeSelector": {"role": "edge"}, "containers": [{"name": "c", "image": "agent:v1"}]}}}
    }))?;
    api.create(&PostParams::default(), &ds).await?;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), ns);
    let placed = || async {
        let mut on: Vec<String> = pods
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()))
            .collect();
        on.sort();
        Ok::<_, anyhow::Error>(on)
    };
    let want = |w: Vec<&'static str>| {
        let placed = &placed;
        async move {
            eventually(&format!("daemon pods on {w:?}"), || async {
                let on = placed().await?;
                Ok(if on == w {
                    Ok(())
                } else {
                    Err(format!("{on:?}"))
                })
            })
            .await
        }
    };
    want(vec!["edge-1"]).await?;
    nodes
        .create(
            &PostParams::default(),
            &node("edge-2", json!({"role": "edge"})),
        )
        .await?;
    want(vec!["edge-1", "edge-2"]).await?;
    nodes.delete("edge-1", &DeleteParams::default()).await?;
    want(vec!["edge-2"]).await?;
    eventually("daemonset status", || async {
        let st = api.get("agent").await?.status.unwrap_or_default();
        let ok = st.desired_number_scheduled == 1
            && st.number_ready == 1
            && st.updated_number_scheduled == Some(1)
            && st.number_available == Some(1);
        Ok(if ok { Ok(()) } else { Err(format!("{st:?}")) })
    })
    .await?;
    // Template change rolls the pod with a new controller-revision-hash.
    let old_hash = pods
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter_map(|p| p.labels().get("controller-revision-hash").cloned())
        .next()
        .context("hash label")?;
    api.patch("agent", &PatchParams::default(), &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "agent:v2"}]}}}}))).await?;
    eventually("rolled daemon pod", || async {
        let items = pods.list(&ListParams::default()).await?.items;
        let hashes: Vec<(String, Option<String>)> = items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| {
                (
                    p.labels()
                        .get("controller-revision-hash")
                        .cloned()
                        .unwrap_or_default(),
                    p.spec.as_ref().and_then(|s| s.node_name.clone()),
                )
            })
            .collect();
        let ok = hashes.len() == 1
            && hashes[0].0 != old_hash
            && hashes[0].1.as_deref() == Some("edge-2");
        Ok(if ok {
            Ok(())
        } else {
            Err(format!("{hashes:?}"))
        })
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpointslices_follow_readiness() -> Result<()> {
    let c = start().await?;
    let ns = "eps";
    support::create_namespace(&c.client, ns).await?;
    let deploys: Api<Deployment> = Api::namespaced(c.client.clone(), ns);
    deploys
        .create(
            &PostParams::default(),
            &deployment("web", 2, "img:v1", json!({})),
        )
        .await?;
    let svcs: Api<Service> = Api::namespaced(c.client.clone(), ns);
    let svc: Service = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}))?;
    svcs.create(&PostParams::default(), &svc).await?;
    let slices: Api<EndpointSlice> = Api::namespaced(c.client.clone(), ns);
    let lp = ListParams::default().labels("kubernetes.io/service-name=web");
    // (ip -> (ready, serving, terminating)), ports
    let state = || async {
        let mut eps = BTreeMap::new();
        let mut ports = Vec::new();
        for s in slices.list(&lp).await?.items {
            assert_eq!(
                s.labels()
                    .get("endpointslice.kubernetes.io/managed-by")
                    .map(String::as_str),
                Some("endpointslice-controller.k8s.io")
            );
            ports.extend(s.ports.iter().flatten().filter_map(|p| p.port));
            for e in s.endpoints {
                let c = e.conditions.unwrap_or_default();
                let name = e.target_ref.and_then(|t| t.name).unwrap_or_default();
                eps.insert(
                    name,
                    (
                        c.ready == Some(true),
                        c.serving == Some(true),
                        c.terminating == Some(true),
                    ),
                );
            }
        }
        Ok::<_, anyhow::Error>((eps, ports))
    };
    let (eps, ports) = eventually("2 ready endpoints", || async {
        let (eps, ports) = state().await?;
        let ok = eps.len() == 2 && eps.values().all(|c| *c == (true, true, false));
        Ok(if ok {
            Ok((eps, ports))
        } else {
            Err(format!("{eps:?}"))
        })
    })
    .await?;
    assert!(
        ports.iter().all(|p| *p == 8080),
        "named targetPort resolved: {ports:?}"
    );
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), ns);
    let first = eps.keys().next().cloned().context("an endpoint")?;
    pods.patch_status(
        &first,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}})),
    )
    .await?;
    eventually("not-ready endpoint", || async {
        let (eps, _) = state().await?;
        Ok(if eps.get(&first) == Some(&(false, false, false)) {
            Ok(())
        } else {
            Err(format!("{eps:?}"))
        })
    })
    .await?;
    let endpoints: Api<Endpoints> = Api::namespaced(c.client.clone(), ns);
    eventually("legacy endpoints with one ready, one not-ready", || async {
        let ep = endpoints.get_opt("web").await?;
        let subsets = ep.and_then(|e| e.subsets).unwrap_or_default();
        let ready: usize = subsets
            .iter()
            .map(|s| s.addresses.as_ref().map_or(0, Vec::len))
            .sum();
        let not_ready: usize = subsets
            .iter()
            .map(|s| s.not_ready_addresses.as_ref().map_or(0, Vec::len))
            .sum();
        Ok(if (ready, not_ready) == (1, 1) {
            Ok(())
        } else {
            Err(format!("{subsets:?}"))
        })
    })
    .await?;
    // Deleting a ready pod: its endpoint turns terminating (the fake kubelet confirms
    // deletion at once, so also accept it gone and replaced).
    let second = eps.keys().nth(1).cloned().context("a second endpoint")?;
    pods.delete(&second, &DeleteParams::default()).await?;
    eventually("deleted pod leaves the slice", || async {
        let (eps, _) = state().await?;
        let gone_or_terminating = eps.get(&second).is_none_or(|c| c.2);
        Ok(if gone_or_terminating && eps.len() >= 2 {
            Ok(())
        } else {
            Err(format!("{eps:?}"))
        })
    })
    .await?;
    Ok(())
}

/// Creates `n` objects of one kind in `ns` from `make(i)` (a JSON object without namespace).
async fn create_many(
    client: &kube::Client,
    ns: &str,
    ar: &kube::discovery::ApiResource,
    n: usize,
    make: impl Fn(usize) -> Value,
) -> Result<()> {
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), ns, ar);
    let creates = (0..n).map(|i| {
        let mut obj = make(i);
        obj["apiVersion"] = json!(ar.api_version);
        obj["kind"] = json!(ar.kind);
        let api = api.clone();
        async move {
            let obj: kube::api::DynamicObject = serde_json::from_value(obj)?;
            api.create(&PostParams::default(), &obj)
                .await
                .with_context(|| format!("create {}", obj.name_any()))?;
            anyhow::Ok(())
        }
    });
    let mut stream = futures::stream::iter(creates).buffer_unordered(8);
    while let Some(r) = stream.next().await {
        r?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_deletion_removes_everything() -> Result<()> {
    use kube::api::DynamicObject;
    use kube::discovery::{verbs, ApiResource, Discovery, Scope};
    let c = start().await?;
    let ns = "doomed";
    support::create_namespace(&c.client, ns).await?;
    let ar = |group: &str, version: &str, kind: &str, plural: &str| ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: if group.is_empty() {
            version.into()
        } else {
            format!("{group}/{version}")
        },
        kind: kind.into(),
        plural: plural.into(),
    };
    // 200 objects of eight kinds; the deployments add ReplicaSets and pods, the services
    // EndpointSlices and Endpoints, the controllers a default ServiceAccount and CA bundle.
    let name = |p: &str, i: usize| json!({"metadata": {"name": format!("{p}-{i}"), "labels": {"batch": "doomed"}}});
    type Make = Box<dyn Fn(usize) -> Value>;
    let kinds: Vec<(ApiResource, usize, Make)> = vec![
        (
            ar("", "v1", "ConfigMap", "configmaps"),
            50,
            Box::new(move |i| {
                let mut o = name("cm", i);
                o["data"] = json!({"k": "v"});
                o
            }),
        ),
        (
            ar("", "v1", "Secret", "secrets"),
            40,
            Box::new(move |i| {
                let mut o = name("s", i);
                o["stringData"] = json!({"k": "v"});
                o
            }),
        ),
        (
            ar("", "v1", "Service", "services"),
            20,
            Box::new(move |i| {
                let mut o = name("svc", i);
                o["spec"] = json!({"selector": {"app": format!("d-{i}")}, "ports": [{"port": 80}]});
                o
            }),
        ),
        (
            ar("", "v1", "ServiceAccount", "serviceaccounts"),
            20,
            Box::new(move |i| name("sa", i)),
        ),
        (
            ar("", "v1", "Pod", "pods"),
            20,
            Box::new(move |i| {
                let mut o = name("p", i);
                o["spec"] = json!({"containers": [{"name": "c", "image": "i"}]});
                o
            }),
        ),
        (
            ar("apps", "v1", "Deployment", "deployments"),
            20,
            Box::new(move |i| {
                serde_json::to_value(deployment(&format!("d-{i}"), 1, "img", json!({})))
                    .unwrap_or_default()
            }),
        ),
        (
            ar("rbac.authorization.k8s.io", "v1", "Role", "roles"),
            15,
            Box::new(move |i| {
                let mut o = name("role", i);
                o["rules"] = json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]);
                o
            }),
        ),
        (
            ar(
                "rbac.authorization.k8s.io",
                "v1",
                "RoleBinding",
                "rolebindings",
            ),
            15,
            Box::new(move |i| {
                let mut o = name("rb", i);
                o["roleRef"] = json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": format!("role-{i}")});
                o["subjects"] =
                    json!([{"kind": "ServiceAccount", "name": format!("sa-{i}"), "namespace": ns}]);
                o
            }),
        ),
    ];
    let total: usize = kinds.iter().map(|(_, n, _)| n).sum();
    assert_eq!(total, 200);
    for (ar, n, make) in &kinds {
        create_many(&c.client, ns, ar, *n, make).await?;
    }
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), ns);
    eventually("deployment pods running", || async {
        let n = pods
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        Ok(if n >= 40 {
            Ok(())
        } else {
            Err(format!("{n} pods running"))
        })
    })
    .await?;
    let nss: Api<Namespace> = Api::all(c.client.clone());
    nss.delete(ns, &DeleteParams::default()).await?;
    eventually("namespace gone", || async {
        Ok(match nss.get_opt(ns).await? {
            None => Ok(()),
            Some(n) => {
                let left = pods.list(&ListParams::default()).await?.items.len();
                Err(format!(
                    "phase {:?}, {left} pods left",
                    n.status.and_then(|s| s.phase)
                ))
            }
        })
    })
    .await?;
    // Nothing of any namespaced kind the server serves is left in it.
    let discovery = Discovery::new(c.client.clone()).run().await?;
    let mut left = Vec::new();
    let mut kinds_checked = 0;
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if caps.scope != Scope::Namespaced || !caps.supports_operation(verbs::LIST) {
                continue;
            }
            kinds_checked += 1;
            let api: Api<DynamicObject> = Api::namespaced_with(c.client.clone(), ns, &ar);
            for o in api.list(&ListParams::default()).await?.items {
                left.push(format!("{}/{}", ar.plural, o.name_any()));
            }
        }
    }
    assert!(
        kinds_checked >= 15,
        "discovery listed {kinds_checked} namespaced kinds"
    );
    assert!(left.is_empty(), "left behind: {left:?}");
    Ok(())
}

async fn rs_with_pods(client: &kube::Client, ns: &str, name: &str) -> Result<Vec<String>> {
    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
    let rs: ReplicaSet = serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"rs": name}},
            "template": {"metadata": {"labels": {"rs": name}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}))?;
    api.create(&PostParams::default(), &rs).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels(&format!("rs={name}"));
    eventually(&format!("2 ready pods of {name}"), || async {
        let st = api.get(name).await?.status.unwrap_or_default();
        let names: Vec<String> = pods
            .list(&lp)
            .await?
            .items
            .iter()
            .map(|p| p.name_any())
            .collect();
        Ok(if st.ready_replicas == Some(2) && names.len() == 2 {
            Ok(names)
        } else {
            Err(format!("{st:?} {names:?}"))
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collection_modes() -> Result<()> {
    let c = start().await?;
    let ns = "gc";
    support::create_namespace(&c.client, ns).await?;
    let rss: Api<ReplicaSet> = Api::namespaced(c.client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), ns);
    let count = |sel: String| {
        let pods = pods.clone();
        async move {
            Ok::<_, anyhow::Error>(pods.list(&ListParams::default().labels(&sel)).await?.items)
        }
    };

    // Background: the owner goes at once, then its pods.
    rs_with_pods(&c.client, ns, "bg").await?;
    rss.delete("bg", &DeleteParams::background()).await?;
    eventually("background: pods collected", || async {
        let left = count("rs=bg".into()).await?.len();
        Ok(if left == 0 && rss.get_opt("bg").await?.is_none() {
            Ok(())
        } else {
            Err(format!("{left} pods"))
        })
    })
    .await?;

    // Foreground: the owner waits (deletionTimestamp) until its pods are gone.
    rs_with_pods(&c.client, ns, "fg").await?;
    rss.delete("fg", &DeleteParams::foreground()).await?;
    eventually("foreground: pods then owner", || async {
        let left = count("rs=fg".into()).await?.len();
        let owner = rss.get_opt("fg").await?;
        if let Some(o) = &owner {
            if left == 0 && o.finalizers().is_empty() {
                return Ok(Err("finalizer gone but owner remains".into()));
            }
        }
        Ok(if owner.is_none() && left == 0 {
            Ok(())
        } else {
            Err(format!(
                "{left} pods, owner {:?}",
                owner.map(|o| o.finalizers().to_vec())
            ))
        })
    })
    .await?;

    // Orphan: the pods stay, without the owner reference.
    let names = rs_with_pods(&c.client, ns, "or").await?;
    rss.delete("or", &DeleteParams::orphan()).await?;
    eventually("orphan: owner gone, pods kept", || async {
        let left = count("rs=or".into()).await?;
        let refs: usize = left.iter().map(|p| p.owner_references().len()).sum();
        let ok = rss.get_opt("or").await?.is_none() && left.len() == 2 && refs == 0;
        Ok(if ok {
            Ok(())
        } else {
            Err(format!("{} pods, {refs} refs", left.len()))
        })
    })
    .await?;
    let left: Vec<String> = count("rs=or".into())
        .await?
        .iter()
        .map(|p| p.name_any())
        .collect();
    let mut want = names.clone();
    want.sort();
    let mut got = left;
    got.sort();
    assert_eq!(got, want, "the orphaned pods are the same pods");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_service_account_appears_and_returns() -> Result<()> {
    let c = start().await?;
    support::create_namespace(&c.client, "fresh").await?;
    let sas: Api<ServiceAccount> = Api::namespaced(c.client.clone(), "fresh");
    let wait = || {
        eventually("default serviceaccount", || async {
            Ok(match sas.get_opt("default").await? {
                Some(sa) if sa.metadata.deletion_timestamp.is_none() => {
                    Ok(sa.metadata.uid.unwrap_or_default())
                }
                other => Err(format!("{other:?}")),
            })
        })
    };
    let first = wait().await?;
    sas.delete("default", &DeleteParams::default()).await?;
    eventually("default serviceaccount recreated", || async {
        Ok(match sas.get_opt("default").await? {
            Some(sa) if sa.metadata.uid.as_deref() != Some(first.as_str()) => Ok(()),
            other => Err(format!("{:?}", other.map(|s| s.metadata.uid))),
        })
    })
    .await?;
    Ok(())
}

//! Simulated kubelets for controller tests and benchmarks: test code registers Node objects,
//! renews their Leases on a timer and reports bound pods Running and Ready (confirming their
//! graceful deletions), for any number of nodes from one pod watch, so the scheduler and
//! controllers can be driven without containerd. A node can be silenced (its kubelet "dies":
//! no more Lease renewals, pods left as they are) and revived.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

/// Namespace of node Leases.
const LEASE_NAMESPACE: &str = "kube-node-lease";
/// Pod status writes in flight at once.
const POD_WRITES_IN_FLIGHT: usize = 32;

/// What every simulated node reports.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// How often Leases are renewed (a kubelet renews every 10 s, a quarter of the 40 s lease).
    pub renew_interval: Duration,
    /// `status.capacity`/`allocatable` cpu.
    pub cpu: String,
    /// `status.capacity`/`allocatable` memory.
    pub memory: String,
    /// `status.capacity`/`allocatable` pods.
    pub pods: String,
    /// Whether bound pods are reported Running and Ready and their deletions confirmed; off,
    /// the nodes only heartbeat (pods stay as the scheduler left them).
    pub run_pods: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            renew_interval: Duration::from_millis(500),
            cpu: "4".to_string(),
            memory: "8Gi".to_string(),
            pods: "110".to_string(),
            run_pods: true,
        }
    }
}

#[derive(Default)]
struct State {
    /// Nodes whose kubelet runs.
    alive: BTreeSet<String>,
    /// Pods (uid) with a status write or deletion in flight.
    busy: HashSet<String>,
    next_ip: u32,
}

/// Simulated kubelets; every task stops when this is dropped.
pub struct SimNodes {
    client: kube::Client,
    config: SimConfig,
    state: Arc<Mutex<State>>,
    pods: Store<Pod>,
    revived: Arc<Notify>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for SimNodes {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn now_micro() -> Value {
    serde_json::to_value(MicroTime(Timestamp::now())).unwrap_or(Value::Null)
}

fn now_time() -> String {
    Timestamp::now().to_string()
}

impl SimNodes {
    /// Starts the pod watch and the Lease renewal timer; nodes are added with [`SimNodes::add`].
    pub fn start(client: kube::Client, config: SimConfig) -> Self {
        let state: Arc<Mutex<State>> = Arc::default();
        let revived = Arc::new(Notify::new());
        let (pods, writer) = reflector::store::<Pod>();
        let events = reflector::reflector(
            writer,
            watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()).default_backoff(),
        )
        .touched_objects();
        let pod_task = tokio::spawn(pod_loop(
            client.clone(),
            state.clone(),
            pods.clone(),
            revived.clone(),
            events,
            config.run_pods,
        ));
        let lease_task = tokio::spawn(lease_loop(
            client.clone(),
            state.clone(),
            config.renew_interval,
        ));
        Self {
            client,
            config,
            state,
            pods,
            revived,
            tasks: vec![pod_task, lease_task],
        }
    }

    /// Registers node `name` (labels plus `kubernetes.io/hostname`), posts a Ready status,
    /// creates its Lease and starts its kubelet.
    pub async fn add(&self, name: &str, labels: &[(&str, &str)]) -> Result<()> {
        let mut l: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        l.insert("kubernetes.io/hostname".into(), name.into());
        l.insert("kubernetes.io/os".into(), "linux".into());
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": l},
            "spec": {},
        }))?;
        let nodes: Api<Node> = Api::all(self.client.clone());
        nodes
            .create(&PostParams::default(), &node)
            .await
            .with_context(|| format!("create node {name}"))?;
        self.post_ready(name).await?;
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        let lease: Lease = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": LEASE_NAMESPACE},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now_micro()},
        }))?;
        match leases.create(&PostParams::default(), &lease).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => renew(&leases, name).await?,
            Err(e) => return Err(e).with_context(|| format!("create lease {name}")),
        }
        self.lock().alive.insert(name.to_string());
        self.revived.notify_one();
        Ok(())
    }

    /// Posts the node's status: capacity and the four conditions, Ready=True.
    async fn post_ready(&self, name: &str) -> Result<()> {
        let t = now_time();
        let cond = |kind: &str, status: &str, reason: &str, message: &str| {
            json!({"type": kind, "status": status, "reason": reason, "message": message,
                "lastHeartbeatTime": t, "lastTransitionTime": t})
        };
        let res =
            json!({"cpu": self.config.cpu, "memory": self.config.memory, "pods": self.config.pods});
        let status = json!({"status": {
            "capacity": res,
            "allocatable": res,
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "addresses": [{"type": "Hostname", "address": name}],
            "nodeInfo": {"kubeletVersion": "v1.33.0", "containerRuntimeVersion": "sim://1.0",
                "operatingSystem": "linux", "architecture": "amd64", "osImage": "simulated",
                "kernelVersion": "", "kubeProxyVersion": "", "machineID": "", "systemUUID": "", "bootID": ""},
        }});
        Api::<Node>::all(self.client.clone())
            .patch_status(name, &PatchParams::default(), &Patch::Strategic(&status))
            .await
            .with_context(|| format!("post status of node {name}"))?;
        Ok(())
    }

    /// Stops node `name`'s kubelet: no Lease renewals, its pods are left as they are.
    pub fn silence(&self, name: &str) {
        self.lock().alive.remove(name);
    }

    /// Starts node `name`'s kubelet again: a fresh Lease and Ready status, and its pods are
    /// handled again (pending deletions confirmed).
    pub async fn revive(&self, name: &str) -> Result<()> {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        renew(&leases, name).await?;
        self.post_ready(name).await?;
        self.lock().alive.insert(name.to_string());
        self.revived.notify_one();
        Ok(())
    }

    /// Stops node `name`'s kubelet and deletes its Node object.
    pub async fn remove(&self, name: &str) -> Result<()> {
        self.silence(name);
        match Api::<Node>::all(self.client.clone())
            .delete(name, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e).with_context(|| format!("delete node {name}")),
        }
    }

    /// Nodes whose kubelet runs.
    pub fn alive(&self) -> Vec<String> {
        self.lock().alive.iter().cloned().collect()
    }

    /// The pods the simulated kubelets see (all namespaces).
    pub fn pods(&self) -> Vec<Arc<Pod>> {
        self.pods.state()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn renew(leases: &Api<Lease>, name: &str) -> Result<()> {
    let patch = json!({"spec": {"renewTime": now_micro(), "holderIdentity": name}});
    leases
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("renew lease {name}"))?;
    Ok(())
}

/// Renews every live node's Lease each `interval` (a kubelet's timer: time is the subject).
async fn lease_loop(client: kube::Client, state: Arc<Mutex<State>>, interval: Duration) {
    let leases: Api<Lease> = Api::namespaced(client, LEASE_NAMESPACE);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let alive: Vec<String> = state
            .lock()
            .map(|s| s.alive.iter().cloned().collect())
            .unwrap_or_default();
        futures::stream::iter(alive)
            .for_each_concurrent(16, |name| {
                let leases = leases.clone();
                async move {
                    if let Err(e) = renew(&leases, &name).await {
                        tracing::debug!(node = %name, error = %e, "lease renewal failed");
                    }
                }
            })
            .await;
    }
}

/// What a live kubelet does about `pod` now, if anything.
enum Act {
    ConfirmDelete,
    ReportRunning,
}

fn act_on(pod: &Pod, alive: &BTreeSet<String>) -> Option<Act> {
    let node = pod.spec.as_ref()?.node_name.as_deref()?;
    if !alive.contains(node) {
        return None;
    }
    if pod.metadata.deletion_timestamp.is_some() {
        return Some(Act::ConfirmDelete);
    }
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return None;
    }
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    (phase != Some("Running") || !ready).then_some(Act::ReportRunning)
}

async fn pod_loop<S>(
    client: kube::Client,
    state: Arc<Mutex<State>>,
    store: Store<Pod>,
    revived: Arc<Notify>,
    events: S,
    run_pods: bool,
) where
    S: futures::Stream<Item = Result<Pod, watcher::Error>> + Send,
{
    let mut events = std::pin::pin!(events);
    let mut writes: JoinSet<ObjectRef<Pod>> = JoinSet::new();
    loop {
        let batch: Vec<Arc<Pod>> = tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(pod)) => vec![Arc::new(pod)],
                Some(Err(_)) => continue,
                None => return,
            },
            _ = revived.notified() => store.state(),
            Some(done) = writes.join_next(), if !writes.is_empty() => {
                let Ok(done) = done else { continue };
                finished(&state, &store, &done)
            }
        };
        if !run_pods {
            continue;
        }
        let mut queue: std::collections::VecDeque<Arc<Pod>> = batch.into();
        while let Some(pod) = queue.pop_front() {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let (act, ip) = {
                let Ok(mut s) = state.lock() else { return };
                if s.busy.contains(&uid) {
                    continue;
                }
                let Some(act) = act_on(&pod, &s.alive) else {
                    continue;
                };
                s.busy.insert(uid.clone());
                s.next_ip += 1;
                (act, s.next_ip)
            };
            while writes.len() >= POD_WRITES_IN_FLIGHT {
                let Some(Ok(done)) = writes.join_next().await else {
                    break;
                };
                queue.extend(finished(&state, &store, &done));
            }
            writes.spawn(write_pod(client.clone(), pod, act, ip, uid));
        }
    }
}

/// A write for `done` finished: the pod is free again, and is returned for another look
/// when it was deleted meanwhile (its deletion event may have come while it was busy).
fn finished(state: &Mutex<State>, store: &Store<Pod>, done: &ObjectRef<Pod>) -> Vec<Arc<Pod>> {
    if let Ok(mut s) = state.lock() {
        if let Some(uid) = &done.extra.uid {
            s.busy.remove(uid);
        }
    }
    store
        .get(done)
        .filter(|p| p.metadata.deletion_timestamp.is_some())
        .into_iter()
        .collect()
}

/// Confirms a deletion or reports the pod Running and Ready; returns the pod's reference.
async fn write_pod(
    client: kube::Client,
    pod: Arc<Pod>,
    act: Act,
    ip: u32,
    uid: String,
) -> ObjectRef<Pod> {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let mut done = ObjectRef::from_obj(pod.as_ref());
    done.extra.uid = Some(uid.clone());
    let api: Api<Pod> = Api::namespaced(client, &ns);
    match act {
        Act::ConfirmDelete => {
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            if let Err(e) = api.delete(&name, &dp).await {
                tracing::debug!(pod = %name, error = %e, "confirming deletion failed");
            }
        }
        Act::ReportRunning => {
            let t = now_time();
            let pod_ip = format!("10.200.{}.{}", (ip / 250) % 250, ip % 250 + 1);
            let containers: Vec<Value> = pod
                .spec
                .as_ref()
                .map(|s| s.containers.as_slice())
                .unwrap_or_default()
                .iter()
                .map(|c| {
                    json!({"name": c.name, "image": c.image, "imageID": "", "ready": true, "started": true,
                        "restartCount": 0, "state": {"running": {"startedAt": t}}})
                })
                .collect();
            let cond =
                |kind: &str| json!({"type": kind, "status": "True", "lastTransitionTime": t});
            let status = json!({"status": {
                "phase": "Running",
                "podIP": pod_ip,
                "podIPs": [{"ip": pod_ip}],
                "hostIP": "127.0.0.1",
                "startTime": t,
                "conditions": [cond("Initialized"), cond("ContainersReady"), cond("Ready")],
                "containerStatuses": containers,
            }});
            if let Err(e) = api
                .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&status))
                .await
            {
                tracing::debug!(pod = %name, error = %e, "reporting Running failed");
            }
        }
    }
    done
}

//! The default scheduler (kube-scheduler's `default-scheduler`): the shell around the pure
//! [`filter`], [`score`], [`cache`] and [`queue`].
//!
//! It follows pods and nodes through the process's shared informers (a finished pod counts
//! as gone, as upstream's informer filter makes it), keeps the scheduler cache of what each
//! node has bound or assumed, and takes pods off the queue one at a time:
//! a decision is made against the cache, the pod is assumed on the chosen node at once, and
//! the `pods/binding` POST runs in the background with at most [`MAX_BINDS_IN_FLIGHT`]
//! outstanding, so a burst of pods is decided at memory speed and bound concurrently without
//! flooding the API. A pod that fits nowhere gets `PodScheduled=False` (reason
//! Unschedulable) and a FailedScheduling Event with upstream's message, and waits in the
//! queue until a node is added or changes or a bound pod goes away, with per-pod backoff.

pub mod cache;
pub mod filter;
pub mod queue;
pub mod score;

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash, Hasher};
use std::pin::pin;
use std::time::Instant;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::Resource as _;
use serde_json::json;
use tokio::task::JoinSet;
use tracing::Instrument as _;

use self::cache::Cache;
use self::filter::PodUsage;
use self::queue::Queue;
use super::informers::{Change, Informers};
use super::Context;

/// The scheduler name this scheduler serves (`spec.schedulerName`).
pub const SCHEDULER_NAME: &str = "default-scheduler";
/// Bindings (and failure reports) outstanding at once.
pub const MAX_BINDS_IN_FLIGHT: usize = 16;
/// Scheduled Events waiting to be written; beyond it they are dropped, as upstream's event
/// broadcaster drops what its full queue cannot take.
const EVENT_BACKLOG: usize = 4096;
/// Scheduled Events written at once.
const EVENT_WRITES: usize = 8;

/// An Event to publish, with the recorder to publish it through.
type PendingEvent = (Recorder, Event, ObjectReference);

/// `namespace/name`.
fn key_of(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

fn object_ref(key: &str) -> ObjectRef<Pod> {
    let (ns, name) = key.split_once('/').unwrap_or(("", key));
    ObjectRef::new(name).within(ns)
}

/// Whether the pod has finished (Succeeded or Failed).
fn terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Whether this scheduler should place `pod`: ours, unbound, not being deleted, not gated.
pub fn wants_scheduling(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    spec.scheduler_name.as_deref().unwrap_or(SCHEDULER_NAME) == SCHEDULER_NAME
        && spec.node_name.as_deref().is_none_or(str::is_empty)
        && pod.metadata.deletion_timestamp.is_none()
        && spec.scheduling_gates.as_ref().is_none_or(Vec::is_empty)
        && !matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

/// What a change to a pod's spec or labels looks like, so our own status writes (which
/// come back through the watch) do not count as "the pod changed, retry it".
fn fingerprint(pod: &Pod) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&pod.spec)
        .unwrap_or_default()
        .hash(&mut h);
    pod.metadata.labels.hash(&mut h);
    h.finish()
}

/// A uniform choice in `0..n` for breaking score ties; std's randomly keyed hasher is
/// enough for spreading equal nodes and needs no extra dependency.
fn random_below(n: usize) -> usize {
    thread_local! {
        static COUNTER: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
    let c = COUNTER.with(|c| {
        c.set(c.get().wrapping_add(1));
        c.get()
    });
    let r = std::collections::hash_map::RandomState::new().hash_one(c);
    (r % n.max(1) as u64) as usize
}

/// What a finished background write reports back.
enum Done {
    Bound {
        key: String,
    },
    BindFailed {
        key: String,
        uid: String,
        error: kube::Error,
    },
    Reported,
}

/// The scheduler state of the shell.
struct Scheduler {
    client: kube::Client,
    pods: Store<Pod>,
    cache: Cache,
    queue: Queue,
    fingerprints: HashMap<String, u64>,
    in_flight: HashSet<String>,
    /// Last FailedScheduling message per pod, with the recorder that published it: a new
    /// message gets a new Event (the recorder folds repeats of one message into a series).
    reported: HashMap<String, (String, Recorder)>,
    recorder: Recorder,
    /// Scheduled Events go out beside the bindings, not in their slot: a binding does not
    /// wait for its Event (upstream's recorder is asynchronous too).
    events: tokio::sync::mpsc::Sender<PendingEvent>,
}

fn reporter() -> Reporter {
    Reporter {
        controller: SCHEDULER_NAME.to_string(),
        instance: None,
    }
}

impl Scheduler {
    fn on_pod(&mut self, change: Change<Pod>, now: Instant) {
        match change {
            // A pod that finished holds nothing any more: for the cache it is gone (upstream's
            // informer filters them out, which shows as a deletion).
            Change::Applied(pod) if !terminal(&pod) => {
                let key = key_of(&pod);
                self.cache.update_pod(&pod);
                if wants_scheduling(&pod) {
                    let fp = fingerprint(&pod);
                    let old = self.fingerprints.insert(key.clone(), fp);
                    if self.in_flight.contains(&key) {
                        return;
                    }
                    match old {
                        None => self.queue.add(&key),
                        Some(old) if old != fp => self.queue.activate(&key, now),
                        Some(_) => self.queue.add(&key),
                    }
                } else {
                    self.forget_pod(&key);
                }
            }
            Change::Applied(pod) | Change::Deleted(pod) => {
                let key = key_of(&pod);
                let uid = pod.metadata.uid.as_deref().unwrap_or_default();
                let was_held = self.cache.holds(uid);
                self.cache.remove_pod(uid);
                self.forget_pod(&key);
                if was_held {
                    // AssignedPodDelete: its resources and ports are free again.
                    self.queue.move_all(now);
                }
            }
            Change::Synced => self.relisted(now),
        }
    }

    fn forget_pod(&mut self, key: &str) {
        self.queue.remove(key);
        self.fingerprints.remove(key);
        self.reported.remove(key);
    }

    fn on_node(&mut self, change: Change<Node>, nodes: &Store<Node>, now: Instant) {
        match change {
            Change::Applied(node) => {
                if self.cache.update_node(&node) {
                    self.queue.move_all(now);
                }
            }
            Change::Deleted(node) => {
                self.cache
                    .remove_node(node.metadata.name.as_deref().unwrap_or_default());
            }
            Change::Synced => {
                let nodes = nodes.state();
                let pods = self.pods.state();
                self.cache.reset(
                    nodes.iter().map(|n| &**n),
                    pods.iter().filter(|p| !terminal(p)).map(|p| &**p),
                );
                self.queue.move_all(now);
            }
        }
    }

    /// The pod watch relisted: the store holds the truth; drop what vanished meanwhile.
    fn relisted(&mut self, now: Instant) {
        let pods = self.pods.state();
        let live: HashSet<String> = pods.iter().map(|p| key_of(p)).collect();
        let stale: Vec<String> = self
            .fingerprints
            .keys()
            .filter(|k| !live.contains(*k))
            .cloned()
            .collect();
        for key in stale {
            self.forget_pod(&key);
        }
        for pod in &pods {
            if wants_scheduling(pod) && !self.in_flight.contains(&key_of(pod)) {
                self.fingerprints.insert(key_of(pod), fingerprint(pod));
                self.queue.add(&key_of(pod));
            }
        }
        self.queue.move_all(now);
    }

    /// Decides for queued pods while there is room for more writes in flight.
    fn schedule_some(&mut self, writes: &mut JoinSet<Done>, now: Instant) {
        while writes.len() < MAX_BINDS_IN_FLIGHT {
            let Some(key) = self.queue.pop() else {
                return;
            };
            let Some(pod) = self.pods.get(&object_ref(&key)) else {
                self.forget_pod(&key);
                continue;
            };
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            if !wants_scheduling(&pod) || self.cache.is_assumed(&uid) {
                continue;
            }
            let usage = PodUsage::of(&pod);
            match self.cache.schedule(&pod, &usage, random_below) {
                Ok(node) => {
                    tracing::debug!(pod = %key, %node, "assumed");
                    self.cache.assume(&uid, &node, usage);
                    self.in_flight.insert(key.clone());
                    self.reported.remove(&key);
                    let span = tracing::debug_span!("bind", pod = %key, %node);
                    writes.spawn(
                        bind(
                            self.client.clone(),
                            self.recorder.clone(),
                            self.events.clone(),
                            pod,
                            key,
                            node,
                        )
                        .instrument(span),
                    );
                }
                Err(message) => {
                    tracing::debug!(pod = %key, %message, "unschedulable");
                    self.queue.unschedulable(&key, now);
                    let recorder = match self.reported.get(&key) {
                        Some((last, r)) if *last == message => r.clone(),
                        _ => Recorder::new(self.client.clone(), reporter()),
                    };
                    self.reported
                        .insert(key.clone(), (message.clone(), recorder.clone()));
                    writes.spawn(report_unschedulable(
                        self.client.clone(),
                        recorder,
                        pod,
                        message,
                    ));
                }
            }
        }
    }

    fn on_done(&mut self, done: Done, now: Instant) {
        match done {
            Done::Bound { key } => {
                self.in_flight.remove(&key);
                // The watch's bound version confirms the assumption and removes it from
                // the queue; nothing else to do.
            }
            Done::BindFailed { key, uid, error } => {
                self.in_flight.remove(&key);
                self.cache.forget(&uid);
                let gone = matches!(&error, kube::Error::Api(s) if s.code == 404);
                let taken = matches!(&error, kube::Error::Api(s) if s.code == 409);
                if gone || taken {
                    // Deleted, or bound by someone else: the watch brings the outcome.
                    tracing::debug!(pod = %key, %error, "binding not needed any more");
                } else {
                    tracing::warn!(pod = %key, %error, "binding failed; will retry");
                    self.queue.error(&key, now);
                }
            }
            Done::Reported => {}
        }
    }
}

async fn bind(
    client: kube::Client,
    recorder: Recorder,
    events: tokio::sync::mpsc::Sender<PendingEvent>,
    pod: std::sync::Arc<Pod>,
    key: String,
    node: String,
) -> Done {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            uid: Some(uid.clone()),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".to_string()),
            kind: Some("Node".to_string()),
            name: Some(node.clone()),
            ..Default::default()
        },
    };
    let api: Api<Pod> = Api::namespaced(client, &ns);
    match api
        .create_subresource::<Binding, serde_json::Value>(
            "binding",
            &name,
            &PostParams::default(),
            &binding,
        )
        .await
    {
        Ok(_) => {
            tracing::debug!(pod = %key, %node, "bound");
            let event = Event {
                type_: EventType::Normal,
                reason: "Scheduled".to_string(),
                note: Some(format!("Successfully assigned {key} to {node}")),
                action: "Binding".to_string(),
                secondary: None,
            };
            if events
                .try_send((recorder, event, pod.object_ref(&())))
                .is_err()
            {
                tracing::debug!(pod = %key, "event queue full; Scheduled event dropped");
            }
            Done::Bound { key }
        }
        Err(error) => Done::BindFailed { key, uid, error },
    }
}

/// `PodScheduled=False` with upstream's reason and message, and a FailedScheduling Event.
async fn report_unschedulable(
    client: kube::Client,
    recorder: Recorder,
    pod: std::sync::Arc<Pod>,
    message: String,
) -> Done {
    let key = key_of(&pod);
    let current = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"));
    let same = current.is_some_and(|c| {
        c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
            && c.message.as_deref() == Some(message.as_str())
    });
    if !same {
        let api: Api<Pod> = Api::namespaced(
            client,
            pod.metadata.namespace.as_deref().unwrap_or_default(),
        );
        let patch = json!({"status": {"conditions": [{
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message,
            "lastProbeTime": null,
            "lastTransitionTime": k8s_openapi::jiff::Timestamp::now().to_string(),
        }]}});
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        if let Err(error) = api
            .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            tracing::warn!(pod = %key, %error, "setting PodScheduled=False failed");
        }
    }
    let event = Event {
        type_: EventType::Warning,
        reason: "FailedScheduling".to_string(),
        note: Some(message),
        action: "Scheduling".to_string(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&event, &pod.object_ref(&())).await {
        tracing::warn!(pod = %key, %error, "recording the FailedScheduling event failed");
    }
    Done::Reported
}

/// Runs the scheduler until `ctx.shutdown`.
pub async fn run(ctx: Context, shared: Informers) -> Result<(), String> {
    let client = ctx.client.clone();
    let (pods, nodes) = (shared.pods()?, shared.nodes()?);
    let (pod_store, node_store) = (pods.store(), nodes.store());
    let mut pod_events = pin!(pods.events());
    let mut node_events = pin!(nodes.events());
    let (events_tx, events_rx) = tokio::sync::mpsc::channel(EVENT_BACKLOG);
    let mut event_writer = JoinSet::new();
    event_writer.spawn(write_events(events_rx));
    let mut s = Scheduler {
        client: client.clone(),
        pods: pod_store.clone(),
        cache: Cache::new(),
        queue: Queue::new(),
        fingerprints: HashMap::new(),
        in_flight: HashSet::new(),
        reported: HashMap::new(),
        recorder: Recorder::new(client.clone(), reporter()),
        events: events_tx,
    };
    let mut writes: JoinSet<Done> = JoinSet::new();
    let (mut pods_synced, mut nodes_synced) = (false, false);
    tracing::info!("scheduler started");
    loop {
        let wake = s.queue.next_wake();
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            ev = pod_events.next() => match ev {
                Some(change) => {
                    pods_synced |= matches!(change, Change::Synced);
                    s.on_pod(change, Instant::now());
                }
                None => return Err("pod watch ended".to_string()),
            },
            ev = node_events.next() => match ev {
                Some(change) => {
                    nodes_synced |= matches!(change, Change::Synced);
                    s.on_node(change, &node_store, Instant::now());
                }
                None => return Err("node watch ended".to_string()),
            },
            Some(done) = writes.join_next(), if !writes.is_empty() => match done {
                Ok(done) => s.on_done(done, Instant::now()),
                Err(error) => tracing::error!(%error, "scheduler write task failed"),
            },
            _ = sleep_until(wake) => {}
        }
        let now = Instant::now();
        s.queue.flush(now);
        // Nothing is decided from half a cache: a pod placed before the node or pod lists
        // are complete could land on a full node.
        if pods_synced && nodes_synced {
            s.schedule_some(&mut writes, now);
        }
    }
    writes.shutdown().await;
    event_writer.shutdown().await;
    Ok(())
}

/// Publishes queued Events, a few at a time, until the queue closes.
async fn write_events(rx: tokio::sync::mpsc::Receiver<PendingEvent>) {
    let queue =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) });
    queue
        .for_each_concurrent(EVENT_WRITES, |(recorder, event, regarding)| async move {
            if let Err(error) = recorder.publish(&event, &regarding).await {
                tracing::warn!(%error, reason = %event.reason, "recording an event failed");
            }
        })
        .await;
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

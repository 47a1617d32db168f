//! The probe manager: one worker per (pod UID, container, probe kind) for the running containers
//! the pod worker reports, and the results it reads back, as upstream
//! pkg/kubelet/prober/prober_manager.go with its results managers.
//!
//! Results are kept per container ID. A new container starts from upstream's initial values
//! (readiness failed, liveness passing, startup unknown); only later changes are sent as
//! [`ProbeUpdate`]s, since the pod worker that started the container already knows those.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::SystemTime;

use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use oxlet_cri::Runtime;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use tracing::{info, info_span, warn, Instrument};

use super::worker::{ResultSink, Worker};
use super::{ProbeKind, ProbeResult, ProbeUpdate};
use crate::events::EventSink;

/// The container one probe worker serves.
#[derive(Debug, Clone)]
pub struct ProbeTarget {
    /// The pod, as last synced.
    pub pod: Arc<Pod>,
    /// The pod's IP: the default host of httpGet/tcpSocket probes and the gRPC target.
    pub pod_ip: Option<String>,
    /// The container's name in the pod spec.
    pub container_name: String,
    /// The container's runtime ID.
    pub container_id: String,
    /// When the container started; initialDelaySeconds counts from here.
    pub started_at: SystemTime,
}

/// Runs the probes of the pods on this node. See the module documentation.
pub struct ProbeManager {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: Arc<dyn Runtime>,
    events: Arc<dyn EventSink>,
    updates: mpsc::UnboundedSender<ProbeUpdate>,
    cancel: CancellationToken,
    tasks: TaskTracker,
    pods: Mutex<HashMap<String, PodEntry>>,
}

#[derive(Default)]
struct PodEntry {
    /// Running containers by name.
    containers: HashMap<String, ContainerEntry>,
}

struct ContainerEntry {
    id: String,
    has_readiness: bool,
    has_startup: bool,
    readiness: ProbeResult,
    liveness: ProbeResult,
    startup: ProbeResult,
    /// True once the startup probe passed (at once without one); liveness and readiness
    /// workers wait on it.
    started: watch::Sender<bool>,
    /// Dropping a guard cancels its worker, so removing the entry stops them all.
    workers: Vec<(ProbeKind, DropGuard)>,
}

impl ContainerEntry {
    fn result_mut(&mut self, kind: ProbeKind) -> &mut ProbeResult {
        match kind {
            ProbeKind::Liveness => &mut self.liveness,
            ProbeKind::Readiness => &mut self.readiness,
            ProbeKind::Startup => &mut self.startup,
        }
    }

    fn is_started(&self) -> bool {
        !self.has_startup || self.startup.is_success()
    }
}

fn probe_of(container: &Container, kind: ProbeKind) -> Option<&Probe> {
    match kind {
        ProbeKind::Liveness => container.liveness_probe.as_ref(),
        ProbeKind::Readiness => container.readiness_probe.as_ref(),
        ProbeKind::Startup => container.startup_probe.as_ref(),
    }
}

/// The container's spec and whether it is an init container (sidecars can have probes).
fn find_container<'a>(pod: &'a Pod, name: &str) -> Option<(&'a Container, bool)> {
    let spec = pod.spec.as_ref()?;
    if let Some(c) = spec.containers.iter().find(|c| c.name == name) {
        return Some((c, false));
    }
    spec.init_containers
        .iter()
        .flatten()
        .find(|c| c.name == name)
        .map(|c| (c, true))
}

impl ProbeManager {
    /// A manager whose workers exec through `runtime`, record events in `events`, send changed
    /// results to `updates`, and all stop when `cancel` is cancelled (or the manager dropped).
    pub fn new(
        runtime: Arc<dyn Runtime>,
        events: Arc<dyn EventSink>,
        updates: mpsc::UnboundedSender<ProbeUpdate>,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                runtime,
                events,
                updates,
                cancel: cancel.child_token(),
                tasks: TaskTracker::new(),
                pods: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Called by the pod worker on each sync with the pod's running containers
    /// (name, ID, start time); starts workers for new container IDs, stops workers of
    /// containers that are gone or changed. Idempotent.
    ///
    /// Once the pod is being deleted, liveness and startup stop and report success, as
    /// upstream does for a quiet shutdown; readiness keeps running.
    pub fn sync_pod(
        &self,
        pod: &Arc<Pod>,
        pod_ip: Option<&str>,
        running: &[(String, String, SystemTime)],
    ) {
        let Some(uid) = pod.metadata.uid.clone() else {
            warn!(pod = ?pod.metadata.name, "pod without a UID: not probing");
            return;
        };
        if self.inner.cancel.is_cancelled() {
            return;
        }
        let deleting = pod.metadata.deletion_timestamp.is_some();
        let mut pods = self.inner.lock();
        let entry = pods.entry(uid.clone()).or_default();
        entry
            .containers
            .retain(|name, c| running.iter().any(|(n, id, _)| n == name && *id == c.id));
        for (name, id, started_at) in running {
            if !entry.containers.contains_key(name) {
                let target = ProbeTarget {
                    pod: pod.clone(),
                    pod_ip: pod_ip.map(str::to_string),
                    container_name: name.clone(),
                    container_id: id.clone(),
                    started_at: *started_at,
                };
                let c = self.start_container(&uid, target, deleting);
                entry.containers.insert(name.clone(), c);
            }
            if deleting {
                if let Some(c) = entry.containers.get_mut(name) {
                    self.inner.quiet_shutdown(&uid, name, c);
                }
            }
        }
    }

    /// Creates the entry of a newly seen container and starts its workers.
    fn start_container(&self, uid: &str, target: ProbeTarget, deleting: bool) -> ContainerEntry {
        let spec = find_container(&target.pod, &target.container_name);
        let has = |kind| spec.and_then(|(c, _)| probe_of(c, kind)).is_some();
        let has_startup = has(ProbeKind::Startup);
        let (started, _) = watch::channel(!has_startup);
        let mut entry = ContainerEntry {
            id: target.container_id.clone(),
            has_readiness: has(ProbeKind::Readiness),
            has_startup,
            readiness: ProbeResult::Failure(String::new()),
            liveness: ProbeResult::Success,
            startup: ProbeResult::Unknown,
            started,
            workers: Vec::new(),
        };
        let Some((container, init)) = spec else {
            warn!(
                container = %target.container_name,
                "running container not in the pod spec: not probing"
            );
            return entry;
        };
        for kind in [
            ProbeKind::Startup,
            ProbeKind::Liveness,
            ProbeKind::Readiness,
        ] {
            let Some(probe) = probe_of(container, kind) else {
                continue;
            };
            if deleting && kind != ProbeKind::Readiness {
                continue;
            }
            let token = self.inner.cancel.child_token();
            let worker = Worker {
                target: target.clone(),
                container: container.clone(),
                init,
                kind,
                probe: probe.clone(),
                runtime: self.inner.runtime.clone(),
                events: self.inner.events.clone(),
                started: entry.started.subscribe(),
                sink: sink(&self.inner, uid, &target, kind),
                cancel: token.clone(),
            };
            let meta = &target.pod.metadata;
            let span = info_span!(
                "probe",
                namespace = meta.namespace.as_deref().unwrap_or(""),
                pod = meta.name.as_deref().unwrap_or(""),
                uid,
                container = %target.container_name,
                container_id = %target.container_id,
                kind = %kind,
            );
            self.inner.tasks.spawn(worker.run().instrument(span));
            entry.workers.push((kind, token.drop_guard()));
        }
        entry
    }

    /// Stops all workers of a pod (pod deleted / terminated) and forgets its results.
    pub fn remove_pod(&self, pod_uid: &str) {
        // Dropping the entry drops the workers' guards, which cancels them.
        let removed = self.inner.lock().remove(pod_uid);
        drop(removed);
    }

    /// Readiness of a container: true if it has no readiness probe and is running; else the
    /// last result. False before the container has started (startup probe) and for
    /// containers that are not running.
    pub fn is_ready(&self, pod_uid: &str, container_id: &str) -> bool {
        self.inner
            .with_container(pod_uid, container_id, |_, c| {
                c.is_started() && (!c.has_readiness || c.readiness.is_success())
            })
            .unwrap_or(false)
    }

    /// `started` as the status reports it: true without a startup probe, else whether it
    /// succeeded. False for containers that are not running.
    pub fn is_started(&self, pod_uid: &str, container_id: &str) -> bool {
        self.inner
            .with_container(pod_uid, container_id, |_, c| c.is_started())
            .unwrap_or(false)
    }

    /// Whether liveness/startup says "restart this container" (threshold reached) for this
    /// ID, with upstream's message (`Container web failed liveness probe`).
    pub fn should_restart(&self, pod_uid: &str, container_id: &str) -> Option<String> {
        self.inner
            .with_container(pod_uid, container_id, |name, c| {
                if c.liveness.is_failure() {
                    Some(format!("Container {name} failed liveness probe"))
                } else if c.startup.is_failure() {
                    Some(format!("Container {name} failed startup probe"))
                } else {
                    None
                }
            })
            .flatten()
    }

    /// How many worker tasks are still running (those of removed pods finish shortly after
    /// [`Self::remove_pod`]).
    pub fn running_workers(&self) -> usize {
        self.inner.tasks.len()
    }

    /// Stops every worker and waits until all have ended.
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        self.inner.lock().clear();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }
}

impl Drop for ProbeManager {
    fn drop(&mut self) {
        // Workers only hold a weak reference to the manager; they must not outlive it.
        self.inner.cancel.cancel();
    }
}

/// The callback through which a worker stores its results.
fn sink(inner: &Arc<Inner>, uid: &str, target: &ProbeTarget, kind: ProbeKind) -> ResultSink {
    let weak: Weak<Inner> = Arc::downgrade(inner);
    let uid = uid.to_string();
    let name = target.container_name.clone();
    let id = target.container_id.clone();
    Arc::new(move |result| {
        if let Some(inner) = weak.upgrade() {
            inner.record(&uid, &name, &id, kind, result);
        }
    })
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, PodEntry>> {
        // A panic elsewhere must not take probing down with it; the map stays consistent
        // because every update is a single assignment.
        self.pods.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with_container<T>(
        &self,
        uid: &str,
        container_id: &str,
        f: impl FnOnce(&str, &ContainerEntry) -> T,
    ) -> Option<T> {
        let pods = self.lock();
        let (name, c) = pods
            .get(uid)?
            .containers
            .iter()
            .find(|(_, c)| c.id == container_id)?;
        Some(f(name, c))
    }

    /// Stores a worker's result for the container it probes, if that container is still the
    /// current one, and sends an update when the state changed.
    fn record(&self, uid: &str, name: &str, id: &str, kind: ProbeKind, result: ProbeResult) {
        let mut pods = self.lock();
        let Some(c) = pods
            .get_mut(uid)
            .and_then(|p| p.containers.get_mut(name))
            .filter(|c| c.id == id)
        else {
            return;
        };
        self.set(uid, name, c, kind, result, true);
    }

    /// Stores a result; with `notify`, sends an update if the state changed.
    fn set(
        &self,
        uid: &str,
        name: &str,
        c: &mut ContainerEntry,
        kind: ProbeKind,
        result: ProbeResult,
        notify: bool,
    ) {
        let slot = c.result_mut(kind);
        let changed = !slot.same_state(&result);
        *slot = result.clone();
        if kind == ProbeKind::Startup && result.is_success() {
            c.started.send_replace(true);
        }
        if changed && notify {
            info!(container = name, %kind, ?result, "probe result changed");
            // Sent under the lock so updates arrive in the order results were stored.
            let _ = self.updates.send(ProbeUpdate {
                pod_uid: uid.to_string(),
                container_name: name.to_string(),
                container_id: c.id.clone(),
                kind,
                result,
            });
        }
    }

    /// Upstream's quiet shutdown of a pod being deleted: liveness and startup stop and count
    /// as passing, so no restart is triggered while the pod terminates. No update is sent:
    /// the pod worker is syncing already.
    fn quiet_shutdown(&self, uid: &str, name: &str, c: &mut ContainerEntry) {
        c.workers.retain(|(kind, _)| *kind == ProbeKind::Readiness);
        if !c.liveness.is_success() {
            self.set(
                uid,
                name,
                c,
                ProbeKind::Liveness,
                ProbeResult::Success,
                false,
            );
        }
        if c.has_startup && !c.startup.is_success() {
            self.set(
                uid,
                name,
                c,
                ProbeKind::Startup,
                ProbeResult::Success,
                false,
            );
        }
    }
}

//! One worker task per pod UID (upstream's pod_workers.go): each owns its pod's sync, status
//! writes and termination, woken by API updates, PLEG, probe changes and its own timers, so one
//! slow pod never holds up another.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::pod_status::{self, StatusInput};
use crate::pod_sync::{PodContext, PodMemory};
use crate::runtime_state::{self, RuntimePod};

/// How often a live pod is synced without any trigger (volume refresh, status).
pub const RESYNC_PERIOD: Duration = Duration::from_secs(10);
/// Grace for containers of a pod whose object is gone from the API.
const ORPHAN_GRACE_SECONDS: i64 = 2;

struct Handle {
    pod: watch::Sender<Option<Arc<Pod>>>,
    wake: Arc<Notify>,
}

/// The set of pod workers.
pub struct PodWorkers {
    ctx: Arc<PodContext>,
    workers: Arc<Mutex<HashMap<String, Handle>>>,
    /// UIDs whose teardown finished; updates for them are ignored until the API forgets them.
    finished: Arc<Mutex<HashSet<String>>>,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

impl PodWorkers {
    /// Workers sharing `ctx`; all stop when `cancel` fires.
    pub fn new(ctx: Arc<PodContext>, cancel: CancellationToken) -> Self {
        Self {
            ctx,
            workers: Arc::new(Mutex::new(HashMap::new())),
            finished: Arc::new(Mutex::new(HashSet::new())),
            tasks: TaskTracker::new(),
            cancel,
        }
    }

    /// The shared context.
    pub fn context(&self) -> &Arc<PodContext> {
        &self.ctx
    }

    /// UIDs that have a worker.
    pub fn uids(&self) -> HashSet<String> {
        self.workers
            .lock()
            .map(|w| w.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// A new or changed pod from the API.
    pub fn update(&self, pod: Arc<Pod>) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        if self.finished.lock().is_ok_and(|f| f.contains(&uid)) {
            return;
        }
        self.dispatch(uid, Some(pod));
    }

    /// The pod is gone from the API (deleted, possibly forcefully).
    pub fn remove(&self, uid: &str) {
        if let Ok(mut f) = self.finished.lock() {
            f.remove(uid);
        }
        let has_worker = self.workers.lock().is_ok_and(|w| w.contains_key(uid));
        if has_worker {
            self.dispatch(uid.to_string(), None);
        }
    }

    /// Something about the pod's runtime state or probes changed.
    pub fn wake(&self, uid: &str) {
        if let Ok(w) = self.workers.lock() {
            if let Some(h) = w.get(uid) {
                h.wake.notify_one();
            }
        }
    }

    /// Tears down a runtime pod the API does not know (left from before a restart).
    pub fn kill_orphan(&self, uid: &str) {
        if self.workers.lock().is_ok_and(|w| w.contains_key(uid)) {
            return;
        }
        self.dispatch(uid.to_string(), None);
    }

    fn dispatch(&self, uid: String, pod: Option<Arc<Pod>>) {
        let Ok(mut workers) = self.workers.lock() else {
            return;
        };
        if let Some(h) = workers.get(&uid) {
            // A removal keeps the last spec around inside the worker; only the signal matters.
            h.pod.send_replace(pod);
            h.wake.notify_one();
            return;
        }
        let (tx, rx) = watch::channel(pod.clone());
        let wake = Arc::new(Notify::new());
        workers.insert(
            uid.clone(),
            Handle {
                pod: tx,
                wake: wake.clone(),
            },
        );
        let span = match &pod {
            Some(p) => info_span!("pod", ns = p.metadata.namespace.as_deref().unwrap_or(""),
                name = p.metadata.name.as_deref().unwrap_or(""), uid = %uid),
            None => info_span!("pod", uid = %uid),
        };
        let worker = Worker {
            ctx: self.ctx.clone(),
            uid: uid.clone(),
            pod: rx,
            wake,
            mem: PodMemory::default(),
            last_posted: None,
            last_spec: pod,
        };
        let workers_map = self.workers.clone();
        let finished = self.finished.clone();
        let cancel = self.cancel.child_token();
        self.tasks.spawn(
            async move {
                let done = worker.run(cancel).await;
                if let Ok(mut w) = workers_map.lock() {
                    w.remove(&uid);
                }
                if done {
                    if let Ok(mut f) = finished.lock() {
                        f.insert(uid);
                    }
                }
            }
            .instrument(span),
        );
    }

    /// Waits for every worker to stop (after cancel).
    pub async fn shutdown(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

struct Worker {
    ctx: Arc<PodContext>,
    uid: String,
    pod: watch::Receiver<Option<Arc<Pod>>>,
    wake: Arc<Notify>,
    mem: PodMemory,
    last_posted: Option<PodStatus>,
    last_spec: Option<Arc<Pod>>,
}

impl Worker {
    /// Runs until the pod is torn down (true) or the kubelet stops (false).
    async fn run(mut self, cancel: CancellationToken) -> bool {
        let mut next = Duration::ZERO;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return false,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(next) => {}
            }
            let current = self.pod.borrow_and_update().clone();
            match current {
                None => {
                    // Gone from the API: stop everything quickly and clean up.
                    let pod = self.last_spec.clone();
                    self.terminate(pod.as_deref(), ORPHAN_GRACE_SECONDS, false)
                        .await;
                    return true;
                }
                Some(pod) => {
                    self.last_spec = Some(pod.clone());
                    if pod.metadata.deletion_timestamp.is_some() {
                        let grace = pod
                            .metadata
                            .deletion_grace_period_seconds
                            .or_else(|| {
                                pod.spec
                                    .as_ref()
                                    .and_then(|s| s.termination_grace_period_seconds)
                            })
                            .unwrap_or(30);
                        self.terminate(Some(&pod), grace, true).await;
                        return true;
                    }
                    next = self.sync(&pod).await;
                }
            }
        }
    }

    async fn sync(&mut self, pod: &Arc<Pod>) -> Duration {
        let ctx = self.ctx.clone();
        if is_terminal(pod) {
            // Finished pods never run again; make sure nothing is left running.
            if let Ok(rt) = runtime_state::pod_status(ctx.runtime.as_ref(), &self.uid).await {
                if rt.any_running() {
                    ctx.kill_pod(Some(pod), &rt, 0).await;
                }
                ctx.probes.remove_pod(&self.uid);
            }
            return RESYNC_PERIOD * 6;
        }
        let outcome = ctx.sync_pod(pod, &mut self.mem).await;
        let running: Vec<(String, String, std::time::SystemTime)> = outcome
            .rt
            .containers
            .iter()
            .filter(|c| c.is_running() && !c.init)
            .map(|c| {
                (
                    c.name.clone(),
                    c.id.clone(),
                    std::time::SystemTime::UNIX_EPOCH
                        + Duration::from_nanos(c.started_at.max(0) as u64),
                )
            })
            .collect();
        let pod_ip = outcome
            .rt
            .sandboxes
            .iter()
            .find(|s| s.ready)
            .and_then(|s| s.ips.first())
            .cloned();
        ctx.probes.sync_pod(pod, pod_ip.as_deref(), &running);
        self.write_status(pod, &outcome.rt, false).await;
        outcome
            .retry_after
            .map_or(RESYNC_PERIOD, |d| d.min(RESYNC_PERIOD))
            .max(Duration::from_millis(100))
    }

    async fn write_status(&mut self, pod: &Pod, rt: &RuntimePod, terminating: bool) {
        let ctx = &self.ctx;
        let uid = self.uid.clone();
        let volumes = &ctx.volumes;
        let probes = &ctx.probes;
        let qos = crate::container::qos_class(pod);
        let new = {
            let input = StatusInput {
                rt,
                waiting: &self.mem.waiting,
                ready: &|id: &str| probes.is_ready(&uid, id),
                started: &|id: &str| probes.is_started(&uid, id),
                termination_message: &|c: &runtime_state::ContainerState| {
                    termination_message(volumes, pod, &uid, c)
                },
                host_ips: &ctx.node.host_ips,
                terminating,
                runtime_name: &ctx.runtime_name,
                qos_class: qos.as_str(),
                now: jiff::Timestamp::now(),
            };
            pod_status::compute(pod, &input)
        };
        let current = self.last_posted.as_ref().or(pod.status.as_ref());
        if current.is_some_and(|c| !pod_status::differs(c, &new)) {
            return;
        }
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.as_deref().unwrap_or("");
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
        // A static pod's status goes to its mirror pod, whose UID is the API server's.
        let patch = if crate::static_pods::is_static(pod) {
            serde_json::json!({ "status": new })
        } else {
            serde_json::json!({
                "metadata": {"uid": uid},
                "status": new,
            })
        };
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                debug!(
                    phase = new.phase.as_deref().unwrap_or(""),
                    "pod status written"
                );
                self.last_posted = Some(new);
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => warn!(error = %e, "pod status update failed; retrying on next sync"),
        }
    }

    /// Stops the pod within `grace`, reports the final status, removes its runtime objects
    /// and volumes, then (for a pod deleted gracefully) deletes the object for good.
    async fn terminate(&mut self, pod: Option<&Pod>, grace: i64, finalize: bool) {
        let ctx = self.ctx.clone();
        info!(grace, "terminating pod");
        if let Ok(rt) = runtime_state::pod_status(ctx.runtime.as_ref(), &self.uid).await {
            ctx.kill_pod(pod, &rt, grace).await;
        }
        ctx.probes.remove_pod(&self.uid);
        if let Some(pod) = pod {
            if let Ok(rt) = runtime_state::pod_status(ctx.runtime.as_ref(), &self.uid).await {
                if finalize {
                    self.write_status(pod, &rt, true).await;
                }
            }
        }
        ctx.cleanup_pod(&self.uid, pod).await;
        if finalize {
            if let Some(pod) = pod {
                let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
                let name = pod.metadata.name.as_deref().unwrap_or("");
                let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
                let dp = DeleteParams {
                    grace_period_seconds: Some(0),
                    preconditions: Some(Preconditions {
                        uid: Some(self.uid.clone()),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                match api.delete(name, &dp).await {
                    Ok(_) => info!("pod deleted"),
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                    Err(e) => warn!(error = %e, "final pod delete failed"),
                }
            }
        }
    }
}

fn termination_message(
    volumes: &crate::volumes::VolumeManager,
    pod: &Pod,
    uid: &str,
    c: &runtime_state::ContainerState,
) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let container = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|s| s.name == c.name)?;
    let from_file = volumes.termination_message(uid, &c.name);
    let policy = container
        .termination_message_policy
        .as_deref()
        .unwrap_or("File");
    match from_file.filter(|m| !m.is_empty()) {
        Some(m) => Some(m),
        None if policy == "FallbackToLogsOnError" && c.exit_code != 0 => {
            tail_log(&c.log_path, 80, 2048)
        }
        None => None,
    }
}

/// The last `lines` lines (at most `max` bytes) of a CRI log file, message parts only.
fn tail_log(path: &str, lines: usize, max: usize) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let msgs: Vec<&str> = text
        .lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3))
        .collect();
    let start = msgs.len().saturating_sub(lines);
    let mut out = msgs[start..].join("\n");
    if out.len() > max {
        let cut = out.len() - max;
        let cut = (cut..out.len())
            .find(|&i| out.is_char_boundary(i))
            .unwrap_or(out.len());
        out = out[cut..].to_string();
    }
    Some(out)
}

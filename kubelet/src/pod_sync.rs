//! Carrying out a pod's actions against CRI (upstream's `SyncPod` and `killPod`): sandbox,
//! volumes, images, init then app containers, hooks, backoff; and tearing a pod down.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Container, Pod, Secret};
use kube::api::Api;
use oxlet_cri::{api, Runtime};
use tracing::{debug, info, warn};

use crate::backoff::BackoffMap;
use crate::cgroups::{pod_cgroup_parent, CgroupManager};
use crate::container::{self, ContainerConfigInput, EnvContext, EnvSource};
use crate::events::{container_field_path, pod_ref, reason, EventSink, EventType};
use crate::fieldpath::NodeAllocatable;
use crate::image_manager::ImageManager;
use crate::pod_actions::{self, PodActions};
use crate::prober::ProbeManager;
use crate::runtime_state::{self, ContainerPhase, ContainerState, RuntimePod};
use crate::sandbox::{self, SandboxOptions};
use crate::volumes::VolumeManager;

/// Node facts pods need.
#[derive(Debug, Clone, Default)]
pub struct NodeFacts {
    /// Node name.
    pub name: String,
    /// The node's IPs, primary first.
    pub host_ips: Vec<String>,
    /// Allocatable resources (defaults for resourceFieldRef, OOM score).
    pub allocatable: NodeAllocatable,
}

/// Pod-level settings from the kubelet configuration.
#[derive(Debug, Clone)]
pub struct PodSettings {
    /// `clusterDNS`.
    pub cluster_dns: Vec<String>,
    /// `clusterDomain`.
    pub cluster_domain: String,
    /// The host's resolv.conf (`resolvConf`).
    pub resolv_conf: std::path::PathBuf,
    /// Where pod log directories go (/var/log/pods).
    pub pod_logs_dir: std::path::PathBuf,
    /// `cgroupRoot`.
    pub cgroup_root: String,
}

/// Everything a pod worker uses, shared by all of them.
pub struct PodContext {
    /// API client.
    pub client: kube::Client,
    /// The container runtime.
    pub runtime: Arc<dyn Runtime>,
    /// Runtime name for container IDs (`containerd`).
    pub runtime_name: String,
    /// Where events go.
    pub events: Arc<dyn EventSink>,
    /// Image pulls.
    pub images: ImageManager,
    /// Volumes.
    pub volumes: VolumeManager,
    /// Probes.
    pub probes: ProbeManager,
    /// Pod cgroups (None where the hierarchy is not writable).
    pub cgroups: Option<CgroupManager>,
    /// Objects env refers to.
    pub env_source: Arc<dyn EnvSource>,
    /// This node.
    pub node: NodeFacts,
    /// Pod settings.
    pub settings: PodSettings,
    /// Crash-loop backoff per pod/container.
    pub container_backoff: BackoffMap,
}

/// Per-pod memory a worker keeps between syncs.
#[derive(Debug, Default)]
pub struct PodMemory {
    /// Last sync error per container name: (reason, message).
    pub waiting: HashMap<String, (String, String)>,
}

/// What a sync asks for next.
#[derive(Debug, Default)]
pub struct SyncOutcome {
    /// Wake the worker after this long (a backoff ends), besides the periodic resync.
    pub retry_after: Option<Duration>,
    /// The runtime state after the sync, for status.
    pub rt: RuntimePod,
    /// An init container failed and the pod may not restart: phase Failed.
    pub init_failed: bool,
}

fn uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or("")
}

fn full_name(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or(""),
        pod.metadata.namespace.as_deref().unwrap_or(""),
        uid(pod)
    )
}

fn to_system_time(ns: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(ns.max(0) as u64)
}

fn grace_seconds(pod: &Pod) -> i64 {
    pod.metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30)
        .max(0)
}

fn min_retry(a: Option<Duration>, b: Duration) -> Option<Duration> {
    Some(a.map_or(b, |a| a.min(b)))
}

impl PodContext {
    fn qos(&self, pod: &Pod) -> container::QosClass {
        container::qos_class(pod)
    }

    fn sandbox_options(&self, pod: &Pod, attempt: u32) -> SandboxOptions {
        SandboxOptions {
            cluster_dns: self.settings.cluster_dns.clone(),
            cluster_domain: self.settings.cluster_domain.clone(),
            host_resolv_conf: self.settings.resolv_conf.clone(),
            pod_logs_dir: self.settings.pod_logs_dir.clone(),
            cgroup_parent: pod_cgroup_parent(&self.settings.cgroup_root, self.qos(pod), uid(pod)),
            attempt,
            node_name: self.node.name.clone(),
        }
    }

    /// One sync of a live pod: carries out [`pod_actions::compute`]'s actions.
    pub async fn sync_pod(&self, pod: &Arc<Pod>, mem: &mut PodMemory) -> SyncOutcome {
        let uid = uid(pod).to_string();
        let mut out = SyncOutcome::default();
        let mut rt = match runtime_state::pod_status(self.runtime.as_ref(), &uid).await {
            Ok(rt) => rt,
            Err(e) => {
                warn!(error = %e, "reading runtime state failed");
                out.retry_after = Some(Duration::from_secs(2));
                return out;
            }
        };
        let probes = &self.probes;
        let actions: PodActions =
            pod_actions::compute(pod, &rt, &container::container_hash, &|id: &str| {
                probes.should_restart(&uid, id)
            });
        debug!(?actions, "pod actions");
        out.init_failed = actions.init_failed;

        if actions.kill_pod {
            let had_sandbox = rt.sandboxes.iter().any(|s| s.ready);
            self.kill_pod(Some(pod), &rt, grace_seconds(pod)).await;
            if actions.create_sandbox && had_sandbox {
                self.events.event(
                    &pod_ref(pod, None),
                    EventType::Normal,
                    reason::SANDBOX_CHANGED,
                    "Pod sandbox changed, it will be killed and re-created.",
                );
            }
            if !actions.create_sandbox {
                out.rt = self.reread(&uid, rt).await;
                return out;
            }
        }

        // Volumes first: a missing configMap holds the pod in ContainerCreating with FailedMount.
        let volumes = match self.volumes.setup(pod, &self.node.allocatable).await {
            Ok(v) => v,
            Err(e) => {
                self.events.event(
                    &pod_ref(pod, None),
                    EventType::Warning,
                    reason::FAILED_MOUNT,
                    &e.to_string(),
                );
                out.retry_after = Some(Duration::from_secs(2));
                out.rt = rt;
                return out;
            }
        };

        let attempt = if actions.create_sandbox {
            actions.attempt
        } else {
            rt.sandbox().map(|s| s.attempt).unwrap_or(0)
        };
        let sandbox_config = match sandbox::sandbox_config(pod, &self.sandbox_options(pod, attempt))
        {
            Ok(c) => c,
            Err(e) => {
                let msg = format!("Failed to create pod sandbox: {e}");
                self.events.event(
                    &pod_ref(pod, None),
                    EventType::Warning,
                    reason::FAILED_CREATE_POD_SANDBOX,
                    &msg,
                );
                out.retry_after = Some(Duration::from_secs(10));
                out.rt = rt;
                return out;
            }
        };
        let sandbox_id = if actions.create_sandbox {
            if let Some(cg) = &self.cgroups {
                let parent = pod_cgroup_parent(&self.settings.cgroup_root, self.qos(pod), &uid);
                if let Err(e) = cg.ensure_pod(&parent, pod) {
                    warn!(error = %e, "pod cgroup setup failed; the runtime creates it");
                }
            }
            match self.runtime.run_pod_sandbox(&sandbox_config, "").await {
                Ok(id) => {
                    info!(sandbox = %id, attempt, "sandbox started");
                    id
                }
                Err(e) => {
                    let msg = format!("Failed to create pod sandbox: {e}");
                    warn!(error = %e, "RunPodSandbox failed");
                    self.events.event(
                        &pod_ref(pod, None),
                        EventType::Warning,
                        reason::FAILED_CREATE_POD_SANDBOX,
                        &msg,
                    );
                    out.retry_after = Some(Duration::from_secs(5));
                    out.rt = self.reread(&uid, rt).await;
                    return out;
                }
            }
        } else {
            match actions.sandbox_id.clone() {
                Some(id) => id,
                None => {
                    out.rt = rt;
                    return out;
                }
            }
        };
        if actions.create_sandbox {
            rt = self.reread(&uid, rt).await;
        }
        let pod_ips: Vec<String> = if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
            self.node.host_ips.clone()
        } else {
            rt.sandboxes
                .iter()
                .find(|s| s.id == sandbox_id)
                .map(|s| s.ips.clone())
                .unwrap_or_default()
        };
        if let Err(e) = self
            .volumes
            .write_etc_hosts(pod, &pod_ips, &self.settings.cluster_domain)
        {
            warn!(error = %e, "writing /etc/hosts failed");
        }

        for k in &actions.kill {
            let spec = find_container(pod, &k.name);
            self.kill_container(pod, spec, &k.id, &k.name, &k.message, grace_seconds(pod))
                .await;
        }

        let ctx = StartCtx {
            pod,
            rt: &rt,
            sandbox_id: &sandbox_id,
            sandbox_config: &sandbox_config,
            volumes: &volumes,
            pod_ips: &pod_ips,
        };
        let mut secrets: Option<Vec<Secret>> = None;
        if let Some(i) = actions.next_init {
            if let Some(c) = pod
                .spec
                .as_ref()
                .and_then(|s| s.init_containers.as_ref())
                .and_then(|v| v.get(i))
            {
                if let Some(d) = self.start_container(&ctx, c, true, mem, &mut secrets).await {
                    out.retry_after = min_retry(out.retry_after, d);
                }
            }
        }
        for &i in &actions.start {
            if let Some(c) = pod.spec.as_ref().and_then(|s| s.containers.get(i)) {
                if let Some(d) = self
                    .start_container(&ctx, c, false, mem, &mut secrets)
                    .await
                {
                    out.retry_after = min_retry(out.retry_after, d);
                }
            }
        }
        out.rt = self.reread(&uid, rt).await;
        self.remove_old_containers(&out.rt).await;
        out
    }

    async fn reread(&self, uid: &str, old: RuntimePod) -> RuntimePod {
        match runtime_state::pod_status(self.runtime.as_ref(), uid).await {
            Ok(rt) => rt,
            Err(e) => {
                warn!(error = %e, "reading runtime state failed");
                old
            }
        }
    }

    async fn pull_secrets(&self, pod: &Pod) -> Vec<Secret> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let mut out = Vec::new();
        for r in pod
            .spec
            .as_ref()
            .and_then(|s| s.image_pull_secrets.as_ref())
            .into_iter()
            .flatten()
        {
            match api.get_opt(&r.name).await {
                Ok(Some(s)) => out.push(s),
                Ok(None) => warn!(secret = %r.name, "image pull secret not found"),
                Err(e) => warn!(secret = %r.name, error = %e, "reading image pull secret failed"),
            }
        }
        out
    }

    /// Starts one container; returns when to retry if it could not (backoff, pull, config).
    async fn start_container(
        &self,
        ctx: &StartCtx<'_>,
        c: &Container,
        init: bool,
        mem: &mut PodMemory,
        secrets: &mut Option<Vec<Secret>>,
    ) -> Option<Duration> {
        let pod = ctx.pod;
        let uid = uid(pod);
        let cref = pod_ref(pod, Some(container_field_path(&c.name, init)));
        let latest = ctx.rt.latest(&c.name, init);
        // Crash-loop backoff, keyed like upstream by pod and container.
        if let Some(l) = latest.filter(|l| l.phase == ContainerPhase::Exited) {
            let key = format!("{uid}/{}/{}", c.name, init as u8);
            let finished = to_system_time(l.finished_at);
            if let Some(rem) = self
                .container_backoff
                .remaining(&key, finished, SystemTime::now())
            {
                let delay = self.container_backoff.current(&key);
                let msg = format!(
                    "back-off {} restarting failed container={} pod={}",
                    go_secs(delay),
                    c.name,
                    full_name(pod)
                );
                self.events.event(
                    &cref,
                    EventType::Warning,
                    reason::BACK_OFF,
                    &format!(
                        "Back-off restarting failed container {} in pod {}",
                        c.name,
                        full_name(pod)
                    ),
                );
                mem.waiting
                    .insert(c.name.clone(), ("CrashLoopBackOff".into(), msg));
                return Some(rem);
            }
            self.container_backoff.next(&key, finished);
        }
        let restart_count = latest.map(|l| l.restart_count + 1).unwrap_or(0);

        if secrets.is_none() {
            *secrets = Some(self.pull_secrets(pod).await);
        }
        let image_ref = match self
            .images
            .ensure(
                pod,
                c,
                secrets.as_deref().unwrap_or(&[]),
                Some(ctx.sandbox_config),
                &cref,
            )
            .await
        {
            Ok(r) => r,
            Err(e) => {
                mem.waiting
                    .insert(c.name.clone(), (e.reason.to_string(), e.message));
                return Some(Duration::from_secs(if e.reason == "ErrImageNeverPull" {
                    30
                } else {
                    5
                }));
            }
        };

        // A failed step shows on the pod (waiting reason + Failed event) and is retried.
        let fail = |mem: &mut PodMemory, why: &str, msg: String| {
            self.events.event(
                &cref,
                EventType::Warning,
                reason::FAILED,
                &format!("Error: {msg}"),
            );
            mem.waiting.insert(c.name.clone(), (why.to_string(), msg));
            Some(Duration::from_secs(5))
        };
        let env_ctx = EnvContext {
            pod,
            node: &self.node.allocatable,
            pod_ips: ctx.pod_ips,
            host_ips: &self.node.host_ips,
            node_name: &self.node.name,
        };
        let env = match container::make_environment(&env_ctx, c, self.env_source.as_ref()).await {
            Ok(env) => env,
            Err(e) => return fail(mem, "CreateContainerConfigError", e.to_string()),
        };
        let env_map: BTreeMap<String, String> = env.iter().cloned().collect();
        let mounts = match ctx.volumes.container_mounts(c, &env_map, restart_count) {
            Ok(m) => m,
            Err(e) => return fail(mem, "CreateContainerConfigError", e.to_string()),
        };
        let config = container::container_config(ContainerConfigInput {
            pod,
            container: c,
            image_ref: &image_ref,
            env: &env,
            mounts,
            restart_count,
            init,
            node_memory_bytes: self.node.allocatable.memory_bytes,
        });
        let id = match self
            .runtime
            .create_container(ctx.sandbox_id, &config, ctx.sandbox_config)
            .await
        {
            Ok(id) => id,
            Err(e) => return fail(mem, "CreateContainerError", e.to_string()),
        };
        self.events.event(
            &cref,
            EventType::Normal,
            reason::CREATED,
            &format!("Created container: {}", c.name),
        );
        if let Err(e) = self.runtime.start_container(&id).await {
            return fail(mem, "RunContainerError", e.to_string());
        }
        self.events.event(
            &cref,
            EventType::Normal,
            reason::STARTED,
            &format!("Started container {}", c.name),
        );
        mem.waiting.remove(&c.name);
        info!(container = %c.name, id = %id, restart_count, "container started");

        if let Some(h) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) {
            let ip = ctx.pod_ips.first().map(String::as_str);
            let timeout = Duration::from_secs(grace_seconds(pod).max(1) as u64);
            if let Err(e) =
                crate::lifecycle::run_handler(self.runtime.as_ref(), pod, c, &id, ip, h, timeout)
                    .await
            {
                let msg = e.to_string();
                self.events.event(
                    &cref,
                    EventType::Warning,
                    reason::FAILED_POST_START_HOOK,
                    &msg,
                );
                self.kill_container(
                    pod,
                    Some((c, init)),
                    &id,
                    &c.name,
                    &format!("FailedPostStartHook: {msg}"),
                    grace_seconds(pod),
                )
                .await;
                mem.waiting
                    .insert(c.name.clone(), ("PostStartHookError".into(), msg));
            }
        }
        None
    }

    /// Stops one container: preStop hook first (within the grace period), then CRI stop with
    /// what is left of it.
    pub async fn kill_container(
        &self,
        pod: &Pod,
        spec: Option<(&Container, bool)>,
        id: &str,
        name: &str,
        message: &str,
        grace: i64,
    ) {
        let init = spec.map(|(_, i)| i).unwrap_or(false);
        let cref = pod_ref(pod, Some(container_field_path(name, init)));
        self.events.event(
            &cref,
            EventType::Normal,
            reason::KILLING,
            &format!("Stopping container {name}"),
        );
        debug!(container = %name, %message, "killing container");
        let started = std::time::Instant::now();
        let mut grace = Duration::from_secs(grace as u64);
        if let Some((c, _)) = spec {
            if let Some(h) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) {
                if !grace.is_zero() {
                    let ip = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref());
                    let hook = crate::lifecycle::run_handler(
                        self.runtime.as_ref(),
                        pod,
                        c,
                        id,
                        ip,
                        h,
                        grace,
                    );
                    if let Err(e) = hook.await {
                        self.events.event(
                            &cref,
                            EventType::Warning,
                            reason::FAILED_PRE_STOP_HOOK,
                            &e.to_string(),
                        );
                    }
                    // Upstream gives the container at least 2 s after its preStop hook.
                    grace = grace
                        .saturating_sub(started.elapsed())
                        .max(Duration::from_secs(2));
                }
            }
        }
        if let Err(e) = self.runtime.stop_container(id, grace).await {
            if !e.is_not_found() {
                warn!(container = %name, error = %e, "StopContainer failed");
            }
        }
    }

    /// Stops all running containers of a pod (in parallel, each with its grace) and its
    /// sandboxes. `pod` is None for an orphan whose object is gone.
    pub async fn kill_pod(&self, pod: Option<&Pod>, rt: &RuntimePod, grace: i64) {
        let running: Vec<&ContainerState> =
            rt.containers.iter().filter(|c| c.is_running()).collect();
        let kills = running.iter().map(|c| async move {
            match pod {
                Some(pod) => {
                    let spec = find_container(pod, &c.name);
                    self.kill_container(pod, spec, &c.id, &c.name, "pod is being killed", grace)
                        .await
                }
                None => {
                    if let Err(e) = self
                        .runtime
                        .stop_container(&c.id, Duration::from_secs(grace as u64))
                        .await
                    {
                        warn!(container = %c.name, error = %e, "StopContainer failed");
                    }
                }
            }
        });
        futures::future::join_all(kills).await;
        for s in rt.sandboxes.iter().filter(|s| s.ready) {
            if let Err(e) = self.runtime.stop_pod_sandbox(&s.id).await {
                warn!(sandbox = %s.id, error = %e, "StopPodSandbox failed");
            }
        }
    }

    /// Removes everything the pod left: containers, sandboxes, volumes, cgroups, probes.
    pub async fn cleanup_pod(&self, uid: &str, pod: Option<&Pod>) {
        self.probes.remove_pod(uid);
        self.images.forget_pod(uid);
        self.container_backoff.forget_prefix(&format!("{uid}/"));
        if let Ok(rt) = runtime_state::pod_status(self.runtime.as_ref(), uid).await {
            for s in &rt.sandboxes {
                if let Err(e) = self.runtime.stop_pod_sandbox(&s.id).await {
                    warn!(sandbox = %s.id, error = %e, "StopPodSandbox failed");
                }
                if let Err(e) = self.runtime.remove_pod_sandbox(&s.id).await {
                    warn!(sandbox = %s.id, error = %e, "RemovePodSandbox failed");
                }
            }
        }
        if let Err(e) = self.volumes.teardown(uid).await {
            warn!(error = %e, "volume teardown failed");
        }
        if let Some(cg) = &self.cgroups {
            let qos = pod.map(|p| self.qos(p));
            for q in qos.into_iter().chain([
                container::QosClass::Guaranteed,
                container::QosClass::Burstable,
                container::QosClass::BestEffort,
            ]) {
                let parent = pod_cgroup_parent(&self.settings.cgroup_root, q, uid);
                if let Err(e) = cg.remove_pod(&parent) {
                    debug!(error = %e, "pod cgroup removal");
                }
            }
        }
    }

    /// Keeps the newest two instances (current and previous, for `logs --previous`) of each
    /// container name; removes older exited ones, like upstream's container GC.
    async fn remove_old_containers(&self, rt: &RuntimePod) {
        let mut seen: HashMap<(&str, bool), usize> = HashMap::new();
        for c in &rt.containers {
            let n = seen.entry((c.name.as_str(), c.init)).or_default();
            *n += 1;
            if *n > 2 && c.phase == ContainerPhase::Exited {
                if let Err(e) = self.runtime.remove_container(&c.id).await {
                    debug!(container = %c.id, error = %e, "removing old container failed");
                }
            }
        }
    }
}

struct StartCtx<'a> {
    pod: &'a Pod,
    rt: &'a RuntimePod,
    sandbox_id: &'a str,
    sandbox_config: &'a api::PodSandboxConfig,
    volumes: &'a crate::volumes::PodVolumes,
    pod_ips: &'a [String],
}

fn find_container<'a>(pod: &'a Pod, name: &str) -> Option<(&'a Container, bool)> {
    let spec = pod.spec.as_ref()?;
    if let Some(c) = spec.containers.iter().find(|c| c.name == name) {
        return Some((c, false));
    }
    spec.init_containers
        .as_ref()?
        .iter()
        .find(|c| c.name == name)
        .map(|c| (c, true))
}

fn go_secs(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 && s % 60 == 0 {
        format!("{}m0s", s / 60)
    } else if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

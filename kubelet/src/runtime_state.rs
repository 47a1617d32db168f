//! The runtime's view of a pod (upstream's `kubecontainer.PodStatus`): its sandboxes and
//! containers read back from CRI and grouped by the pod UID label, newest first.

use std::collections::HashMap;

use oxlet_cri::api;
use oxlet_cri::Runtime;

use crate::labels;

/// State of one container as CRI reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerPhase {
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Exited (or never started and gave up).
    Exited,
    /// The runtime does not know.
    Unknown,
}

impl ContainerPhase {
    fn from_cri(state: i32) -> Self {
        match api::ContainerState::try_from(state) {
            Ok(api::ContainerState::ContainerCreated) => Self::Created,
            Ok(api::ContainerState::ContainerRunning) => Self::Running,
            Ok(api::ContainerState::ContainerExited) => Self::Exited,
            _ => Self::Unknown,
        }
    }
}

/// One sandbox of a pod.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxState {
    /// CRI sandbox ID.
    pub id: String,
    /// `metadata.attempt`: how many sandboxes the pod had before this one.
    pub attempt: u32,
    /// SANDBOX_READY.
    pub ready: bool,
    /// Creation time, ns since the epoch.
    pub created_at: i64,
    /// Pod IPs, primary first (filled by [`pod_status`], empty from a plain list).
    pub ips: Vec<String>,
}

/// One container of a pod (any attempt).
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerState {
    /// CRI container ID.
    pub id: String,
    /// Name in the pod spec.
    pub name: String,
    /// The sandbox it runs in.
    pub sandbox_id: String,
    /// CRI state.
    pub phase: ContainerPhase,
    /// Times in ns since the epoch (0 when unset).
    pub created_at: i64,
    /// When it started.
    pub started_at: i64,
    /// When it exited.
    pub finished_at: i64,
    /// Exit code when exited.
    pub exit_code: i32,
    /// Runtime's reason (`Completed`, `Error`, `OOMKilled`).
    pub reason: String,
    /// Runtime's message.
    pub message: String,
    /// The image as the spec named it.
    pub image: String,
    /// The image reference the runtime resolved (digest).
    pub image_ref: String,
    /// restartCount annotation set at creation.
    pub restart_count: u32,
    /// Spec hash annotation set at creation.
    pub hash: String,
    /// An init container.
    pub init: bool,
    /// The log file.
    pub log_path: String,
    /// Whether full status was read (exit code, times); a plain list only has phase and ID.
    pub detailed: bool,
}

impl ContainerState {
    /// Running now.
    pub fn is_running(&self) -> bool {
        self.phase == ContainerPhase::Running
    }

    /// Exited with code 0.
    pub fn succeeded(&self) -> bool {
        self.phase == ContainerPhase::Exited && self.exit_code == 0
    }
}

/// Sandboxes and containers of one pod, newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuntimePod {
    /// Pod UID.
    pub uid: String,
    /// Pod name (from labels).
    pub name: String,
    /// Pod namespace (from labels).
    pub namespace: String,
    /// Sandboxes, newest first.
    pub sandboxes: Vec<SandboxState>,
    /// Containers of every sandbox, newest first.
    pub containers: Vec<ContainerState>,
}

impl RuntimePod {
    /// The newest container with this name (of the right kind).
    pub fn latest(&self, name: &str, init: bool) -> Option<&ContainerState> {
        self.containers
            .iter()
            .find(|c| c.name == name && c.init == init)
    }

    /// The newest sandbox.
    pub fn sandbox(&self) -> Option<&SandboxState> {
        self.sandboxes.first()
    }

    /// Anything running (a container, or a ready sandbox).
    pub fn any_running(&self) -> bool {
        self.containers.iter().any(|c| c.is_running()) || self.sandboxes.iter().any(|s| s.ready)
    }

    /// A comparable summary for PLEG: IDs with their phases.
    pub fn fingerprint(&self) -> Vec<(String, u8)> {
        let mut v: Vec<(String, u8)> = self
            .sandboxes
            .iter()
            .map(|s| (s.id.clone(), s.ready as u8))
            .chain(
                self.containers
                    .iter()
                    .map(|c| (c.id.clone(), 10 + c.phase as u8)),
            )
            .collect();
        v.sort();
        v
    }
}

fn label<'a>(m: &'a HashMap<String, String>, k: &str) -> &'a str {
    m.get(k).map(String::as_str).unwrap_or("")
}

fn container_from(
    id: String,
    sandbox_id: String,
    meta_name: Option<String>,
    labels_: &HashMap<String, String>,
    annotations: &HashMap<String, String>,
) -> ContainerState {
    ContainerState {
        id,
        name: meta_name.unwrap_or_else(|| label(labels_, labels::CONTAINER_NAME).to_string()),
        sandbox_id,
        phase: ContainerPhase::Unknown,
        created_at: 0,
        started_at: 0,
        finished_at: 0,
        exit_code: 0,
        reason: String::new(),
        message: String::new(),
        image: String::new(),
        image_ref: String::new(),
        restart_count: label(annotations, labels::CONTAINER_RESTART_COUNT)
            .parse()
            .unwrap_or(0),
        hash: label(annotations, labels::CONTAINER_HASH).to_string(),
        init: label(annotations, labels::CONTAINER_TYPE) == "init",
        log_path: String::new(),
        detailed: false,
    }
}

/// Every pod the runtime has that the kubelet created (sandboxes with a pod UID label),
/// from two list calls; container details are not filled.
pub async fn list_pods(runtime: &dyn Runtime) -> oxlet_cri::Result<HashMap<String, RuntimePod>> {
    let sandboxes = runtime.list_pod_sandbox(None).await?;
    let containers = runtime.list_containers(None).await?;
    let mut pods: HashMap<String, RuntimePod> = HashMap::new();
    for s in sandboxes {
        let uid = label(&s.labels, labels::POD_UID).to_string();
        if uid.is_empty() {
            continue;
        }
        let pod = pods.entry(uid.clone()).or_insert_with(|| RuntimePod {
            uid,
            name: label(&s.labels, labels::POD_NAME).to_string(),
            namespace: label(&s.labels, labels::POD_NAMESPACE).to_string(),
            ..Default::default()
        });
        pod.sandboxes.push(SandboxState {
            id: s.id,
            attempt: s.metadata.map(|m| m.attempt).unwrap_or(0),
            ready: s.state == api::PodSandboxState::SandboxReady as i32,
            created_at: s.created_at,
            ips: Vec::new(),
        });
    }
    for c in containers {
        let uid = label(&c.labels, labels::POD_UID).to_string();
        let Some(pod) = pods.get_mut(&uid) else {
            continue;
        };
        let mut st = container_from(
            c.id,
            c.pod_sandbox_id,
            c.metadata.map(|m| m.name),
            &c.labels,
            &c.annotations,
        );
        st.phase = ContainerPhase::from_cri(c.state);
        st.created_at = c.created_at;
        st.image = c.image.map(|i| i.image).unwrap_or_default();
        st.image_ref = c.image_ref;
        pod.containers.push(st);
    }
    for p in pods.values_mut() {
        sort(p);
    }
    Ok(pods)
}

fn sort(p: &mut RuntimePod) {
    p.sandboxes
        .sort_by_key(|s| std::cmp::Reverse((s.attempt, s.created_at)));
    p.containers
        .sort_by_key(|c| std::cmp::Reverse((c.created_at, c.restart_count)));
}

/// Full runtime status of one pod: sandboxes with IPs, containers with exit codes and times.
/// A container or sandbox that vanishes between list and status is skipped.
pub async fn pod_status(runtime: &dyn Runtime, uid: &str) -> oxlet_cri::Result<RuntimePod> {
    let selector = HashMap::from([(labels::POD_UID.to_string(), uid.to_string())]);
    let sandboxes = runtime
        .list_pod_sandbox(Some(api::PodSandboxFilter {
            label_selector: selector.clone(),
            ..Default::default()
        }))
        .await?;
    let mut pod = RuntimePod {
        uid: uid.to_string(),
        ..Default::default()
    };
    for s in sandboxes {
        pod.name = label(&s.labels, labels::POD_NAME).to_string();
        pod.namespace = label(&s.labels, labels::POD_NAMESPACE).to_string();
        let ready = s.state == api::PodSandboxState::SandboxReady as i32;
        let mut ips = Vec::new();
        if ready {
            match runtime.pod_sandbox_status(&s.id, false).await {
                Ok(st) => {
                    if let Some(net) = st.status.and_then(|s| s.network) {
                        if !net.ip.is_empty() {
                            ips.push(net.ip);
                        }
                        ips.extend(net.additional_ips.into_iter().map(|i| i.ip));
                    }
                }
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e),
            }
        }
        pod.sandboxes.push(SandboxState {
            id: s.id,
            attempt: s.metadata.map(|m| m.attempt).unwrap_or(0),
            ready,
            created_at: s.created_at,
            ips,
        });
    }
    let containers = runtime
        .list_containers(Some(api::ContainerFilter {
            label_selector: selector,
            ..Default::default()
        }))
        .await?;
    for c in containers {
        let status = match runtime.container_status(&c.id, false).await {
            Ok(s) => s,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        };
        let Some(s) = status.status else { continue };
        let mut st = container_from(
            s.id,
            c.pod_sandbox_id,
            s.metadata.map(|m| m.name),
            &s.labels,
            &s.annotations,
        );
        st.phase = ContainerPhase::from_cri(s.state);
        st.created_at = s.created_at;
        st.started_at = s.started_at;
        st.finished_at = s.finished_at;
        st.exit_code = s.exit_code;
        st.reason = s.reason;
        st.message = s.message;
        st.image = s.image.map(|i| i.image).unwrap_or_default();
        st.image_ref = s.image_ref;
        st.log_path = s.log_path;
        st.detailed = true;
        pod.containers.push(st);
    }
    sort(&mut pod);
    Ok(pod)
}

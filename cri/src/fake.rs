//! [`FakeRuntime`]: an in-memory [`Runtime`](crate::Runtime) for unit tests.
//!
//! It keeps sandboxes, containers and images with their states and timestamps, records every
//! call in order (so a test asserts `want == fake.calls()`), and fails the Nth call of a method
//! on request. Time is a counter the test controls ([`FakeRuntime::advance`]), never the wall
//! clock. IDs are predictable: `sandbox-1`, `container-1`, ... in creation order.
//!
//! Behaviour follows containerd where tests depend on it: creating a container needs a ready
//! sandbox and a present image; stop and remove of missing sandboxes or containers succeed;
//! removing a sandbox removes its containers.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use tonic::{Code, Status};

use crate::api;
use crate::error::{Error, Result};
use crate::runtime::{pod_display_name, ImageService, RuntimeService};

/// A CRI method, as recorded by the fake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(missing_docs)] // Each variant is the CRI RPC of the same name.
pub enum Method {
    Version,
    Status,
    RunPodSandbox,
    StopPodSandbox,
    RemovePodSandbox,
    PodSandboxStatus,
    ListPodSandbox,
    CreateContainer,
    StartContainer,
    StopContainer,
    RemoveContainer,
    ListContainers,
    ContainerStatus,
    UpdateContainerResources,
    ReopenContainerLog,
    ExecSync,
    Exec,
    Attach,
    PortForward,
    ContainerStats,
    ListContainerStats,
    ListImages,
    ImageStatus,
    PullImage,
    RemoveImage,
    ImageFsInfo,
}

impl Method {
    /// The CRI RPC name, e.g. `"RunPodSandbox"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Version => "Version",
            Method::Status => "Status",
            Method::RunPodSandbox => "RunPodSandbox",
            Method::StopPodSandbox => "StopPodSandbox",
            Method::RemovePodSandbox => "RemovePodSandbox",
            Method::PodSandboxStatus => "PodSandboxStatus",
            Method::ListPodSandbox => "ListPodSandbox",
            Method::CreateContainer => "CreateContainer",
            Method::StartContainer => "StartContainer",
            Method::StopContainer => "StopContainer",
            Method::RemoveContainer => "RemoveContainer",
            Method::ListContainers => "ListContainers",
            Method::ContainerStatus => "ContainerStatus",
            Method::UpdateContainerResources => "UpdateContainerResources",
            Method::ReopenContainerLog => "ReopenContainerLog",
            Method::ExecSync => "ExecSync",
            Method::Exec => "Exec",
            Method::Attach => "Attach",
            Method::PortForward => "PortForward",
            Method::ContainerStats => "ContainerStats",
            Method::ListContainerStats => "ListContainerStats",
            Method::ListImages => "ListImages",
            Method::ImageStatus => "ImageStatus",
            Method::PullImage => "PullImage",
            Method::RemoveImage => "RemoveImage",
            Method::ImageFsInfo => "ImageFsInfo",
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One recorded call: the method and its object (sandbox or container ID, `namespace/name` for
/// RunPodSandbox, container name for CreateContainer, image for image calls, empty for lists).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Call {
    /// The method called.
    pub method: Method,
    /// What it was called on.
    pub object: String,
}

impl Call {
    /// A call of `method` on `object`, for building `want` lists.
    pub fn new(method: Method, object: impl Into<String>) -> Self {
        Self {
            method,
            object: object.into(),
        }
    }
}

/// Timestamps start here (2023-11-14T22:13:20Z, in nanoseconds), so they are never zero.
const EPOCH_NANOS: i64 = 1_700_000_000_000_000_000;

#[derive(Debug, Clone)]
struct Sandbox {
    status: api::PodSandboxStatus,
    config: api::PodSandboxConfig,
}

#[derive(Debug, Clone)]
struct Container {
    status: api::ContainerStatus,
    sandbox_id: String,
}

#[derive(Debug, Default)]
struct State {
    now: i64,
    next_sandbox: u64,
    next_container: u64,
    sandboxes: BTreeMap<String, Sandbox>,
    containers: BTreeMap<String, Container>,
    images: BTreeMap<String, api::Image>,
    calls: Vec<Call>,
    counts: HashMap<Method, usize>,
    /// (method, nth call, status) still to be injected.
    failures: Vec<(Method, usize, Status)>,
    exec_response: api::ExecSyncResponse,
    stop_exit_code: i32,
}

/// An in-memory CRI runtime for tests. See the module documentation.
#[derive(Debug)]
pub struct FakeRuntime {
    state: Mutex<State>,
}

impl Default for FakeRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeRuntime {
    /// An empty runtime: no sandboxes, containers or images; time at a fixed epoch.
    pub fn new() -> Self {
        Self {
            state: Mutex::new(State {
                now: EPOCH_NANOS,
                // As runc reports a SIGKILLed process: 128 + 9.
                stop_exit_code: 137,
                ..Default::default()
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the state from the assertions that follow.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every call so far, in order, with its object.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The methods called so far, in order.
    pub fn methods(&self) -> Vec<Method> {
        self.lock().calls.iter().map(|c| c.method).collect()
    }

    /// Forgets the recorded calls (not the per-method counts used by [`Self::fail_nth`]).
    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// Makes the `n`th call (1-based, counting all calls of `method` since creation) of
    /// `method` fail with `code` and `message`, without any effect on the state.
    pub fn fail_nth(&self, method: Method, n: usize, code: Code, message: impl Into<String>) {
        self.lock()
            .failures
            .push((method, n, Status::new(code, message.into())));
    }

    /// Makes the next call of `method` fail with `code` and `message`.
    pub fn fail_next(&self, method: Method, code: Code, message: impl Into<String>) {
        let mut st = self.lock();
        let n = st.counts.get(&method).copied().unwrap_or(0) + 1;
        st.failures
            .push((method, n, Status::new(code, message.into())));
    }

    /// Moves the fake clock forward.
    pub fn advance(&self, by: Duration) {
        let nanos = i64::try_from(by.as_nanos()).unwrap_or(i64::MAX);
        let mut st = self.lock();
        st.now = st.now.saturating_add(nanos);
    }

    /// The fake clock, in Unix nanoseconds (the unit of CRI timestamps).
    pub fn now(&self) -> i64 {
        self.lock().now
    }

    /// Adds a present image named `name` (tag or digest reference); returns its ID.
    pub fn add_image(&self, name: &str) -> String {
        let mut st = self.lock();
        add_image(&mut st, name)
    }

    /// Simulates the container's process exiting on its own with `exit_code` and `reason`
    /// (e.g. `"Completed"`, `"Error"`, `"OOMKilled"`). Returns false if there is no such container.
    pub fn exit_container(&self, container_id: &str, exit_code: i32, reason: &str) -> bool {
        let mut st = self.lock();
        let now = st.now;
        match st.containers.get_mut(container_id) {
            Some(c) => {
                c.status.state = api::ContainerState::ContainerExited as i32;
                c.status.finished_at = now;
                c.status.exit_code = exit_code;
                c.status.reason = reason.to_string();
                true
            }
            None => false,
        }
    }

    /// Sets the exit code StopContainer leaves on running containers (default 137).
    pub fn set_stop_exit_code(&self, code: i32) {
        self.lock().stop_exit_code = code;
    }

    /// Sets what every later ExecSync returns (default: exit 0, no output).
    pub fn set_exec_response(&self, response: api::ExecSyncResponse) {
        self.lock().exec_response = response;
    }

    /// The config a sandbox was run with.
    pub fn sandbox_config(&self, sandbox_id: &str) -> Option<api::PodSandboxConfig> {
        self.lock()
            .sandboxes
            .get(sandbox_id)
            .map(|s| s.config.clone())
    }

    /// Records the call and returns the injected failure, if any.
    fn begin(
        &self,
        method: Method,
        object: &str,
    ) -> std::result::Result<MutexGuard<'_, State>, Status> {
        let mut st = self.lock();
        st.calls.push(Call::new(method, object));
        let count = st.counts.entry(method).or_insert(0);
        *count += 1;
        let n = *count;
        if let Some(pos) = st
            .failures
            .iter()
            .position(|(m, nth, _)| *m == method && *nth == n)
        {
            let (_, _, status) = st.failures.remove(pos);
            return Err(status);
        }
        Ok(st)
    }
}

fn add_image(st: &mut State, name: &str) -> String {
    if let Some(img) = find_image(st, name) {
        return img.id.clone();
    }
    let id = format!("sha256:{:x}", Sha256::digest(name.as_bytes()));
    let (repo_tags, repo_digests) = if name.contains('@') {
        (vec![], vec![name.to_string()])
    } else {
        (vec![name.to_string()], vec![])
    };
    st.images.insert(
        id.clone(),
        api::Image {
            id: id.clone(),
            repo_tags,
            repo_digests,
            size: 1024 * 1024,
            spec: Some(crate::runtime::image_spec(name)),
            ..Default::default()
        },
    );
    id
}

fn find_image<'a>(st: &'a State, name: &str) -> Option<&'a api::Image> {
    st.images.values().find(|i| {
        i.id == name
            || i.id.strip_prefix("sha256:") == Some(name)
            || i.repo_tags.iter().any(|t| t == name)
            || i.repo_digests.iter().any(|t| t == name)
    })
}

fn labels_match(selector: &HashMap<String, String>, labels: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn not_found(what: &str, id: &str) -> Status {
    Status::not_found(format!("{what} \"{id}\" not found"))
}

#[async_trait]
impl RuntimeService for FakeRuntime {
    async fn version(&self) -> Result<api::VersionResponse> {
        let _st = self
            .begin(Method::Version, "")
            .map_err(|source| Error::Rpc {
                op: "Version",
                source,
            })?;
        Ok(api::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "fake".into(),
            runtime_version: "0.1.0".into(),
            runtime_api_version: "v1".into(),
        })
    }

    async fn status(&self, _verbose: bool) -> Result<api::StatusResponse> {
        let _st = self
            .begin(Method::Status, "")
            .map_err(|source| Error::Rpc {
                op: "Status",
                source,
            })?;
        let cond = |t: &str| api::RuntimeCondition {
            r#type: t.into(),
            status: true,
            ..Default::default()
        };
        Ok(api::StatusResponse {
            status: Some(api::RuntimeStatus {
                conditions: vec![cond("RuntimeReady"), cond("NetworkReady")],
            }),
            ..Default::default()
        })
    }

    async fn run_pod_sandbox(
        &self,
        config: &api::PodSandboxConfig,
        runtime_handler: &str,
    ) -> Result<String> {
        let pod = pod_display_name(config);
        let mut st =
            self.begin(Method::RunPodSandbox, &pod)
                .map_err(|source| Error::RunPodSandbox {
                    pod: pod.clone(),
                    source,
                })?;
        st.next_sandbox += 1;
        let id = format!("sandbox-{}", st.next_sandbox);
        let status = api::PodSandboxStatus {
            id: id.clone(),
            metadata: config.metadata.clone(),
            state: api::PodSandboxState::SandboxReady as i32,
            created_at: st.now,
            network: Some(api::PodSandboxNetworkStatus {
                ip: format!("10.88.0.{}", st.next_sandbox % 250 + 2),
                additional_ips: vec![],
            }),
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
            runtime_handler: runtime_handler.to_string(),
            ..Default::default()
        };
        st.sandboxes.insert(
            id.clone(),
            Sandbox {
                status,
                config: config.clone(),
            },
        );
        Ok(id)
    }

    async fn stop_pod_sandbox(&self, sandbox_id: &str) -> Result<()> {
        let mut st = self
            .begin(Method::StopPodSandbox, sandbox_id)
            .map_err(|source| Error::StopPodSandbox {
                sandbox_id: sandbox_id.into(),
                source,
            })?;
        let (now, code) = (st.now, st.stop_exit_code);
        for c in st.containers.values_mut() {
            if c.sandbox_id == sandbox_id {
                stop(&mut c.status, now, code);
            }
        }
        if let Some(s) = st.sandboxes.get_mut(sandbox_id) {
            s.status.state = api::PodSandboxState::SandboxNotready as i32;
        }
        Ok(())
    }

    async fn remove_pod_sandbox(&self, sandbox_id: &str) -> Result<()> {
        let mut st = self
            .begin(Method::RemovePodSandbox, sandbox_id)
            .map_err(|source| Error::RemovePodSandbox {
                sandbox_id: sandbox_id.into(),
                source,
            })?;
        st.containers.retain(|_, c| c.sandbox_id != sandbox_id);
        st.sandboxes.remove(sandbox_id);
        Ok(())
    }

    async fn pod_sandbox_status(
        &self,
        sandbox_id: &str,
        _verbose: bool,
    ) -> Result<api::PodSandboxStatusResponse> {
        let err = |source| Error::PodSandboxStatus {
            sandbox_id: sandbox_id.into(),
            source,
        };
        let st = self
            .begin(Method::PodSandboxStatus, sandbox_id)
            .map_err(err)?;
        let sb = st
            .sandboxes
            .get(sandbox_id)
            .ok_or_else(|| err(not_found("sandbox", sandbox_id)))?;
        Ok(api::PodSandboxStatusResponse {
            status: Some(sb.status.clone()),
            timestamp: st.now,
            ..Default::default()
        })
    }

    async fn list_pod_sandbox(
        &self,
        filter: Option<api::PodSandboxFilter>,
    ) -> Result<Vec<api::PodSandbox>> {
        let st = self
            .begin(Method::ListPodSandbox, "")
            .map_err(|source| Error::Rpc {
                op: "ListPodSandbox",
                source,
            })?;
        let f = filter.unwrap_or_default();
        Ok(st
            .sandboxes
            .values()
            .map(|s| &s.status)
            .filter(|s| f.id.is_empty() || s.id == f.id)
            .filter(|s| f.state.is_none_or(|v| v.state == s.state))
            .filter(|s| labels_match(&f.label_selector, &s.labels))
            .map(|s| api::PodSandbox {
                id: s.id.clone(),
                metadata: s.metadata.clone(),
                state: s.state,
                created_at: s.created_at,
                labels: s.labels.clone(),
                annotations: s.annotations.clone(),
                runtime_handler: s.runtime_handler.clone(),
            })
            .collect())
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: &api::ContainerConfig,
        sandbox_config: &api::PodSandboxConfig,
    ) -> Result<String> {
        let name = config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let err = |source| Error::CreateContainer {
            container: name.clone(),
            sandbox_id: sandbox_id.into(),
            source,
        };
        let mut st = self.begin(Method::CreateContainer, &name).map_err(err)?;
        match st.sandboxes.get(sandbox_id) {
            None => return Err(err(not_found("sandbox", sandbox_id))),
            Some(s) if s.status.state != api::PodSandboxState::SandboxReady as i32 => {
                return Err(err(Status::failed_precondition(format!(
                    "sandbox {sandbox_id} is not ready"
                ))))
            }
            Some(_) => {}
        }
        let image_name = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        let image_id = find_image(&st, &image_name)
            .map(|i| i.id.clone())
            .ok_or_else(|| err(not_found("image", &image_name)))?;
        st.next_container += 1;
        let id = format!("container-{}", st.next_container);
        let log_path = if config.log_path.is_empty() {
            String::new()
        } else {
            format!("{}/{}", sandbox_config.log_directory, config.log_path)
        };
        let status = api::ContainerStatus {
            id: id.clone(),
            metadata: config.metadata.clone(),
            state: api::ContainerState::ContainerCreated as i32,
            created_at: st.now,
            image: config.image.clone(),
            image_ref: image_id.clone(),
            image_id,
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
            mounts: config.mounts.clone(),
            log_path,
            ..Default::default()
        };
        st.containers.insert(
            id.clone(),
            Container {
                status,
                sandbox_id: sandbox_id.to_string(),
            },
        );
        Ok(id)
    }

    async fn start_container(&self, container_id: &str) -> Result<()> {
        let err = |source| Error::Container {
            op: "StartContainer",
            container_id: container_id.into(),
            source,
        };
        let mut st = self
            .begin(Method::StartContainer, container_id)
            .map_err(err)?;
        let now = st.now;
        let c = st
            .containers
            .get_mut(container_id)
            .ok_or_else(|| err(not_found("container", container_id)))?;
        if c.status.state != api::ContainerState::ContainerCreated as i32 {
            return Err(err(Status::failed_precondition(format!(
                "container {container_id} is in {} state",
                state_name(c.status.state)
            ))));
        }
        c.status.state = api::ContainerState::ContainerRunning as i32;
        c.status.started_at = now;
        Ok(())
    }

    async fn stop_container(&self, container_id: &str, _timeout: Duration) -> Result<()> {
        let err = |source| Error::Container {
            op: "StopContainer",
            container_id: container_id.into(),
            source,
        };
        let mut st = self
            .begin(Method::StopContainer, container_id)
            .map_err(err)?;
        let (now, code) = (st.now, st.stop_exit_code);
        let c = st
            .containers
            .get_mut(container_id)
            .ok_or_else(|| err(not_found("container", container_id)))?;
        stop(&mut c.status, now, code);
        Ok(())
    }

    async fn remove_container(&self, container_id: &str) -> Result<()> {
        let mut st = self
            .begin(Method::RemoveContainer, container_id)
            .map_err(|source| Error::Container {
                op: "RemoveContainer",
                container_id: container_id.into(),
                source,
            })?;
        st.containers.remove(container_id);
        Ok(())
    }

    async fn list_containers(
        &self,
        filter: Option<api::ContainerFilter>,
    ) -> Result<Vec<api::Container>> {
        let st = self
            .begin(Method::ListContainers, "")
            .map_err(|source| Error::Rpc {
                op: "ListContainers",
                source,
            })?;
        let f = filter.unwrap_or_default();
        Ok(st
            .containers
            .values()
            .filter(|c| f.id.is_empty() || c.status.id == f.id)
            .filter(|c| f.pod_sandbox_id.is_empty() || c.sandbox_id == f.pod_sandbox_id)
            .filter(|c| f.state.is_none_or(|v| v.state == c.status.state))
            .filter(|c| labels_match(&f.label_selector, &c.status.labels))
            .map(|c| api::Container {
                id: c.status.id.clone(),
                pod_sandbox_id: c.sandbox_id.clone(),
                metadata: c.status.metadata.clone(),
                image: c.status.image.clone(),
                image_ref: c.status.image_ref.clone(),
                state: c.status.state,
                created_at: c.status.created_at,
                labels: c.status.labels.clone(),
                annotations: c.status.annotations.clone(),
                image_id: c.status.image_id.clone(),
            })
            .collect())
    }

    async fn container_status(
        &self,
        container_id: &str,
        _verbose: bool,
    ) -> Result<api::ContainerStatusResponse> {
        let err = |source| Error::Container {
            op: "ContainerStatus",
            container_id: container_id.into(),
            source,
        };
        let st = self
            .begin(Method::ContainerStatus, container_id)
            .map_err(err)?;
        let c = st
            .containers
            .get(container_id)
            .ok_or_else(|| err(not_found("container", container_id)))?;
        Ok(api::ContainerStatusResponse {
            status: Some(c.status.clone()),
            ..Default::default()
        })
    }

    async fn update_container_resources(
        &self,
        container_id: &str,
        linux: &api::LinuxContainerResources,
    ) -> Result<()> {
        let err = |source| Error::Container {
            op: "UpdateContainerResources",
            container_id: container_id.into(),
            source,
        };
        let mut st = self
            .begin(Method::UpdateContainerResources, container_id)
            .map_err(err)?;
        let c = st
            .containers
            .get_mut(container_id)
            .ok_or_else(|| err(not_found("container", container_id)))?;
        c.status.resources = Some(api::ContainerResources {
            linux: Some(linux.clone()),
            windows: None,
        });
        Ok(())
    }

    async fn reopen_container_log(&self, container_id: &str) -> Result<()> {
        let err = |source| Error::Container {
            op: "ReopenContainerLog",
            container_id: container_id.into(),
            source,
        };
        let st = self
            .begin(Method::ReopenContainerLog, container_id)
            .map_err(err)?;
        if !st.containers.contains_key(container_id) {
            return Err(err(not_found("container", container_id)));
        }
        Ok(())
    }

    async fn exec_sync(
        &self,
        container_id: &str,
        _cmd: &[String],
        _timeout: Duration,
    ) -> Result<api::ExecSyncResponse> {
        let err = |source| Error::Container {
            op: "ExecSync",
            container_id: container_id.into(),
            source,
        };
        let st = self.begin(Method::ExecSync, container_id).map_err(err)?;
        running(&st, container_id).map_err(err)?;
        Ok(st.exec_response.clone())
    }

    async fn exec(&self, request: api::ExecRequest) -> Result<String> {
        let id = request.container_id;
        let err = |source| Error::Container {
            op: "Exec",
            container_id: id.clone(),
            source,
        };
        let st = self.begin(Method::Exec, &id).map_err(err)?;
        running(&st, &id).map_err(err)?;
        Ok(format!("http://127.0.0.1:10010/exec/{id}"))
    }

    async fn attach(&self, request: api::AttachRequest) -> Result<String> {
        let id = request.container_id;
        let err = |source| Error::Container {
            op: "Attach",
            container_id: id.clone(),
            source,
        };
        let st = self.begin(Method::Attach, &id).map_err(err)?;
        running(&st, &id).map_err(err)?;
        Ok(format!("http://127.0.0.1:10010/attach/{id}"))
    }

    async fn port_forward(&self, sandbox_id: &str, _ports: &[i32]) -> Result<String> {
        let err = |source| Error::PortForward {
            sandbox_id: sandbox_id.into(),
            source,
        };
        let st = self.begin(Method::PortForward, sandbox_id).map_err(err)?;
        if !st.sandboxes.contains_key(sandbox_id) {
            return Err(err(not_found("sandbox", sandbox_id)));
        }
        Ok(format!("http://127.0.0.1:10010/portforward/{sandbox_id}"))
    }

    async fn container_stats(&self, container_id: &str) -> Result<Option<api::ContainerStats>> {
        let err = |source| Error::Container {
            op: "ContainerStats",
            container_id: container_id.into(),
            source,
        };
        let st = self
            .begin(Method::ContainerStats, container_id)
            .map_err(err)?;
        let c = st
            .containers
            .get(container_id)
            .ok_or_else(|| err(not_found("container", container_id)))?;
        Ok(Some(stats_of(c, st.now)))
    }

    async fn list_container_stats(
        &self,
        filter: Option<api::ContainerStatsFilter>,
    ) -> Result<Vec<api::ContainerStats>> {
        let st = self
            .begin(Method::ListContainerStats, "")
            .map_err(|source| Error::Rpc {
                op: "ListContainerStats",
                source,
            })?;
        let f = filter.unwrap_or_default();
        Ok(st
            .containers
            .values()
            .filter(|c| f.id.is_empty() || c.status.id == f.id)
            .filter(|c| f.pod_sandbox_id.is_empty() || c.sandbox_id == f.pod_sandbox_id)
            .filter(|c| labels_match(&f.label_selector, &c.status.labels))
            .map(|c| stats_of(c, st.now))
            .collect())
    }
}

#[async_trait]
impl ImageService for FakeRuntime {
    async fn list_images(&self, filter: Option<api::ImageFilter>) -> Result<Vec<api::Image>> {
        let st = self
            .begin(Method::ListImages, "")
            .map_err(|source| Error::Rpc {
                op: "ListImages",
                source,
            })?;
        let wanted = filter.and_then(|f| f.image).map(|i| i.image);
        Ok(match wanted {
            Some(name) if !name.is_empty() => find_image(&st, &name).cloned().into_iter().collect(),
            _ => st.images.values().cloned().collect(),
        })
    }

    async fn image_status(&self, image: &api::ImageSpec) -> Result<Option<api::Image>> {
        let st = self
            .begin(Method::ImageStatus, &image.image)
            .map_err(|source| Error::Image {
                op: "ImageStatus",
                image: image.image.clone(),
                source,
            })?;
        Ok(find_image(&st, &image.image).cloned())
    }

    async fn pull_image(
        &self,
        image: &api::ImageSpec,
        _auth: Option<&api::AuthConfig>,
        _sandbox_config: Option<&api::PodSandboxConfig>,
    ) -> Result<String> {
        let mut st = self
            .begin(Method::PullImage, &image.image)
            .map_err(|source| Error::Image {
                op: "PullImage",
                image: image.image.clone(),
                source,
            })?;
        Ok(add_image(&mut st, &image.image))
    }

    async fn remove_image(&self, image: &api::ImageSpec) -> Result<()> {
        let mut st = self
            .begin(Method::RemoveImage, &image.image)
            .map_err(|source| Error::Image {
                op: "RemoveImage",
                image: image.image.clone(),
                source,
            })?;
        if let Some(id) = find_image(&st, &image.image).map(|i| i.id.clone()) {
            st.images.remove(&id);
        }
        Ok(())
    }

    async fn image_fs_info(&self) -> Result<api::ImageFsInfoResponse> {
        let st = self
            .begin(Method::ImageFsInfo, "")
            .map_err(|source| Error::Rpc {
                op: "ImageFsInfo",
                source,
            })?;
        let used: u64 = st.images.values().map(|i| i.size).sum();
        Ok(api::ImageFsInfoResponse {
            image_filesystems: vec![api::FilesystemUsage {
                timestamp: st.now,
                fs_id: Some(api::FilesystemIdentifier {
                    mountpoint: "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs".into(),
                }),
                used_bytes: Some(api::UInt64Value { value: used }),
                inodes_used: Some(api::UInt64Value {
                    value: st.images.len() as u64,
                }),
            }],
            container_filesystems: vec![],
        })
    }
}

fn stop(status: &mut api::ContainerStatus, now: i64, exit_code: i32) {
    let created = api::ContainerState::ContainerCreated as i32;
    let running = api::ContainerState::ContainerRunning as i32;
    if status.state == running || status.state == created {
        if status.state == running {
            status.exit_code = exit_code;
            status.reason = "Error".into();
        }
        status.state = api::ContainerState::ContainerExited as i32;
        status.finished_at = now;
    }
}

fn running(st: &State, container_id: &str) -> std::result::Result<(), Status> {
    match st.containers.get(container_id) {
        None => Err(not_found("container", container_id)),
        Some(c) if c.status.state != api::ContainerState::ContainerRunning as i32 => {
            Err(Status::failed_precondition(format!(
                "container {container_id} is not running: {}",
                state_name(c.status.state)
            )))
        }
        Some(_) => Ok(()),
    }
}

fn state_name(state: i32) -> &'static str {
    api::ContainerState::try_from(state)
        .map(|s| s.as_str_name())
        .unwrap_or("CONTAINER_UNKNOWN")
}

fn stats_of(c: &Container, now: i64) -> api::ContainerStats {
    api::ContainerStats {
        attributes: Some(api::ContainerAttributes {
            id: c.status.id.clone(),
            metadata: c.status.metadata.clone(),
            labels: c.status.labels.clone(),
            annotations: c.status.annotations.clone(),
        }),
        cpu: Some(api::CpuUsage {
            timestamp: now,
            ..Default::default()
        }),
        memory: Some(api::MemoryUsage {
            timestamp: now,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{image_spec, Runtime};

    fn sandbox_config(name: &str) -> api::PodSandboxConfig {
        api::PodSandboxConfig {
            metadata: Some(api::PodSandboxMetadata {
                name: name.into(),
                namespace: "default".into(),
                uid: format!("uid-{name}"),
                attempt: 0,
            }),
            log_directory: format!("/var/log/pods/default_{name}_uid"),
            labels: HashMap::from([("app".to_string(), name.to_string())]),
            ..Default::default()
        }
    }

    fn container_config(name: &str, image: &str) -> api::ContainerConfig {
        api::ContainerConfig {
            metadata: Some(api::ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(image_spec(image)),
            log_path: format!("{name}/0.log"),
            ..Default::default()
        }
    }

    /// Drives the fake through `&dyn Runtime`, as the kubelet does.
    async fn start_pod(rt: &dyn Runtime, name: &str) -> anyhow::Result<(String, String)> {
        let sb_config = sandbox_config(name);
        let sb = rt.run_pod_sandbox(&sb_config, "").await?;
        if rt.image_status(&image_spec("busybox")).await?.is_none() {
            rt.pull_image(&image_spec("busybox"), None, Some(&sb_config))
                .await?;
        }
        let c = rt
            .create_container(&sb, &container_config("main", "busybox"), &sb_config)
            .await?;
        rt.start_container(&c).await?;
        Ok((sb, c))
    }

    #[tokio::test]
    async fn records_calls_in_order() -> anyhow::Result<()> {
        let fake = FakeRuntime::new();
        let (sb, c) = start_pod(&fake, "web").await?;
        assert_eq!((sb.as_str(), c.as_str()), ("sandbox-1", "container-1"));
        let want = vec![
            Call::new(Method::RunPodSandbox, "default/web"),
            Call::new(Method::ImageStatus, "busybox"),
            Call::new(Method::PullImage, "busybox"),
            Call::new(Method::CreateContainer, "main"),
            Call::new(Method::StartContainer, "container-1"),
        ];
        assert_eq!(want, fake.calls());
        Ok(())
    }

    #[tokio::test]
    async fn container_lifecycle_and_timestamps() -> anyhow::Result<()> {
        let fake = FakeRuntime::new();
        let t0 = fake.now();
        let (sb, c) = start_pod(&fake, "web").await?;
        let status = fake.container_status(&c, false).await?.status;
        let status = status.ok_or_else(|| anyhow::anyhow!("no status"))?;
        assert_eq!(status.state, api::ContainerState::ContainerRunning as i32);
        assert_eq!((status.created_at, status.started_at), (t0, t0));
        assert_eq!(status.log_path, "/var/log/pods/default_web_uid/main/0.log");

        fake.advance(Duration::from_secs(5));
        assert!(fake.exit_container(&c, 3, "Error"));
        let status = fake.container_status(&c, false).await?.status;
        let status = status.ok_or_else(|| anyhow::anyhow!("no status"))?;
        assert_eq!(status.state, api::ContainerState::ContainerExited as i32);
        assert_eq!(status.exit_code, 3);
        assert_eq!(status.finished_at, t0 + 5_000_000_000);

        // A started container cannot be started again.
        let err = fake.start_container(&c).await.err();
        assert_eq!(err.and_then(|e| e.code()), Some(Code::FailedPrecondition));

        fake.stop_pod_sandbox(&sb).await?;
        let pods = fake
            .list_pod_sandbox(Some(api::PodSandboxFilter {
                state: Some(api::PodSandboxStateValue {
                    state: api::PodSandboxState::SandboxReady as i32,
                }),
                ..Default::default()
            }))
            .await?;
        assert!(pods.is_empty());
        fake.remove_pod_sandbox(&sb).await?;
        assert!(fake.list_containers(None).await?.is_empty());
        // Removing twice is fine, as in CRI.
        fake.remove_pod_sandbox(&sb).await?;
        assert!(fake
            .container_status(&c, false)
            .await
            .is_err_and(|e| e.is_not_found()));
        Ok(())
    }

    #[tokio::test]
    async fn stop_sets_exit_code_of_running_containers() -> anyhow::Result<()> {
        let fake = FakeRuntime::new();
        let (_, c) = start_pod(&fake, "web").await?;
        fake.set_stop_exit_code(143);
        fake.stop_container(&c, Duration::from_secs(30)).await?;
        let status = fake.container_status(&c, false).await?.status;
        assert_eq!(status.map(|s| s.exit_code), Some(143));
        Ok(())
    }

    #[tokio::test]
    async fn fails_nth_call_only() -> anyhow::Result<()> {
        let fake = FakeRuntime::new();
        fake.fail_nth(Method::RunPodSandbox, 2, Code::Unknown, "pipe: EOF");
        fake.run_pod_sandbox(&sandbox_config("a"), "").await?;
        let err = fake.run_pod_sandbox(&sandbox_config("b"), "").await.err();
        assert_eq!(
            err.as_ref().map(ToString::to_string).as_deref(),
            Some("RunPodSandbox default/b: pipe: EOF")
        );
        assert_eq!(err.and_then(|e| e.code()), Some(Code::Unknown));
        fake.run_pod_sandbox(&sandbox_config("c"), "").await?;
        // The failed call is recorded and had no effect.
        assert_eq!(fake.methods(), vec![Method::RunPodSandbox; 3]);
        assert_eq!(fake.list_pod_sandbox(None).await?.len(), 2);

        fake.fail_next(Method::Version, Code::Unavailable, "restarting");
        assert!(fake.version().await.is_err_and(|e| e.is_unavailable()));
        fake.version().await?;
        Ok(())
    }

    #[tokio::test]
    async fn create_needs_image_and_ready_sandbox() -> anyhow::Result<()> {
        let fake = FakeRuntime::new();
        let cfg = sandbox_config("web");
        let sb = fake.run_pod_sandbox(&cfg, "").await?;
        let err = fake
            .create_container(&sb, &container_config("main", "nginx"), &cfg)
            .await
            .err();
        assert!(err.is_some_and(|e| e.is_not_found()));
        fake.add_image("nginx");
        fake.stop_pod_sandbox(&sb).await?;
        let err = fake
            .create_container(&sb, &container_config("main", "nginx"), &cfg)
            .await
            .err();
        assert_eq!(err.and_then(|e| e.code()), Some(Code::FailedPrecondition));
        Ok(())
    }

    #[tokio::test]
    async fn filters_and_exec() -> anyhow::Result<()> {
        let fake = FakeRuntime::new();
        let (sb1, c1) = start_pod(&fake, "a").await?;
        let (_sb2, _c2) = start_pod(&fake, "b").await?;
        let by_label = fake
            .list_pod_sandbox(Some(api::PodSandboxFilter {
                label_selector: HashMap::from([("app".to_string(), "a".to_string())]),
                ..Default::default()
            }))
            .await?;
        assert_eq!(
            by_label.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
            [sb1.as_str()]
        );
        let in_pod = fake
            .list_containers(Some(api::ContainerFilter {
                pod_sandbox_id: sb1.clone(),
                ..Default::default()
            }))
            .await?;
        assert_eq!(in_pod.len(), 1);

        fake.set_exec_response(api::ExecSyncResponse {
            stdout: b"ok\n".to_vec(),
            stderr: vec![],
            exit_code: 1,
        });
        let out = fake
            .exec_sync(&c1, &["cat".to_string()], Duration::from_secs(1))
            .await?;
        assert_eq!((out.stdout.as_slice(), out.exit_code), (&b"ok\n"[..], 1));
        assert!(fake
            .exec_sync("nope", &[], Duration::ZERO)
            .await
            .is_err_and(|e| e.is_not_found()));
        Ok(())
    }

    #[tokio::test]
    async fn images() -> anyhow::Result<()> {
        let fake = FakeRuntime::new();
        let id = fake.add_image("docker.io/library/pause:3.9");
        let by_id = fake.image_status(&image_spec(&id)).await?;
        assert_eq!(
            by_id.map(|i| i.repo_tags),
            Some(vec!["docker.io/library/pause:3.9".to_string()])
        );
        fake.remove_image(&image_spec("docker.io/library/pause:3.9"))
            .await?;
        assert!(fake.list_images(None).await?.is_empty());
        Ok(())
    }
}

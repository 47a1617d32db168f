//! The CRI v1 services as object-safe traits: what the kubelet needs from a container runtime.
//!
//! Messages are the generated CRI v1 types, re-exported as [`crate::api`]. Methods take the
//! request-level pieces a caller has at hand and return the useful part of the response, so
//! `&dyn Runtime` works the same over [`crate::RemoteRuntime`] and the in-memory fake.

use std::time::Duration;

use async_trait::async_trait;

use crate::api;
use crate::error::Result;

/// The CRI `RuntimeService`: sandboxes, containers, exec, stats.
#[async_trait]
pub trait RuntimeService: Send + Sync {
    /// Runtime name and versions (`Version`).
    async fn version(&self) -> Result<api::VersionResponse>;

    /// Runtime conditions (RuntimeReady, NetworkReady); `verbose` adds the runtime's `info` map.
    async fn status(&self, verbose: bool) -> Result<api::StatusResponse>;

    /// Creates and starts a pod sandbox; returns its ID. `runtime_handler` is the RuntimeClass
    /// handler, empty for the default.
    async fn run_pod_sandbox(
        &self,
        config: &api::PodSandboxConfig,
        runtime_handler: &str,
    ) -> Result<String>;

    /// Stops a sandbox and all its containers. Stopping a missing sandbox is not an error.
    async fn stop_pod_sandbox(&self, sandbox_id: &str) -> Result<()>;

    /// Removes a sandbox and its containers. Removing a missing sandbox is not an error.
    async fn remove_pod_sandbox(&self, sandbox_id: &str) -> Result<()>;

    /// Status of one sandbox; `verbose` adds the runtime's `info` map.
    async fn pod_sandbox_status(
        &self,
        sandbox_id: &str,
        verbose: bool,
    ) -> Result<api::PodSandboxStatusResponse>;

    /// Lists sandboxes, optionally filtered by ID, state or labels.
    async fn list_pod_sandbox(
        &self,
        filter: Option<api::PodSandboxFilter>,
    ) -> Result<Vec<api::PodSandbox>>;

    /// Creates a container in a sandbox; returns its ID. `sandbox_config` is the config the
    /// sandbox was run with (the runtime reads log directory and security context from it).
    async fn create_container(
        &self,
        sandbox_id: &str,
        config: &api::ContainerConfig,
        sandbox_config: &api::PodSandboxConfig,
    ) -> Result<String>;

    /// Starts a created container.
    async fn start_container(&self, container_id: &str) -> Result<()>;

    /// Stops a container, killing it after `timeout` (the grace period; zero kills at once).
    /// The RPC deadline is extended by `timeout`, as the kubelet does.
    async fn stop_container(&self, container_id: &str, timeout: Duration) -> Result<()>;

    /// Removes a container. Removing a missing container is not an error.
    async fn remove_container(&self, container_id: &str) -> Result<()>;

    /// Lists containers, optionally filtered by ID, sandbox, state or labels.
    async fn list_containers(
        &self,
        filter: Option<api::ContainerFilter>,
    ) -> Result<Vec<api::Container>>;

    /// Status of one container; `verbose` adds the runtime's `info` map.
    async fn container_status(
        &self,
        container_id: &str,
        verbose: bool,
    ) -> Result<api::ContainerStatusResponse>;

    /// Updates a running container's Linux resources (CPU, memory).
    async fn update_container_resources(
        &self,
        container_id: &str,
        linux: &api::LinuxContainerResources,
    ) -> Result<()>;

    /// Asks the runtime to reopen the container's log file (after the kubelet rotated it).
    async fn reopen_container_log(&self, container_id: &str) -> Result<()>;

    /// Runs a command in a container and waits for it (probes, `crictl exec`). A non-zero exit
    /// code is a successful call; read `exit_code`. The RPC deadline is extended by `timeout`.
    async fn exec_sync(
        &self,
        container_id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<api::ExecSyncResponse>;

    /// Prepares a streaming exec; returns the runtime's streaming URL.
    async fn exec(&self, request: api::ExecRequest) -> Result<String>;

    /// Prepares a streaming attach; returns the runtime's streaming URL.
    async fn attach(&self, request: api::AttachRequest) -> Result<String>;

    /// Prepares a port forward into a sandbox; returns the runtime's streaming URL.
    async fn port_forward(&self, sandbox_id: &str, ports: &[i32]) -> Result<String>;

    /// Resource usage of one container, `None` if the runtime has none yet.
    async fn container_stats(&self, container_id: &str) -> Result<Option<api::ContainerStats>>;

    /// Resource usage of containers, optionally filtered.
    async fn list_container_stats(
        &self,
        filter: Option<api::ContainerStatsFilter>,
    ) -> Result<Vec<api::ContainerStats>>;
}

/// The CRI `ImageService`: images present on the node and pulls.
#[async_trait]
pub trait ImageService: Send + Sync {
    /// Lists images, optionally filtered by image reference.
    async fn list_images(&self, filter: Option<api::ImageFilter>) -> Result<Vec<api::Image>>;

    /// The image if present, `None` if not (a missing image is not an error in CRI).
    async fn image_status(&self, image: &api::ImageSpec) -> Result<Option<api::Image>>;

    /// Pulls an image; returns its image reference (usually the image ID). Uses the longer pull
    /// timeout.
    async fn pull_image(
        &self,
        image: &api::ImageSpec,
        auth: Option<&api::AuthConfig>,
        sandbox_config: Option<&api::PodSandboxConfig>,
    ) -> Result<String>;

    /// Removes an image. Removing a missing image is not an error.
    async fn remove_image(&self, image: &api::ImageSpec) -> Result<()>;

    /// Usage of the filesystems holding images (and, on newer runtimes, containers).
    async fn image_fs_info(&self) -> Result<api::ImageFsInfoResponse>;
}

/// A whole container runtime: both CRI services. Implemented for every type that has both,
/// so `&dyn Runtime` / `Arc<dyn Runtime>` is what the kubelet holds.
pub trait Runtime: RuntimeService + ImageService {}

impl<T: RuntimeService + ImageService + ?Sized> Runtime for T {}

/// An [`api::ImageSpec`] naming `image`, with no annotations or runtime handler.
pub fn image_spec(image: impl Into<String>) -> api::ImageSpec {
    api::ImageSpec {
        image: image.into(),
        ..Default::default()
    }
}

/// `namespace/name` of a sandbox config, for error messages and logs.
pub fn pod_display_name(config: &api::PodSandboxConfig) -> String {
    match &config.metadata {
        Some(m) => format!("{}/{}", m.namespace, m.name),
        None => String::from("<no metadata>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_name_from_metadata() {
        let config = api::PodSandboxConfig {
            metadata: Some(api::PodSandboxMetadata {
                name: "web".into(),
                namespace: "default".into(),
                uid: "u1".into(),
                attempt: 0,
            }),
            ..Default::default()
        };
        assert_eq!(pod_display_name(&config), "default/web");
        assert_eq!(image_spec("busybox").image, "busybox");
    }
}

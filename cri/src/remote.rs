//! [`RemoteRuntime`]: the CRI v1 client over a unix socket (containerd's, CRI-O's).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tracing::{debug, trace};

use crate::api;
use crate::api::image_service_client::ImageServiceClient;
use crate::api::runtime_service_client::RuntimeServiceClient;
use crate::error::{Error, Result};
use crate::runtime::{pod_display_name, ImageService, RuntimeService};

/// Largest gRPC message accepted or sent: CRI lists on a busy node are big. Same as the
/// kubelet's `maxMsgSize` (pkg/kubelet/cri/remote/utils.go).
pub const MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// The default CRI endpoint of containerd.
pub const DEFAULT_ENDPOINT: &str = "unix:///run/containerd/containerd.sock";

/// Per-call deadlines of a [`RemoteRuntime`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Deadline of every call but image pulls; the kubelet's `runtimeRequestTimeout` (2m).
    pub request: Duration,
    /// Deadline of `PullImage`, which legitimately takes minutes for big images.
    pub pull: Duration,
    /// Deadline for establishing the connection.
    pub connect: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            request: Duration::from_secs(120),
            pull: Duration::from_secs(30 * 60),
            connect: Duration::from_secs(10),
        }
    }
}

/// The socket path of a CRI endpoint: `unix:///path`, `unix:/path` or a bare absolute path.
pub fn socket_path(endpoint: &str) -> Result<PathBuf> {
    let invalid = |reason: &str| Error::InvalidEndpoint {
        endpoint: endpoint.to_string(),
        reason: reason.to_string(),
    };
    let path = if let Some(rest) = endpoint.strip_prefix("unix://") {
        rest
    } else if let Some(rest) = endpoint.strip_prefix("unix:") {
        rest
    } else if endpoint.contains("://") {
        return Err(invalid("only unix sockets are supported"));
    } else {
        endpoint
    };
    if path.is_empty() {
        return Err(invalid("empty socket path"));
    }
    if !path.starts_with('/') {
        return Err(invalid("socket path must be absolute"));
    }
    Ok(PathBuf::from(path))
}

/// Opens a tonic channel over the unix socket at `path`. The channel reconnects by itself
/// when the runtime restarts.
pub(crate) async fn unix_channel(path: &Path, connect_timeout: Duration) -> Result<Channel> {
    let endpoint_str = format!("unix://{}", path.display());
    // The URI is required by tonic but unused: the connector below dials the socket.
    let endpoint = Endpoint::from_static("http://localhost").connect_timeout(connect_timeout);
    let path = path.to_path_buf();
    endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .map_err(|source| Error::Connect {
            endpoint: endpoint_str,
            source,
        })
}

/// A CRI v1 client for one runtime endpoint. Cheap to clone; clones share the connection.
#[derive(Debug, Clone)]
pub struct RemoteRuntime {
    endpoint: String,
    timeouts: Timeouts,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

impl RemoteRuntime {
    /// Connects to `endpoint` (`unix:///run/containerd/containerd.sock` or a bare path).
    /// Fails at once if the socket cannot be dialled; see [`RemoteRuntime::connect_with_retry`]
    /// to wait for a starting runtime.
    pub async fn connect(endpoint: &str, timeouts: Timeouts) -> Result<Self> {
        let path = socket_path(endpoint)?;
        let channel = unix_channel(&path, timeouts.connect).await?;
        debug!(endpoint, "connected to CRI runtime");
        Ok(Self {
            endpoint: endpoint.to_string(),
            timeouts,
            runtime: RuntimeServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
            images: ImageServiceClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
        })
    }

    /// Connects with default [`Timeouts`], retrying until the runtime answers `Version` or
    /// `deadline` has passed; then returns the last error. For a runtime that is starting.
    pub async fn connect_with_retry(endpoint: &str, deadline: Duration) -> Result<Self> {
        let give_up = tokio::time::Instant::now() + deadline;
        let mut backoff = Duration::from_millis(50);
        loop {
            let attempt = async {
                let rt = Self::connect(endpoint, Timeouts::default()).await?;
                rt.version().await?;
                Ok::<_, Error>(rt)
            };
            match attempt.await {
                Ok(rt) => return Ok(rt),
                // A malformed endpoint never gets better.
                Err(err @ Error::InvalidEndpoint { .. }) => return Err(err),
                Err(err) => {
                    if tokio::time::Instant::now() + backoff >= give_up {
                        return Err(err);
                    }
                    debug!(endpoint, error = %err, "CRI runtime not ready, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// The same client with other deadlines.
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// The endpoint this client talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The deadlines in use.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }
}

/// Runs one RPC under `after`: the deadline is sent to the runtime (`grpc-timeout`) and
/// enforced locally, so a hung runtime yields [`Error::Timeout`].
async fn call<T, F, Fut>(
    op: &'static str,
    object: &str,
    after: Duration,
    rpc: F,
    on_status: impl FnOnce(tonic::Status) -> Error,
) -> Result<T>
where
    F: FnOnce(Duration) -> Fut,
    Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
{
    trace!(op, object, "CRI call");
    match tokio::time::timeout(after, rpc(after)).await {
        Ok(Ok(resp)) => Ok(resp.into_inner()),
        Ok(Err(status)) if !is_local_timeout(&status) => Err(on_status(status)),
        // Either our timer or tonic's own enforcement of the grpc-timeout we set fired first.
        Ok(Err(_)) | Err(_) => Err(Error::Timeout {
            op,
            object: object.to_string(),
            after,
        }),
    }
}

/// Whether tonic failed the call because our deadline passed (it reports that as `Cancelled`).
fn is_local_timeout(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        if err.is::<tonic::TimeoutExpired>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// A request carrying its deadline.
fn req<T>(msg: T, after: Duration) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(after);
    req
}

fn rpc_err(op: &'static str) -> impl FnOnce(tonic::Status) -> Error {
    move |source| Error::Rpc { op, source }
}

fn container_err(op: &'static str, id: &str) -> impl FnOnce(tonic::Status) -> Error {
    let container_id = id.to_string();
    move |source| Error::Container {
        op,
        container_id,
        source,
    }
}

fn image_err(op: &'static str, image: &str) -> impl FnOnce(tonic::Status) -> Error {
    let image = image.to_string();
    move |source| Error::Image { op, image, source }
}

#[async_trait]
impl RuntimeService for RemoteRuntime {
    async fn version(&self) -> Result<api::VersionResponse> {
        let mut c = self.runtime.clone();
        let msg = api::VersionRequest {
            version: "v1".into(),
        };
        call(
            "Version",
            "",
            self.timeouts.request,
            |t| async move { c.version(req(msg, t)).await },
            rpc_err("Version"),
        )
        .await
    }

    async fn status(&self, verbose: bool) -> Result<api::StatusResponse> {
        let mut c = self.runtime.clone();
        call(
            "Status",
            "",
            self.timeouts.request,
            |t| async move { c.status(req(api::StatusRequest { verbose }, t)).await },
            rpc_err("Status"),
        )
        .await
    }

    async fn run_pod_sandbox(
        &self,
        config: &api::PodSandboxConfig,
        runtime_handler: &str,
    ) -> Result<String> {
        let mut c = self.runtime.clone();
        let pod = pod_display_name(config);
        let msg = api::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: runtime_handler.to_string(),
        };
        let pod2 = pod.clone();
        call(
            "RunPodSandbox",
            &pod,
            self.timeouts.request,
            |t| async move { c.run_pod_sandbox(req(msg, t)).await },
            move |source| Error::RunPodSandbox { pod: pod2, source },
        )
        .await
        .map(|r| r.pod_sandbox_id)
    }

    async fn stop_pod_sandbox(&self, sandbox_id: &str) -> Result<()> {
        let mut c = self.runtime.clone();
        let msg = api::StopPodSandboxRequest {
            pod_sandbox_id: sandbox_id.to_string(),
        };
        let id = sandbox_id.to_string();
        call(
            "StopPodSandbox",
            sandbox_id,
            self.timeouts.request,
            |t| async move { c.stop_pod_sandbox(req(msg, t)).await },
            move |source| Error::StopPodSandbox {
                sandbox_id: id,
                source,
            },
        )
        .await
        .map(drop)
    }

    async fn remove_pod_sandbox(&self, sandbox_id: &str) -> Result<()> {
        let mut c = self.runtime.clone();
        let msg = api::RemovePodSandboxRequest {
            pod_sandbox_id: sandbox_id.to_string(),
        };
        let id = sandbox_id.to_string();
        call(
            "RemovePodSandbox",
            sandbox_id,
            self.timeouts.request,
            |t| async move { c.remove_pod_sandbox(req(msg, t)).await },
            move |source| Error::RemovePodSandbox {
                sandbox_id: id,
                source,
            },
        )
        .await
        .map(drop)
    }

    async fn pod_sandbox_status(
        &self,
        sandbox_id: &str,
        verbose: bool,
    ) -> Result<api::PodSandboxStatusResponse> {
        let mut c = self.runtime.clone();
        let msg = api::PodSandboxStatusRequest {
            pod_sandbox_id: sandbox_id.to_string(),
            verbose,
        };
        let id = sandbox_id.to_string();
        call(
            "PodSandboxStatus",
            sandbox_id,
            self.timeouts.request,
            |t| async move { c.pod_sandbox_status(req(msg, t)).await },
            move |source| Error::PodSandboxStatus {
                sandbox_id: id,
                source,
            },
        )
        .await
    }

    async fn list_pod_sandbox(
        &self,
        filter: Option<api::PodSandboxFilter>,
    ) -> Result<Vec<api::PodSandbox>> {
        let mut c = self.runtime.clone();
        let msg = api::ListPodSandboxRequest { filter };
        call(
            "ListPodSandbox",
            "",
            self.timeouts.request,
            |t| async move { c.list_pod_sandbox(req(msg, t)).await },
            rpc_err("ListPodSandbox"),
        )
        .await
        .map(|r| r.items)
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: &api::ContainerConfig,
        sandbox_config: &api::PodSandboxConfig,
    ) -> Result<String> {
        let mut c = self.runtime.clone();
        let name = config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let msg = api::CreateContainerRequest {
            pod_sandbox_id: sandbox_id.to_string(),
            config: Some(config.clone()),
            sandbox_config: Some(sandbox_config.clone()),
        };
        let (container, id) = (name.clone(), sandbox_id.to_string());
        call(
            "CreateContainer",
            &name,
            self.timeouts.request,
            |t| async move { c.create_container(req(msg, t)).await },
            move |source| Error::CreateContainer {
                container,
                sandbox_id: id,
                source,
            },
        )
        .await
        .map(|r| r.container_id)
    }

    async fn start_container(&self, container_id: &str) -> Result<()> {
        let mut c = self.runtime.clone();
        let msg = api::StartContainerRequest {
            container_id: container_id.to_string(),
        };
        call(
            "StartContainer",
            container_id,
            self.timeouts.request,
            |t| async move { c.start_container(req(msg, t)).await },
            container_err("StartContainer", container_id),
        )
        .await
        .map(drop)
    }

    async fn stop_container(&self, container_id: &str, timeout: Duration) -> Result<()> {
        let mut c = self.runtime.clone();
        let msg = api::StopContainerRequest {
            container_id: container_id.to_string(),
            timeout: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        };
        // As the kubelet's remote runtime: the RPC may take the grace period plus the usual.
        let after = self.timeouts.request.saturating_add(timeout);
        call(
            "StopContainer",
            container_id,
            after,
            |t| async move { c.stop_container(req(msg, t)).await },
            container_err("StopContainer", container_id),
        )
        .await
        .map(drop)
    }

    async fn remove_container(&self, container_id: &str) -> Result<()> {
        let mut c = self.runtime.clone();
        let msg = api::RemoveContainerRequest {
            container_id: container_id.to_string(),
        };
        call(
            "RemoveContainer",
            container_id,
            self.timeouts.request,
            |t| async move { c.remove_container(req(msg, t)).await },
            container_err("RemoveContainer", container_id),
        )
        .await
        .map(drop)
    }

    async fn list_containers(
        &self,
        filter: Option<api::ContainerFilter>,
    ) -> Result<Vec<api::Container>> {
        let mut c = self.runtime.clone();
        let msg = api::ListContainersRequest { filter };
        call(
            "ListContainers",
            "",
            self.timeouts.request,
            |t| async move { c.list_containers(req(msg, t)).await },
            rpc_err("ListContainers"),
        )
        .await
        .map(|r| r.containers)
    }

    async fn container_status(
        &self,
        container_id: &str,
        verbose: bool,
    ) -> Result<api::ContainerStatusResponse> {
        let mut c = self.runtime.clone();
        let msg = api::ContainerStatusRequest {
            container_id: container_id.to_string(),
            verbose,
        };
        call(
            "ContainerStatus",
            container_id,
            self.timeouts.request,
            |t| async move { c.container_status(req(msg, t)).await },
            container_err("ContainerStatus", container_id),
        )
        .await
    }

    async fn update_container_resources(
        &self,
        container_id: &str,
        linux: &api::LinuxContainerResources,
    ) -> Result<()> {
        let mut c = self.runtime.clone();
        let msg = api::UpdateContainerResourcesRequest {
            container_id: container_id.to_string(),
            linux: Some(linux.clone()),
            ..Default::default()
        };
        call(
            "UpdateContainerResources",
            container_id,
            self.timeouts.request,
            |t| async move { c.update_container_resources(req(msg, t)).await },
            container_err("UpdateContainerResources", container_id),
        )
        .await
        .map(drop)
    }

    async fn reopen_container_log(&self, container_id: &str) -> Result<()> {
        let mut c = self.runtime.clone();
        let msg = api::ReopenContainerLogRequest {
            container_id: container_id.to_string(),
        };
        call(
            "ReopenContainerLog",
            container_id,
            self.timeouts.request,
            |t| async move { c.reopen_container_log(req(msg, t)).await },
            container_err("ReopenContainerLog", container_id),
        )
        .await
        .map(drop)
    }

    async fn exec_sync(
        &self,
        container_id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<api::ExecSyncResponse> {
        let mut c = self.runtime.clone();
        let msg = api::ExecSyncRequest {
            container_id: container_id.to_string(),
            cmd: cmd.to_vec(),
            timeout: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        };
        // As the kubelet: a zero exec timeout means none, so only the request deadline applies.
        let after = self.timeouts.request.saturating_add(timeout);
        call(
            "ExecSync",
            container_id,
            after,
            |t| async move { c.exec_sync(req(msg, t)).await },
            container_err("ExecSync", container_id),
        )
        .await
    }

    async fn exec(&self, request: api::ExecRequest) -> Result<String> {
        let mut c = self.runtime.clone();
        let id = request.container_id.clone();
        call(
            "Exec",
            &id,
            self.timeouts.request,
            |t| async move { c.exec(req(request, t)).await },
            container_err("Exec", &id),
        )
        .await
        .map(|r| r.url)
    }

    async fn attach(&self, request: api::AttachRequest) -> Result<String> {
        let mut c = self.runtime.clone();
        let id = request.container_id.clone();
        call(
            "Attach",
            &id,
            self.timeouts.request,
            |t| async move { c.attach(req(request, t)).await },
            container_err("Attach", &id),
        )
        .await
        .map(|r| r.url)
    }

    async fn port_forward(&self, sandbox_id: &str, ports: &[i32]) -> Result<String> {
        let mut c = self.runtime.clone();
        let msg = api::PortForwardRequest {
            pod_sandbox_id: sandbox_id.to_string(),
            port: ports.to_vec(),
        };
        let id = sandbox_id.to_string();
        call(
            "PortForward",
            sandbox_id,
            self.timeouts.request,
            |t| async move { c.port_forward(req(msg, t)).await },
            move |source| Error::PortForward {
                sandbox_id: id,
                source,
            },
        )
        .await
        .map(|r| r.url)
    }

    async fn container_stats(&self, container_id: &str) -> Result<Option<api::ContainerStats>> {
        let mut c = self.runtime.clone();
        let msg = api::ContainerStatsRequest {
            container_id: container_id.to_string(),
        };
        call(
            "ContainerStats",
            container_id,
            self.timeouts.request,
            |t| async move { c.container_stats(req(msg, t)).await },
            container_err("ContainerStats", container_id),
        )
        .await
        .map(|r| r.stats)
    }

    async fn list_container_stats(
        &self,
        filter: Option<api::ContainerStatsFilter>,
    ) -> Result<Vec<api::ContainerStats>> {
        let mut c = self.runtime.clone();
        let msg = api::ListContainerStatsRequest { filter };
        call(
            "ListContainerStats",
            "",
            self.timeouts.request,
            |t| async move { c.list_container_stats(req(msg, t)).await },
            rpc_err("ListContainerStats"),
        )
        .await
        .map(|r| r.stats)
    }
}

#[async_trait]
impl ImageService for RemoteRuntime {
    async fn list_images(&self, filter: Option<api::ImageFilter>) -> Result<Vec<api::Image>> {
        let mut c = self.images.clone();
        let msg = api::ListImagesRequest { filter };
        call(
            "ListImages",
            "",
            self.timeouts.request,
            |t| async move { c.list_images(req(msg, t)).await },
            rpc_err("ListImages"),
        )
        .await
        .map(|r| r.images)
    }

    async fn image_status(&self, image: &api::ImageSpec) -> Result<Option<api::Image>> {
        let mut c = self.images.clone();
        let msg = api::ImageStatusRequest {
            image: Some(image.clone()),
            verbose: false,
        };
        call(
            "ImageStatus",
            &image.image,
            self.timeouts.request,
            |t| async move { c.image_status(req(msg, t)).await },
            image_err("ImageStatus", &image.image),
        )
        .await
        .map(|r| r.image)
    }

    async fn pull_image(
        &self,
        image: &api::ImageSpec,
        auth: Option<&api::AuthConfig>,
        sandbox_config: Option<&api::PodSandboxConfig>,
    ) -> Result<String> {
        let mut c = self.images.clone();
        let msg = api::PullImageRequest {
            image: Some(image.clone()),
            auth: auth.cloned(),
            sandbox_config: sandbox_config.cloned(),
        };
        call(
            "PullImage",
            &image.image,
            self.timeouts.pull,
            |t| async move { c.pull_image(req(msg, t)).await },
            image_err("PullImage", &image.image),
        )
        .await
        .map(|r| r.image_ref)
    }

    async fn remove_image(&self, image: &api::ImageSpec) -> Result<()> {
        let mut c = self.images.clone();
        let msg = api::RemoveImageRequest {
            image: Some(image.clone()),
        };
        call(
            "RemoveImage",
            &image.image,
            self.timeouts.request,
            |t| async move { c.remove_image(req(msg, t)).await },
            image_err("RemoveImage", &image.image),
        )
        .await
        .map(drop)
    }

    async fn image_fs_info(&self) -> Result<api::ImageFsInfoResponse> {
        let mut c = self.images.clone();
        call(
            "ImageFsInfo",
            "",
            self.timeouts.request,
            |t| async move { c.image_fs_info(req(api::ImageFsInfoRequest {}, t)).await },
            rpc_err("ImageFsInfo"),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            socket_path("unix:///run/containerd/containerd.sock").ok(),
            Some(PathBuf::from("/run/containerd/containerd.sock"))
        );
        assert_eq!(
            socket_path("/tmp/x.sock").ok(),
            Some(PathBuf::from("/tmp/x.sock"))
        );
        assert_eq!(
            socket_path("unix:/tmp/x.sock").ok(),
            Some(PathBuf::from("/tmp/x.sock"))
        );
        assert!(socket_path("tcp://127.0.0.1:1234").is_err());
        assert!(socket_path("unix://").is_err());
        assert!(socket_path("relative.sock").is_err());
    }

    #[tokio::test]
    async fn missing_socket_is_unavailable() {
        let err =
            RemoteRuntime::connect("unix:///nonexistent/oxlet-test.sock", Timeouts::default())
                .await
                .err();
        assert!(matches!(err, Some(Error::Connect { .. })), "{err:?}");
        assert!(err.is_some_and(|e| e.is_unavailable()));
    }

    #[tokio::test]
    async fn hung_runtime_times_out() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("hung.sock");
        let listener = tokio::net::UnixListener::bind(&path)?;
        // Accepts connections and never answers, like a wedged runtime.
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                held.push(conn);
            }
        });
        let timeouts = Timeouts {
            request: Duration::from_millis(200),
            pull: Duration::from_millis(300),
            connect: Duration::from_secs(5),
        };
        let rt = RemoteRuntime::connect(&path.to_string_lossy(), timeouts).await?;
        let err = rt.version().await.err();
        assert!(
            matches!(err, Some(Error::Timeout { op: "Version", .. })),
            "{err:?}"
        );
        let err = rt
            .pull_image(&crate::image_spec("busybox"), None, None)
            .await
            .err();
        assert!(err.as_ref().is_some_and(Error::is_timeout), "{err:?}");
        assert_eq!(
            err.map(|e| e.to_string()).as_deref(),
            Some("PullImage busybox: timed out after 300ms")
        );
        server.abort();
        Ok(())
    }

    #[tokio::test]
    async fn retry_gives_up_at_deadline() {
        let started = std::time::Instant::now();
        let err = RemoteRuntime::connect_with_retry(
            "unix:///nonexistent/oxlet-test.sock",
            Duration::from_millis(300),
        )
        .await
        .err();
        assert!(err.is_some_and(|e| e.is_unavailable()));
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}

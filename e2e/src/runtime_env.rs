//! A complete runtime environment for one test: a network namespace holding a local registry
//! (plus an authenticated one on request) with the project's images, and a private containerd
//! that mirrors `docker.io` and `registry.k8s.io` to it; plus a connected CRI client.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use oxlet_cri::{api, image_spec, ImageService, RemoteRuntime, RuntimeService, Timeouts};

use crate::containerd::{Containerd, Options};
use crate::images::{self, BuiltImages};
use crate::netns::Netns;
use crate::registry::{self, Registry};

/// Credentials of the authenticated registry.
pub const AUTH_USER: &str = "oxlet";
/// Password of the authenticated registry.
pub const AUTH_PASSWORD: &str = "s3cret-pull";

/// What a [`RuntimeEnv`] starts.
#[derive(Debug, Clone)]
pub struct EnvOptions {
    /// Start a local registry with the standard images and mirror to it.
    pub registry: bool,
    /// Also start a registry requiring [`AUTH_USER`]/[`AUTH_PASSWORD`], holding busybox at
    /// `<addr>/private/busybox:latest`.
    pub auth_registry: bool,
    /// Pod subnet of the CNI bridge.
    pub pod_cidr: String,
    /// Write the CNI conflist; false leaves it to a kubelet with `--cni-config=auto`.
    pub write_cni: bool,
}

impl Default for EnvOptions {
    fn default() -> Self {
        Self {
            registry: true,
            auth_registry: false,
            pod_cidr: "10.88.0.0/16".to_string(),
            write_cni: true,
        }
    }
}

/// Everything a CRI test needs. Fields drop in order: the client, containerd (pods removed
/// first), the registries, then the namespace.
pub struct RuntimeEnv {
    /// A connected CRI client.
    pub cri: RemoteRuntime,
    /// The private containerd.
    pub containerd: Containerd,
    /// The plain local registry, if started.
    pub registry: Option<Registry>,
    /// The authenticated registry, if started.
    pub auth_registry: Option<Registry>,
    /// The built images (layouts and archives).
    pub images: BuiltImages,
    /// Per-test scratch dir (pod log dirs live here).
    pub scratch: tempfile::TempDir,
    /// The test's network namespace.
    pub netns: Netns,
}

impl RuntimeEnv {
    /// Starts the environment; `prefix` names the namespace (keep it short).
    pub async fn start(prefix: &str, opts: EnvOptions) -> Result<Self> {
        let images = images::build_all().context("build images")?;
        let netns = Netns::new(prefix)?;
        let scratch = tempfile::Builder::new()
            .prefix("oxt-env-")
            .tempdir_in("/tmp")?;
        let certs_d = scratch.path().join("certs.d");
        std::fs::create_dir_all(&certs_d)?;
        let registry = if opts.registry {
            let r = Registry::start(Some(&netns), None).context("start registry")?;
            r.push_standard_images(&images).context("push images")?;
            registry::hosts_toml_dirs(&certs_d, &r.addr())?;
            Some(r)
        } else {
            None
        };
        let auth_registry = if opts.auth_registry {
            let r = Registry::start(Some(&netns), Some((AUTH_USER, AUTH_PASSWORD)))
                .context("start auth registry")?;
            images::push(
                &images.busybox.layout,
                "latest",
                &format!("{}/private/busybox:latest", r.addr()),
                Some((AUTH_USER, AUTH_PASSWORD)),
                Some(&netns),
            )
            .context("push to auth registry")?;
            registry::direct_hosts_toml(&certs_d, &r.addr())?;
            Some(r)
        } else {
            None
        };
        let containerd = Containerd::start(
            Some(&netns),
            &Options {
                pod_cidr: opts.write_cni.then(|| opts.pod_cidr.clone()),
                registry_config_dir: Some(certs_d),
                ..Default::default()
            },
        )?;
        let cri =
            RemoteRuntime::connect_with_retry(&containerd.endpoint(), Duration::from_secs(60))
                .await
                .with_context(|| format!("connect CRI:\n{}", containerd.log_tail()))?
                .with_timeouts(Timeouts {
                    request: Duration::from_secs(120),
                    pull: Duration::from_secs(300),
                    connect: Duration::from_secs(30),
                });
        Ok(Self {
            cri,
            containerd,
            registry,
            auth_registry,
            images,
            scratch,
            netns,
        })
    }

    /// A sandbox config for pod `name` in `default`: unique UID, log dir in the scratch dir,
    /// label `app=<name>`, cgroup parent under this containerd's removable root.
    pub fn pod_config(&self, name: &str) -> Result<api::PodSandboxConfig> {
        let uid = format!("uid-{name}-{}", std::process::id());
        Ok(api::PodSandboxConfig {
            metadata: Some(api::PodSandboxMetadata {
                name: name.to_string(),
                namespace: "default".to_string(),
                uid: uid.clone(),
                attempt: 0,
            }),
            hostname: name.to_string(),
            log_directory: self.pod_log_dir(&uid)?.display().to_string(),
            labels: HashMap::from([("app".to_string(), name.to_string())]),
            linux: Some(api::LinuxPodSandboxConfig {
                cgroup_parent: self.containerd.cgroup_parent(&format!("pod{uid}")),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// A fresh per-pod log directory inside the scratch dir.
    pub fn pod_log_dir(&self, pod: &str) -> Result<PathBuf> {
        let dir = self.scratch.path().join("pods").join(pod);
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }
}

/// A container config: label `container=<name>`, log at `<name>/0.log` in the pod's log dir.
pub fn container_config(name: &str, image: &str, command: &[&str]) -> api::ContainerConfig {
    api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: name.to_string(),
            attempt: 0,
        }),
        image: Some(image_spec(image)),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}/0.log"),
        labels: HashMap::from([("container".to_string(), name.to_string())]),
        ..Default::default()
    }
}

/// Pulls the config's image, then creates and starts the container in `sandbox`.
pub async fn run_container(
    cri: &RemoteRuntime,
    sandbox: &str,
    pod: &api::PodSandboxConfig,
    config: &api::ContainerConfig,
) -> Result<String> {
    let image = config
        .image
        .clone()
        .context("container config has no image")?;
    cri.pull_image(&image, None, Some(pod)).await?;
    let id = cri.create_container(sandbox, config, pod).await?;
    cri.start_container(&id).await?;
    Ok(id)
}

/// Polls a container's status until `done` holds (CRI has no watch), for up to 60 s; the error
/// shows the last status seen.
pub async fn wait_container<F>(
    cri: &RemoteRuntime,
    id: &str,
    what: &str,
    done: F,
) -> Result<api::ContainerStatus>
where
    F: Fn(&api::ContainerStatus) -> bool,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = cri
            .container_status(id, false)
            .await?
            .status
            .context("no status")?;
        if done(&status) {
            return Ok(status);
        }
        if Instant::now() > deadline {
            bail!("container {id} never became {what}; last status: {status:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The container has exited.
pub fn exited(s: &api::ContainerStatus) -> bool {
    s.state == api::ContainerState::ContainerExited as i32
}

/// The container is running.
pub fn running(s: &api::ContainerStatus) -> bool {
    s.state == api::ContainerState::ContainerRunning as i32
}

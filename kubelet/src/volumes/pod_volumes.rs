//! A pod's set-up volumes and the CRI mounts of each container (upstream's makeMounts).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Container;
use oxlet_cri::api;

use super::error::VolumeError;
use super::plan::VolumeInfo;
use super::{subpath, termination};

/// Where upstream mounts the termination log when the container does not say.
pub const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";
/// The pod's hosts file, in its pod directory.
pub const ETC_HOSTS_FILE: &str = "etc-hosts";

/// State shared by [`PodVolumes`] values and the manager for one pod UID.
#[derive(Debug, Default)]
pub(crate) struct PodState {
    /// Serialises setup and teardown of the pod; holds the names of volumes set up once.
    pub(crate) setup: tokio::sync::Mutex<std::collections::HashSet<String>>,
    /// Termination files per container by restart count.
    pub(crate) termination: Mutex<HashMap<String, BTreeMap<u32, PathBuf>>>,
}

impl PodState {
    pub(crate) fn termination_files(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, BTreeMap<u32, PathBuf>>> {
        // Poisoning only means another thread panicked mid-insert; the map is still sound.
        self.termination.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The volumes of one pod after [`super::VolumeManager::setup`].
#[derive(Debug)]
pub struct PodVolumes {
    pub(crate) pod_dir: PathBuf,
    pub(crate) volumes: BTreeMap<String, VolumeInfo>,
    pub(crate) refresh_errors: Vec<VolumeError>,
    pub(crate) state: Arc<PodState>,
}

impl PodVolumes {
    /// The CRI mounts for one container: its volumeMounts (subPath, subPathExpr with $(VAR) from the
    /// given env, readOnly, mountPropagation), plus /etc/hosts (when the kubelet wrote the pod's
    /// hosts file and the container does not mount its own /etc/hosts) and the termination-message
    /// file. `restart_count` identifies the start attempt: calling again for the same attempt
    /// reuses its termination file, a new attempt gets a new one.
    pub fn container_mounts(
        &self,
        container: &Container,
        env: &BTreeMap<String, String>,
        restart_count: u32,
    ) -> Result<Vec<api::Mount>, VolumeError> {
        let mut out = Vec::new();
        let privileged = container
            .security_context
            .as_ref()
            .and_then(|s| s.privileged)
            .unwrap_or(false);
        let mut mounts_etc_hosts = false;
        for (index, vm) in container.volume_mounts.iter().flatten().enumerate() {
            let info = self
                .volumes
                .get(&vm.name)
                .ok_or_else(|| VolumeError::UnknownVolume {
                    volume: vm.name.clone(),
                    container: container.name.clone(),
                })?;
            let sub = match vm.sub_path_expr.as_deref() {
                Some(expr) if !expr.is_empty() => subpath::expand(expr, env)?,
                _ => vm.sub_path.clone().unwrap_or_default(),
            };
            let host_path = if sub.is_empty() {
                info.host_path.clone()
            } else {
                let target = self
                    .pod_dir
                    .join("volume-subpaths")
                    .join(&vm.name)
                    .join(&container.name)
                    .join(index.to_string());
                subpath::prepare(&info.host_path, &sub, &target)?
            };
            let propagation = match vm.mount_propagation.as_deref() {
                None | Some("") | Some("None") => api::MountPropagation::PropagationPrivate,
                Some("HostToContainer") => api::MountPropagation::PropagationHostToContainer,
                Some("Bidirectional") if privileged => {
                    api::MountPropagation::PropagationBidirectional
                }
                Some("Bidirectional") => {
                    return Err(VolumeError::Invalid(format!(
                        "volumeMount {:?} of container {:?}: Bidirectional mount propagation is \
                         available only to privileged containers",
                        vm.name, container.name
                    )))
                }
                Some(other) => {
                    return Err(VolumeError::Invalid(format!(
                        "volumeMount {:?}: invalid mountPropagation {other:?}",
                        vm.name
                    )))
                }
            };
            let readonly = vm.read_only.unwrap_or(false) || info.read_only;
            if Path::new(&vm.mount_path) == Path::new("/etc/hosts") {
                mounts_etc_hosts = true;
            }
            out.push(api::Mount {
                container_path: vm.mount_path.clone(),
                host_path: host_path.display().to_string(),
                readonly,
                propagation: propagation as i32,
                recursive_read_only: readonly
                    && vm.recursive_read_only.as_deref() == Some("Enabled"),
                ..Default::default()
            });
        }
        let hosts = self.pod_dir.join(ETC_HOSTS_FILE);
        if !mounts_etc_hosts && hosts.is_file() {
            out.push(api::Mount {
                container_path: "/etc/hosts".into(),
                host_path: hosts.display().to_string(),
                ..Default::default()
            });
        }
        let term_path = container
            .termination_message_path
            .as_deref()
            .unwrap_or(DEFAULT_TERMINATION_MESSAGE_PATH);
        if !term_path.is_empty() {
            let file = self.termination_file(&container.name, restart_count)?;
            out.push(api::Mount {
                container_path: term_path.to_string(),
                host_path: file.display().to_string(),
                ..Default::default()
            });
        }
        Ok(out)
    }

    fn termination_file(
        &self,
        container: &str,
        restart_count: u32,
    ) -> Result<PathBuf, VolumeError> {
        if container.is_empty() || container.contains('/') || container.starts_with('.') {
            return Err(VolumeError::Invalid(format!(
                "invalid container name {container:?}"
            )));
        }
        let mut files = self.state.termination_files();
        let per = files.entry(container.to_string()).or_default();
        if let Some(p) = per.get(&restart_count) {
            if p.is_file() {
                return Ok(p.clone());
            }
        }
        let p = termination::create_file(
            &self.pod_dir.join("containers").join(container),
            restart_count,
        )?;
        per.insert(restart_count, p.clone());
        Ok(p)
    }

    /// The host path of volume `name`, when the pod has it.
    pub fn volume_path(&self, name: &str) -> Option<&Path> {
        self.volumes.get(name).map(|v| v.host_path.as_path())
    }

    /// Volumes that were set up before but failed to refresh this time (their previous contents
    /// stay in place); the kubelet reports them as `FailedMount` events without blocking the pod.
    pub fn refresh_errors(&self) -> &[VolumeError] {
        &self.refresh_errors
    }
}

//! The volume manager: sets up, refreshes and tears down the volumes of the pods on this node
//! under `<root>/pods/<uid>/`, in upstream's layout.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Pod;

use super::error::VolumeError;
use super::etc_hosts;
use super::mount;
use super::plan::{self, Ctx, FsGroup, VolumeInfo};
use super::pod_volumes::{PodState, PodVolumes, ETC_HOSTS_FILE};
use super::source::VolumeSource;
use super::termination;
use super::token::TokenCache;
use crate::fieldpath::NodeAllocatable;

/// Sets up and tears down pod volumes; one per kubelet.
pub struct VolumeManager {
    root: PathBuf,
    source: Arc<dyn VolumeSource>,
    node_hosts_file: PathBuf,
    pods: Mutex<HashMap<String, Arc<PodState>>>,
    tokens: TokenCache,
}

impl VolumeManager {
    /// `root_dir` is the kubelet --root-dir (default /var/lib/kubelet); pods live in <root>/pods/<uid>/.
    pub fn new(root_dir: &Path, source: Arc<dyn VolumeSource>) -> Self {
        Self {
            root: root_dir.to_path_buf(),
            source,
            node_hosts_file: PathBuf::from("/etc/hosts"),
            pods: Mutex::new(HashMap::new()),
            tokens: TokenCache::default(),
        }
    }

    /// Reads the node's hosts file (copied for hostNetwork pods) from `path` instead of
    /// `/etc/hosts`.
    pub fn with_node_hosts_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.node_hosts_file = path.into();
        self
    }

    /// `<root>/pods/<uid>`, with the root's symlinks resolved when it exists, so paths compare
    /// equal to the kernel's mount table.
    pub fn pod_dir(&self, pod_uid: &str) -> PathBuf {
        self.pods_root().join(pod_uid)
    }

    fn pods_root(&self) -> PathBuf {
        let root = fs::canonicalize(&self.root).unwrap_or_else(|_| self.root.clone());
        root.join("pods")
    }

    fn pod_state(&self, uid: &str) -> Arc<PodState> {
        let mut pods = self.pods.lock().unwrap_or_else(|p| p.into_inner());
        pods.entry(uid.to_string()).or_default().clone()
    }

    /// Idempotent: creates/refreshes every volume of the pod. Called before containers start and
    /// again on every periodic pod sync (~every 10-60 s), so configMap/secret/downwardAPI/projected
    /// contents that changed in the API are rewritten (atomically) into already-mounted volumes.
    ///
    /// Fails when a volume that was never set up cannot be; a failed refresh of a volume that
    /// is already in place is reported by [`PodVolumes::refresh_errors`] instead.
    pub async fn setup(
        &self,
        pod: &Pod,
        node: &NodeAllocatable,
    ) -> Result<PodVolumes, VolumeError> {
        let uid = pod_uid(pod)?;
        let state = self.pod_state(uid);
        let mut ready = state.setup.lock().await;
        let pod_dir = self.pod_dir(uid);
        let spec = pod.spec.as_ref();
        let fs_group = spec
            .and_then(|s| s.security_context.as_ref())
            .and_then(|sc| {
                let gid = u32::try_from(sc.fs_group?).ok()?;
                Some(FsGroup {
                    gid,
                    on_root_mismatch: sc.fs_group_change_policy.as_deref()
                        == Some("OnRootMismatch"),
                })
            });
        let ctx = Ctx {
            pod,
            namespace: pod.metadata.namespace.as_deref().unwrap_or("default"),
            node,
            fs_group,
            source: self.source.as_ref(),
            tokens: &self.tokens,
            now: jiff::Timestamp::now(),
        };

        let mut fatal = Vec::new();
        let mut work = Vec::new();
        for vol in spec.and_then(|s| s.volumes.as_ref()).into_iter().flatten() {
            match plan::volume_info(&pod_dir, vol) {
                Ok(info) => {
                    let planned = plan::plan(&ctx, &info, vol).await;
                    work.push((vol.name.clone(), info, planned));
                }
                Err(e) => fatal.push(e.for_volume(&vol.name)),
            }
        }

        let already: HashSet<String> = ready.clone();
        let dir = pod_dir.clone();
        let applied = tokio::task::spawn_blocking(move || {
            create_pod_dir(&dir)?;
            Ok::<_, VolumeError>(
                work.into_iter()
                    .map(|(name, info, planned)| {
                        let first = !already.contains(&name);
                        let r = planned.and_then(|p| plan::apply(&p, first, fs_group));
                        (name, info, r)
                    })
                    .collect::<Vec<_>>(),
            )
        })
        .await
        .map_err(|e| {
            VolumeError::io(
                "set up volumes",
                &pod_dir,
                std::io::Error::other(e.to_string()),
            )
        })??;

        let mut volumes = BTreeMap::<String, VolumeInfo>::new();
        let mut refresh_errors = Vec::new();
        for (name, info, r) in applied {
            match r {
                Ok(changed) => {
                    if changed {
                        tracing::info!(volume = %name, pod_uid = %uid, "volume contents updated");
                    }
                    ready.insert(name.clone());
                    volumes.insert(name, info);
                }
                Err(e) if ready.contains(&name) => {
                    tracing::warn!(volume = %name, pod_uid = %uid, error = %e,
                        "volume refresh failed, keeping the previous contents");
                    refresh_errors.push(e.for_volume(&name));
                    volumes.insert(name, info);
                }
                Err(e) => fatal.push(e.for_volume(&name)),
            }
        }
        if let Some(e) = VolumeError::from_list(fatal) {
            return Err(e);
        }
        Ok(PodVolumes {
            pod_dir,
            volumes,
            refresh_errors,
            state: state.clone(),
        })
    }

    /// Unmounts tmpfs and removes <root>/pods/<uid> entirely. Idempotent.
    ///
    /// Mounts are detached lazily, so busy files do not block it; the directory is removed only
    /// once no mount is left below it, and removal never follows symlinks.
    pub async fn teardown(&self, pod_uid: &str) -> Result<(), VolumeError> {
        check_uid(pod_uid)?;
        let state = self.pod_state(pod_uid);
        let mut ready = state.setup.lock().await;
        let dir = self.pod_dir(pod_uid);
        let d = dir.clone();
        tokio::task::spawn_blocking(move || remove_pod_dir(&d))
            .await
            .map_err(|e| {
                VolumeError::io(
                    "tear down volumes",
                    &dir,
                    std::io::Error::other(e.to_string()),
                )
            })??;
        ready.clear();
        drop(ready);
        self.tokens.forget_pod(pod_uid);
        self.pods
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(pod_uid);
        tracing::info!(pod_uid, "pod volumes torn down");
        Ok(())
    }

    /// Removes pod dirs whose UID is not in `live` (after a kubelet restart).
    pub async fn cleanup_orphans(&self, live: &HashSet<String>) -> Result<(), VolumeError> {
        let pods = self.pods_root();
        let entries = match fs::read_dir(&pods) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(VolumeError::io("read dir", &pods, e)),
        };
        let mut orphans = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| VolumeError::io("read dir", &pods, e))?;
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_dir && !live.contains(&name) {
                orphans.push(name);
            }
        }
        let mut errors = Vec::new();
        for uid in orphans {
            tracing::info!(pod_uid = %uid, "removing volumes of an orphaned pod");
            if let Err(e) = self.teardown(&uid).await {
                errors.push(e);
            }
        }
        VolumeError::from_list(errors).map_or(Ok(()), Err)
    }

    /// Writes the pod's `/etc/hosts` (file `etc-hosts` in the pod directory) once its IPs are
    /// known; [`PodVolumes::container_mounts`] mounts it into every container. A hostNetwork
    /// pod gets the node's hosts file plus its hostAliases, as upstream.
    ///
    /// The file is rewritten in place, never replaced, because running containers have the
    /// inode bind-mounted.
    pub fn write_etc_hosts(
        &self,
        pod: &Pod,
        pod_ips: &[String],
        cluster_domain: &str,
    ) -> Result<(), VolumeError> {
        let uid = pod_uid(pod)?;
        let spec = pod.spec.as_ref();
        let aliases = spec
            .and_then(|s| s.host_aliases.as_deref())
            .unwrap_or_default();
        let content = if spec.and_then(|s| s.host_network).unwrap_or(false) {
            let node = fs::read_to_string(&self.node_hosts_file)
                .map_err(|e| VolumeError::io("read", &self.node_hosts_file, e))?;
            etc_hosts::node_hosts(&node, aliases)
        } else {
            if pod_ips.is_empty() {
                // As upstream: without an IP there is nothing to write, and no mount is made.
                return Ok(());
            }
            let (hostname, domain) = etc_hosts::pod_hostname_and_domain(pod, cluster_domain);
            etc_hosts::managed_hosts(pod_ips, &hostname, domain.as_deref(), aliases)
        };
        let dir = self.pod_dir(uid);
        create_pod_dir(&dir)?;
        let path = dir.join(ETC_HOSTS_FILE);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| VolumeError::io("open", &path, e))?;
        f.write_all(content.as_bytes())
            .map_err(|e| VolumeError::io("write", &path, e))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644))
            .map_err(|e| VolumeError::io("chmod", &path, e))
    }

    /// The termination message of the container's latest start (the last 4096 bytes of its
    /// termination-log file, like upstream), or `None` when it has no such file.
    pub fn termination_message(&self, pod_uid: &str, container_name: &str) -> Option<String> {
        if check_uid(pod_uid).is_err() || check_uid(container_name).is_err() {
            return None;
        }
        let known = {
            let pods = self.pods.lock().unwrap_or_else(|p| p.into_inner());
            pods.get(pod_uid).and_then(|s| {
                s.termination_files()
                    .get(container_name)
                    .and_then(|m| m.values().next_back().cloned())
            })
        };
        let dir = self
            .pod_dir(pod_uid)
            .join("containers")
            .join(container_name);
        // After a kubelet restart the in-memory record is gone: take the newest file.
        let path = known.or_else(|| termination::newest(&dir))?;
        termination::message(&path)
    }
}

fn pod_uid(pod: &Pod) -> Result<&str, VolumeError> {
    let uid = pod
        .metadata
        .uid
        .as_deref()
        .ok_or_else(|| VolumeError::Invalid("pod has no metadata.uid".into()))?;
    check_uid(uid)?;
    Ok(uid)
}

/// A UID (or container name) becomes one path element: refuse anything that is not.
fn check_uid(uid: &str) -> Result<(), VolumeError> {
    if uid.is_empty() || uid.contains('/') || uid == "." || uid == ".." || uid.contains('\0') {
        return Err(VolumeError::Invalid(format!("invalid pod UID {uid:?}")));
    }
    Ok(())
}

/// The pod directory is 0750 as upstream's: only root needs to traverse it.
fn create_pod_dir(dir: &Path) -> Result<(), VolumeError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .map_err(|e| VolumeError::io("mkdir", dir, e))
}

fn remove_pod_dir(dir: &Path) -> Result<(), VolumeError> {
    let left = mount::unmount_all_under(dir)?;
    if !left.is_empty() {
        return Err(VolumeError::StillMounted {
            dir: dir.display().to_string(),
            mounts: left.iter().map(|p| p.display().to_string()).collect(),
        });
    }
    // std's remove_dir_all works through directory fds and never follows symlinks, so a link a
    // container planted in a volume cannot send it outside the pod directory.
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(VolumeError::io("remove pod directory", dir, e)),
    }
}

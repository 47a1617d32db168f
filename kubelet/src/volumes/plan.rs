//! One volume's setup in two halves: [`plan`] gathers what it needs from the API (async) and
//! decides the contents; [`apply`] does the file system work (blocking, off the async workers).

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    EmptyDirVolumeSource, HostPathVolumeSource, Pod, ProjectedVolumeSource, Volume,
};

use super::atomic_writer::{self, FileProjection, Payload, SetPerms};
use super::error::VolumeError;
use super::payload::{
    config_map_payload, downward_api_payload, mode_of, secret_payload, DEFAULT_MODE,
};
use super::source::VolumeSource;
use super::token::{TokenCache, TokenSpec, DEFAULT_EXPIRATION_SECONDS, MIN_EXPIRATION_SECONDS};
use super::{fs_group, host_path, mount};
use crate::fieldpath::NodeAllocatable;
use crate::node::host::Quantity;

/// Plugin directory names under `<pod>/volumes/`, as upstream escapes `kubernetes.io/<plugin>`.
pub const EMPTY_DIR: &str = "kubernetes.io~empty-dir";
/// configMap volumes.
pub const CONFIG_MAP: &str = "kubernetes.io~configmap";
/// secret volumes (tmpfs).
pub const SECRET: &str = "kubernetes.io~secret";
/// downwardAPI volumes.
pub const DOWNWARD_API: &str = "kubernetes.io~downward-api";
/// projected volumes (tmpfs).
pub const PROJECTED: &str = "kubernetes.io~projected";

/// Where a set-up volume is on the host and whether the kubelet forces it read-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    /// Host path the runtime bind-mounts.
    pub host_path: PathBuf,
    /// configMap, secret, downwardAPI and projected volumes are always mounted read-only.
    pub read_only: bool,
}

/// The pod's `fsGroup` and whether its change policy is `OnRootMismatch`.
#[derive(Debug, Clone, Copy)]
pub struct FsGroup {
    /// Group id.
    pub gid: u32,
    /// Skip the walk when the volume root already matches.
    pub on_root_mismatch: bool,
}

/// What the volume needs on disk.
#[derive(Debug)]
pub enum Plan {
    /// A directory, on tmpfs when `tmpfs` is `Some(size)`.
    EmptyDir {
        /// The volume directory.
        dir: PathBuf,
        /// `Some(size)` for medium Memory.
        tmpfs: Option<Option<u64>>,
    },
    /// A host path, checked by type.
    HostPath {
        /// The host path.
        path: PathBuf,
        /// `type`.
        type_: String,
    },
    /// Files written with the atomic writer.
    Atomic {
        /// The volume directory.
        dir: PathBuf,
        /// Memory-backed (secrets and projected volumes never touch the disk).
        tmpfs: bool,
        /// The files.
        payload: Payload,
    },
}

/// Everything [`plan`] reads.
pub struct Ctx<'a> {
    /// The pod.
    pub pod: &'a Pod,
    /// Its namespace.
    pub namespace: &'a str,
    /// For resourceFieldRef limits the container does not set.
    pub node: &'a NodeAllocatable,
    /// fsGroup, if any.
    pub fs_group: Option<FsGroup>,
    /// The API.
    pub source: &'a dyn VolumeSource,
    /// Service account tokens.
    pub tokens: &'a TokenCache,
    /// Now, for token refresh.
    pub now: Timestamp,
}

enum Kind<'a> {
    EmptyDir(&'a EmptyDirVolumeSource),
    HostPath(&'a HostPathVolumeSource),
    ConfigMap,
    Secret,
    DownwardApi,
    Projected(&'a ProjectedVolumeSource),
}

fn kind(vol: &Volume) -> Result<Kind<'_>, VolumeError> {
    if let Some(e) = &vol.empty_dir {
        return Ok(Kind::EmptyDir(e));
    }
    if let Some(h) = &vol.host_path {
        return Ok(Kind::HostPath(h));
    }
    if vol.config_map.is_some() {
        return Ok(Kind::ConfigMap);
    }
    if vol.secret.is_some() {
        return Ok(Kind::Secret);
    }
    if vol.downward_api.is_some() {
        return Ok(Kind::DownwardApi);
    }
    if let Some(p) = &vol.projected {
        return Ok(Kind::Projected(p));
    }
    // Name the source the pod used, from its JSON form, so the event says what is missing.
    let what = serde_json::to_value(vol)
        .ok()
        .and_then(|v| {
            v.as_object()
                .and_then(|o| o.keys().find(|k| *k != "name").cloned())
        })
        .unwrap_or_else(|| "with no source".to_string());
    Err(VolumeError::Unsupported(format!(
        "volume type {what} is not supported by oxlet"
    )))
}

/// Where the volume lives and its forced read-only flag; fails for unsupported volume types.
pub fn volume_info(pod_dir: &Path, vol: &Volume) -> Result<VolumeInfo, VolumeError> {
    let under = |plugin: &str| pod_dir.join("volumes").join(plugin).join(&vol.name);
    Ok(match kind(vol)? {
        Kind::EmptyDir(_) => VolumeInfo {
            host_path: under(EMPTY_DIR),
            read_only: false,
        },
        Kind::HostPath(h) => VolumeInfo {
            host_path: PathBuf::from(&h.path),
            read_only: false,
        },
        Kind::ConfigMap => VolumeInfo {
            host_path: under(CONFIG_MAP),
            read_only: true,
        },
        Kind::Secret => VolumeInfo {
            host_path: under(SECRET),
            read_only: true,
        },
        Kind::DownwardApi => VolumeInfo {
            host_path: under(DOWNWARD_API),
            read_only: true,
        },
        Kind::Projected(_) => VolumeInfo {
            host_path: under(PROJECTED),
            read_only: true,
        },
    })
}

/// Decides what volume `vol` must contain now, reading the API as needed.
pub async fn plan(ctx: &Ctx<'_>, info: &VolumeInfo, vol: &Volume) -> Result<Plan, VolumeError> {
    let dir = info.host_path.clone();
    match kind(vol)? {
        Kind::EmptyDir(e) => Ok(Plan::EmptyDir {
            dir,
            tmpfs: empty_dir_medium(e)?,
        }),
        Kind::HostPath(h) => Ok(Plan::HostPath {
            path: PathBuf::from(&h.path),
            type_: h.type_.clone().unwrap_or_default(),
        }),
        Kind::ConfigMap => {
            let Some(s) = &vol.config_map else {
                return Err(VolumeError::Invalid("no configMap source".into()));
            };
            let optional = s.optional.unwrap_or(false);
            let mode = s.default_mode.unwrap_or(DEFAULT_MODE);
            let payload = match ctx.source.config_map(ctx.namespace, &s.name).await? {
                Some(cm) => config_map_payload(s.items.as_deref(), &cm, mode, optional)?,
                None if optional => Payload::new(),
                None => return Err(not_found("configmap", &s.name)),
            };
            Ok(Plan::Atomic {
                dir,
                tmpfs: false,
                payload,
            })
        }
        Kind::Secret => {
            let Some(s) = &vol.secret else {
                return Err(VolumeError::Invalid("no secret source".into()));
            };
            let name = s.secret_name.as_deref().unwrap_or_default();
            if name.is_empty() {
                return Err(VolumeError::Invalid(
                    "secret volume without secretName".into(),
                ));
            }
            let optional = s.optional.unwrap_or(false);
            let mode = s.default_mode.unwrap_or(DEFAULT_MODE);
            let payload = match ctx.source.secret(ctx.namespace, name).await? {
                Some(sec) => secret_payload(s.items.as_deref(), &sec, mode, optional)?,
                None if optional => Payload::new(),
                None => return Err(not_found("secret", name)),
            };
            Ok(Plan::Atomic {
                dir,
                tmpfs: true,
                payload,
            })
        }
        Kind::DownwardApi => {
            let Some(d) = &vol.downward_api else {
                return Err(VolumeError::Invalid("no downwardAPI source".into()));
            };
            let payload = downward_api_payload(
                d.items.as_deref().unwrap_or_default(),
                ctx.pod,
                ctx.node,
                d.default_mode.unwrap_or(DEFAULT_MODE),
            )?;
            Ok(Plan::Atomic {
                dir,
                tmpfs: false,
                payload,
            })
        }
        Kind::Projected(p) => Ok(Plan::Atomic {
            dir,
            tmpfs: true,
            payload: projected_payload(ctx, p).await?,
        }),
    }
}

fn not_found(kind: &'static str, name: &str) -> VolumeError {
    VolumeError::NotFound {
        kind,
        name: name.to_string(),
    }
}

/// `None` for a disk-backed emptyDir, `Some(size)` for medium Memory.
fn empty_dir_medium(e: &EmptyDirVolumeSource) -> Result<Option<Option<u64>>, VolumeError> {
    match e.medium.as_deref().unwrap_or_default() {
        "" => Ok(None),
        "Memory" => {
            let size = match &e.size_limit {
                Some(q) if !q.0.is_empty() => {
                    let milli = Quantity::parse(&q.0)
                        .map_err(|_| {
                            VolumeError::Invalid(format!("invalid emptyDir sizeLimit {:?}", q.0))
                        })?
                        .0;
                    let bytes = u64::try_from((milli + 999) / 1000).map_err(|_| {
                        VolumeError::Invalid(format!("invalid emptyDir sizeLimit {:?}", q.0))
                    })?;
                    // size=0 means "unlimited" to tmpfs; a zero limit is no limit upstream too.
                    (bytes > 0).then_some(bytes)
                }
                _ => None,
            };
            Ok(Some(size))
        }
        m if m == "HugePages" || m.starts_with("HugePages-") => Err(VolumeError::Unsupported(
            format!("emptyDir medium {m} is not supported by oxlet (no hugetlbfs support)"),
        )),
        m => Err(VolumeError::Invalid(format!(
            "unknown emptyDir medium {m:?}"
        ))),
    }
}

/// All sources of a projected volume into one payload; every failing source is reported.
async fn projected_payload(
    ctx: &Ctx<'_>,
    p: &ProjectedVolumeSource,
) -> Result<Payload, VolumeError> {
    let default_mode = p.default_mode.unwrap_or(DEFAULT_MODE);
    let mut payload = Payload::new();
    let mut errors = Vec::new();
    for src in p.sources.iter().flatten() {
        let part: Result<Payload, VolumeError> = if let Some(c) = &src.config_map {
            let optional = c.optional.unwrap_or(false);
            match ctx.source.config_map(ctx.namespace, &c.name).await {
                Ok(Some(cm)) => config_map_payload(c.items.as_deref(), &cm, default_mode, optional),
                Ok(None) if optional => Ok(Payload::new()),
                Ok(None) => Err(not_found("configmap", &c.name)),
                Err(e) => Err(e),
            }
        } else if let Some(s) = &src.secret {
            let optional = s.optional.unwrap_or(false);
            match ctx.source.secret(ctx.namespace, &s.name).await {
                Ok(Some(sec)) => secret_payload(s.items.as_deref(), &sec, default_mode, optional),
                Ok(None) if optional => Ok(Payload::new()),
                Ok(None) => Err(not_found("secret", &s.name)),
                Err(e) => Err(e),
            }
        } else if let Some(d) = &src.downward_api {
            downward_api_payload(
                d.items.as_deref().unwrap_or_default(),
                ctx.pod,
                ctx.node,
                default_mode,
            )
        } else if let Some(t) = &src.service_account_token {
            let spec = ctx.pod.spec.as_ref();
            let service_account = spec
                .and_then(|s| s.service_account_name.as_deref())
                .filter(|s| !s.is_empty())
                .unwrap_or("default");
            let audiences = match t.audience.as_deref() {
                Some(a) if !a.is_empty() => vec![a.to_string()],
                // Empty: the API server fills in its own audience.
                _ => Vec::new(),
            };
            let expiration_seconds = t
                .expiration_seconds
                .unwrap_or(DEFAULT_EXPIRATION_SECONDS)
                .max(MIN_EXPIRATION_SECONDS);
            let token = ctx
                .tokens
                .get(
                    ctx.source,
                    TokenSpec {
                        namespace: ctx.namespace,
                        service_account,
                        audiences,
                        expiration_seconds,
                        pod_name: ctx.pod.metadata.name.as_deref().unwrap_or_default(),
                        pod_uid: ctx.pod.metadata.uid.as_deref().unwrap_or_default(),
                    },
                    ctx.now,
                )
                .await;
            // With fsGroup the token is 0600 and group ownership then makes it 0640, as upstream.
            let mode = if ctx.fs_group.is_some() {
                0o600
            } else {
                mode_of(None, default_mode)
            };
            let path = t.path.clone();
            token.map(|tok| {
                Payload::from([(
                    path,
                    FileProjection {
                        data: tok.into_bytes(),
                        mode,
                    },
                )])
            })
        } else if src.cluster_trust_bundle.is_some() {
            Err(VolumeError::Unsupported(
                "clusterTrustBundle projections are not supported by oxlet".into(),
            ))
        } else {
            Ok(Payload::new())
        };
        match part {
            Ok(p) => payload.extend(p),
            Err(e) => errors.push(e),
        }
    }
    match VolumeError::from_list(errors) {
        Some(e) => Err(e),
        None => Ok(payload),
    }
}

/// Does the disk work of `plan`. `first` is true the first time this kubelet sets the volume up
/// for the pod: one-time steps (hostPath checks, emptyDir ownership) run only then.
/// Returns whether the volume's contents changed.
pub fn apply(plan: &Plan, first: bool, fs_group: Option<FsGroup>) -> Result<bool, VolumeError> {
    match plan {
        Plan::EmptyDir { dir, tmpfs } => {
            ensure_dir(dir)?;
            if let Some(size) = tmpfs {
                mount::ensure_tmpfs(dir, *size)?;
            }
            if let (true, Some(g)) = (first, fs_group) {
                fs_group::set_ownership(dir, g.gid, false, g.on_root_mismatch)?;
            }
            Ok(false)
        }
        Plan::HostPath { path, type_ } => {
            if first {
                host_path::check(path, type_)?;
            }
            Ok(false)
        }
        Plan::Atomic {
            dir,
            tmpfs,
            payload,
        } => {
            ensure_dir(dir)?;
            if *tmpfs {
                mount::ensure_tmpfs(dir, None)?;
            }
            let perms = fs_group.map(|g| {
                move |p: &Path| -> Result<(), VolumeError> {
                    fs_group::set_ownership(p, g.gid, true, false)
                }
            });
            let changed =
                atomic_writer::write(dir, payload, perms.as_ref().map(|f| f as SetPerms<'_>))?;
            if let (true, Some(g)) = (changed || first, fs_group) {
                fs_group::set_ownership_root(dir, g.gid, true)?;
            }
            Ok(changed)
        }
    }
}

/// Creates a volume directory: parents 0750 like upstream's pod directories, the volume itself
/// 0777 so any container user can use it (upstream's emptyDir mode).
fn ensure_dir(dir: &Path) -> Result<(), VolumeError> {
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent).map_err(|e| VolumeError::io("mkdir", parent, e))?;
    }
    match fs::create_dir(dir) {
        Ok(()) => fs::set_permissions(dir, fs::Permissions::from_mode(0o777))
            .map_err(|e| VolumeError::io("chmod", dir, e)),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(VolumeError::io("mkdir", dir, e)),
    }
}

//! Pod volumes: emptyDir, hostPath, configMap, secret, downwardAPI and projected volumes
//! (including the `kube-api-access-*` service account volume), the pod's `/etc/hosts`, and
//! termination-message files, laid out as upstream's kubelet does:
//!
//! ```text
//! <root>/pods/<uid>/volumes/kubernetes.io~<plugin>/<volume>/   volume contents
//! <root>/pods/<uid>/volume-subpaths/<volume>/<container>/<n>  subPath bind mounts
//! <root>/pods/<uid>/etc-hosts                                 the pod's /etc/hosts
//! <root>/pods/<uid>/containers/<container>/<count>-<8 hex>    termination-log files
//! ```
//!
//! [`VolumeManager::setup`] plans each volume from the API ([`VolumeSource`]) and then does the
//! disk work on a blocking thread; [`PodVolumes::container_mounts`] turns a container's
//! volumeMounts into CRI mounts.

pub mod atomic_writer;
pub mod error;
pub mod etc_hosts;
pub mod fs_group;
pub mod host_path;
pub mod manager;
pub mod mount;
pub mod payload;
pub mod plan;
pub mod pod_volumes;
pub mod source;
pub mod subpath;
pub mod termination;
pub mod token;

#[cfg(test)]
mod tests;

pub use error::VolumeError;
pub use manager::VolumeManager;
pub use pod_volumes::PodVolumes;
pub use source::{KubeVolumeSource, VolumeSource};
pub use token::token_needs_refresh;

/// A random number for file names that must not collide (timestamped dirs, termination logs).
pub(crate) fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    // Each RandomState is freshly keyed, so this differs on every call without a rand crate.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish() as u32
}

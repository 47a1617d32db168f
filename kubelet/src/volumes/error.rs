//! Errors of the volume manager, worded for `FailedMount` pod Events as upstream's are.

/// What can go wrong while setting up, mounting or tearing down a pod's volumes.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// Setting up one volume failed; the message is upstream's `FailedMount` event text.
    #[error("MountVolume.SetUp failed for volume \"{volume}\" : {source}")]
    SetUp {
        /// The pod's name for the volume.
        volume: String,
        /// Why.
        #[source]
        source: Box<VolumeError>,
    },
    /// Several volumes failed; each entry is usually a [`VolumeError::SetUp`].
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Many(Vec<VolumeError>),
    /// A referenced API object does not exist (`configmap "x" not found`).
    #[error("{kind} \"{name}\" not found")]
    NotFound {
        /// `configmap` or `secret`, spelled as upstream's watch cache does.
        kind: &'static str,
        /// The object's name.
        name: String,
    },
    /// An `items` entry names a key the object does not have.
    #[error("{kind} references non-existent {what} key: {key}")]
    MissingKey {
        /// `configmap` or `secret`.
        kind: &'static str,
        /// `config` or `secret`, as in upstream's message.
        what: &'static str,
        /// The missing key.
        key: String,
    },
    /// A Kubernetes API call failed.
    #[error("{op} {object}: {source}")]
    Api {
        /// The operation (`get configmap`, `create token`).
        op: &'static str,
        /// The object (`namespace/name`).
        object: String,
        /// The client's error, with the API server's Status when there was one.
        #[source]
        source: kube::Error,
    },
    /// A file system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path it was done to.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A mount or unmount system call failed.
    #[error("{op} {path}: {source}")]
    Mount {
        /// `mount tmpfs`, `bind mount`, `unmount`.
        op: &'static str,
        /// The mount point.
        path: String,
        /// The kernel's error.
        #[source]
        source: nix::Error,
    },
    /// A hostPath volume's path is not of the declared `type`.
    #[error("hostPath type check failed: {path} is not a {expected}")]
    HostPathType {
        /// The host path.
        path: String,
        /// `directory`, `file`, `socket file`, `character device`, `block device`.
        expected: &'static str,
    },
    /// A hostPath volume of a checked type does not exist.
    #[error("hostPath {0} doesn't exist")]
    HostPathMissing(String),
    /// A downward API item could not be resolved.
    #[error("{0}")]
    DownwardApi(String),
    /// A service account token could not be obtained.
    #[error("failed to fetch token: {0}")]
    Token(Box<VolumeError>),
    /// The pod asks for something this kubelet does not implement.
    #[error("{0}")]
    Unsupported(String),
    /// The pod's spec is invalid for the volume manager (paths, subPath, propagation).
    #[error("{0}")]
    Invalid(String),
    /// A volumeMount names a volume the pod does not have (or that is not set up).
    #[error("cannot find volume \"{volume}\" to mount into container \"{container}\"")]
    UnknownVolume {
        /// The volume name.
        volume: String,
        /// The container.
        container: String,
    },
    /// Mounts under the pod directory are still present, so it is not removed.
    #[error("pod directory {dir} still has mounts: {}", .mounts.join(", "))]
    StillMounted {
        /// The pod directory.
        dir: String,
        /// The remaining mount points.
        mounts: Vec<String>,
    },
}

impl VolumeError {
    /// Wraps `self` as the failure of volume `volume`.
    pub fn for_volume(self, volume: &str) -> Self {
        VolumeError::SetUp {
            volume: volume.to_string(),
            source: Box::new(self),
        }
    }

    /// True when trying again later can succeed (an object may appear, a path may be created,
    /// the API server may come back); false for specs this kubelet can never satisfy.
    pub fn is_retryable(&self) -> bool {
        match self {
            VolumeError::SetUp { source, .. } | VolumeError::Token(source) => source.is_retryable(),
            VolumeError::Many(v) => v.iter().any(VolumeError::is_retryable),
            VolumeError::Unsupported(_)
            | VolumeError::Invalid(_)
            | VolumeError::UnknownVolume { .. } => false,
            VolumeError::Api {
                source: kube::Error::Api(s),
                ..
            } => !(s.code == 400 || s.code == 422),
            _ => true,
        }
    }

    /// The individual failures, one per volume: what the kubelet posts as `FailedMount` events.
    pub fn failures(&self) -> Vec<&VolumeError> {
        match self {
            VolumeError::Many(v) => v.iter().flat_map(VolumeError::failures).collect(),
            e => vec![e],
        }
    }

    pub(crate) fn io(op: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        VolumeError::Io {
            op,
            path: path.display().to_string(),
            source,
        }
    }

    pub(crate) fn mount(op: &'static str, path: &std::path::Path, source: nix::Error) -> Self {
        VolumeError::Mount {
            op,
            path: path.display().to_string(),
            source,
        }
    }

    /// One error from a list: the single one, or [`VolumeError::Many`].
    pub(crate) fn from_list(mut v: Vec<VolumeError>) -> Option<Self> {
        match v.len() {
            0 => None,
            1 => v.pop(),
            _ => Some(VolumeError::Many(v)),
        }
    }
}

//! Why a pod's CRI config could not be built; the messages are what the pod status shows
//! (reason `CreateContainerConfigError` or `CreatePodSandboxError`), worded as upstream's.

/// A failure to turn a pod spec into a CRI sandbox or container config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A ConfigMap named by `env`/`envFrom` does not exist and is not optional.
    #[error("configmap {name:?} not found")]
    ConfigMapNotFound {
        /// The ConfigMap's name.
        name: String,
    },
    /// A Secret named by `env`/`envFrom` does not exist and is not optional.
    #[error("secret {name:?} not found")]
    SecretNotFound {
        /// The Secret's name.
        name: String,
    },
    /// A `configMapKeyRef` names a key the ConfigMap lacks.
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    ConfigMapKeyNotFound {
        /// The missing key.
        key: String,
        /// The pod's namespace.
        namespace: String,
        /// The ConfigMap's name.
        name: String,
    },
    /// A `secretKeyRef` names a key the Secret lacks.
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    SecretKeyNotFound {
        /// The missing key.
        key: String,
        /// The pod's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
    },
    /// Reading a referenced object from the API failed for a reason other than NotFound.
    #[error("get {kind} {namespace}/{name}: {source}")]
    Api {
        /// `configmap`, `secret` or `services`.
        kind: &'static str,
        /// The namespace looked in.
        namespace: String,
        /// The object's name (empty for lists).
        name: String,
        /// The client's error, with the API server's Status when there was one.
        #[source]
        source: Box<kube::Error>,
    },
    /// A `fieldRef` or `resourceFieldRef` could not be resolved.
    #[error("{0}")]
    FieldRef(String),
    /// The pod asks for something this node cannot express in CRI (invalid hostname, missing
    /// profile name, unsupported feature); the message says what.
    #[error("{0}")]
    Invalid(String),
    /// The host's resolv.conf could not be read.
    #[error("open resolv.conf {path}: {source}")]
    ResolvConf {
        /// The path read.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl ConfigError {
    /// True when the error may go away on retry without the pod changing (API outages).
    pub fn is_transient(&self) -> bool {
        match self {
            ConfigError::Api { source, .. } => crate::error::is_transient(source),
            _ => false,
        }
    }
}

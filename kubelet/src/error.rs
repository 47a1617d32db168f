//! Errors of this crate.

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation on a path failed.
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
    /// The KubeletConfiguration file is not valid YAML/JSON or has a field of the wrong type.
    #[error("decode KubeletConfiguration: {0}")]
    ConfigDecode(String),
    /// The KubeletConfiguration failed validation; each entry is `fieldPath: problem`.
    #[error("invalid KubeletConfiguration: {}", .0.join("; "))]
    ConfigInvalid(Vec<String>),
    /// A Kubernetes API call failed.
    #[error("{op} {object}: {source}")]
    Api {
        /// The operation (`create Node`, `patch Node status`, …).
        op: &'static str,
        /// The object it was done to.
        object: String,
        /// The client's error, with the API server's Status when there was one.
        #[source]
        source: kube::Error,
    },
    /// The container runtime could not be reached or answered with an error.
    #[error("container runtime: {0}")]
    Runtime(String),
    /// A quantity string could not be parsed.
    #[error("invalid quantity {0:?}")]
    Quantity(String),
}

impl Error {
    /// True when the API server answered with this HTTP status code.
    pub fn is_status(&self, code: u16) -> bool {
        matches!(self, Error::Api { source: kube::Error::Api(s), .. } if s.code == code)
    }

    /// True when retrying may succeed: transport errors, 429, 5xx and 409 conflicts.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Api { source, .. } => is_transient(source),
            _ => false,
        }
    }
}

/// True when a kube error may go away on retry (network, timeouts, 409, 429, 5xx).
pub(crate) fn is_transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code == 409 || s.code == 429 || s.code >= 500,
        kube::Error::HyperError(_)
        | kube::Error::Service(_)
        | kube::Error::HttpError(_)
        | kube::Error::ReadEvents(_) => true,
        _ => false,
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

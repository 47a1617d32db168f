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
    /// The configuration file could not be decoded.
    #[error("decode KubeProxyConfiguration: {0}")]
    Decode(String),
    /// A configuration value is invalid; the message names the field path.
    #[error("invalid configuration: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// A listener (/healthz, /metrics) could not be bound.
    #[error("bind {what} on {addr}: {source}")]
    Bind {
        /// Which server.
        what: &'static str,
        /// The address.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A store's writer went away before the initial list finished.
    #[error("{0} watch ended before its initial list completed")]
    StoreNotReady(&'static str),
    /// Applying rules failed; the message keeps the tool's stderr verbatim.
    #[error("apply rules: {0}")]
    Apply(#[from] oxlet_netrules::Error),
    /// A long-running task of the proxy ended while the proxy was still meant to run.
    #[error("task {0} ended unexpectedly")]
    TaskEnded(&'static str),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

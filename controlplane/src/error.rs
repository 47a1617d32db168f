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
    /// The storage layer failed; see [`crate::storage::Error`] for its meaning and status.
    #[error(transparent)]
    Storage(#[from] crate::storage::Error),
    /// Creating the built-in objects (system namespaces, the `kubernetes` Service) failed.
    #[error("bootstrap: {0}")]
    Bootstrap(String),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

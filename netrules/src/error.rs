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
    /// A tool (`nft`, `iptables-restore`, …) could not be started or talked to.
    #[error("run {command}: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A tool exited with failure; `stderr` is its own message, verbatim.
    #[error("{command}: {status}: {stderr}")]
    CommandFailed {
        /// The command line.
        command: String,
        /// The exit status.
        status: String,
        /// The tool's standard error, verbatim.
        stderr: String,
    },
}

impl Error {
    /// The failed tool's stderr, if this is a [`Error::CommandFailed`].
    pub fn stderr(&self) -> Option<&str> {
        match self {
            Error::CommandFailed { stderr, .. } => Some(stderr),
            _ => None,
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

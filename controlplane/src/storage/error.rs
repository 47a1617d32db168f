//! Errors of the storage layer.

/// A failed storage operation. Callers match on meaning through the `is_*` helpers or
/// [`Error::http_status`]; the message keeps the backend's own words.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The key has no live object.
    #[error("key {key} not found")]
    NotFound {
        /// The key looked up.
        key: String,
    },
    /// A create found the key live already.
    #[error("key {key} already exists")]
    AlreadyExists {
        /// The key that exists.
        key: String,
    },
    /// An update or delete expected another `mod_revision` (optimistic concurrency).
    #[error("key {key}: expected mod_revision {expected}, current is {current}")]
    Conflict {
        /// The key written.
        key: String,
        /// The revision the caller expected.
        expected: i64,
        /// The key's current `mod_revision`.
        current: i64,
    },
    /// The requested revision is older than the oldest one kept (compacted, or out of a watch
    /// cache's window): the API server answers 410 Gone.
    #[error("revision {requested} has been compacted; oldest available is {compacted_revision}")]
    Compacted {
        /// The revision asked for.
        requested: i64,
        /// The compaction point: the oldest revision still served.
        compacted_revision: i64,
    },
    /// The requested revision is newer than the store's (or cache's) current one.
    #[error("revision {requested} is newer than the current revision {current}")]
    FutureRevision {
        /// The revision asked for.
        requested: i64,
        /// The current revision.
        current: i64,
    },
    /// A watcher fell too far behind and was dropped instead of buffering without bound;
    /// the client re-watches from the last revision it saw.
    #[error("watch on {prefix} terminated: watcher could not keep up")]
    WatcherTooSlow {
        /// The watched prefix.
        prefix: String,
    },
    /// The backend (SQLite, etcd) failed; the cause keeps its own message.
    #[error("{op}: {source}")]
    Backend {
        /// The operation that failed, with its object (`"create /registry/pods/default/web"`).
        op: String,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Result with the storage [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps a backend error with the operation that failed.
    pub fn backend(
        op: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::Backend {
            op: op.into(),
            source: source.into(),
        }
    }

    /// Whether the key had no live object (404).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// Whether a create hit a live key (409 AlreadyExists).
    pub fn is_already_exists(&self) -> bool {
        matches!(self, Error::AlreadyExists { .. })
    }

    /// Whether an expected revision did not match (409 Conflict).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }

    /// Whether the revision asked for is gone (410 Gone, "too old resource version").
    pub fn is_compacted(&self) -> bool {
        matches!(self, Error::Compacted { .. })
    }

    /// The HTTP status the API server answers with: 404, 409, 410, 504 for a revision from
    /// the future (upstream's "Too large resource version"), else 500.
    pub fn http_status(&self) -> u16 {
        match self {
            Error::NotFound { .. } => 404,
            Error::AlreadyExists { .. } | Error::Conflict { .. } => 409,
            Error::Compacted { .. } => 410,
            Error::FutureRevision { .. } => 504,
            Error::WatcherTooSlow { .. } | Error::Backend { .. } => 500,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_meaning() {
        let e = Error::Conflict {
            key: "/registry/pods/a/b".into(),
            expected: 3,
            current: 5,
        };
        assert!(e.is_conflict());
        assert_eq!(e.http_status(), 409);
        let e = Error::Compacted {
            requested: 1,
            compacted_revision: 10,
        };
        assert!(e.is_compacted());
        assert_eq!(e.http_status(), 410);
        let e = Error::backend("get /k", "database is locked");
        assert_eq!(e.http_status(), 500);
        assert_eq!(e.to_string(), "get /k: database is locked");
    }
}

//! Errors of this crate.
//!
//! Every RPC failure keeps the runtime's own [`tonic::Status`], and its message is part of the
//! `Display` text, so `to_string()` in a pod status, an Event or a log line still carries
//! containerd's words. Callers match on meaning through [`Error::code`], [`Error::is_not_found`]
//! and friends, never on the text.

use std::path::PathBuf;
use std::time::Duration;

use tonic::{Code, Status};

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The endpoint string is not a unix socket address we can use.
    #[error("invalid runtime endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// Why it was rejected.
        reason: String,
    },
    /// Connecting to the socket failed.
    #[error("connect to {endpoint}: {source}")]
    Connect {
        /// The endpoint dialled.
        endpoint: String,
        /// The transport error.
        #[source]
        source: tonic::transport::Error,
    },
    /// A call did not finish within its deadline.
    #[error("{op} {object}: timed out after {after:?}")]
    Timeout {
        /// The RPC, e.g. `PullImage`.
        op: &'static str,
        /// What it was about (an ID, an image or a pod), empty for object-less calls.
        object: String,
        /// The deadline that expired.
        after: Duration,
    },
    /// An RPC without a specific object (Version, Status, List*, ImageFsInfo) failed.
    #[error("{op}: {}", .source.message())]
    Rpc {
        /// The RPC name.
        op: &'static str,
        /// The runtime's status.
        #[source]
        source: Status,
    },
    /// RunPodSandbox failed.
    #[error("RunPodSandbox {pod}: {}", .source.message())]
    RunPodSandbox {
        /// `namespace/name` of the pod.
        pod: String,
        /// The runtime's status.
        #[source]
        source: Status,
    },
    /// StopPodSandbox failed.
    #[error("StopPodSandbox {sandbox_id}: {}", .source.message())]
    StopPodSandbox {
        /// The sandbox ID.
        sandbox_id: String,
        /// The runtime's status.
        #[source]
        source: Status,
    },
    /// RemovePodSandbox failed.
    #[error("RemovePodSandbox {sandbox_id}: {}", .source.message())]
    RemovePodSandbox {
        /// The sandbox ID.
        sandbox_id: String,
        /// The runtime's status.
        #[source]
        source: Status,
    },
    /// PodSandboxStatus failed.
    #[error("PodSandboxStatus {sandbox_id}: {}", .source.message())]
    PodSandboxStatus {
        /// The sandbox ID.
        sandbox_id: String,
        /// The runtime's status.
        #[source]
        source: Status,
    },
    /// PortForward failed.
    #[error("PortForward {sandbox_id}: {}", .source.message())]
    PortForward {
        /// The sandbox ID.
        sandbox_id: String,
        /// The runtime's status.
        #[source]
        source: Status,
    },
    /// CreateContainer failed.
    #[error("CreateContainer {container} in {sandbox_id}: {}", .source.message())]
    CreateContainer {
        /// The container name from its metadata.
        container: String,
        /// The sandbox it was to be created in.
        sandbox_id: String,
        /// The runtime's status.
        #[source]
        source: Status,
    },
    /// A call about one container (StartContainer, StopContainer, ExecSync, ...) failed.
    #[error("{op} {container_id}: {}", .source.message())]
    Container {
        /// The RPC name.
        op: &'static str,
        /// The container ID.
        container_id: String,
        /// The runtime's status.
        #[source]
        source: Status,
    },
    /// A call about one image (PullImage, ImageStatus, RemoveImage) failed.
    #[error("{op} {image}: {}", .source.message())]
    Image {
        /// The RPC name.
        op: &'static str,
        /// The image reference.
        image: String,
        /// The runtime's status.
        #[source]
        source: Status,
    },
    /// A containerd API call made during an image import failed.
    #[error("containerd {op} {object}: {}", .source.message())]
    Containerd {
        /// The containerd RPC, e.g. `content.Write` or `snapshots.Prepare`.
        op: &'static str,
        /// The digest, snapshot key or image name involved.
        object: String,
        /// containerd's status.
        #[source]
        source: Status,
    },
    /// An image archive is malformed or unsupported.
    #[error("import {archive}: {reason}")]
    Import {
        /// The archive file.
        archive: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An I/O operation on a path failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A JSON document (index, manifest, config) could not be parsed.
    #[error("parse {what}: {source}")]
    Json {
        /// Which document.
        what: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// The gRPC status of a failed call, if this error is one.
    pub fn status(&self) -> Option<&Status> {
        match self {
            Error::Rpc { source, .. }
            | Error::RunPodSandbox { source, .. }
            | Error::StopPodSandbox { source, .. }
            | Error::RemovePodSandbox { source, .. }
            | Error::PodSandboxStatus { source, .. }
            | Error::PortForward { source, .. }
            | Error::CreateContainer { source, .. }
            | Error::Container { source, .. }
            | Error::Image { source, .. }
            | Error::Containerd { source, .. } => Some(source),
            _ => None,
        }
    }

    /// The gRPC code: the runtime's for RPC failures, `DeadlineExceeded` for our own timeouts,
    /// `Unavailable` for connection failures, `None` for local errors.
    pub fn code(&self) -> Option<Code> {
        match self {
            Error::Timeout { .. } => Some(Code::DeadlineExceeded),
            Error::Connect { .. } => Some(Code::Unavailable),
            other => other.status().map(Status::code),
        }
    }

    /// The object does not exist (gRPC `NotFound`).
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(Code::NotFound)
    }

    /// The runtime does not implement the call (gRPC `Unimplemented`), e.g. an older containerd.
    pub fn is_unimplemented(&self) -> bool {
        self.code() == Some(Code::Unimplemented)
    }

    /// The runtime could not be reached (connection refused, socket missing, restarting).
    pub fn is_unavailable(&self) -> bool {
        self.code() == Some(Code::Unavailable)
    }

    /// The call ran out of time, ours or the runtime's deadline.
    pub fn is_timeout(&self) -> bool {
        self.code() == Some(Code::DeadlineExceeded)
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_keeps_runtime_words_and_code() {
        let err = Error::RunPodSandbox {
            pod: "default/web".into(),
            source: Status::new(Code::Unknown, "can't get final child's PID from pipe: EOF"),
        };
        assert_eq!(
            err.to_string(),
            "RunPodSandbox default/web: can't get final child's PID from pipe: EOF"
        );
        assert_eq!(err.code(), Some(Code::Unknown));
        assert!(!err.is_not_found());

        let err = Error::Container {
            op: "ContainerStatus",
            container_id: "abc".into(),
            source: Status::not_found("container \"abc\" not found"),
        };
        assert!(err.is_not_found());
        assert_eq!(
            err.to_string(),
            "ContainerStatus abc: container \"abc\" not found"
        );
    }

    #[test]
    fn timeout_is_deadline_exceeded() {
        let err = Error::Timeout {
            op: "PullImage",
            object: "docker.io/library/busybox:latest".into(),
            after: Duration::from_secs(5),
        };
        assert!(err.is_timeout());
        assert_eq!(
            err.to_string(),
            "PullImage docker.io/library/busybox:latest: timed out after 5s"
        );
    }
}

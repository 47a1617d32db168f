//! Container probes (liveness, readiness, startup), as upstream pkg/kubelet/prober and
//! pkg/probe/{exec,http,tcp,grpc}.
//!
//! [`run_probe`] runs one probe once. [`ProbeManager`] keeps one worker task per
//! (pod UID, container, probe kind) that probes on the container's schedule, applies the
//! thresholds, records `Unhealthy` events and tells the pod worker through [`ProbeUpdate`]s
//! whenever a result changes; the pod worker reads readiness, `started` and restart decisions
//! back from it.

mod grpc;
pub(crate) mod http;
mod manager;
mod probe;
mod worker;

pub use manager::{ProbeManager, ProbeTarget};
pub(crate) use probe::resolve_port;
pub use probe::run_probe;

/// Which probe of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProbeKind {
    /// `livenessProbe`: failure restarts the container.
    Liveness,
    /// `readinessProbe`: gates the container's (and pod's) Ready condition.
    Readiness,
    /// `startupProbe`: holds back the other probes until it succeeds; failure restarts.
    Startup,
}

impl ProbeKind {
    /// The capitalised name upstream uses in event messages (`Liveness probe failed: ...`).
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Startup => "Startup",
        }
    }
}

impl std::fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of a probe, as upstream's probe.Result plus the output it reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    /// The probe passed; no message.
    Success,
    /// The probe failed, with the message events and logs show.
    Failure(String),
    /// Passed with a caveat (an HTTP redirect that was not followed); counts as success.
    Warning(String),
    /// Not known yet (a startup probe that has not reached a verdict).
    Unknown,
}

impl ProbeResult {
    /// Success or Warning.
    pub fn is_success(&self) -> bool {
        matches!(self, ProbeResult::Success | ProbeResult::Warning(_))
    }

    /// Failure.
    pub fn is_failure(&self) -> bool {
        matches!(self, ProbeResult::Failure(_))
    }

    /// Whether two results mean the same state (messages and warnings aside), so an update is
    /// sent only when the state changes, as upstream's results manager does.
    pub(crate) fn same_state(&self, other: &ProbeResult) -> bool {
        match (self, other) {
            (ProbeResult::Unknown, ProbeResult::Unknown) => true,
            (ProbeResult::Failure(_), ProbeResult::Failure(_)) => true,
            (a, b) => a.is_success() && b.is_success(),
        }
    }
}

/// A probe result that changed; the pod worker re-syncs the pod when it gets one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeUpdate {
    /// The pod's UID.
    pub pod_uid: String,
    /// The container's name.
    pub container_name: String,
    /// The container's runtime ID.
    pub container_id: String,
    /// Which probe.
    pub kind: ProbeKind,
    /// The new result.
    pub result: ProbeResult,
}

/// A probe that could not be run at all (upstream: the prober returned an error). The worker
/// records an event and discards the run instead of counting it as a failure.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The probe names no handler (exec, httpGet, tcpSocket, grpc).
    #[error("missing probe handler for {pod}:{container}")]
    NoHandler {
        /// `namespace/name` of the pod.
        pod: String,
        /// The container's name.
        container: String,
    },
    /// The port could not be resolved.
    #[error(transparent)]
    Port(#[from] PortError),
    /// No host was given and the pod has no IP.
    #[error("pod has no IP address")]
    NoPodIp,
    /// The runtime failed the ExecSync call (not a timeout, not a non-zero exit).
    #[error(transparent)]
    Runtime(#[from] oxlet_cri::Error),
}

/// A probe or hook port that does not resolve to a usable port number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// A named port the container does not declare (and not a number either).
    #[error("port {0:?} not found in the container's ports")]
    NotFound(String),
    /// Outside 1..=65535.
    #[error("invalid port number: {0}")]
    Invalid(i64),
}

/// Upstream's default and minimum probe settings (pkg/apis/core/v1/defaults.go), for probes the
/// API server did not default (static pods).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProbeTiming {
    pub initial_delay: std::time::Duration,
    pub period: std::time::Duration,
    pub timeout: std::time::Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl ProbeTiming {
    pub(crate) fn of(probe: &k8s_openapi::api::core::v1::Probe) -> Self {
        use std::time::Duration;
        let positive = |v: Option<i32>, default: u32| match v {
            Some(v) if v > 0 => v.unsigned_abs(),
            _ => default,
        };
        Self {
            initial_delay: Duration::from_secs(
                probe
                    .initial_delay_seconds
                    .unwrap_or(0)
                    .max(0)
                    .unsigned_abs() as u64,
            ),
            period: Duration::from_secs(positive(probe.period_seconds, 10) as u64),
            timeout: Duration::from_secs(positive(probe.timeout_seconds, 1) as u64),
            success_threshold: positive(probe.success_threshold, 1),
            failure_threshold: positive(probe.failure_threshold, 3),
        }
    }
}

/// The event reason upstream uses for a probe that passed with a warning.
pub const PROBE_WARNING: &str = "ProbeWarning";

/// Kubernetes minor version in the probe User-Agent (`kube-probe/1.33`).
pub(crate) const KUBE_VERSION: &str = "1.33";

#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
mod tests;

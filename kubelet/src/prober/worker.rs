//! One probe worker: probes one container's liveness, readiness or startup on the probe's
//! schedule and applies the thresholds, as upstream pkg/kubelet/prober/worker.go.
//!
//! A worker serves one container ID; when the container is replaced the manager cancels it and
//! starts a fresh one, which is upstream's "new container ID resets the worker".

use std::sync::Arc;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::{Container, Probe};
use oxlet_cri::Runtime;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::manager::ProbeTarget;
use super::{run_probe, ProbeKind, ProbeResult, ProbeTiming, PROBE_WARNING};
use crate::events::{container_field_path, pod_ref, reason, EventSink, EventType};

/// Upstream retries a probe that errored (could not run) this many times per period.
const MAX_PROBE_RETRIES: usize = 3;

/// Where a worker puts a result once a threshold is reached.
pub(crate) type ResultSink = Arc<dyn Fn(ProbeResult) + Send + Sync>;

/// Everything one worker needs; [`Worker::run`] consumes it.
pub(crate) struct Worker {
    /// The container probed.
    pub target: ProbeTarget,
    /// Its spec.
    pub container: Container,
    /// Whether it is an init (sidecar) container, for the event's field path.
    pub init: bool,
    /// Which probe.
    pub kind: ProbeKind,
    /// The probe's spec.
    pub probe: Probe,
    /// For exec probes.
    pub runtime: Arc<dyn Runtime>,
    /// For Unhealthy / ProbeWarning events.
    pub events: Arc<dyn EventSink>,
    /// Whether the container has started (its startup probe, if any, succeeded). Liveness and
    /// readiness wait for it; a startup worker stops once it is true.
    pub started: watch::Receiver<bool>,
    /// Receives results that crossed their threshold.
    pub sink: ResultSink,
    /// Ends the worker.
    pub cancel: CancellationToken,
}

impl Worker {
    /// Probes until cancelled, or until probing this container is over: a startup probe that
    /// succeeded, or a liveness/startup failure that will get the container restarted (upstream
    /// puts the worker on hold until a new container ID; here the manager starts a new worker).
    pub(crate) async fn run(mut self) {
        let cancel = self.cancel.clone();
        cancel.run_until_cancelled(self.probe_loop()).await;
    }

    async fn probe_loop(&mut self) {
        let timing = ProbeTiming::of(&self.probe);
        // initialDelaySeconds counts from the container's start, as upstream compares with
        // the container status' StartedAt.
        let since_start = SystemTime::now()
            .duration_since(self.target.started_at)
            .unwrap_or_default();
        if let Some(rest) = timing.initial_delay.checked_sub(since_start) {
            tokio::time::sleep(rest).await;
        }
        let mut last_success: Option<bool> = None;
        let mut run: u32 = 0;
        loop {
            if self.kind == ProbeKind::Startup {
                if *self.started.borrow() {
                    return;
                }
            } else if self.started.wait_for(|s| *s).await.is_err() {
                // The manager dropped the container; cancellation follows.
                return;
            }
            let begun = Instant::now();
            if let Some(result) = self.probe_once().await {
                let success = result.is_success();
                if last_success == Some(success) {
                    run = run.saturating_add(1);
                } else {
                    last_success = Some(success);
                    run = 1;
                }
                let threshold = if success {
                    timing.success_threshold
                } else {
                    timing.failure_threshold
                };
                if run >= threshold {
                    let result = match result {
                        ProbeResult::Unknown => ProbeResult::Failure(String::new()),
                        r => r,
                    };
                    (self.sink)(result);
                    if !success && self.kind != ProbeKind::Readiness {
                        return;
                    }
                }
            }
            tokio::time::sleep_until(begun + timing.period).await;
        }
    }

    /// One probe run, with upstream's retries for probes that errored. Records the events;
    /// `None` if the probe could not be run (the run does not count).
    async fn probe_once(&self) -> Option<ProbeResult> {
        let t = &self.target;
        let mut error = None;
        for _ in 0..MAX_PROBE_RETRIES {
            let outcome = run_probe(
                self.runtime.as_ref(),
                &t.pod,
                &self.container,
                &t.container_id,
                t.pod_ip.as_deref(),
                &self.probe,
            )
            .await;
            match outcome {
                Ok(result) => {
                    debug!(?result, "probe ran");
                    match &result {
                        ProbeResult::Failure(msg) => self.event(
                            reason::UNHEALTHY,
                            &format!("{} probe failed: {msg}", self.kind),
                        ),
                        ProbeResult::Warning(msg) => self.event(
                            PROBE_WARNING,
                            &format!("{} probe warning: {msg}", self.kind),
                        ),
                        ProbeResult::Success | ProbeResult::Unknown => {}
                    }
                    return Some(result);
                }
                Err(e) => error = Some(e),
            }
        }
        if let Some(e) = error {
            debug!(error = %e, "probe errored");
            self.event(
                reason::UNHEALTHY,
                &format!(
                    "{} probe errored and resulted in unknown state: {e}",
                    self.kind
                ),
            );
        }
        None
    }

    fn event(&self, reason: &str, message: &str) {
        let object = pod_ref(
            &self.target.pod,
            Some(container_field_path(&self.container.name, self.init)),
        );
        self.events
            .event(&object, EventType::Warning, reason, message);
    }
}

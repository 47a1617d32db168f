//! Debounced syncs: at most one per `minSyncPeriod`, at least one per `syncPeriod`, as
//! upstream's `BoundedFrequencyRunner` (kubernetes/kubernetes pkg/util/async/bounded_frequency_runner.go).
//!
//! Changes arrive through a [`Trigger`] (a `Notify` holding at most one permit, like a
//! capacity-1 channel): any number of changes between two syncs cost one sync.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::Notify;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

/// Why a sync runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncReason {
    /// The first sync after the caches filled.
    Initial,
    /// Services or endpoints changed.
    Change,
    /// `syncPeriod` passed without a sync.
    Periodic,
    /// The previous sync failed.
    Retry,
}

impl SyncReason {
    /// A short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncReason::Initial => "initial",
            SyncReason::Change => "change",
            SyncReason::Periodic => "periodic",
            SyncReason::Retry => "retry",
        }
    }
}

/// Asks for a sync soon; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Trigger(Arc<Notify>);

impl Trigger {
    /// Requests a sync; requests before the next sync starts are merged into it.
    pub fn notify(&self) {
        self.0.notify_one();
    }
}

/// Runs a sync function under the two periods.
#[derive(Debug)]
pub struct SyncRunner {
    min_sync_period: Duration,
    sync_period: Duration,
    retry_period: Duration,
    trigger: Trigger,
}

impl SyncRunner {
    /// A runner with upstream's two periods. A failed sync is retried after
    /// `max(minSyncPeriod, 1s)`, so a lasting failure never spins.
    pub fn new(min_sync_period: Duration, sync_period: Duration) -> Self {
        Self {
            min_sync_period,
            sync_period,
            retry_period: min_sync_period.max(Duration::from_secs(1)),
            trigger: Trigger::default(),
        }
    }

    /// The handle that requests syncs.
    pub fn trigger(&self) -> Trigger {
        self.trigger.clone()
    }

    /// Runs `sync` (which returns whether it succeeded) until `shutdown`: once at once, then
    /// on triggers, periodically and after failures. Never two syncs at the same time.
    pub async fn run<F, Fut>(&self, shutdown: CancellationToken, mut sync: F)
    where
        F: FnMut(SyncReason) -> Fut,
        Fut: Future<Output = bool>,
    {
        let mut next = Some(SyncReason::Initial);
        let mut last: Option<Instant> = None;
        loop {
            match next {
                Some(reason) => {
                    if let Some(last) = last {
                        let wait = if reason == SyncReason::Retry {
                            self.retry_period
                        } else {
                            self.min_sync_period
                        };
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = sleep_until(last + wait) => {}
                        }
                    }
                    // A request stored before this point is served by this sync, which reads
                    // the caches after it: drop its permit so it does not cause another sync.
                    let _ = self.trigger.0.notified().now_or_never();
                    last = Some(Instant::now());
                    let ok = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        ok = sync(reason) => ok,
                    };
                    next = (!ok).then_some(SyncReason::Retry);
                }
                None => {
                    let periodic = last.map_or_else(Instant::now, |l| l + self.sync_period);
                    tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => return,
                        _ = self.trigger.0.notified() => next = Some(SyncReason::Change),
                        _ = sleep_until(periodic) => next = Some(SyncReason::Periodic),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    type Log = Arc<Mutex<Vec<(Duration, SyncReason)>>>;

    fn spawn(
        runner: SyncRunner,
        results: Vec<bool>,
    ) -> (Log, CancellationToken, tokio::task::JoinHandle<()>) {
        let log: Log = Arc::default();
        let token = CancellationToken::new();
        let start = Instant::now();
        let (l, t) = (log.clone(), token.clone());
        let handle = tokio::spawn(async move {
            let mut results = results.into_iter();
            runner
                .run(t, |reason| {
                    l.lock().expect("log lock").push((start.elapsed(), reason));
                    let ok = results.next().unwrap_or(true);
                    async move { ok }
                })
                .await;
        });
        (log, token, handle)
    }

    fn secs(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[tokio::test(start_paused = true)]
    async fn bursts_are_merged_and_rate_limited() {
        let runner = SyncRunner::new(Duration::from_secs(1), Duration::from_secs(30));
        let trigger = runner.trigger();
        let (log, token, handle) = spawn(runner, vec![]);
        tokio::time::sleep(secs(100)).await;
        for _ in 0..5 {
            trigger.notify();
        }
        tokio::time::sleep(secs(1500)).await;
        // Another change long after the last sync runs at once.
        tokio::time::sleep(secs(5000)).await;
        trigger.notify();
        tokio::time::sleep(secs(10)).await;
        token.cancel();
        handle.await.expect("runner task");
        let got = log.lock().expect("log lock").clone();
        assert_eq!(
            got,
            vec![
                (secs(0), SyncReason::Initial),
                (secs(1000), SyncReason::Change),
                (secs(6600), SyncReason::Change),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn periodic_sync_without_changes() {
        let runner = SyncRunner::new(Duration::from_secs(1), Duration::from_secs(30));
        let (log, token, handle) = spawn(runner, vec![]);
        tokio::time::sleep(secs(65_000)).await;
        token.cancel();
        handle.await.expect("runner task");
        let got = log.lock().expect("log lock").clone();
        assert_eq!(
            got,
            vec![
                (secs(0), SyncReason::Initial),
                (secs(30_000), SyncReason::Periodic),
                (secs(60_000), SyncReason::Periodic),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failures_retry_after_the_retry_period() {
        let runner = SyncRunner::new(Duration::from_millis(200), Duration::from_secs(30));
        let (log, token, handle) = spawn(runner, vec![false, false, true]);
        tokio::time::sleep(secs(5000)).await;
        token.cancel();
        handle.await.expect("runner task");
        let got = log.lock().expect("log lock").clone();
        assert_eq!(
            got,
            vec![
                (secs(0), SyncReason::Initial),
                (secs(1000), SyncReason::Retry),
                (secs(2000), SyncReason::Retry),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_during_a_sync_causes_one_more_sync() {
        let runner = SyncRunner::new(Duration::from_secs(1), Duration::from_secs(30));
        let trigger = runner.trigger();
        let log: Log = Arc::default();
        let token = CancellationToken::new();
        let start = Instant::now();
        let (l, t) = (log.clone(), token.clone());
        let handle = tokio::spawn(async move {
            runner
                .run(t, |reason| {
                    l.lock().expect("log lock").push((start.elapsed(), reason));
                    let trigger = trigger.clone();
                    async move {
                        // A slow sync during which two changes arrive.
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        if reason == SyncReason::Initial {
                            trigger.notify();
                            trigger.notify();
                        }
                        true
                    }
                })
                .await;
        });
        tokio::time::sleep(secs(10_000)).await;
        token.cancel();
        handle.await.expect("runner task");
        let got = log.lock().expect("log lock").clone();
        assert_eq!(
            got,
            vec![
                (secs(0), SyncReason::Initial),
                (secs(1000), SyncReason::Change)
            ]
        );
    }
}

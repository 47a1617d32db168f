//! A watch cache in front of any [`Store`], like kube-apiserver's cacher
//! (staging/src/k8s.io/apiserver/pkg/storage/cacher/cacher.go, watch_cache.go).
//!
//! One underlying watch feeds an in-memory copy of every key under a prefix plus a ring
//! buffer of recent events. Lists and gets are served from memory once the cache has caught
//! up with the store's current revision (a consistent read, as upstream's consistent list
//! from cache); watches are served from the buffer when their revision is within it, else fail
//! with [`Error::Compacted`] ("too old resource version"). Each watcher has a bounded queue
//! filled without waiting: one that is full is terminated with [`Error::WatcherTooSlow`], so
//! a slow client never holds up the feed or other watchers. Writes pass through.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{
    Error, Event, EventKind, KeyValue, ListOptions, ListResult, Result, Store, WatchStream,
};

/// Sizes and timeouts of a [`Cacher`].
#[derive(Debug, Clone)]
pub struct CacherConfig {
    /// Recent events kept for watches that start in the past.
    pub event_buffer: usize,
    /// Events queued for one watcher before it is terminated as too slow.
    pub watcher_buffer: usize,
    /// How long a read waits for the cache to catch up with the store's revision before
    /// failing with [`Error::FutureRevision`] (upstream waits 3 s too).
    pub fresh_timeout: Duration,
    /// Pause before re-watching after the underlying watch failed.
    pub retry_delay: Duration,
}

impl Default for CacherConfig {
    fn default() -> Self {
        CacherConfig {
            event_buffer: 10_000,
            watcher_buffer: 1_000,
            fresh_timeout: Duration::from_secs(3),
            retry_delay: Duration::from_secs(1),
        }
    }
}

/// A watch cache of the keys under one prefix of an inner [`Store`]; itself a [`Store`].
pub struct Cacher {
    inner: Arc<dyn Store>,
    prefix: String,
    shared: Arc<Shared>,
    _stop: DropGuard,
}

struct Shared {
    state: Mutex<State>,
    /// The cache's revision, for reads waiting to be fresh.
    revision: watch::Sender<i64>,
    config: CacherConfig,
}

struct State {
    objects: BTreeMap<String, KeyValue>,
    events: VecDeque<Arc<Event>>,
    /// Watches from this revision on are served from `events`.
    floor: i64,
    revision: i64,
    watchers: Vec<Watcher>,
}

/// Why the cache ended a watch.
#[derive(Debug, Clone)]
enum EndReason {
    TooSlow,
    Reset { compacted_revision: i64 },
}

struct Watcher {
    prefix: String,
    queue: mpsc::Sender<Arc<Event>>,
    end: Arc<Mutex<Option<EndReason>>>,
}

impl Watcher {
    fn end(self, reason: EndReason) {
        if let Ok(mut end) = self.end.lock() {
            *end = Some(reason);
        }
        // Dropping the sender closes the queue; the stream then reports `reason`.
    }
}

impl Shared {
    fn lock(&self) -> Result<MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| Error::backend("watch cache", "cache state poisoned by a panic"))
    }

    fn apply(&self, event: Event) -> Result<()> {
        let rev = event.revision();
        {
            let mut state = self.lock()?;
            if rev <= state.revision {
                return Ok(());
            }
            match event.kind {
                EventKind::Added | EventKind::Modified => {
                    state.objects.insert(event.kv.key.clone(), event.kv.clone());
                }
                EventKind::Deleted => {
                    state.objects.remove(&event.kv.key);
                }
            }
            state.revision = rev;
            let event = Arc::new(event);
            state.events.push_back(event.clone());
            while state.events.len() > self.config.event_buffer {
                if let Some(old) = state.events.pop_front() {
                    state.floor = old.revision();
                }
            }
            let watchers = std::mem::take(&mut state.watchers);
            for w in watchers {
                if !event.kv.key.starts_with(&w.prefix) {
                    state.watchers.push(w);
                    continue;
                }
                match w.queue.try_send(event.clone()) {
                    Ok(()) => state.watchers.push(w),
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::info!(prefix = %w.prefix, revision = rev, "terminating slow watcher");
                        w.end(EndReason::TooSlow);
                    }
                    // The client went away.
                    Err(mpsc::error::TrySendError::Closed(_)) => {}
                }
            }
        }
        self.revision.send_replace(rev);
        Ok(())
    }

    /// Replaces the whole state after a relist; watchers cannot learn what they missed.
    fn reset(&self, objects: BTreeMap<String, KeyValue>, revision: i64) -> Result<()> {
        {
            let mut state = self.lock()?;
            for w in std::mem::take(&mut state.watchers) {
                w.end(EndReason::Reset {
                    compacted_revision: revision,
                });
            }
            state.objects = objects;
            state.events.clear();
            state.floor = revision;
            state.revision = revision;
        }
        self.revision.send_replace(revision);
        Ok(())
    }
}

/// Every key under `prefix`, paginated at one revision.
async fn list_all(inner: &dyn Store, prefix: &str) -> Result<(BTreeMap<String, KeyValue>, i64)> {
    let mut objects = BTreeMap::new();
    let mut opts = ListOptions {
        limit: Some(1000),
        ..ListOptions::default()
    };
    loop {
        let page = inner.list(prefix, opts.clone()).await?;
        opts.revision = Some(page.revision);
        opts.start_after = page.items.last().map(|kv| kv.key.clone());
        objects.extend(page.items.into_iter().map(|kv| (kv.key.clone(), kv)));
        if !page.more {
            return Ok((objects, page.revision));
        }
    }
}

impl Cacher {
    /// Lists `prefix` from `inner` and starts following it. Must run inside a tokio runtime;
    /// the feed stops when the cacher is dropped.
    pub async fn new(inner: Arc<dyn Store>, prefix: &str, config: CacherConfig) -> Result<Cacher> {
        let (objects, revision) = list_all(inner.as_ref(), prefix).await?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                objects,
                events: VecDeque::new(),
                floor: revision,
                revision,
                watchers: Vec::new(),
            }),
            revision: watch::Sender::new(revision),
            config,
        });
        let stop = CancellationToken::new();
        tokio::spawn(feed(
            inner.clone(),
            prefix.to_string(),
            shared.clone(),
            revision,
            stop.clone(),
        ));
        Ok(Cacher {
            inner,
            prefix: prefix.to_string(),
            shared,
            _stop: stop.drop_guard(),
        })
    }

    /// Whether `prefix` lies within the cached one.
    fn covers(&self, prefix: &str) -> bool {
        prefix.starts_with(&self.prefix)
    }

    /// Waits until the cache has seen `revision`.
    async fn wait_fresh(&self, revision: i64) -> Result<()> {
        let mut rx = self.shared.revision.subscribe();
        let waited = tokio::time::timeout(
            self.shared.config.fresh_timeout,
            rx.wait_for(|r| *r >= revision),
        )
        .await;
        if matches!(waited, Ok(Ok(_))) {
            return Ok(());
        }
        Err(Error::FutureRevision {
            requested: revision,
            current: *self.shared.revision.borrow(),
        })
    }

    /// Waits until the cache has seen every write the store acknowledged so far.
    async fn wait_consistent(&self) -> Result<()> {
        let current = self.inner.current_revision().await?;
        self.wait_fresh(current).await
    }
}

/// Follows the inner store's watch into the cache until `stop`.
async fn feed(
    inner: Arc<dyn Store>,
    prefix: String,
    shared: Arc<Shared>,
    mut from: i64,
    stop: CancellationToken,
) {
    let delay = shared.config.retry_delay;
    loop {
        let failure = match inner.watch(&prefix, from).await {
            Err(err) => err,
            Ok(mut stream) => loop {
                let item = tokio::select! {
                    _ = stop.cancelled() => return,
                    item = stream.next() => item,
                };
                match item {
                    Some(Ok(event)) => {
                        from = event.revision();
                        if let Err(err) = shared.apply(event) {
                            tracing::error!(error = %err, "watch cache stopped");
                            return;
                        }
                    }
                    Some(Err(err)) => break err,
                    None => {
                        break Error::backend(format!("watch {prefix}"), "store closed the watch")
                    }
                }
            },
        };
        tracing::warn!(prefix = %prefix, revision = from, error = %failure, "watch cache feed failed");
        if !failure.is_compacted() {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => continue,
            }
        }
        // History is gone: relist, and end every watcher (they get 410 and relist too).
        loop {
            match list_all(inner.as_ref(), &prefix).await {
                Ok((objects, revision)) => {
                    if let Err(err) = shared.reset(objects, revision) {
                        tracing::error!(error = %err, "watch cache stopped");
                        return;
                    }
                    from = revision;
                    break;
                }
                Err(err) => {
                    tracing::warn!(prefix = %prefix, error = %err, "watch cache relist failed");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
}

#[async_trait]
impl Store for Cacher {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        if !self.covers(key) {
            return self.inner.get(key).await;
        }
        self.wait_consistent().await?;
        Ok(self.shared.lock()?.objects.get(key).cloned())
    }

    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult> {
        // Snapshots at an older revision (later pages) come from the store.
        if !self.covers(prefix) || opts.revision.is_some() {
            return self.inner.list(prefix, opts).await;
        }
        self.wait_consistent().await?;
        let state = self.shared.lock()?;
        let lower = match &opts.start_after {
            Some(after) if after.as_str() >= prefix => Bound::Excluded(after.clone()),
            _ => Bound::Included(prefix.to_string()),
        };
        let limit = opts.limit.unwrap_or(usize::MAX);
        let mut matching = state
            .objects
            .range((lower, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, kv)| kv.clone());
        let items: Vec<KeyValue> = matching.by_ref().take(limit).collect();
        let more = matching.next().is_some();
        Ok(ListResult {
            items,
            revision: state.revision,
            more,
        })
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue> {
        self.inner.create(key, value).await
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_mod_revision: Option<i64>,
    ) -> Result<KeyValue> {
        self.inner.update(key, value, expected_mod_revision).await
    }

    async fn delete(&self, key: &str, expected_mod_revision: Option<i64>) -> Result<KeyValue> {
        self.inner.delete(key, expected_mod_revision).await
    }

    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream> {
        if !self.covers(prefix) {
            return self.inner.watch(prefix, from_revision).await;
        }
        self.wait_fresh(from_revision).await?;
        let (queue, rx) = mpsc::channel(self.shared.config.watcher_buffer.max(1));
        let end = Arc::new(Mutex::new(None));
        let replay: Vec<Result<Event>> = {
            let mut state = self.shared.lock()?;
            if from_revision < state.floor {
                return Err(Error::Compacted {
                    requested: from_revision,
                    compacted_revision: state.floor,
                });
            }
            let replay = state
                .events
                .iter()
                .filter(|ev| ev.revision() > from_revision && ev.kv.key.starts_with(prefix))
                .map(|ev| Ok((**ev).clone()))
                .collect();
            state.watchers.push(Watcher {
                prefix: prefix.to_string(),
                queue,
                end: end.clone(),
            });
            replay
        };
        let prefix = prefix.to_string();
        let ending = futures::stream::once(async move {
            let reason = end.lock().ok().and_then(|mut end| end.take());
            reason.map(|reason| match reason {
                EndReason::TooSlow => Error::WatcherTooSlow { prefix },
                EndReason::Reset { compacted_revision } => Error::Compacted {
                    requested: from_revision,
                    compacted_revision,
                },
            })
        })
        .filter_map(|err| async move { err.map(Err) });
        let live = tokio_stream::wrappers::ReceiverStream::new(rx).map(|ev| Ok((*ev).clone()));
        Ok(Box::pin(
            futures::stream::iter(replay).chain(live).chain(ending),
        ))
    }

    async fn current_revision(&self) -> Result<i64> {
        self.inner.current_revision().await
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        self.inner.compact(revision).await?;
        // Honour the compaction for watches too, as the store does: from `revision - 1` on.
        let mut state = self.shared.lock()?;
        let floor = (revision - 1).max(state.floor);
        while state
            .events
            .front()
            .is_some_and(|ev| ev.revision() <= floor)
        {
            state.events.pop_front();
        }
        state.floor = floor;
        Ok(())
    }
}

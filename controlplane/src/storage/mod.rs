//! The API server's storage: a revisioned key-value log modelled on etcd's MVCC as
//! kube-apiserver uses it (and as k3s's kine emulates it over SQL).
//!
//! Every write gets a new global revision (the objects' `resourceVersion`); reads happen at
//! the latest revision or, for paginated lists, at a fixed one; watches replay history from a
//! revision and then follow live changes; history older than the compaction point is gone and
//! asking for it fails with [`Error::Compacted`] (410 Gone).
//!
//! Backends: [`sqlite::SqliteStore`] (embedded default), [`etcd::EtcdStore`], and the
//! [`cacher::Cacher`] watch cache in front of either.

pub mod cacher;
#[cfg(any(test, feature = "test-util"))]
pub mod conformance;
pub mod error;
pub mod etcd;
pub mod sqlite;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::Stream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use error::{Error, Result};

/// One version of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key, e.g. `/registry/pods/default/web`.
    pub key: String,
    /// The stored bytes (JSON for the API server).
    pub value: Vec<u8>,
    /// The revision that created this incarnation of the key.
    pub create_revision: i64,
    /// The revision of the write that produced this version (the `resourceVersion`). For a
    /// deleted object it is the delete's revision.
    pub mod_revision: i64,
}

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created.
    Added,
    /// The key was updated.
    Modified,
    /// The key was deleted.
    Deleted,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The key after the change. For [`EventKind::Deleted`] it holds the object's last value
    /// with `mod_revision` set to the delete's revision (what kube-apiserver sends in a
    /// DELETED watch event).
    pub kv: KeyValue,
    /// The version before the change; `None` for [`EventKind::Added`].
    pub prev_kv: Option<KeyValue>,
}

impl Event {
    /// The revision of the change.
    pub fn revision(&self) -> i64 {
        self.kv.mod_revision
    }
}

/// Options of [`Store::list`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// At most this many items; `None` for all.
    pub limit: Option<usize>,
    /// Only keys strictly greater than this one (the continue token of a paginated list).
    pub start_after: Option<String>,
    /// Read at this revision (a consistent snapshot across pages); `None` for the latest.
    /// Below the compaction point this fails with [`Error::Compacted`].
    pub revision: Option<i64>,
}

/// The answer of [`Store::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListResult {
    /// Live keys under the prefix, sorted by key.
    pub items: Vec<KeyValue>,
    /// The revision the list is consistent at (the list's `resourceVersion`).
    pub revision: i64,
    /// Whether more keys follow the last item (the list was cut by `limit`).
    pub more: bool,
}

/// The stream of a watch: events in revision order, then an error if the watch ends
/// abnormally (compacted, too slow, backend failure). `None` only when the store shuts down.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<Event>> + Send>>;

/// A revisioned key-value store, shared as `Arc<dyn Store>`.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The live value of `key` at the latest revision.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Live keys starting with `prefix`, sorted by key.
    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult>;

    /// Creates `key`; [`Error::AlreadyExists`] if it is live.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue>;

    /// Replaces the value of live `key`; [`Error::NotFound`] if it is not live,
    /// [`Error::Conflict`] if `expected_mod_revision` is given and differs from the key's.
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_mod_revision: Option<i64>,
    ) -> Result<KeyValue>;

    /// Deletes live `key` and returns its last value with `mod_revision` set to the delete's
    /// revision; errors as [`Store::update`].
    async fn delete(&self, key: &str, expected_mod_revision: Option<i64>) -> Result<KeyValue>;

    /// Every change under `prefix` with revision > `from_revision`: history first, then live
    /// changes, in revision order without gaps or duplicates. Fails with [`Error::Compacted`]
    /// when some of those changes are gone, i.e. `from_revision + 1` is below the compaction
    /// revision (etcd's rule for `start_revision`).
    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream>;

    /// The revision of the latest write (0 for an empty SQLite store).
    async fn current_revision(&self) -> Result<i64>;

    /// Drops history older than `revision`, keeping the latest version of every live key.
    /// Reads at and watches from `revision` or later keep working.
    async fn compact(&self, revision: i64) -> Result<()>;
}

/// The smallest string greater than every string starting with `prefix` (etcd's range end),
/// or `None` when no such bound exists (empty prefix, or all 0xff bytes).
pub(crate) fn prefix_end(prefix: &str) -> Option<Vec<u8>> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Where [`spawn_compactor`] compacts to: `retain` revisions behind `current`, only forward.
pub fn compaction_target(current: i64, retain: i64, last_compacted: i64) -> Option<i64> {
    let target = current - retain.max(0);
    (target > last_compacted && target > 0).then_some(target)
}

/// Compacts `store` every `interval`, keeping the last `retain` revisions of history, until
/// `cancel` fires; like kube-apiserver's compactor (every 5 minutes). Failures are logged and
/// retried at the next tick.
pub fn spawn_compactor(
    store: Arc<dyn Store>,
    interval: Duration,
    retain: i64,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_compacted = 0;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => {
                    tracing::debug!("compactor stopped");
                    return;
                }
                _ = ticker.tick() => {}
            }
            let current = match store.current_revision().await {
                Ok(rev) => rev,
                Err(err) => {
                    tracing::warn!(error = %err, "compactor: reading the current revision failed");
                    continue;
                }
            };
            let Some(target) = compaction_target(current, retain, last_compacted) else {
                continue;
            };
            match store.compact(target).await {
                Ok(()) => {
                    tracing::info!(revision = target, "compacted storage history");
                    last_compacted = target;
                }
                // Someone (another API server, etcdctl) compacted further already.
                Err(Error::Compacted {
                    compacted_revision, ..
                }) => last_compacted = compacted_revision,
                Err(err) => tracing::warn!(error = %err, revision = target, "compaction failed"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(
            prefix_end("/registry/pods/"),
            Some(b"/registry/pods0".to_vec())
        );
        assert_eq!(prefix_end(""), None);
        assert_eq!(compaction_target(100, 10, 0), Some(90));
        assert_eq!(compaction_target(100, 10, 90), None);
        assert_eq!(compaction_target(5, 10, 0), None);
    }

    /// Records compactions; only the revision calls are meaningful.
    struct RevisionOnly {
        current: Mutex<i64>,
        compactions: Mutex<Vec<i64>>,
    }

    fn unsupported<T>() -> Result<T> {
        Err(Error::backend("fake", "unsupported"))
    }

    #[async_trait]
    impl Store for RevisionOnly {
        async fn get(&self, _: &str) -> Result<Option<KeyValue>> {
            unsupported()
        }
        async fn list(&self, _: &str, _: ListOptions) -> Result<ListResult> {
            unsupported()
        }
        async fn create(&self, _: &str, _: Vec<u8>) -> Result<KeyValue> {
            unsupported()
        }
        async fn update(&self, _: &str, _: Vec<u8>, _: Option<i64>) -> Result<KeyValue> {
            unsupported()
        }
        async fn delete(&self, _: &str, _: Option<i64>) -> Result<KeyValue> {
            unsupported()
        }
        async fn watch(&self, _: &str, _: i64) -> Result<WatchStream> {
            unsupported()
        }
        async fn current_revision(&self) -> Result<i64> {
            Ok(*self
                .current
                .lock()
                .map_err(|_| Error::backend("fake", "poisoned"))?)
        }
        async fn compact(&self, revision: i64) -> Result<()> {
            self.compactions
                .lock()
                .map_err(|_| Error::backend("fake", "poisoned"))?
                .push(revision);
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn compactor_compacts_each_interval_behind_retain() {
        let fake = Arc::new(RevisionOnly {
            current: Mutex::new(50),
            compactions: Mutex::new(Vec::new()),
        });
        let cancel = CancellationToken::new();
        let task = spawn_compactor(fake.clone(), Duration::from_secs(300), 10, cancel.clone());
        let compactions =
            |f: &RevisionOnly| f.compactions.lock().map(|c| c.clone()).unwrap_or_default();

        tokio::time::sleep(Duration::from_secs(299)).await;
        assert!(
            compactions(&fake).is_empty(),
            "no compaction before the first interval"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(compactions(&fake), vec![40]);
        // Nothing written: nothing new to compact.
        tokio::time::sleep(Duration::from_secs(300)).await;
        assert_eq!(compactions(&fake), vec![40]);
        if let Ok(mut c) = fake.current.lock() {
            *c = 75;
        }
        tokio::time::sleep(Duration::from_secs(300)).await;
        assert_eq!(compactions(&fake), vec![40, 65]);
        cancel.cancel();
        assert!(task.await.is_ok());
    }
}

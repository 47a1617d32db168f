//! The etcd backend: keys map 1:1 onto etcd keys (under an optional prefix) and revisions are
//! etcd's own, so `etcdctl get /registry --prefix --keys-only` lists the cluster as on kubeadm.
//!
//! Writes are transactions guarded by a compare, as kube-apiserver's etcd3 store does
//! (staging/src/k8s.io/apiserver/pkg/storage/etcd3/store.go): create compares
//! `create_revision == 0`, update and delete compare `mod_revision` (or existence), and the
//! failure branch reads the key to tell NotFound from Conflict.

use std::collections::VecDeque;

use async_trait::async_trait;
use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, DeleteOptions, EventType, GetOptions,
    PutOptions, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchOptions,
};
use futures::StreamExt;

use super::{
    prefix_end, Error, Event, EventKind, KeyValue, ListOptions, ListResult, Result, Store,
    WatchStream,
};

/// A [`Store`] on an etcd v3 cluster.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    prefix: String,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// What etcd said, classified: its errors are gRPC statuses with fixed texts
/// (server/mvcc/kvstore.go `ErrCompacted`, `ErrFutureRev`).
fn etcd_err(op: impl Into<String>, requested: i64, err: etcd_client::Error) -> Error {
    let text = err.to_string();
    if text.contains("required revision has been compacted") {
        Error::Compacted {
            requested,
            // etcd does not say where the compaction point is outside a watch.
            compacted_revision: 0,
        }
    } else if text.contains("required revision is a future revision") {
        Error::FutureRevision {
            requested,
            current: 0,
        }
    } else {
        Error::backend(op, err)
    }
}

impl EtcdStore {
    /// Connects to etcd at `endpoints` (`http://127.0.0.1:2379`); every key is stored under
    /// `key_prefix` (empty for none).
    pub async fn connect(endpoints: &[String], key_prefix: impl Into<String>) -> Result<Self> {
        let client = Client::connect(endpoints, None)
            .await
            .map_err(|e| Error::backend(format!("connect to etcd {}", endpoints.join(",")), e))?;
        Ok(Self::from_client(client, key_prefix))
    }

    /// Uses an already connected client.
    pub fn from_client(client: Client, key_prefix: impl Into<String>) -> Self {
        EtcdStore {
            client,
            prefix: key_prefix.into(),
        }
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn to_kv(&self, kv: &etcd_client::KeyValue) -> KeyValue {
        let key = String::from_utf8_lossy(kv.key());
        KeyValue {
            key: key.strip_prefix(&self.prefix).unwrap_or(&key).to_string(),
            value: kv.value().to_vec(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
        }
    }

    /// The range end covering every key under the store prefix + `prefix`.
    fn range_end(&self, prefix: &str) -> Vec<u8> {
        // "\0" as range end means "every key from the start key on".
        prefix_end(&self.full(prefix)).unwrap_or_else(|| vec![0])
    }

    async fn txn(&self, op: &str, txn: Txn) -> Result<TxnResponse> {
        self.client
            .kv_client()
            .txn(txn)
            .await
            .map_err(|e| Error::backend(op, e))
    }

    /// The failure branch's read: NotFound or Conflict.
    fn not_found_or_conflict(&self, key: &str, expected: Option<i64>, resp: &TxnResponse) -> Error {
        let current = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.mod_revision()),
            _ => None,
        });
        match (current, expected) {
            (Some(current), Some(expected)) => Error::Conflict {
                key: key.to_string(),
                expected,
                current,
            },
            _ => Error::NotFound {
                key: key.to_string(),
            },
        }
    }

    fn guard(&self, full: &str, expected: Option<i64>) -> Compare {
        match expected {
            Some(rev) => Compare::mod_revision(full, CompareOp::Equal, rev),
            None => Compare::create_revision(full, CompareOp::Greater, 0),
        }
    }
}

fn header_revision(op: &str, resp: &TxnResponse) -> Result<i64> {
    resp.header()
        .map(|h| h.revision())
        .ok_or_else(|| Error::backend(op, "etcd response has no header"))
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let resp = self
            .client
            .kv_client()
            .get(self.full(key), None)
            .await
            .map_err(|e| etcd_err(format!("get {key}"), 0, e))?;
        Ok(resp.kvs().first().map(|kv| self.to_kv(kv)))
    }

    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult> {
        let start = match &opts.start_after {
            // The first key after `after` is `after` followed by a NUL byte.
            Some(after) if after.as_str() >= prefix => format!("{}\0", self.full(after)),
            _ => self.full(prefix),
        };
        let mut get = GetOptions::new().with_range(self.range_end(prefix));
        if let Some(limit) = opts.limit {
            // etcd's 0 means no limit; a limit of 0 asks for nothing but the revision.
            get = get.with_limit(limit.max(1) as i64);
        }
        if let Some(rev) = opts.revision {
            get = get.with_revision(rev);
        }
        let resp = self
            .client
            .kv_client()
            .get(start, Some(get))
            .await
            .map_err(|e| etcd_err(format!("list {prefix}"), opts.revision.unwrap_or(0), e))?;
        let revision = match opts.revision {
            Some(rev) => rev,
            None => resp.header().map(|h| h.revision()).ok_or_else(|| {
                Error::backend(format!("list {prefix}"), "etcd response has no header")
            })?,
        };
        let mut items: Vec<KeyValue> = resp.kvs().iter().map(|kv| self.to_kv(kv)).collect();
        let mut more = resp.more();
        if opts.limit == Some(0) {
            more = !items.is_empty() || more;
            items.clear();
        }
        Ok(ListResult {
            items,
            revision,
            more,
        })
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue> {
        let op = format!("create {key}");
        let full = self.full(key);
        let txn = Txn::new()
            .when([Compare::create_revision(full.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(full, value.clone(), None)]);
        let resp = self.txn(&op, txn).await?;
        if !resp.succeeded() {
            return Err(Error::AlreadyExists {
                key: key.to_string(),
            });
        }
        let rev = header_revision(&op, &resp)?;
        Ok(KeyValue {
            key: key.to_string(),
            value,
            create_revision: rev,
            mod_revision: rev,
        })
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_mod_revision: Option<i64>,
    ) -> Result<KeyValue> {
        let op = format!("update {key}");
        let full = self.full(key);
        let txn = Txn::new()
            .when([self.guard(&full, expected_mod_revision)])
            .and_then([TxnOp::put(
                full.clone(),
                value.clone(),
                Some(PutOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(full, None)]);
        let resp = self.txn(&op, txn).await?;
        if !resp.succeeded() {
            return Err(self.not_found_or_conflict(key, expected_mod_revision, &resp));
        }
        let rev = header_revision(&op, &resp)?;
        let create_revision = resp
            .op_responses()
            .into_iter()
            .find_map(|r| match r {
                TxnOpResponse::Put(put) => put.prev_key().map(|kv| kv.create_revision()),
                _ => None,
            })
            .ok_or_else(|| Error::backend(op.clone(), "etcd put returned no previous key"))?;
        Ok(KeyValue {
            key: key.to_string(),
            value,
            create_revision,
            mod_revision: rev,
        })
    }

    async fn delete(&self, key: &str, expected_mod_revision: Option<i64>) -> Result<KeyValue> {
        let op = format!("delete {key}");
        let full = self.full(key);
        let txn = Txn::new()
            .when([self.guard(&full, expected_mod_revision)])
            .and_then([TxnOp::delete(
                full.clone(),
                Some(DeleteOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(full, None)]);
        let resp = self.txn(&op, txn).await?;
        if !resp.succeeded() {
            return Err(self.not_found_or_conflict(key, expected_mod_revision, &resp));
        }
        let rev = header_revision(&op, &resp)?;
        let prev = resp
            .op_responses()
            .into_iter()
            .find_map(|r| match r {
                TxnOpResponse::Delete(del) => del.prev_kvs().first().map(|kv| self.to_kv(kv)),
                _ => None,
            })
            .ok_or_else(|| Error::backend(op.clone(), "etcd delete returned no previous key"))?;
        Ok(KeyValue {
            mod_revision: rev,
            ..prev
        })
    }

    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream> {
        let start = from_revision.max(0) + 1;
        let op = format!("watch {prefix} from {from_revision}");
        // etcd reports a compacted start revision only asynchronously, after the watch was
        // created; a read at that revision tells synchronously (a future revision is fine).
        let probe = self
            .client
            .kv_client()
            .get(
                self.full(prefix),
                Some(
                    GetOptions::new()
                        .with_range(self.range_end(prefix))
                        .with_count_only()
                        .with_revision(start),
                ),
            )
            .await;
        match probe.map_err(|e| etcd_err(op.clone(), from_revision, e)) {
            Ok(_) | Err(Error::FutureRevision { .. }) => {}
            Err(err) => return Err(err),
        }
        let stream = self
            .client
            .watch_client()
            .watch(
                self.full(prefix),
                Some(
                    WatchOptions::new()
                        .with_range(self.range_end(prefix))
                        .with_start_revision(start)
                        .with_prev_key(),
                ),
            )
            .await
            .map_err(|e| Error::backend(op.clone(), e))?;
        let state = EtcdWatch {
            store: self.clone(),
            stream,
            pending: VecDeque::new(),
            from_revision,
            op,
            done: false,
        };
        Ok(Box::pin(futures::stream::unfold(state, EtcdWatch::next)))
    }

    async fn current_revision(&self) -> Result<i64> {
        let resp = self
            .client
            .kv_client()
            .get(self.full("/"), Some(GetOptions::new().with_count_only()))
            .await
            .map_err(|e| Error::backend("read etcd revision", e))?;
        resp.header()
            .map(|h| h.revision())
            .ok_or_else(|| Error::backend("read etcd revision", "etcd response has no header"))
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        self.client
            .kv_client()
            .compact(revision, Some(CompactionOptions::new().with_physical()))
            .await
            .map_err(|e| etcd_err(format!("compact to {revision}"), revision, e))?;
        Ok(())
    }
}

/// One etcd watch turned into [`Event`]s.
struct EtcdWatch {
    store: EtcdStore,
    stream: etcd_client::WatchStream,
    pending: VecDeque<Event>,
    from_revision: i64,
    op: String,
    done: bool,
}

impl EtcdWatch {
    async fn next(mut self) -> Option<(Result<Event>, EtcdWatch)> {
        loop {
            if self.done {
                return None;
            }
            if let Some(ev) = self.pending.pop_front() {
                self.from_revision = ev.revision();
                return Some((Ok(ev), self));
            }
            let failure = match self.stream.next().await {
                None => Error::backend(self.op.clone(), "etcd closed the watch stream"),
                Some(Err(e)) => Error::backend(self.op.clone(), e),
                Some(Ok(resp)) if resp.canceled() && resp.compact_revision() > 0 => {
                    Error::Compacted {
                        requested: self.from_revision,
                        compacted_revision: resp.compact_revision(),
                    }
                }
                Some(Ok(resp)) if resp.canceled() => Error::backend(
                    self.op.clone(),
                    format!("etcd canceled the watch: {}", resp.cancel_reason()),
                ),
                Some(Ok(resp)) => {
                    for ev in resp.events() {
                        if let Some(ev) = self.convert(ev) {
                            self.pending.push_back(ev);
                        }
                    }
                    continue;
                }
            };
            self.done = true;
            return Some((Err(failure), self));
        }
    }

    fn convert(&self, ev: &etcd_client::Event) -> Option<Event> {
        let kv = self.store.to_kv(ev.kv()?);
        let prev_kv = ev.prev_kv().map(|p| self.store.to_kv(p));
        Some(match ev.event_type() {
            EventType::Put => Event {
                kind: if kv.create_revision == kv.mod_revision {
                    EventKind::Added
                } else {
                    EventKind::Modified
                },
                kv,
                prev_kv,
            },
            // etcd's delete event has an empty value; the object's last state is prev_kv,
            // as kube-apiserver's etcd3 watcher uses it.
            EventType::Delete => Event {
                kind: EventKind::Deleted,
                kv: KeyValue {
                    value: prev_kv
                        .as_ref()
                        .map(|p| p.value.clone())
                        .unwrap_or_default(),
                    create_revision: prev_kv.as_ref().map_or(0, |p| p.create_revision),
                    ..kv
                },
                prev_kv,
            },
        })
    }
}

//! The embedded default store: a revisioned log in one SQLite file, shaped like k3s's kine.
//!
//! Every write appends one row to `kv`; the row id is the global revision. A row carries the
//! key's previous value and revision, so a watch event (with `prev_kv`) is built from one row,
//! and "latest version of a key" is the row with the largest id for that name. Writes go to a
//! dedicated thread that owns the only writing connection; it takes every request waiting in
//! its queue and commits them in one transaction (group commit: one fsync for many writers),
//! and acknowledges a write only after the commit returned. Reads use a small pool of
//! connections on tokio's blocking threads; WAL lets them run beside the writer. Live watch
//! events come from an in-process broadcast sent after each commit; history comes from the
//! table.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{
    prefix_end, Error, Event, EventKind, KeyValue, ListOptions, ListResult, Result, Store,
    WatchStream,
};

/// The file name k3s uses for its SQLite datastore; callers put it in their data dir.
pub const DEFAULT_FILE_NAME: &str = "state.db";

/// Requests waiting beyond this many are committed in the next transaction.
const MAX_BATCH: usize = 512;
/// Queued write requests before `create`/`update`/`delete` callers wait for room.
const QUEUE_DEPTH: usize = 4096;
/// Live events kept for watchers; a watcher further behind re-reads history from the table.
const BROADCAST_CAPACITY: usize = 4096;
/// Rows read per history query of a watch.
const REPLAY_PAGE: usize = 1000;
/// Idle read connections kept open.
const READ_POOL: usize = 4;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    created INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL,
    value BLOB NOT NULL,
    old_value BLOB
);
CREATE INDEX IF NOT EXISTS kv_name_id ON kv (name, id);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
";

const ROW_COLUMNS: &str =
    "id, name, created, deleted, create_revision, prev_revision, value, old_value";
const CURRENT_REVISION_SQL: &str =
    "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'kv'), 0)";
const COMPACT_REVISION_SQL: &str =
    "SELECT COALESCE((SELECT value FROM meta WHERE key = 'compact_rev'), 0)";

/// A [`Store`] in one SQLite file.
pub struct SqliteStore {
    path: PathBuf,
    writes: mpsc::Sender<WriteRequest>,
    reads: Arc<ReadPool>,
    events: broadcast::Sender<Arc<Event>>,
    revisions: Arc<Revisions>,
}

/// Revisions the writer publishes after each commit.
#[derive(Default)]
struct Revisions {
    current: AtomicI64,
    compacted: AtomicI64,
}

enum WriteOp {
    Create {
        key: String,
        value: Vec<u8>,
    },
    Update {
        key: String,
        value: Vec<u8>,
        expected: Option<i64>,
    },
    Delete {
        key: String,
        expected: Option<i64>,
    },
    Compact {
        revision: i64,
    },
}

impl WriteOp {
    fn describe(&self) -> String {
        match self {
            WriteOp::Create { key, .. } => format!("create {key}"),
            WriteOp::Update { key, .. } => format!("update {key}"),
            WriteOp::Delete { key, .. } => format!("delete {key}"),
            WriteOp::Compact { revision } => format!("compact to {revision}"),
        }
    }
}

struct WriteRequest {
    op: WriteOp,
    reply: oneshot::Sender<Result<Option<KeyValue>>>,
}

/// One row of `kv`.
struct Row {
    id: i64,
    name: String,
    created: bool,
    deleted: bool,
    create_revision: i64,
    prev_revision: i64,
    value: Vec<u8>,
    old_value: Option<Vec<u8>>,
}

impl Row {
    fn from_sql(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
        Ok(Row {
            id: r.get(0)?,
            name: r.get(1)?,
            created: r.get(2)?,
            deleted: r.get(3)?,
            create_revision: r.get(4)?,
            prev_revision: r.get(5)?,
            value: r.get(6)?,
            old_value: r.get(7)?,
        })
    }

    fn kv(&self) -> KeyValue {
        KeyValue {
            key: self.name.clone(),
            value: self.value.clone(),
            create_revision: self.create_revision,
            mod_revision: self.id,
        }
    }

    /// The watch event this row records.
    fn into_event(self) -> Event {
        let kind = if self.created {
            EventKind::Added
        } else if self.deleted {
            EventKind::Deleted
        } else {
            EventKind::Modified
        };
        let prev_kv = (!self.created).then(|| KeyValue {
            key: self.name.clone(),
            // A delete row's value is the object's last value; an update row keeps the old one.
            value: self.old_value.clone().unwrap_or_else(|| self.value.clone()),
            create_revision: self.create_revision,
            mod_revision: self.prev_revision,
        });
        Event {
            kind,
            kv: self.kv(),
            prev_kv,
        }
    }
}

fn sql_err(op: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> Error {
    move |e| Error::backend(op, e)
}

fn open_connection(path: &Path) -> Result<Connection> {
    let op = || format!("open sqlite {}", path.display());
    let conn = Connection::open(path).map_err(sql_err(op()))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(sql_err(op()))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(sql_err(op()))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::backend(
            op(),
            format!("journal_mode is {mode}, want wal"),
        ));
    }
    // FULL syncs the WAL at every commit: an acknowledged write survives SIGKILL and power loss.
    conn.execute_batch("PRAGMA synchronous=FULL;")
        .map_err(sql_err(op()))?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the store in the SQLite file at `path` and starts its writer
    /// thread.
    pub async fn open(path: impl AsRef<Path>) -> Result<SqliteStore> {
        let path = path.as_ref().to_path_buf();
        let opened = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || -> Result<(Connection, i64, i64)> {
                let conn = open_connection(&path)?;
                let op = format!("create schema in {}", path.display());
                conn.execute_batch(SCHEMA).map_err(sql_err(op.clone()))?;
                let current: i64 = conn
                    .query_row(CURRENT_REVISION_SQL, [], |r| r.get(0))
                    .map_err(sql_err(op.clone()))?;
                let compacted: i64 = conn
                    .query_row(COMPACT_REVISION_SQL, [], |r| r.get(0))
                    .map_err(sql_err(op))?;
                Ok((conn, current, compacted))
            })
            .await
            .map_err(|e| Error::backend("open sqlite", e))??
        };
        let (conn, current, compacted) = opened;
        let revisions = Arc::new(Revisions {
            current: AtomicI64::new(current),
            compacted: AtomicI64::new(compacted),
        });
        let (writes, queue) = mpsc::channel(QUEUE_DEPTH);
        let (events, _) = broadcast::channel(BROADCAST_CAPACITY);
        let writer = Writer {
            conn,
            current,
            compacted,
            revisions: revisions.clone(),
            events: events.clone(),
        };
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer.run(queue))
            .map_err(|e| Error::backend("start sqlite writer thread", e))?;
        tracing::info!(path = %path.display(), revision = current, "opened sqlite store");
        Ok(SqliteStore {
            reads: Arc::new(ReadPool {
                path: path.clone(),
                idle: Mutex::new(Vec::new()),
            }),
            path,
            writes,
            events,
            revisions,
        })
    }

    /// The SQLite file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn write(&self, op: WriteOp) -> Result<Option<KeyValue>> {
        let describe = op.describe();
        let (reply, answer) = oneshot::channel();
        self.writes
            .send(WriteRequest { op, reply })
            .await
            .map_err(|_| Error::backend(describe.clone(), "sqlite writer thread has stopped"))?;
        answer
            .await
            .map_err(|_| Error::backend(describe, "sqlite writer thread has stopped"))?
    }

    async fn write_kv(&self, op: WriteOp) -> Result<KeyValue> {
        let describe = op.describe();
        self.write(op)
            .await?
            .ok_or_else(|| Error::backend(describe, "writer returned no object"))
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_string();
        self.reads
            .run(move |conn| {
                let row = latest(conn, &key).map_err(sql_err(format!("get {key}")))?;
                Ok(row.filter(|r| !r.deleted).map(|r| r.kv()))
            })
            .await
    }

    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult> {
        let prefix = prefix.to_string();
        self.reads
            .run(move |conn| list_snapshot(conn, &prefix, &opts))
            .await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue> {
        self.write_kv(WriteOp::Create {
            key: key.to_string(),
            value,
        })
        .await
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_mod_revision: Option<i64>,
    ) -> Result<KeyValue> {
        self.write_kv(WriteOp::Update {
            key: key.to_string(),
            value,
            expected: expected_mod_revision,
        })
        .await
    }

    async fn delete(&self, key: &str, expected_mod_revision: Option<i64>) -> Result<KeyValue> {
        self.write_kv(WriteOp::Delete {
            key: key.to_string(),
            expected: expected_mod_revision,
        })
        .await
    }

    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream> {
        // Subscribe before reading history: every commit after this point reaches the
        // receiver, every commit before it is in the table; duplicates are skipped by revision.
        let live = self.events.subscribe();
        let compacted = self.revisions.compacted.load(Ordering::Acquire);
        if from_revision + 1 < compacted {
            return Err(Error::Compacted {
                requested: from_revision,
                compacted_revision: compacted,
            });
        }
        let state = WatchState {
            reads: self.reads.clone(),
            live,
            prefix: prefix.to_string(),
            last: from_revision,
            pending: VecDeque::new(),
            replaying: true,
            done: false,
        };
        Ok(Box::pin(futures::stream::unfold(state, WatchState::next)))
    }

    async fn current_revision(&self) -> Result<i64> {
        Ok(self.revisions.current.load(Ordering::Acquire))
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        self.write(WriteOp::Compact { revision }).await.map(|_| ())
    }
}

/// The latest row of `key`, live or tombstone.
fn latest(conn: &Connection, key: &str) -> rusqlite::Result<Option<Row>> {
    conn.prepare_cached(&format!(
        "SELECT {ROW_COLUMNS} FROM kv WHERE name = ?1 ORDER BY id DESC LIMIT 1"
    ))?
    .query_row([key], Row::from_sql)
    .optional()
}

fn list_snapshot(conn: &mut Connection, prefix: &str, opts: &ListOptions) -> Result<ListResult> {
    let op = || format!("list {prefix}");
    // One read transaction: the revision and the rows come from the same snapshot.
    let tx = conn.transaction().map_err(sql_err(op()))?;
    let current: i64 = tx
        .query_row(CURRENT_REVISION_SQL, [], |r| r.get(0))
        .map_err(sql_err(op()))?;
    let compacted: i64 = tx
        .query_row(COMPACT_REVISION_SQL, [], |r| r.get(0))
        .map_err(sql_err(op()))?;
    let revision = match opts.revision {
        None => current,
        Some(r) if r < compacted => {
            return Err(Error::Compacted {
                requested: r,
                compacted_revision: compacted,
            })
        }
        Some(r) if r > current => {
            return Err(Error::FutureRevision {
                requested: r,
                current,
            })
        }
        Some(r) => r,
    };
    let end = prefix_end(prefix).and_then(|e| String::from_utf8(e).ok());
    let mut sql = String::from("SELECT MAX(id) AS mid FROM kv WHERE name >= ?1 AND id <= ?2");
    let mut args: Vec<Box<dyn rusqlite::ToSql>> =
        vec![Box::new(prefix.to_string()), Box::new(revision)];
    if let Some(end) = end {
        args.push(Box::new(end));
        sql.push_str(&format!(" AND name < ?{}", args.len()));
    }
    if let Some(after) = &opts.start_after {
        args.push(Box::new(after.clone()));
        sql.push_str(&format!(" AND name > ?{}", args.len()));
    }
    let mut sql = format!(
        "SELECT kv.id, kv.name, kv.create_revision, kv.value FROM kv \
         JOIN ({sql} GROUP BY name) m ON kv.id = m.mid WHERE kv.deleted = 0 ORDER BY kv.name"
    );
    if let Some(limit) = opts.limit {
        // One more than asked tells whether more follow.
        args.push(Box::new(limit.saturating_add(1) as i64));
        sql.push_str(&format!(" LIMIT ?{}", args.len()));
    }
    let mut items = Vec::new();
    {
        let mut stmt = tx.prepare_cached(&sql).map_err(sql_err(op()))?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                Ok(KeyValue {
                    mod_revision: r.get(0)?,
                    key: r.get(1)?,
                    create_revision: r.get(2)?,
                    value: r.get(3)?,
                })
            })
            .map_err(sql_err(op()))?;
        for row in rows {
            let kv = row.map_err(sql_err(op()))?;
            // Without a usable upper bound the keys past the prefix are cut here.
            if !kv.key.starts_with(prefix) {
                break;
            }
            items.push(kv);
        }
    }
    tx.commit().map_err(sql_err(op()))?;
    let more = opts.limit.is_some_and(|l| items.len() > l);
    if let Some(limit) = opts.limit {
        items.truncate(limit);
    }
    Ok(ListResult {
        items,
        revision,
        more,
    })
}

/// History rows under `prefix` after revision `after`, checked against the compaction point
/// in the same snapshot.
fn replay_page(conn: &mut Connection, prefix: &str, after: i64) -> Result<Vec<Event>> {
    let op = || format!("watch {prefix}: read history after {after}");
    let tx = conn.transaction().map_err(sql_err(op()))?;
    let compacted: i64 = tx
        .query_row(COMPACT_REVISION_SQL, [], |r| r.get(0))
        .map_err(sql_err(op()))?;
    if after + 1 < compacted {
        return Err(Error::Compacted {
            requested: after,
            compacted_revision: compacted,
        });
    }
    let mut sql = format!("SELECT {ROW_COLUMNS} FROM kv WHERE id > ?1 AND name >= ?2");
    let mut args: Vec<Box<dyn rusqlite::ToSql>> =
        vec![Box::new(after), Box::new(prefix.to_string())];
    if let Some(end) = prefix_end(prefix).and_then(|e| String::from_utf8(e).ok()) {
        args.push(Box::new(end));
        sql.push_str(" AND name < ?3");
    }
    sql.push_str(&format!(" ORDER BY id LIMIT {REPLAY_PAGE}"));
    let mut events = Vec::new();
    {
        let mut stmt = tx.prepare_cached(&sql).map_err(sql_err(op()))?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args.iter()), Row::from_sql)
            .map_err(sql_err(op()))?;
        for row in rows {
            let row = row.map_err(sql_err(op()))?;
            if row.name.starts_with(prefix) {
                events.push(row.into_event());
            }
        }
    }
    tx.commit().map_err(sql_err(op()))?;
    Ok(events)
}

/// Read connections, used on tokio's blocking threads.
struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let idle = pool.idle.lock().ok().and_then(|mut idle| idle.pop());
            let mut conn = match idle {
                Some(conn) => conn,
                None => {
                    let conn = open_connection(&pool.path)?;
                    conn.execute_batch("PRAGMA query_only=1;")
                        .map_err(sql_err("open sqlite reader"))?;
                    conn
                }
            };
            let out = f(&mut conn);
            if let Ok(mut idle) = pool.idle.lock() {
                if idle.len() < READ_POOL {
                    idle.push(conn);
                }
            }
            out
        })
        .await
        .map_err(|e| Error::backend("sqlite read", e))?
    }
}

/// The state of one watch stream.
struct WatchState {
    reads: Arc<ReadPool>,
    live: broadcast::Receiver<Arc<Event>>,
    prefix: String,
    /// The revision of the last event delivered (or skipped as outside the prefix).
    last: i64,
    pending: VecDeque<Event>,
    /// Reading history from the table rather than the broadcast.
    replaying: bool,
    done: bool,
}

impl WatchState {
    async fn next(mut self) -> Option<(Result<Event>, WatchState)> {
        loop {
            if self.done {
                return None;
            }
            if let Some(ev) = self.pending.pop_front() {
                return Some((Ok(ev), self));
            }
            if self.replaying {
                let prefix = self.prefix.clone();
                let after = self.last;
                match self
                    .reads
                    .run(move |conn| replay_page(conn, &prefix, after))
                    .await
                {
                    Ok(events) => {
                        if events.len() < REPLAY_PAGE {
                            self.replaying = false;
                        }
                        if let Some(ev) = events.last() {
                            self.last = ev.revision();
                        }
                        self.pending.extend(events);
                    }
                    Err(err) => {
                        self.done = true;
                        return Some((Err(err), self));
                    }
                }
                continue;
            }
            match self.live.recv().await {
                Ok(ev) => {
                    if ev.revision() <= self.last {
                        continue;
                    }
                    self.last = ev.revision();
                    if ev.kv.key.starts_with(&self.prefix) {
                        return Some((Ok((*ev).clone()), self));
                    }
                }
                // Fell behind the broadcast: everything missed is in the table, which is read
                // at the watcher's own pace (bounded memory); compaction past it ends the watch.
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(prefix = %self.prefix, missed, "watcher lagged, replaying from the table");
                    self.replaying = true;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// The writer thread: owns the writing connection.
struct Writer {
    conn: Connection,
    /// The latest revision written (committed, or within the open transaction).
    current: i64,
    compacted: i64,
    revisions: Arc<Revisions>,
    events: broadcast::Sender<Arc<Event>>,
}

/// A failed step inside a batch: a caller's error leaves the rest of the batch alone, a
/// SQLite error aborts the whole transaction.
enum StepError {
    Caller(Error),
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for StepError {
    fn from(e: rusqlite::Error) -> Self {
        StepError::Sqlite(e)
    }
}

impl Writer {
    fn run(mut self, mut queue: mpsc::Receiver<WriteRequest>) {
        while let Some(first) = queue.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(req) => batch.push(req),
                    Err(_) => break,
                }
            }
            self.commit_batch(batch);
        }
        tracing::debug!("sqlite writer stopped: store dropped");
    }

    fn commit_batch(&mut self, batch: Vec<WriteRequest>) {
        let start = (self.current, self.compacted);
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut failure = None;
        match self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
        {
            Err(e) => failure = Some(e),
            Ok(tx) => {
                for req in &batch {
                    match step(&tx, &req.op, &mut self.current, &mut self.compacted) {
                        Ok(outcome) => outcomes.push(Ok(outcome)),
                        Err(StepError::Caller(e)) => outcomes.push(Err(e)),
                        Err(StepError::Sqlite(e)) => {
                            failure = Some(e);
                            break;
                        }
                    }
                }
                if failure.is_none() {
                    // Acknowledge nothing before the commit (and its fsync) returned.
                    if let Err(e) = tx.commit() {
                        failure = Some(e);
                    }
                }
            }
        }
        if let Some(err) = failure {
            (self.current, self.compacted) = start;
            let message = err.to_string();
            tracing::error!(error = %message, writes = batch.len(), "sqlite write transaction failed");
            for req in batch {
                let _ = req
                    .reply
                    .send(Err(Error::backend(req.op.describe(), message.clone())));
            }
            return;
        }
        self.revisions
            .compacted
            .store(self.compacted, Ordering::Release);
        self.revisions
            .current
            .store(self.current, Ordering::Release);
        for (req, outcome) in batch.into_iter().zip(outcomes) {
            let reply = match outcome {
                Ok((kv, event)) => {
                    if let Some(event) = event {
                        // No receivers is fine: nobody watches.
                        let _ = self.events.send(Arc::new(event));
                    }
                    Ok(kv)
                }
                Err(e) => Err(e),
            };
            // The caller may have gone away; the write stands.
            let _ = req.reply.send(reply);
        }
    }
}

type Outcome = (Option<KeyValue>, Option<Event>);

fn insert(tx: &rusqlite::Transaction<'_>, row: &Row) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO kv (id, name, created, deleted, create_revision, prev_revision, value, old_value) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        row.id,
        row.name,
        row.created,
        row.deleted,
        row.create_revision,
        row.prev_revision,
        row.value,
        row.old_value
    ])?;
    Ok(())
}

/// The live row of `key` checked against `expected`, for update and delete.
fn live_row(
    tx: &rusqlite::Transaction<'_>,
    key: &str,
    expected: Option<i64>,
) -> Result<Row, StepError> {
    let row = match latest(tx, key)? {
        Some(row) if !row.deleted => row,
        _ => {
            return Err(StepError::Caller(Error::NotFound {
                key: key.to_string(),
            }))
        }
    };
    match expected {
        Some(expected) if expected != row.id => Err(StepError::Caller(Error::Conflict {
            key: key.to_string(),
            expected,
            current: row.id,
        })),
        _ => Ok(row),
    }
}

fn step(
    tx: &rusqlite::Transaction<'_>,
    op: &WriteOp,
    current: &mut i64,
    compacted: &mut i64,
) -> Result<Outcome, StepError> {
    let row = match op {
        WriteOp::Create { key, value } => {
            let prev_revision = match latest(tx, key)? {
                Some(row) if !row.deleted => {
                    return Err(StepError::Caller(Error::AlreadyExists { key: key.clone() }))
                }
                Some(tombstone) => tombstone.id,
                None => 0,
            };
            let id = *current + 1;
            Row {
                id,
                name: key.clone(),
                created: true,
                deleted: false,
                create_revision: id,
                prev_revision,
                value: value.clone(),
                old_value: None,
            }
        }
        WriteOp::Update {
            key,
            value,
            expected,
        } => {
            let prev = live_row(tx, key, *expected)?;
            Row {
                id: *current + 1,
                name: key.clone(),
                created: false,
                deleted: false,
                create_revision: prev.create_revision,
                prev_revision: prev.id,
                value: value.clone(),
                old_value: Some(prev.value),
            }
        }
        WriteOp::Delete { key, expected } => {
            let prev = live_row(tx, key, *expected)?;
            Row {
                id: *current + 1,
                name: key.clone(),
                created: false,
                deleted: true,
                create_revision: prev.create_revision,
                prev_revision: prev.id,
                // The tombstone keeps the last value: it is the DELETED event's object.
                value: prev.value,
                old_value: None,
            }
        }
        WriteOp::Compact { revision } => {
            let revision = *revision;
            if revision <= *compacted {
                return Err(StepError::Caller(Error::Compacted {
                    requested: revision,
                    compacted_revision: *compacted,
                }));
            }
            if revision > *current {
                return Err(StepError::Caller(Error::FutureRevision {
                    requested: revision,
                    current: *current,
                }));
            }
            // Below `revision`, drop tombstones and every version superseded by a newer one
            // at or below `revision`: reads at `revision` still see the same keys.
            tx.prepare_cached(
                "DELETE FROM kv WHERE id < ?1 AND (deleted = 1 OR id < \
                 (SELECT MAX(k2.id) FROM kv AS k2 WHERE k2.name = kv.name AND k2.id <= ?1))",
            )?
            .execute([revision])?;
            tx.prepare_cached(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('compact_rev', ?1)",
            )?
            .execute([revision])?;
            *compacted = revision;
            return Ok((None, None));
        }
    };
    insert(tx, &row)?;
    *current = row.id;
    let kv = row.kv();
    Ok((Some(kv), Some(row.into_event())))
}

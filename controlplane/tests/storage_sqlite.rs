//! The storage conformance suite on the SQLite store and on the watch cache over it, plus
//! durability across SIGKILL and the watch cache's own limits.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use oxlet_controlplane::storage::cacher::{Cacher, CacherConfig};
use oxlet_controlplane::storage::conformance::{conformance, next_event};
use oxlet_controlplane::storage::sqlite::SqliteStore;
use oxlet_controlplane::storage::{Error, ListOptions, Store};

async fn open_temp() -> anyhow::Result<(tempfile::TempDir, Arc<SqliteStore>)> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(dir.path().join("state.db")).await?;
    Ok((dir, Arc::new(store)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_conformance() -> anyhow::Result<()> {
    let (_dir, store) = open_temp().await?;
    conformance(store).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cacher_over_sqlite_conformance() -> anyhow::Result<()> {
    let (_dir, store) = open_temp().await?;
    // Something to find in the initial list.
    store
        .create("/conformance/preexisting", b"x".to_vec())
        .await?;
    let cacher = Cacher::new(store, "/", CacherConfig::default()).await?;
    assert!(cacher.get("/conformance/preexisting").await?.is_some());
    conformance(Arc::new(cacher)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reopen_keeps_objects_revisions_and_compaction() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    let (kept, compacted_at, head) = {
        let store = SqliteStore::open(&path).await?;
        let a = store
            .create("/registry/pods/default/a", b"a".to_vec())
            .await?;
        store.update(&a.key, b"a2".to_vec(), None).await?;
        store
            .create("/registry/pods/default/b", b"b".to_vec())
            .await?;
        let gone = store.delete("/registry/pods/default/b", None).await?;
        let kept = store.update(&a.key, b"a3".to_vec(), None).await?;
        store.compact(gone.mod_revision).await?;
        // The tombstone at the head must not make revisions go back after a restart.
        let last = store
            .create("/registry/pods/default/c", b"c".to_vec())
            .await?;
        store.delete(&last.key, None).await?;
        let head = store.current_revision().await?;
        store.compact(head).await?;
        (kept, gone.mod_revision, head)
    };
    let store = SqliteStore::open(&path).await?;
    assert_eq!(store.current_revision().await?, head);
    assert_eq!(store.get(&kept.key).await?, Some(kept.clone()));
    let list = store.list("/registry/", ListOptions::default()).await?;
    assert_eq!(list.items, vec![kept]);
    let err = store
        .list(
            "/registry/",
            ListOptions {
                revision: Some(compacted_at),
                ..Default::default()
            },
        )
        .await
        .err()
        .context("list below the compaction point after reopen")?;
    assert!(err.is_compacted(), "{err}");
    let next = store
        .create("/registry/pods/default/d", b"d".to_vec())
        .await?;
    assert_eq!(
        next.mod_revision,
        head + 1,
        "revisions continue after reopen"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cacher_terminates_slow_watcher_without_blocking_others() -> anyhow::Result<()> {
    let (_dir, store) = open_temp().await?;
    let config = CacherConfig {
        watcher_buffer: 4,
        ..CacherConfig::default()
    };
    let cacher = Cacher::new(store.clone(), "/registry/", config).await?;
    let start = cacher.current_revision().await?;
    let mut slow = cacher.watch("/registry/pods/", start).await?;
    let mut fast = cacher.watch("/registry/pods/", start).await?;
    let mut written = Vec::new();
    for i in 0..10 {
        let kv = cacher
            .create(&format!("/registry/pods/default/p{i}"), vec![b'x'; 10])
            .await?;
        // Lockstep: the fast watcher never has more than one event queued.
        assert_eq!(next_event(&mut fast).await?.kv, kv);
        written.push(kv);
    }
    // The slow one got its queue's worth, then the error, then the end.
    for kv in &written[..4] {
        assert_eq!(&next_event(&mut slow).await?.kv, kv);
    }
    match next_event(&mut slow).await {
        Err(Error::WatcherTooSlow { .. }) => {}
        other => bail!("want WatcherTooSlow, got {other:?}"),
    }
    assert!(slow.next().await.is_none());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cacher_watch_older_than_its_buffer_is_too_old() -> anyhow::Result<()> {
    let (_dir, store) = open_temp().await?;
    let config = CacherConfig {
        event_buffer: 5,
        fresh_timeout: Duration::from_secs(60),
        ..CacherConfig::default()
    };
    let cacher = Cacher::new(store.clone(), "/registry/", config).await?;
    let start = cacher.current_revision().await?;
    let mut revs = Vec::new();
    for i in 0..10 {
        revs.push(
            cacher
                .create(&format!("/registry/pods/default/p{i}"), b"x".to_vec())
                .await?
                .mod_revision,
        );
    }
    // Served from memory after catching up: the newest 5 events are there.
    let mut w = cacher.watch("/registry/", revs[4]).await?;
    assert_eq!(next_event(&mut w).await?.revision(), revs[5]);
    let err = cacher
        .watch("/registry/", start)
        .await
        .err()
        .context("want an error")?;
    assert!(err.is_compacted(), "{err}");
    // The store itself still has that history.
    let mut w = store.watch("/registry/", start).await?;
    assert_eq!(next_event(&mut w).await?.revision(), revs[0]);
    // A watch from a revision the cache has not reached yet waits for it.
    let future = revs[9] + 1;
    let cacher = Arc::new(cacher);
    let pending = tokio::spawn({
        let cacher = cacher.clone();
        async move {
            let mut w = cacher.watch("/registry/", future).await?;
            anyhow::Ok(next_event(&mut w).await?)
        }
    });
    let late = store
        .create("/registry/pods/default/late", b"x".to_vec())
        .await?;
    assert_eq!(late.mod_revision, future);
    let later = store
        .create("/registry/pods/default/later", b"x".to_vec())
        .await?;
    assert_eq!(pending.await??.kv, later);
    Ok(())
}

/// Set in the child process of [`sqlite_acknowledged_writes_survive_sigkill`].
const DURABILITY_DB: &str = "OXLET_TEST_DURABILITY_DB";

/// Kills the child (SIGKILL) when the test ends, however it ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sqlite_acknowledged_writes_survive_sigkill() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("state.db");
    let exe = std::env::current_exe()?;
    let child = Command::new(exe)
        .args([
            "--exact",
            "durability_child_writes_until_killed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DURABILITY_DB, &db)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("re-exec the test binary")?;
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().context("child stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(ack) = line.strip_prefix("ACK ") {
                if tx.send(ack.to_string()).is_err() {
                    break;
                }
            }
        }
    });
    let mut acks = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while acks.len() < 500 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(ack) => acks.push(ack),
            Err(e) => bail!("child acknowledged {} writes before {e:?}", acks.len()),
        }
    }
    // Mid-run: the child keeps writing with 16 writers until it dies.
    child.0.kill().context("SIGKILL the child")?;
    child.0.wait()?;
    // Acknowledgements already printed count too.
    let _ = reader.join();
    acks.extend(rx.try_iter());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let store = SqliteStore::open(&db).await?;
        for ack in &acks {
            let (key, rev) = ack.split_once(' ').context("ACK line")?;
            let rev: i64 = rev.parse()?;
            let kv = store
                .get(key)
                .await?
                .with_context(|| format!("acknowledged {key} at {rev} lost after SIGKILL"))?;
            assert_eq!(kv.mod_revision, rev);
            assert_eq!(kv.value.len(), 1024);
        }
        let max = acks.len();
        eprintln!("{max} acknowledged writes all present after SIGKILL");
        anyhow::Ok(())
    })
}

/// Not a test on its own: the child of [`sqlite_acknowledged_writes_survive_sigkill`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durability_child_writes_until_killed() -> anyhow::Result<()> {
    let Some(db) = std::env::var_os(DURABILITY_DB) else {
        return Ok(());
    };
    let store = Arc::new(SqliteStore::open(db).await?);
    let mut tasks = Vec::new();
    for w in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let key = format!("/registry/durability/w{w}-{i}");
                let kv = store.create(&key, vec![b'x'; 1024]).await?;
                // Straight to stdout (not the test harness's capture), flushed per line.
                let mut out = std::io::stdout().lock();
                writeln!(out, "ACK {key} {}", kv.mod_revision)?;
                out.flush()?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Creates/s for 10,000 × 1 KiB creates from 16 writers:
/// `cargo test --release -p oxlet-controlplane --test storage_sqlite -- --ignored --nocapture bench`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, run by hand"]
async fn bench_sqlite_creates() -> anyhow::Result<()> {
    let (_dir, store) = open_temp().await?;
    let rate = bench_creates(store).await?;
    println!("sqlite: {rate:.0} creates/s (10000 x 1 KiB, 16 writers)");
    Ok(())
}

async fn bench_creates(store: Arc<dyn Store>) -> anyhow::Result<f64> {
    const TOTAL: usize = 10_000;
    const WRITERS: usize = 16;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..TOTAL).step_by(WRITERS) {
                store
                    .create(
                        &format!("/registry/bench/default/obj-{i}"),
                        vec![b'x'; 1024],
                    )
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(TOTAL as f64 / start.elapsed().as_secs_f64())
}

//! The storage conformance suite: one set of checks every [`Store`] must pass (SQLite, etcd,
//! the cacher). Each check works under its own key prefix and asserts only revisions relative
//! to ones it observed, so the suite runs on a store that is not empty.
//!
//! Checks panic with a message on failure, as tests do.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use super::{Error, EventKind, KeyValue, ListOptions, Store, WatchStream};

/// Generous: the suite runs on a loaded 2-core machine.
const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs every check in order (compaction last: it cuts history the others replay).
pub async fn conformance(store: Arc<dyn Store>) {
    crud(store.as_ref()).await;
    list_pagination_and_snapshot(store.as_ref()).await;
    watch_replay(store.as_ref()).await;
    watch_live_order(store.as_ref()).await;
    concurrent_writers(store.clone()).await;
    compaction(store.as_ref()).await;
}

/// The next event of `stream`, failing the test after a generous timeout.
pub async fn next_event(stream: &mut WatchStream) -> super::Result<super::Event> {
    tokio::time::timeout(EVENT_TIMEOUT, stream.next())
        .await
        .expect("no watch event within 30s")
        .expect("watch stream ended")
}

fn bytes(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

/// create/get/update/delete with and without expected revisions.
pub async fn crud(store: &dyn Store) {
    let key = "/conformance/crud/a";
    let before = store.current_revision().await.unwrap();
    assert!(store.get(key).await.unwrap().is_none());

    let created = store.create(key, bytes("v1")).await.unwrap();
    assert!(created.mod_revision > before, "create moves the revision");
    assert_eq!(created.create_revision, created.mod_revision);
    assert_eq!(created.value, bytes("v1"));
    assert_eq!(store.get(key).await.unwrap(), Some(created.clone()));
    assert!(store.current_revision().await.unwrap() >= created.mod_revision);

    let err = store.create(key, bytes("again")).await.unwrap_err();
    assert!(err.is_already_exists(), "{err}");

    let updated = store.update(key, bytes("v2"), None).await.unwrap();
    assert!(updated.mod_revision > created.mod_revision);
    assert_eq!(updated.create_revision, created.create_revision);
    assert_eq!(store.get(key).await.unwrap(), Some(updated.clone()));

    let err = store
        .update(key, bytes("stale"), Some(created.mod_revision))
        .await
        .unwrap_err();
    match err {
        Error::Conflict { current, .. } => assert_eq!(current, updated.mod_revision),
        other => panic!("want Conflict, got {other}"),
    }
    assert_eq!(store.get(key).await.unwrap().unwrap().value, bytes("v2"));

    let updated3 = store
        .update(key, bytes("v3"), Some(updated.mod_revision))
        .await
        .unwrap();
    assert!(updated3.mod_revision > updated.mod_revision);

    let err = store
        .update("/conformance/crud/missing", bytes("x"), None)
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    let err = store
        .update(
            "/conformance/crud/missing",
            bytes("x"),
            Some(updated3.mod_revision),
        )
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");

    let err = store
        .delete(key, Some(updated.mod_revision))
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err}");
    let deleted = store
        .delete(key, Some(updated3.mod_revision))
        .await
        .unwrap();
    assert_eq!(deleted.value, bytes("v3"), "delete returns the last value");
    assert_eq!(deleted.create_revision, created.create_revision);
    assert!(
        deleted.mod_revision > updated3.mod_revision,
        "delete has its own revision"
    );
    assert!(store.get(key).await.unwrap().is_none());
    assert!(store.delete(key, None).await.unwrap_err().is_not_found());
    assert!(store
        .update(key, bytes("x"), None)
        .await
        .unwrap_err()
        .is_not_found());

    let again = store.create(key, bytes("reborn")).await.unwrap();
    assert!(
        again.create_revision > deleted.mod_revision,
        "a new incarnation"
    );
    let gone = store.delete(key, None).await.unwrap();
    assert_eq!(gone.value, bytes("reborn"));
}

/// Prefix boundaries, limit/continue, and a paginated list staying at its revision.
pub async fn list_pagination_and_snapshot(store: &dyn Store) {
    let prefix = "/conformance/list/";
    for name in ["c", "a", "e", "b", "d"] {
        store
            .create(&format!("{prefix}{name}"), bytes(name))
            .await
            .unwrap();
    }
    // Neighbours that share the prefix's text but not the prefix.
    store
        .create("/conformance/list-other/x", bytes("x"))
        .await
        .unwrap();
    store.create("/conformance/lisp", bytes("x")).await.unwrap();

    let all = store.list(prefix, ListOptions::default()).await.unwrap();
    let keys: Vec<&str> = all.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(
        keys,
        ["a", "b", "c", "d", "e"].map(|n| format!("{prefix}{n}")),
        "sorted, only the prefix"
    );
    assert!(!all.more);
    assert!(all.revision >= all.items.iter().map(|kv| kv.mod_revision).max().unwrap());

    let page1 = store
        .list(
            prefix,
            ListOptions {
                limit: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page1.items.len(), 2);
    assert!(page1.more);
    assert_eq!(page1.items[1].key, format!("{prefix}b"));

    // Writes between pages must not show in later pages of the same list.
    let c = store.get(&format!("{prefix}c")).await.unwrap().unwrap();
    store
        .update(&format!("{prefix}c"), bytes("c2"), Some(c.mod_revision))
        .await
        .unwrap();
    store.delete(&format!("{prefix}d"), None).await.unwrap();
    store
        .create(&format!("{prefix}f"), bytes("f"))
        .await
        .unwrap();

    let page2 = store
        .list(
            prefix,
            ListOptions {
                limit: Some(2),
                start_after: Some(page1.items[1].key.clone()),
                revision: Some(page1.revision),
            },
        )
        .await
        .unwrap();
    assert_eq!(page2.revision, page1.revision);
    assert_eq!(
        page2.items,
        vec![c.clone(), all.items[3].clone()],
        "page 2 at the first page's revision"
    );
    assert!(page2.more);
    let page3 = store
        .list(
            prefix,
            ListOptions {
                limit: Some(2),
                start_after: Some(page2.items[1].key.clone()),
                revision: Some(page1.revision),
            },
        )
        .await
        .unwrap();
    assert_eq!(page3.items, vec![all.items[4].clone()]);
    assert!(!page3.more);

    let latest = store.list(prefix, ListOptions::default()).await.unwrap();
    let values: Vec<&[u8]> = latest.items.iter().map(|kv| kv.value.as_slice()).collect();
    assert_eq!(values, [&b"a"[..], b"b", b"c2", b"e", b"f"]);
    assert!(latest.revision > page1.revision);

    let future = latest.revision + 1000;
    let err = store
        .list(
            prefix,
            ListOptions {
                revision: Some(future),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::FutureRevision { .. }), "{err}");
}

/// Watch from a past revision replays history with kinds, revisions and prev_kv.
pub async fn watch_replay(store: &dyn Store) {
    let prefix = "/conformance/replay/";
    let key = format!("{prefix}k");
    let start = store.current_revision().await.unwrap();
    let created = store.create(&key, bytes("v1")).await.unwrap();
    store
        .create("/conformance/replay-other/k", bytes("no"))
        .await
        .unwrap();
    let updated = store.update(&key, bytes("v2"), None).await.unwrap();
    let deleted = store.delete(&key, None).await.unwrap();

    let mut w = store.watch(prefix, start).await.unwrap();
    let e1 = next_event(&mut w).await.unwrap();
    assert_eq!(e1.kind, EventKind::Added);
    assert_eq!(e1.kv, created);
    assert_eq!(e1.prev_kv, None);
    let e2 = next_event(&mut w).await.unwrap();
    assert_eq!(e2.kind, EventKind::Modified);
    assert_eq!(e2.kv, updated);
    assert_eq!(e2.prev_kv, Some(created.clone()));
    let e3 = next_event(&mut w).await.unwrap();
    assert_eq!(e3.kind, EventKind::Deleted);
    assert_eq!(
        e3.kv, deleted,
        "a delete event carries the last value at the delete's revision"
    );
    assert_eq!(e3.prev_kv, Some(updated.clone()));

    // From the middle: only what came after.
    let mut w = store.watch(prefix, updated.mod_revision).await.unwrap();
    assert_eq!(next_event(&mut w).await.unwrap().kv, deleted);
    // Then live.
    let live = store.create(&key, bytes("v3")).await.unwrap();
    let e = next_event(&mut w).await.unwrap();
    assert_eq!((e.kind, e.kv), (EventKind::Added, live));
}

/// A live watch sees every write under its prefix once, in revision order.
pub async fn watch_live_order(store: &dyn Store) {
    let prefix = "/conformance/live/";
    let start = store.current_revision().await.unwrap();
    let mut w = store.watch(prefix, start).await.unwrap();
    let mut written: Vec<KeyValue> = Vec::new();
    for i in 0..20 {
        let key = format!("{prefix}k{}", i % 4);
        let kv = if i < 4 {
            store.create(&key, bytes(&format!("{i}"))).await.unwrap()
        } else {
            store
                .update(&key, bytes(&format!("{i}")), None)
                .await
                .unwrap()
        };
        store
            .create(&format!("/conformance/live-other/{i}"), bytes("no"))
            .await
            .unwrap();
        written.push(kv);
    }
    for kv in &written {
        let ev = next_event(&mut w).await.unwrap();
        assert_eq!(
            &ev.kv, kv,
            "events in write order, nothing outside the prefix"
        );
    }
    let deleted = store.delete(&format!("{prefix}k0"), None).await.unwrap();
    let ev = next_event(&mut w).await.unwrap();
    assert_eq!(ev.kind, EventKind::Deleted);
    assert_eq!(ev.kv, deleted);
    assert_eq!(ev.prev_kv.unwrap().mod_revision, written[16].mod_revision);
}

/// Compare-and-swap increments from many tasks: no update lost, revisions unique.
pub async fn concurrent_writers(store: Arc<dyn Store>) {
    const WRITERS: usize = 8;
    const INCREMENTS: usize = 10;
    let key = "/conformance/concurrent/counter";
    store.create(key, bytes("0")).await.unwrap();
    let start = store.current_revision().await.unwrap();
    let mut w = store
        .watch("/conformance/concurrent/", start)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for t in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut revisions = Vec::new();
            // Plain creates too, racing the counter.
            for i in 0..INCREMENTS {
                let kv = store
                    .create(&format!("/conformance/concurrent/w{t}-{i}"), bytes("x"))
                    .await
                    .unwrap();
                revisions.push(kv.mod_revision);
                loop {
                    let cur = store.get(key).await.unwrap().unwrap();
                    let n: u64 = String::from_utf8(cur.value).unwrap().parse().unwrap();
                    match store
                        .update(key, bytes(&(n + 1).to_string()), Some(cur.mod_revision))
                        .await
                    {
                        Ok(kv) => {
                            revisions.push(kv.mod_revision);
                            break;
                        }
                        Err(e) if e.is_conflict() => continue,
                        Err(e) => panic!("update: {e}"),
                    }
                }
            }
            revisions
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let revs = t.await.unwrap();
        assert!(
            revs.windows(2).all(|p| p[0] < p[1]),
            "each writer sees increasing revisions"
        );
        all.extend(revs);
    }
    let total = WRITERS * INCREMENTS;
    let final_value = store.get(key).await.unwrap().unwrap();
    assert_eq!(
        final_value.value,
        bytes(&total.to_string()),
        "no lost updates"
    );
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 2 * total, "every write has its own revision");
    // The watch saw exactly those writes, in order.
    let mut seen = Vec::new();
    while seen.len() < all.len() {
        seen.push(next_event(&mut w).await.unwrap().revision());
    }
    assert_eq!(seen, all);
}

/// Compaction keeps the latest state and turns older reads and watches into Compacted.
pub async fn compaction(store: &dyn Store) {
    let prefix = "/conformance/compact/";
    let key = format!("{prefix}k");
    let v1 = store.create(&key, bytes("1")).await.unwrap();
    let gone = store
        .create(&format!("{prefix}gone"), bytes("g"))
        .await
        .unwrap();
    let v2 = store.update(&key, bytes("2"), None).await.unwrap();
    store.delete(&gone.key, None).await.unwrap();
    let v3 = store.update(&key, bytes("3"), None).await.unwrap();
    let v4 = store.update(&key, bytes("4"), None).await.unwrap();

    store.compact(v3.mod_revision).await.unwrap();

    assert_eq!(store.get(&key).await.unwrap(), Some(v4.clone()));
    let at = |revision| ListOptions {
        revision: Some(revision),
        ..Default::default()
    };
    let snap = store.list(prefix, at(v3.mod_revision)).await.unwrap();
    assert_eq!(
        snap.items,
        vec![v3.clone()],
        "the compaction point stays readable"
    );
    let err = store.list(prefix, at(v1.mod_revision)).await.unwrap_err();
    assert!(err.is_compacted(), "list below the compaction point: {err}");
    let err = store
        .watch(prefix, v1.mod_revision)
        .await
        .err()
        .expect("watch from v1");
    assert!(
        err.is_compacted(),
        "watch below the compaction point: {err}"
    );
    assert_eq!(err.http_status(), 410);

    let mut w = store.watch(prefix, v3.mod_revision).await.unwrap();
    let ev = next_event(&mut w).await.unwrap();
    assert_eq!((ev.kv, ev.prev_kv), (v4.clone(), Some(v3.clone())));

    let err = store.compact(v2.mod_revision).await.unwrap_err();
    assert!(err.is_compacted(), "compacting backwards: {err}");

    // The latest state survives a compaction at the head.
    let head = store.current_revision().await.unwrap();
    store.compact(head).await.unwrap();
    let latest = store.list(prefix, ListOptions::default()).await.unwrap();
    assert_eq!(latest.items, vec![v4]);
    let v5 = store.update(&key, bytes("5"), None).await.unwrap();
    let mut w = store.watch(prefix, head).await.unwrap();
    assert_eq!(next_event(&mut w).await.unwrap().kv, v5);
}

//! The storage conformance suite on a real etcd (Debian's etcd-server at /usr/bin/etcd),
//! started per test on loopback with free ports and a private data dir.

use std::sync::Arc;

const ETCDCTL: &str = "/usr/bin/etcdctl";
use std::time::Instant;

use anyhow::Context;
use oxlet_controlplane::storage::cacher::{Cacher, CacherConfig};
use oxlet_controlplane::storage::conformance::conformance;
use oxlet_controlplane::storage::etcd::EtcdStore;
use oxlet_controlplane::storage::Store;

/// A private etcd with a store connected to it.
struct Etcd(oxlet_e2e::etcd::Etcd);

impl Etcd {
    async fn start() -> anyhow::Result<Etcd> {
        Ok(Etcd(
            tokio::task::spawn_blocking(oxlet_e2e::etcd::Etcd::start).await??,
        ))
    }

    async fn store(&self) -> anyhow::Result<EtcdStore> {
        Ok(EtcdStore::connect(&[self.0.endpoint().to_string()], "").await?)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_conformance() -> anyhow::Result<()> {
    let etcd = Etcd::start().await?;
    conformance(Arc::new(etcd.store().await?)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cacher_over_etcd_conformance() -> anyhow::Result<()> {
    let etcd = Etcd::start().await?;
    let store: Arc<dyn Store> = Arc::new(etcd.store().await?);
    let cacher = Cacher::new(store, "/", CacherConfig::default()).await?;
    conformance(Arc::new(cacher)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_sees_the_registry_keys() -> anyhow::Result<()> {
    let etcd = Etcd::start().await?;
    let store = etcd.store().await?;
    store
        .create("/registry/pods/default/web", br#"{"kind":"Pod"}"#.to_vec())
        .await?;
    store
        .create(
            "/registry/deployments/default/web",
            br#"{"kind":"Deployment"}"#.to_vec(),
        )
        .await?;
    let out = tokio::process::Command::new(ETCDCTL)
        .env("ETCDCTL_API", "3")
        .args([
            format!("--endpoints={}", etcd.0.endpoint()).as_str(),
            "get",
            "/registry",
            "--prefix",
            "--keys-only",
        ])
        .output()
        .await
        .context("run etcdctl")?;
    assert!(
        out.status.success(),
        "etcdctl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keys: Vec<String> = String::from_utf8(out.stdout)?
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    assert_eq!(
        keys,
        [
            "/registry/deployments/default/web",
            "/registry/pods/default/web"
        ]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_key_prefix_is_applied_and_stripped() -> anyhow::Result<()> {
    let etcd = Etcd::start().await?;
    let plain = etcd.store().await?;
    let prefixed = EtcdStore::connect(&[etcd.0.endpoint().to_string()], "/oxlet").await?;
    let kv = prefixed
        .create("/registry/pods/default/web", b"x".to_vec())
        .await?;
    assert_eq!(kv.key, "/registry/pods/default/web");
    let raw = plain.get("/oxlet/registry/pods/default/web").await?;
    assert_eq!(raw.map(|kv| kv.value), Some(b"x".to_vec()));
    let listed = prefixed.list("/registry/", Default::default()).await?;
    assert_eq!(listed.items, vec![kv]);
    Ok(())
}

/// Creates/s for 10,000 × 1 KiB creates from 16 writers:
/// `cargo test --release -p oxlet-controlplane --test storage_etcd -- --ignored --nocapture bench`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, run by hand"]
async fn bench_etcd_creates() -> anyhow::Result<()> {
    const TOTAL: usize = 10_000;
    const WRITERS: usize = 16;
    let etcd = Etcd::start().await?;
    let store = Arc::new(etcd.store().await?);
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
    let rate = TOTAL as f64 / start.elapsed().as_secs_f64();
    println!("etcd: {rate:.0} creates/s (10000 x 1 KiB, 16 writers)");
    Ok(())
}

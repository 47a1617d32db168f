//! The storage conformance suite on a real etcd (Debian's etcd-server at /usr/bin/etcd),
//! started per test on loopback with free ports and a private data dir.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use oxlet_controlplane::storage::cacher::{Cacher, CacherConfig};
use oxlet_controlplane::storage::conformance::conformance;
use oxlet_controlplane::storage::etcd::EtcdStore;
use oxlet_controlplane::storage::Store;

const ETCD: &str = "/usr/bin/etcd";
const ETCDCTL: &str = "/usr/bin/etcdctl";

/// A private etcd; killed (by PID) and its data dir removed on drop, even when a test fails.
struct Etcd {
    child: Child,
    endpoint: String,
    // Dropped after the kill: the process no longer writes into it.
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Etcd {
    async fn start() -> anyhow::Result<Etcd> {
        if !std::path::Path::new(ETCD).exists() {
            bail!("{ETCD} missing: install Debian's etcd-server (scripts/setup.sh)");
        }
        let dir = tempfile::tempdir()?;
        let client = format!("http://127.0.0.1:{}", free_port()?);
        let peer = format!("http://127.0.0.1:{}", free_port()?);
        let log = std::fs::File::create(dir.path().join("etcd.log"))?;
        let child = Command::new(ETCD)
            .arg("--name=test")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .arg("--initial-cluster-state=new")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("start etcd")?;
        let mut etcd = Etcd {
            child,
            endpoint: client,
            _dir: dir,
        };
        etcd.wait_ready().await?;
        Ok(etcd)
    }

    /// Polls until etcd answers a read; fails with the last error and etcd's log after 60 s.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                last = format!("etcd exited: {status}");
                break;
            }
            match self.store().await {
                Ok(store) => match store.current_revision().await {
                    Ok(_) => return Ok(()),
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = std::fs::read_to_string(self._dir.path().join("etcd.log")).unwrap_or_default();
        bail!("etcd at {} not ready: {last}\n{log}", self.endpoint)
    }

    async fn store(&self) -> anyhow::Result<EtcdStore> {
        Ok(EtcdStore::connect(std::slice::from_ref(&self.endpoint), "").await?)
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
            format!("--endpoints={}", etcd.endpoint).as_str(),
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
    let prefixed = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint), "/oxlet").await?;
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

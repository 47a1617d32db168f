//! The volume manager end to end on a temporary root (these tests mount tmpfs and bind mounts,
//! so they need root, as the kubelet does).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use k8s_openapi::ByteString;
use serde_json::json;

use super::mount::{mount_table, unmount_all_under};
use super::*;
use crate::fieldpath::NodeAllocatable;

#[derive(Debug, Clone, PartialEq)]
struct TokenCall {
    namespace: String,
    service_account: String,
    audiences: Vec<String>,
    expiration_seconds: i64,
    pod_name: String,
    pod_uid: String,
}

#[derive(Default)]
struct FakeSource {
    config_maps: Mutex<HashMap<(String, String), ConfigMap>>,
    secrets: Mutex<HashMap<(String, String), Secret>>,
    token_calls: Mutex<Vec<TokenCall>>,
}

impl FakeSource {
    fn put_cm(&self, ns: &str, name: &str, data: &[(&str, &str)]) {
        let cm = ConfigMap {
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        };
        self.config_maps
            .lock()
            .expect("lock")
            .insert((ns.into(), name.into()), cm);
    }

    fn put_secret(&self, ns: &str, name: &str, data: &[(&str, &[u8])]) {
        let s = Secret {
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                    .collect(),
            ),
            ..Default::default()
        };
        self.secrets
            .lock()
            .expect("lock")
            .insert((ns.into(), name.into()), s);
    }

    fn token_calls(&self) -> Vec<TokenCall> {
        self.token_calls.lock().expect("lock").clone()
    }
}

#[async_trait]
impl VolumeSource for FakeSource {
    async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, VolumeError> {
        Ok(self
            .config_maps
            .lock()
            .expect("lock")
            .get(&(ns.into(), name.into()))
            .cloned())
    }

    async fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, VolumeError> {
        Ok(self
            .secrets
            .lock()
            .expect("lock")
            .get(&(ns.into(), name.into()))
            .cloned())
    }

    async fn service_account_token(
        &self,
        namespace: &str,
        service_account: &str,
        audiences: Vec<String>,
        expiration_seconds: i64,
        pod_name: &str,
        pod_uid: &str,
    ) -> Result<(String, jiff::Timestamp), VolumeError> {
        let mut calls = self.token_calls.lock().expect("lock");
        calls.push(TokenCall {
            namespace: namespace.into(),
            service_account: service_account.into(),
            audiences,
            expiration_seconds,
            pod_name: pod_name.into(),
            pod_uid: pod_uid.into(),
        });
        let expiry = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(expiration_seconds);
        Ok((format!("token-{}", calls.len()), expiry))
    }
}

/// A kubelet root under /tmp whose mounts are detached and files removed even when a test fails.
struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    fn new() -> Self {
        assert!(
            fs::metadata("/proc/self").map(|m| m.uid()).ok() == Some(0),
            "volume manager tests need root (tmpfs and bind mounts)"
        );
        Self {
            dir: tempfile::Builder::new()
                .prefix("oxlet-volumes-")
                .tempdir_in("/tmp")
                .expect("tempdir"),
        }
    }

    fn path(&self) -> PathBuf {
        fs::canonicalize(self.dir.path()).expect("canonical root")
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        if let Ok(p) = fs::canonicalize(self.dir.path()) {
            let _ = unmount_all_under(&p);
        }
    }
}

fn manager(root: &Root) -> (VolumeManager, Arc<FakeSource>) {
    let src = Arc::new(FakeSource::default());
    (VolumeManager::new(&root.path(), src.clone()), src)
}

fn pod(uid: &str, spec: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "web-0", "namespace": "ns", "uid": uid,
                     "labels": {"app": "web", "tier": "front"},
                     "annotations": {"note": "hi"}},
        "spec": spec,
    }))
    .expect("test pod")
}

fn node() -> NodeAllocatable {
    NodeAllocatable {
        cpu_milli: 4000,
        memory_bytes: 8 << 30,
        ephemeral_storage_bytes: 100 << 30,
    }
}

fn mount_type(path: &Path) -> Option<(String, String)> {
    mount_table()
        .expect("mountinfo")
        .into_iter()
        .rev()
        .find(|m| m.mount_point == path)
        .map(|m| (m.fs_type, m.super_options))
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).expect("stat").permissions().mode() & 0o7777
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

fn assert_gone(root: &Root, uid: &str) {
    let dir = root.path().join("pods").join(uid);
    assert!(!dir.exists(), "{} still exists", dir.display());
    let left: Vec<_> = mount_table()
        .expect("mountinfo")
        .into_iter()
        .filter(|m| m.mount_point.starts_with(&dir))
        .collect();
    assert!(left.is_empty(), "mounts left: {left:?}");
}

#[tokio::test]
async fn empty_dir_on_disk_and_in_memory() {
    let root = Root::new();
    let (vm, _) = manager(&root);
    let p = pod(
        "u-empty",
        json!({"containers": [], "volumes": [
            {"name": "scratch", "emptyDir": {}},
            {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
            {"name": "mem2", "emptyDir": {"medium": "Memory"}},
        ]}),
    );
    let vols = vm.setup(&p, &node()).await.expect("setup");
    let base = root
        .path()
        .join("pods/u-empty/volumes/kubernetes.io~empty-dir");
    assert_eq!(
        vols.volume_path("scratch"),
        Some(base.join("scratch").as_path())
    );
    assert_eq!(mode(&base.join("scratch")), 0o777);
    assert_eq!(mount_type(&base.join("scratch")), None);
    let (fs_type, opts) = mount_type(&base.join("mem")).expect("mem is a mount");
    assert_eq!(fs_type, "tmpfs");
    assert!(opts.contains("size=65536k"), "{opts}");
    assert_eq!(mount_type(&base.join("mem2")).expect("mount").0, "tmpfs");
    fs::write(base.join("mem/data"), "x").expect("write into tmpfs");

    // Idempotent: a second setup mounts nothing new.
    let before = mount_table().expect("mountinfo").len();
    vm.setup(&p, &node()).await.expect("setup again");
    assert_eq!(mount_table().expect("mountinfo").len(), before);
    assert_eq!(read(&base.join("mem/data")), "x");

    vm.teardown("u-empty").await.expect("teardown");
    assert_gone(&root, "u-empty");
    vm.teardown("u-empty")
        .await
        .expect("teardown is idempotent");
}

#[tokio::test]
async fn hugepages_and_unsupported_types_are_clear_errors() {
    let root = Root::new();
    let (vm, _) = manager(&root);
    let p = pod(
        "u-hp",
        json!({"containers": [], "volumes": [
            {"name": "hp", "emptyDir": {"medium": "HugePages"}},
            {"name": "ok", "emptyDir": {}},
        ]}),
    );
    let e = vm.setup(&p, &node()).await.expect_err("hugepages");
    assert_eq!(
        e.to_string(),
        "MountVolume.SetUp failed for volume \"hp\" : emptyDir medium HugePages is not \
         supported by oxlet (no hugetlbfs support)"
    );
    assert!(!e.is_retryable());
    let p = pod(
        "u-pvc",
        json!({"containers": [], "volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": "c"}},
        ]}),
    );
    let e = vm.setup(&p, &node()).await.expect_err("pvc");
    assert_eq!(
        e.to_string(),
        "MountVolume.SetUp failed for volume \"data\" : volume type persistentVolumeClaim is \
         not supported by oxlet"
    );
    vm.cleanup_orphans(&HashSet::new()).await.expect("cleanup");
}

#[tokio::test]
async fn config_map_items_modes_optional_and_atomic_update() {
    let root = Root::new();
    let (vm, src) = manager(&root);
    src.put_cm(
        "ns",
        "app",
        &[("a.conf", "A1"), ("b.conf", "B1"), ("c", "C1")],
    );
    let p = pod(
        "u-cm",
        json!({"containers": [], "volumes": [
            {"name": "all", "configMap": {"name": "app", "defaultMode": 0o600}},
            {"name": "some", "configMap": {"name": "app", "items": [
                {"key": "a.conf", "path": "conf/a", "mode": 0o640},
                {"key": "b.conf", "path": "b"},
            ]}},
            {"name": "opt", "configMap": {"name": "absent", "optional": true}},
            {"name": "optkey", "configMap": {"name": "app", "optional": true,
                "items": [{"key": "nope", "path": "n"}, {"key": "c", "path": "c"}]}},
        ]}),
    );
    let vols = vm.setup(&p, &node()).await.expect("setup");
    let dir = |v: &str| vols.volume_path(v).expect("volume").to_path_buf();
    assert!(dir("all").ends_with("pods/u-cm/volumes/kubernetes.io~configmap/all"));
    assert_eq!(read(&dir("all").join("a.conf")), "A1");
    assert_eq!(mode(&dir("all").join("a.conf")), 0o600);
    assert_eq!(
        fs::read_link(dir("all").join("a.conf")).expect("symlink"),
        Path::new("..data/a.conf")
    );
    assert_eq!(read(&dir("some").join("conf/a")), "A1");
    assert_eq!(mode(&dir("some").join("conf/a")), 0o640);
    assert_eq!(mode(&dir("some").join("b")), 0o644);
    assert!(!dir("some").join("c").exists());
    let opt: Vec<_> = fs::read_dir(dir("opt"))
        .expect("opt dir")
        .map(|e| e.expect("entry").file_name())
        .filter(|n| !n.to_string_lossy().starts_with(".."))
        .collect();
    assert!(
        opt.is_empty(),
        "optional missing configMap gives an empty volume: {opt:?}"
    );
    assert_eq!(read(&dir("optkey").join("c")), "C1");
    assert!(!dir("optkey").join("n").exists());
    // Disk-backed, like upstream's configMap volumes.
    assert_eq!(mount_type(&dir("all")), None);

    // A reader holding files of the current version.
    let old_ts = fs::read_link(dir("all").join("..data")).expect("..data");
    let held = fs::File::open(dir("all").join("a.conf")).expect("open");

    // Unchanged object: nothing is rewritten.
    vm.setup(&p, &node()).await.expect("resync");
    assert_eq!(
        fs::read_link(dir("all").join("..data")).expect("..data"),
        old_ts
    );

    src.put_cm("ns", "app", &[("a.conf", "A2"), ("b.conf", "B1")]);
    let vols2 = vm.setup(&p, &node()).await.expect("update");
    assert!(
        vols2.refresh_errors().is_empty(),
        "{:?}",
        vols2.refresh_errors()
    );
    let new_ts = fs::read_link(dir("all").join("..data")).expect("..data");
    assert_ne!(old_ts, new_ts);
    assert!(!dir("all").join(&old_ts).exists(), "old version removed");
    assert_eq!(read(&dir("all").join("a.conf")), "A2");
    assert!(
        fs::symlink_metadata(dir("all").join("c")).is_err(),
        "deleted key pruned"
    );
    assert!(
        !dir("optkey").join("c").exists(),
        "optional item gone with its key"
    );
    assert_eq!(
        std::io::read_to_string(held).expect("held"),
        "A1",
        "an open file keeps the old version"
    );

    // A key an item needs disappears: the refresh fails, the old contents stay, setup succeeds.
    src.put_cm("ns", "app", &[("a.conf", "A3")]);
    let vols3 = vm
        .setup(&p, &node())
        .await
        .expect("refresh with a missing key");
    assert_eq!(vols3.refresh_errors().len(), 1);
    assert_eq!(
        vols3.refresh_errors()[0].to_string(),
        "MountVolume.SetUp failed for volume \"some\" : configmap references non-existent \
         config key: b.conf"
    );
    assert_eq!(read(&dir("all").join("a.conf")), "A3");
    assert_eq!(read(&dir("some").join("b")), "B1");

    vm.teardown("u-cm").await.expect("teardown");
    assert_gone(&root, "u-cm");
}

#[tokio::test]
async fn missing_config_map_is_a_failed_mount() {
    let root = Root::new();
    let (vm, _) = manager(&root);
    let p = pod(
        "u-miss",
        json!({"containers": [], "volumes": [
            {"name": "cfg", "configMap": {"name": "x"}},
            {"name": "sec", "secret": {"secretName": "s"}},
        ]}),
    );
    let e = vm.setup(&p, &node()).await.expect_err("missing");
    let msgs: Vec<String> = e.failures().iter().map(|f| f.to_string()).collect();
    assert_eq!(
        msgs,
        vec![
            "MountVolume.SetUp failed for volume \"cfg\" : configmap \"x\" not found",
            "MountVolume.SetUp failed for volume \"sec\" : secret \"s\" not found",
        ]
    );
    assert!(e.is_retryable(), "the object may still be created");
    vm.teardown("u-miss").await.expect("teardown");
    assert_gone(&root, "u-miss");
}

#[tokio::test]
async fn secret_volume_is_tmpfs_and_teardown_survives_busy_files() {
    let root = Root::new();
    let (vm, src) = manager(&root);
    src.put_secret(
        "ns",
        "creds",
        &[("password", b"hunter2"), ("bin", &[0, 255])],
    );
    let p = pod(
        "u-sec",
        json!({"containers": [], "volumes": [
            {"name": "creds", "secret": {"secretName": "creds", "defaultMode": 0o400,
                "items": [{"key": "password", "path": "pw"}]}},
        ]}),
    );
    let vols = vm.setup(&p, &node()).await.expect("setup");
    let dir = vols.volume_path("creds").expect("path").to_path_buf();
    assert!(dir.ends_with("volumes/kubernetes.io~secret/creds"));
    assert_eq!(mount_type(&dir).expect("mounted").0, "tmpfs");
    assert_eq!(read(&dir.join("pw")), "hunter2");
    assert_eq!(mode(&dir.join("pw")), 0o400);
    assert!(!dir.join("bin").exists());

    // Busy: an open file on the tmpfs and a process whose cwd is inside it.
    let _busy = fs::File::open(dir.join("pw")).expect("open");
    let mut child = std::process::Command::new("sleep")
        .arg("600")
        .current_dir(&dir)
        .spawn()
        .expect("spawn sleep");
    let r = vm.teardown("u-sec").await;
    let _ = child.kill();
    let _ = child.wait();
    r.expect("teardown with busy files");
    assert_gone(&root, "u-sec");
}

#[tokio::test]
async fn downward_api_volume() {
    let root = Root::new();
    let (vm, _) = manager(&root);
    let p = pod(
        "u-dapi",
        json!({"containers": [{"name": "app", "resources": {"limits": {"memory": "64Mi"}}}],
        "volumes": [{"name": "info", "downwardAPI": {"defaultMode": 0o444, "items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}, "mode": 0o400},
            {"path": "note", "fieldRef": {"fieldPath": "metadata.annotations['note']"}},
            {"path": "mem", "resourceFieldRef": {"containerName": "app",
                "resource": "limits.memory", "divisor": "1Mi"}},
            {"path": "cpu", "resourceFieldRef": {"containerName": "app",
                "resource": "limits.cpu"}},
        ]}}]}),
    );
    let vols = vm.setup(&p, &node()).await.expect("setup");
    let dir = vols.volume_path("info").expect("path");
    assert!(dir.ends_with("volumes/kubernetes.io~downward-api/info"));
    assert_eq!(read(&dir.join("labels")), "app=\"web\"\ntier=\"front\"");
    assert_eq!(read(&dir.join("name")), "web-0");
    assert_eq!(mode(&dir.join("name")), 0o400);
    assert_eq!(mode(&dir.join("labels")), 0o444);
    assert_eq!(read(&dir.join("note")), "hi");
    assert_eq!(read(&dir.join("mem")), "64");
    assert_eq!(read(&dir.join("cpu")), "4", "no limit: node allocatable");

    // Labels change in the API: the next sync rewrites the file.
    let mut p2 = p.clone();
    p2.metadata
        .labels
        .as_mut()
        .expect("labels")
        .insert("tier".into(), "back".into());
    vm.setup(&p2, &node()).await.expect("resync");
    assert_eq!(read(&dir.join("labels")), "app=\"web\"\ntier=\"back\"");
    vm.teardown("u-dapi").await.expect("teardown");
}

#[tokio::test]
async fn projected_kube_api_access_volume() {
    let root = Root::new();
    let (vm, src) = manager(&root);
    src.put_cm("ns", "kube-root-ca.crt", &[("ca.crt", "CA1")]);
    src.put_secret("ns", "extra", &[("k", b"v")]);
    let p = pod(
        "u-proj",
        json!({"serviceAccountName": "builder", "containers": [], "volumes": [
            {"name": "kube-api-access-abcde", "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt",
                    "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace",
                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ]}},
            {"name": "mixed", "projected": {"sources": [
                {"secret": {"name": "extra", "items": [{"key": "k", "path": "sec/k", "mode": 0o400}]}},
                {"serviceAccountToken": {"audience": "vault", "path": "vault-token",
                    "expirationSeconds": 60}},
                {"configMap": {"name": "nope", "optional": true}},
            ]}},
        ]}),
    );
    let vols = vm.setup(&p, &node()).await.expect("setup");
    let dir = vols
        .volume_path("kube-api-access-abcde")
        .expect("path")
        .to_path_buf();
    assert!(dir.ends_with("volumes/kubernetes.io~projected/kube-api-access-abcde"));
    assert_eq!(mount_type(&dir).expect("mounted").0, "tmpfs");
    assert_eq!(read(&dir.join("token")), "token-1");
    assert_eq!(read(&dir.join("ca.crt")), "CA1");
    assert_eq!(read(&dir.join("namespace")), "ns");
    assert_eq!(mode(&dir.join("token")), 0o644);
    let mixed = vols.volume_path("mixed").expect("mixed").to_path_buf();
    assert_eq!(read(&mixed.join("sec/k")), "v");
    assert_eq!(mode(&mixed.join("sec/k")), 0o400);
    assert_eq!(read(&mixed.join("vault-token")), "token-2");

    let calls = src.token_calls();
    assert_eq!(
        calls,
        vec![
            TokenCall {
                namespace: "ns".into(),
                service_account: "builder".into(),
                audiences: vec![],
                expiration_seconds: 3607,
                pod_name: "web-0".into(),
                pod_uid: "u-proj".into(),
            },
            TokenCall {
                namespace: "ns".into(),
                service_account: "builder".into(),
                audiences: vec!["vault".into()],
                expiration_seconds: 600,
                pod_name: "web-0".into(),
                pod_uid: "u-proj".into(),
            },
        ]
    );

    // Resync: fresh tokens are reused, the CA update is written.
    src.put_cm("ns", "kube-root-ca.crt", &[("ca.crt", "CA2")]);
    vm.setup(&p, &node()).await.expect("resync");
    assert_eq!(src.token_calls().len(), 2);
    assert_eq!(read(&dir.join("ca.crt")), "CA2");
    assert_eq!(read(&dir.join("token")), "token-1");

    vm.teardown("u-proj").await.expect("teardown");
    assert_gone(&root, "u-proj");
}

#[tokio::test]
async fn projected_errors() {
    let root = Root::new();
    let (vm, _) = manager(&root);
    let p = pod(
        "u-projerr",
        json!({"containers": [], "volumes": [
            {"name": "ctb", "projected": {"sources": [
                {"clusterTrustBundle": {"name": "b", "path": "b.pem"}},
            ]}},
        ]}),
    );
    let e = vm.setup(&p, &node()).await.expect_err("ctb");
    assert_eq!(
        e.to_string(),
        "MountVolume.SetUp failed for volume \"ctb\" : clusterTrustBundle projections are not \
         supported by oxlet"
    );
    assert!(!e.is_retryable());
    vm.teardown("u-projerr").await.expect("teardown");
    assert_gone(&root, "u-projerr");
}

#[tokio::test]
async fn host_path_type_checks() {
    let root = Root::new();
    let (vm, _) = manager(&root);
    let host = root.path().join("host");
    fs::create_dir_all(host.join("dir")).expect("mkdir");
    fs::write(host.join("file"), "f").expect("write");
    let sock_path = host.join("sock");
    let _sock = std::os::unix::net::UnixListener::bind(&sock_path).expect("socket");
    let h = |p: &Path| p.display().to_string();
    let good = pod(
        "u-host",
        json!({"containers": [], "volumes": [
            {"name": "a", "hostPath": {"path": h(&host.join("new/nested")), "type": "DirectoryOrCreate"}},
            {"name": "b", "hostPath": {"path": h(&host.join("dir")), "type": "Directory"}},
            {"name": "c", "hostPath": {"path": h(&host.join("newfile")), "type": "FileOrCreate"}},
            {"name": "d", "hostPath": {"path": h(&host.join("file")), "type": "File"}},
            {"name": "e", "hostPath": {"path": h(&sock_path), "type": "Socket"}},
            {"name": "f", "hostPath": {"path": "/dev/null", "type": "CharDevice"}},
            {"name": "g", "hostPath": {"path": h(&host.join("absent")), "type": ""}},
            {"name": "i", "hostPath": {"path": h(&host.join("absent2"))}},
        ]}),
    );
    let vols = vm.setup(&good, &node()).await.expect("setup");
    assert!(host.join("new/nested").is_dir());
    assert_eq!(mode(&host.join("new/nested")) & 0o755, 0o755);
    assert!(host.join("newfile").is_file());
    assert_eq!(mode(&host.join("newfile")) & 0o644, 0o644);
    assert!(!host.join("absent").exists(), "no type: nothing created");
    assert_eq!(vols.volume_path("d"), Some(host.join("file").as_path()));

    let bad = pod(
        "u-host2",
        json!({"containers": [], "volumes": [
            {"name": "a", "hostPath": {"path": h(&host.join("file")), "type": "Directory"}},
            {"name": "b", "hostPath": {"path": h(&host.join("dir")), "type": "File"}},
            {"name": "c", "hostPath": {"path": "/dev/null", "type": "BlockDevice"}},
            {"name": "d", "hostPath": {"path": h(&host.join("missing")), "type": "Socket"}},
            {"name": "e", "hostPath": {"path": h(&host.join("nodir/f")), "type": "FileOrCreate"}},
        ]}),
    );
    let e = vm.setup(&bad, &node()).await.expect_err("type mismatch");
    let msgs: Vec<String> = e.failures().iter().map(|f| f.to_string()).collect();
    assert_eq!(msgs.len(), 5, "{msgs:?}");
    assert_eq!(
        msgs[0],
        format!(
            "MountVolume.SetUp failed for volume \"a\" : hostPath type check failed: {} is not a directory",
            h(&host.join("file"))
        )
    );
    assert!(msgs[1].ends_with("is not a file"), "{}", msgs[1]);
    assert!(
        msgs[2].ends_with("/dev/null is not a block device"),
        "{}",
        msgs[2]
    );
    assert!(msgs[3].ends_with("doesn't exist"), "{}", msgs[3]);
    assert!(
        msgs[4].contains("create hostPath file"),
        "FileOrCreate makes no parents: {}",
        msgs[4]
    );
    vm.teardown("u-host").await.expect("teardown");
    vm.teardown("u-host2").await.expect("teardown");
    assert!(
        host.join("file").is_file(),
        "teardown never touches host paths"
    );
}

fn container(v: serde_json::Value) -> Container {
    serde_json::from_value(v).expect("container")
}

#[tokio::test]
async fn container_mounts_subpaths_hosts_and_termination_log() {
    let root = Root::new();
    let (vm, src) = manager(&root);
    src.put_cm("ns", "app", &[("nginx.conf", "conf")]);
    let p = pod(
        "u-mnt",
        json!({"containers": [], "volumes": [
            {"name": "data", "emptyDir": {}},
            {"name": "cfg", "configMap": {"name": "app"}},
        ]}),
    );
    let vols = vm.setup(&p, &node()).await.expect("setup");
    let data = vols.volume_path("data").expect("data").to_path_buf();
    let pod_dir = vm.pod_dir("u-mnt");
    let c = container(json!({
        "name": "app",
        "volumeMounts": [
            {"name": "data", "mountPath": "/data"},
            {"name": "data", "mountPath": "/logs", "subPathExpr": "logs/$(POD_NAME)"},
            {"name": "cfg", "mountPath": "/etc/nginx/nginx.conf", "subPath": "nginx.conf"},
            {"name": "data", "mountPath": "/ro", "readOnly": true, "mountPropagation": "HostToContainer"},
        ],
    }));
    let env = BTreeMap::from([("POD_NAME".to_string(), "web-0".to_string())]);

    // No hosts file yet: no /etc/hosts mount.
    let mounts = vols.container_mounts(&c, &env, 0).expect("mounts");
    assert!(!mounts.iter().any(|m| m.container_path == "/etc/hosts"));
    assert_eq!(mounts.len(), 5, "{mounts:?}");
    let m = |path: &str| {
        mounts
            .iter()
            .find(|m| m.container_path == path)
            .unwrap_or_else(|| panic!("no mount at {path}: {mounts:?}"))
            .clone()
    };
    assert_eq!(m("/data").host_path, data.display().to_string());
    assert!(!m("/data").readonly);
    // subPathExpr: created in the volume, bind-mounted under volume-subpaths.
    assert!(data.join("logs/web-0").is_dir());
    assert_eq!(mode(&data.join("logs/web-0")), 0o777);
    let logs = m("/logs");
    assert_eq!(
        logs.host_path,
        pod_dir
            .join("volume-subpaths/data/app/1")
            .display()
            .to_string()
    );
    fs::write(data.join("logs/web-0/x"), "through").expect("write");
    assert_eq!(read(&Path::new(&logs.host_path).join("x")), "through");
    // A configMap key by subPath: a file bind, read-only because configMaps always are.
    let conf = m("/etc/nginx/nginx.conf");
    assert_eq!(read(Path::new(&conf.host_path)), "conf");
    assert!(conf.readonly);
    assert!(mount_type(Path::new(&conf.host_path)).is_some());
    let ro = m("/ro");
    assert!(ro.readonly);
    assert_eq!(
        ro.propagation,
        oxlet_cri::api::MountPropagation::PropagationHostToContainer as i32
    );
    // Termination log: a fresh empty 0666 file per start.
    let term = m("/dev/termination-log");
    let term_path = PathBuf::from(&term.host_path);
    assert_eq!(
        term_path.parent(),
        Some(pod_dir.join("containers/app").as_path())
    );
    let name = term_path
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let (count, random) = name.split_once('-').expect("<count>-<hex>");
    assert_eq!(count, "00000000", "{name}");
    assert!(
        random.len() == 8 && random.chars().all(|c| c.is_ascii_hexdigit()),
        "{name}"
    );
    assert_eq!(mode(&term_path), 0o666);
    assert_eq!(fs::metadata(&term_path).expect("stat").len(), 0);
    assert!(!term.readonly);

    // Same start again (a failed CreateContainer retried): same file and same subPath bind.
    let again = vols.container_mounts(&c, &env, 0).expect("mounts again");
    assert_eq!(again, mounts);

    // The hosts file, once written, is mounted; not when the container brings its own.
    vm.write_etc_hosts(&p, &["10.244.1.7".into()], "cluster.local")
        .expect("etc hosts");
    let mounts1 = vols.container_mounts(&c, &env, 1).expect("mounts");
    let hosts = mounts1
        .iter()
        .find(|m| m.container_path == "/etc/hosts")
        .expect("hosts mount");
    assert_eq!(
        hosts.host_path,
        pod_dir.join("etc-hosts").display().to_string()
    );
    assert!(read(&pod_dir.join("etc-hosts")).ends_with("10.244.1.7\tweb-0\n"));
    let own = container(json!({"name": "own", "volumeMounts": [
        {"name": "cfg", "mountPath": "/etc/hosts", "subPath": "nginx.conf"}]}));
    let mo = vols.container_mounts(&own, &env, 0).expect("own hosts");
    assert_eq!(
        mo.iter()
            .filter(|m| m.container_path == "/etc/hosts")
            .count(),
        1
    );
    assert!(mo[0].host_path.contains("volume-subpaths/cfg/own/0"));

    // A restart (count 1) got a new termination file; the message is read from the newest.
    let term1 = mounts1
        .iter()
        .find(|m| m.container_path == "/dev/termination-log")
        .expect("term")
        .host_path
        .clone();
    assert_ne!(term1, term.host_path);
    fs::write(&term_path, "old message").expect("write old");
    assert_eq!(vm.termination_message("u-mnt", "app").as_deref(), Some(""));
    let long = format!("{}{}", "x".repeat(100), "y".repeat(4096));
    fs::write(&term1, &long).expect("write new");
    assert_eq!(
        vm.termination_message("u-mnt", "app"),
        Some("y".repeat(4096)),
        "the last 4096 bytes"
    );
    // After a kubelet restart (no memory), the newest file still wins.
    let vm2 = VolumeManager::new(&root.path(), src.clone());
    assert_eq!(
        vm2.termination_message("u-mnt", "app"),
        Some("y".repeat(4096))
    );
    assert_eq!(vm2.termination_message("u-mnt", "other"), None);

    // No termination mount when the path is empty.
    let quiet = container(json!({"name": "quiet", "terminationMessagePath": ""}));
    let mq = vols.container_mounts(&quiet, &env, 0).expect("quiet");
    assert_eq!(
        mq.iter()
            .map(|m| m.container_path.as_str())
            .collect::<Vec<_>>(),
        vec!["/etc/hosts"]
    );

    // Teardown detaches the subPath binds too, with a file under one still open.
    let _busy = fs::File::open(&conf.host_path).expect("open bind");
    vm.teardown("u-mnt").await.expect("teardown");
    assert_gone(&root, "u-mnt");
}

#[tokio::test]
async fn subpath_errors_and_symlink_escape() {
    let root = Root::new();
    let (vm, _) = manager(&root);
    let p = pod(
        "u-esc",
        json!({"containers": [], "volumes": [{"name": "data", "emptyDir": {}}]}),
    );
    let vols = vm.setup(&p, &node()).await.expect("setup");
    let data = vols.volume_path("data").expect("data").to_path_buf();
    // What a malicious container could plant in its writable volume.
    std::os::unix::fs::symlink("/etc", data.join("evil")).expect("symlink");
    std::os::unix::fs::symlink("../../../../../../..", data.join("up")).expect("symlink");
    std::os::unix::fs::symlink("inside", data.join("ok-link")).expect("symlink");
    fs::create_dir(data.join("inside")).expect("mkdir");
    let env = BTreeMap::new();
    for (sub, want) in [
        ("evil", "resolves outside the volume"),
        ("evil/passwd", "resolves outside the volume"),
        ("up", "resolves outside the volume"),
        ("up/etc", "resolves outside the volume"),
        ("../x", "must not contain '..'"),
        ("/abs", "must not be an absolute path"),
    ] {
        let c = container(json!({"name": "c", "terminationMessagePath": "",
            "volumeMounts": [{"name": "data", "mountPath": "/x", "subPath": sub}]}));
        let e = vols.container_mounts(&c, &env, 0).expect_err(sub);
        assert!(e.to_string().contains(want), "{sub}: {e}");
        assert!(!e.is_retryable(), "{sub}: {e}");
    }
    let c = container(json!({"name": "c", "terminationMessagePath": "",
        "volumeMounts": [{"name": "data", "mountPath": "/x", "subPath": "ok-link"}]}));
    let m = vols
        .container_mounts(&c, &env, 0)
        .expect("symlink inside the volume");
    fs::write(data.join("inside/f"), "in").expect("write");
    assert_eq!(read(&Path::new(&m[0].host_path).join("f")), "in");

    let missing = container(json!({"name": "c", "volumeMounts": [
        {"name": "nope", "mountPath": "/x"}]}));
    assert_eq!(
        vols.container_mounts(&missing, &env, 0)
            .expect_err("unknown")
            .to_string(),
        "cannot find volume \"nope\" to mount into container \"c\""
    );
    let expr = container(json!({"name": "c", "volumeMounts": [
        {"name": "data", "mountPath": "/x", "subPathExpr": "$(UNSET)"}]}));
    assert_eq!(
        vols.container_mounts(&expr, &env, 0)
            .expect_err("unset")
            .to_string(),
        "missing value for UNSET"
    );
    let bidi = container(json!({"name": "c", "volumeMounts": [
        {"name": "data", "mountPath": "/x", "mountPropagation": "Bidirectional"}]}));
    assert!(vols
        .container_mounts(&bidi, &env, 0)
        .expect_err("bidirectional")
        .to_string()
        .contains("only to privileged containers"));
    let privileged = container(json!({"name": "c", "securityContext": {"privileged": true},
        "volumeMounts": [{"name": "data", "mountPath": "/x", "mountPropagation": "Bidirectional"}]}));
    let m = vols
        .container_mounts(&privileged, &env, 0)
        .expect("privileged");
    assert_eq!(
        m[0].propagation,
        oxlet_cri::api::MountPropagation::PropagationBidirectional as i32
    );
    // The host's /etc was not touched and teardown does not follow the planted links.
    vm.teardown("u-esc").await.expect("teardown");
    assert_gone(&root, "u-esc");
    assert!(Path::new("/etc/passwd").exists());
}

#[tokio::test]
async fn etc_hosts_content_and_host_network() {
    let root = Root::new();
    let node_hosts = root.path().join("node-hosts");
    fs::write(&node_hosts, "127.0.0.1\tlocalhost\n192.0.2.10\tnode1\n").expect("write");
    let src = Arc::new(FakeSource::default());
    let vm = VolumeManager::new(&root.path(), src).with_node_hosts_file(&node_hosts);
    let p = pod(
        "u-hosts",
        json!({"containers": [], "hostname": "db-1", "subdomain": "db",
               "hostAliases": [{"ip": "10.9.9.9", "hostnames": ["a.example", "b.example"]}]}),
    );
    vm.write_etc_hosts(
        &p,
        &["10.244.0.9".into(), "fd00::9".into()],
        "cluster.local",
    )
    .expect("write");
    let f = vm.pod_dir("u-hosts").join("etc-hosts");
    assert_eq!(
        read(&f),
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n\
         10.244.0.9\tdb-1.db.ns.svc.cluster.local\tdb-1\n\
         fd00::9\tdb-1.db.ns.svc.cluster.local\tdb-1\n\
         \n# Entries added by HostAliases.\n10.9.9.9\ta.example\tb.example\n"
    );
    assert_eq!(mode(&f), 0o644);
    // Rewritten in place: the inode a running container has mounted stays the same.
    let ino = fs::metadata(&f).expect("stat").ino();
    vm.write_etc_hosts(&p, &["10.244.0.10".into()], "cluster.local")
        .expect("rewrite");
    assert_eq!(fs::metadata(&f).expect("stat").ino(), ino);
    assert!(read(&f).contains("10.244.0.10\tdb-1.db.ns.svc.cluster.local\tdb-1\n"));
    assert!(!read(&f).contains("10.244.0.9"));

    let hn = pod(
        "u-hostnet",
        json!({"containers": [], "hostNetwork": true,
               "hostAliases": [{"ip": "10.9.9.9", "hostnames": ["a.example"]}]}),
    );
    vm.write_etc_hosts(&hn, &["192.0.2.10".into()], "cluster.local")
        .expect("hostNetwork");
    assert_eq!(
        read(&vm.pod_dir("u-hostnet").join("etc-hosts")),
        "127.0.0.1\tlocalhost\n192.0.2.10\tnode1\n\n# Entries added by HostAliases.\n10.9.9.9\ta.example\n"
    );
    vm.cleanup_orphans(&HashSet::new()).await.expect("cleanup");
    assert_gone(&root, "u-hosts");
    assert_gone(&root, "u-hostnet");
}

#[tokio::test]
async fn cleanup_orphans_keeps_live_pods() {
    let root = Root::new();
    let (vm, src) = manager(&root);
    src.put_secret("ns", "s", &[("k", b"v")]);
    let spec = json!({"containers": [], "volumes": [
        {"name": "s", "secret": {"secretName": "s"}}, {"name": "e", "emptyDir": {}}]});
    vm.setup(&pod("live", spec.clone()), &node())
        .await
        .expect("live");
    vm.setup(&pod("dead", spec), &node()).await.expect("dead");
    // A restarted kubelet knows only the live pod.
    let vm2 = VolumeManager::new(&root.path(), src);
    vm2.cleanup_orphans(&HashSet::from(["live".to_string()]))
        .await
        .expect("cleanup");
    assert_gone(&root, "dead");
    assert!(vm2.pod_dir("live").join("volumes").is_dir());
    assert!(mount_type(&vm2.pod_dir("live").join("volumes/kubernetes.io~secret/s")).is_some());
    vm2.teardown("live").await.expect("teardown");
    assert_gone(&root, "live");
    assert!(
        vm2.teardown("../etc").await.is_err(),
        "UIDs are single path elements"
    );
}

#[tokio::test]
async fn fs_group_ownership() {
    let root = Root::new();
    let (vm, src) = manager(&root);
    src.put_secret("ns", "s", &[("k", b"v")]);
    src.put_cm("ns", "kube-root-ca.crt", &[("ca.crt", "CA")]);
    let p = pod(
        "u-fsg",
        json!({"containers": [], "securityContext": {"fsGroup": 2000}, "volumes": [
            {"name": "e", "emptyDir": {}},
            {"name": "s", "secret": {"secretName": "s", "defaultMode": 0o400}},
            {"name": "t", "projected": {"sources": [
                {"serviceAccountToken": {"path": "token"}}]}},
        ]}),
    );
    let vols = vm.setup(&p, &node()).await.expect("setup");
    let e = vols.volume_path("e").expect("e");
    assert_eq!(fs::metadata(e).expect("stat").gid(), 2000);
    assert_eq!(mode(e), 0o2777);
    let s = vols.volume_path("s").expect("s").join("k");
    assert_eq!(fs::metadata(&s).expect("stat").gid(), 2000);
    assert_eq!(mode(&s), 0o440);
    let t = vols.volume_path("t").expect("t").join("token");
    assert_eq!(mode(&t), 0o640, "token 0600 then group-readable");
    vm.teardown("u-fsg").await.expect("teardown");
}

#[tokio::test]
async fn kube_volume_source_requests() {
    use axum::extract::Path as UrlPath;
    use axum::routing::{get, post};
    type Seen = Arc<Mutex<Vec<serde_json::Value>>>;
    let seen: Seen = Arc::default();
    let s2 = seen.clone();
    let app = axum::Router::new()
        .route(
            "/api/v1/namespaces/{ns}/configmaps/{name}",
            get(
                |UrlPath((ns, name)): UrlPath<(String, String)>| async move {
                    if name == "present" {
                        (
                            http::StatusCode::OK,
                            axum::Json(json!({"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": name, "namespace": ns}, "data": {"k": "v"}})),
                        )
                    } else {
                        (
                            http::StatusCode::NOT_FOUND,
                            axum::Json(json!({"apiVersion": "v1", "kind": "Status",
                            "status": "Failure", "reason": "NotFound", "code": 404,
                            "message": format!("configmaps \"{name}\" not found")})),
                        )
                    }
                },
            ),
        )
        .route(
            "/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token",
            post(move |axum::Json(body): axum::Json<serde_json::Value>| {
                let seen = s2.clone();
                async move {
                    seen.lock().expect("lock").push(body.clone());
                    let mut out = body;
                    out["status"] =
                        json!({"token": "jwt", "expirationTimestamp": "2030-01-01T00:00:00Z"});
                    axum::Json(out)
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let config = kube::Config::new(format!("http://{addr}").parse().expect("url"));
    let client = kube::Client::try_from(config).expect("client");
    let src = KubeVolumeSource::new(client);
    let cm = src.config_map("ns", "present").await.expect("get");
    assert_eq!(
        cm.and_then(|c| c.data).and_then(|d| d.get("k").cloned()),
        Some("v".to_string())
    );
    assert!(src.config_map("ns", "absent").await.expect("404").is_none());
    let (tok, exp) = src
        .service_account_token("ns", "default", vec![], 3607, "p", "uid-1")
        .await
        .expect("token");
    assert_eq!(tok, "jwt");
    assert_eq!(
        exp,
        "2030-01-01T00:00:00Z"
            .parse::<jiff::Timestamp>()
            .expect("ts")
    );
    let body = seen.lock().expect("lock")[0].clone();
    assert_eq!(body["spec"]["expirationSeconds"], 3607);
    assert_eq!(
        body["spec"]["boundObjectRef"],
        json!({"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "uid-1"})
    );
    assert_eq!(body["spec"]["audiences"], json!([]));
    server.abort();
}

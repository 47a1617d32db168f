//! Static pods (`staticPodPath` / `--pod-manifest-path`): pods defined by files on the node,
//! run by this kubelet without the API server, and mirrored into the API as read-only "mirror
//! pods" (annotation `kubernetes.io/config.mirror`) so `kubectl get pods` shows them, like
//! upstream's file source (pkg/kubelet/config/file.go) and mirror client.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::Client;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::labels;
use crate::pod_workers::PodWorkers;

/// Upstream's `fileCheckFrequency`.
pub const CHECK_PERIOD: Duration = Duration::from_secs(20);
/// Annotation holding the static pod's hash (its UID), as upstream.
pub const CONFIG_HASH: &str = "kubernetes.io/config.hash";

/// True for a mirror pod: the API's copy of a static pod, never run from the API.
pub fn is_mirror(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(labels::CONFIG_MIRROR))
}

/// True for a pod that came from a file on this node.
pub fn is_static(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(labels::CONFIG_SOURCE))
        .is_some_and(|s| s == "file")
}

/// Turns a manifest into the pod this node runs (pure): name suffixed with the node name,
/// namespace defaulted, a UID hashed from node, file and content (a changed file is a new pod),
/// the file source annotations, the node name, and upstream's tolerate-all-NoExecute.
pub fn prepare(mut pod: Pod, path: &Path, content: &str, node_name: &str) -> Pod {
    let mut h = Sha256::new();
    h.update(node_name.as_bytes());
    h.update(path.to_string_lossy().as_bytes());
    h.update(content.as_bytes());
    let hex: String = h
        .finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect();
    let name = pod.metadata.name.clone().unwrap_or_default();
    pod.metadata.name = Some(format!("{name}-{node_name}"));
    if pod.metadata.namespace.as_deref().unwrap_or("").is_empty() {
        pod.metadata.namespace = Some("default".into());
    }
    pod.metadata.uid = Some(hex.clone());
    pod.metadata.resource_version = None;
    let ann = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
    ann.insert(CONFIG_HASH.into(), hex);
    ann.insert(labels::CONFIG_SOURCE.into(), "file".into());
    ann.insert(
        labels::CONFIG_SEEN.into(),
        jiff::Timestamp::now().to_string(),
    );
    if let Some(spec) = pod.spec.as_mut() {
        spec.node_name = Some(node_name.to_string());
        let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
        tolerations.push(Toleration {
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            ..Default::default()
        });
    }
    pod.status = None;
    pod
}

/// Reads every manifest in `dir` (`*.yaml`, `*.yml`, `*.json`, not hidden); a file that does
/// not parse as a Pod is logged and skipped. Returns pods by UID.
pub fn read_dir(dir: &Path, node_name: &str) -> HashMap<String, Pod> {
    let mut out = HashMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.sort();
    for path in files {
        let fname = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if fname.starts_with('.')
            || !(fname.ends_with(".yaml") || fname.ends_with(".yml") || fname.ends_with(".json"))
        {
            continue;
        }
        let Ok(content) = std::fs::read_to_string(&path) else {
            continue;
        };
        match serde_yaml::from_str::<Pod>(&content) {
            Ok(pod) if pod.metadata.name.as_deref().is_some_and(|n| !n.is_empty()) => {
                let pod = prepare(pod, &path, &content, node_name);
                if let Some(uid) = pod.metadata.uid.clone() {
                    out.insert(uid, pod);
                }
            }
            Ok(_) => warn!(file = %path.display(), "static pod manifest has no metadata.name"),
            Err(e) => warn!(file = %path.display(), error = %e, "static pod manifest is not a Pod"),
        }
    }
    out
}

/// The mirror pod for `pod` (pure): same metadata and spec, the mirror annotation, owned by
/// the Node so it goes away with it.
pub fn mirror_of(pod: &Pod, node: Option<&Node>) -> Pod {
    let mut m = pod.clone();
    m.metadata.uid = None;
    m.status = None;
    let hash = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CONFIG_HASH))
        .cloned()
        .unwrap_or_default();
    m.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(labels::CONFIG_MIRROR.into(), hash);
    if let Some(n) = node {
        m.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: n.metadata.name.clone().unwrap_or_default(),
            uid: n.metadata.uid.clone().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: None,
        }]);
    }
    m
}

/// Creates or replaces the mirror pod of `pod` when it is missing or mirrors another version.
async fn ensure_mirror(client: &Client, pod: &Pod, node: Option<&Node>) {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let want = mirror_of(pod, node);
    let hash = want
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(labels::CONFIG_MIRROR))
        .cloned();
    match api.get_opt(name).await {
        Ok(Some(existing)) => {
            let theirs = existing
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(labels::CONFIG_MIRROR))
                .cloned();
            if theirs == hash && existing.metadata.deletion_timestamp.is_none() {
                return;
            }
            // Another version (or not a mirror at all): replace it, as upstream does.
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: existing.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            if let Err(e) = api.delete(name, &dp).await {
                debug!(pod = %name, error = %e, "deleting outdated mirror pod");
                return;
            }
        }
        Ok(None) => {}
        Err(e) => {
            debug!(pod = %name, error = %e, "reading mirror pod");
            return;
        }
    }
    match api.create(&PostParams::default(), &want).await {
        Ok(_) => info!(pod = %format!("{ns}/{name}"), "mirror pod created"),
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => warn!(pod = %format!("{ns}/{name}"), error = %e, "creating mirror pod failed"),
    }
}

async fn delete_mirror(client: &Client, pod: &Pod) {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) | Err(kube::Error::Api(_)) => {}
        Err(e) => debug!(pod = %name, error = %e, "deleting mirror pod"),
    }
}

/// Watches `dir` (every [`CHECK_PERIOD`]): new and changed manifests start pods and their
/// mirrors, removed ones stop them. `static_uids` is shared with the orphan check.
pub async fn run(
    dir: PathBuf,
    client: Client,
    node_name: String,
    workers: Arc<PodWorkers>,
    static_uids: Arc<std::sync::Mutex<HashSet<String>>>,
    cancel: CancellationToken,
) {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut running: HashMap<String, Pod> = HashMap::new();
    loop {
        let desired = read_dir(&dir, &node_name);
        let node = nodes.get_opt(&node_name).await.ok().flatten();
        for (uid, pod) in &desired {
            if !running.contains_key(uid) {
                info!(
                    pod = pod.metadata.name.as_deref().unwrap_or(""),
                    "static pod added"
                );
                workers.update(Arc::new(pod.clone()));
            }
            ensure_mirror(&client, pod, node.as_ref()).await;
        }
        for (uid, pod) in &running {
            if !desired.contains_key(uid) {
                info!(
                    pod = pod.metadata.name.as_deref().unwrap_or(""),
                    "static pod removed"
                );
                workers.remove(uid);
                // A changed file keeps the name: the new version's mirror replaces the old.
                let same_name = desired.values().any(|d| {
                    d.metadata.name == pod.metadata.name
                        && d.metadata.namespace == pod.metadata.namespace
                });
                if !same_name {
                    delete_mirror(&client, pod).await;
                }
            }
        }
        running = desired;
        if let Ok(mut s) = static_uids.lock() {
            *s = running.keys().cloned().collect();
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(CHECK_PERIOD) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: c\n    image: busybox\n";

    #[test]
    fn prepared_static_pod_and_mirror() {
        let pod: Pod = serde_yaml::from_str(MANIFEST).expect("pod");
        let p = prepare(pod.clone(), Path::new("/etc/k/web.yaml"), MANIFEST, "n1");
        assert_eq!(p.metadata.name.as_deref(), Some("web-n1"));
        assert_eq!(p.metadata.namespace.as_deref(), Some("default"));
        assert!(is_static(&p) && !is_mirror(&p));
        let uid = p.metadata.uid.clone().expect("uid");
        assert_eq!(uid.len(), 32);
        let again = prepare(pod.clone(), Path::new("/etc/k/web.yaml"), MANIFEST, "n1");
        assert_eq!(
            again.metadata.uid.as_deref(),
            Some(uid.as_str()),
            "stable UID"
        );
        let changed = prepare(
            pod,
            Path::new("/etc/k/web.yaml"),
            &format!("{MANIFEST}#x\n"),
            "n1",
        );
        assert_ne!(changed.metadata.uid.as_deref(), Some(uid.as_str()));
        let spec = p.spec.as_ref().expect("spec");
        assert_eq!(spec.node_name.as_deref(), Some("n1"));
        assert!(spec
            .tolerations
            .iter()
            .flatten()
            .any(|t| t.effect.as_deref() == Some("NoExecute")));
        let m = mirror_of(&p, None);
        assert!(is_mirror(&m));
        assert!(m.metadata.uid.is_none());
        assert_eq!(
            m.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(labels::CONFIG_MIRROR)),
            Some(&uid)
        );
    }

    #[test]
    fn reads_only_pod_manifests() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("web.yaml"), MANIFEST).expect("write");
        std::fs::write(dir.path().join(".hidden.yaml"), MANIFEST).expect("write");
        std::fs::write(dir.path().join("notes.txt"), "x").expect("write");
        std::fs::write(dir.path().join("bad.yaml"), "kind: [").expect("write");
        let pods = read_dir(dir.path(), "n1");
        assert_eq!(pods.len(), 1);
    }
}

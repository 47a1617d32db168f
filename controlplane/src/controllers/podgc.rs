//! The pod garbage collector, as upstream's pkg/controller/podgc: terminated pods beyond
//! `--terminated-pod-gc-threshold` (oldest first), pods bound to nodes that no longer exist
//! (force-deleted after the node is seen missing twice, upstream's quarantine), and
//! unscheduled pods stuck terminating.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::DeleteParams;
use kube::runtime::reflector::Store;
use kube::{Api, ResourceExt};

use super::common;
use super::informers::Informers;
use super::Context;

/// How often the collector runs (upstream's `gcCheckPeriod`).
pub const GC_CHECK_PERIOD: Duration = Duration::from_secs(20);

/// The terminated pods to delete: the oldest beyond `threshold` (0 disables).
pub fn terminated_to_delete(pods: &[Arc<Pod>], threshold: usize) -> Vec<Arc<Pod>> {
    if threshold == 0 {
        return Vec::new();
    }
    let mut terminated: Vec<Arc<Pod>> = pods
        .iter()
        .filter(|p| {
            matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        })
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .cloned()
        .collect();
    if terminated.len() <= threshold {
        return Vec::new();
    }
    terminated.sort_by_key(|p| {
        (
            p.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second())
                .unwrap_or(0),
            p.name_any(),
        )
    });
    let n = terminated.len() - threshold;
    terminated.truncate(n);
    terminated
}

/// Pods bound to a node absent from `nodes`.
pub fn orphaned(pods: &[Arc<Pod>], nodes: &BTreeSet<String>) -> Vec<Arc<Pod>> {
    pods.iter()
        .filter(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .is_some_and(|n| !nodes.contains(n))
        })
        .cloned()
        .collect()
}

/// Runs the loop until shutdown, on the shared pod and node informers.
pub async fn run(ctx: Context, shared: Informers) -> Result<(), String> {
    let client = ctx.client.clone();
    let (shared_pods, shared_nodes) = (shared.pods()?, shared.nodes()?);
    let (pods, nodes) = (shared_pods.store(), shared_nodes.store());
    let threshold = ctx.options.terminated_pod_gc_threshold;
    let period = ctx.options.pod_gc_period.max(Duration::from_millis(10));
    let work = async move {
        shared_pods.ready().await?;
        shared_nodes.ready().await?;
        let mut quarantine: HashSet<String> = HashSet::new();
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            gc_once(&client, &pods, &nodes, threshold, &mut quarantine).await;
        }
    };
    common::until_shutdown(work, &ctx.shutdown).await
}

async fn gc_once(
    client: &kube::Client,
    pods: &Store<Pod>,
    nodes: &Store<Node>,
    threshold: usize,
    quarantine: &mut HashSet<String>,
) {
    let all = pods.state();
    let force = DeleteParams::default().grace_period(0);
    for pod in terminated_to_delete(&all, threshold) {
        delete(
            client,
            &pod,
            &DeleteParams::default(),
            "terminated pod beyond threshold",
        )
        .await;
    }
    let names: BTreeSet<String> = nodes.state().iter().map(|n| n.name_any()).collect();
    let mut missing: HashSet<String> = HashSet::new();
    for pod in orphaned(&all, &names) {
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        missing.insert(node.clone());
        // Seen missing in two consecutive runs and confirmed by a live read: the node is gone.
        if !quarantine.contains(&node) {
            continue;
        }
        match Api::<Node>::all(client.clone()).get_opt(&node).await {
            Ok(None) => delete(client, &pod, &force, "pod bound to a deleted node").await,
            Ok(Some(_)) => {}
            Err(err) => tracing::warn!(node, error = %err, "check node"),
        }
    }
    *quarantine = missing;
    for pod in all.iter().filter(|p| {
        p.metadata.deletion_timestamp.is_some()
            && p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none()
    }) {
        delete(client, pod, &force, "unscheduled terminating pod").await;
    }
}

async fn delete(client: &kube::Client, pod: &Pod, dp: &DeleteParams, why: &str) {
    let ns = pod.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    match api.delete(&pod.name_any(), dp).await {
        Ok(_) => {
            tracing::info!(pod = %format!("{ns}/{}", pod.name_any()), reason = why, "pod garbage collected")
        }
        Err(e) if common::is_not_found(&e) => {}
        Err(e) => tracing::warn!(pod = %pod.name_any(), error = %e, "pod gc delete failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn pod(name: &str, phase: &str, node: Option<&str>, created: i64) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(
                    k8s_openapi::jiff::Timestamp::from_second(created).expect("valid"),
                )),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(Into::into),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn oldest_terminated_beyond_threshold() {
        let pods = vec![
            pod("new", "Failed", None, 30),
            pod("old", "Succeeded", None, 10),
            pod("mid", "Failed", None, 20),
            pod("run", "Running", None, 0),
        ];
        let names = |v: Vec<Arc<Pod>>| v.iter().map(|p| p.name_any()).collect::<Vec<_>>();
        assert_eq!(names(terminated_to_delete(&pods, 1)), vec!["old", "mid"]);
        assert!(terminated_to_delete(&pods, 3).is_empty());
        assert!(terminated_to_delete(&pods, 0).is_empty());
    }

    #[test]
    fn orphans_are_pods_on_missing_nodes() {
        let pods = vec![
            pod("a", "Running", Some("n1"), 0),
            pod("b", "Running", Some("gone"), 0),
            pod("c", "Pending", None, 0),
        ];
        let nodes: BTreeSet<String> = ["n1".to_string()].into();
        assert_eq!(
            orphaned(&pods, &nodes)
                .iter()
                .map(|p| p.name_any())
                .collect::<Vec<_>>(),
            vec!["b"]
        );
    }
}

//! `/pods` and `/runningpods/`: the pods the runtime is running, as a v1 `PodList`.
//!
//! Upstream serves its desired pods (with full specs) on `/pods` and the runtime's view on
//! `/runningpods/`; this server has only the runtime, so both are the runtime's view: each
//! ready sandbox with its name, namespace, UID and labels, and its running containers' names
//! and images.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::List;
use oxlet_cri::{api, Runtime};

use crate::labels;

/// The running pods as a `PodList`.
pub async fn running_pods(runtime: &dyn Runtime) -> oxlet_cri::Result<List<Pod>> {
    let ready = api::PodSandboxFilter {
        state: Some(api::PodSandboxStateValue {
            state: api::PodSandboxState::SandboxReady as i32,
        }),
        ..Default::default()
    };
    let sandboxes = runtime.list_pod_sandbox(Some(ready)).await?;
    let running = api::ContainerFilter {
        state: Some(api::ContainerStateValue {
            state: api::ContainerState::ContainerRunning as i32,
        }),
        ..Default::default()
    };
    let containers = runtime.list_containers(Some(running)).await?;
    Ok(summarize(&sandboxes, &containers))
}

/// Builds the list from CRI sandboxes and containers (pure, for tests).
pub fn summarize(sandboxes: &[api::PodSandbox], containers: &[api::Container]) -> List<Pod> {
    let mut items: Vec<Pod> = sandboxes
        .iter()
        .filter_map(|sb| {
            let meta = sb.metadata.as_ref()?;
            let mut cs: Vec<Container> = containers
                .iter()
                .filter(|c| c.pod_sandbox_id == sb.id)
                .map(|c| Container {
                    name: c
                        .labels
                        .get(labels::CONTAINER_NAME)
                        .cloned()
                        .or_else(|| c.metadata.as_ref().map(|m| m.name.clone()))
                        .unwrap_or_default(),
                    image: c.image.as_ref().map(|i| i.image.clone()),
                    ..Default::default()
                })
                .collect();
            cs.sort_by(|a, b| a.name.cmp(&b.name));
            let user_labels: BTreeMap<String, String> = sb
                .labels
                .iter()
                .filter(|(k, _)| !k.starts_with("io.kubernetes."))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            Some(Pod {
                metadata: ObjectMeta {
                    name: Some(meta.name.clone()),
                    namespace: Some(meta.namespace.clone()),
                    uid: Some(meta.uid.clone()),
                    labels: (!user_labels.is_empty()).then_some(user_labels),
                    creation_timestamp: jiff::Timestamp::from_nanosecond(i128::from(sb.created_at))
                        .ok()
                        .map(Time),
                    ..Default::default()
                },
                spec: Some(PodSpec {
                    containers: cs,
                    ..Default::default()
                }),
                status: Some(PodStatus {
                    phase: Some("Running".to_string()),
                    ..Default::default()
                }),
            })
        })
        .collect();
    items.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    List {
        items,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn summarizes_sandboxes_with_their_containers() {
        let sb = api::PodSandbox {
            id: "sb1".into(),
            metadata: Some(api::PodSandboxMetadata {
                name: "web".into(),
                namespace: "default".into(),
                uid: "u1".into(),
                attempt: 0,
            }),
            labels: HashMap::from([
                ("app".to_string(), "web".to_string()),
                (labels::POD_NAME.to_string(), "web".to_string()),
            ]),
            created_at: 1_700_000_000_000_000_000,
            ..Default::default()
        };
        let c = api::Container {
            id: "c1".into(),
            pod_sandbox_id: "sb1".into(),
            labels: HashMap::from([(labels::CONTAINER_NAME.to_string(), "app".to_string())]),
            image: Some(oxlet_cri::image_spec("busybox")),
            ..Default::default()
        };
        let other = api::Container {
            pod_sandbox_id: "elsewhere".into(),
            ..c.clone()
        };
        let list = summarize(&[sb], &[c, other]);
        let v = serde_json::to_value(&list).expect("serializes");
        assert_eq!(v["kind"], "PodList");
        assert_eq!(v["apiVersion"], "v1");
        let pod = &v["items"][0];
        assert_eq!(pod["metadata"]["name"], "web");
        assert_eq!(pod["metadata"]["uid"], "u1");
        assert_eq!(pod["metadata"]["labels"], serde_json::json!({"app": "web"}));
        assert_eq!(pod["metadata"]["creationTimestamp"], "2023-11-14T22:13:20Z");
        assert_eq!(
            pod["spec"]["containers"],
            serde_json::json!([{"name": "app", "image": "busybox"}])
        );
    }
}

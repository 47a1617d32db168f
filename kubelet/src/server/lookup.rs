//! Finding a pod's sandbox and containers through CRI list calls, by the labels the kubelet
//! puts on them, and choosing which container instance a request means.

use std::collections::HashMap;

use oxlet_cri::{api, Runtime};

use crate::labels;

/// Why a container could not be chosen; the messages are upstream's
/// (pkg/kubelet/kubelet_pods.go `validateContainerLogStatus`, `findContainer`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// No sandbox carries the pod's namespace and name.
    #[error("pod {pod:?} does not exist")]
    PodNotFound {
        /// The pod name.
        pod: String,
    },
    /// The container has not started yet.
    #[error("container {container:?} in pod {pod:?} is waiting to start: {reason}")]
    Waiting {
        /// The container name.
        container: String,
        /// The pod name.
        pod: String,
        /// Why (`ContainerCreating`).
        reason: String,
    },
    /// `previous=true` but no earlier instance exited.
    #[error("previous terminated container {container:?} in pod {pod:?} not found")]
    NoPrevious {
        /// The container name.
        container: String,
        /// The pod name.
        pod: String,
    },
    /// exec/attach need a running container.
    #[error("container not found ({container:?})")]
    NotRunning {
        /// The container name.
        container: String,
    },
}

/// The newest sandbox of `namespace/name`: a ready one if any, else the most recently created.
pub async fn find_sandbox(
    runtime: &dyn Runtime,
    namespace: &str,
    name: &str,
) -> oxlet_cri::Result<Option<api::PodSandbox>> {
    let filter = api::PodSandboxFilter {
        label_selector: HashMap::from([
            (labels::POD_NAMESPACE.to_string(), namespace.to_string()),
            (labels::POD_NAME.to_string(), name.to_string()),
        ]),
        ..Default::default()
    };
    let sandboxes = runtime.list_pod_sandbox(Some(filter)).await?;
    Ok(newest_sandbox(sandboxes))
}

/// Ready sandboxes first, then the newest by creation time.
pub fn newest_sandbox(sandboxes: Vec<api::PodSandbox>) -> Option<api::PodSandbox> {
    let ready = api::PodSandboxState::SandboxReady as i32;
    sandboxes
        .into_iter()
        .max_by_key(|s| (s.state == ready, s.created_at))
}

/// Every instance of container `container` of the pod `sandbox` belongs to (all its
/// sandboxes, matched by pod UID), newest first.
pub async fn container_instances(
    runtime: &dyn Runtime,
    sandbox: &api::PodSandbox,
    container: &str,
) -> oxlet_cri::Result<Vec<api::Container>> {
    let mut selector = HashMap::from([(labels::CONTAINER_NAME.to_string(), container.to_string())]);
    let uid = sandbox
        .labels
        .get(labels::POD_UID)
        .cloned()
        .or_else(|| sandbox.metadata.as_ref().map(|m| m.uid.clone()))
        .filter(|u| !u.is_empty());
    let filter = match uid {
        Some(uid) => {
            selector.insert(labels::POD_UID.to_string(), uid);
            api::ContainerFilter {
                label_selector: selector,
                ..Default::default()
            }
        }
        // Without a UID label only this sandbox's containers are known to be this pod's.
        None => api::ContainerFilter {
            pod_sandbox_id: sandbox.id.clone(),
            label_selector: selector,
            ..Default::default()
        },
    };
    let mut found = runtime.list_containers(Some(filter)).await?;
    sort_newest_first(&mut found);
    Ok(found)
}

/// Orders instances by the restart count the kubelet annotated them with, then by creation.
pub fn sort_newest_first(containers: &mut [api::Container]) {
    containers.sort_by_key(|c| std::cmp::Reverse((restart_count(c), c.created_at)));
}

fn restart_count(c: &api::Container) -> i64 {
    c.annotations
        .get(labels::CONTAINER_RESTART_COUNT)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn state_is(c: &api::Container, state: api::ContainerState) -> bool {
    c.state == state as i32
}

/// The instance whose log a request means (`instances` newest first): the newest started
/// one, or with `previous` the newest exited one before it.
pub fn pick_for_logs<'a>(
    instances: &'a [api::Container],
    previous: bool,
    pod: &str,
    container: &str,
) -> Result<&'a api::Container, LookupError> {
    let started = |c: &&api::Container| !state_is(c, api::ContainerState::ContainerCreated);
    if previous {
        return instances
            .iter()
            .skip(1)
            .find(|c| state_is(c, api::ContainerState::ContainerExited))
            .ok_or_else(|| LookupError::NoPrevious {
                container: container.to_string(),
                pod: pod.to_string(),
            });
    }
    // A created-but-not-started newest instance (a restart on its way) has no log yet; as
    // upstream's "last termination state" case, the one before it is shown.
    instances
        .iter()
        .find(started)
        .ok_or_else(|| LookupError::Waiting {
            container: container.to_string(),
            pod: pod.to_string(),
            reason: "ContainerCreating".to_string(),
        })
}

/// The running instance exec and attach go to.
pub fn pick_running<'a>(
    instances: &'a [api::Container],
    container: &str,
) -> Result<&'a api::Container, LookupError> {
    instances
        .iter()
        .find(|c| state_is(c, api::ContainerState::ContainerRunning))
        .ok_or_else(|| LookupError::NotRunning {
            container: container.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(
        id: &str,
        restarts: i64,
        created: i64,
        state: api::ContainerState,
    ) -> api::Container {
        api::Container {
            id: id.to_string(),
            created_at: created,
            state: state as i32,
            annotations: HashMap::from([(
                labels::CONTAINER_RESTART_COUNT.to_string(),
                restarts.to_string(),
            )]),
            ..Default::default()
        }
    }

    fn ids(list: &[api::Container]) -> Vec<&str> {
        list.iter().map(|c| c.id.as_str()).collect()
    }

    #[test]
    fn orders_by_restart_count_then_creation() {
        use api::ContainerState::*;
        let mut list = vec![
            instance("a", 0, 30, ContainerExited),
            instance("c", 2, 10, ContainerRunning),
            instance("b", 1, 20, ContainerExited),
            instance("b2", 1, 25, ContainerExited),
        ];
        sort_newest_first(&mut list);
        assert_eq!(ids(&list), ["c", "b2", "b", "a"]);
    }

    #[test]
    fn picks_current_and_previous_instances() {
        use api::ContainerState::*;
        let list = vec![
            instance("c", 2, 30, ContainerRunning),
            instance("b", 1, 20, ContainerExited),
            instance("a", 0, 10, ContainerExited),
        ];
        assert_eq!(
            pick_for_logs(&list, false, "p", "x").map(|c| &c.id[..]),
            Ok("c")
        );
        assert_eq!(
            pick_for_logs(&list, true, "p", "x").map(|c| &c.id[..]),
            Ok("b")
        );
        assert_eq!(pick_running(&list, "x").map(|c| &c.id[..]), Ok("c"));

        // Restarting: the new instance is only created; logs show the last exited one.
        let restarting = vec![
            instance("d", 3, 40, ContainerCreated),
            instance("c", 2, 30, ContainerExited),
        ];
        assert_eq!(
            pick_for_logs(&restarting, false, "p", "x").map(|c| &c.id[..]),
            Ok("c")
        );
        assert_eq!(
            pick_for_logs(&restarting, true, "p", "x").map(|c| &c.id[..]),
            Ok("c")
        );
        assert_eq!(
            pick_running(&restarting, "x").map_err(|e| e.to_string()),
            Err("container not found (\"x\")".to_string())
        );

        let only = vec![instance("a", 0, 10, ContainerRunning)];
        assert_eq!(
            pick_for_logs(&only, true, "web", "app").map_err(|e| e.to_string()),
            Err("previous terminated container \"app\" in pod \"web\" not found".to_string())
        );
        assert_eq!(
            pick_for_logs(&[], false, "web", "app").map_err(|e| e.to_string()),
            Err(
                "container \"app\" in pod \"web\" is waiting to start: ContainerCreating"
                    .to_string()
            )
        );
    }

    #[test]
    fn prefers_ready_then_newest_sandbox() {
        let sb = |id: &str, ready: bool, created: i64| api::PodSandbox {
            id: id.to_string(),
            created_at: created,
            state: if ready {
                api::PodSandboxState::SandboxReady as i32
            } else {
                api::PodSandboxState::SandboxNotready as i32
            },
            ..Default::default()
        };
        let picked = newest_sandbox(vec![sb("old", true, 1), sb("new", false, 2)]);
        assert_eq!(picked.map(|s| s.id), Some("old".to_string()));
        let picked = newest_sandbox(vec![sb("a", false, 1), sb("b", false, 2)]);
        assert_eq!(picked.map(|s| s.id), Some("b".to_string()));
        assert!(newest_sandbox(vec![]).is_none());
    }
}

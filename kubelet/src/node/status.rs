//! Node status: pure condition computation and the loop posting `nodes/<name>/status`, like
//! upstream's `syncNodeStatus` with `nodeStatusUpdateFrequency` / `nodeStatusReportFrequency`
//! (pkg/kubelet/kubelet_node_status.go, pkg/kubelet/nodestatus/setters.go).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ContainerImage, DaemonEndpoint, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::host::ResourceList;
use super::register::patch_status;

/// What the kubelet knows about its own health, fed by the CRI layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeHealth {
    /// CRI `RuntimeReady`.
    pub runtime_ready: bool,
    /// Why the runtime is not ready (shown in the Ready condition).
    pub runtime_message: String,
    /// CRI `NetworkReady`.
    pub network_ready: bool,
    /// Why the network is not ready.
    pub network_message: String,
    /// Memory is short (eviction signal).
    pub memory_pressure: bool,
    /// Disk is short.
    pub disk_pressure: bool,
    /// PIDs are short.
    pub pid_pressure: bool,
}

impl Default for NodeHealth {
    /// Everything healthy.
    fn default() -> Self {
        Self {
            runtime_ready: true,
            runtime_message: String::new(),
            network_ready: true,
            network_message: String::new(),
            memory_pressure: false,
            disk_pressure: false,
            pid_pressure: false,
        }
    }
}

/// Where the status loop gets health and images from (the CRI layer implements it).
#[async_trait::async_trait]
pub trait StatusSource: Send + Sync {
    /// The current health.
    async fn health(&self) -> NodeHealth;
    /// Images present on the node for `status.images`; `None` leaves the field alone.
    async fn images(&self) -> Option<Vec<ContainerImage>> {
        None
    }
}

/// The parts of the status that come from the host and config, not from health checks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StaticStatus {
    /// `status.capacity`.
    pub capacity: ResourceList,
    /// `status.allocatable`.
    pub allocatable: ResourceList,
    /// `status.nodeInfo`.
    pub node_info: NodeSystemInfo,
    /// `status.addresses`.
    pub addresses: Vec<NodeAddress>,
    /// `status.daemonEndpoints.kubeletEndpoint.Port` (`port`, 10250).
    pub kubelet_port: i32,
}

fn condition(
    type_: &str,
    ok: bool,
    reasons: (&str, &str),
    messages: (&str, &str),
) -> (String, String, String, String) {
    // (type, status, reason, message); the "good" value of a pressure condition is False.
    let (status, reason, message) = if ok {
        ("False", reasons.0, messages.0)
    } else {
        ("True", reasons.1, messages.1)
    };
    (
        type_.to_string(),
        status.to_string(),
        reason.to_string(),
        message.to_string(),
    )
}

/// The kubelet's conditions at `now` (pure): MemoryPressure, DiskPressure, PIDPressure, Ready,
/// in upstream's order and words. `lastTransitionTime` is kept from `prev` unless the status
/// changed; `lastHeartbeatTime` is `now`. Conditions others own are not returned.
pub fn compute_conditions(
    prev: &[NodeCondition],
    health: &NodeHealth,
    now: jiff::Timestamp,
) -> Vec<NodeCondition> {
    let mut errs = Vec::new();
    if !health.runtime_ready {
        errs.push(if health.runtime_message.is_empty() {
            "container runtime is down".to_string()
        } else {
            health.runtime_message.clone()
        });
    }
    if !health.network_ready {
        errs.push(format!(
            "container runtime network not ready: {}",
            if health.network_message.is_empty() {
                "NetworkReady=false"
            } else {
                &health.network_message
            }
        ));
    }
    // Like utilerrors.NewAggregate(errs).Error(): one message alone, several in brackets.
    let ready_message = match errs.len() {
        0 => "kubelet is posting ready status".to_string(),
        1 => errs[0].clone(),
        _ => format!("[{}]", errs.join(", ")),
    };
    let ready = if errs.is_empty() {
        (
            "Ready".to_string(),
            "True".to_string(),
            "KubeletReady".to_string(),
            ready_message,
        )
    } else {
        (
            "Ready".to_string(),
            "False".to_string(),
            "KubeletNotReady".to_string(),
            ready_message,
        )
    };
    let wanted = [
        condition(
            "MemoryPressure",
            !health.memory_pressure,
            ("KubeletHasSufficientMemory", "KubeletHasInsufficientMemory"),
            (
                "kubelet has sufficient memory available",
                "kubelet has insufficient memory available",
            ),
        ),
        condition(
            "DiskPressure",
            !health.disk_pressure,
            ("KubeletHasNoDiskPressure", "KubeletHasDiskPressure"),
            ("kubelet has no disk pressure", "kubelet has disk pressure"),
        ),
        condition(
            "PIDPressure",
            !health.pid_pressure,
            ("KubeletHasSufficientPID", "KubeletHasInsufficientPID"),
            (
                "kubelet has sufficient PID available",
                "kubelet has insufficient PID available",
            ),
        ),
        ready,
    ];
    wanted
        .into_iter()
        .map(|(type_, status, reason, message)| {
            let transition = prev
                .iter()
                .find(|c| c.type_ == type_ && c.status == status)
                .and_then(|c| c.last_transition_time.clone())
                .unwrap_or(Time(now));
            NodeCondition {
                type_,
                status,
                reason: Some(reason),
                message: Some(message),
                last_heartbeat_time: Some(Time(now)),
                last_transition_time: Some(transition),
            }
        })
        .collect()
}

/// The full status to post (pure).
pub fn build_status(
    base: &StaticStatus,
    conditions: Vec<NodeCondition>,
    images: Option<Vec<ContainerImage>>,
) -> NodeStatus {
    NodeStatus {
        capacity: Some(base.capacity.clone()),
        allocatable: Some(base.allocatable.clone()),
        node_info: Some(base.node_info.clone()),
        addresses: Some(base.addresses.clone()),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: base.kubelet_port,
            }),
        }),
        conditions: Some(conditions),
        images,
        ..Default::default()
    }
}

/// The status at `now` for `health`, with transitions kept from `prev` (pure).
pub fn status_at(
    base: &StaticStatus,
    prev: &[NodeCondition],
    health: &NodeHealth,
    images: Option<Vec<ContainerImage>>,
    now: jiff::Timestamp,
) -> NodeStatus {
    build_status(base, compute_conditions(prev, health, now), images)
}

/// True when `new` differs from `posted` in anything but heartbeat times (pure).
pub fn changed(posted: &NodeStatus, new: &NodeStatus) -> bool {
    let strip = |s: &NodeStatus| {
        let mut s = s.clone();
        for c in s.conditions.iter_mut().flatten() {
            c.last_heartbeat_time = None;
        }
        s
    };
    strip(posted) != strip(new)
}

/// How often status is computed and how often it is posted when nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusConfig {
    /// `nodeStatusUpdateFrequency` (10 s).
    pub update_frequency: Duration,
    /// `nodeStatusReportFrequency` (5 m).
    pub report_frequency: Duration,
}

impl StatusConfig {
    /// From a KubeletConfiguration.
    pub fn from_config(cfg: &crate::config::KubeletConfiguration) -> Self {
        Self {
            update_frequency: cfg.node_status_update_frequency.0,
            report_frequency: cfg.node_status_report_frequency.0,
        }
    }
}

/// Computes status every `update_frequency` and patches `nodes/<name>/status` when it changed
/// or `report_frequency` passed since the last post; a failed patch is retried at the next
/// tick. `posted` is the status registration wrote, if any. Runs until `shutdown`.
pub async fn run(
    client: Client,
    node_name: String,
    base: StaticStatus,
    source: Arc<dyn StatusSource>,
    config: StatusConfig,
    posted: Option<NodeStatus>,
    shutdown: CancellationToken,
) {
    let mut posted: Option<(NodeStatus, Instant)> = posted.map(|s| (s, Instant::now()));
    let mut tick = tokio::time::interval(config.update_frequency);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let health = source.health().await;
        let images = source.images().await;
        let prev = posted
            .as_ref()
            .and_then(|(s, _)| s.conditions.clone())
            .unwrap_or_default();
        let new = status_at(&base, &prev, &health, images, jiff::Timestamp::now());
        let due = match &posted {
            None => true,
            Some((s, at)) => changed(s, &new) || at.elapsed() >= config.report_frequency,
        };
        if !due {
            continue;
        }
        match patch_status(&client, &node_name, &new).await {
            Ok(_) => {
                debug!(node = %node_name, ready = health.runtime_ready && health.network_ready, "node status posted");
                posted = Some((new, Instant::now()));
            }
            Err(e) => warn!(node = %node_name, error = %e, "node status update failed, retrying"),
        }
    }
    info!(node = %node_name, "node status loop stopped: shutdown");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_700_000_000 + s).expect("ts")
    }

    fn find<'a>(c: &'a [NodeCondition], ty: &str) -> &'a NodeCondition {
        c.iter().find(|c| c.type_ == ty).expect("condition")
    }

    #[test]
    fn healthy_node_is_ready_with_upstream_words() {
        let c = compute_conditions(&[], &NodeHealth::default(), t(0));
        let types: Vec<&str> = c.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(
            types,
            ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]
        );
        let r = find(&c, "Ready");
        assert_eq!(r.status, "True");
        assert_eq!(r.reason.as_deref(), Some("KubeletReady"));
        assert_eq!(
            r.message.as_deref(),
            Some("kubelet is posting ready status")
        );
        assert_eq!(find(&c, "MemoryPressure").status, "False");
        assert_eq!(
            find(&c, "MemoryPressure").reason.as_deref(),
            Some("KubeletHasSufficientMemory")
        );
        assert_eq!(
            find(&c, "DiskPressure").reason.as_deref(),
            Some("KubeletHasNoDiskPressure")
        );
        assert_eq!(
            find(&c, "PIDPressure").reason.as_deref(),
            Some("KubeletHasSufficientPID")
        );
    }

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let c0 = compute_conditions(&[], &NodeHealth::default(), t(0));
        let c1 = compute_conditions(&c0, &NodeHealth::default(), t(10));
        let r1 = find(&c1, "Ready");
        assert_eq!(r1.last_transition_time, Some(Time(t(0))));
        assert_eq!(r1.last_heartbeat_time, Some(Time(t(10))));
        let sick = NodeHealth {
            network_ready: false,
            network_message: "cni plugin not initialized".into(),
            ..Default::default()
        };
        let c2 = compute_conditions(&c1, &sick, t(20));
        let r2 = find(&c2, "Ready");
        assert_eq!(r2.status, "False");
        assert_eq!(r2.reason.as_deref(), Some("KubeletNotReady"));
        assert_eq!(
            r2.message.as_deref(),
            Some("container runtime network not ready: cni plugin not initialized")
        );
        assert_eq!(r2.last_transition_time, Some(Time(t(20))));
        assert_eq!(
            find(&c2, "MemoryPressure").last_transition_time,
            Some(Time(t(0)))
        );
    }

    #[test]
    fn several_problems_aggregate_like_upstream() {
        let h = NodeHealth {
            runtime_ready: false,
            network_ready: false,
            network_message: "x".into(),
            ..Default::default()
        };
        let c = compute_conditions(&[], &h, t(0));
        assert_eq!(
            find(&c, "Ready").message.as_deref(),
            Some("[container runtime is down, container runtime network not ready: x]")
        );
        let p = NodeHealth {
            memory_pressure: true,
            ..Default::default()
        };
        let c = compute_conditions(&[], &p, t(0));
        assert_eq!(find(&c, "MemoryPressure").status, "True");
        assert_eq!(find(&c, "Ready").status, "True");
    }

    #[test]
    fn heartbeat_alone_is_not_a_change() {
        let base = StaticStatus {
            kubelet_port: 10250,
            ..Default::default()
        };
        let s0 = status_at(&base, &[], &NodeHealth::default(), None, t(0));
        let prev = s0.conditions.clone().unwrap_or_default();
        let s1 = status_at(&base, &prev, &NodeHealth::default(), None, t(10));
        assert!(!changed(&s0, &s1));
        let sick = NodeHealth {
            runtime_ready: false,
            ..Default::default()
        };
        let s2 = status_at(&base, &prev, &sick, None, t(20));
        assert!(changed(&s0, &s2));
        assert_eq!(
            s2.daemon_endpoints
                .and_then(|d| d.kubelet_endpoint)
                .map(|e| e.port),
            Some(10250)
        );
    }
}

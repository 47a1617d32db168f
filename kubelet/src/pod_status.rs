//! The API status of a pod from its spec, runtime state and probe results (upstream's
//! `generateAPIPodStatus`, `getPhase` and `convertToAPIContainerStatuses`): a pure function, so
//! the worker can compare it with what the API has and write only when it changed.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerState as ApiState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::pod_actions::{init_progress, restart_policy, should_start, InitProgress};
use crate::runtime_state::{ContainerPhase, ContainerState, RuntimePod};

/// Everything the status depends on besides the pod.
pub struct StatusInput<'a> {
    /// The runtime state.
    pub rt: &'a RuntimePod,
    /// The last sync error per container name: (reason, message), e.g. ErrImagePull.
    pub waiting: &'a HashMap<String, (String, String)>,
    /// Readiness by container ID.
    pub ready: &'a dyn Fn(&str) -> bool,
    /// Startup-probe verdict by container ID.
    pub started: &'a dyn Fn(&str) -> bool,
    /// Termination message of an exited container.
    pub termination_message: &'a dyn Fn(&ContainerState) -> Option<String>,
    /// The node's IPs.
    pub host_ips: &'a [String],
    /// The pod is being torn down (deleted or evicted): phase must become terminal.
    pub terminating: bool,
    /// CRI runtime name for container IDs (`containerd`).
    pub runtime_name: &'a str,
    /// QoS class.
    pub qos_class: &'a str,
    /// Now.
    pub now: jiff::Timestamp,
}

fn ts(ns: i64) -> Option<Time> {
    (ns > 0)
        .then(|| jiff::Timestamp::from_nanosecond(ns as i128).ok())
        .flatten()
        .map(Time)
}

fn terminated(s: &ContainerState, input: &StatusInput<'_>) -> ContainerStateTerminated {
    let reason = if !s.reason.is_empty() {
        s.reason.clone()
    } else if s.exit_code == 0 {
        "Completed".to_string()
    } else {
        "Error".to_string()
    };
    let message = (input.termination_message)(s).or_else(|| Some(s.message.clone()));
    ContainerStateTerminated {
        exit_code: s.exit_code,
        reason: Some(reason),
        message: message.filter(|m| !m.is_empty()),
        started_at: ts(s.started_at),
        finished_at: ts(s.finished_at),
        container_id: Some(format!("{}://{}", input.runtime_name, s.id)),
        signal: None,
    }
}

fn waiting(reason: &str, message: Option<&str>) -> ApiState {
    ApiState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_string()),
            message: message.filter(|m| !m.is_empty()).map(String::from),
        }),
        ..Default::default()
    }
}

fn container_status(
    pod: &Pod,
    c: &Container,
    init: bool,
    default_waiting: &str,
    input: &StatusInput<'_>,
) -> ContainerStatus {
    let rt = input.rt;
    let mut same = rt
        .containers
        .iter()
        .filter(|s| s.name == c.name && s.init == init);
    let latest = same.next();
    let previous = same.next();
    let image = c.image.clone().unwrap_or_default();
    let pending = input.waiting.get(&c.name);
    let mut st = ContainerStatus {
        name: c.name.clone(),
        image: image.clone(),
        image_id: String::new(),
        ready: false,
        restart_count: 0,
        started: Some(false),
        ..Default::default()
    };
    let Some(s) = latest else {
        let (reason, message) = pending
            .map(|(r, m)| (r.as_str(), Some(m.as_str())))
            .unwrap_or((default_waiting, None));
        st.state = Some(waiting(reason, message));
        return st;
    };
    st.restart_count = s.restart_count as i32;
    st.image_id = s.image_ref.clone();
    if !s.image.is_empty() {
        st.image = s.image.clone();
    }
    st.container_id = Some(format!("{}://{}", input.runtime_name, s.id));
    let last = |p: Option<&ContainerState>| {
        p.filter(|p| p.phase == ContainerPhase::Exited)
            .map(|p| ApiState {
                terminated: Some(terminated(p, input)),
                ..Default::default()
            })
    };
    match s.phase {
        ContainerPhase::Running => {
            st.state = Some(ApiState {
                running: Some(ContainerStateRunning {
                    started_at: ts(s.started_at),
                }),
                ..Default::default()
            });
            st.started = Some((input.started)(&s.id));
            st.ready = !init && st.started == Some(true) && (input.ready)(&s.id);
            st.last_state = last(previous);
        }
        ContainerPhase::Exited => {
            let will_restart = !input.terminating
                && should_start(restart_policy(pod), Some(s))
                && !(init && matches!(init_progress(pod, rt), InitProgress::Done));
            if will_restart {
                let (reason, message) = pending
                    .map(|(r, m)| (r.as_str(), Some(m.as_str())))
                    .unwrap_or(("ContainerCreating", None));
                st.state = Some(waiting(reason, message));
                st.last_state = last(Some(s));
            } else {
                st.state = Some(ApiState {
                    terminated: Some(terminated(s, input)),
                    ..Default::default()
                });
                st.last_state = last(previous);
            }
        }
        ContainerPhase::Created | ContainerPhase::Unknown => {
            let (reason, message) = pending
                .map(|(r, m)| (r.as_str(), Some(m.as_str())))
                .unwrap_or(("ContainerCreating", None));
            st.state = Some(waiting(reason, message));
            st.last_state = last(previous);
        }
    }
    st
}

fn condition(
    type_: &str,
    ok: bool,
    reason: Option<String>,
    message: Option<String>,
) -> PodCondition {
    PodCondition {
        type_: type_.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: if ok { None } else { reason },
        message: if ok { None } else { message },
        ..Default::default()
    }
}

/// Upstream's `getPhase` over the computed statuses.
fn phase(
    pod: &Pod,
    inits: &[ContainerStatus],
    apps: &[ContainerStatus],
    init_failed_never: bool,
    init_done: bool,
    terminating: bool,
) -> &'static str {
    let policy = restart_policy(pod);
    if init_failed_never {
        return "Failed";
    }
    let _ = inits;
    if !init_done && !terminating {
        return "Pending";
    }
    let (mut waiting_, mut running, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for s in apps {
        let state = s.state.as_ref();
        if state.and_then(|s| s.running.as_ref()).is_some() {
            running += 1;
        } else if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if s
            .last_state
            .as_ref()
            .and_then(|l| l.terminated.as_ref())
            .is_some()
        {
            // Waiting to restart after a run: counts as stopped, like upstream.
            stopped += 1;
            if s.last_state
                .as_ref()
                .and_then(|l| l.terminated.as_ref())
                .map(|t| t.exit_code)
                == Some(0)
            {
                succeeded += 1;
            }
        } else {
            waiting_ += 1;
        }
    }
    if terminating {
        if running > 0 {
            return "Running";
        }
        return if apps.is_empty() || succeeded == apps.len() {
            "Succeeded"
        } else {
            "Failed"
        };
    }
    if waiting_ > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped > 0 {
        return match policy {
            "Always" => "Running",
            _ if stopped == succeeded => "Succeeded",
            "Never" => "Failed",
            _ => "Running",
        };
    }
    "Pending"
}

/// The pod's new status. Fields the kubelet does not own (other conditions, nominatedNodeName,
/// resize) are kept from `pod.status`; a terminal phase never changes back.
pub fn compute(pod: &Pod, input: &StatusInput<'_>) -> PodStatus {
    let old = pod.status.clone().unwrap_or_default();
    let spec = pod.spec.as_ref();
    let init_specs: &[Container] = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or(&[]);
    let app_specs: &[Container] = spec.map(|s| s.containers.as_slice()).unwrap_or(&[]);
    let progress = init_progress(pod, input.rt);
    let init_done = progress == InitProgress::Done
        || input.rt.containers.iter().any(|c| !c.init)
        || matches!(old.phase.as_deref(), Some("Running" | "Succeeded"));
    let init_failed_never =
        matches!(progress, InitProgress::Failed(_)) && restart_policy(pod) == "Never";
    let inits: Vec<ContainerStatus> = init_specs
        .iter()
        .map(|c| container_status(pod, c, true, "PodInitializing", input))
        .collect();
    let app_waiting = if init_done {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    let apps: Vec<ContainerStatus> = app_specs
        .iter()
        .map(|c| container_status(pod, c, false, app_waiting, input))
        .collect();

    let old_phase = old.phase.clone().unwrap_or_default();
    let mut phase = if old_phase == "Succeeded" || old_phase == "Failed" {
        old_phase
    } else {
        phase(
            pod,
            &inits,
            &apps,
            init_failed_never,
            init_done,
            input.terminating,
        )
        .to_string()
    };
    if phase.is_empty() {
        phase = "Pending".into();
    }
    let terminal = phase == "Succeeded" || phase == "Failed";

    // Conditions, in upstream's order; transition times carried over when the status holds.
    let sandbox_ready = input.rt.sandbox().is_some_and(|s| s.ready);
    let unready: Vec<&str> = apps
        .iter()
        .filter(|s| !s.ready)
        .map(|s| s.name.as_str())
        .collect();
    let uninit: Vec<&str> = inits
        .iter()
        .filter(|s| {
            s.state
                .as_ref()
                .and_then(|st| st.terminated.as_ref())
                .map(|t| t.exit_code != 0)
                .unwrap_or(true)
        })
        .map(|s| s.name.as_str())
        .collect();
    let list = |v: &[&str]| format!("[{}]", v.join(" "));
    let (ready_reason, ready_msg) = if terminal {
        (Some("PodCompleted".to_string()), None)
    } else {
        (
            Some("ContainersNotReady".to_string()),
            Some(format!(
                "containers with unready status: {}",
                list(&unready)
            )),
        )
    };
    let initialized_ok = init_done
        && (uninit.is_empty()
            || inits.is_empty()
            || progress == InitProgress::Done
            || input.rt.containers.iter().any(|c| !c.init));
    let mut conds = vec![
        condition("PodReadyToStartContainers", sandbox_ready, None, None),
        condition(
            "Initialized",
            initialized_ok,
            Some(
                if terminal {
                    "PodCompleted"
                } else {
                    "ContainersNotInitialized"
                }
                .to_string(),
            ),
            (!terminal).then(|| format!("containers with incomplete status: {}", list(&uninit))),
        ),
        condition(
            "Ready",
            !terminal && unready.is_empty(),
            ready_reason.clone(),
            ready_msg.clone(),
        ),
        condition(
            "ContainersReady",
            !terminal && unready.is_empty(),
            ready_reason,
            ready_msg,
        ),
    ];
    if terminal {
        // A finished pod's Initialized stays True when the init containers did succeed.
        if let Some(c) = conds.iter_mut().find(|c| c.type_ == "Initialized") {
            if initialized_ok {
                *c = condition("Initialized", true, None, None);
            }
        }
    }
    let owned = [
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
    ];
    let old_conds = old.conditions.clone().unwrap_or_default();
    for c in conds.iter_mut() {
        let prev = old_conds.iter().find(|o| o.type_ == c.type_);
        c.last_transition_time = match prev {
            Some(p) if p.status == c.status => p.last_transition_time.clone(),
            _ => Some(Time(input.now)),
        };
        c.last_probe_time = None;
    }
    let mut conditions: Vec<PodCondition> = Vec::new();
    if !old_conds.iter().any(|c| c.type_ == "PodScheduled") {
        conditions.push(PodCondition {
            type_: "PodScheduled".into(),
            status: "True".into(),
            last_transition_time: Some(Time(input.now)),
            ..Default::default()
        });
    }
    for o in &old_conds {
        if !owned.contains(&o.type_.as_str()) {
            conditions.push(o.clone());
        }
    }
    // Upstream order: PodReadyToStartContainers, Initialized, Ready, ContainersReady, PodScheduled.
    let others = std::mem::take(&mut conditions);
    conditions.extend(conds);
    conditions.extend(others);

    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let mut ips: Vec<String> = input
        .rt
        .sandboxes
        .iter()
        .find(|s| s.ready)
        .map(|s| s.ips.clone())
        .unwrap_or_default();
    if host_network {
        ips = input.host_ips.iter().take(1).cloned().collect();
    }
    let (pod_ip, pod_ips) = if ips.is_empty() {
        (old.pod_ip.clone(), old.pod_ips.clone())
    } else {
        (
            ips.first().cloned(),
            Some(ips.iter().map(|ip| PodIP { ip: ip.clone() }).collect()),
        )
    };

    PodStatus {
        phase: Some(phase),
        conditions: Some(conditions),
        host_ip: input.host_ips.first().cloned(),
        host_ips: (!input.host_ips.is_empty()).then(|| {
            input
                .host_ips
                .iter()
                .map(|ip| HostIP { ip: ip.clone() })
                .collect()
        }),
        pod_ip,
        pod_ips,
        start_time: old.start_time.clone().or(Some(Time(input.now))),
        init_container_statuses: (!inits.is_empty()).then_some(inits),
        container_statuses: Some(apps),
        qos_class: Some(input.qos_class.to_string()),
        message: old.message.clone(),
        reason: old.reason.clone(),
        nominated_node_name: old.nominated_node_name.clone(),
        ephemeral_container_statuses: old.ephemeral_container_statuses.clone(),
        resize: old.resize.clone(),
        resource_claim_statuses: old.resource_claim_statuses.clone(),
        observed_generation: pod.metadata.generation,
    }
}

/// Whether two statuses differ in anything but condition probe/transition times.
pub fn differs(a: &PodStatus, b: &PodStatus) -> bool {
    fn strip(s: &PodStatus) -> serde_json::Value {
        let mut s = s.clone();
        if let Some(cs) = s.conditions.as_mut() {
            for c in cs.iter_mut() {
                c.last_transition_time = None;
                c.last_probe_time = None;
            }
            cs.sort_by(|x, y| x.type_.cmp(&y.type_));
        }
        serde_json::to_value(&s).unwrap_or_default()
    }
    strip(a) != strip(b)
}

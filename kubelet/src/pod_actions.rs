//! What to do to bring a pod's runtime state to its spec (upstream's `computePodActions`):
//! a pure function from the pod, its runtime state and probe verdicts to a list of actions,
//! which `pod_sync` then carries out.

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::runtime_state::{ContainerPhase, ContainerState, RuntimePod};

/// A running container to stop, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kill {
    /// CRI container ID.
    pub id: String,
    /// Name in the spec.
    pub name: String,
    /// Why (goes into the Killing event).
    pub message: String,
}

/// The actions for one sync.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodActions {
    /// Stop every container and the sandbox first.
    pub kill_pod: bool,
    /// Create a new sandbox (after killing the pod).
    pub create_sandbox: bool,
    /// The ready sandbox to use when not creating one.
    pub sandbox_id: Option<String>,
    /// `attempt` for a new sandbox.
    pub attempt: u32,
    /// Index into `spec.initContainers` to start next.
    pub next_init: Option<usize>,
    /// An init container failed and the pod may not restart it: the pod has failed.
    pub init_failed: bool,
    /// Indexes into `spec.containers` to start.
    pub start: Vec<usize>,
    /// Containers to stop without killing the pod.
    pub kill: Vec<Kill>,
}

/// The pod's restart policy (default Always).
pub fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

/// Upstream's `ShouldContainerBeRestarted`: whether a container whose newest instance is
/// `latest` (None: never created) should be started again.
pub fn should_start(policy: &str, latest: Option<&ContainerState>) -> bool {
    let Some(s) = latest else { return true };
    match s.phase {
        ContainerPhase::Running => false,
        ContainerPhase::Created | ContainerPhase::Unknown => true,
        ContainerPhase::Exited => match policy {
            "Never" => false,
            "OnFailure" => s.exit_code != 0,
            _ => true,
        },
    }
}

/// Where the init sequence stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitProgress {
    /// All init containers succeeded (or there are none): app containers may run.
    Done,
    /// Start this init container next.
    Next(usize),
    /// This init container is running (or created): wait.
    Running(usize),
    /// This init container failed.
    Failed(usize),
}

/// Upstream's `findNextInitContainerToRun`.
pub fn init_progress(pod: &Pod, rt: &RuntimePod) -> InitProgress {
    let inits: &[Container] = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or(&[]);
    if inits.is_empty() {
        return InitProgress::Done;
    }
    // Once any app container exists, initialization happened in this sandbox generation.
    let sandbox = rt.sandbox().map(|s| s.id.as_str());
    let in_sandbox = |c: &&ContainerState| Some(c.sandbox_id.as_str()) == sandbox;
    if rt.containers.iter().filter(in_sandbox).any(|c| !c.init) {
        return InitProgress::Done;
    }
    for (i, c) in inits.iter().enumerate().rev() {
        let Some(s) = rt
            .containers
            .iter()
            .filter(in_sandbox)
            .find(|s| s.init && s.name == c.name)
        else {
            continue;
        };
        return match s.phase {
            ContainerPhase::Exited if s.exit_code == 0 => {
                if i + 1 == inits.len() {
                    InitProgress::Done
                } else {
                    InitProgress::Next(i + 1)
                }
            }
            ContainerPhase::Exited => InitProgress::Failed(i),
            ContainerPhase::Unknown => InitProgress::Failed(i),
            ContainerPhase::Running | ContainerPhase::Created => InitProgress::Running(i),
        };
    }
    InitProgress::Next(0)
}

/// Computes the actions. `hash_of` gives the current spec hash of a container; `liveness`
/// says whether a running container (by ID) failed its liveness or startup probe, with why.
pub fn compute(
    pod: &Pod,
    rt: &RuntimePod,
    hash_of: &dyn Fn(&Container) -> String,
    liveness: &dyn Fn(&str) -> Option<String>,
) -> PodActions {
    let policy = restart_policy(pod);
    let spec = pod.spec.as_ref();
    let containers: &[Container] = spec.map(|s| s.containers.as_slice()).unwrap_or(&[]);
    let has_inits = spec
        .and_then(|s| s.init_containers.as_ref())
        .is_some_and(|v| !v.is_empty());
    let mut a = PodActions::default();

    let ready_sandboxes = rt.sandboxes.iter().filter(|s| s.ready).count();
    let newest = rt.sandbox();
    let sandbox_ok = newest.is_some_and(|s| s.ready) && ready_sandboxes == 1;
    if !sandbox_ok {
        a.attempt = newest.map(|s| s.attempt + 1).unwrap_or(0);
        // A pod that must not restart is not given a new sandbox once something ran.
        if policy == "Never" && newest.is_some() && !rt.containers.is_empty() {
            a.kill_pod = true;
            return a;
        }
        a.kill_pod = true;
        a.create_sandbox = true;
        if has_inits {
            a.next_init = Some(0);
            return a;
        }
        for (i, c) in containers.iter().enumerate() {
            let latest = rt.latest(&c.name, false);
            // On a fresh sandbox only finished containers that may not restart stay down.
            if latest.is_some_and(|s| s.phase == ContainerPhase::Exited)
                && !should_start(policy, latest)
            {
                continue;
            }
            a.start.push(i);
        }
        if a.start.is_empty() {
            a.create_sandbox = false;
        }
        return a;
    }
    a.sandbox_id = newest.map(|s| s.id.clone());

    match init_progress(pod, rt) {
        InitProgress::Done => {}
        InitProgress::Running(_) => return a,
        InitProgress::Next(i) => {
            a.next_init = Some(i);
            return a;
        }
        InitProgress::Failed(i) => {
            if policy == "Never" {
                a.init_failed = true;
                a.kill_pod = true;
            } else {
                a.next_init = Some(i);
            }
            return a;
        }
    }

    let mut keep = 0;
    for (i, c) in containers.iter().enumerate() {
        let latest = rt.latest(&c.name, false);
        match latest {
            Some(s) if s.is_running() => {
                let mut restart = policy != "Never";
                let message = if !s.hash.is_empty() && s.hash != hash_of(c) {
                    restart = true;
                    Some(format!(
                        "Container {} definition changed, will be restarted",
                        c.name
                    ))
                } else {
                    liveness(&s.id)
                };
                match message {
                    Some(message) => {
                        a.kill.push(Kill {
                            id: s.id.clone(),
                            name: c.name.clone(),
                            message,
                        });
                        if restart {
                            a.start.push(i);
                        }
                    }
                    None => keep += 1,
                }
            }
            _ => {
                if should_start(policy, latest) {
                    a.start.push(i);
                }
            }
        }
    }
    // Running containers the spec no longer has.
    for s in rt.containers.iter().filter(|s| s.is_running() && !s.init) {
        if !containers.iter().any(|c| c.name == s.name) {
            a.kill.push(Kill {
                id: s.id.clone(),
                name: s.name.clone(),
                message: format!("Container {} is not in the pod spec", s.name),
            });
        }
    }
    if keep == 0 && a.start.is_empty() {
        a.kill_pod = true;
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime_state::SandboxState;

    fn pod(policy: &str, inits: &[&str], apps: &[&str]) -> Pod {
        let c = |n: &&str| serde_json::json!({"name": n, "image": "busybox"});
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "d", "uid": "u"},
            "spec": {"restartPolicy": policy,
                     "initContainers": inits.iter().map(c).collect::<Vec<_>>(),
                     "containers": apps.iter().map(c).collect::<Vec<_>>()}
        }))
        .expect("pod")
    }

    fn sb(id: &str, attempt: u32, ready: bool) -> SandboxState {
        SandboxState {
            id: id.into(),
            attempt,
            ready,
            created_at: attempt as i64,
            ips: vec![],
        }
    }

    fn ctr(name: &str, init: bool, phase: ContainerPhase, exit: i32, t: i64) -> ContainerState {
        ContainerState {
            id: format!("{name}-{t}"),
            name: name.into(),
            sandbox_id: "s1".into(),
            phase,
            created_at: t,
            started_at: t,
            finished_at: t,
            exit_code: exit,
            reason: String::new(),
            message: String::new(),
            image: "busybox".into(),
            image_ref: String::new(),
            restart_count: 0,
            hash: "h".into(),
            init,
            log_path: String::new(),
            detailed: true,
        }
    }

    fn rt(sandboxes: Vec<SandboxState>, containers: Vec<ContainerState>) -> RuntimePod {
        let mut r = RuntimePod {
            uid: "u".into(),
            sandboxes,
            containers,
            ..Default::default()
        };
        r.containers
            .sort_by_key(|c| std::cmp::Reverse(c.created_at));
        r
    }

    fn go(p: &Pod, r: &RuntimePod) -> PodActions {
        compute(p, r, &|_| "h".to_string(), &|_| None)
    }

    #[test]
    fn new_pod_creates_sandbox_and_starts_all() {
        let a = go(&pod("Always", &[], &["a", "b"]), &rt(vec![], vec![]));
        assert!(a.create_sandbox && a.kill_pod);
        assert_eq!(a.attempt, 0);
        assert_eq!(a.start, vec![0, 1]);
    }

    #[test]
    fn init_containers_run_in_order() {
        let p = pod("Always", &["i1", "i2"], &["a"]);
        let a = go(&p, &rt(vec![], vec![]));
        assert_eq!((a.create_sandbox, a.next_init), (true, Some(0)));
        let r = rt(
            vec![sb("s1", 0, true)],
            vec![ctr("i1", true, ContainerPhase::Running, 0, 1)],
        );
        assert_eq!(
            go(&p, &r),
            PodActions {
                sandbox_id: Some("s1".into()),
                ..Default::default()
            }
        );
        let r = rt(
            vec![sb("s1", 0, true)],
            vec![ctr("i1", true, ContainerPhase::Exited, 0, 1)],
        );
        assert_eq!(go(&p, &r).next_init, Some(1));
        let r = rt(
            vec![sb("s1", 0, true)],
            vec![
                ctr("i1", true, ContainerPhase::Exited, 0, 1),
                ctr("i2", true, ContainerPhase::Exited, 0, 2),
            ],
        );
        assert_eq!(go(&p, &r).start, vec![0]);
        let r = rt(
            vec![sb("s1", 0, true)],
            vec![ctr("i1", true, ContainerPhase::Exited, 1, 1)],
        );
        assert_eq!(go(&p, &r).next_init, Some(0), "failed init is retried");
        let never = pod("Never", &["i1"], &["a"]);
        let a = go(&never, &r);
        assert!(a.init_failed && a.kill_pod);
    }

    #[test]
    fn restart_policies() {
        let exited = |code| {
            rt(
                vec![sb("s1", 0, true)],
                vec![ctr("a", false, ContainerPhase::Exited, code, 1)],
            )
        };
        assert_eq!(go(&pod("Always", &[], &["a"]), &exited(0)).start, vec![0]);
        assert_eq!(
            go(&pod("OnFailure", &[], &["a"]), &exited(1)).start,
            vec![0]
        );
        let a = go(&pod("OnFailure", &[], &["a"]), &exited(0));
        assert!(
            a.start.is_empty() && a.kill_pod,
            "all done: stop the sandbox"
        );
        let a = go(&pod("Never", &[], &["a"]), &exited(1));
        assert!(a.start.is_empty() && a.kill_pod);
    }

    #[test]
    fn dead_sandbox_is_recreated_unless_never() {
        let r = rt(
            vec![sb("s1", 0, false)],
            vec![ctr("a", false, ContainerPhase::Exited, 0, 1)],
        );
        let a = go(&pod("Always", &[], &["a"]), &r);
        assert!(a.create_sandbox);
        assert_eq!(a.attempt, 1);
        let a = go(&pod("Never", &[], &["a"]), &r);
        assert!(!a.create_sandbox && a.kill_pod);
        let a = go(&pod("OnFailure", &[], &["a"]), &r);
        assert!(
            !a.create_sandbox,
            "succeeded containers stay down on OnFailure"
        );
    }

    #[test]
    fn hash_change_and_liveness_restart() {
        let r = rt(
            vec![sb("s1", 0, true)],
            vec![ctr("a", false, ContainerPhase::Running, 0, 1)],
        );
        let p = pod("Always", &[], &["a"]);
        assert_eq!(
            go(&p, &r),
            PodActions {
                sandbox_id: Some("s1".into()),
                ..Default::default()
            }
        );
        let a = compute(&p, &r, &|_| "other".into(), &|_| None);
        assert_eq!(a.kill.len(), 1);
        assert_eq!(a.start, vec![0]);
        let never = pod("Never", &[], &["a"]);
        let a = compute(&never, &r, &|_| "h".into(), &|_| {
            Some("Liveness probe failed".into())
        });
        assert_eq!(a.kill[0].message, "Liveness probe failed");
        assert!(a.start.is_empty());
    }
}

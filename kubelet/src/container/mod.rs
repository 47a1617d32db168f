//! Pod spec → CRI container config: environment, resources, security context, labels and
//! annotations, as upstream's kuberuntime_container.go (generateContainerConfig) and
//! kuberuntime/labels.go.

pub mod env;
pub mod error;
pub mod qos;
pub mod resources;
pub mod security;

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use oxlet_cri::api;

pub use env::{
    expand, make_environment, make_environment_with_warnings, EnvContext, EnvSource, Environment,
    KubeEnvSource,
};
pub use error::ConfigError;
pub use qos::{qos_class, QosClass};
pub use resources::linux_container_resources;
pub use security::{linux_container_security_context, SecurityOptions};

/// Value of [`crate::labels::CONTAINER_TYPE`] for init containers (sidecars included).
pub const CONTAINER_TYPE_INIT: &str = "init";
/// Value of [`crate::labels::CONTAINER_TYPE`] for regular containers.
pub const CONTAINER_TYPE_REGULAR: &str = "regular";

/// Everything [`container_config`] needs besides the pod spec.
#[derive(Debug, Clone)]
pub struct ContainerConfigInput<'a> {
    /// The pod.
    pub pod: &'a Pod,
    /// The container, from `pod`'s containers or init containers.
    pub container: &'a Container,
    /// The image reference the runtime resolved (PullImage's image_ref).
    pub image_ref: &'a str,
    /// The container's environment from [`make_environment`].
    pub env: &'a [(String, String)],
    /// Volume mounts, already resolved to host paths.
    pub mounts: Vec<api::Mount>,
    /// How often this container was restarted before; the CRI attempt number.
    pub restart_count: u32,
    /// True for init containers.
    pub init: bool,
    /// The node's memory capacity in bytes (for Burstable OOM scores).
    pub node_memory_bytes: i128,
}

/// The full CRI ContainerConfig for a container of a pod.
///
/// Command and args have `$(VAR)` expanded from `env`; the log path is
/// `<name>/<restart_count>.log`, relative to the sandbox's log directory; labels identify the
/// pod and container; annotations carry what the kubelet needs back from a running container
/// (hash, restart count, termination message settings, grace period, preStop hook, type).
pub fn container_config(input: ContainerConfigInput<'_>) -> api::ContainerConfig {
    container_config_with(input, &SecurityOptions::default())
}

/// [`container_config`] with node security settings (seccomp profile root, seccompDefault).
pub fn container_config_with(
    input: ContainerConfigInput<'_>,
    security: &SecurityOptions,
) -> api::ContainerConfig {
    let ContainerConfigInput {
        pod,
        container: c,
        image_ref,
        env,
        mounts,
        restart_count,
        init,
        node_memory_bytes,
    } = input;
    let lookup: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let vars = |name: &str| lookup.get(name).map(|v| v.to_string());
    let expand_all = |v: Option<&Vec<String>>| -> Vec<String> {
        v.into_iter().flatten().map(|s| expand(s, &vars)).collect()
    };
    api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: c.name.clone(),
            attempt: restart_count,
        }),
        image: Some(api::ImageSpec {
            image: image_ref.to_string(),
            user_specified_image: c.image.clone().unwrap_or_default(),
            ..Default::default()
        }),
        command: expand_all(c.command.as_ref()),
        args: expand_all(c.args.as_ref()),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: env
            .iter()
            .map(|(k, v)| api::KeyValue {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        mounts,
        devices: Vec::new(),
        labels: container_labels(pod, c),
        annotations: container_annotations(pod, c, restart_count, init),
        log_path: container_log_path(&c.name, restart_count),
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        linux: Some(api::LinuxContainerConfig {
            resources: Some(linux_container_resources(pod, c, node_memory_bytes)),
            security_context: Some(security::linux_container_security_context_with(
                pod, c, security,
            )),
        }),
        windows: None,
        cdi_devices: Vec::new(),
    }
}

/// `<name>/<restart_count>.log`: a container's log file inside the sandbox's log directory.
pub fn container_log_path(name: &str, restart_count: u32) -> String {
    format!("{name}/{restart_count}.log")
}

/// Labels of a CRI container: pod name, namespace, UID and container name.
pub fn container_labels(pod: &Pod, c: &Container) -> HashMap<String, String> {
    use crate::labels::*;
    let m = &pod.metadata;
    HashMap::from([
        (POD_NAME.to_string(), m.name.clone().unwrap_or_default()),
        (
            POD_NAMESPACE.to_string(),
            m.namespace.clone().unwrap_or_default(),
        ),
        (POD_UID.to_string(), m.uid.clone().unwrap_or_default()),
        (CONTAINER_NAME.to_string(), c.name.clone()),
    ])
}

/// Annotations of a CRI container, as upstream's newContainerAnnotations plus oxlet's
/// container type.
pub fn container_annotations(
    pod: &Pod,
    c: &Container,
    restart_count: u32,
    init: bool,
) -> HashMap<String, String> {
    use crate::labels::*;
    let mut a = HashMap::from([
        (CONTAINER_HASH.to_string(), container_hash(c)),
        (
            CONTAINER_RESTART_COUNT.to_string(),
            restart_count.to_string(),
        ),
        (
            CONTAINER_TERMINATION_MESSAGE_PATH.to_string(),
            c.termination_message_path.clone().unwrap_or_default(),
        ),
        (
            CONTAINER_TERMINATION_MESSAGE_POLICY.to_string(),
            c.termination_message_policy.clone().unwrap_or_default(),
        ),
        (
            CONTAINER_TYPE.to_string(),
            if init {
                CONTAINER_TYPE_INIT
            } else {
                CONTAINER_TYPE_REGULAR
            }
            .to_string(),
        ),
    ]);
    if let Some(g) = pod.metadata.deletion_grace_period_seconds {
        a.insert(POD_DELETION_GRACE_PERIOD.to_string(), g.to_string());
    }
    if let Some(g) = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
    {
        a.insert(POD_TERMINATION_GRACE_PERIOD.to_string(), g.to_string());
    }
    // JSON, so the hook can still run when the pod object is gone by the time of the kill.
    if let Some(pre_stop) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) {
        if let Ok(json) = serde_json::to_string(pre_stop) {
            a.insert(CONTAINER_PRESTOP_HANDLER.to_string(), json);
        }
    }
    if let Some(ports) = c.ports.as_ref().filter(|p| !p.is_empty()) {
        if let Ok(json) = serde_json::to_string(ports) {
            a.insert(CONTAINER_PORTS.to_string(), json);
        }
    }
    a
}

/// Hash of the container fields whose change restarts the container.
///
/// Since 1.31 upstream's HashContainer covers only `name` and `image` (the only container
/// fields a pod update may change; resources are resized in place), so that a kubelet upgrade
/// does not restart every container. oxlet hashes the same fields, FNV-1a 32 over their JSON,
/// printed in hex; the value is not bit-identical with upstream's, which hashes a Go-specific
/// dump of that JSON.
pub fn container_hash(container: &Container) -> String {
    // Keys in sorted order, as Go's json.Marshal of a map writes them.
    let json = serde_json::json!({
        "image": container.image.as_deref().unwrap_or(""),
        "name": container.name,
    })
    .to_string();
    format!("{:x}", fnv1a32(json.as_bytes()))
}

fn fnv1a32(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in data {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels;
    use serde_json::json;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u-1", "deletionGracePeriodSeconds": 5},
            "spec": {
                "terminationGracePeriodSeconds": 30,
                "containers": [{
                    "name": "app", "image": "busybox:1.36",
                    "command": ["/bin/sh", "-c"],
                    "args": ["echo $(GREETING) $(UNKNOWN) $$(GREETING)"],
                    "workingDir": "/work",
                    "stdin": true, "tty": true,
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                    "lifecycle": {"preStop": {"exec": {"command": ["sleep", "1"]}}},
                    "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "128Mi"}}
                }]
            }
        }))
        .expect("pod")
    }

    #[test]
    fn full_config() {
        let p = pod();
        let c = &p.spec.as_ref().expect("spec").containers[0];
        let env = vec![("GREETING".to_string(), "hi".to_string())];
        let mount = api::Mount {
            container_path: "/data".into(),
            host_path: "/var/lib/kubelet/pods/u-1/volumes/x".into(),
            ..Default::default()
        };
        let cfg = container_config(ContainerConfigInput {
            pod: &p,
            container: c,
            image_ref: "sha256:abc",
            env: &env,
            mounts: vec![mount.clone()],
            restart_count: 3,
            init: false,
            node_memory_bytes: 1 << 30,
        });
        let md = cfg.metadata.as_ref().expect("metadata");
        assert_eq!((md.name.as_str(), md.attempt), ("app", 3));
        let image = cfg.image.as_ref().expect("image");
        assert_eq!(image.image, "sha256:abc");
        assert_eq!(image.user_specified_image, "busybox:1.36");
        assert_eq!(cfg.command, vec!["/bin/sh", "-c"]);
        assert_eq!(cfg.args, vec!["echo hi $(UNKNOWN) $(GREETING)"]);
        assert_eq!(cfg.working_dir, "/work");
        assert_eq!(
            cfg.envs,
            vec![api::KeyValue {
                key: "GREETING".into(),
                value: "hi".into()
            }]
        );
        assert_eq!(cfg.mounts, vec![mount]);
        assert_eq!(cfg.log_path, "app/3.log");
        assert!(cfg.stdin && cfg.tty && !cfg.stdin_once);
        assert_eq!(
            cfg.labels.get(labels::POD_NAME).map(String::as_str),
            Some("web")
        );
        assert_eq!(
            cfg.labels.get(labels::POD_NAMESPACE).map(String::as_str),
            Some("ns")
        );
        assert_eq!(
            cfg.labels.get(labels::POD_UID).map(String::as_str),
            Some("u-1")
        );
        assert_eq!(
            cfg.labels.get(labels::CONTAINER_NAME).map(String::as_str),
            Some("app")
        );
        assert_eq!(cfg.labels.len(), 4);
        let a = |k: &str| cfg.annotations.get(k).map(String::as_str);
        assert_eq!(a(labels::CONTAINER_HASH), Some(container_hash(c).as_str()));
        assert_eq!(a(labels::CONTAINER_RESTART_COUNT), Some("3"));
        assert_eq!(
            a(labels::CONTAINER_TERMINATION_MESSAGE_PATH),
            Some("/dev/termination-log")
        );
        assert_eq!(
            a(labels::CONTAINER_TERMINATION_MESSAGE_POLICY),
            Some("File")
        );
        assert_eq!(a(labels::POD_TERMINATION_GRACE_PERIOD), Some("30"));
        assert_eq!(a(labels::POD_DELETION_GRACE_PERIOD), Some("5"));
        assert_eq!(
            a(labels::CONTAINER_PRESTOP_HANDLER),
            Some(r#"{"exec":{"command":["sleep","1"]}}"#)
        );
        assert_eq!(
            a(labels::CONTAINER_PORTS),
            Some(r#"[{"containerPort":80,"protocol":"TCP"}]"#)
        );
        assert_eq!(a(labels::CONTAINER_TYPE), Some("regular"));
        let linux = cfg.linux.as_ref().expect("linux");
        let r = linux.resources.as_ref().expect("resources");
        assert_eq!(
            (r.cpu_shares, r.cpu_quota, r.memory_limit_in_bytes),
            (256, 50_000, 128 << 20)
        );
        // Burstable, 64Mi of 1Gi requested.
        assert_eq!(r.oom_score_adj, 1000 - 62);
        assert!(linux.security_context.is_some());
    }

    #[test]
    fn init_container_type() {
        let p = pod();
        let c = &p.spec.as_ref().expect("spec").containers[0];
        let cfg = container_config(ContainerConfigInput {
            pod: &p,
            container: c,
            image_ref: "x",
            env: &[],
            mounts: vec![],
            restart_count: 0,
            init: true,
            node_memory_bytes: 1 << 30,
        });
        assert_eq!(
            cfg.annotations
                .get(labels::CONTAINER_TYPE)
                .map(String::as_str),
            Some("init")
        );
        assert_eq!(cfg.log_path, "app/0.log");
        // Unexpanded references stay as written when nothing is defined.
        assert_eq!(cfg.args, vec!["echo $(GREETING) $(UNKNOWN) $(GREETING)"]);
    }

    #[test]
    fn hash_covers_name_and_image_only() {
        let p = pod();
        let c = p.spec.as_ref().expect("spec").containers[0].clone();
        let h = container_hash(&c);
        assert_eq!(h, container_hash(&c.clone()), "stable");
        let mut other = c.clone();
        other.image = Some("busybox:1.37".into());
        assert_ne!(container_hash(&other), h, "image change");
        let mut other = c.clone();
        other.name = "app2".into();
        assert_ne!(container_hash(&other), h, "name change");
        let mut other = c.clone();
        other.resources = None;
        other.env = Some(vec![]);
        other.args = None;
        assert_eq!(
            container_hash(&other),
            h,
            "resources, env, args do not count"
        );
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
    }
}

//! Pod and container security contexts mapped onto CRI, as upstream's
//! kuberuntime/security_context.go (determineEffectiveSecurityContext,
//! convertToRuntimeSecurityContext), pkg/securitycontext, kuberuntime helpers (seccomp and
//! AppArmor profiles) and kubelet/util (NamespacesForPod).

use std::path::PathBuf;

use k8s_openapi::api::core::v1::{
    AppArmorProfile, Container, Pod, SELinuxOptions, SeccompProfile, SecurityContext,
};
use oxlet_cri::api;
use oxlet_cri::api::security_profile::ProfileType;

use super::error::ConfigError;

/// Paths runc masks in /proc and /sys unless `procMount: Unmasked` (upstream's
/// securitycontext.defaultMaskedPaths). containerd's CRI masks nothing when the kubelet sends
/// none, so the kubelet must send them.
pub const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths runc mounts read-only unless `procMount: Unmasked`.
pub const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Node-wide settings that shape security contexts (KubeletConfiguration `seccompDefault`,
/// `<rootDirectory>/seccomp`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityOptions {
    /// Directory `Localhost` seccomp profiles are relative to.
    pub seccomp_profile_root: PathBuf,
    /// Use `RuntimeDefault` instead of `Unconfined` when a pod names no seccomp profile.
    pub seccomp_default: bool,
}

impl Default for SecurityOptions {
    fn default() -> Self {
        Self {
            seccomp_profile_root: PathBuf::from("/var/lib/kubelet/seccomp"),
            seccomp_default: false,
        }
    }
}

/// Annotation prefix of the deprecated per-container AppArmor profile.
pub const APPARMOR_ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

/// The container's security context with pod-level defaults filled in (runAsUser, runAsGroup,
/// runAsNonRoot, seLinuxOptions), as upstream's DetermineEffectiveSecurityContext.
pub fn effective_security_context(pod: &Pod, container: &Container) -> SecurityContext {
    let mut sc = container.security_context.clone().unwrap_or_default();
    if let Some(psc) = pod.spec.as_ref().and_then(|s| s.security_context.as_ref()) {
        if sc.se_linux_options.is_none() {
            sc.se_linux_options = psc.se_linux_options.clone();
        }
        if sc.windows_options.is_none() {
            sc.windows_options = psc.windows_options.clone();
        }
        if sc.run_as_user.is_none() {
            sc.run_as_user = psc.run_as_user;
        }
        if sc.run_as_group.is_none() {
            sc.run_as_group = psc.run_as_group;
        }
        if sc.run_as_non_root.is_none() {
            sc.run_as_non_root = psc.run_as_non_root;
        }
    }
    sc
}

/// The namespaces of a pod's sandbox and containers: node namespaces for hostNetwork/hostPID/
/// hostIPC, a pod-wide PID namespace for shareProcessNamespace, else a PID namespace per
/// container; the host user namespace.
pub fn namespace_options(pod: &Pod) -> api::NamespaceOption {
    use api::NamespaceMode::{Container as Ctr, Node, Pod as PodNs};
    let spec = pod.spec.as_ref();
    let flag = |f: fn(&k8s_openapi::api::core::v1::PodSpec) -> Option<bool>| {
        spec.and_then(f).unwrap_or(false)
    };
    let pid = if flag(|s| s.host_pid) {
        Node
    } else if flag(|s| s.share_process_namespace) {
        PodNs
    } else {
        Ctr
    };
    api::NamespaceOption {
        network: (if flag(|s| s.host_network) {
            Node
        } else {
            PodNs
        }) as i32,
        pid: pid as i32,
        ipc: (if flag(|s| s.host_ipc) { Node } else { PodNs }) as i32,
        target_id: String::new(),
        userns_options: Some(api::UserNamespace {
            mode: Node as i32,
            ..Default::default()
        }),
    }
}

/// True when any container (regular, init or ephemeral) is privileged; the sandbox must then
/// be privileged too.
pub fn has_privileged_container(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let privileged = |sc: Option<&SecurityContext>| sc.and_then(|s| s.privileged) == Some(true);
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| privileged(c.security_context.as_ref()))
        || spec
            .ephemeral_containers
            .iter()
            .flatten()
            .any(|c| privileged(c.security_context.as_ref()))
}

/// Rejects security settings CRI cannot express on this node, before anything is created:
/// `Localhost` profiles without a name, unknown profile types and user namespaces.
pub fn validate_pod_security(pod: &Pod) -> Result<(), ConfigError> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(());
    };
    if spec.host_users == Some(false) {
        return Err(ConfigError::Invalid(
            "user namespaces (hostUsers: false) are not supported by this node".into(),
        ));
    }
    let psc = spec.security_context.as_ref();
    let check_seccomp = |p: Option<&SeccompProfile>| -> Result<(), ConfigError> {
        match p {
            Some(p)
                if p.type_ == "Localhost"
                    && p.localhost_profile.as_deref().unwrap_or("").is_empty() =>
            {
                Err(ConfigError::Invalid(
                    "localhostProfile must be set if seccompProfile type is Localhost.".into(),
                ))
            }
            _ => Ok(()),
        }
    };
    check_seccomp(psc.and_then(|s| s.seccomp_profile.as_ref()))?;
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        check_seccomp(
            c.security_context
                .as_ref()
                .and_then(|s| s.seccomp_profile.as_ref()),
        )?;
        if let Some(p) = apparmor_profile(pod, c) {
            match p.type_.as_str() {
                "RuntimeDefault" | "Unconfined" => {}
                "Localhost" if p.localhost_profile.is_some() => {}
                "Localhost" => {
                    return Err(ConfigError::Invalid(
                        "missing localhost apparmor profile name".into(),
                    ))
                }
                other => {
                    return Err(ConfigError::Invalid(format!(
                        "unknown apparmor profile type: {other:?}"
                    )))
                }
            }
        }
    }
    Ok(())
}

/// The container's CRI security context with default node options; see
/// [`linux_container_security_context_with`].
pub fn linux_container_security_context(
    pod: &Pod,
    container: &Container,
) -> api::LinuxContainerSecurityContext {
    linux_container_security_context_with(pod, container, &SecurityOptions::default())
}

/// The container's CRI security context: user and groups (container over pod, fsGroup and
/// supplementalGroups added), privileged, read-only rootfs, capabilities passed as written
/// (containerd adds the `CAP_` prefix itself), no_new_privs from allowPrivilegeEscalation:
/// false, seccomp and AppArmor profiles, pod namespaces, masked/read-only /proc paths.
#[allow(deprecated)] // apparmor_profile: containerd 1.6 reads only the deprecated string.
pub fn linux_container_security_context_with(
    pod: &Pod,
    container: &Container,
    opts: &SecurityOptions,
) -> api::LinuxContainerSecurityContext {
    let eff = effective_security_context(pod, container);
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let privileged = eff.privileged.unwrap_or(false);

    let mut groups: Vec<i64> = Vec::new();
    if let Some(psc) = psc {
        groups.extend(psc.fs_group);
        groups.extend(psc.supplemental_groups.iter().flatten().copied());
    }
    let (masked, readonly) = if privileged || eff.proc_mount.as_deref() == Some("Unmasked") {
        (Vec::new(), Vec::new())
    } else {
        (
            DEFAULT_MASKED_PATHS.iter().map(|s| s.to_string()).collect(),
            DEFAULT_READONLY_PATHS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        )
    };
    let (apparmor, apparmor_profile) = match apparmor_profile(pod, container) {
        Some(p) => runtime_apparmor(&p),
        None => (None, String::new()),
    };
    api::LinuxContainerSecurityContext {
        capabilities: eff.capabilities.as_ref().map(|c| api::Capability {
            add_capabilities: c.add.clone().unwrap_or_default(),
            drop_capabilities: c.drop.clone().unwrap_or_default(),
            add_ambient_capabilities: Vec::new(),
        }),
        privileged,
        namespace_options: Some(namespace_options(pod)),
        selinux_options: eff.se_linux_options.as_ref().map(selinux),
        run_as_user: eff.run_as_user.map(|value| api::Int64Value { value }),
        run_as_group: eff.run_as_group.map(|value| api::Int64Value { value }),
        run_as_username: String::new(),
        readonly_rootfs: eff.read_only_root_filesystem.unwrap_or(false),
        supplemental_groups: groups,
        supplemental_groups_policy: supplemental_groups_policy(pod),
        no_new_privs: eff.allow_privilege_escalation == Some(false),
        masked_paths: masked,
        readonly_paths: readonly,
        seccomp: Some(container_seccomp(pod, container, opts)),
        apparmor,
        apparmor_profile,
        seccomp_profile_path: String::new(),
    }
}

/// The sandbox's CRI security context: namespaces, pod runAsUser/runAsGroup, fsGroup and
/// supplementalGroups, privileged when any container is, and `RuntimeDefault` seccomp for the
/// pause process whatever the containers use (as upstream, issue 84623).
pub fn sandbox_security_context(pod: &Pod) -> api::LinuxSandboxSecurityContext {
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let mut groups: Vec<i64> = Vec::new();
    if let Some(psc) = psc {
        groups.extend(psc.fs_group);
        groups.extend(psc.supplemental_groups.iter().flatten().copied());
    }
    api::LinuxSandboxSecurityContext {
        namespace_options: Some(namespace_options(pod)),
        selinux_options: psc.and_then(|s| s.se_linux_options.as_ref()).map(selinux),
        run_as_user: psc
            .and_then(|s| s.run_as_user)
            .map(|value| api::Int64Value { value }),
        run_as_group: psc
            .and_then(|s| s.run_as_group)
            .map(|value| api::Int64Value { value }),
        readonly_rootfs: false,
        supplemental_groups: groups,
        supplemental_groups_policy: supplemental_groups_policy(pod),
        privileged: has_privileged_container(pod),
        seccomp: Some(api::SecurityProfile {
            profile_type: ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        }),
        ..Default::default()
    }
}

fn supplemental_groups_policy(pod: &Pod) -> i32 {
    let policy = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|s| s.supplemental_groups_policy.as_deref());
    match policy {
        Some("Strict") => api::SupplementalGroupsPolicy::Strict as i32,
        _ => api::SupplementalGroupsPolicy::Merge as i32,
    }
}

fn selinux(o: &SELinuxOptions) -> api::SeLinuxOption {
    api::SeLinuxOption {
        user: o.user.clone().unwrap_or_default(),
        role: o.role.clone().unwrap_or_default(),
        r#type: o.type_.clone().unwrap_or_default(),
        level: o.level.clone().unwrap_or_default(),
    }
}

/// The container's seccomp profile: the container's field, else the pod's, else
/// `RuntimeDefault` with seccompDefault and `Unconfined` without (upstream's getSeccompProfile).
pub fn container_seccomp(
    pod: &Pod,
    container: &Container,
    opts: &SecurityOptions,
) -> api::SecurityProfile {
    let field = container
        .security_context
        .as_ref()
        .and_then(|s| s.seccomp_profile.as_ref())
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.security_context.as_ref())
                .and_then(|s| s.seccomp_profile.as_ref())
        });
    let profile = |t: ProfileType, r: String| api::SecurityProfile {
        profile_type: t as i32,
        localhost_ref: r,
    };
    match field.map(|p| (p.type_.as_str(), p.localhost_profile.as_deref())) {
        None if opts.seccomp_default => profile(ProfileType::RuntimeDefault, String::new()),
        None => profile(ProfileType::Unconfined, String::new()),
        Some(("RuntimeDefault", _)) => profile(ProfileType::RuntimeDefault, String::new()),
        Some(("Localhost", Some(name))) if !name.is_empty() => profile(
            ProfileType::Localhost,
            opts.seccomp_profile_root
                .join(name)
                .to_string_lossy()
                .into_owned(),
        ),
        // A Localhost profile without a name is rejected by validate_pod_security before any
        // container is created; the strict default is the safe reading here.
        Some(("Localhost", _)) => profile(ProfileType::RuntimeDefault, String::new()),
        Some(_) => profile(ProfileType::Unconfined, String::new()),
    }
}

/// The container's AppArmor profile: its own field, then the deprecated per-container pod
/// annotation, then the pod's field (upstream's apparmor.GetProfile).
pub fn apparmor_profile(pod: &Pod, container: &Container) -> Option<AppArmorProfile> {
    if let Some(p) = container
        .security_context
        .as_ref()
        .and_then(|s| s.app_armor_profile.clone())
    {
        return Some(p);
    }
    let key = format!("{APPARMOR_ANNOTATION_PREFIX}{}", container.name);
    if let Some(v) = pod.metadata.annotations.as_ref().and_then(|a| a.get(&key)) {
        let p = |t: &str, l: Option<&str>| AppArmorProfile {
            type_: t.to_string(),
            localhost_profile: l.map(str::to_string),
        };
        match v.as_str() {
            "runtime/default" => return Some(p("RuntimeDefault", None)),
            "unconfined" => return Some(p("Unconfined", None)),
            v => {
                if let Some(name) = v.strip_prefix("localhost/") {
                    return Some(p("Localhost", Some(name)));
                }
            }
        }
    }
    pod.spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|s| s.app_armor_profile.clone())
}

/// CRI's AppArmor profile and the deprecated string form older runtimes read.
fn runtime_apparmor(p: &AppArmorProfile) -> (Option<api::SecurityProfile>, String) {
    let profile = |t: ProfileType, r: &str| {
        Some(api::SecurityProfile {
            profile_type: t as i32,
            localhost_ref: r.to_string(),
        })
    };
    match (p.type_.as_str(), p.localhost_profile.as_deref()) {
        ("RuntimeDefault", _) => (
            profile(ProfileType::RuntimeDefault, ""),
            "runtime/default".into(),
        ),
        ("Unconfined", _) => (profile(ProfileType::Unconfined, ""), "unconfined".into()),
        ("Localhost", Some(name)) => (
            profile(ProfileType::Localhost, name),
            format!("localhost/{name}"),
        ),
        // Rejected by validate_pod_security; leave the runtime's default in place.
        _ => (None, String::new()),
    }
}

/// Checks `runAsNonRoot` against the user the container will run as: its runAsUser, else the
/// image's numeric user (`image_uid`, 0 when the image names none) or user name, with
/// upstream's messages.
pub fn verify_run_as_non_root(
    pod: &Pod,
    container: &Container,
    image_uid: Option<i64>,
    image_username: &str,
) -> Result<(), ConfigError> {
    let eff = effective_security_context(pod, container);
    if eff.run_as_non_root != Some(true) {
        return Ok(());
    }
    let pod_desc = format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or(""),
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.uid.as_deref().unwrap_or("")
    );
    if let Some(uid) = eff.run_as_user {
        if uid == 0 {
            return Err(ConfigError::Invalid(format!(
                "container's runAsUser breaks non-root policy (pod: {pod_desc:?}, container: {})",
                container.name
            )));
        }
        return Ok(());
    }
    match image_uid {
        Some(0) => Err(ConfigError::Invalid(format!(
            "container has runAsNonRoot and image will run as root (pod: {pod_desc:?}, container: {})",
            container.name
        ))),
        None if !image_username.is_empty() => Err(ConfigError::Invalid(format!(
            "container has runAsNonRoot and image has non-numeric user ({image_username}), cannot verify user is non-root (pod: {pod_desc:?}, container: {})",
            container.name
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(meta: serde_json::Value, spec: serde_json::Value) -> Pod {
        let mut m = json!({"name": "p", "namespace": "ns", "uid": "u1"});
        if let (Some(m), Some(extra)) = (m.as_object_mut(), meta.as_object()) {
            m.extend(extra.clone());
        }
        serde_json::from_value(json!({"metadata": m, "spec": spec})).expect("test pod")
    }

    fn first(p: &Pod) -> &Container {
        &p.spec.as_ref().expect("spec").containers[0]
    }

    #[test]
    fn defaults_for_a_plain_container() {
        let p = pod(json!({}), json!({"containers": [{"name": "c"}]}));
        let sc = linux_container_security_context(&p, first(&p));
        assert!(!sc.privileged && !sc.no_new_privs && !sc.readonly_rootfs);
        assert_eq!(sc.run_as_user, None);
        assert!(sc.capabilities.is_none());
        assert_eq!(sc.masked_paths.len(), DEFAULT_MASKED_PATHS.len());
        assert_eq!(sc.readonly_paths, DEFAULT_READONLY_PATHS);
        let seccomp = sc.seccomp.expect("seccomp");
        assert_eq!(seccomp.profile_type, ProfileType::Unconfined as i32);
        let ns = sc.namespace_options.expect("ns");
        assert_eq!(
            (ns.network, ns.pid, ns.ipc),
            (
                api::NamespaceMode::Pod as i32,
                api::NamespaceMode::Container as i32,
                api::NamespaceMode::Pod as i32
            )
        );
        let sd = SecurityOptions {
            seccomp_default: true,
            ..Default::default()
        };
        let sc = linux_container_security_context_with(&p, first(&p), &sd);
        assert_eq!(
            sc.seccomp.map(|s| s.profile_type),
            Some(ProfileType::RuntimeDefault as i32)
        );
    }

    #[test]
    #[allow(deprecated)]
    fn full_mapping() {
        let p = pod(
            json!({"annotations": {"container.apparmor.security.beta.kubernetes.io/c": "localhost/k8s-nginx"}}),
            json!({
                "shareProcessNamespace": true, "hostNetwork": true,
                "securityContext": {"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000,
                    "supplementalGroups": [4000, 5000], "runAsNonRoot": true,
                    "seccompProfile": {"type": "RuntimeDefault"},
                    "seLinuxOptions": {"level": "s0:c123,c456"}},
                "containers": [{"name": "c", "securityContext": {
                    "runAsUser": 1001, "readOnlyRootFilesystem": true,
                    "allowPrivilegeEscalation": false, "procMount": "Unmasked",
                    "capabilities": {"add": ["NET_ADMIN", "SYS_TIME"], "drop": ["ALL"]},
                    "seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/audit.json"}}}]
            }),
        );
        let sc = linux_container_security_context(&p, first(&p));
        assert_eq!(sc.run_as_user, Some(api::Int64Value { value: 1001 }));
        assert_eq!(sc.run_as_group, Some(api::Int64Value { value: 3000 }));
        assert_eq!(sc.supplemental_groups, vec![2000, 4000, 5000]);
        assert!(sc.readonly_rootfs && sc.no_new_privs && !sc.privileged);
        let caps = sc.capabilities.expect("caps");
        assert_eq!(caps.add_capabilities, vec!["NET_ADMIN", "SYS_TIME"]);
        assert_eq!(caps.drop_capabilities, vec!["ALL"]);
        assert!(sc.masked_paths.is_empty() && sc.readonly_paths.is_empty());
        assert_eq!(
            sc.seccomp,
            Some(api::SecurityProfile {
                profile_type: ProfileType::Localhost as i32,
                localhost_ref: "/var/lib/kubelet/seccomp/profiles/audit.json".into()
            })
        );
        assert_eq!(
            sc.apparmor,
            Some(api::SecurityProfile {
                profile_type: ProfileType::Localhost as i32,
                localhost_ref: "k8s-nginx".into()
            })
        );
        assert_eq!(sc.apparmor_profile, "localhost/k8s-nginx");
        assert_eq!(
            sc.selinux_options.map(|o| o.level),
            Some("s0:c123,c456".into())
        );
        let ns = sc.namespace_options.expect("ns");
        assert_eq!(ns.network, api::NamespaceMode::Node as i32);
        assert_eq!(ns.pid, api::NamespaceMode::Pod as i32);

        let sb = sandbox_security_context(&p);
        assert_eq!(sb.run_as_user, Some(api::Int64Value { value: 1000 }));
        assert_eq!(sb.supplemental_groups, vec![2000, 4000, 5000]);
        assert!(!sb.privileged && !sb.readonly_rootfs);
        assert_eq!(
            sb.seccomp.map(|s| s.profile_type),
            Some(ProfileType::RuntimeDefault as i32)
        );
        // Container runAsUser 1001 satisfies runAsNonRoot whatever the image says.
        assert!(verify_run_as_non_root(&p, first(&p), Some(0), "").is_ok());
    }

    #[test]
    fn privileged_and_host_namespaces() {
        let p = pod(
            json!({}),
            json!({"hostPID": true, "hostIPC": true,
                   "initContainers": [{"name": "i", "securityContext": {"privileged": true}}],
                   "containers": [{"name": "c", "securityContext": {"privileged": true,
                       "seccompProfile": {"type": "Unconfined"}}}]}),
        );
        let sc = linux_container_security_context(&p, first(&p));
        assert!(sc.privileged);
        assert!(sc.masked_paths.is_empty() && sc.readonly_paths.is_empty());
        let ns = sc.namespace_options.expect("ns");
        assert_eq!(
            (ns.pid, ns.ipc),
            (
                api::NamespaceMode::Node as i32,
                api::NamespaceMode::Node as i32
            )
        );
        assert!(sandbox_security_context(&p).privileged);
        assert!(has_privileged_container(&p));
    }

    #[test]
    fn run_as_non_root_checks() {
        let p = pod(
            json!({}),
            json!({"securityContext": {"runAsNonRoot": true}, "containers": [{"name": "c"}]}),
        );
        let c = first(&p);
        assert_eq!(
            verify_run_as_non_root(&p, c, Some(0), "").map_err(|e| e.to_string()),
            Err("container has runAsNonRoot and image will run as root (pod: \"p_ns(u1)\", container: c)".into())
        );
        assert!(verify_run_as_non_root(&p, c, Some(65534), "").is_ok());
        assert!(verify_run_as_non_root(&p, c, None, "nobody")
            .map_err(|e| e.to_string())
            .is_err_and(|e| e.contains("non-numeric user (nobody)")));
        let p = pod(
            json!({}),
            json!({"securityContext": {"runAsNonRoot": true, "runAsUser": 0}, "containers": [{"name": "c"}]}),
        );
        assert!(verify_run_as_non_root(&p, first(&p), Some(1), "")
            .map_err(|e| e.to_string())
            .is_err_and(|e| e.starts_with("container's runAsUser breaks non-root policy")));
    }

    #[test]
    fn validation() {
        let bad = pod(
            json!({}),
            json!({"containers": [{"name": "c", "securityContext": {"seccompProfile": {"type": "Localhost"}}}]}),
        );
        assert!(validate_pod_security(&bad).is_err());
        let bad = pod(
            json!({}),
            json!({"securityContext": {"appArmorProfile": {"type": "Localhost"}}, "containers": [{"name": "c"}]}),
        );
        assert!(validate_pod_security(&bad).is_err());
        let bad = pod(
            json!({}),
            json!({"hostUsers": false, "containers": [{"name": "c"}]}),
        );
        assert!(validate_pod_security(&bad).is_err());
        let ok = pod(
            json!({}),
            json!({"securityContext": {"appArmorProfile": {"type": "RuntimeDefault"}}, "containers": [{"name": "c"}]}),
        );
        assert!(validate_pod_security(&ok).is_ok());
        #[allow(deprecated)]
        let s = linux_container_security_context(&ok, first(&ok)).apparmor_profile;
        assert_eq!(s, "runtime/default");
    }
}

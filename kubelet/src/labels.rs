//! Label and annotation keys the kubelet puts on CRI sandboxes and containers, with upstream's
//! names (pkg/kubelet/types/labels.go, kuberuntime/labels.go), so tools that read them
//! (crictl, log collectors) see what they would on an upstream node.

/// Sandbox and container label: the pod's name.
pub const POD_NAME: &str = "io.kubernetes.pod.name";
/// Sandbox and container label: the pod's namespace.
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// Sandbox and container label: the pod's UID; the key the kubelet groups runtime state by.
pub const POD_UID: &str = "io.kubernetes.pod.uid";
/// Container label: the container's name in the pod spec.
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// Sandbox label set by upstream on every sandbox it creates.
pub const KUBELET_MANAGED: &str = "io.kubernetes.container.managed-by";
/// Value of [`KUBELET_MANAGED`] on upstream kubelets; oxlet uses the same so the sandbox
/// garbage collector of either would recognise the other's.
pub const KUBELET_MANAGED_VALUE: &str = "kubelet";

/// Container annotation: restart count of the container at creation.
pub const CONTAINER_RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
/// Container annotation: hash of the container spec (a changed spec restarts it).
pub const CONTAINER_HASH: &str = "io.kubernetes.container.hash";
/// Container annotation: terminationMessagePath of the spec.
pub const CONTAINER_TERMINATION_MESSAGE_PATH: &str =
    "io.kubernetes.container.terminationMessagePath";
/// Container annotation: terminationMessagePolicy of the spec.
pub const CONTAINER_TERMINATION_MESSAGE_POLICY: &str =
    "io.kubernetes.container.terminationMessagePolicy";
/// Container annotation: the pod's terminationGracePeriodSeconds at creation.
pub const POD_TERMINATION_GRACE_PERIOD: &str = "io.kubernetes.pod.terminationGracePeriod";
/// Container annotation: JSON of the container's preStop hook, so it runs even when the pod
/// object is gone.
pub const CONTAINER_PRESTOP_HANDLER: &str = "io.kubernetes.container.preStopHandler";
/// Container annotation: `init` for init containers, `regular` otherwise (oxlet-specific;
/// upstream finds init containers by name in the spec, which is gone once the pod is deleted).
pub const CONTAINER_TYPE: &str = "io.kubernetes.container.type";
/// Sandbox annotation: the pod's `kubernetes.io/config.source` (api, file).
pub const CONFIG_SOURCE: &str = "kubernetes.io/config.source";
/// Sandbox annotation: when the kubelet first saw the pod.
pub const CONFIG_SEEN: &str = "kubernetes.io/config.seen";
/// Pod annotation on mirror pods (the API copy of a static pod).
pub const CONFIG_MIRROR: &str = "kubernetes.io/config.mirror";
/// Container annotation: JSON of the container's ports.
pub const CONTAINER_PORTS: &str = "io.kubernetes.container.ports";
/// Container annotation: the pod's deletionGracePeriodSeconds when the container was created.
pub const POD_DELETION_GRACE_PERIOD: &str = "io.kubernetes.pod.deletionGracePeriod";

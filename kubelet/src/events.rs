//! Events about pods, with upstream's reasons (pkg/kubelet/events/event.go). Producers call an
//! [`EventSink`] synchronously; the kube-backed sink queues and posts in the background so a
//! slow API server never stalls a pod worker or a probe.

use k8s_openapi::api::core::v1::{ObjectReference, Pod};

/// Upstream's event reasons, so `kubectl describe` reads the same.
pub mod reason {
    /// Pulling an image.
    pub const PULLING: &str = "Pulling";
    /// An image was pulled.
    pub const PULLED: &str = "Pulled";
    /// A pull failed.
    pub const FAILED: &str = "Failed";
    /// Waiting to retry a pull or a crashed container.
    pub const BACK_OFF: &str = "BackOff";
    /// The image was present locally and the policy allows it.
    pub const PULLED_PRESENT: &str = "Pulled";
    /// A container was created.
    pub const CREATED: &str = "Created";
    /// A container was started.
    pub const STARTED: &str = "Started";
    /// A container is being stopped.
    pub const KILLING: &str = "Killing";
    /// A probe failed.
    pub const UNHEALTHY: &str = "Unhealthy";
    /// A volume could not be set up.
    pub const FAILED_MOUNT: &str = "FailedMount";
    /// The sandbox could not be created.
    pub const FAILED_CREATE_POD_SANDBOX: &str = "FailedCreatePodSandBox";
    /// The sandbox changed and the pod's containers are recreated.
    pub const SANDBOX_CHANGED: &str = "SandboxChanged";
    /// A postStart hook failed.
    pub const FAILED_POST_START_HOOK: &str = "FailedPostStartHook";
    /// A preStop hook failed.
    pub const FAILED_PRE_STOP_HOOK: &str = "FailedPreStopHook";
    /// The image pull policy forbids pulling a missing image.
    pub const ERR_IMAGE_NEVER_PULL: &str = "ErrImageNeverPull";
    /// The pod's spec cannot run here (hostPort clash, unsupported field).
    pub const FAILED_VALIDATION: &str = "FailedValidation";
    /// Registered / node events.
    pub const NODE_READY: &str = "NodeReady";
}

/// Normal or Warning, as the Event `type` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Informational.
    Normal,
    /// Something went wrong.
    Warning,
}

impl EventType {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// Where events go. `field_path` names a container as upstream does
/// (`spec.containers{name}`, `spec.initContainers{name}`), or is empty for the pod.
pub trait EventSink: Send + Sync {
    /// Records one event about `object`; never blocks.
    fn event(&self, object: &ObjectReference, type_: EventType, reason: &str, message: &str);
}

/// The reference to `pod` (and optionally one of its containers) that events point at.
pub fn pod_ref(pod: &Pod, field_path: Option<String>) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: pod.metadata.name.clone(),
        namespace: pod.metadata.namespace.clone(),
        uid: pod.metadata.uid.clone(),
        resource_version: pod.metadata.resource_version.clone(),
        field_path,
    }
}

/// `spec.containers{name}` or `spec.initContainers{name}`.
pub fn container_field_path(name: &str, init: bool) -> String {
    if init {
        format!("spec.initContainers{{{name}}}")
    } else {
        format!("spec.containers{{{name}}}")
    }
}

/// A sink that keeps events in memory, for unit tests.
#[derive(Debug, Default)]
pub struct MemorySink {
    events: std::sync::Mutex<Vec<(ObjectReference, EventType, String, String)>>,
}

impl MemorySink {
    /// Everything recorded so far: (object, type, reason, message).
    pub fn events(&self) -> Vec<(ObjectReference, EventType, String, String)> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

impl EventSink for MemorySink {
    fn event(&self, object: &ObjectReference, type_: EventType, reason: &str, message: &str) {
        if let Ok(mut e) = self.events.lock() {
            e.push((
                object.clone(),
                type_,
                reason.to_string(),
                message.to_string(),
            ));
        }
    }
}

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

/// Posts events to the API in the background, aggregating repeats of the same
/// (object, reason, message) into one Event with a growing `count`, as upstream's recorder does.
pub struct KubeEventSink {
    tx: tokio::sync::mpsc::Sender<(ObjectReference, EventType, String, String)>,
}

impl KubeEventSink {
    /// Starts the poster task; it ends when `cancel` fires.
    pub fn start(
        client: kube::Client,
        node_name: String,
        cancel: tokio_util::sync::CancellationToken,
    ) -> std::sync::Arc<Self> {
        // Bounded: under an event storm the oldest news is less useful than a stalled worker.
        let (tx, mut rx) =
            tokio::sync::mpsc::channel::<(ObjectReference, EventType, String, String)>(1024);
        tokio::spawn(async move {
            let mut seen: std::collections::HashMap<String, (String, i32)> =
                std::collections::HashMap::new();
            loop {
                let item = tokio::select! {
                    _ = cancel.cancelled() => break,
                    item = rx.recv() => item,
                };
                let Some((obj, type_, why, message)) = item else {
                    break;
                };
                if let Err(e) =
                    post(&client, &node_name, &mut seen, &obj, type_, &why, &message).await
                {
                    tracing::debug!(reason = %why, error = %e, "event not recorded");
                }
            }
        });
        std::sync::Arc::new(Self { tx })
    }
}

async fn post(
    client: &kube::Client,
    node: &str,
    seen: &mut std::collections::HashMap<String, (String, i32)>,
    obj: &ObjectReference,
    type_: EventType,
    reason: &str,
    message: &str,
) -> Result<(), kube::Error> {
    use k8s_openapi::api::core::v1::{Event, EventSource};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
    use kube::api::{Api, Patch, PatchParams, PostParams};

    let ns = obj.namespace.clone().unwrap_or_else(|| "default".into());
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    let key = format!(
        "{}/{}/{}/{}/{}",
        obj.uid.as_deref().unwrap_or(""),
        obj.field_path.as_deref().unwrap_or(""),
        type_.as_str(),
        reason,
        message
    );
    let now = jiff::Timestamp::now();
    if let Some((name, count)) = seen.get_mut(&key) {
        *count += 1;
        let patch = serde_json::json!({"count": *count, "lastTimestamp": Time(now)});
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    if seen.len() > 4096 {
        seen.clear();
    }
    let name = format!(
        "{}.{:x}",
        obj.name.as_deref().unwrap_or("unknown"),
        now.as_nanosecond() as u64
    );
    let ev = Event {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns),
            ..Default::default()
        },
        involved_object: obj.clone(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        type_: Some(type_.as_str().to_string()),
        source: Some(EventSource {
            component: Some("kubelet".into()),
            host: Some(node.to_string()),
        }),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        event_time: None::<MicroTime>,
        count: Some(1),
        reporting_component: Some("kubelet".into()),
        reporting_instance: Some(node.to_string()),
        ..Default::default()
    };
    api.create(&PostParams::default(), &ev).await?;
    seen.insert(key, (name, 1));
    Ok(())
}

impl EventSink for KubeEventSink {
    fn event(&self, object: &ObjectReference, type_: EventType, reason: &str, message: &str) {
        if self
            .tx
            .try_send((
                object.clone(),
                type_,
                reason.to_string(),
                message.to_string(),
            ))
            .is_err()
        {
            tracing::debug!(reason, "event queue full, dropping event");
        }
    }
}

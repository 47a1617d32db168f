//! Helpers shared by the workload controllers: errors, reflector tasks, owner references,
//! pod readiness and availability, label selectors and pod template hashing.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use futures::{Future, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::task::JoinSet;

use crate::apiserver::selectors::LabelSelector as Selector;

/// Why a reconcile failed; it is retried by the error policy.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("{action}: {source}")]
    Api {
        /// What was attempted (`create pod for rs default/web`).
        action: String,
        /// The client's error, with the server's Status.
        #[source]
        source: kube::Error,
    },
    /// An object the loop reads is malformed (bad selector, missing field).
    #[error("{0}")]
    Invalid(String),
    /// A store stopped before it was filled (the loop is shutting down).
    #[error("store for {0} never became ready")]
    StoreNotReady(&'static str),
}

/// Result of controller steps.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Wraps a client error with the action that failed.
pub fn api_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let action = action.into();
    move |source| Error::Api { action, source }
}

/// Whether a client error is the server's 404.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// The server's own words for a failed call (its Status message), else the client error.
pub fn error_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// Whether a client error is the server's 409 (conflict or already exists).
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// Retry a failed reconcile soon (upstream's rate-limited requeue, simplified).
pub fn error_policy<K>(_obj: Arc<K>, err: &Error, _ctx: Arc<impl Send + Sync>) -> Action {
    tracing::warn!(error = %err, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// Starts a reflector for `api` on `tasks` and returns its store; the task logs watch errors
/// at warn (the watcher retries with client-go's backoff) and runs until the stream ends.
pub fn spawn_reflector<K>(
    tasks: &mut JoinSet<()>,
    api: Api<K>,
    config: watcher::Config,
    what: &'static str,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
    tasks.spawn(async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            if let Err(err) = event {
                tracing::warn!(resource = what, error = %err, "watch failed; retrying");
            }
        }
    });
    reader
}

/// Waits until `store` has its first full list.
pub async fn ready<K>(store: &Store<K>, what: &'static str) -> Result<()>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    // `wait_until_ready` wakes only the last of several tasks waiting at once (one oneshot
    // receiver behind a lock), and concurrent reconciles do wait at once: each wait is cut
    // short and retried, so a lost wake-up costs 100 ms, not the reconcile.
    loop {
        match tokio::time::timeout(Duration::from_millis(100), store.wait_until_ready()).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(_)) => return Err(Error::StoreNotReady(what)),
            Err(_) => continue,
        }
    }
}

/// Drives a controller stream until it ends or `shutdown` fires, logging reconcile errors
/// at debug (the error policy already logged them), while `tasks` keep the reflectors alive.
pub async fn drive<S, T, E>(
    stream: S,
    mut tasks: JoinSet<()>,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), String>
where
    S: futures::Stream<Item = std::result::Result<T, E>>,
    E: std::fmt::Display,
{
    futures::pin_mut!(stream);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            item = stream.next() => match item {
                Some(Ok(_)) => {}
                Some(Err(err)) => tracing::debug!(error = %err, "reconcile"),
                None => return if shutdown.is_cancelled() { Ok(()) } else { Err("controller stream ended".into()) },
            },
            Some(res) = tasks.join_next(), if !tasks.is_empty() => {
                if !shutdown.is_cancelled() {
                    return Err(format!("reflector task ended: {res:?}"));
                }
            }
        }
    }
}

/// Runs `fut` until shutdown; used by loops that are not `Controller`s.
pub async fn until_shutdown<F: Future<Output = Result<(), String>>>(
    fut: F,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<(), String> {
    tokio::select! {
        _ = shutdown.cancelled() => Ok(()),
        res = fut => res,
    }
}

/// Most distinct events kept for folding repeats; past it the memory starts afresh.
const EVENT_KEYS: usize = 4096;

/// Publishes Events for one controller. kube-rs's `Recorder` folds every event with the
/// same object, reason and action into one series whatever its note, so "Created pod: a"
/// then "Created pod: b" would show only the first; here, as with upstream's event
/// correlator, only a repeat of the same note raises a series count and a new note is a new
/// Event.
#[derive(Clone)]
pub struct Events {
    client: kube::Client,
    reporter: Reporter,
    recorders: Arc<std::sync::Mutex<std::collections::HashMap<String, Recorder>>>,
}

impl Events {
    /// Events reported as `controller` (upstream's component names, e.g.
    /// `replicaset-controller`).
    pub fn new(client: &kube::Client, controller: &str) -> Self {
        Self {
            client: client.clone(),
            reporter: Reporter {
                controller: controller.to_string(),
                instance: None,
            },
            recorders: Arc::default(),
        }
    }

    /// Publishes one event about `regarding`; failures are logged, never fatal (as upstream's
    /// broadcaster drops events it cannot write).
    pub async fn publish(
        &self,
        regarding: &k8s_openapi::api::core::v1::ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let key = format!(
            "{}/{}/{}/{reason}/{action}/{note}",
            regarding.uid.as_deref().unwrap_or_default(),
            regarding.namespace.as_deref().unwrap_or_default(),
            regarding.name.as_deref().unwrap_or_default(),
        );
        let recorder = {
            let mut map = self.recorders.lock().unwrap_or_else(|e| e.into_inner());
            if map.len() >= EVENT_KEYS && !map.contains_key(&key) {
                map.clear();
            }
            map.entry(key)
                .or_insert_with(|| Recorder::new(self.client.clone(), self.reporter.clone()))
                .clone()
        };
        let ev = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(err) = recorder.publish(&ev, regarding).await {
            tracing::debug!(error = %err, reason, "event not recorded");
        }
    }
}

/// The event publisher of `controller`.
pub fn recorder(client: &kube::Client, controller: &str) -> Events {
    Events::new(client, controller)
}

/// Publishes a Normal event about `obj`.
pub async fn event<K: Resource<DynamicType = ()>>(
    recorder: &Events,
    obj: &K,
    reason: &str,
    action: &str,
    note: String,
) {
    recorder
        .publish(
            &obj.object_ref(&()),
            EventType::Normal,
            reason,
            action,
            note,
        )
        .await;
}

/// Publishes a Warning event about `obj` (a failed action).
pub async fn warning<K: Resource<DynamicType = ()>>(
    recorder: &Events,
    obj: &K,
    reason: &str,
    action: &str,
    note: String,
) {
    recorder
        .publish(
            &obj.object_ref(&()),
            EventType::Warning,
            reason,
            action,
            note,
        )
        .await;
}

/// The owner reference with `controller: true` in `meta`, if any.
pub fn controller_ref(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|r| r.controller == Some(true))
}

/// Whether `meta` is controlled by the object with `uid`.
pub fn is_controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    controller_ref(meta).is_some_and(|r| r.uid == uid)
}

/// A controller owner reference to `owner` (`blockOwnerDeletion: true`, as upstream's
/// `NewControllerRef`).
pub fn new_controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.name_any(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The `ownerReferences` a dependent has after adopting (`owner` added as controller) or
/// releasing (`owner`'s uid removed), as a merge-patch body with a uid precondition.
pub fn owner_refs_patch(
    meta: &ObjectMeta,
    add: Option<OwnerReference>,
    remove_uid: Option<&str>,
) -> serde_json::Value {
    let mut refs: Vec<OwnerReference> = meta
        .owner_references
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| Some(r.uid.as_str()) != remove_uid)
        .collect();
    if let Some(add) = add {
        refs.retain(|r| r.uid != add.uid);
        refs.push(add);
    }
    serde_json::json!({"metadata": {"ownerReferences": refs, "uid": meta.uid}})
}

/// Converts a typed label selector to the API server's selector (`None` matches nothing).
pub fn selector(sel: Option<&LabelSelector>) -> Result<Selector> {
    let v = serde_json::to_value(sel).map_err(|e| Error::Invalid(format!("selector: {e}")))?;
    Selector::from_label_selector_json(&v).map_err(|e| Error::Invalid(e.to_string()))
}

/// A selector from a plain label map (Services' `spec.selector`).
pub fn map_selector(labels: &BTreeMap<String, String>) -> Result<Selector> {
    selector(Some(&LabelSelector {
        match_labels: Some(labels.clone()),
        match_expressions: None,
    }))
}

/// Whether a pod counts as active (not terminal and not being deleted), as upstream's
/// `controller.IsPodActive`.
pub fn pod_is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded" | "Failed")) && pod.metadata.deletion_timestamp.is_none()
}

/// The pod's `Ready` condition, if true, with its transition time.
fn ready_since(pod: &Pod) -> Option<Option<Timestamp>> {
    pod.status
        .as_ref()?
        .conditions
        .as_deref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .map(|c| c.last_transition_time.as_ref().map(|t| t.0))
}

/// Whether the pod's `Ready` condition is true.
pub fn pod_is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// Whether the pod has been ready for `min_ready_seconds` at `now` (upstream's
/// `IsPodAvailable`).
pub fn pod_is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(None) => false,
        Some(Some(t)) => now.as_second() - t.as_second() >= i64::from(min_ready_seconds),
    }
}

/// Upstream's `rand.SafeEncodeString` alphabet: no vowels, no confusable characters.
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// 32-bit FNV-1a.
pub fn fnv32a(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in data {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Upstream's `SafeEncodeString`: each byte mapped onto [`ALPHANUMS`].
pub fn safe_encode(s: &str) -> String {
    s.bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

/// The stable hash of a pod template (and collision count), encoded as upstream's
/// `ComputeHash`: FNV-1a over a canonical (sorted-key) JSON form, printed in decimal and safe
/// encoded. The exact bytes differ from Go's object dump, so hashes are stable for oxlet but
/// not equal to upstream's for the same template.
pub fn template_hash<T: serde::Serialize>(template: &T, collision_count: Option<i32>) -> String {
    let v = serde_json::to_value(template).unwrap_or(serde_json::Value::Null);
    let mut bytes = canonical(&v).into_bytes();
    if let Some(c) = collision_count {
        bytes.extend_from_slice(&c.to_le_bytes());
    }
    safe_encode(&fnv32a(&bytes).to_string())
}

/// JSON with object keys sorted, whatever map ordering serde_json was built with.
fn canonical(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| {
                    format!(
                        "{}:{}",
                        serde_json::Value::String(k.clone()),
                        canonical(&m[k])
                    )
                })
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        serde_json::Value::Array(a) => {
            format!(
                "[{}]",
                a.iter().map(canonical).collect::<Vec<_>>().join(",")
            )
        }
        other => other.to_string(),
    }
}

/// An int-or-percent scaled against `total` (`GetScaledValueFromIntOrPercent`).
pub fn scaled_value(
    v: Option<&k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>,
    total: i32,
    round_up: bool,
    default: i32,
) -> Result<i32> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    match v {
        None => Ok(default),
        Some(IntOrString::Int(i)) => Ok(*i),
        Some(IntOrString::String(s)) => {
            let pct: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| Error::Invalid(format!("invalid value for IntOrString: {s:?}")))?;
            let scaled = i64::from(total) * pct;
            let v = if round_up {
                (scaled + 99).div_euclid(100)
            } else {
                scaled.div_euclid(100)
            };
            Ok(i32::try_from(v).unwrap_or(i32::MAX))
        }
    }
}

/// The pods in `store` in `namespace`.
pub fn pods_in(store: &Store<Pod>, namespace: &str) -> Vec<Arc<Pod>> {
    store
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
        .collect()
}

/// Labels of an object, or an empty map.
pub fn labels_of(meta: &ObjectMeta) -> BTreeMap<String, String> {
    meta.labels.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    #[test]
    fn fnv_and_encoding() {
        assert_eq!(fnv32a(b""), 0x811c_9dc5);
        assert_eq!(fnv32a(b"a"), 0xe40c_292c);
        // b'0' is 48; 48 % 27 = 21, the 22nd character.
        assert_eq!(safe_encode("0"), "4");
        assert!(safe_encode("1234567890")
            .chars()
            .all(|c| ALPHANUMS.contains(&(c as u8))));
    }

    #[test]
    fn hash_is_stable_and_sensitive() {
        let a = serde_json::json!({"metadata": {"labels": {"app": "x", "b": "y"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        let b = serde_json::json!({"spec": {"containers": [{"image": "i", "name": "c"}]}, "metadata": {"labels": {"b": "y", "app": "x"}}});
        let c = serde_json::json!({"spec": {"containers": [{"image": "j", "name": "c"}]}, "metadata": {"labels": {"b": "y", "app": "x"}}});
        assert_eq!(template_hash(&a, None), template_hash(&b, None));
        assert_ne!(template_hash(&a, None), template_hash(&c, None));
        assert_ne!(template_hash(&a, None), template_hash(&a, Some(1)));
    }

    #[test]
    fn scaled_values() {
        let p = |s: &str| Some(IntOrString::String(s.to_string()));
        let cases = [
            (p("25%"), 10, true, 3),
            (p("25%"), 10, false, 2),
            (p("100%"), 3, false, 3),
            (Some(IntOrString::Int(2)), 10, false, 2),
            (None, 10, true, 7),
        ];
        for (v, total, up, want) in cases {
            assert_eq!(
                scaled_value(v.as_ref(), total, up, 7).expect("valid"),
                want,
                "{v:?} of {total}"
            );
        }
        assert!(scaled_value(p("x%").as_ref(), 10, true, 0).is_err());
    }
}

//! Conversion between the versions that share one storage form.
//!
//! `events.k8s.io/v1` Events and core `v1` Events are the same objects upstream, stored once
//! and shown in either shape. Here they are stored in the core shape; `events.k8s.io/v1` reads
//! convert from it and writes convert to it, so an Event recorded by a kube-rs `Recorder`
//! shows up in `kubectl describe` and `kubectl get events`.

use serde_json::{Map, Value};

use crate::apiserver::resources::ResourceInfo;

/// Field pairs: (`events.k8s.io/v1` name, core `v1` name).
const EVENT_FIELDS: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
    ("reportingController", "reportingComponent"),
];

/// Whether `res` is served in a shape other than the stored one.
pub fn converts(res: &ResourceInfo) -> bool {
    is_events_v1(res)
}

fn is_events_v1(res: &ResourceInfo) -> bool {
    res.group == "events.k8s.io" && res.plural == "events"
}

fn rename(obj: &mut Value, pairs: impl Iterator<Item = (&'static str, &'static str)>) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    let mut out = Map::new();
    for (from, to) in pairs {
        if let Some(v) = map.remove(from) {
            out.insert(to.to_string(), v);
        }
    }
    map.extend(out);
}

/// The stored (core `v1`) form of an object written through `res`.
pub fn to_storage(res: &ResourceInfo, mut obj: Value) -> Value {
    if is_events_v1(res) {
        rename(&mut obj, EVENT_FIELDS.iter().copied());
        // Upstream fills the core source from the reporting controller when absent.
        if obj.get("source").is_none() {
            if let Some(c) = obj.get("reportingComponent").cloned() {
                obj["source"] = serde_json::json!({"component": c});
            }
        }
    }
    obj
}

/// The object as `res` shows it, from the stored (core `v1`) form.
pub fn from_storage(res: &ResourceInfo, mut obj: Value) -> Value {
    if is_events_v1(res) {
        rename(&mut obj, EVENT_FIELDS.iter().map(|(a, b)| (*b, *a)));
    }
    obj
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resources::find;
    use serde_json::json;

    #[test]
    fn events_round_trip_between_shapes() {
        let v1 = find("events.k8s.io", "v1", "events").expect("events.k8s.io");
        let core = find("", "v1", "events").expect("core events");
        let recorded = json!({
            "metadata": {"name": "e1", "namespace": "default"},
            "regarding": {"kind": "Pod", "name": "web"},
            "note": "0/3 nodes are available",
            "reason": "FailedScheduling",
            "type": "Warning",
            "reportingController": "default-scheduler",
            "reportingInstance": "oxlet",
            "deprecatedCount": 2,
        });
        let stored = to_storage(v1, recorded.clone());
        assert_eq!(stored["involvedObject"]["name"], "web");
        assert_eq!(stored["message"], "0/3 nodes are available");
        assert_eq!(stored["reportingComponent"], "default-scheduler");
        assert_eq!(stored["source"]["component"], "default-scheduler");
        assert_eq!(stored["count"], 2);
        assert!(stored.get("regarding").is_none());
        // Core readers see it unchanged; events.k8s.io readers get their shape back.
        assert_eq!(from_storage(core, stored.clone()), stored);
        let back = from_storage(v1, stored);
        assert_eq!(back["regarding"], recorded["regarding"]);
        assert_eq!(back["note"], recorded["note"]);
    }
}

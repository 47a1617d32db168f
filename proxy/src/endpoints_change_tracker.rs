//! Which Services' endpoints changed since the last sync, as upstream's
//! `EndpointsChangeTracker` (kubernetes/kubernetes pkg/proxy/endpointschangetracker.go),
//! with the `endpoints.kubernetes.io/last-change-trigger-time` annotations kept for
//! `kubeproxy_network_programming_duration_seconds`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use jiff::Timestamp;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::model::slice_service;
use crate::service_change_tracker::lock;

/// The annotation the EndpointSlice controller sets to the time of the change it reflects.
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// What a sync takes from the tracker.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EndpointChanges {
    /// `(namespace, service)` whose endpoints changed.
    pub services: BTreeSet<(String, String)>,
    /// Earliest trigger time per changed service, when the slices carried one.
    pub trigger_times: BTreeMap<(String, String), Timestamp>,
}

/// Pending EndpointSlice changes, shared by the watch task and the sync.
#[derive(Debug, Default)]
pub struct EndpointsChangeTracker {
    pending: Mutex<EndpointChanges>,
}

/// The parts of a slice the proxy reads.
fn relevant(s: &EndpointSlice) -> impl PartialEq + '_ {
    (slice_service(s), &s.address_type, &s.endpoints, &s.ports)
}

impl EndpointsChangeTracker {
    /// A tracker with nothing pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the move from `previous` to `current`; returns whether it matters.
    pub fn update(
        &self,
        previous: Option<&EndpointSlice>,
        current: Option<&EndpointSlice>,
    ) -> bool {
        let changed = match (previous, current) {
            (Some(p), Some(c)) => relevant(p) != relevant(c),
            (None, None) => false,
            _ => true,
        };
        if !changed {
            return false;
        }
        let mut pending = lock(&self.pending);
        for s in previous.into_iter().chain(current) {
            if let Some(key) = slice_service(s) {
                pending.services.insert(key);
            }
        }
        if let Some(c) = current {
            let trigger = c
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(TRIGGER_TIME_ANNOTATION))
                .and_then(|t| t.parse::<Timestamp>().ok());
            if let (Some(key), Some(t)) = (slice_service(c), trigger) {
                let e = pending.trigger_times.entry(key).or_insert(t);
                if t < *e {
                    *e = t;
                }
            }
        }
        true
    }

    /// Takes the pending changes.
    pub fn take(&self) -> EndpointChanges {
        std::mem::take(&mut *lock(&self.pending))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::Endpoint;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn slice(addr: &str, trigger: Option<&str>) -> EndpointSlice {
        let mut annotations = BTreeMap::new();
        if let Some(t) = trigger {
            annotations.insert(TRIGGER_TIME_ANNOTATION.to_string(), t.to_string());
        }
        EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some("ns".into()),
                name: Some("web-abc".into()),
                labels: Some([(crate::model::SERVICE_NAME_LABEL.into(), "web".into())].into()),
                annotations: Some(annotations),
                resource_version: Some(addr.into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: vec![Endpoint {
                addresses: vec![addr.into()],
                ..Default::default()
            }],
            ports: None,
        }
    }

    #[test]
    fn tracks_services_and_earliest_trigger_time() {
        let t = EndpointsChangeTracker::new();
        let a = slice("10.0.0.1", Some("2025-01-01T00:00:05Z"));
        assert!(t.update(None, Some(&a)));
        // Same endpoints, new resourceVersion: not a change.
        let mut a2 = a.clone();
        a2.metadata.resource_version = Some("2".into());
        assert!(!t.update(Some(&a), Some(&a2)));
        let b = slice("10.0.0.2", Some("2025-01-01T00:00:09Z"));
        assert!(t.update(Some(&a), Some(&b)));
        let c = t.take();
        let key = ("ns".to_string(), "web".to_string());
        assert_eq!(c.services, [key.clone()].into());
        assert_eq!(
            c.trigger_times[&key],
            "2025-01-01T00:00:05Z".parse::<Timestamp>().expect("time")
        );
        assert_eq!(t.take(), EndpointChanges::default());
    }
}

//! The EndpointSlices the proxy programs, and which Services' endpoints changed since the last
//! sync, as upstream's `EndpointsChangeTracker` and `EndpointSliceCache`
//! (kubernetes/kubernetes pkg/proxy/endpointschangetracker.go, endpointslicecache.go), with
//! the `endpoints.kubernetes.io/last-change-trigger-time` annotations kept for
//! `kubeproxy_network_programming_duration_seconds`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use jiff::Timestamp;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::Event;
use oxlet_netrules::{Endpoint, Protocol};
use tokio::sync::watch;

use crate::model::{merge_endpoints, project_slice, SliceInfo};
use crate::projection::{ObjectKey, Projections};
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

/// The slices and the pending changes, shared by the watch task and the sync.
#[derive(Debug)]
pub struct EndpointsChangeTracker {
    node_name: String,
    state: Mutex<State>,
    ready: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct State {
    slices: Projections<SliceInfo>,
    /// Slice keys by the Service they belong to. A Vec, not a set: nearly every Service has
    /// one slice, and a B-tree node per Service was a quarter of the heap at 10k Services.
    by_service: HashMap<ObjectKey, Vec<ObjectKey>>,
    pending: EndpointChanges,
}

impl EndpointsChangeTracker {
    /// An empty tracker for the proxy of node `node_name` (endpoints there are local).
    pub fn new(node_name: &str) -> Self {
        Self {
            node_name: node_name.to_owned(),
            state: Mutex::new(State::default()),
            ready: watch::channel(false).0,
        }
    }

    /// Applies one watch event; returns whether some Service's endpoints changed.
    pub fn apply(&self, ev: &Event<EndpointSlice>) -> bool {
        let node = self.node_name.as_str();
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        let changes = state.slices.apply(ev, |s| project_slice(s, node));
        for c in &changes {
            for (info, added) in [(&c.old, false), (&c.new, true)] {
                let Some(service) = info.as_ref().and_then(|i| i.service.clone()) else {
                    continue;
                };
                let slices = state.by_service.entry(service.clone()).or_default();
                if added {
                    if !slices.contains(&c.key) {
                        slices.push(c.key.clone());
                        slices.sort_unstable();
                    }
                } else {
                    slices.retain(|k| k != &c.key);
                    if slices.is_empty() {
                        state.by_service.remove(&service);
                    }
                }
                state.pending.services.insert(service);
            }
            if let Some(new) = &c.new {
                if let (Some(service), Some(t)) = (&new.service, new.trigger_time) {
                    let e = state
                        .pending
                        .trigger_times
                        .entry(service.clone())
                        .or_insert(t);
                    if t < *e {
                        *e = t;
                    }
                }
            }
        }
        let synced = state.slices.synced();
        drop(guard);
        if synced {
            self.ready.send_replace(true);
        }
        !changes.is_empty() || matches!(ev, Event::InitDone)
    }

    /// Takes the pending changes.
    pub fn take(&self) -> EndpointChanges {
        std::mem::take(&mut lock(&self.state).pending)
    }

    /// The endpoints of `service`'s port `port_name`/`protocol`, merged over its slices.
    pub fn endpoints_for(
        &self,
        service: &ObjectKey,
        port_name: &str,
        protocol: Protocol,
    ) -> Vec<Endpoint> {
        let state = lock(&self.state);
        let Some(keys) = state.by_service.get(service) else {
            return Vec::new();
        };
        merge_endpoints(
            keys.iter().filter_map(|k| state.slices.get(k)),
            port_name,
            protocol,
        )
    }

    /// Waits until the first list has been applied.
    pub async fn wait_ready(&self) {
        let mut rx = self.ready.subscribe();
        // The sender lives in `self`: it cannot be dropped while we wait.
        let _ = rx.wait_for(|ready| *ready).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::{Endpoint as KEndpoint, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn slice(name: &str, addr: &str, node: &str, trigger: Option<&str>) -> EndpointSlice {
        let mut annotations = BTreeMap::new();
        if let Some(t) = trigger {
            annotations.insert(TRIGGER_TIME_ANNOTATION.to_string(), t.to_string());
        }
        EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some("ns".into()),
                name: Some(name.into()),
                labels: Some([(crate::model::SERVICE_NAME_LABEL.into(), "web".into())].into()),
                annotations: Some(annotations),
                resource_version: Some(addr.into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: vec![KEndpoint {
                addresses: vec![addr.into()],
                node_name: Some(node.into()),
                ..Default::default()
            }],
            ports: Some(vec![EndpointPort {
                name: Some("http".into()),
                port: Some(8080),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
        }
    }

    #[test]
    fn tracks_services_endpoints_and_earliest_trigger_time() {
        let t = EndpointsChangeTracker::new("node-a");
        let a = slice(
            "web-abc",
            "10.0.0.1",
            "node-a",
            Some("2025-01-01T00:00:05Z"),
        );
        assert!(t.apply(&Event::Apply(a.clone())));
        // Same endpoints, new resourceVersion: not a change.
        let mut a2 = a.clone();
        a2.metadata.resource_version = Some("2".into());
        assert!(!t.apply(&Event::Apply(a2)));
        let b = slice(
            "web-abc",
            "10.0.0.2",
            "node-b",
            Some("2025-01-01T00:00:09Z"),
        );
        assert!(t.apply(&Event::Apply(b)));
        // A second slice of the same Service merges in.
        assert!(t.apply(&Event::Apply(slice("web-def", "10.0.0.3", "node-a", None))));
        let c = t.take();
        let key = ("ns".to_string(), "web".to_string());
        assert_eq!(c.services, [key.clone()].into());
        assert_eq!(
            c.trigger_times[&key],
            "2025-01-01T00:00:05Z".parse::<Timestamp>().expect("time")
        );
        assert_eq!(t.take(), EndpointChanges::default());
        let eps = t.endpoints_for(&key, "http", Protocol::Tcp);
        let ips: Vec<(String, bool)> = eps.iter().map(|e| (e.ip.to_string(), e.is_local)).collect();
        assert_eq!(
            ips,
            vec![("10.0.0.2".into(), false), ("10.0.0.3".into(), true)]
        );
        assert!(eps.iter().all(|e| e.port == 8080));
        assert!(t.endpoints_for(&key, "other", Protocol::Tcp).is_empty());
        assert!(t.apply(&Event::Delete(slice("web-def", "10.0.0.3", "node-a", None))));
        assert_eq!(t.endpoints_for(&key, "http", Protocol::Tcp).len(), 1);
    }
}

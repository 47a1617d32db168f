//! The Services the proxy programs, and which changed since the last sync, as upstream's
//! `ServiceChangeTracker` (kubernetes/kubernetes pkg/proxy/servicechangetracker.go).
//!
//! Fed by the Service watch; keeps each Service as its service ports (see
//! [`crate::projection`]). Only changes that alter what the proxy programs count: a status-only
//! update of a ClusterIP Service does not wake the sync loop.

use std::collections::BTreeSet;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Service;
use kube::runtime::watcher::Event;
use oxlet_netrules::{ServicePort, ServicePortName};
use tokio::sync::watch;

use crate::model::{service_ports, ServiceError};
use crate::projection::{ObjectKey, Projections};

/// A Service as the proxy keeps it: its ports (without endpoints), or why it is skipped.
pub type ServicePorts = Result<Vec<(ServicePortName, ServicePort)>, ServiceError>;

/// The Services and the pending changes, shared by the watch task (writer) and the sync.
#[derive(Debug)]
pub struct ServiceChangeTracker {
    state: Mutex<State>,
    ready: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct State {
    services: Projections<ServicePorts>,
    pending: BTreeSet<ObjectKey>,
}

impl Default for ServiceChangeTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl ServiceChangeTracker {
    /// An empty tracker, not synced yet.
    pub fn new() -> Self {
        Self {
            state: Mutex::new(State::default()),
            ready: watch::channel(false).0,
        }
    }

    /// Applies one watch event; returns whether something the proxy programs changed (then a
    /// sync should follow). Services turning malformed or valid again are changes too.
    pub fn apply(&self, ev: &Event<Service>) -> bool {
        let mut state = lock(&self.state);
        let changes = state.services.apply(ev, service_ports);
        for c in &changes {
            if let Some(Err(e)) = &c.new {
                tracing::warn!(namespace = %e.namespace, name = %e.name, reason = %e.reason, "service skipped");
            }
        }
        let synced = state.services.synced();
        state.pending.extend(changes.iter().map(|c| c.key.clone()));
        drop(state);
        if synced {
            self.ready.send_replace(true);
        }
        !changes.is_empty() || matches!(ev, Event::InitDone)
    }

    /// Takes the changed `(namespace, name)`s, leaving nothing pending.
    pub fn take(&self) -> BTreeSet<ObjectKey> {
        std::mem::take(&mut lock(&self.state).pending)
    }

    /// The ports of one Service (`None`: no such Service).
    pub fn get(&self, key: &ObjectKey) -> Option<ServicePorts> {
        lock(&self.state).services.get(key).cloned()
    }

    /// Calls `f` with every Service, under the tracker's lock (keep `f` short of I/O).
    pub fn for_each(&self, mut f: impl FnMut(&ObjectKey, &ServicePorts)) {
        let state = lock(&self.state);
        for (k, v) in state.services.iter() {
            f(k, v);
        }
    }

    /// How many Services are skipped as malformed.
    pub fn skipped(&self) -> usize {
        lock(&self.state)
            .services
            .iter()
            .filter(|(_, v)| v.is_err())
            .count()
    }

    /// Waits until the first list has been applied.
    pub async fn wait_ready(&self) {
        let mut rx = self.ready.subscribe();
        // The sender lives in `self`: it cannot be dropped while we wait.
        let _ = rx.wait_for(|ready| *ready).await;
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the maps half-updated in a way that
    // matters: the next relist replaces them. Keep going with their content.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort as KPort, ServiceSpec, ServiceStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn svc(ip: &str) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some("ns".into()),
                name: Some("a".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                ports: Some(vec![KPort {
                    port: 80,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn only_relevant_changes_count() {
        let t = ServiceChangeTracker::new();
        assert!(t.apply(&Event::Apply(svc("10.0.0.1"))));
        let mut status_only = svc("10.0.0.1");
        status_only.status = Some(ServiceStatus::default());
        status_only.metadata.resource_version = Some("7".into());
        assert!(!t.apply(&Event::Apply(status_only)));
        assert!(t.apply(&Event::Apply(svc("10.0.0.2"))));
        let key = ("ns".to_string(), "a".to_string());
        let ports = t.get(&key).expect("known").expect("valid");
        assert_eq!(
            ports[0].1.cluster_ips,
            vec!["10.0.0.2".parse::<std::net::IpAddr>().expect("ip")]
        );
        assert!(t.apply(&Event::Delete(svc("10.0.0.2"))));
        assert_eq!(t.take(), [key.clone()].into());
        assert!(t.take().is_empty());
        assert!(t.get(&key).is_none());
        // A malformed Service is kept as skipped.
        assert!(t.apply(&Event::Apply(svc("300.0.0.1"))));
        assert_eq!(t.skipped(), 1);
    }

    #[tokio::test]
    async fn ready_after_the_first_list() {
        let t = ServiceChangeTracker::new();
        t.apply(&Event::Init);
        t.apply(&Event::InitApply(svc("10.0.0.1")));
        assert!(!*t.ready.borrow());
        assert!(t.apply(&Event::InitDone));
        t.wait_ready().await;
        assert_eq!(t.take().len(), 1);
    }
}

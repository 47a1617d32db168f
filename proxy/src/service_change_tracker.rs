//! Which Services changed since the last sync, as upstream's `ServiceChangeTracker`
//! (kubernetes/kubernetes pkg/proxy/servicechangetracker.go).
//!
//! Only changes that alter what the proxy programs count: a status-only update of a
//! ClusterIP Service does not wake the sync loop.

use std::collections::BTreeSet;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Service;

use crate::model::service_ports;

/// Pending Service changes, shared by the watch task (writer) and the sync (reader).
#[derive(Debug, Default)]
pub struct ServiceChangeTracker {
    pending: Mutex<BTreeSet<(String, String)>>,
}

impl ServiceChangeTracker {
    /// A tracker with nothing pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the move from `previous` to `current` (either may be absent: add, delete).
    /// Returns whether the proxy-relevant content changed.
    pub fn update(&self, previous: Option<&Service>, current: Option<&Service>) -> bool {
        let Some(any) = current.or(previous) else {
            return false;
        };
        // Errors compare too: a Service turning malformed is a change.
        let before = previous.map(service_ports);
        let after = current.map(service_ports);
        if before == after {
            return false;
        }
        let key = (
            any.metadata.namespace.clone().unwrap_or_default(),
            any.metadata.name.clone().unwrap_or_default(),
        );
        lock(&self.pending).insert(key);
        true
    }

    /// Takes the changed `(namespace, name)`s, leaving nothing pending.
    pub fn take(&self) -> BTreeSet<(String, String)> {
        std::mem::take(&mut *lock(&self.pending))
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a set of names half-updated in a way
    // that matters: keep going with its content.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec, ServiceStatus};
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
                ports: Some(vec![ServicePort {
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
        assert!(t.update(None, Some(&svc("10.0.0.1"))));
        let mut status_only = svc("10.0.0.1");
        status_only.status = Some(ServiceStatus::default());
        status_only.metadata.resource_version = Some("7".into());
        assert!(!t.update(Some(&svc("10.0.0.1")), Some(&status_only)));
        assert!(t.update(Some(&svc("10.0.0.1")), Some(&svc("10.0.0.2"))));
        assert!(t.update(Some(&svc("10.0.0.2")), None));
        assert_eq!(t.take(), [("ns".to_string(), "a".to_string())].into());
        assert!(t.take().is_empty());
    }
}

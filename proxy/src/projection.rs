//! A reflector that keeps a projection of each object instead of the object: the change
//! trackers keep only what the proxy programs from a Service or an EndpointSlice.
//!
//! kube-runtime's `reflector::Store` keeps whole objects (metadata, managedFields, every spec
//! field): about 4 KiB for a Service and its EndpointSlice, 40 MiB at 10k Services, for the
//! few fields the rules use. This cache follows the watcher's events the same way (`Init`,
//! `InitApply`, `InitDone` swap the contents at once after a relist, so objects deleted while
//! disconnected disappear) and tells which keys changed.

use std::collections::HashMap;

use kube::runtime::watcher::Event;
use kube::Resource;

/// `(namespace, name)` of an object.
pub type ObjectKey = (String, String);

/// The key of `obj`.
pub fn key_of<K: Resource>(obj: &K) -> ObjectKey {
    let meta = obj.meta();
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// One changed key: its projection before and after (`None`: absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change<V> {
    /// The object's key.
    pub key: ObjectKey,
    /// The projection before the event.
    pub old: Option<V>,
    /// The projection after the event.
    pub new: Option<V>,
}

/// Projections by key, fed with watcher events.
#[derive(Debug)]
pub struct Projections<V> {
    current: HashMap<ObjectKey, V>,
    relist: Option<HashMap<ObjectKey, V>>,
    synced: bool,
}

impl<V> Default for Projections<V> {
    fn default() -> Self {
        Self {
            current: HashMap::new(),
            relist: None,
            synced: false,
        }
    }
}

impl<V: Clone + PartialEq> Projections<V> {
    /// Applies one watcher event, projecting objects with `project`; returns the keys whose
    /// projection changed (an update that changes nothing the projection keeps is no change).
    pub fn apply<K: Resource>(
        &mut self,
        ev: &Event<K>,
        project: impl Fn(&K) -> V,
    ) -> Vec<Change<V>> {
        match ev {
            Event::Apply(obj) => {
                let key = key_of(obj);
                let new = project(obj);
                let old = self.current.insert(key.clone(), new.clone());
                if old.as_ref() == Some(&new) {
                    return Vec::new();
                }
                vec![Change {
                    key,
                    old,
                    new: Some(new),
                }]
            }
            Event::Delete(obj) => {
                let key = key_of(obj);
                match self.current.remove(&key) {
                    Some(old) => vec![Change {
                        key,
                        old: Some(old),
                        new: None,
                    }],
                    None => Vec::new(),
                }
            }
            Event::Init => {
                self.relist = Some(HashMap::new());
                Vec::new()
            }
            Event::InitApply(obj) => {
                self.relist
                    .get_or_insert_with(HashMap::new)
                    .insert(key_of(obj), project(obj));
                Vec::new()
            }
            Event::InitDone => {
                let new = self.relist.take().unwrap_or_default();
                let mut changes = Vec::new();
                for (key, old) in &self.current {
                    if new.get(key) != Some(old) {
                        changes.push(Change {
                            key: key.clone(),
                            old: Some(old.clone()),
                            new: new.get(key).cloned(),
                        });
                    }
                }
                for (key, v) in &new {
                    if !self.current.contains_key(key) {
                        changes.push(Change {
                            key: key.clone(),
                            old: None,
                            new: Some(v.clone()),
                        });
                    }
                }
                self.current = new;
                self.synced = true;
                changes
            }
        }
    }

    /// Whether the first list has completed.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// The projection of `key`.
    pub fn get(&self, key: &ObjectKey) -> Option<&V> {
        self.current.get(key)
    }

    /// Every projection, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&ObjectKey, &V)> {
        self.current.iter()
    }

    /// How many objects there are.
    pub fn len(&self) -> usize {
        self.current.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.current.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    fn cm(name: &str, value: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                namespace: Some("ns".into()),
                name: Some(name.into()),
                resource_version: Some(value.len().to_string()),
                ..Default::default()
            },
            data: Some([("k".to_string(), value.to_string())].into()),
            ..Default::default()
        }
    }

    fn project(c: &ConfigMap) -> String {
        c.data
            .as_ref()
            .and_then(|d| d.get("k"))
            .cloned()
            .unwrap_or_default()
    }

    fn keys(changes: &[Change<String>]) -> Vec<&str> {
        let mut k: Vec<&str> = changes.iter().map(|c| c.key.1.as_str()).collect();
        k.sort();
        k
    }

    #[test]
    fn events_change_only_what_the_projection_keeps() {
        let mut p = Projections::default();
        assert!(!p.synced());
        p.apply(&Event::Init, project);
        p.apply(&Event::InitApply(cm("a", "1")), project);
        p.apply(&Event::InitApply(cm("b", "1")), project);
        // Nothing is visible before InitDone swaps the contents in.
        assert!(p.is_empty());
        let c = p.apply(&Event::InitDone, project);
        assert_eq!(keys(&c), vec!["a", "b"]);
        assert!(p.synced() && p.len() == 2);

        // Same projection, new resourceVersion: no change.
        let mut a = cm("a", "1");
        a.metadata.resource_version = Some("9".into());
        assert!(p.apply(&Event::Apply(a), project).is_empty());
        let c = p.apply(&Event::Apply(cm("a", "2")), project);
        assert_eq!(
            c,
            vec![Change {
                key: ("ns".into(), "a".into()),
                old: Some("1".into()),
                new: Some("2".into())
            }]
        );
        let c = p.apply(&Event::Delete(cm("b", "1")), project);
        assert_eq!(c[0].new, None);
        assert!(p.apply(&Event::Delete(cm("b", "1")), project).is_empty());
    }

    #[test]
    fn a_relist_reports_what_changed_while_disconnected() {
        let mut p = Projections::default();
        p.apply(&Event::Init, project);
        for (n, v) in [("a", "1"), ("b", "1"), ("c", "1")] {
            p.apply(&Event::InitApply(cm(n, v)), project);
        }
        p.apply(&Event::InitDone, project);
        // Reconnect: b was deleted, c changed, d added, a untouched.
        p.apply(&Event::Init, project);
        for (n, v) in [("a", "1"), ("c", "2"), ("d", "1")] {
            p.apply(&Event::InitApply(cm(n, v)), project);
        }
        let c = p.apply(&Event::InitDone, project);
        assert_eq!(keys(&c), vec!["b", "c", "d"]);
        assert_eq!(p.get(&("ns".into(), "c".into())), Some(&"2".to_string()));
        assert_eq!(p.get(&("ns".into(), "b".into())), None);
    }
}

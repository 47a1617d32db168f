//! Shared informers: one watch per busy resource (pods, nodes, ReplicaSets) for every loop of
//! the process, as kube-controller-manager's shared informer factory. Each loop opening its
//! own watches meant every pod change was sent, decoded and stored a dozen times over in
//! this process; here it is decoded once into one store and handed to each loop as an
//! `Arc`.
//!
//! The store is updated before a change is broadcast, so a loop woken by a change always
//! finds the store at least that new. Deletions are broadcast too (the deleted object), so
//! owners notice pods that vanished.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use futures::{Stream, StreamExt as _};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;

/// The future driving one shared watch; it returns why it ended.
pub type Driver = std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>>;

/// Changes a subscriber may fall behind by before it misses some (it is then replayed the
/// whole store). The ring keeps its last objects alive, so it is not larger.
const BACKLOG: usize = 8192;

/// One change of a shared watch.
#[derive(Debug)]
pub enum Change<K> {
    /// The object was added or modified (or listed).
    Applied(Arc<K>),
    /// The object was deleted; this is its last state.
    Deleted(Arc<K>),
    /// A (re)list completed: the store holds everything now.
    Synced,
}

impl<K> Clone for Change<K> {
    fn clone(&self) -> Self {
        match self {
            Change::Applied(o) => Change::Applied(o.clone()),
            Change::Deleted(o) => Change::Deleted(o.clone()),
            Change::Synced => Change::Synced,
        }
    }
}

/// One shared watch of `K`: its store and its stream of changes.
pub struct Informer<K: Resource + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    store: Store<K>,
    changes: broadcast::Sender<Change<K>>,
    ready: tokio::sync::watch::Receiver<bool>,
    what: &'static str,
}

impl<K: Resource + 'static> Clone for Informer<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            changes: self.changes.clone(),
            ready: self.ready.clone(),
            what: self.what,
        }
    }
}

impl<K> Informer<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    /// The informer of `api`, and the future that drives its watch (it ends, with why, only
    /// when the watch stream does).
    pub fn start(api: Api<K>, what: &'static str) -> (Self, Driver) {
        let (store, mut writer) = reflector::store::<K>();
        let (changes, _) = broadcast::channel(BACKLOG);
        let tx = changes.clone();
        let (ready_tx, ready) = tokio::sync::watch::channel(false);
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        let driver = Box::pin(async move {
            let mut stream = std::pin::pin!(stream);
            let mut listed: Vec<Arc<K>> = Vec::new();
            while let Some(event) = stream.next().await {
                let event = match event {
                    Ok(e) => e,
                    Err(err) => {
                        tracing::warn!(resource = what, error = %err, "watch failed; retrying");
                        continue;
                    }
                };
                writer.apply_watcher_event(&event);
                // Nobody listening yet is fine: loops read the store when they start.
                match event {
                    watcher::Event::Apply(obj) => {
                        let _ = tx.send(Change::Applied(Arc::new(obj)));
                    }
                    watcher::Event::Delete(obj) => {
                        let _ = tx.send(Change::Deleted(Arc::new(obj)));
                    }
                    // A (re)list reaches the store all at once at InitDone; its objects are
                    // announced then, so nobody is woken for an object not yet visible.
                    watcher::Event::Init => listed.clear(),
                    watcher::Event::InitApply(obj) => listed.push(Arc::new(obj)),
                    watcher::Event::InitDone => {
                        ready_tx.send_replace(true);
                        for obj in listed.drain(..) {
                            let _ = tx.send(Change::Applied(obj));
                        }
                        let _ = tx.send(Change::Synced);
                    }
                }
            }
            format!("{what} watch ended")
        });
        let me = Self {
            store,
            changes,
            ready,
            what,
        };
        (me, driver)
    }

    /// Waits for the first full list. Loops wait here, not on the store's
    /// `wait_until_ready`: that one wakes only the last of several tasks waiting at once
    /// (one oneshot receiver behind a lock), and a shared store has many.
    pub async fn ready(&self) -> Result<(), String> {
        let mut rx = self.ready.clone();
        rx.wait_for(|r| *r)
            .await
            .map(|_| ())
            .map_err(|_| format!("the {} watch stopped before its first list", self.what))
    }

    /// The shared store (filled once [`Informer::ready`] returned).
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Every object now in the store, then every change (applied or deleted objects), for
    /// `Controller` triggers: a loop starting after the first list still sees everything.
    pub fn changes(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        self.events().filter_map(|c| async move {
            match c {
                Change::Applied(o) | Change::Deleted(o) => Some(o),
                Change::Synced => None,
            }
        })
    }

    /// Every object now in the store as [`Change::Applied`] and a [`Change::Synced`] (when
    /// the store is filled), then every change as it comes.
    pub fn events(&self) -> impl Stream<Item = Change<K>> + Send + 'static {
        // Subscribed before the snapshot: an object may come twice, never not at all.
        let rx = self.changes.subscribe();
        let mut now: Vec<Change<K>> = self
            .store
            .state()
            .into_iter()
            .map(Change::Applied)
            .collect();
        if *self.ready.borrow() {
            now.push(Change::Synced);
        }
        let (what, store) = (self.what, self.store.clone());
        let state = (rx, std::collections::VecDeque::<Change<K>>::new());
        let live = futures::stream::unfold(state, move |(mut rx, mut pending)| {
            let store = store.clone();
            async move {
                loop {
                    if let Some(change) = pending.pop_front() {
                        return Some((change, (rx, pending)));
                    }
                    match rx.recv().await {
                        Ok(change) => return Some((change, (rx, pending))),
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            // Missed changes: everything again from the store, as after a
                            // relist, so nothing stays missed.
                            tracing::warn!(
                                resource = what,
                                missed = n,
                                "a loop fell behind the shared watch; replaying the store"
                            );
                            pending.extend(store.state().into_iter().map(Change::Applied));
                            pending.push_back(Change::Synced);
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        });
        futures::stream::iter(now).chain(live)
    }
}

/// The shared informers of the loops that run.
#[derive(Clone, Default)]
pub struct Informers {
    pods: Option<Informer<Pod>>,
    nodes: Option<Informer<Node>>,
    replicasets: Option<Informer<ReplicaSet>>,
}

/// Which loops read which shared informer.
const PODS: &[&str] = &[
    "scheduler",
    "replicaset",
    "deployment",
    "daemonset",
    "endpointslice",
    "endpoints",
    "nodelifecycle",
    "podgc",
];
const NODES: &[&str] = &[
    "scheduler",
    "daemonset",
    "endpointslice",
    "nodelifecycle",
    "podgc",
];
const REPLICASETS: &[&str] = &["replicaset", "deployment"];

impl Informers {
    /// The informers the `enabled` loops need, with the futures driving their watches (the
    /// caller owns them).
    pub fn start(client: &kube::Client, enabled: &[&str]) -> (Self, Vec<(&'static str, Driver)>) {
        let needs = |users: &[&str]| enabled.iter().any(|e| users.contains(e));
        let mut drivers = Vec::new();
        let mut me = Self::default();
        if needs(PODS) {
            let (i, d) = Informer::start(Api::all(client.clone()), "pods");
            me.pods = Some(i);
            drivers.push(("pods", d));
        }
        if needs(NODES) {
            let (i, d) = Informer::start(Api::all(client.clone()), "nodes");
            me.nodes = Some(i);
            drivers.push(("nodes", d));
        }
        if needs(REPLICASETS) {
            let (i, d) = Informer::start(Api::all(client.clone()), "replicasets");
            me.replicasets = Some(i);
            drivers.push(("replicasets", d));
        }
        (me, drivers)
    }

    /// The shared pod informer.
    pub fn pods(&self) -> Result<Informer<Pod>, String> {
        self.pods
            .clone()
            .ok_or_else(|| "no shared pod informer".to_string())
    }

    /// The shared node informer.
    pub fn nodes(&self) -> Result<Informer<Node>, String> {
        self.nodes
            .clone()
            .ok_or_else(|| "no shared node informer".to_string())
    }

    /// The shared ReplicaSet informer.
    pub fn replicasets(&self) -> Result<Informer<ReplicaSet>, String> {
        self.replicasets
            .clone()
            .ok_or_else(|| "no shared replicaset informer".to_string())
    }
}

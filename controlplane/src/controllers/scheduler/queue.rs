//! The scheduling queue, pure (time is passed in): upstream's activeQ, backoffQ and
//! unschedulablePods (pkg/scheduler/backend/queue/scheduling_queue.go).
//!
//! A pod that fits nowhere waits in "unschedulable" until the cluster changes (a node added
//! or updated, a bound pod deleted); then it goes back to "active", or to "backoff" until its
//! per-pod backoff (1 s doubling to 10 s) has passed, so a busy cluster never spins the loop.
//! A pod left unschedulable for 5 minutes is retried anyway, as upstream's
//! `podMaxInUnschedulablePodsDuration`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

/// First retry delay after a failed attempt (`podInitialBackoffDuration`).
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Longest retry delay (`podMaxBackoffDuration`).
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Longest stay in unschedulable without a cluster event.
pub const MAX_UNSCHEDULABLE: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy)]
struct Attempted {
    attempts: u32,
    last: Instant,
}

/// Pods waiting to be scheduled, by `namespace/name` key.
#[derive(Debug, Default)]
pub struct Queue {
    active: VecDeque<String>,
    in_active: HashSet<String>,
    backoff: HashMap<String, Instant>,
    unschedulable: HashMap<String, Instant>,
    history: HashMap<String, Attempted>,
}

/// The backoff after `attempts` failed attempts.
pub fn backoff_for(attempts: u32) -> Duration {
    let shift = attempts.saturating_sub(1).min(16);
    INITIAL_BACKOFF
        .saturating_mul(1u32 << shift)
        .min(MAX_BACKOFF)
}

impl Queue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the queue knows `key` in any state.
    pub fn contains(&self, key: &str) -> bool {
        self.in_active.contains(key)
            || self.backoff.contains_key(key)
            || self.unschedulable.contains_key(key)
    }

    /// Pods waiting in active, backoff and unschedulable.
    pub fn len(&self) -> (usize, usize, usize) {
        (
            self.in_active.len(),
            self.backoff.len(),
            self.unschedulable.len(),
        )
    }

    /// Whether nothing waits anywhere.
    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0, 0)
    }

    /// A new pod: straight to active unless already queued.
    pub fn add(&mut self, key: &str) {
        if !self.contains(key) {
            self.push_active(key);
        }
    }

    fn push_active(&mut self, key: &str) {
        if self.in_active.insert(key.to_string()) {
            self.active.push_back(key.to_string());
        }
    }

    fn ready_at(&self, key: &str) -> Option<Instant> {
        self.history
            .get(key)
            .map(|h| h.last + backoff_for(h.attempts))
    }

    /// A pod that may fit now (its spec changed, or the cluster did): active when its
    /// backoff has passed, else backoff.
    pub fn activate(&mut self, key: &str, now: Instant) {
        if self.in_active.contains(key) {
            return;
        }
        self.unschedulable.remove(key);
        match self.ready_at(key) {
            Some(at) if at > now => {
                self.backoff.insert(key.to_string(), at);
            }
            _ => {
                self.backoff.remove(key);
                self.push_active(key);
            }
        }
    }

    /// The next pod to try.
    pub fn pop(&mut self) -> Option<String> {
        let key = self.active.pop_front()?;
        self.in_active.remove(&key);
        Some(key)
    }

    /// The pod fits nowhere: it waits for a cluster event.
    pub fn unschedulable(&mut self, key: &str, now: Instant) {
        self.record_attempt(key, now);
        self.unschedulable.insert(key.to_string(), now);
    }

    /// Scheduling failed for a transient reason (the binding failed): retry after backoff.
    pub fn error(&mut self, key: &str, now: Instant) {
        self.record_attempt(key, now);
        self.unschedulable.remove(key);
        let at = self.ready_at(key).unwrap_or(now);
        self.backoff.insert(key.to_string(), at);
    }

    fn record_attempt(&mut self, key: &str, now: Instant) {
        let h = self.history.entry(key.to_string()).or_insert(Attempted {
            attempts: 0,
            last: now,
        });
        h.attempts += 1;
        h.last = now;
    }

    /// The pod is bound or gone: forget it entirely.
    pub fn remove(&mut self, key: &str) {
        if self.in_active.remove(key) {
            self.active.retain(|k| k != key);
        }
        self.backoff.remove(key);
        self.unschedulable.remove(key);
        self.history.remove(key);
    }

    /// A cluster event that may make unschedulable pods fit (`MoveAllToActiveOrBackoffQueue`).
    pub fn move_all(&mut self, now: Instant) {
        let keys: Vec<String> = self.unschedulable.keys().cloned().collect();
        for key in keys {
            self.activate(&key, now);
        }
    }

    /// Moves pods whose backoff has passed to active, and pods unschedulable for too long to
    /// active or backoff (`flushBackoffQCompleted`, `flushUnschedulablePodsLeftover`).
    pub fn flush(&mut self, now: Instant) {
        let done: Vec<String> = self
            .backoff
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in done {
            self.backoff.remove(&key);
            self.push_active(&key);
        }
        let stale: Vec<String> = self
            .unschedulable
            .iter()
            .filter(|(_, since)| now.saturating_duration_since(**since) >= MAX_UNSCHEDULABLE)
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            self.activate(&key, now);
        }
    }

    /// When [`Queue::flush`] next has work.
    pub fn next_wake(&self) -> Option<Instant> {
        let backoff = self.backoff.values().min().copied();
        let stale = self
            .unschedulable
            .values()
            .min()
            .map(|since| *since + MAX_UNSCHEDULABLE);
        match (backoff, stale) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unschedulable_waits_for_events_and_backoff() {
        let t0 = Instant::now();
        let mut q = Queue::new();
        q.add("ns/a");
        q.add("ns/a");
        assert_eq!(q.pop().as_deref(), Some("ns/a"));
        assert_eq!(q.pop(), None);
        q.unschedulable("ns/a", t0);
        // No event: it stays put, and flush does nothing before 5 minutes.
        q.flush(t0 + Duration::from_secs(10));
        assert_eq!(q.pop(), None);
        // A cluster event inside the 1 s backoff: backoff, then active once it passed.
        q.move_all(t0 + Duration::from_millis(100));
        assert_eq!(q.len(), (0, 1, 0));
        assert_eq!(q.next_wake(), Some(t0 + INITIAL_BACKOFF));
        q.flush(t0 + Duration::from_millis(999));
        assert_eq!(q.pop(), None);
        q.flush(t0 + INITIAL_BACKOFF);
        assert_eq!(q.pop().as_deref(), Some("ns/a"));
        // Second failure doubles the backoff; an event after it goes straight to active.
        let t1 = t0 + Duration::from_secs(2);
        q.unschedulable("ns/a", t1);
        q.move_all(t1 + Duration::from_secs(2));
        assert_eq!(q.pop().as_deref(), Some("ns/a"));
        // Unschedulable for 5 minutes with no event: retried anyway.
        let t2 = t1 + Duration::from_secs(3);
        q.unschedulable("ns/a", t2);
        q.flush(t2 + MAX_UNSCHEDULABLE);
        assert_eq!(q.pop().as_deref(), Some("ns/a"));
        q.remove("ns/a");
        assert!(q.is_empty());
    }

    #[test]
    fn backoff_doubles_to_the_cap() {
        assert_eq!(backoff_for(1), Duration::from_secs(1));
        assert_eq!(backoff_for(2), Duration::from_secs(2));
        assert_eq!(backoff_for(4), Duration::from_secs(8));
        assert_eq!(backoff_for(5), MAX_BACKOFF);
        assert_eq!(backoff_for(100), MAX_BACKOFF);
    }

    #[test]
    fn errors_back_off_and_removal_forgets() {
        let t0 = Instant::now();
        let mut q = Queue::new();
        q.add("ns/b");
        q.pop();
        q.error("ns/b", t0);
        assert_eq!(q.len(), (0, 1, 0));
        q.flush(t0 + INITIAL_BACKOFF);
        assert_eq!(q.pop().as_deref(), Some("ns/b"));
        q.add("ns/c");
        q.remove("ns/c");
        assert_eq!(q.pop(), None);
    }
}

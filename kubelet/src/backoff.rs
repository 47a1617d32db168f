//! Per-key exponential backoff like upstream's `flowcontrol.Backoff`, used for crashing
//! containers (10 s doubling to 5 min) and failing image pulls. An entry whose last event is
//! older than twice the cap is forgotten, so a container that ran for 10 minutes starts over.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Backoff state for many keys.
#[derive(Debug)]
pub struct BackoffMap {
    initial: Duration,
    max: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    backoff: Duration,
    last_update: SystemTime,
}

impl BackoffMap {
    /// Upstream's container restart backoff: 10 s doubling to 300 s.
    pub fn containers() -> Self {
        Self::new(Duration::from_secs(10), Duration::from_secs(300))
    }

    /// A map with these bounds.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn expired(&self, event: SystemTime, last: SystemTime) -> bool {
        event
            .duration_since(last)
            .map(|d| d > self.max * 2)
            .unwrap_or(false)
    }

    /// If `key` is still backing off from an event at `event_time` (a container's finish, a
    /// failed pull), how long is left.
    pub fn remaining(
        &self,
        key: &str,
        event_time: SystemTime,
        now: SystemTime,
    ) -> Option<Duration> {
        let entries = self.entries.lock().ok()?;
        let e = entries.get(key)?;
        if self.expired(now, e.last_update) {
            return None;
        }
        let since = now.duration_since(event_time).unwrap_or(Duration::ZERO);
        (since < e.backoff).then(|| e.backoff - since)
    }

    /// The current delay of `key`, for messages ("back-off 20s restarting …").
    pub fn current(&self, key: &str) -> Duration {
        self.entries
            .lock()
            .ok()
            .and_then(|e| e.get(key).map(|e| e.backoff))
            .unwrap_or(self.initial)
    }

    /// Records an attempt after an event at `event_time`: the first (or after expiry) sets the
    /// initial delay, later ones double it up to the cap.
    pub fn next(&self, key: &str, event_time: SystemTime) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        let initial = self.initial;
        let max = self.max;
        let expired = entries
            .get(key)
            .is_some_and(|e| self.expired(event_time, e.last_update));
        let e = entries.entry(key.to_string()).or_insert(Entry {
            backoff: Duration::ZERO,
            last_update: event_time,
        });
        e.backoff = if e.backoff.is_zero() || expired {
            initial
        } else {
            (e.backoff * 2).min(max)
        };
        e.last_update = event_time;
    }

    /// Forgets every key starting with `prefix` (a pod's keys when it goes away).
    pub fn forget_prefix(&self, prefix: &str) {
        if let Ok(mut e) = self.entries.lock() {
            e.retain(|k, _| !k.starts_with(prefix));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_caps_and_expires() {
        let b = BackoffMap::containers();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(b.remaining("k", t0, t0), None, "no entry: no backoff");
        b.next("k", t0);
        assert_eq!(b.current("k"), Duration::from_secs(10));
        assert_eq!(
            b.remaining("k", t0, t0 + Duration::from_secs(4)),
            Some(Duration::from_secs(6))
        );
        assert_eq!(b.remaining("k", t0, t0 + Duration::from_secs(10)), None);
        let mut t = t0;
        for want in [20, 40, 80, 160, 300, 300] {
            t += Duration::from_secs(1);
            b.next("k", t);
            assert_eq!(b.current("k"), Duration::from_secs(want));
        }
        // Ten quiet minutes later the count starts over.
        let late = t + Duration::from_secs(601);
        assert_eq!(b.remaining("k", late, late), None);
        b.next("k", late);
        assert_eq!(b.current("k"), Duration::from_secs(10));
        b.forget_prefix("k");
        assert_eq!(b.remaining("k", late, late), None);
    }
}

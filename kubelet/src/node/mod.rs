//! The node half of the kubelet: host facts, registration, the node Lease and node status.

pub mod host;
pub mod lease;
pub mod register;
pub mod status;

use std::time::Duration;

/// Retry delays doubling from an initial value up to a cap, like upstream's
/// `wait.Backoff{Duration: 200ms, Factor: 2, Cap: 7s}` in the node lease controller.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Upstream's lease/registration backoff: 200 ms doubling up to 7 s.
    pub fn upstream() -> Self {
        Self::new(Duration::from_millis(200), Duration::from_secs(7))
    }

    /// A backoff from `initial` doubling to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay before the next retry; each call doubles the following one.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_cap_and_resets() {
        let mut b = Backoff::upstream();
        let got: Vec<u64> = (0..7).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(got, vec![200, 400, 800, 1600, 3200, 6400, 7000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(200));
    }
}

//! Reconnect delays: exponential with full jitter, capped; a pure core with its own seeded RNG.

use std::time::Duration;

/// Exponential backoff with jitter.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
    rng: fastrand::Rng,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration, seed: u64) -> Backoff {
        Backoff {
            initial: initial.max(Duration::from_millis(1)),
            max: max.max(initial),
            attempt: 0,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// The next delay: uniformly in `[ceiling / 2, ceiling]` where the ceiling doubles per
    /// attempt up to `max`, so boxes that lost the hub together do not return together.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .initial
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        let span = (ceiling - half).as_millis() as u64;
        half + Duration::from_millis(self.rng.u64(0..=span))
    }

    /// After a connection that made progress.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_within_jitter_up_to_the_cap_and_reset() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1), 7);
        let d: Vec<_> = (0..6).map(|_| b.next_delay().as_millis()).collect();
        assert!((50..=100).contains(&d[0]), "{d:?}");
        assert!((100..=200).contains(&d[1]), "{d:?}");
        assert!((200..=400).contains(&d[2]), "{d:?}");
        assert!(d[5] <= 1000 && d[5] >= 500, "{d:?}");
        b.reset();
        assert!(b.next_delay().as_millis() <= 100);
    }
}

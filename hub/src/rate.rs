//! Token buckets for rate limits: per box at ingest, per client key and address at the Open311
//! intake. Pure: the caller passes the time. This module must not know what it limits.

use std::time::{Duration, Instant};

/// A token bucket: `rate` tokens a second, at most `burst` held.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RateBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Option<std::time::Instant>,
}

impl RateBucket {
    pub(crate) fn new(rate: f64, burst: f64) -> RateBucket {
        RateBucket {
            rate: rate.max(f64::MIN_POSITIVE),
            burst: burst.max(1.0),
            tokens: burst.max(1.0),
            at: None,
        }
    }

    /// Takes `n` tokens (going into debt when there are not enough) and says how long the
    /// taker must wait for the debt to be paid: zero when there were enough.
    pub(crate) fn take(&mut self, n: f64, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= n;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((-self.tokens / self.rate).min(3600.0))
        }
    }

    /// Takes `n` tokens when there are enough; false (taking none) otherwise.
    pub(crate) fn try_take(&mut self, n: f64, now: Instant) -> bool {
        self.refill(now);
        if self.tokens < n {
            return false;
        }
        self.tokens -= n;
        true
    }

    /// Whether the bucket would be full at `now` (its user has been quiet long enough).
    pub(crate) fn is_full(&self, now: Instant, burst: f64) -> bool {
        let refill = self.at.map_or(0.0, |at| {
            now.saturating_duration_since(at).as_secs_f64() * self.rate
        });
        self.tokens + refill >= burst.min(self.burst)
    }

    fn refill(&mut self, now: Instant) {
        if let Some(at) = self.at {
            let refill = now.saturating_duration_since(at).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + refill).min(self.burst);
        }
        self.at = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_bucket_holds_a_burst_then_makes_the_taker_wait_for_its_rate() {
        let t0 = Instant::now();
        let mut b = RateBucket::new(100.0, 100.0);
        assert_eq!(b.take(100.0, t0), Duration::ZERO, "a second's burst");
        let wait = b.take(50.0, t0);
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-9, "{wait:?}");
        // after the wait the debt is paid
        assert_eq!(b.take(0.0, t0 + Duration::from_millis(500)), Duration::ZERO);
        let mut h = RateBucket::new(0.5, 30.0);
        assert!((0..30).all(|_| h.try_take(1.0, t0)));
        assert!(!h.try_take(1.0, t0), "the 31st in a minute is dropped");
        assert!(!h.try_take(1.0, t0), "and dropping runs up no debt");
        assert!(h.try_take(1.0, t0 + Duration::from_secs(2)));
    }
}

//! Cooldown: at most one event per (source, rule, zone, track) per cooldown period.
//!
//! A pure core: callers pass the observation time in; nothing here reads a clock. A repeat inside
//! the period is counted against the key and raises nothing; the next event after the period
//! carries how many repeats were suppressed before it.

use std::collections::HashMap;
use std::time::Duration;

use protocol::{Source, Timestamp};

/// What a cooldown period is kept per.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CooldownKey {
    /// The camera or sensor.
    pub source: Source,
    /// The rule's name.
    pub rule: String,
    /// The zone, for camera rules.
    pub zone: Option<String>,
    /// The tracker's id for the object, for camera rules.
    pub track: Option<u64>,
}

/// The decision for one observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CooldownDecision {
    /// Raise an event; `suppressed` repeats were absorbed since the previous one for this key.
    Raise {
        /// Repeats counted (and not raised) since the last event of this key.
        suppressed: u64,
    },
    /// Inside the cooldown period of the last event: counted, nothing raised.
    Suppress {
        /// Repeats counted so far in this period, this one included.
        repeats: u64,
    },
}

/// Per-key cooldown state.
#[derive(Debug, Clone)]
pub struct Cooldown {
    period_ms: i64,
    last: HashMap<CooldownKey, Entry>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    raised_at: Timestamp,
    repeats: u64,
}

impl Cooldown {
    /// A cooldown of `period` (zero: every observation raises an event).
    pub fn new(period: Duration) -> Self {
        Cooldown {
            period_ms: i64::try_from(period.as_millis()).unwrap_or(i64::MAX),
            last: HashMap::new(),
        }
    }

    /// Decides for an observation of `key` at `at`, and records the decision.
    pub fn check(&mut self, key: &CooldownKey, at: Timestamp) -> CooldownDecision {
        if self.last.len() > PRUNE_ABOVE_KEYS {
            self.prune(at);
        }
        match self.last.get_mut(key) {
            Some(entry) if at.millis_since(entry.raised_at) < self.period_ms => {
                entry.repeats += 1;
                CooldownDecision::Suppress {
                    repeats: entry.repeats,
                }
            }
            Some(entry) => {
                let suppressed = entry.repeats;
                *entry = Entry {
                    raised_at: at,
                    repeats: 0,
                };
                CooldownDecision::Raise { suppressed }
            }
            None => {
                self.last.insert(
                    key.clone(),
                    Entry {
                        raised_at: at,
                        repeats: 0,
                    },
                );
                CooldownDecision::Raise { suppressed: 0 }
            }
        }
    }

    /// What [`Cooldown::check`] would decide, without recording anything.
    pub fn peek(&self, key: &CooldownKey, at: Timestamp) -> CooldownDecision {
        match self.last.get(key) {
            Some(entry) if at.millis_since(entry.raised_at) < self.period_ms => {
                CooldownDecision::Suppress {
                    repeats: entry.repeats + 1,
                }
            }
            Some(entry) => CooldownDecision::Raise {
                suppressed: entry.repeats,
            },
            None => CooldownDecision::Raise { suppressed: 0 },
        }
    }

    /// Keys held (for metrics and tests).
    pub fn len(&self) -> usize {
        self.last.len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }

    /// Forgets keys whose period ended before `now` (their repeat counts are dropped).
    fn prune(&mut self, now: Timestamp) {
        let period = self.period_ms;
        self.last
            .retain(|_, e| now.millis_since(e.raised_at) < period);
    }
}

/// Keys held before expired ones are pruned.
const PRUNE_ABOVE_KEYS: usize = 4096;

#[cfg(test)]
mod tests {
    use protocol::{SourceId, SourceKind};

    use super::*;

    fn key(track: u64) -> CooldownKey {
        CooldownKey {
            source: Source {
                kind: SourceKind::Camera,
                id: SourceId::parse("cam-1").unwrap(),
            },
            rule: "parking".to_owned(),
            zone: Some("gate".to_owned()),
            track: Some(track),
        }
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_unix_millis(1_700_000_000_000 + secs * 1000)
    }

    #[test]
    fn repeats_inside_the_period_are_counted_not_raised() {
        let mut c = Cooldown::new(Duration::from_secs(60));
        assert_eq!(
            c.check(&key(1), at(0)),
            CooldownDecision::Raise { suppressed: 0 }
        );
        assert_eq!(
            c.check(&key(1), at(10)),
            CooldownDecision::Suppress { repeats: 1 }
        );
        assert_eq!(
            c.check(&key(1), at(59)),
            CooldownDecision::Suppress { repeats: 2 }
        );
        assert_eq!(
            c.check(&key(1), at(60)),
            CooldownDecision::Raise { suppressed: 2 }
        );
        assert_eq!(
            c.check(&key(1), at(61)),
            CooldownDecision::Suppress { repeats: 1 }
        );
    }

    #[test]
    fn each_track_has_its_own_period() {
        let mut c = Cooldown::new(Duration::from_secs(60));
        assert!(matches!(
            c.check(&key(1), at(0)),
            CooldownDecision::Raise { .. }
        ));
        assert!(matches!(
            c.check(&key(2), at(1)),
            CooldownDecision::Raise { .. }
        ));
        let mut other_zone = key(1);
        other_zone.zone = Some("lane".to_owned());
        assert!(matches!(
            c.check(&other_zone, at(2)),
            CooldownDecision::Raise { .. }
        ));
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn a_zero_period_raises_every_observation() {
        let mut c = Cooldown::new(Duration::ZERO);
        for s in 0..3 {
            assert!(matches!(
                c.check(&key(1), at(s)),
                CooldownDecision::Raise { .. }
            ));
        }
    }

    #[test]
    fn expired_keys_are_pruned_when_many_are_held() {
        let mut c = Cooldown::new(Duration::from_secs(1));
        for track in 0..=PRUNE_ABOVE_KEYS as u64 {
            c.check(&key(track), at(0));
        }
        c.check(&key(u64::MAX), at(10));
        assert_eq!(c.len(), 1);
    }
}

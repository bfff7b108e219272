//! Sensor rules: the pure core that decides when readings become observations.
//!
//! Each [`SensorRule`] is configured with a kind, a category (catalog key or code) and an optional
//! severity. [`RuleSet`] holds the per-sensor state of every rule and is driven by three calls,
//! each taking the time as an argument (no clock inside, so tests run without waiting):
//! [`RuleSet::on_reading`], [`RuleSet::on_availability`] and [`RuleSet::on_tick`] (timers:
//! staleness, inactivity, debounce completion). Each returns [`Trigger`]s: a rule that starts
//! firing raises once and is then latched until its condition clears, so a condition that lasts
//! makes one event, not one per message. Offline rules also report the recovery.
//!
//! This module does no I/O and builds no events: the sensor task turns triggers into
//! observations for the event builder.

use confcheck::Problem;
use std::collections::BTreeMap;
use std::time::Duration;

use hardware::sensor::{Quantity, Reading, Value};
use protocol::{AttrValue, Severity, Timestamp};
use serde::Deserialize;

/// One configured rule. (Unknown keys are refused by [`RuleKind`], which receives every key
/// this struct does not take.)
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SensorRule {
    /// A name unique within the sensor (part of the cooldown key and the event's attributes).
    pub name: String,
    /// Category raised: a catalog key (`emergency.road_flooding`) or code (`0505`).
    pub category: String,
    /// Severity override. Default: the catalog's.
    #[serde(default)]
    pub severity: Option<Severity>,
    /// What the rule watches.
    #[serde(flatten)]
    pub kind: RuleKind,
}

/// What a rule watches.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RuleKind {
    /// A value above `above` (or below `below`) for at least `debounce_secs` fires; it clears only
    /// once the value is back past the threshold by `hysteresis`.
    Threshold {
        /// The quantity.
        quantity: Quantity,
        /// Fire above this.
        #[serde(default)]
        above: Option<f64>,
        /// Fire below this.
        #[serde(default)]
        below: Option<f64>,
        /// Width of the band the value must leave before the rule re-arms. Default 0.
        #[serde(default)]
        hysteresis: f64,
        /// How long the condition must hold. Default 0 (at once).
        #[serde(
            default,
            rename = "debounce_secs",
            deserialize_with = "confcheck::units::secs"
        )]
        debounce: Duration,
    },
    /// A boolean quantity taking `value` fires (smoke = true, water_leak = true, tilt = true).
    State {
        /// The quantity.
        quantity: Quantity,
        /// The value that fires. Default `true`.
        #[serde(default = "yes")]
        value: bool,
    },
    /// A change faster than `max_per_min` per minute between consecutive readings fires.
    RateOfChange {
        /// The quantity.
        quantity: Quantity,
        /// The largest normal change per minute (absolute).
        max_per_min: f64,
    },
    /// No message for `factor` × `expected_interval_secs` (or an explicit offline announcement)
    /// fires; the next message recovers.
    Offline {
        /// How often the device normally reports.
        #[serde(
            rename = "expected_interval_secs",
            deserialize_with = "confcheck::units::secs"
        )]
        expected_interval: Duration,
        /// How many intervals of silence count as offline. Default 3.
        #[serde(default = "three")]
        factor: f64,
    },
    /// Battery below `below_percent` fires; it re-arms 5 points above.
    LowBattery {
        /// The threshold in percent. Default 20.
        #[serde(default = "twenty")]
        below_percent: f64,
    },
    /// A boolean quantity not taking `active_value` for `limit_secs` fires (a door contact of an
    /// elderly resident not opened for 12 hours: `quantity = "contact"`, `active_value = false`).
    /// Any activity re-arms it.
    Inactivity {
        /// The quantity.
        quantity: Quantity,
        /// The value that counts as activity.
        active_value: bool,
        /// How long without activity fires.
        #[serde(rename = "limit_secs", deserialize_with = "confcheck::units::secs")]
        limit: Duration,
    },
}

/// A rule's decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    /// The rule's index in the sensor's rule list.
    pub rule: usize,
    /// Raised, or (for offline rules) recovered.
    pub transition: Transition,
    /// When the condition was established.
    pub at: Timestamp,
    /// Details for the event (value, threshold, silence ...).
    pub attributes: BTreeMap<String, AttrValue>,
}

/// Whether a trigger starts or ends a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The condition began.
    Raised,
    /// The condition ended (offline rules report this as a recovery event).
    Recovered,
}

/// The rules of one sensor with their state.
#[derive(Debug)]
pub struct RuleSet {
    rules: Vec<(SensorRule, RuleState)>,
}

#[derive(Debug, Clone, Default)]
struct RuleState {
    /// The rule is firing (latched until its condition clears).
    active: bool,
    /// Since when the condition has held (threshold debounce).
    pending_since: Option<Timestamp>,
    /// Last value and its time (rate of change).
    last: Option<(f64, Timestamp)>,
    /// Last message of any kind (offline) or last activity (inactivity).
    last_seen: Option<Timestamp>,
}

impl RuleSet {
    /// Rules in their configured order, with the sensor considered seen at `now` (so that
    /// offline and inactivity timers start at start-up, not at the epoch).
    pub fn new(rules: Vec<SensorRule>, now: Timestamp) -> Self {
        let rules = rules
            .into_iter()
            .map(|r| {
                (
                    r,
                    RuleState {
                        last_seen: Some(now),
                        ..RuleState::default()
                    },
                )
            })
            .collect();
        RuleSet { rules }
    }

    /// The configured rules.
    pub fn rules(&self) -> impl Iterator<Item = &SensorRule> {
        self.rules.iter().map(|(r, _)| r)
    }

    /// Feeds one reading (at its own time, or the arrival time when it has none).
    pub fn on_reading(&mut self, reading: &Reading, now: Timestamp) -> Vec<Trigger> {
        let at = reading.at.unwrap_or(now);
        let mut out = Vec::new();
        for (i, (rule, state)) in self.rules.iter_mut().enumerate() {
            match &rule.kind {
                RuleKind::Threshold {
                    quantity,
                    above,
                    below,
                    hysteresis,
                    debounce,
                } if *quantity == reading.quantity => {
                    let v = reading.value.as_f64();
                    let beyond = above.is_some_and(|a| v > a) || below.is_some_and(|b| v < b);
                    let cleared = above.is_none_or(|a| v <= a - hysteresis)
                        && below.is_none_or(|b| v >= b + hysteresis);
                    if state.active {
                        if cleared {
                            state.active = false;
                        }
                        state.pending_since = None;
                    } else if beyond {
                        let since = *state.pending_since.get_or_insert(at);
                        if at.millis_since(since) >= millis(*debounce) {
                            state.active = true;
                            state.pending_since = None;
                            out.push(trigger(
                                i,
                                Transition::Raised,
                                at,
                                threshold_attrs(v, *above, *below, reading),
                            ));
                        }
                    } else {
                        // Inside the band below the threshold: the debounce restarts.
                        state.pending_since = None;
                    }
                }
                RuleKind::State { quantity, value } if *quantity == reading.quantity => {
                    let hit = reading.value == Value::Bool(*value);
                    if hit && !state.active {
                        state.active = true;
                        out.push(trigger(
                            i,
                            Transition::Raised,
                            at,
                            [("value", AttrValue::Bool(*value))],
                        ));
                    } else if !hit {
                        state.active = false;
                    }
                }
                RuleKind::RateOfChange {
                    quantity,
                    max_per_min,
                } if *quantity == reading.quantity => {
                    let v = reading.value.as_f64();
                    if let Some((prev, prev_at)) = state.last {
                        let minutes = at.millis_since(prev_at) as f64 / 60_000.0;
                        if minutes > 0.0 {
                            let rate = (v - prev) / minutes;
                            let fast = rate.abs() > *max_per_min;
                            if fast && !state.active {
                                state.active = true;
                                out.push(trigger(
                                    i,
                                    Transition::Raised,
                                    at,
                                    [
                                        ("value", AttrValue::Float(v)),
                                        ("rate_per_min", AttrValue::Float(rate)),
                                        ("limit_per_min", AttrValue::Float(*max_per_min)),
                                    ],
                                ));
                            } else if !fast {
                                state.active = false;
                            }
                        }
                    }
                    state.last = Some((v, at));
                }
                RuleKind::LowBattery { below_percent } if reading.quantity == Quantity::Battery => {
                    let v = reading.value.as_f64();
                    // Remember that this device reports a level: its level, not its
                    // `battery_low` flag, then decides when the rule re-arms.
                    state.last = Some((v, at));
                    if !state.active && v < *below_percent {
                        state.active = true;
                        out.push(trigger(
                            i,
                            Transition::Raised,
                            at,
                            [
                                ("battery_percent", AttrValue::Float(v)),
                                ("threshold", AttrValue::Float(*below_percent)),
                            ],
                        ));
                    } else if state.active && v >= below_percent + 5.0 {
                        state.active = false;
                    }
                }
                RuleKind::LowBattery { .. } if reading.quantity == Quantity::BatteryLow => {
                    let low = reading.value == Value::Bool(true);
                    if low && !state.active {
                        state.active = true;
                        out.push(trigger(
                            i,
                            Transition::Raised,
                            at,
                            [("battery_low", AttrValue::Bool(true))],
                        ));
                    } else if !low && state.last.is_none() {
                        state.active = false;
                    }
                }
                RuleKind::Inactivity {
                    quantity,
                    active_value,
                    ..
                } if *quantity == reading.quantity
                    && reading.value == Value::Bool(*active_value) =>
                {
                    state.last_seen = Some(at);
                    state.active = false;
                }
                _ => {}
            }
        }
        out
    }

    /// The device was heard from (any readable message): offline rules restart their silence
    /// timer, and report a recovery if they were firing.
    pub fn on_heard(&mut self, now: Timestamp) -> Vec<Trigger> {
        let mut out = Vec::new();
        for (i, (rule, state)) in self.rules.iter_mut().enumerate() {
            if matches!(rule.kind, RuleKind::Offline { .. }) {
                state.last_seen = Some(now);
                if state.active {
                    state.active = false;
                    out.push(trigger(i, Transition::Recovered, now, []));
                }
            }
        }
        out
    }

    /// A device announced it went on- or offline (zigbee2mqtt availability, Tasmota LWT).
    pub fn on_availability(&mut self, online: bool, now: Timestamp) -> Vec<Trigger> {
        let mut out = Vec::new();
        for (i, (rule, state)) in self.rules.iter_mut().enumerate() {
            if !matches!(rule.kind, RuleKind::Offline { .. }) {
                continue;
            }
            if online {
                state.last_seen = Some(now);
                if state.active {
                    state.active = false;
                    out.push(trigger(
                        i,
                        Transition::Recovered,
                        now,
                        [("announced", AttrValue::Bool(true))],
                    ));
                }
            } else if !state.active {
                state.active = true;
                out.push(trigger(
                    i,
                    Transition::Raised,
                    now,
                    [("announced", AttrValue::Bool(true))],
                ));
            }
        }
        out
    }

    /// Advances timers to `now`: silence (offline), inactivity.
    pub fn on_tick(&mut self, now: Timestamp) -> Vec<Trigger> {
        let mut out = Vec::new();
        for (i, (rule, state)) in self.rules.iter_mut().enumerate() {
            let Some(last) = state.last_seen else {
                continue;
            };
            let silent = now.millis_since(last);
            match &rule.kind {
                RuleKind::Offline {
                    expected_interval,
                    factor,
                } => {
                    let limit = (millis(*expected_interval) as f64 * factor) as i64;
                    if !state.active && silent >= limit {
                        state.active = true;
                        out.push(trigger(
                            i,
                            Transition::Raised,
                            now,
                            [
                                ("silent_secs", AttrValue::Int(silent / 1000)),
                                ("announced", AttrValue::Bool(false)),
                            ],
                        ));
                    }
                }
                RuleKind::Inactivity { limit, .. } if !state.active && silent >= millis(*limit) => {
                    state.active = true;
                    out.push(trigger(
                        i,
                        Transition::Raised,
                        now,
                        [("inactive_secs", AttrValue::Int(silent / 1000))],
                    ));
                }
                _ => {}
            }
        }
        out
    }

    /// When `on_tick` next needs to run for a timer to fire on time, if any timer is armed.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.rules
            .iter()
            .filter(|(_, s)| !s.active)
            .filter_map(|(rule, state)| {
                let last = state.last_seen?.as_unix_millis();
                let after = match &rule.kind {
                    RuleKind::Offline {
                        expected_interval,
                        factor,
                    } => (millis(*expected_interval) as f64 * factor) as i64,
                    RuleKind::Inactivity { limit, .. } => millis(*limit),
                    _ => return None,
                };
                Some(Timestamp::from_unix_millis(last.saturating_add(after)))
            })
            .min()
    }
}

impl SensorRule {
    /// Configuration problems of this rule alone, as `field: problem` lines.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        if self.name.trim().is_empty() {
            out.push(Problem::at("name", "must not be empty"));
        }
        match &self.kind {
            RuleKind::Threshold {
                above,
                below,
                hysteresis,
                ..
            } => {
                if above.is_none() && below.is_none() {
                    out.push(Problem::at(
                        "above/below",
                        "a threshold rule needs at least one of them",
                    ));
                }
                if !(hysteresis.is_finite() && *hysteresis >= 0.0) {
                    out.push(Problem::at(
                        "hysteresis",
                        format!("{hysteresis} must be a finite number ≥ 0"),
                    ));
                }
            }
            RuleKind::RateOfChange { max_per_min, .. }
                if !(max_per_min.is_finite() && *max_per_min > 0.0) =>
            {
                out.push(Problem::at(
                    "max_per_min",
                    format!("{max_per_min} must be a positive number"),
                ));
            }
            RuleKind::Offline {
                expected_interval,
                factor,
            } => {
                if expected_interval.is_zero() {
                    out.push(Problem::at("expected_interval_secs", "must be at least 1"));
                }
                if !(factor.is_finite() && *factor >= 1.0) {
                    out.push(Problem::at(
                        "factor",
                        format!("{factor} must be at least 1"),
                    ));
                }
            }
            RuleKind::Inactivity { limit, .. } if limit.is_zero() => {
                out.push(Problem::at("limit_secs", "must be at least 1"))
            }
            _ => {}
        }
        out
    }
}

fn trigger<const N: usize>(
    rule: usize,
    transition: Transition,
    at: Timestamp,
    attrs: [(&str, AttrValue); N],
) -> Trigger {
    Trigger {
        rule,
        transition,
        at,
        attributes: attrs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
    }
}

fn threshold_attrs(
    v: f64,
    above: Option<f64>,
    below: Option<f64>,
    reading: &Reading,
) -> [(&'static str, AttrValue); 3] {
    let threshold = above.or(below).unwrap_or_default();
    let unit = reading.unit.clone().unwrap_or_default();
    [
        ("value", AttrValue::Float(v)),
        ("threshold", AttrValue::Float(threshold)),
        ("unit", AttrValue::Text(unit)),
    ]
}

pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn yes() -> bool {
    true
}

fn three() -> f64 {
    3.0
}

fn twenty() -> f64 {
    20.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_764_000_000_000;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_unix_millis(T0 + secs * 1000)
    }

    fn reading(quantity: Quantity, value: Value) -> Reading {
        Reading {
            device: "d".into(),
            channel: None,
            quantity,
            value,
            unit: None,
            at: None,
        }
    }

    fn num(quantity: Quantity, v: f64) -> Reading {
        reading(quantity, Value::Number(v))
    }

    fn rules(toml_rules: &str) -> RuleSet {
        #[derive(Deserialize)]
        struct Doc {
            rule: Vec<SensorRule>,
        }
        let doc: Doc = toml::from_str(toml_rules).unwrap();
        for r in &doc.rule {
            assert!(r.problems().is_empty(), "{:?}", r.problems());
        }
        RuleSet::new(doc.rule, at(0))
    }

    fn raised(triggers: &[Trigger]) -> usize {
        triggers
            .iter()
            .filter(|t| t.transition == Transition::Raised)
            .count()
    }

    const FLOOD: &str = r#"
        [[rule]]
        name = "flooding"
        kind = "threshold"
        quantity = "water_level"
        above = 30.0
        hysteresis = 5.0
        debounce_secs = 60
        category = "emergency.road_flooding"
    "#;

    #[test]
    fn threshold_fires_once_after_the_debounce_and_rearms_past_the_hysteresis() {
        let mut set = rules(FLOOD);
        assert!(
            set.on_reading(&num(Quantity::WaterLevel, 31.0), at(0))
                .is_empty(),
            "debounce not yet over"
        );
        assert!(
            set.on_reading(&num(Quantity::WaterLevel, 33.0), at(30))
                .is_empty()
        );
        let fired = set.on_reading(&num(Quantity::WaterLevel, 35.0), at(60));
        assert_eq!(raised(&fired), 1);
        assert_eq!(fired[0].attributes["value"], AttrValue::Float(35.0));
        // Staying high, or dipping into the band, raises nothing more.
        for (t, v) in [(90, 40.0), (120, 28.0), (150, 31.0), (180, 40.0)] {
            assert!(
                set.on_reading(&num(Quantity::WaterLevel, v), at(t))
                    .is_empty(),
                "t={t}"
            );
        }
        // Below threshold - hysteresis re-arms; a new excursion fires again after its debounce.
        assert!(
            set.on_reading(&num(Quantity::WaterLevel, 24.0), at(200))
                .is_empty()
        );
        assert!(
            set.on_reading(&num(Quantity::WaterLevel, 32.0), at(210))
                .is_empty()
        );
        assert_eq!(
            raised(&set.on_reading(&num(Quantity::WaterLevel, 32.0), at(270))),
            1
        );
    }

    #[test]
    fn values_flapping_around_the_threshold_inside_the_debounce_raise_nothing() {
        let mut set = rules(FLOOD);
        for step in 0..100 {
            let v = if step % 2 == 0 { 31.0 } else { 29.0 };
            assert!(
                set.on_reading(&num(Quantity::WaterLevel, v), at(step * 20))
                    .is_empty(),
                "step {step}"
            );
        }
    }

    #[test]
    fn state_change_fires_on_the_edge_only() {
        let mut set = rules(
            "[[rule]]\nname = \"smoke\"\nkind = \"state\"\nquantity = \"smoke\"\ncategory = \"emergency.fire\"",
        );
        let smoke = |b| reading(Quantity::Smoke, Value::Bool(b));
        assert!(set.on_reading(&smoke(false), at(0)).is_empty());
        assert_eq!(raised(&set.on_reading(&smoke(true), at(1))), 1);
        assert!(
            set.on_reading(&smoke(true), at(2)).is_empty(),
            "still smoking: latched"
        );
        assert!(set.on_reading(&smoke(false), at(3)).is_empty());
        assert_eq!(raised(&set.on_reading(&smoke(true), at(4))), 1);
        assert!(
            set.on_reading(&num(Quantity::Temperature, 80.0), at(5))
                .is_empty(),
            "other quantities are ignored"
        );
    }

    #[test]
    fn rate_of_change_compares_consecutive_readings() {
        let mut set = rules(
            "[[rule]]\nname = \"surge\"\nkind = \"rate_of_change\"\nquantity = \"water_level\"\nmax_per_min = 2.0\ncategory = \"0505\"",
        );
        assert!(
            set.on_reading(&num(Quantity::WaterLevel, 10.0), at(0))
                .is_empty()
        );
        assert!(
            set.on_reading(&num(Quantity::WaterLevel, 11.0), at(60))
                .is_empty(),
            "1 per minute is normal"
        );
        let fired = set.on_reading(&num(Quantity::WaterLevel, 14.0), at(90));
        assert_eq!(raised(&fired), 1, "3 in half a minute = 6 per minute");
        assert_eq!(fired[0].attributes["rate_per_min"], AttrValue::Float(6.0));
    }

    #[test]
    fn a_silent_sensor_goes_offline_once_and_recovers_once() {
        let mut set = rules(
            "[[rule]]\nname = \"offline\"\nkind = \"offline\"\nexpected_interval_secs = 60\ncategory = \"device.sensor_offline\"",
        );
        assert_eq!(set.next_deadline(), Some(at(180)));
        assert!(set.on_tick(at(179)).is_empty());
        let fired = set.on_tick(at(180));
        assert_eq!(raised(&fired), 1);
        assert_eq!(fired[0].attributes["silent_secs"], AttrValue::Int(180));
        assert!(set.on_tick(at(1000)).is_empty(), "offline is latched");
        assert_eq!(set.next_deadline(), None);
        let back = set.on_heard(at(1001));
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].transition, Transition::Recovered);
        assert!(set.on_heard(at(1002)).is_empty());
        assert_eq!(set.next_deadline(), Some(at(1002 + 180)));
    }

    #[test]
    fn an_announced_offline_fires_at_once_and_online_recovers() {
        let mut set = rules(
            "[[rule]]\nname = \"offline\"\nkind = \"offline\"\nexpected_interval_secs = 60\ncategory = \"device.sensor_offline\"",
        );
        assert_eq!(raised(&set.on_availability(false, at(5))), 1);
        assert!(set.on_availability(false, at(6)).is_empty());
        assert!(set.on_tick(at(999)).is_empty());
        assert_eq!(
            set.on_availability(true, at(1000))[0].transition,
            Transition::Recovered
        );
    }

    #[test]
    fn a_door_never_opened_past_the_limit_raises_one_welfare_check() {
        let mut set = rules(
            "[[rule]]\nname = \"welfare\"\nkind = \"inactivity\"\nquantity = \"contact\"\nactive_value = false\nlimit_secs = 43200\ncategory = \"other.welfare_check\"",
        );
        let closed = reading(Quantity::Contact, Value::Bool(true));
        let opened = reading(Quantity::Contact, Value::Bool(false));
        // Opened in the morning, then only "closed" reports.
        assert!(set.on_reading(&opened, at(3600)).is_empty());
        for h in 2..13 {
            assert!(set.on_reading(&closed, at(3600 * h)).is_empty());
            assert!(set.on_tick(at(3600 * h)).is_empty(), "hour {h}");
        }
        let fired = set.on_tick(at(3600 + 43_200));
        assert_eq!(raised(&fired), 1);
        assert!(
            set.on_tick(at(3600 * 30)).is_empty(),
            "one event per inactive stretch"
        );
        assert!(
            set.on_reading(&opened, at(3600 * 31)).is_empty(),
            "activity re-arms silently"
        );
        assert_eq!(raised(&set.on_tick(at(3600 * 31 + 43_200))), 1);
    }

    #[test]
    fn low_battery_fires_once_and_rearms_with_a_margin() {
        let mut set = rules(
            "[[rule]]\nname = \"battery\"\nkind = \"low_battery\"\ncategory = \"device.sensor_low_battery\"",
        );
        assert!(
            set.on_reading(&num(Quantity::Battery, 35.0), at(0))
                .is_empty()
        );
        assert_eq!(
            raised(&set.on_reading(&num(Quantity::Battery, 19.0), at(1))),
            1
        );
        assert!(
            set.on_reading(&num(Quantity::Battery, 21.0), at(2))
                .is_empty()
        );
        assert!(
            set.on_reading(&num(Quantity::Battery, 18.0), at(3))
                .is_empty(),
            "no re-fire inside the margin"
        );
        assert!(
            set.on_reading(&num(Quantity::Battery, 100.0), at(4))
                .is_empty(),
            "battery replaced"
        );
        assert_eq!(
            raised(&set.on_reading(&num(Quantity::Battery, 10.0), at(5))),
            1
        );
    }

    #[test]
    fn a_battery_low_flag_beside_a_low_level_does_not_rearm_the_rule() {
        // zigbee2mqtt devices send both `battery` and `battery_low`, and the flag's threshold
        // is the device's own (often 10 %) while ours is 15 %.
        let mut set = rules(
            "[[rule]]\nname = \"battery\"\nkind = \"low_battery\"\nbelow_percent = 15.0\ncategory = \"9004\"",
        );
        let flag = |b| reading(Quantity::BatteryLow, Value::Bool(b));
        let mut fired = 0;
        for t in 0..5 {
            fired += raised(&set.on_reading(&num(Quantity::Battery, 12.0), at(t)));
            fired += raised(&set.on_reading(&flag(false), at(t)));
        }
        assert_eq!(fired, 1);
    }

    #[test]
    fn misconfigured_rules_are_reported() {
        let bad: SensorRule = toml::from_str("name = \"\"\nkind = \"threshold\"\nquantity = \"temperature\"\nhysteresis = -1.0\ncategory = \"0603\"").unwrap();
        assert_eq!(bad.problems().len(), 3, "{:?}", bad.problems());
        assert!(
            toml::from_str::<SensorRule>("name = \"x\"\nkind = \"telepathy\"\ncategory = \"0603\"")
                .is_err()
        );
        let typo = "name = \"x\"\nkind = \"state\"\nquantity = \"smoke\"\ncategory = \"0506\"\nvalu = true";
        assert!(
            toml::from_str::<SensorRule>(typo).is_err(),
            "unknown keys are refused"
        );
    }
}

//! The sensors' pure core: routes a message to its sensor, decodes it with the sensor's payload
//! profile, accounts for bad input, runs the sensor's rules and turns triggers into
//! [`Observation`]s; on each tick it advances the rules' timers and says which polls are due.
//!
//! No I/O, no clock: every call takes `now`. The MQTT client in `client.rs` is a thin loop around
//! it, and tests drive it directly.

use std::collections::{BTreeMap, HashMap};

use hardware::sensor::{Decoded, PollRequest, Quantity, Value};
use protocol::{
    AttrValue, Catalog, CategoryCode, GridCode, Location, SensorId, Severity, Source, SourceKind,
    Timestamp,
};
use serde::Serialize;
use tracing::warn;

use super::rules::{RuleSet, Transition, Trigger, millis};
use super::{SensorConfig, SensorsConfig};
use crate::events::Observation;

/// How often bad input from one sensor may be logged.
const ISSUE_LOG_INTERVAL_MS: i64 = 60_000;

/// The sensors' pure core.
#[derive(Debug)]
pub struct SensorCore {
    sensors: Vec<Slot>,
    routes: HashMap<String, usize>,
    max_payload_bytes: usize,
    stats: SensorStats,
}

#[derive(Debug)]
struct Slot {
    cfg: SensorConfig,
    location: Location,
    grid: Option<GridCode>,
    rules: RuleSet,
    /// Per rule: its category and severity, resolved against the catalog at start-up.
    categories: Vec<(CategoryCode, Option<Severity>)>,
    poll_due: Option<Timestamp>,
    poll_sent: Option<Timestamp>,
    last_issue_log: Option<Timestamp>,
}

/// What the sensors have seen, for the status page and metrics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SensorStats {
    /// Per sensor.
    pub sensors: BTreeMap<SensorId, SensorCounters>,
    /// Messages on topics no sensor claims.
    pub unrouted_messages: u64,
    /// The broker connection (kept by the MQTT client).
    pub link: LinkStats,
}

/// The broker connection's state and history.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LinkStats {
    /// Connected now.
    pub connected: bool,
    /// Connections made (the first one included).
    pub connections: u64,
    /// Connections whose subscriptions the broker has all acknowledged: from then on, nothing
    /// published to the sensors' topics is missed.
    pub subscribed: u64,
    /// Connection attempts that failed, and connections lost.
    pub failures: u64,
}

/// Counters and last values of one sensor.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SensorCounters {
    /// Messages received.
    pub messages: u64,
    /// Readings decoded.
    pub readings: u64,
    /// Bad input by reason (`not_json`, `wrong_type`, `too_large`, ...).
    pub bad_input: BTreeMap<&'static str, u64>,
    /// Polls sent.
    pub polls: u64,
    /// Polls not answered in time.
    pub poll_timeouts: u64,
    /// Events raised (by rules) and recoveries reported.
    pub triggers: u64,
    /// When the sensor was last heard from.
    pub last_seen: Option<Timestamp>,
    /// The device's availability announcement, if any.
    pub online: Option<bool>,
    /// Last value per quantity.
    pub last_values: BTreeMap<String, f64>,
}

/// Why the sensors could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// A rule names a category that is not in the catalog.
    #[error("sensor `{sensor}` rule `{rule}`: unknown category `{category}`")]
    UnknownCategory {
        /// The sensor.
        sensor: SensorId,
        /// The rule.
        rule: String,
        /// The category as written.
        category: String,
    },
}

impl SensorCore {
    /// Builds the core for a validated configuration; sensors without their own location take
    /// `site`, and without their own grid code take `site_grid`. Timers start at `now`.
    ///
    /// # Errors
    /// [`CoreError::UnknownCategory`] when a rule's category is not in the catalog.
    pub fn new(
        cfg: &SensorsConfig,
        site: Location,
        site_grid: Option<&GridCode>,
        now: Timestamp,
    ) -> Result<Self, CoreError> {
        let catalog = Catalog::embedded();
        let mut sensors = Vec::with_capacity(cfg.sensors.len());
        let mut routes = HashMap::new();
        let mut stats = SensorStats::default();
        for s in &cfg.sensors {
            let mut categories = Vec::with_capacity(s.rules.len());
            for r in &s.rules {
                let c = catalog
                    .resolve(&r.category)
                    .ok_or_else(|| CoreError::UnknownCategory {
                        sensor: s.id.clone(),
                        rule: r.name.clone(),
                        category: r.category.clone(),
                    })?;
                categories.push((c.code.clone(), r.severity));
            }
            for topic in s.profile.subscriptions(&s.device) {
                routes.insert(topic, sensors.len());
            }
            stats
                .sensors
                .insert(s.id.clone(), SensorCounters::default());
            sensors.push(Slot {
                cfg: s.clone(),
                location: s.location.unwrap_or(site),
                grid: s.grid.clone().or_else(|| site_grid.cloned()),
                rules: RuleSet::new(s.rules.clone(), now),
                categories,
                poll_due: s.poll_interval.map(|_| now),
                poll_sent: None,
                last_issue_log: None,
            });
        }
        Ok(SensorCore {
            sensors,
            routes,
            max_payload_bytes: cfg.mqtt.max_payload_bytes,
            stats,
        })
    }

    /// Every topic to subscribe to.
    pub fn subscriptions(&self) -> impl Iterator<Item = &str> {
        self.routes.keys().map(String::as_str)
    }

    /// The counters so far.
    pub fn stats(&self) -> &SensorStats {
        &self.stats
    }

    /// Handles one MQTT message received at `now`.
    pub fn on_message(&mut self, topic: &str, payload: &[u8], now: Timestamp) -> Vec<Observation> {
        let Some(&idx) = self.routes.get(topic) else {
            self.stats.unrouted_messages += 1;
            return Vec::new();
        };
        let slot = &mut self.sensors[idx];
        let counters = self.stats.sensors.entry(slot.cfg.id.clone()).or_default();
        counters.messages += 1;
        let Decoded {
            readings,
            availability,
            issues,
        } = slot
            .cfg
            .profile
            .decode(topic, payload, self.max_payload_bytes);
        let fatal = issues.iter().any(|i| i.is_fatal());
        for issue in &issues {
            *counters.bad_input.entry(issue.reason()).or_default() += 1;
        }
        if let Some(first) = issues
            .iter()
            .find(|i| i.is_fatal() || i.reason() == "wrong_type")
            && slot
                .last_issue_log
                .is_none_or(|t| now.millis_since(t) >= ISSUE_LOG_INTERVAL_MS)
        {
            slot.last_issue_log = Some(now);
            warn!(sensor = %slot.cfg.id, reason = first.reason(), error = %first, count = issues.len(), "bad sensor payload");
        }
        if fatal {
            return Vec::new();
        }
        counters.last_seen = Some(now);
        slot.poll_sent = None;
        let mut triggers = slot.rules.on_heard(now);
        if let Some(a) = availability {
            counters.online = Some(a.online);
            triggers.extend(slot.rules.on_availability(a.online, now));
        }
        for r in &readings {
            counters.readings += 1;
            let key = match &r.channel {
                Some(ch) => format!("{}.{}", ch, r.quantity),
                None => r.quantity.to_string(),
            };
            counters.last_values.insert(key, r.value.as_f64());
            let mut fired = slot.rules.on_reading(r, now);
            for t in &mut fired {
                t.attributes
                    .insert("quantity".into(), AttrValue::Text(r.quantity.to_string()));
                if let Value::Bool(b) = r.value
                    && r.quantity != Quantity::Battery
                {
                    t.attributes
                        .entry("value".into())
                        .or_insert(AttrValue::Bool(b));
                }
            }
            triggers.extend(fired);
        }
        counters.triggers += triggers.len() as u64;
        triggers.into_iter().map(|t| observation(slot, t)).collect()
    }

    /// Advances timers to `now`: returns observations from timers (offline, inactivity) and the
    /// polls to publish now.
    pub fn on_tick(&mut self, now: Timestamp) -> (Vec<Observation>, Vec<PollRequest>) {
        let mut observations = Vec::new();
        let mut polls = Vec::new();
        for slot in &mut self.sensors {
            let counters = self.stats.sensors.entry(slot.cfg.id.clone()).or_default();
            let triggers = slot.rules.on_tick(now);
            counters.triggers += triggers.len() as u64;
            observations.extend(triggers.into_iter().map(|t| observation(slot, t)));
            if let Some(sent) = slot.poll_sent
                && now.millis_since(sent) >= millis(slot.cfg.poll_timeout)
            {
                counters.poll_timeouts += 1;
                slot.poll_sent = None;
            }
            if let (Some(interval), Some(due)) = (slot.cfg.poll_interval, slot.poll_due)
                && now >= due
                && let Some(req) = slot.cfg.profile.poll_request(&slot.cfg.device)
            {
                polls.push(req);
                counters.polls += 1;
                slot.poll_sent = Some(now);
                slot.poll_due = Some(Timestamp::from_unix_millis(
                    now.as_unix_millis() + millis(interval),
                ));
            }
        }
        (observations, polls)
    }
}

fn observation(slot: &Slot, t: Trigger) -> Observation {
    let rule = &slot.cfg.rules[t.rule];
    let (mut category, mut severity) = slot.categories[t.rule].clone();
    let mut attributes = t.attributes;
    attributes.insert("device".into(), AttrValue::Text(slot.cfg.device.clone()));
    attributes.insert(
        "profile".into(),
        AttrValue::Text(slot.cfg.profile.name().into()),
    );
    if t.transition == Transition::Recovered {
        attributes.insert(
            "recovered_category".into(),
            AttrValue::Text(category.to_string()),
        );
        if let Some(c) = Catalog::embedded().by_key("device.recovered") {
            category = c.code.clone();
            severity = None;
        }
    }
    Observation {
        source: Source {
            kind: SourceKind::Sensor,
            id: slot.cfg.id.clone().into(),
        },
        rule: rule.name.clone(),
        zone: None,
        track: None,
        category,
        severity,
        observed_at: t.at,
        location: slot.location,
        grid: slot.grid.clone(),
        attributes,
        snapshot: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_764_000_000_000;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_unix_millis(T0 + secs * 1000)
    }

    fn core() -> SensorCore {
        let cfg: SensorsConfig = toml::from_str(
            r#"
            [[sensors]]
            id = "leak-kitchen"
            device = "kitchen_leak"
            profile = { kind = "zigbee2mqtt" }
            [[sensors.rules]]
            name = "leak"
            kind = "state"
            quantity = "water_leak"
            category = "other.water_leak"
            [[sensors.rules]]
            name = "offline"
            kind = "offline"
            expected_interval_secs = 60
            category = "device.sensor_offline"
            [[sensors]]
            id = "drain-7"
            device = "drain_7"
            profile = { kind = "tasmota" }
            poll_interval_secs = 300
            poll_timeout_secs = 10
            "#,
        )
        .unwrap();
        SensorCore::new(
            &cfg,
            Location {
                lat: 39.9,
                lon: 116.4,
                crs: protocol::Crs::Wgs84,
            },
            None,
            at(0),
        )
        .unwrap()
    }

    #[test]
    fn a_leak_message_becomes_one_observation_with_the_sensor_as_source() {
        let mut c = core();
        let obs = c.on_message(
            "zigbee2mqtt/kitchen_leak",
            br#"{"water_leak":true,"battery":80}"#,
            at(1),
        );
        assert_eq!(obs.len(), 1);
        let o = &obs[0];
        assert_eq!(
            (o.source.kind, o.source.id.as_str(), o.rule.as_str()),
            (SourceKind::Sensor, "leak-kitchen", "leak")
        );
        assert_eq!(o.category.as_str(), "0602");
        assert_eq!(o.attributes["value"], AttrValue::Bool(true));
        assert!(
            c.on_message("zigbee2mqtt/kitchen_leak", br#"{"water_leak":true}"#, at(2))
                .is_empty(),
            "latched"
        );
    }

    #[test]
    fn bad_input_is_counted_per_sensor_and_reason_and_disturbs_no_other_sensor() {
        let mut c = core();
        for payload in [&b"garbage"[..], b"{\"water_leak\":\"wet\"}", b"[1]"] {
            assert!(
                c.on_message("zigbee2mqtt/kitchen_leak", payload, at(1))
                    .is_empty()
            );
        }
        let big = vec![b'{'; 70_000];
        assert!(
            c.on_message("zigbee2mqtt/kitchen_leak", &big, at(1))
                .is_empty()
        );
        let s = &c.stats().sensors[&"leak-kitchen".parse::<SensorId>().unwrap()];
        assert_eq!(s.bad_input.get("not_json"), Some(&1));
        assert_eq!(s.bad_input.get("wrong_type"), Some(&1));
        assert_eq!(s.bad_input.get("not_object"), Some(&1));
        assert_eq!(s.bad_input.get("too_large"), Some(&1));
        assert_eq!(s.messages, 4);
        // The drain sensor is unaffected and the leak sensor still works.
        assert_eq!(
            c.on_message("tele/drain_7/SENSOR", br#"{"SR04":{"Distance":40}}"#, at(2))
                .len(),
            0
        );
        assert_eq!(
            c.stats().sensors[&"drain-7".parse::<SensorId>().unwrap()].readings,
            1
        );
        assert_eq!(
            c.on_message("zigbee2mqtt/kitchen_leak", br#"{"water_leak":true}"#, at(3))
                .len(),
            1
        );
        c.on_message("nobody/listens/here", b"{}", at(3));
        assert_eq!(c.stats().unrouted_messages, 1);
    }

    #[test]
    fn silence_raises_offline_and_the_next_message_a_recovery() {
        let mut c = core();
        c.on_message("zigbee2mqtt/kitchen_leak", br#"{"battery":80}"#, at(10));
        let (obs, _) = c.on_tick(at(189));
        assert!(obs.is_empty());
        let (obs, _) = c.on_tick(at(190));
        assert_eq!(obs.len(), 1);
        assert_eq!(obs[0].category.as_str(), "9003");
        assert!(c.on_tick(at(500)).0.is_empty());
        let back = c.on_message("zigbee2mqtt/kitchen_leak", br#"{"battery":80}"#, at(600));
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].category.as_str(), "9009");
        assert_eq!(
            back[0].attributes["recovered_category"],
            AttrValue::Text("9003".into())
        );
    }

    #[test]
    fn polls_are_due_on_their_interval_and_unanswered_ones_time_out() {
        let mut c = core();
        let (_, polls) = c.on_tick(at(0));
        assert_eq!(polls.len(), 1);
        assert_eq!(polls[0].topic, "cmnd/drain_7/Status");
        assert!(c.on_tick(at(5)).1.is_empty());
        c.on_tick(at(10));
        let id: SensorId = "drain-7".parse().unwrap();
        assert_eq!(c.stats().sensors[&id].poll_timeouts, 1);
        assert_eq!(c.on_tick(at(300)).1.len(), 1);
        c.on_message(
            "stat/drain_7/STATUS10",
            br#"{"StatusSNS":{"SR04":{"Distance":40}}}"#,
            at(301),
        );
        c.on_tick(at(320));
        assert_eq!(
            c.stats().sensors[&id].poll_timeouts,
            1,
            "answered polls do not time out"
        );
        assert_eq!(c.stats().sensors[&id].polls, 2);
    }
}

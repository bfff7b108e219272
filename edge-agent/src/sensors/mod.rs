//! Sensors over MQTT: the box's broker delivers device messages; payload profiles (from
//! `hardware`) turn them into readings; [`rules`] decide when readings become observations for the
//! event builder.
//!
//! - [`SensorsConfig`]: the `[mqtt]` broker settings and the `[[sensors]]` list;
//! - [`SensorCore`]: the pure core: topic routing, decoding, bad-input accounting, rules, polls;
//! - [`SensorStage`]: the MQTT client around it (rumqttc): persistent session, resubscribe on
//!   every connection, availability topic with a last will, reconnect with backoff and jitter.
//!
//! This module must not decide categories by itself (every trigger comes from a configured rule
//! naming its category) and must not touch the store: it hands observations to a channel.

mod client;
mod core;
pub mod rules;

use confcheck::Problem;
use std::path::PathBuf;
use std::time::Duration;

use hardware::sensor::{DEFAULT_MAX_PAYLOAD_BYTES, PayloadProfile};
use protocol::{GridCode, Location, SensorId};
use serde::Deserialize;

pub use self::client::{SensorStage, SensorsError};
pub use self::core::{CoreError, LinkStats, SensorCore, SensorCounters, SensorStats};
pub use rules::{RuleKind, RuleSet, SensorRule, Transition, Trigger};

/// The `[mqtt]` section: the box's local broker.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker host. Default `127.0.0.1`.
    #[serde(default = "default_host")]
    pub host: String,
    /// Broker port. Default 1883 (8883 is usual with TLS).
    #[serde(default = "default_port")]
    pub port: u16,
    /// MQTT client id; also names the persistent session. Default `gridsense-edge-agent`.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// User name. Default: none.
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the password (secrets are files, never inline). Default: none.
    #[serde(default)]
    pub password_path: Option<PathBuf>,
    /// TLS to the broker. Default: plain TCP (a broker on the box itself).
    #[serde(default)]
    pub tls: Option<MqttTlsConfig>,
    /// Keep-alive interval. Default 30 s.
    #[serde(
        default = "default_keep_alive",
        rename = "keep_alive_secs",
        deserialize_with = "confcheck::units::secs"
    )]
    pub keep_alive: Duration,
    /// Topic where the agent announces `online` (retained) and its last will announces
    /// `offline`. Default `gridsense/<client_id>/availability`.
    #[serde(default)]
    pub availability_topic: Option<String>,
    /// First reconnect delay; doubles up to `reconnect_max_ms`, with ±25 % jitter. Default 200 ms.
    #[serde(
        default = "default_reconnect_min",
        rename = "reconnect_min_ms",
        deserialize_with = "confcheck::units::millis"
    )]
    pub reconnect_min: Duration,
    /// Longest reconnect delay. Default 30 s.
    #[serde(
        default = "default_reconnect_max",
        rename = "reconnect_max_ms",
        deserialize_with = "confcheck::units::millis"
    )]
    pub reconnect_max: Duration,
    /// Largest payload decoded; larger ones are counted as `too_large`. Default 65536.
    #[serde(default = "default_max_payload")]
    pub max_payload_bytes: usize,
    /// QoS of the subscriptions (0 or 1). Default 1.
    #[serde(default = "default_qos")]
    pub qos: u8,
}

/// TLS settings for the broker connection.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttTlsConfig {
    /// CA certificate(s) to trust, PEM.
    pub ca_path: PathBuf,
    /// Client certificate, PEM, for brokers that want one. Default: none.
    #[serde(default)]
    pub cert_path: Option<PathBuf>,
    /// Client private key, PEM. Required with `cert_path`.
    #[serde(default)]
    pub key_path: Option<PathBuf>,
}

/// One sensor: a device of a payload family, where it is, and its rules.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorConfig {
    /// The sensor's id on the box (events' source id).
    pub id: SensorId,
    /// The device's payload family: `{ kind = "zigbee2mqtt" }`, `{ kind = "tasmota" }` or
    /// `{ kind = "generic-json", topic = ..., quantity = ..., value_pointer = ... }`.
    pub profile: PayloadProfile,
    /// The device's name in its family (zigbee2mqtt friendly name, Tasmota topic).
    pub device: String,
    /// Where the sensor is. Default: the site's location.
    #[serde(default)]
    pub location: Option<Location>,
    /// Grid code stamped on its events. Default: the site's.
    #[serde(default)]
    pub grid: Option<GridCode>,
    /// Ask the device for a reading this often (for devices that report only on request).
    /// Default: never.
    #[serde(
        default,
        rename = "poll_interval_secs",
        deserialize_with = "confcheck::units::opt_secs"
    )]
    pub poll_interval: Option<Duration>,
    /// A poll not answered within this long is counted as `poll_timeout`. Default 10 s.
    #[serde(
        default = "default_poll_timeout",
        rename = "poll_timeout_secs",
        deserialize_with = "confcheck::units::secs"
    )]
    pub poll_timeout: Duration,
    /// The rules, in order.
    #[serde(default)]
    pub rules: Vec<SensorRule>,
    /// A camera (`[[cameras]]` id) that covers the same place: each of the sensor's events
    /// carries what it saw at that moment as a confirming snapshot, when it has a recent frame.
    #[serde(default)]
    pub camera: Option<protocol::CameraId>,
}

/// Broker settings and sensors together.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorsConfig {
    /// The broker.
    #[serde(default)]
    pub mqtt: MqttConfig,
    /// The sensors.
    #[serde(default)]
    pub sensors: Vec<SensorConfig>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            host: default_host(),
            port: default_port(),
            client_id: default_client_id(),
            username: None,
            password_path: None,
            tls: None,
            keep_alive: default_keep_alive(),
            availability_topic: None,
            reconnect_min: default_reconnect_min(),
            reconnect_max: default_reconnect_max(),
            max_payload_bytes: default_max_payload(),
            qos: default_qos(),
        }
    }
}

impl MqttConfig {
    /// The availability topic in effect.
    pub fn availability_topic(&self) -> String {
        self.availability_topic
            .clone()
            .unwrap_or_else(|| format!("gridsense/{}/availability", self.client_id))
    }
}

impl SensorsConfig {
    /// Cross-field problems as `key.path: problem` lines (categories are checked against the
    /// catalog; duplicate sensor ids and devices are refused).
    pub fn problems(&self) -> Vec<Problem> {
        let catalog = protocol::Catalog::embedded();
        let mut out = Vec::new();
        let m = &self.mqtt;
        if m.qos > 1 {
            out.push(Problem::at("mqtt.qos", format!("{} must be 0 or 1", m.qos)));
        }
        if m.client_id.is_empty() {
            out.push(Problem::at("mqtt.client_id", "must not be empty"));
        }
        if m.reconnect_min.is_zero() || m.reconnect_min > m.reconnect_max {
            out.push(Problem::at(
                "mqtt.reconnect_min_ms",
                "must be at least 1 and at most reconnect_max_ms",
            ));
        }
        if m.max_payload_bytes == 0 {
            out.push(Problem::at("mqtt.max_payload_bytes", "must be at least 1"));
        }
        if let Some(tls) = &m.tls
            && tls.cert_path.is_some() != tls.key_path.is_some()
        {
            out.push(Problem::at(
                "mqtt.tls",
                "cert_path and key_path go together",
            ));
        }
        let mut ids = std::collections::HashSet::new();
        let mut devices = std::collections::HashSet::new();
        for (i, s) in self.sensors.iter().enumerate() {
            let at = format!("sensors[{i}]");
            if !ids.insert(&s.id) {
                out.push(Problem::at(
                    format!("{at}.id"),
                    format!("`{}` is used twice", s.id),
                ));
            }
            if !devices.insert((s.profile.name(), &s.device)) {
                out.push(Problem::at(
                    format!("{at}.device"),
                    format!(
                        "`{}` of profile {} is used twice",
                        s.device,
                        s.profile.name()
                    ),
                ));
            }
            if s.device.is_empty() || s.device.contains(['+', '#']) {
                out.push(Problem::at(
                    format!("{at}.device"),
                    format!("`{}` must be a plain name without MQTT wildcards", s.device),
                ));
            }
            if let PayloadProfile::GenericJson(g) = &s.profile {
                out.extend(
                    g.problems().into_iter().map(|(field, message)| {
                        Problem::at(format!("{at}.profile.{field}"), message)
                    }),
                );
            }
            if let Some(loc) = &s.location
                && !loc.is_valid()
            {
                out.push(Problem::at(
                    format!("{at}.location"),
                    "latitude/longitude out of range",
                ));
            }
            let mut names = std::collections::HashSet::new();
            for (j, r) in s.rules.iter().enumerate() {
                let rat = format!("{at}.rules[{j}]");
                if !names.insert(&r.name) {
                    out.push(Problem::at(
                        format!("{rat}.name"),
                        format!("`{}` is used twice in this sensor", r.name),
                    ));
                }
                if catalog.resolve(&r.category).is_none() {
                    out.push(Problem::at(
                        format!("{rat}.category"),
                        format!(
                            "`{}` is not a category code or key (see `edge-agent categories`)",
                            r.category
                        ),
                    ));
                }
                out.extend(
                    r.problems()
                        .into_iter()
                        .map(|p| Problem::at(format!("{rat}.{}", p.key), p.message)),
                );
            }
        }
        out
    }
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    1883
}
fn default_client_id() -> String {
    "gridsense-edge-agent".into()
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}
fn default_reconnect_min() -> Duration {
    Duration::from_millis(200)
}
fn default_reconnect_max() -> Duration {
    Duration::from_secs(30)
}
fn default_max_payload() -> usize {
    DEFAULT_MAX_PAYLOAD_BYTES
}
fn default_qos() -> u8 {
    1
}
fn default_poll_timeout() -> Duration {
    Duration::from_secs(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_sensor_section_parses_and_validates() {
        let cfg: SensorsConfig = toml::from_str(
            r#"
            [mqtt]
            port = 1884
            qos = 1
            [[sensors]]
            id = "drain-7"
            device = "drain_7"
            profile = { kind = "tasmota" }
            poll_interval_secs = 300
            [[sensors.rules]]
            name = "flooding"
            kind = "threshold"
            quantity = "distance"
            below = 20.0
            hysteresis = 3.0
            debounce_secs = 60
            category = "emergency.road_flooding"
            [[sensors]]
            id = "door-301"
            device = "door_elderly_301"
            profile = { kind = "zigbee2mqtt" }
            [[sensors.rules]]
            name = "welfare"
            kind = "inactivity"
            quantity = "contact"
            active_value = false
            limit_secs = 43200
            category = "other.welfare_check"
            severity = "critical"
            "#,
        )
        .unwrap();
        assert!(cfg.problems().is_empty(), "{:?}", cfg.problems());
        assert_eq!(cfg.sensors[0].poll_interval, Some(Duration::from_secs(300)));
        assert_eq!(
            cfg.mqtt.availability_topic(),
            "gridsense/gridsense-edge-agent/availability"
        );
    }

    #[test]
    fn every_problem_is_named_with_its_key_path() {
        let cfg: SensorsConfig = toml::from_str(
            r#"
            [mqtt]
            qos = 2
            [[sensors]]
            id = "a"
            device = "x/#"
            profile = { kind = "zigbee2mqtt" }
            [[sensors.rules]]
            name = "r"
            kind = "state"
            quantity = "smoke"
            category = "emergency.volcano"
            [[sensors]]
            id = "a"
            device = "y"
            profile = { kind = "generic-json", topic = "t/+", quantity = "gas", value_pointer = "v" }
            "#,
        )
        .unwrap();
        let p = cfg.problems();
        for expected in [
            "mqtt.qos",
            "sensors[0].device",
            "sensors[0].rules[0].category",
            "sensors[1].id",
            "sensors[1].profile.topic",
            "sensors[1].profile.value_pointer",
        ] {
            assert!(
                p.iter().any(|l| l.to_string().starts_with(expected)),
                "{expected} missing from {p:?}"
            );
        }
    }
}

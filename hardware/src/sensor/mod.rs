//! Sensor payload profiles: how a family of devices speaks MQTT, and how one of its messages
//! becomes [`Reading`]s.
//!
//! A [`PayloadProfile`] knows a family's topics (what to subscribe to, how to ask a device for a
//! reading, which topic carries availability) and its payload shapes. [`PayloadProfile::decode`]
//! is pure: bytes and a topic in, a [`Decoded`] out, with every problem it met listed as a
//! [`PayloadIssue`] carrying a low-cardinality `reason` for metrics. A message with a broken
//! field still yields its good fields; only a message that cannot be read at all is an error.
//!
//! This module does no I/O and holds no state: the agent's MQTT client subscribes, counts and
//! rate-limits logs; the agent's rules decide what a reading means.

mod generic;
mod tasmota;
mod zigbee2mqtt;

use std::fmt;

use protocol::Timestamp;
use serde::{Deserialize, Serialize};

pub use generic::GenericJsonProfile;
pub use tasmota::TasmotaProfile;
pub use zigbee2mqtt::Zigbee2MqttProfile;

/// The default cap on an MQTT payload a profile will parse.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// One measured value from one device.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reading {
    /// The device as the family names it (zigbee2mqtt friendly name, Tasmota topic, generic
    /// `{device}` capture).
    pub device: String,
    /// A sub-sensor of a multi-sensor device (Tasmota `AM2301`, `DS18B20-1`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// What was measured.
    pub quantity: Quantity,
    /// The value.
    pub value: Value,
    /// The unit (`°C`, `%`, `cm`, ...), when the quantity has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// When the device says it measured, if the payload says so; otherwise the receiver stamps
    /// the arrival time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<Timestamp>,
}

/// A measured quantity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quantity {
    /// Door/window contact: `true` = closed.
    Contact,
    /// Water leak detected.
    WaterLeak,
    /// Smoke detected.
    Smoke,
    /// Gas detected.
    Gas,
    /// Presence detected.
    Occupancy,
    /// Tilted (manhole-cover sensors).
    Tilt,
    /// Vibration detected.
    Vibration,
    /// Tamper switch open.
    Tamper,
    /// Battery reports low.
    BatteryLow,
    /// Temperature.
    Temperature,
    /// Relative humidity.
    Humidity,
    /// Air pressure.
    Pressure,
    /// Illuminance.
    Illuminance,
    /// Water level (e.g. an ultrasonic gauge over a drain).
    WaterLevel,
    /// Distance (ultrasonic rangers).
    Distance,
    /// Battery charge.
    Battery,
    /// Supply or battery voltage.
    Voltage,
    /// Radio link quality.
    LinkQuality,
    /// A gas concentration.
    GasConcentration,
    /// Anything else, by the name the device uses.
    #[serde(untagged)]
    Other(String),
}

impl Quantity {
    /// The snake_case name used in configuration.
    pub fn name(&self) -> &str {
        match self {
            Quantity::Contact => "contact",
            Quantity::WaterLeak => "water_leak",
            Quantity::Smoke => "smoke",
            Quantity::Gas => "gas",
            Quantity::Occupancy => "occupancy",
            Quantity::Tilt => "tilt",
            Quantity::Vibration => "vibration",
            Quantity::Tamper => "tamper",
            Quantity::BatteryLow => "battery_low",
            Quantity::Temperature => "temperature",
            Quantity::Humidity => "humidity",
            Quantity::Pressure => "pressure",
            Quantity::Illuminance => "illuminance",
            Quantity::WaterLevel => "water_level",
            Quantity::Distance => "distance",
            Quantity::Battery => "battery",
            Quantity::Voltage => "voltage",
            Quantity::LinkQuality => "linkquality",
            Quantity::GasConcentration => "gas_concentration",
            Quantity::Other(name) => name,
        }
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A reading's value.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Value {
    /// A state (contact, leak, smoke ...).
    Bool(bool),
    /// A measurement.
    Number(f64),
}

impl Value {
    /// The value as a number (`true` = 1).
    pub fn as_f64(&self) -> f64 {
        match self {
            Value::Bool(b) => f64::from(u8::from(*b)),
            Value::Number(n) => *n,
        }
    }
}

/// What a message said.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decoded {
    /// The readings in it.
    pub readings: Vec<Reading>,
    /// A device's availability (`online` / `offline`), for availability topics.
    pub availability: Option<Availability>,
    /// Problems with parts of the message; the rest was still read.
    pub issues: Vec<PayloadIssue>,
}

/// A device announcing that it went on- or offline (zigbee2mqtt availability, Tasmota LWT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Availability {
    /// The device.
    pub device: String,
    /// Online?
    pub online: bool,
}

/// Why a message, or part of it, could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadIssue {
    /// The payload is larger than the profile accepts.
    #[error("payload of {bytes} bytes on `{topic}` is over the limit of {max} bytes")]
    TooLarge {
        /// The topic.
        topic: String,
        /// The payload's size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The payload is not JSON (or not UTF-8).
    #[error("payload on `{topic}` is not JSON: {detail}")]
    NotJson {
        /// The topic.
        topic: String,
        /// The parser's complaint.
        detail: String,
    },
    /// The JSON is not an object where one is expected.
    #[error("payload on `{topic}` is not a JSON object")]
    NotObject {
        /// The topic.
        topic: String,
    },
    /// A known field with a value of the wrong type.
    #[error("field `{field}` on `{topic}` should be {expected}")]
    WrongType {
        /// The topic.
        topic: String,
        /// The field (or JSON pointer).
        field: String,
        /// What it should be.
        expected: &'static str,
    },
    /// A field the profile does not know (it is skipped).
    #[error("field `{field}` on `{topic}` is not known to the profile")]
    UnknownField {
        /// The topic.
        topic: String,
        /// The field.
        field: String,
    },
    /// A required field (a generic profile's value pointer) is missing.
    #[error("field `{field}` missing on `{topic}`")]
    MissingField {
        /// The topic.
        topic: String,
        /// The field (or JSON pointer).
        field: String,
    },
    /// The topic does not belong to this profile.
    #[error("topic `{topic}` is not one this profile reads")]
    UnknownTopic {
        /// The topic.
        topic: String,
    },
}

impl PayloadIssue {
    /// A low-cardinality name for metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            PayloadIssue::TooLarge { .. } => "too_large",
            PayloadIssue::NotJson { .. } => "not_json",
            PayloadIssue::NotObject { .. } => "not_object",
            PayloadIssue::WrongType { .. } => "wrong_type",
            PayloadIssue::UnknownField { .. } => "unknown_field",
            PayloadIssue::MissingField { .. } => "missing_field",
            PayloadIssue::UnknownTopic { .. } => "unknown_topic",
        }
    }

    /// True when the message was unreadable as a whole (not just a field of it).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            PayloadIssue::TooLarge { .. }
                | PayloadIssue::NotJson { .. }
                | PayloadIssue::NotObject { .. }
                | PayloadIssue::UnknownTopic { .. }
        )
    }
}

/// A request to publish (a poll for a device's state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollRequest {
    /// Where to publish.
    pub topic: String,
    /// What to publish.
    pub payload: Vec<u8>,
}

/// A device family's MQTT dialect.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum PayloadProfile {
    /// zigbee2mqtt.
    Zigbee2mqtt(Zigbee2MqttProfile),
    /// Tasmota.
    Tasmota(TasmotaProfile),
    /// Any device publishing JSON, described by a topic pattern and JSON pointers.
    GenericJson(GenericJsonProfile),
}

impl PayloadProfile {
    /// The profile's name as configured (`zigbee2mqtt`, `tasmota`, `generic-json`).
    pub fn name(&self) -> &'static str {
        match self {
            PayloadProfile::Zigbee2mqtt(_) => "zigbee2mqtt",
            PayloadProfile::Tasmota(_) => "tasmota",
            PayloadProfile::GenericJson(_) => "generic-json",
        }
    }

    /// The MQTT topic filters to subscribe to for `device`.
    pub fn subscriptions(&self, device: &str) -> Vec<String> {
        match self {
            PayloadProfile::Zigbee2mqtt(p) => p.subscriptions(device),
            PayloadProfile::Tasmota(p) => p.subscriptions(device),
            PayloadProfile::GenericJson(p) => p.subscriptions(device),
        }
    }

    /// The device a topic belongs to, if it is one of this profile's.
    pub fn device_of<'t>(&self, topic: &'t str) -> Option<&'t str> {
        match self {
            PayloadProfile::Zigbee2mqtt(p) => p.device_of(topic),
            PayloadProfile::Tasmota(p) => p.device_of(topic),
            PayloadProfile::GenericJson(p) => p.device_of(topic),
        }
    }

    /// What to publish to make `device` report now, if the family supports it.
    pub fn poll_request(&self, device: &str) -> Option<PollRequest> {
        match self {
            PayloadProfile::Zigbee2mqtt(p) => Some(p.poll_request(device)),
            PayloadProfile::Tasmota(p) => Some(p.poll_request(device)),
            PayloadProfile::GenericJson(p) => p.poll_request(device),
        }
    }

    /// Reads one message. Never panics, whatever the bytes.
    pub fn decode(&self, topic: &str, payload: &[u8], max_payload_bytes: usize) -> Decoded {
        if payload.len() > max_payload_bytes {
            return Decoded::issue(PayloadIssue::TooLarge {
                topic: topic.to_owned(),
                bytes: payload.len(),
                max: max_payload_bytes,
            });
        }
        match self {
            PayloadProfile::Zigbee2mqtt(p) => p.decode(topic, payload),
            PayloadProfile::Tasmota(p) => p.decode(topic, payload),
            PayloadProfile::GenericJson(p) => p.decode(topic, payload),
        }
    }
}

impl Decoded {
    fn issue(issue: PayloadIssue) -> Decoded {
        Decoded {
            issues: vec![issue],
            ..Decoded::default()
        }
    }
}

/// Parses a payload as a JSON object.
fn json_object(
    topic: &str,
    payload: &[u8],
) -> Result<serde_json::Map<String, serde_json::Value>, PayloadIssue> {
    let value: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| PayloadIssue::NotJson {
            topic: topic.to_owned(),
            detail: e.to_string(),
        })?;
    match value {
        serde_json::Value::Object(map) => Ok(map),
        _ => Err(PayloadIssue::NotObject {
            topic: topic.to_owned(),
        }),
    }
}

/// A device time from JSON: epoch seconds or milliseconds (numbers), or RFC 3339 with an offset.
fn json_time(value: &serde_json::Value) -> Option<Timestamp> {
    match value {
        serde_json::Value::Number(n) => {
            let n = n.as_f64()?;
            // Heuristic shared by most devices: below 10^11 it is seconds (until the year 5138).
            let millis = if n.abs() < 1e11 { n * 1000.0 } else { n };
            millis
                .is_finite()
                .then(|| Timestamp::from_unix_millis(millis as i64))
        }
        serde_json::Value::String(s) => Timestamp::parse_rfc3339(s),
        _ => None,
    }
}

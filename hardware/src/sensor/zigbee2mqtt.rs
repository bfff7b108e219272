//! zigbee2mqtt: `<base>/<friendly_name>` carries a JSON state object, `<base>/<name>/availability`
//! carries `online`/`offline` (plain or as `{"state":"online"}`), and `<base>/<name>/get` asks a
//! device to report.

use serde::Deserialize;

use super::{
    Availability, Decoded, PayloadIssue, PollRequest, Quantity, Reading, Value, json_object,
    json_time,
};

/// The zigbee2mqtt dialect.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zigbee2MqttProfile {
    /// zigbee2mqtt's base topic. Default `zigbee2mqtt`.
    #[serde(default = "default_base_topic")]
    pub base_topic: String,
}

impl Default for Zigbee2MqttProfile {
    fn default() -> Self {
        Zigbee2MqttProfile {
            base_topic: default_base_topic(),
        }
    }
}

/// Fields that zigbee2mqtt devices send that are not readings; skipped without an issue.
const NOT_READINGS: &[&str] = &[
    "last_seen",
    "update",
    "update_available",
    "elapsed",
    "device",
    "power_outage_count",
    "action",
    "state",
    "identify",
    "sensitivity",
    "child_lock",
    "calibration",
    "temperature_calibration",
    "humidity_calibration",
    "illuminance_calibration",
    "led_indication",
    "local_time",
    "trigger_count",
    "device_temperature",
];

impl Zigbee2MqttProfile {
    pub(super) fn subscriptions(&self, device: &str) -> Vec<String> {
        vec![
            format!("{}/{device}", self.base_topic),
            format!("{}/{device}/availability", self.base_topic),
        ]
    }

    pub(super) fn device_of<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let rest = topic
            .strip_prefix(self.base_topic.as_str())?
            .strip_prefix('/')?;
        if rest.is_empty() || rest.starts_with("bridge/") || rest == "bridge" {
            return None;
        }
        if let Some(device) = rest.strip_suffix("/availability") {
            return Some(device);
        }
        if rest.ends_with("/set") || rest.ends_with("/get") {
            return None;
        }
        Some(rest)
    }

    pub(super) fn poll_request(&self, device: &str) -> PollRequest {
        PollRequest {
            topic: format!("{}/{device}/get", self.base_topic),
            payload: br#"{"state":""}"#.to_vec(),
        }
    }

    pub(super) fn decode(&self, topic: &str, payload: &[u8]) -> Decoded {
        let Some(device) = self.device_of(topic) else {
            return Decoded::issue(PayloadIssue::UnknownTopic {
                topic: topic.to_owned(),
            });
        };
        if topic.ends_with("/availability") {
            return decode_availability(topic, device, payload);
        }
        let map = match json_object(topic, payload) {
            Ok(map) => map,
            Err(issue) => return Decoded::issue(issue),
        };
        let at = map.get("last_seen").and_then(json_time);
        let mut out = Decoded::default();
        for (field, value) in &map {
            let Some((quantity, unit, boolean)) = field_quantity(field) else {
                if !NOT_READINGS.contains(&field.as_str()) {
                    out.issues.push(PayloadIssue::UnknownField {
                        topic: topic.to_owned(),
                        field: field.clone(),
                    });
                }
                continue;
            };
            let value = match (boolean, value) {
                (true, serde_json::Value::Bool(b)) => Value::Bool(*b),
                (false, serde_json::Value::Number(n)) => match n.as_f64() {
                    Some(n) => Value::Number(n),
                    None => continue,
                },
                // zigbee2mqtt sends null for a value the device has not reported yet.
                (_, serde_json::Value::Null) => continue,
                (boolean, _) => {
                    let expected = if boolean { "a boolean" } else { "a number" };
                    out.issues.push(PayloadIssue::WrongType {
                        topic: topic.to_owned(),
                        field: field.clone(),
                        expected,
                    });
                    continue;
                }
            };
            out.readings.push(Reading {
                device: device.to_owned(),
                channel: None,
                quantity,
                value,
                unit: unit.map(str::to_owned),
                at,
            });
        }
        out
    }
}

fn decode_availability(topic: &str, device: &str, payload: &[u8]) -> Decoded {
    let state = match payload {
        b"online" => Some(true),
        b"offline" => Some(false),
        _ => match json_object(topic, payload) {
            Ok(map) => match map.get("state").and_then(serde_json::Value::as_str) {
                Some("online") => Some(true),
                Some("offline") => Some(false),
                _ => None,
            },
            Err(issue) => return Decoded::issue(issue),
        },
    };
    match state {
        Some(online) => Decoded {
            availability: Some(Availability {
                device: device.to_owned(),
                online,
            }),
            ..Decoded::default()
        },
        None => Decoded::issue(PayloadIssue::WrongType {
            topic: topic.to_owned(),
            field: "state".into(),
            expected: "\"online\" or \"offline\"",
        }),
    }
}

/// A zigbee2mqtt field's quantity, unit and whether it is a boolean.
fn field_quantity(field: &str) -> Option<(Quantity, Option<&'static str>, bool)> {
    Some(match field {
        "contact" => (Quantity::Contact, None, true),
        "water_leak" => (Quantity::WaterLeak, None, true),
        "smoke" => (Quantity::Smoke, None, true),
        "gas" => (Quantity::Gas, None, true),
        "occupancy" => (Quantity::Occupancy, None, true),
        "tilt" => (Quantity::Tilt, None, true),
        "vibration" => (Quantity::Vibration, None, true),
        "tamper" => (Quantity::Tamper, None, true),
        "battery_low" => (Quantity::BatteryLow, None, true),
        "temperature" => (Quantity::Temperature, Some("°C"), false),
        "humidity" => (Quantity::Humidity, Some("%"), false),
        "pressure" => (Quantity::Pressure, Some("hPa"), false),
        "illuminance" | "illuminance_lux" => (Quantity::Illuminance, Some("lx"), false),
        "battery" => (Quantity::Battery, Some("%"), false),
        "voltage" => (Quantity::Voltage, Some("mV"), false),
        "linkquality" => (Quantity::LinkQuality, Some("lqi"), false),
        "gas_density" => (Quantity::GasConcentration, Some("%LEL"), false),
        _ => return None,
    })
}

fn default_base_topic() -> String {
    "zigbee2mqtt".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensor::{DEFAULT_MAX_PAYLOAD_BYTES, PayloadProfile};

    fn z2m() -> PayloadProfile {
        PayloadProfile::Zigbee2mqtt(Zigbee2MqttProfile::default())
    }

    fn decode(topic: &str, payload: &str) -> Decoded {
        z2m().decode(topic, payload.as_bytes(), DEFAULT_MAX_PAYLOAD_BYTES)
    }

    #[test]
    fn aqara_door_contact_gives_contact_battery_and_link_quality() {
        // As published by an Aqara MCCGQ11LM through zigbee2mqtt 1.x.
        let d = decode(
            "zigbee2mqtt/door_elderly_301",
            r#"{"battery":91,"contact":false,"device_temperature":25,"linkquality":120,"power_outage_count":3,"voltage":3005}"#,
        );
        assert!(d.issues.is_empty(), "{:?}", d.issues);
        let get = |q: Quantity| {
            d.readings
                .iter()
                .find(|r| r.quantity == q)
                .map(|r| r.value.clone())
        };
        assert_eq!(get(Quantity::Contact), Some(Value::Bool(false)));
        assert_eq!(get(Quantity::Battery), Some(Value::Number(91.0)));
        assert_eq!(get(Quantity::Voltage), Some(Value::Number(3005.0)));
        assert_eq!(d.readings.len(), 4);
        assert!(d.readings.iter().all(|r| r.device == "door_elderly_301"));
    }

    #[test]
    fn leak_sensor_with_last_seen_is_stamped_with_the_device_time() {
        let d = decode(
            "zigbee2mqtt/kitchen/leak",
            r#"{"battery":100,"battery_low":false,"linkquality":87,"tamper":false,"water_leak":true,"last_seen":"2026-11-25T08:00:00+08:00"}"#,
        );
        let leak = d
            .readings
            .iter()
            .find(|r| r.quantity == Quantity::WaterLeak)
            .unwrap();
        assert_eq!(leak.value, Value::Bool(true));
        assert_eq!(
            leak.device, "kitchen/leak",
            "friendly names may contain slashes"
        );
        assert_eq!(leak.at.unwrap().to_string(), "2026-11-25T00:00:00.000Z");
    }

    #[test]
    fn wrong_types_and_unknown_fields_are_issues_but_good_fields_survive() {
        let d = decode(
            "zigbee2mqtt/smoke_1",
            r#"{"smoke":"yes","battery":55,"colour":"red","temperature":null}"#,
        );
        assert_eq!(d.readings.len(), 1);
        assert_eq!(d.readings[0].quantity, Quantity::Battery);
        let reasons: Vec<_> = d.issues.iter().map(PayloadIssue::reason).collect();
        assert_eq!(reasons, vec!["unknown_field", "wrong_type"]);
        assert!(d.issues.iter().all(|i| !i.is_fatal()));
    }

    #[test]
    fn garbage_is_a_fatal_issue_not_a_panic() {
        for payload in ["", "not json", "[1,2]", "{\"battery\":", "\u{0}"] {
            let d = decode("zigbee2mqtt/x", payload);
            assert!(d.readings.is_empty());
            assert!(d.issues.iter().any(PayloadIssue::is_fatal), "{payload:?}");
        }
        let big = vec![b' '; DEFAULT_MAX_PAYLOAD_BYTES + 1];
        let d = z2m().decode("zigbee2mqtt/x", &big, DEFAULT_MAX_PAYLOAD_BYTES);
        assert_eq!(d.issues[0].reason(), "too_large");
    }

    #[test]
    fn availability_in_both_formats() {
        let legacy = decode("zigbee2mqtt/door_1/availability", "offline");
        assert_eq!(
            legacy.availability,
            Some(Availability {
                device: "door_1".into(),
                online: false
            })
        );
        let json = decode("zigbee2mqtt/door_1/availability", r#"{"state":"online"}"#);
        assert_eq!(
            json.availability,
            Some(Availability {
                device: "door_1".into(),
                online: true
            })
        );
        assert_eq!(
            decode("zigbee2mqtt/door_1/availability", "maybe").issues[0].reason(),
            "not_json"
        );
    }

    #[test]
    fn topics_subscriptions_and_polls() {
        let p = z2m();
        assert_eq!(p.device_of("zigbee2mqtt/bridge/state"), None);
        assert_eq!(p.device_of("zigbee2mqtt/door_1/get"), None);
        assert_eq!(p.device_of("other/door_1"), None);
        assert_eq!(
            p.subscriptions("door_1"),
            vec!["zigbee2mqtt/door_1", "zigbee2mqtt/door_1/availability"]
        );
        let poll = p.poll_request("door_1").unwrap();
        assert_eq!(poll.topic, "zigbee2mqtt/door_1/get");
        assert_eq!(
            decode("zigbee2mqtt/bridge/devices", "[]").issues[0].reason(),
            "unknown_topic"
        );
    }
}

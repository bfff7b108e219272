//! Tasmota: `tele/<topic>/SENSOR` carries `{"Time":..., "<Sensor>": {"Temperature": ...}, ...}`,
//! `tele/<topic>/LWT` carries `Online`/`Offline`, and `cmnd/<topic>/Status 10` makes the device
//! answer on `stat/<topic>/STATUS10` with the same readings under `StatusSNS`.

use serde::Deserialize;

use super::{
    Availability, Decoded, PayloadIssue, PollRequest, Quantity, Reading, Value, json_object,
};

/// The Tasmota dialect (default topic layout `%prefix%/%topic%/`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TasmotaProfile {}

/// Top-level fields that are not sensors.
const NOT_SENSORS: &[&str] = &[
    "Time",
    "TempUnit",
    "PressureUnit",
    "SpeedUnit",
    "Epoch",
    "TimeZone",
];

impl TasmotaProfile {
    pub(super) fn subscriptions(&self, device: &str) -> Vec<String> {
        vec![
            format!("tele/{device}/SENSOR"),
            format!("tele/{device}/LWT"),
            format!("stat/{device}/STATUS10"),
        ]
    }

    pub(super) fn device_of<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let rest = topic
            .strip_prefix("tele/")
            .or_else(|| topic.strip_prefix("stat/"))?;
        let (device, kind) = rest.rsplit_once('/')?;
        (!device.is_empty() && matches!(kind, "SENSOR" | "LWT" | "STATUS10")).then_some(device)
    }

    pub(super) fn poll_request(&self, device: &str) -> PollRequest {
        PollRequest {
            topic: format!("cmnd/{device}/Status"),
            payload: b"10".to_vec(),
        }
    }

    pub(super) fn decode(&self, topic: &str, payload: &[u8]) -> Decoded {
        let Some(device) = self.device_of(topic) else {
            return Decoded::issue(PayloadIssue::UnknownTopic {
                topic: topic.to_owned(),
            });
        };
        if topic.ends_with("/LWT") {
            return match payload {
                b"Online" => Decoded {
                    availability: Some(Availability {
                        device: device.to_owned(),
                        online: true,
                    }),
                    ..Decoded::default()
                },
                b"Offline" => Decoded {
                    availability: Some(Availability {
                        device: device.to_owned(),
                        online: false,
                    }),
                    ..Decoded::default()
                },
                _ => Decoded::issue(PayloadIssue::WrongType {
                    topic: topic.to_owned(),
                    field: "LWT".into(),
                    expected: "Online or Offline",
                }),
            };
        }
        let mut map = match json_object(topic, payload) {
            Ok(map) => map,
            Err(issue) => return Decoded::issue(issue),
        };
        if topic.ends_with("/STATUS10") {
            map = match map.remove("StatusSNS") {
                Some(serde_json::Value::Object(inner)) => inner,
                _ => {
                    return Decoded::issue(PayloadIssue::MissingField {
                        topic: topic.to_owned(),
                        field: "StatusSNS".into(),
                    });
                }
            };
        }
        let temp_unit = match map.get("TempUnit").and_then(serde_json::Value::as_str) {
            Some("F") => "°F",
            _ => "°C",
        };
        let pressure_unit = map
            .get("PressureUnit")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("hPa")
            .to_owned();
        let mut out = Decoded::default();
        for (name, value) in &map {
            if NOT_SENSORS.contains(&name.as_str()) {
                continue;
            }
            match value {
                serde_json::Value::Object(fields) => {
                    for (field, v) in fields {
                        let Some((quantity, unit)) =
                            channel_quantity(field, temp_unit, &pressure_unit)
                        else {
                            continue;
                        };
                        match v.as_f64() {
                            Some(n) => out.readings.push(Reading {
                                device: device.to_owned(),
                                channel: Some(name.clone()),
                                quantity,
                                value: Value::Number(n),
                                unit,
                                at: None,
                            }),
                            None if v.is_null() => {}
                            None => out.issues.push(PayloadIssue::WrongType {
                                topic: topic.to_owned(),
                                field: format!("{name}.{field}"),
                                expected: "a number",
                            }),
                        }
                    }
                }
                // Switch inputs: {"Switch1":"ON"}; a closed circuit counts as a closed contact.
                serde_json::Value::String(s) if name.starts_with("Switch") => match s.as_str() {
                    "ON" | "OFF" => out.readings.push(Reading {
                        device: device.to_owned(),
                        channel: Some(name.clone()),
                        quantity: Quantity::Contact,
                        value: Value::Bool(s == "ON"),
                        unit: None,
                        at: None,
                    }),
                    _ => out.issues.push(PayloadIssue::WrongType {
                        topic: topic.to_owned(),
                        field: name.clone(),
                        expected: "ON or OFF",
                    }),
                },
                _ => out.issues.push(PayloadIssue::UnknownField {
                    topic: topic.to_owned(),
                    field: name.clone(),
                }),
            }
        }
        out
    }
}

/// A Tasmota sensor field's quantity and unit. Fields that are not measurements (`Id`) are
/// skipped; unknown numeric fields are kept under their own (snake-cased) name.
fn channel_quantity(
    field: &str,
    temp_unit: &str,
    pressure_unit: &str,
) -> Option<(Quantity, Option<String>)> {
    let (q, unit): (Quantity, Option<&str>) = match field {
        "Id" | "Name" => return None,
        "Temperature" => (Quantity::Temperature, Some(temp_unit)),
        "DewPoint" => (Quantity::Other("dew_point".into()), Some(temp_unit)),
        "Humidity" => (Quantity::Humidity, Some("%")),
        "Pressure" => (Quantity::Pressure, Some(pressure_unit)),
        "Illuminance" => (Quantity::Illuminance, Some("lx")),
        "Distance" => (Quantity::Distance, Some("cm")),
        "Gas" => (Quantity::GasConcentration, Some("ppm")),
        "Voltage" => (Quantity::Voltage, Some("V")),
        "CarbonDioxide" | "eCO2" => (Quantity::Other("co2".into()), Some("ppm")),
        other => (Quantity::Other(snake_case(other)), None),
    };
    Some((q, unit.map(str::to_owned)))
}

fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensor::{DEFAULT_MAX_PAYLOAD_BYTES, PayloadProfile};

    fn decode(topic: &str, payload: &str) -> Decoded {
        PayloadProfile::Tasmota(TasmotaProfile::default()).decode(
            topic,
            payload.as_bytes(),
            DEFAULT_MAX_PAYLOAD_BYTES,
        )
    }

    #[test]
    fn am2301_sensor_message_gives_temperature_humidity_and_dew_point() {
        // As published by Tasmota 13 with an AM2301 on GPIO.
        let d = decode(
            "tele/basement_th/SENSOR",
            r#"{"Time":"2026-11-25T08:00:00","AM2301":{"Temperature":21.4,"Humidity":63.2,"DewPoint":14.1},"TempUnit":"C"}"#,
        );
        assert!(d.issues.is_empty(), "{:?}", d.issues);
        assert_eq!(d.readings.len(), 3);
        let t = d
            .readings
            .iter()
            .find(|r| r.quantity == Quantity::Temperature)
            .unwrap();
        assert_eq!(
            (t.device.as_str(), t.channel.as_deref(), t.unit.as_deref()),
            ("basement_th", Some("AM2301"), Some("°C"))
        );
        assert_eq!(t.value, Value::Number(21.4));
        assert_eq!(
            t.at, None,
            "Tasmota's Time has no zone: the receiver stamps arrival"
        );
    }

    #[test]
    fn ultrasonic_water_level_and_switch_inputs() {
        let d = decode(
            "tele/drain_7/SENSOR",
            r#"{"Time":"2026-11-25T08:00:00","SR04":{"Distance":37.512},"Switch1":"ON"}"#,
        );
        let dist = d
            .readings
            .iter()
            .find(|r| r.quantity == Quantity::Distance)
            .unwrap();
        assert_eq!(
            (dist.value.clone(), dist.unit.as_deref()),
            (Value::Number(37.512), Some("cm"))
        );
        let sw = d
            .readings
            .iter()
            .find(|r| r.quantity == Quantity::Contact)
            .unwrap();
        assert_eq!(sw.value, Value::Bool(true));
    }

    #[test]
    fn status10_answer_to_a_poll_is_read_like_a_sensor_message() {
        let d = decode(
            "stat/drain_7/STATUS10",
            r#"{"StatusSNS":{"Time":"2026-11-25T08:00:00","SR04":{"Distance":12.0}}}"#,
        );
        assert_eq!(d.readings.len(), 1);
        assert_eq!(
            decode("stat/drain_7/STATUS10", r#"{"Status":{}}"#).issues[0].reason(),
            "missing_field"
        );
    }

    #[test]
    fn lwt_and_bad_payloads() {
        assert_eq!(
            decode("tele/drain_7/LWT", "Offline").availability,
            Some(Availability {
                device: "drain_7".into(),
                online: false
            })
        );
        assert_eq!(
            decode("tele/drain_7/LWT", "gone").issues[0].reason(),
            "wrong_type"
        );
        let d = decode(
            "tele/drain_7/SENSOR",
            r#"{"SR04":{"Distance":"far"},"Weird":[1]}"#,
        );
        let reasons: Vec<_> = d.issues.iter().map(PayloadIssue::reason).collect();
        assert_eq!(reasons, vec!["wrong_type", "unknown_field"]);
        assert_eq!(
            decode("tele/drain_7/STATE", "{}").issues[0].reason(),
            "unknown_topic"
        );
    }

    #[test]
    fn poll_asks_for_status_10() {
        let p = PayloadProfile::Tasmota(TasmotaProfile::default());
        let poll = p.poll_request("drain_7").unwrap();
        assert_eq!(
            (poll.topic.as_str(), poll.payload.as_slice()),
            ("cmnd/drain_7/Status", b"10".as_slice())
        );
        assert_eq!(p.subscriptions("drain_7").len(), 3);
    }
}

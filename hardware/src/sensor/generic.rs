//! Generic JSON devices: a topic pattern with one `{device}` segment, and JSON pointers to the
//! value, unit and time in the payload.

use serde::Deserialize;

use super::{Decoded, PayloadIssue, PollRequest, Quantity, Reading, Value, json_time};

/// A device family described by configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenericJsonProfile {
    /// Topic pattern with exactly one whole `{device}` segment, e.g. `sensors/{device}/level`.
    pub topic: String,
    /// What the value measures.
    pub quantity: Quantity,
    /// JSON pointer (RFC 6901) to the value, e.g. `/level`; `""` for a bare JSON value.
    pub value_pointer: String,
    /// A fixed unit. Default: none.
    #[serde(default)]
    pub unit: Option<String>,
    /// JSON pointer to the unit, overriding `unit` when present in a message.
    #[serde(default)]
    pub unit_pointer: Option<String>,
    /// JSON pointer to the device's time (epoch seconds or milliseconds, or RFC 3339 with offset).
    #[serde(default)]
    pub time_pointer: Option<String>,
    /// Topic pattern to publish a poll to (with `{device}`). Default: the device cannot be polled.
    #[serde(default)]
    pub poll_topic: Option<String>,
    /// Payload of a poll. Default: empty.
    #[serde(default)]
    pub poll_payload: String,
}

impl GenericJsonProfile {
    /// Configuration problems, each as the field and what is wrong with it.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let segments: Vec<&str> = self.topic.split('/').collect();
        if segments.iter().filter(|s| **s == "{device}").count() != 1
            || self.topic.matches("{device}").count() != 1
        {
            out.push((
                "topic",
                format!(
                    "`{}` must contain exactly one whole `{{device}}` segment",
                    self.topic
                ),
            ));
        }
        if self.topic.contains(['+', '#']) {
            out.push((
                "topic",
                format!(
                    "`{}` must not contain MQTT wildcards; use `{{device}}`",
                    self.topic
                ),
            ));
        }
        for (key, pointer) in [
            ("value_pointer", Some(&self.value_pointer)),
            ("unit_pointer", self.unit_pointer.as_ref()),
            ("time_pointer", self.time_pointer.as_ref()),
        ] {
            if let Some(p) = pointer
                && !(p.is_empty() || p.starts_with('/'))
            {
                out.push((
                    key,
                    format!("`{p}` is not a JSON pointer (it must start with `/`)"),
                ));
            }
        }
        if let Some(poll) = &self.poll_topic
            && poll.matches("{device}").count() != 1
        {
            out.push((
                "poll_topic",
                format!("`{poll}` must contain `{{device}}` once"),
            ));
        }
        out
    }

    pub(super) fn subscriptions(&self, device: &str) -> Vec<String> {
        vec![self.topic.replace("{device}", device)]
    }

    pub(super) fn device_of<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let (prefix, suffix) = self.topic.split_once("{device}")?;
        let device = topic.strip_prefix(prefix)?.strip_suffix(suffix)?;
        (!device.is_empty() && !device.contains('/')).then_some(device)
    }

    pub(super) fn poll_request(&self, device: &str) -> Option<PollRequest> {
        self.poll_topic.as_ref().map(|t| PollRequest {
            topic: t.replace("{device}", device),
            payload: self.poll_payload.clone().into_bytes(),
        })
    }

    pub(super) fn decode(&self, topic: &str, payload: &[u8]) -> Decoded {
        let Some(device) = self.device_of(topic) else {
            return Decoded::issue(PayloadIssue::UnknownTopic {
                topic: topic.to_owned(),
            });
        };
        let json: serde_json::Value = match serde_json::from_slice(payload) {
            Ok(v) => v,
            Err(e) => {
                return Decoded::issue(PayloadIssue::NotJson {
                    topic: topic.to_owned(),
                    detail: e.to_string(),
                });
            }
        };
        let value = match json.pointer(&self.value_pointer) {
            Some(serde_json::Value::Bool(b)) => Value::Bool(*b),
            Some(serde_json::Value::Number(n)) => match n.as_f64() {
                Some(n) => Value::Number(n),
                None => return Decoded::issue(self.wrong_type(topic)),
            },
            Some(_) => return Decoded::issue(self.wrong_type(topic)),
            None => {
                return Decoded::issue(PayloadIssue::MissingField {
                    topic: topic.to_owned(),
                    field: self.value_pointer.clone(),
                });
            }
        };
        let unit = self
            .unit_pointer
            .as_ref()
            .and_then(|p| json.pointer(p))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
            .or_else(|| self.unit.clone());
        let at = self
            .time_pointer
            .as_ref()
            .and_then(|p| json.pointer(p))
            .and_then(json_time);
        Decoded {
            readings: vec![Reading {
                device: device.to_owned(),
                channel: None,
                quantity: self.quantity.clone(),
                value,
                unit,
                at,
            }],
            ..Decoded::default()
        }
    }

    fn wrong_type(&self, topic: &str) -> PayloadIssue {
        PayloadIssue::WrongType {
            topic: topic.to_owned(),
            field: self.value_pointer.clone(),
            expected: "a number or a boolean",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensor::{DEFAULT_MAX_PAYLOAD_BYTES, PayloadProfile};

    fn level_profile() -> GenericJsonProfile {
        GenericJsonProfile {
            topic: "city/drains/{device}/level".into(),
            quantity: Quantity::WaterLevel,
            value_pointer: "/data/level".into(),
            unit: Some("cm".into()),
            unit_pointer: None,
            time_pointer: Some("/ts".into()),
            poll_topic: Some("city/drains/{device}/poll".into()),
            poll_payload: "now".into(),
        }
    }

    fn decode(topic: &str, payload: &str) -> Decoded {
        PayloadProfile::GenericJson(level_profile()).decode(
            topic,
            payload.as_bytes(),
            DEFAULT_MAX_PAYLOAD_BYTES,
        )
    }

    #[test]
    fn value_unit_and_time_come_from_their_pointers() {
        let d = decode(
            "city/drains/d-17/level",
            r#"{"data":{"level":42.5},"ts":1764057600}"#,
        );
        assert!(d.issues.is_empty());
        let r = &d.readings[0];
        assert_eq!(
            (r.device.as_str(), r.value.clone(), r.unit.as_deref()),
            ("d-17", Value::Number(42.5), Some("cm"))
        );
        assert_eq!(r.at.unwrap().as_unix_millis(), 1_764_057_600_000);
    }

    #[test]
    fn missing_and_mistyped_values_are_issues() {
        assert_eq!(
            decode("city/drains/d-17/level", r#"{"data":{}}"#).issues[0].reason(),
            "missing_field"
        );
        assert_eq!(
            decode("city/drains/d-17/level", r#"{"data":{"level":"high"}}"#).issues[0].reason(),
            "wrong_type"
        );
        assert_eq!(
            decode("city/drains/d-17/level", "{").issues[0].reason(),
            "not_json"
        );
        assert_eq!(
            decode("city/drains/a/b/level", "{}").issues[0].reason(),
            "unknown_topic"
        );
    }

    #[test]
    fn bad_configuration_is_reported_per_field() {
        let mut p = level_profile();
        p.topic = "city/+/{device}x/level".into();
        p.value_pointer = "data.level".into();
        let problems = p.problems();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(level_profile().problems().is_empty());
    }

    #[test]
    fn profiles_deserialize_from_configuration() {
        let p: PayloadProfile = serde_json::from_str(
            r#"{"kind":"generic-json","topic":"a/{device}","quantity":"water_level","value_pointer":"/v"}"#,
        )
        .unwrap();
        assert_eq!(p.name(), "generic-json");
        let z: PayloadProfile = serde_json::from_str(r#"{"kind":"zigbee2mqtt"}"#).unwrap();
        assert_eq!(z.subscriptions("d")[0], "zigbee2mqtt/d");
        let custom: PayloadProfile = serde_json::from_str(
            r#"{"kind":"generic-json","topic":"a/{device}","quantity":"radon","value_pointer":""}"#,
        )
        .unwrap();
        let d = custom.decode("a/x", b"12", 100);
        assert_eq!(d.readings[0].quantity, Quantity::Other("radon".into()));
    }
}

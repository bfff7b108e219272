//! Simulators for demos and tests: virtual zigbee2mqtt and Tasmota devices that produce the
//! messages real ones publish, scripted scenarios of them, and (with the `sim` feature) an MQTT
//! publisher that plays a scenario against a real broker, and (with the `rtsp-sim` feature) a test
//! RTSP camera (`rtsp`) and excerpts of test clips (`clip`).
//!
//! The message builders are pure; only `publisher` does I/O. Production code of the agent must
//! not use this module.

#[cfg(feature = "rtsp-sim")]
pub mod clip;
#[cfg(feature = "sim")]
pub mod publisher;
#[cfg(feature = "rtsp-sim")]
pub mod rtsp;

use std::time::Duration;

use serde_json::{Map, Value, json};

/// One message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimMessage {
    /// The topic.
    pub topic: String,
    /// The payload.
    pub payload: Vec<u8>,
    /// Whether the broker should retain it.
    pub retain: bool,
}

/// A zigbee2mqtt device, e.g. an Aqara door contact or a leak sensor.
#[derive(Debug, Clone)]
pub struct Zigbee2MqttDevice {
    base_topic: String,
    name: String,
    battery: u8,
}

impl Zigbee2MqttDevice {
    /// A device with this friendly name under the default base topic, battery full.
    pub fn new(name: &str) -> Self {
        Zigbee2MqttDevice {
            base_topic: "zigbee2mqtt".into(),
            name: name.into(),
            battery: 100,
        }
    }

    /// Sets the battery level reported with every state.
    #[must_use]
    pub fn with_battery(mut self, percent: u8) -> Self {
        self.battery = percent;
        self
    }

    /// A state message with these fields (plus battery and link quality, as real devices send).
    pub fn state(&self, fields: Value) -> SimMessage {
        let mut map = Map::new();
        map.insert("battery".into(), json!(self.battery));
        map.insert("linkquality".into(), json!(96));
        map.insert("voltage".into(), json!(2900 + u32::from(self.battery) * 3));
        if let Value::Object(extra) = fields {
            map.extend(extra);
        }
        SimMessage {
            topic: format!("{}/{}", self.base_topic, self.name),
            payload: Value::Object(map).to_string().into_bytes(),
            retain: false,
        }
    }

    /// A leak sensor report.
    pub fn water_leak(&self, wet: bool) -> SimMessage {
        self.state(json!({ "water_leak": wet, "battery_low": self.battery < 10, "tamper": false }))
    }

    /// A door contact report (`closed` = contact made).
    pub fn contact(&self, closed: bool) -> SimMessage {
        self.state(json!({ "contact": closed, "device_temperature": 24, "power_outage_count": 2 }))
    }

    /// A smoke detector report.
    pub fn smoke(&self, smoke: bool) -> SimMessage {
        self.state(json!({ "smoke": smoke, "battery_low": false, "test": false }))
    }

    /// A temperature/humidity report.
    pub fn climate(&self, celsius: f64, humidity: f64) -> SimMessage {
        self.state(json!({ "temperature": celsius, "humidity": humidity, "pressure": 1012.3 }))
    }

    /// The availability message (retained, as zigbee2mqtt publishes it).
    pub fn availability(&self, online: bool) -> SimMessage {
        let state = if online { "online" } else { "offline" };
        SimMessage {
            topic: format!("{}/{}/availability", self.base_topic, self.name),
            payload: json!({ "state": state }).to_string().into_bytes(),
            retain: true,
        }
    }
}

/// A Tasmota device, e.g. an ESP with an SR04 ultrasonic ranger over a drain.
#[derive(Debug, Clone)]
pub struct TasmotaDevice {
    topic: String,
}

impl TasmotaDevice {
    /// A device with this Tasmota topic.
    pub fn new(topic: &str) -> Self {
        TasmotaDevice {
            topic: topic.into(),
        }
    }

    /// A `tele/<topic>/SENSOR` message with one sensor object.
    pub fn sensor(&self, sensor: &str, fields: Value) -> SimMessage {
        let payload = json!({ "Time": "2026-11-25T08:00:00", sensor: fields, "TempUnit": "C" });
        SimMessage {
            topic: format!("tele/{}/SENSOR", self.topic),
            payload: payload.to_string().into_bytes(),
            retain: false,
        }
    }

    /// An SR04 distance report in cm.
    pub fn distance(&self, cm: f64) -> SimMessage {
        self.sensor("SR04", json!({ "Distance": cm }))
    }

    /// An AM2301 temperature/humidity report.
    pub fn climate(&self, celsius: f64, humidity: f64) -> SimMessage {
        self.sensor(
            "AM2301",
            json!({ "Temperature": celsius, "Humidity": humidity, "DewPoint": celsius - 5.0 }),
        )
    }

    /// The LWT message (retained).
    pub fn lwt(&self, online: bool) -> SimMessage {
        let payload = if online { "Online" } else { "Offline" };
        SimMessage {
            topic: format!("tele/{}/LWT", self.topic),
            payload: payload.as_bytes().to_vec(),
            retain: true,
        }
    }
}

/// A scripted scenario: messages at offsets from its start.
#[derive(Debug, Clone, Default)]
pub struct Scenario {
    /// The steps, in order of offset.
    pub steps: Vec<(Duration, SimMessage)>,
}

impl Scenario {
    /// Adds a message at `offset` from the start.
    #[must_use]
    pub fn at(mut self, offset: Duration, msg: SimMessage) -> Self {
        self.steps.push((offset, msg));
        self.steps.sort_by_key(|(t, _)| *t);
        self
    }

    /// The demo's street: a drain filling up past the flooding level, a kitchen leak, an elderly
    /// resident's door that stays shut, and a smoke detector with a low battery.
    pub fn demo_street() -> Scenario {
        let drain = TasmotaDevice::new("drain_7");
        let leak = Zigbee2MqttDevice::new("kitchen_leak_301");
        let door = Zigbee2MqttDevice::new("door_elderly_301");
        let smoke = Zigbee2MqttDevice::new("smoke_stairwell_2").with_battery(9);
        let s = |secs: u64| Duration::from_secs(secs);
        let mut scenario = Scenario::default()
            .at(s(0), drain.lwt(true))
            .at(s(0), door.availability(true))
            .at(s(0), door.contact(false))
            .at(s(1), door.contact(true))
            .at(s(1), leak.water_leak(false))
            .at(s(2), smoke.smoke(false))
            .at(s(6), leak.water_leak(true));
        // The drain's distance to the water surface shrinks: the water rises.
        for (i, cm) in [80.0, 60.0, 40.0, 25.0, 15.0, 12.0, 10.0, 10.0]
            .into_iter()
            .enumerate()
        {
            scenario = scenario.at(s(1 + i as u64), drain.distance(cm));
        }
        scenario
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensor::{
        PayloadProfile, Quantity, TasmotaProfile, Value as Reading, Zigbee2MqttProfile,
    };

    #[test]
    fn simulated_messages_decode_cleanly_with_their_profiles() {
        let z = PayloadProfile::Zigbee2mqtt(Zigbee2MqttProfile::default());
        let t = PayloadProfile::Tasmota(TasmotaProfile::default());
        for msg in Scenario::demo_street().steps.iter().map(|(_, m)| m) {
            let profile = if msg.topic.starts_with("tele/") {
                &t
            } else {
                &z
            };
            let d = profile.decode(&msg.topic, &msg.payload, 65536);
            let bad: Vec<_> = d
                .issues
                .iter()
                .filter(|i| i.reason() != "unknown_field")
                .collect();
            assert!(bad.is_empty(), "{}: {bad:?}", msg.topic);
            assert!(
                !d.readings.is_empty() || d.availability.is_some(),
                "{}",
                msg.topic
            );
        }
        let leak = Zigbee2MqttDevice::new("l").water_leak(true);
        let d = z.decode(&leak.topic, &leak.payload, 65536);
        assert!(
            d.readings
                .iter()
                .any(|r| r.quantity == Quantity::WaterLeak && r.value == Reading::Bool(true))
        );
    }
}

//! Fuzzes every sensor payload profile: any topic and payload bytes must decode to readings,
//! an availability change or counted issues; never panic, and never yield a number that is not
//! finite (rules and events refuse those later, but a decoder must not make them).
//!
//! Input: byte 0 picks the profile, byte 1 the topic length, then the topic, then the payload.
#![no_main]

use hardware::sensor::{PayloadProfile, Value};
use libfuzzer_sys::fuzz_target;

const PROFILES: [&str; 5] = [
    r#"{"kind":"zigbee2mqtt"}"#,
    r#"{"kind":"tasmota"}"#,
    r#"{"kind":"generic-json","topic":"site/{device}/level","quantity":"water_level","value_pointer":"/level","unit_pointer":"/unit","time_pointer":"/ts"}"#,
    r#"{"kind":"generic-json","topic":"{device}","quantity":"smoke","value_pointer":""}"#,
    r#"{"kind":"generic-json","topic":"a/{device}/b/c","quantity":"temperature","value_pointer":"/x/0/y","unit":"°F","time_pointer":"/t"}"#,
];

fuzz_target!(|data: &[u8]| {
    let [pick, topic_len, rest @ ..] = data else {
        return;
    };
    let profile: PayloadProfile = serde_json::from_str(PROFILES[*pick as usize % PROFILES.len()])
        .expect("the fuzz profiles are valid");
    let split = (*topic_len as usize).min(rest.len());
    let (topic, payload) = rest.split_at(split);
    let topic = String::from_utf8_lossy(topic);
    let _ = profile.device_of(&topic);
    let decoded = profile.decode(&topic, payload, 64 * 1024);
    for reading in &decoded.readings {
        if let Value::Number(n) = reading.value {
            assert!(n.is_finite(), "{reading:?} from {topic}");
        }
        let _ = reading.value.as_f64();
    }
});

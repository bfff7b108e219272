//! `edge-agent test-sensor TOPIC [--profile P]`: subscribe to a topic on the broker and print
//! each message decoded by a payload profile (readings, availability, or why it could not be
//! read), until `--count` messages or `--seconds` have passed.
//!
//! It uses a throw-away MQTT client id with a clean session, so the agent's persistent session
//! and its queued messages are untouched. It raises no events.

use std::io::Write;
use std::time::{Duration, Instant};

use hardware::sensor::{DEFAULT_MAX_PAYLOAD_BYTES, PayloadProfile};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// What `test-sensor` was asked to do.
#[derive(Debug, Clone)]
pub struct TestSensorOptions {
    /// The topic filter (wildcards allowed).
    pub topic: String,
    /// How payloads are read.
    pub profile: PayloadProfile,
    /// The broker's host.
    pub host: String,
    /// The broker's port.
    pub port: u16,
    /// Stop after this many messages.
    pub count: u64,
    /// Stop after this long.
    pub duration: Duration,
}

/// Why `test-sensor` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestSensorError {
    /// `--profile` is not a profile.
    #[error(
        "--profile `{0}` is not a payload profile (zigbee2mqtt, tasmota, or an inline table such as {{ kind = \"generic-json\", ... }})"
    )]
    Profile(String),
    /// No profile given and the topic does not tell.
    #[error("cannot tell the payload profile from topic `{0}`: give --profile")]
    NoProfile(String),
    /// The broker could not be reached.
    #[error("failed to connect to the broker at {addr}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// Why.
        #[source]
        source: Box<rumqttc::ConnectionError>,
    },
    /// The subscription was refused.
    #[error("failed to subscribe to `{0}`")]
    Subscribe(String),
    /// Writing the output failed.
    #[error("failed to write output")]
    Output(#[from] std::io::Error),
}

/// Parses `--profile`: a family name (`zigbee2mqtt`, `tasmota`) or an inline TOML table; with
/// none, guesses from the topic (`zigbee2mqtt/…`, `tele/…` or `stat/…`).
///
/// # Errors
/// [`TestSensorError::Profile`] or [`TestSensorError::NoProfile`].
pub fn parse_profile(
    profile: Option<&str>,
    topic: &str,
) -> Result<PayloadProfile, TestSensorError> {
    let text = match profile {
        Some(p) if p.trim_start().starts_with('{') => p.to_owned(),
        Some(p) => format!("{{ kind = {} }}", toml::Value::String(p.to_owned())),
        None if topic.starts_with("zigbee2mqtt/") => "{ kind = \"zigbee2mqtt\" }".to_owned(),
        None if topic.starts_with("tele/") || topic.starts_with("stat/") => {
            "{ kind = \"tasmota\" }".to_owned()
        }
        None => return Err(TestSensorError::NoProfile(topic.to_owned())),
    };
    #[derive(serde::Deserialize)]
    struct Wrapper {
        profile: PayloadProfile,
    }
    toml::from_str::<Wrapper>(&format!("profile = {text}"))
        .map(|w| w.profile)
        .map_err(|_| TestSensorError::Profile(profile.unwrap_or_default().to_owned()))
}

/// Runs `test-sensor`, printing to `out`; returns the number of messages seen.
///
/// # Errors
/// [`TestSensorError`] when the broker cannot be reached or the topic not subscribed.
pub async fn run_test_sensor(
    opts: &TestSensorOptions,
    out: &mut (impl Write + Send),
) -> Result<u64, TestSensorError> {
    let addr = format!("{}:{}", opts.host, opts.port);
    let mut options = MqttOptions::new(
        format!("edge-agent-test-sensor-{}", std::process::id()),
        &opts.host,
        opts.port,
    );
    options.set_clean_session(true);
    let limit = (DEFAULT_MAX_PAYLOAD_BYTES * 4).max(1 << 20);
    options.set_max_packet_size(limit, limit);
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    if client
        .subscribe(&opts.topic, QoS::AtMostOnce)
        .await
        .is_err()
    {
        return Err(TestSensorError::Subscribe(opts.topic.clone()));
    }
    writeln!(
        out,
        "listening on {addr} to `{}` as {} (up to {} message(s) or {} s)",
        opts.topic,
        opts.profile.name(),
        opts.count,
        opts.duration.as_secs()
    )?;
    let started = Instant::now();
    let deadline = started + opts.duration;
    let mut seen = 0u64;
    while seen < opts.count {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let event = match tokio::time::timeout(left, eventloop.poll()).await {
            Err(_) => break,
            Ok(Err(source)) => {
                return Err(TestSensorError::Connect {
                    addr,
                    source: Box::new(source),
                });
            }
            Ok(Ok(event)) => event,
        };
        match event {
            Event::Incoming(Packet::SubAck(ack))
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)) =>
            {
                return Err(TestSensorError::Subscribe(opts.topic.clone()));
            }
            Event::Incoming(Packet::Publish(p)) => {
                seen += 1;
                print_message(out, &opts.profile, &p.topic, &p.payload, started)?;
            }
            _ => {}
        }
    }
    let _ = client.try_disconnect();
    writeln!(
        out,
        "{seen} message(s) in {:.1} s",
        started.elapsed().as_secs_f64()
    )?;
    Ok(seen)
}

fn print_message(
    out: &mut impl Write,
    profile: &PayloadProfile,
    topic: &str,
    payload: &[u8],
    started: Instant,
) -> std::io::Result<()> {
    let at = started.elapsed().as_secs_f64();
    let decoded = profile.decode(topic, payload, DEFAULT_MAX_PAYLOAD_BYTES);
    for r in &decoded.readings {
        let quantity = match &r.channel {
            Some(ch) => format!("{}/{ch}", r.quantity.name()),
            None => r.quantity.name().to_owned(),
        };
        let value = match &r.value {
            hardware::sensor::Value::Bool(b) => b.to_string(),
            hardware::sensor::Value::Number(n) => n.to_string(),
        };
        writeln!(
            out,
            "{at:7.2}s  {topic}  {}  {quantity} = {value}{}",
            r.device,
            r.unit
                .as_deref()
                .map(|u| format!(" {u}"))
                .unwrap_or_default()
        )?;
    }
    if let Some(a) = &decoded.availability {
        writeln!(
            out,
            "{at:7.2}s  {topic}  {}  {}",
            a.device,
            if a.online { "online" } else { "offline" }
        )?;
    }
    for issue in &decoded.issues {
        writeln!(
            out,
            "{at:7.2}s  {topic}  bad payload ({}): {issue}",
            issue.reason()
        )?;
    }
    if decoded.readings.is_empty() && decoded.availability.is_none() && decoded.issues.is_empty() {
        writeln!(out, "{at:7.2}s  {topic}  (no readings in this message)")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_come_from_names_tables_or_the_topic() {
        assert_eq!(
            parse_profile(Some("tasmota"), "x").unwrap().name(),
            "tasmota"
        );
        assert_eq!(
            parse_profile(None, "zigbee2mqtt/door").unwrap().name(),
            "zigbee2mqtt"
        );
        assert_eq!(
            parse_profile(None, "tele/drain_7/SENSOR").unwrap().name(),
            "tasmota"
        );
        assert!(matches!(
            parse_profile(None, "city/x"),
            Err(TestSensorError::NoProfile(_))
        ));
        assert!(matches!(
            parse_profile(Some("nope"), "x"),
            Err(TestSensorError::Profile(_))
        ));
        let generic = parse_profile(
            Some(r#"{ kind = "generic-json", topic = "city/gauges/{device}/level", quantity = "water_level", value_pointer = "/level" }"#),
            "city/gauges/+/level",
        )
        .unwrap();
        assert_eq!(generic.name(), "generic-json");
    }
}

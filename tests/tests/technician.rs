//! Installer and technician tools end to end: `check-config` of both binaries, the agent's
//! `/metrics` after real activity (a real mosquitto, the test RTSP camera, ONNX Runtime), and
//! `doctor`, `test-camera` and `test-sensor` against real components.
#![allow(clippy::unwrap_used)] // test code: helpers outside #[test] functions unwrap too

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use e2e::media::media;
use e2e::mosquitto::Mosquitto;
use edge_agent::agent::Agent;
use edge_agent::config::Config;
use hardware::sim::SimMessage;
use hardware::sim::Zigbee2MqttDevice;
use hardware::sim::publisher::Publisher;
use hardware::sim::rtsp::{TestCamera, TestMedia};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

/// A plain HTTP/1.1 GET; returns the status line's code and the body.
fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_metrics_answer_with_camera_sensor_store_and_event_metrics_after_activity() {
    let broker = Mosquitto::start().unwrap();
    let camera = TestCamera::start(TestMedia::Still {
        path: media("motorcycle_left.png").unwrap(),
        fps: 10,
        width_px: 740,
        height_px: 500,
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
        [site]
        lat = 31.2989
        lon = 120.5853
        [store]
        data_dir = "{data}"
        [metrics]
        listen_addr = "127.0.0.1:0"
        [mqtt]
        port = {port}
        client_id = "agent-metrics"
        reconnect_min_ms = 50
        [[sensors]]
        id = "leak-301"
        device = "kitchen_leak_301"
        profile = {{ kind = "zigbee2mqtt" }}
        [[sensors.rules]]
        name = "leak"
        kind = "state"
        quantity = "water_leak"
        category = "other.water_leak"
        [[cameras]]
        id = "kerb-cam"
        detect_fps = 5
        source = {{ kind = "rtsp", url = "{url}" }}
        [cameras.motion]
        enabled = false
        "#,
        data = dir.path().display(),
        port = broker.port(),
        url = camera.url(),
    );
    let config = Config::from_toml_str(&text, "metrics-e2e").unwrap();
    let agent = Agent::start(config, CancellationToken::new())
        .await
        .unwrap();
    let addr = agent.metrics_addr().expect("[metrics] is configured");
    let sensors = agent.sensor_stats().unwrap();
    wait_until("the MQTT subscription", || {
        sensors.lock().unwrap().link.subscribed > 0
    })
    .await;
    let publisher = Publisher::connect("devices", "127.0.0.1", broker.port());
    let leak = Zigbee2MqttDevice::new("kitchen_leak_301");
    publisher.publish(&leak.water_leak(true), WAIT).unwrap();
    publisher
        .publish(
            &SimMessage {
                topic: "zigbee2mqtt/kitchen_leak_301".into(),
                payload: b"not json".to_vec(),
                retain: false,
            },
            WAIT,
        )
        .unwrap();
    let cameras = agent.camera_stats().unwrap();
    wait_until("an event, a bad payload and two detected frames", || {
        let s = sensors.lock().unwrap();
        let bad = s
            .sensors
            .values()
            .map(|c| c.bad_input.values().sum::<u64>())
            .sum::<u64>();
        agent.store().stats().unwrap().last_seq >= 1
            && bad >= 1
            && cameras.camera("kerb-cam").is_some_and(|c| c.detected >= 2)
    })
    .await;

    let (code, body) = tokio::task::spawn_blocking(move || http_get(addr, "/metrics"))
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    for expected in [
        "edge_agent_camera_frames_total ",
        "edge_agent_camera_frames_dropped_total{reason=\"superseded\"}",
        "edge_agent_cameras{state=\"streaming\"} 1",
        "edge_agent_inference_latency_seconds_bucket{le=\"+Inf\"}",
        "edge_agent_inference_latency_seconds_count ",
        "edge_agent_events_total{category=\"0602\"} 1",
        "edge_agent_store_usage_bytes ",
        "edge_agent_store_evictions_total{kind=\"unsynced_event\"} 0",
        "edge_agent_backlog_events 1",
        "edge_agent_mqtt_messages_total 2",
        "edge_agent_mqtt_bad_payloads_total{reason=\"not_json\"} 1",
        "edge_agent_mqtt_connected 1",
        "edge_agent_sensor_readings_total ",
    ] {
        assert!(body.contains(expected), "missing `{expected}` in:\n{body}");
    }
    let (code, _) = tokio::task::spawn_blocking(move || http_get(addr, "/nope"))
        .await
        .unwrap();
    assert_eq!(code, 404);
    agent.shutdown().await;
}

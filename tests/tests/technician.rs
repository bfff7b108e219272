//! Installer and technician tools end to end: `check-config` of both binaries, the agent's
//! `/metrics` after real activity (a real mosquitto, the test RTSP camera, ONNX Runtime), and
//! `doctor`, `test-camera` and `test-sensor` against real components.
#![allow(clippy::unwrap_used)] // test code: helpers outside #[test] functions unwrap too

use std::time::Duration;

use e2e::mosquitto::Mosquitto;
use edge_agent::agent::Agent;
use edge_agent::config::Config;
use hardware::sim::SimMessage;
use hardware::sim::Zigbee2MqttDevice;
use hardware::sim::publisher::Publisher;
use hardware::sim::rtsp::{TestCamera, TestMedia};
use tokio_util::sync::CancellationToken;

use e2e::WAIT;

/// `GET path`: the status and the body.
fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let answer = e2e::http::request(addr, "GET", path, &[], b"").unwrap();
    (answer.status, answer.text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_metrics_answer_with_camera_sensor_store_and_event_metrics_after_activity() {
    let broker = Mosquitto::start().unwrap();
    let camera = e2e::media::motorcycle_camera(10).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
        {site}
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
        camera = "kerb-cam"
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
        site = e2e::site_toml()
    );
    let config = Config::from_toml_str(&text, "metrics-e2e").unwrap();
    let agent = Agent::start(config, CancellationToken::new())
        .await
        .unwrap();
    let addr = agent.metrics_addr().expect("[metrics] is configured");
    let sensors = agent.sensor_stats().unwrap();
    let cameras = agent.camera_stats().unwrap();
    // The leak sensor names the camera: its event waits for the camera's look, which needs a
    // frame.
    e2e::wait_until(WAIT, "the MQTT subscription and a camera frame", || {
        (sensors.lock().unwrap().link.subscribed > 0
            && cameras.camera("kerb-cam").is_some_and(|c| c.frames > 0))
        .then_some(())
    })
    .await
    .unwrap();
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
    e2e::wait_until(
        WAIT,
        "an event, a bad payload and two detected frames",
        || {
            let s = sensors.lock().unwrap();
            let bad = s
                .sensors
                .values()
                .map(|c| c.bad_input.values().sum::<u64>())
                .sum::<u64>();
            (agent.store().stats().unwrap().last_seq >= 1
                && bad >= 1
                && cameras.camera("kerb-cam").is_some_and(|c| c.detected >= 2))
            .then_some(())
        },
    )
    .await
    .unwrap();

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
        "edge_agent_store_disk_full_total 0",
        "edge_agent_store_lost_evidence_total 0",
        "edge_agent_store_disk_reserve_bytes ",
        "edge_agent_backlog_events 1",
        "edge_agent_mqtt_messages_total 2",
        "edge_agent_mqtt_bad_payloads_total{reason=\"not_json\"} 1",
        "edge_agent_mqtt_connected 1",
        "edge_agent_sensor_readings_total ",
        "edge_agent_fusion_observations_total{kind=\"confirmed\"} 1",
        "edge_agent_fusion_observations_total{kind=\"unavailable\"} 0",
    ] {
        // "name value" must be a whole line (`} 1` is not `} 10`); the others start one
        let found = if expected.ends_with(|c: char| c.is_ascii_digit()) {
            body.lines().any(|l| l == expected)
        } else {
            body.lines().any(|l| l.starts_with(expected))
        };
        assert!(found, "missing `{expected}` in:\n{body}");
    }
    let (code, _) = tokio::task::spawn_blocking(move || http_get(addr, "/nope"))
        .await
        .unwrap();
    assert_eq!(code, 404);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_a_stopped_camera_and_a_missing_broker_and_says_the_box_is_unhealthy() {
    let live = TestCamera::start(TestMedia::Pattern {
        width_px: 320,
        height_px: 240,
        fps: 10,
    })
    .unwrap();
    let mut stopped = TestCamera::start(TestMedia::Pattern {
        width_px: 320,
        height_px: 240,
        fps: 10,
    })
    .unwrap();
    let stopped_url = stopped.url();
    stopped.stop();
    let no_broker = e2e::free_port().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("edge-agent.toml");
    std::fs::write(
        &config,
        format!(
            r#"
            {site}
            [store]
            data_dir = "{data}"
            [mqtt]
            port = {no_broker}
            [[sensors]]
            id = "leak-301"
            device = "kitchen_leak_301"
            profile = {{ kind = "zigbee2mqtt" }}
            [[cameras]]
            id = "live-cam"
            detect_fps = 5
            source = {{ kind = "rtsp", url = "{live}" }}
            [[cameras]]
            id = "dead-cam"
            source = {{ kind = "rtsp", url = "{stopped_url}" }}
            "#,
            data = dir.path().join("data").display(),
            live = live.url(),
            site = e2e::site_toml()
        ),
    )
    .unwrap();
    let options = edge_agent::checks::doctor::DoctorOptions {
        camera_timeout: Duration::from_secs(5),
        broker_timeout: Duration::from_secs(2),
        hub_timeout: Duration::from_secs(2),
    };
    let report = edge_agent::checks::doctor::run_doctor(&config, &options).await;
    let table = report.render();
    use edge_agent::checks::doctor::Status;
    let status = |name: &str| report.check(name).map(|c| c.status);
    assert_eq!(status("config"), Some(Status::Ok), "{table}");
    assert_eq!(status("model"), Some(Status::Ok), "{table}");
    assert_eq!(status("camera live-cam"), Some(Status::Ok), "{table}");
    assert_eq!(status("camera dead-cam"), Some(Status::Fail), "{table}");
    assert_eq!(status("mqtt broker"), Some(Status::Fail), "{table}");
    assert_eq!(status("hub"), Some(Status::Skip), "{table}");
    let broker = report.check("mqtt broker").unwrap();
    assert!(broker.detail.contains(&no_broker.to_string()), "{table}");
    assert!(broker.action.contains("mosquitto"), "{table}");
    assert!(!report.healthy());
    assert!(table.contains("NOT healthy: 2 check(s) failed"), "{table}");
}

#[test]
fn test_camera_writes_an_annotated_snapshot_and_prints_fps_and_detections() {
    let camera = e2e::media::motorcycle_camera(10).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("snap.jpg");
    let opts = edge_agent::checks::camera::TestCameraOptions {
        url: camera.url(),
        model: "coco-ssd".into(),
        zone: Some(
            edge_agent::checks::camera::parse_zone("0.05,0.05 0.98,0.05 0.98,0.98 0.05,0.98")
                .unwrap(),
        ),
        out: out.clone(),
        timeout: Duration::from_secs(10),
        frames: 5,
        width: std::num::NonZeroU32::new(640).unwrap(),
        height: std::num::NonZeroU32::new(432).unwrap(),
        codec: hardware::board::Codec::H264,
        board: hardware::board::Board::default(),
        ort_lib: None,
        credentials_path: None,
    };
    let mut printed = Vec::new();
    edge_agent::checks::camera::run_test_camera(&opts, &mut printed).unwrap();
    let printed = String::from_utf8(printed).unwrap();
    assert!(printed.contains("frames: 5 at "), "{printed}");
    let motorcycle = printed
        .lines()
        .find(|l| l.trim_start().starts_with("motorcycle"))
        .unwrap_or_else(|| panic!("no motorcycle in:\n{printed}"));
    assert!(motorcycle.ends_with("in zone"), "{printed}");
    let snap = image::open(&out).unwrap();
    assert_eq!((snap.width(), snap.height()), (640, 432));
}

#[test]
fn test_camera_names_a_camera_that_gives_no_frame() {
    let mut camera = TestCamera::start(TestMedia::Pattern {
        width_px: 320,
        height_px: 240,
        fps: 10,
    })
    .unwrap();
    let url = camera.url();
    camera.stop();
    let dir = tempfile::tempdir().unwrap();
    let opts = edge_agent::checks::camera::TestCameraOptions {
        url: url.clone(),
        model: "coco-ssd".into(),
        zone: None,
        out: dir.path().join("snap.jpg"),
        timeout: Duration::from_secs(5),
        frames: 3,
        width: std::num::NonZeroU32::new(320).unwrap(),
        height: std::num::NonZeroU32::new(240).unwrap(),
        codec: hardware::board::Codec::H264,
        board: hardware::board::Board::default(),
        ort_lib: None,
        credentials_path: None,
    };
    let err = edge_agent::checks::camera::run_test_camera(&opts, &mut Vec::new()).unwrap_err();
    assert!(
        matches!(
            err,
            edge_agent::checks::camera::TestCameraError::Camera { .. }
        ),
        "{err:?}"
    );
    assert!(!dir.path().join("snap.jpg").exists());
}

/// A camera that asks for a user and password (as every IP camera does): the credentials come
/// from a file of their own, so that they are typed nowhere; without them no frame comes.
#[test]
fn test_camera_reads_the_camera_credentials_from_their_file() {
    let camera = TestCamera::start_with_credentials(
        TestMedia::Pattern {
            width_px: 320,
            height_px: 240,
            fps: 10,
        },
        "viewer",
        "s3cret:with@odd/chars",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("cam.secret");
    std::fs::write(&secret, "viewer:s3cret:with@odd/chars\n").unwrap();
    let opts = |credentials_path: Option<std::path::PathBuf>| {
        edge_agent::checks::camera::TestCameraOptions {
            url: camera.url(),
            model: "coco-ssd".into(),
            zone: None,
            out: dir.path().join("snap.jpg"),
            timeout: Duration::from_secs(10),
            frames: 3,
            width: std::num::NonZeroU32::new(320).unwrap(),
            height: std::num::NonZeroU32::new(240).unwrap(),
            codec: hardware::board::Codec::H264,
            board: hardware::board::Board::default(),
            ort_lib: None,
            credentials_path,
        }
    };
    let refused = edge_agent::checks::camera::run_test_camera(&opts(None), &mut Vec::new());
    assert!(refused.is_err(), "the camera wants its password");
    let mut printed = Vec::new();
    edge_agent::checks::camera::run_test_camera(&opts(Some(secret)), &mut printed).unwrap();
    let printed = String::from_utf8(printed).unwrap();
    assert!(
        !printed.contains("s3cret"),
        "the password is never shown: {printed}"
    );
    assert!(dir.path().join("snap.jpg").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_sensor_prints_decoded_readings_and_bad_payloads_from_a_real_broker() {
    let broker = Mosquitto::start().unwrap();
    let publisher = Publisher::connect("devices", "127.0.0.1", broker.port());
    // Retained, so they reach the subscription whenever it is made: no race with the publisher.
    let mut leak = Zigbee2MqttDevice::new("kitchen_leak_301").water_leak(true);
    leak.retain = true;
    publisher.publish(&leak, WAIT).unwrap();
    let broken = SimMessage {
        topic: "zigbee2mqtt/broken_301".into(),
        payload: b"not json".to_vec(),
        retain: true,
    };
    publisher.publish(&broken, WAIT).unwrap();
    use edge_agent::checks::sensor;
    let opts = sensor::TestSensorOptions {
        topic: "zigbee2mqtt/+".into(),
        profile: sensor::parse_profile(None, "zigbee2mqtt/+").unwrap(),
        host: "127.0.0.1".into(),
        port: broker.port(),
        count: 2,
        duration: WAIT,
    };
    let mut out = Vec::new();
    let seen = sensor::run_test_sensor(&opts, &mut out).await.unwrap();
    let out = String::from_utf8(out).unwrap();
    assert_eq!(seen, 2, "{out}");
    assert!(out.contains("kitchen_leak_301  water_leak = true"), "{out}");
    assert!(
        out.contains("zigbee2mqtt/broken_301  bad payload (not_json)"),
        "{out}"
    );

    // No broker: a clear error, not a hang.
    let opts = sensor::TestSensorOptions {
        port: e2e::free_port().unwrap(),
        ..opts
    };
    let err = sensor::run_test_sensor(&opts, &mut Vec::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, sensor::TestSensorError::Connect { .. }),
        "{err:?}"
    );
}

/// A config with five different mistakes, through each binary's `check-config`: every one is
/// reported with its key path, and the exit status is 1.
#[test]
fn check_config_of_both_binaries_reports_all_five_mistakes_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let agent = dir.path().join("edge-agent.toml");
    std::fs::write(
        &agent,
        "[site]\nlat = 39.9\nlon = 116.4\n\
         [store]\nquota_bytes = \"lots\"\ncolour = \"blue\"\n\
         [[cameras]]\nid = \"a\"\ndetect_fps = \"fast\"\nsource = { kind = \"test_pattern\" }\n\
         [events.evidence]\njpeg_quality = 0\n\
         [uplink]\nhub_addr = \"hub:4433\"\nca_path = \"/nonexistent/ca.pem\"\n\
         cert_path = \"/nonexistent/box.pem\"\nkey_path = \"/nonexistent/box.key\"\n",
    )
    .unwrap();
    let hub = dir.path().join("hub.toml");
    std::fs::write(
        &hub,
        format!(
            "api_listen_addr = \"nowhere\"\ndatabase_path = \"{d}/hub.db\"\n\
             grid_path = \"{d}/grid.geojson\"\nduties_path = \"{d}/duties.csv\"\n\
             calendar_path = \"{d}/calendar.toml\"\ncolour = 1\n\
             [[tokens]]\nname = \"x\"\ntoken_sha256 = \"12\"\nrole = \"admin\"\nsubject = \"a\"\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    for (bin, file, keys) in [
        (
            "edge-agent",
            &agent,
            &[
                "store.quota_bytes",
                "store.colour",
                "cameras[0].detect_fps",
                "events.evidence.jpeg_quality",
                "uplink.ca_path",
            ][..],
        ),
        (
            "hub",
            &hub,
            &[
                "api_listen_addr",
                "colour",
                "tokens[0].token_sha256",
                "grid_path",
                "duties_path",
            ][..],
        ),
    ] {
        let out = std::process::Command::new(e2e::binary(bin))
            .arg("check-config")
            .arg(file)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{bin}: {stdout}");
        for key in keys {
            assert!(
                stdout.lines().any(|l| l.contains(&format!("{key}: "))),
                "{bin}: `{key}` not reported in:\n{stdout}"
            );
        }
    }
}

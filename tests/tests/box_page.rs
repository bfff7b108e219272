//! The box's technician page and local API end to end: a real agent with a camera streaming from
//! the test RTSP camera and a zigbee2mqtt sensor on a real mosquitto, its `[local_api]` on a free
//! port, read over HTTP (the JSON, a thumbnail, the admin sign-in and its one action), through
//! the `edge-agent status` client code, and by headless Chromium.

use std::net::SocketAddr;

use anyhow::Context;
use e2e::browser::Browser;
use e2e::mosquitto::Mosquitto;
use edge_agent::agent::Agent;
use edge_agent::camera::CameraState;
use edge_agent::config::Config;
use edge_agent::status::StatusReport;
use edge_agent::status::cli::{StatusCliError, fetch, render_table};
use edge_agent::uplink::UplinkMode;
use hardware::sim::Zigbee2MqttDevice;
use hardware::sim::publisher::Publisher;
use hardware::sim::rtsp::{TestCamera, TestMedia};
use tokio_util::sync::CancellationToken;

/// The box page's admin password (its file made by `edge-agent admin-password`).
const PASSWORD: &str = "technician-secret";

use e2e::WAIT;

/// A running agent with one camera, one sensor and the box page.
struct BoxUnderTest {
    agent: Agent,
    camera: TestCamera,
    _broker: Mosquitto,
    publisher: Publisher,
    climate: Zigbee2MqttDevice,
    base: String,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl BoxUnderTest {
    async fn start() -> anyhow::Result<BoxUnderTest> {
        let camera = TestCamera::start(TestMedia::Pattern {
            width_px: 320,
            height_px: 240,
            fps: 10,
        })?;
        let broker = Mosquitto::start()?;
        let dir = tempfile::tempdir()?;
        let password = dir.path().join("admin-password");
        admin_password_file(&password)?;
        let config = format!(
            r#"
            {site}
            [store]
            data_dir = "{data}"
            [local_api]
            listen = "127.0.0.1:0"
            admin_password_path = "{password}"
            [mqtt]
            port = {mqtt}
            client_id = "box-page-agent"
            reconnect_min_ms = 50
            reconnect_max_ms = 500
            [[sensors]]
            id = "hall-th"
            device = "hall_climate"
            profile = {{ kind = "zigbee2mqtt" }}
            [[sensors.rules]]
            name = "offline"
            kind = "offline"
            expected_interval_secs = 600
            category = "device.sensor_offline"
            [[cameras]]
            id = "gate"
            detect_fps = 2
            frame_width_px = 320
            frame_height_px = 240
            source = {{ kind = "rtsp", url = "{url}", tcp_timeout_ms = 2000 }}
            [[cameras.zones]]
            id = "driveway"
            polygon = [[0.1, 0.5], [0.9, 0.5], [0.9, 0.95], [0.1, 0.95]]
            [cameras.health]
            stall_after_secs = 2
            fault_debounce_secs = 2
            reconnect_min_ms = 100
            reconnect_max_ms = 400
            "#,
            data = dir.path().join("data").display(),
            password = password.display(),
            mqtt = broker.port(),
            url = camera.url(),
            site = e2e::site_toml()
        );
        let config = Config::from_toml_str(&config, "box-page-e2e").context("config")?;
        let agent = Agent::start(config, CancellationToken::new()).await?;
        let addr = agent
            .local_api_addr()
            .context("the agent has a local API")?;
        let publisher = Publisher::connect("box-page-devices", "127.0.0.1", broker.port());
        Ok(BoxUnderTest {
            agent,
            camera,
            _broker: broker,
            publisher,
            climate: Zigbee2MqttDevice::new("hall_climate").with_battery(87),
            base: format!("http://{addr}"),
            addr,
            _dir: dir,
        })
    }

    /// Polls the status until the camera streams (with a thumbnail) and the sensor's reading is
    /// in, publishing the reading again each round (the agent may not have subscribed yet).
    async fn until_live(&self) -> anyhow::Result<StatusReport> {
        e2e::wait_for(
            WAIT,
            "a streaming camera and the sensor's reading",
            || async move {
                self.publisher
                    .publish(&self.climate.climate(21.5, 48.0), WAIT)
                    .ok()?;
                let (report, _) = fetch(&self.base).await.ok()?;
                let gate = report.cameras.first()?;
                let sensor = report.sensors.first()?;
                (gate.state == CameraState::Streaming
                    && gate.last_frame_ms.is_some()
                    && gate.fps > 0.0
                    && sensor.values.contains_key("temperature"))
                .then_some(report)
            },
        )
        .await
    }

    /// Stops the camera's RTSP server and waits until the API reports the camera offline.
    async fn stop_camera(&mut self) -> anyhow::Result<StatusReport> {
        self.camera.stop();
        let base = &self.base;
        e2e::wait_for(WAIT, "the stopped camera reported offline", || async move {
            let (report, _) = fetch(base).await.ok()?;
            (report.cameras.first()?.state == CameraState::Offline).then_some(report)
        })
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_api_reports_cameras_sensors_and_a_stopped_camera_and_guards_its_action()
-> anyhow::Result<()> {
    let mut bx = BoxUnderTest::start().await?;
    let report = bx.until_live().await?;

    let gate = &report.cameras[0];
    assert_eq!(gate.id, "gate");
    assert_eq!(gate.zones, ["driveway"]);
    assert_eq!(gate.configured_fps, 2.0);
    for reason in ["motion_gated", "superseded", "bad_frame", "detect_error"] {
        assert!(gate.drops.contains_key(reason), "drops by {reason}");
    }
    let sensor = &report.sensors[0];
    assert_eq!(sensor.id, "hall-th");
    assert_eq!(sensor.values.get("temperature"), Some(&21.5));
    assert_eq!(sensor.battery_percent, Some(87.0));
    assert!(!sensor.stale);
    assert_eq!(
        sensor.stale_after_secs, 1800,
        "600 s × the default factor 3"
    );
    assert!(sensor.last_seen_ms.is_some());
    assert_eq!(report.mqtt.as_ref().map(|m| m.connected), Some(true));
    assert_eq!(report.uplink.mode, UplinkMode::Disabled);
    assert!(report.store.disk_free_bytes.is_some());
    assert!(report.sign_in_available);
    assert!(
        report.problems.is_empty(),
        "a live box has no problems: {:?}",
        report.problems
    );

    // Pictures are for the signed-in technician only.
    let thumb_path = "/api/cameras/gate/thumbnail.jpg";
    assert_eq!(
        get(bx.addr, "GET", thumb_path, None, None).await?.status,
        401
    );
    assert_eq!(
        get(bx.addr, "GET", "/api/evidence/not-hex", None, None)
            .await?
            .status,
        401
    );
    let page = get(bx.addr, "GET", "/", None, None).await?;
    assert_eq!(page.status, 200);
    for answer in [
        &page,
        &get(bx.addr, "GET", "/api/status", None, None).await?,
    ] {
        let csp = answer.header("content-security-policy").unwrap_or_default();
        assert!(
            csp.contains("default-src 'self'"),
            "nothing from elsewhere: {csp}"
        );
        assert!(
            csp.contains("frame-ancestors 'none'"),
            "never framed: {csp}"
        );
        assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
    }
    // A page of another site whose name resolves to the box (DNS rebinding) is refused.
    assert_eq!(raw_status(bx.addr, "evil.example").await?, 421);
    assert_eq!(raw_status(bx.addr, &bx.addr.to_string()).await?, 200);
    assert_eq!(raw_status(bx.addr, "localhost").await?, 200);

    // The one action needs the admin password.
    let reconnect = "/api/cameras/gate/reconnect";
    assert_eq!(
        get(bx.addr, "POST", reconnect, None, None).await?.status,
        401
    );
    let wrong = get(
        bx.addr,
        "POST",
        "/api/session",
        None,
        Some(r#"{"password":"guess"}"#),
    )
    .await?;
    assert_eq!(wrong.status, 401);
    assert!(wrong.header("set-cookie").is_none());
    let body = format!(r#"{{"password":"{PASSWORD}"}}"#);
    let signed = get(bx.addr, "POST", "/api/session", None, Some(&body)).await?;
    assert_eq!(signed.status, 200);
    let cookie = signed
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .context("a session cookie")?
        .to_owned();
    // Signed in: the thumbnail is the camera's frame as a JPEG.
    let thumb = get(bx.addr, "GET", thumb_path, Some(&cookie), None).await?;
    assert_eq!(thumb.status, 200);
    assert_eq!(thumb.header("content-type"), Some("image/jpeg"));
    let image = image::load_from_memory_with_format(&thumb.body, image::ImageFormat::Jpeg)?;
    assert_eq!((image.width(), image.height()), (320, 240));
    let missing = "/api/cameras/nope/thumbnail.jpg";
    assert_eq!(
        get(bx.addr, "GET", missing, Some(&cookie), None)
            .await?
            .status,
        404
    );
    let not_hex = "/api/evidence/not-hex";
    assert_eq!(
        get(bx.addr, "GET", not_hex, Some(&cookie), None)
            .await?
            .status,
        400
    );
    let reconnects_before = report.cameras[0].reconnects;
    let accepted = get(bx.addr, "POST", reconnect, Some(&cookie), None).await?;
    assert_eq!(accepted.status, 202);
    let base = &bx.base;
    e2e::wait_for(WAIT, "the requested reconnect", || async move {
        let (r, _) = fetch(base).await.ok()?;
        (r.cameras[0].reconnects > reconnects_before).then_some(())
    })
    .await?;

    // A stopped camera is flagged, and `edge-agent status` says so in its table.
    let report = bx.stop_camera().await?;
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.kind == "camera_offline" && p.subject == "gate"),
        "{:?}",
        report.problems
    );
    let table = render_table(&report);
    assert!(table.contains("camera_offline gate"), "{table}");
    assert!(table.contains("hall-th"), "{table}");

    let base = bx.base.clone();
    bx.agent.shutdown().await;
    // With the agent gone `edge-agent status` says it cannot reach it.
    let gone = fetch(&base).await;
    assert!(
        matches!(gone, Err(StatusCliError::Unreachable { .. })),
        "{gone:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_shows_the_thumbnail_and_the_sensor_value_and_flags_a_stopped_camera_offline()
-> anyhow::Result<()> {
    let mut bx = BoxUnderTest::start().await?;
    bx.until_live().await?;
    let browser = Browser::launch("box-page").await?;
    browser.goto(&format!("{}/", bx.base)).await?;

    // Pictures wait for the sign-in.
    browser
        .wait_for(
            "the sign-in hint instead of the picture",
            WAIT,
            r#"document.querySelector('[data-camera="gate"] .sign-in-needed') !== null
                && document.querySelector('[data-camera="gate"] img.cam-thumb') === null"#,
        )
        .await?;
    let value = browser
        .text(r#"[data-sensor="hall-th"] .sensor-value"#, WAIT)
        .await?;
    assert!(value.contains("temperature 21.5"), "{value}");
    let row = browser.text(r#"[data-sensor="hall-th"]"#, WAIT).await?;
    assert!(row.contains("87%"), "battery in {row}");
    browser
        .wait_for(
            "the all-clear banner",
            WAIT,
            "document.getElementById('banner').classList.contains('ok')",
        )
        .await?;
    browser.screenshot("live").await?;

    // Signed in, the page shows the picture and offers the reconnect action.
    browser.click("#signin-open", WAIT).await?;
    browser.type_into("#password", PASSWORD, WAIT).await?;
    browser.click("#signin-ok", WAIT).await?;
    let width = browser
        .wait_for(
            "the gate camera's thumbnail",
            WAIT,
            r#"(() => {
                const img = document.querySelector('[data-camera="gate"] img.cam-thumb');
                return img && img.complete && img.naturalWidth > 0 ? img.naturalWidth : null;
            })()"#,
        )
        .await?;
    assert_eq!(width, 320);
    browser
        .wait_for(
            "the reconnect button",
            WAIT,
            r#"document.querySelector('[data-camera="gate"] .actions button') !== null"#,
        )
        .await?;

    bx.camera.stop();
    browser
        .wait_for(
            "the stopped camera flagged offline",
            WAIT,
            r#"document.querySelector('[data-camera="gate"]').dataset.state === 'offline'
                && document.querySelector('[data-camera="gate"]').classList.contains('dead')
                && document.querySelector('#banner li[data-problem="camera_offline"]') !== null"#,
        )
        .await?;
    browser.screenshot("offline").await?;
    // The other language: Chinese labels, rendered.
    let other = if browser.text("#cameras-section h2", WAIT).await? == "Cameras" {
        ("摄像头", "离线", "zh")
    } else {
        ("Cameras", "OFFLINE", "en")
    };
    browser.click("#lang", WAIT).await?;
    browser
        .wait_for(
            "the labels in the other language",
            WAIT,
            &format!(
                "document.querySelector('#cameras-section h2').textContent === '{}'",
                other.0
            ),
        )
        .await?;
    let badge = browser
        .text(r#"[data-camera="gate"] .cam-state"#, WAIT)
        .await?;
    assert_eq!(badge, other.1);
    browser.screenshot(&format!("offline-{}", other.2)).await?;
    browser
        .eval(
            "window.scrollTo(0, document.body.scrollHeight); return null;",
            vec![],
        )
        .await?;
    browser
        .screenshot(&format!("offline-{}-lower", other.2))
        .await?;

    let errors = browser.console_errors().await?;
    assert!(errors.is_empty(), "page errors: {errors:?}");
    let checked = browser.assert_offline().await?;
    assert!(checked > 3, "the page's requests were seen ({checked})");
    browser.quit().await;
    bx.agent.shutdown().await;
    Ok(())
}

/// One exchange with the box's local API (`cookie` and a JSON body when given).
async fn get(
    addr: SocketAddr,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    json: Option<&str>,
) -> anyhow::Result<e2e::http::Answer> {
    let mut headers = Vec::new();
    if let Some(c) = cookie {
        headers.push(("Cookie", c));
    }
    if json.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    e2e::http::send(addr, method, path, &headers, json.unwrap_or("").as_bytes()).await
}

/// The status of a `GET /api/status` that names `host` in its Host header.
async fn raw_status(addr: std::net::SocketAddr, host: &str) -> anyhow::Result<u16> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET /api/status HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await??;
    let head = String::from_utf8_lossy(&answer);
    head.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .context(format!("no status line in {head:.80}"))
}

/// `echo PASSWORD | edge-agent admin-password --out FILE`: an argon2id hash, owner and group
/// only.
fn admin_password_file(path: &std::path::Path) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;
    let mut child = std::process::Command::new(e2e::binary("edge-agent"))
        .arg("admin-password")
        .arg("--out")
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()?;
    writeln!(child.stdin.take().context("stdin")?, "{PASSWORD}")?;
    anyhow::ensure!(child.wait()?.success(), "edge-agent admin-password failed");
    let text = std::fs::read_to_string(path)?;
    anyhow::ensure!(
        text.starts_with("$argon2id$"),
        "not an argon2id hash: {text}"
    );
    anyhow::ensure!(!text.contains(PASSWORD));
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
    anyhow::ensure!(mode & 0o007 == 0, "readable by others: {mode:o}");
    Ok(())
}

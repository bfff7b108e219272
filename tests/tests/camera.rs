//! Cameras end to end: the test RTSP camera (gst-rtsp-server on a free port) streams real media,
//! the agent decodes it with GStreamer, runs COCO-SSD through ONNX Runtime, tracks, applies zone
//! rules, and durable events with evidence land in the SQLite store.
//!
//! Detection runs at a low rate (2–5 fps) to keep each test to a few tens of seconds.

use std::time::{Duration, Instant};

use anyhow::Context;
use e2e::media::media;
use edge_agent::agent::Agent;
use edge_agent::camera::{CameraState, CameraStats};
use edge_agent::config::Config;
use hardware::sim::rtsp::{TestCamera, TestMedia};
use protocol::{AttrValue, Catalog, Event, Seq, SourceKind};
use tokio_util::sync::CancellationToken;

#[path = "../../edge-agent/tests/it/pixels.rs"]
mod pixels;

fn site(data_dir: &std::path::Path) -> String {
    format!(
        r#"
        {site}
        [store]
        data_dir = "{}"
        [events]
        cooldown_secs = 300
        "#,
        data_dir.display(),
        site = e2e::site_toml()
    )
}

async fn start(config: &str) -> anyhow::Result<Agent> {
    let config = Config::from_toml_str(config, "camera-e2e").context("config")?;
    Ok(Agent::start(config, CancellationToken::new()).await?)
}

fn events(agent: &Agent) -> Vec<Event> {
    agent
        .store()
        .events_from(Seq(1), 10_000)
        .expect("the store reads")
}

fn of_category<'a>(events: &'a [Event], key: &str) -> Vec<&'a Event> {
    let Some(category) = Catalog::embedded().resolve(key) else {
        panic!("unknown category {key}");
    };
    events
        .iter()
        .filter(|e| e.category == category.code)
        .collect()
}

fn camera(stats: &CameraStats, id: &str) -> edge_agent::camera::CameraStatus {
    let Some(status) = stats.camera(id) else {
        panic!("no camera {id}");
    };
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_motorcycle_in_a_no_parking_zone_raises_exactly_one_event_after_the_dwell_time()
-> anyhow::Result<()> {
    let server = e2e::media::motorcycle_camera(25)?;
    let dir = tempfile::tempdir()?;
    // COCO-SSD finds the motorcycle at (91,53)-(694,461) of 741x500: the zone surrounds it.
    let config = format!(
        "{}{}",
        site(dir.path()),
        e2e::media::kerb_camera_toml(&server.url(), 2, 10)
    );
    let agent = start(&config).await?;
    let stats = agent.camera_stats().unwrap();
    e2e::wait_until(Duration::from_secs(20), "the first frame", || {
        (camera(&stats, "kerb-cam").frames > 0).then_some(())
    })
    .await?;
    let first_frame = Instant::now();
    let parking =
        |agent: &Agent| of_category(&events(agent), "street_order.illegal_nonmotor_parking").len();
    e2e::wait_until(Duration::from_secs(20), "the parking event", || {
        (parking(&agent) > 0).then_some(())
    })
    .await?;
    let after = first_frame.elapsed();
    assert!(
        after >= Duration::from_secs(10) && after <= Duration::from_secs(15),
        "event after {after:?}"
    );
    // It stays parked: watch for a while longer, no repeat (not even a suppressed one).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let all = events(&agent);
    let raised = of_category(&all, "street_order.illegal_nonmotor_parking");
    assert_eq!(raised.len(), 1, "{all:#?}");
    let event = raised[0];
    assert_eq!(event.source.kind, SourceKind::Camera);
    assert_eq!(event.source.id.as_str(), "kerb-cam");
    assert_eq!(
        event.attributes.get("label"),
        Some(&AttrValue::Text("motorcycle".into()))
    );
    assert_eq!(event.evidence.len(), 1);
    let evidence = agent.store().evidence_path(&event.evidence[0].sha256);
    let bytes = std::fs::read(&evidence)?;
    assert_eq!(&bytes[..2], &[0xFF, 0xD8], "a JPEG");
    let suppressed = agent
        .events_stats()
        .suppressed
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        suppressed, 0,
        "the rule fired once; the cooldown had nothing to do"
    );
    agent.shutdown().await;
    Ok(())
}

/// Persons in the street clip raise intrusion events whose evidence has them blurred, and the
/// blur is checked in the stored pixels: a second rule on the same zone raises a category the
/// config keeps unblurred (`unblurred_categories`), so each person raises both events from the
/// same frame. The two stored JPEGs must differ inside the person boxes (drawn in the
/// private-mark colour, which stands out on a black-and-white film) and be identical away
/// from them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persons_in_the_street_clip_over_rtsp_become_events_with_evidence() -> anyhow::Result<()> {
    let server = TestCamera::start(TestMedia::Clip {
        path: media("sample.mp4")?,
    })?;
    let dir = tempfile::tempdir()?;
    let config = format!(
        r#"{}
        [events.evidence]
        unblurred_categories = ["street_order.hawker"]
        [[cameras]]
        id = "street-cam"
        detect_fps = 3
        source = {{ kind = "rtsp", url = "{}" }}
        [[cameras.zones]]
        id = "street"
        polygon = [[0.0, 0.3], [1.0, 0.3], [1.0, 1.0], [0.0, 1.0]]
        classes = ["person"]
        [[cameras.rules]]
        id = "people-in-street"
        kind = "intrusion"
        zone = "street"
        category = "street_order.intrusion"
        [[cameras.rules]]
        id = "vendors-in-street"
        kind = "intrusion"
        zone = "street"
        category = "street_order.hawker"
        "#,
        site(dir.path()),
        server.url()
    );
    let agent = start(&config).await?;
    let track_of = |event: &Event| match event.attributes.get("track") {
        Some(AttrValue::Int(track)) => *track,
        _ => panic!("no track: {event:?}"),
    };
    // Pairs of (blurred, visible) events of the same person.
    let pairs = e2e::wait_until(
        Duration::from_secs(30),
        "three persons' event pairs",
        || {
            let all = events(&agent);
            let visible = of_category(&all, "street_order.hawker");
            let pairs: Vec<(Event, Event)> = of_category(&all, "street_order.intrusion")
                .into_iter()
                .filter_map(|blurred| {
                    visible
                        .iter()
                        .find(|v| track_of(v) == track_of(blurred))
                        .map(|v| (blurred.clone(), (*v).clone()))
                })
                .collect();
            (pairs.len() >= 3).then_some(pairs)
        },
    )
    .await?;
    let renderer = {
        let config = Config::from_toml_str(&config, "t")?;
        edge_agent::events::EventBuilder::from_section(&config.events, config.site.grid.clone())
            .renderer()
            .clone()
    };
    let code = |key: &str| Catalog::embedded().resolve(key).unwrap().code.clone();
    assert!(
        renderer.blurs(&code("street_order.intrusion")),
        "persons are blurred in intrusion evidence"
    );
    assert!(!renderer.blurs(&code("street_order.hawker")));
    let mut tracks = std::collections::BTreeSet::new();
    for (blurred, visible) in &pairs {
        for event in [blurred, visible] {
            assert_eq!(
                event.attributes.get("label"),
                Some(&AttrValue::Text("person".into()))
            );
            assert_eq!(
                event.attributes.get("zone"),
                Some(&AttrValue::Text("street".into()))
            );
            assert_eq!(event.evidence.len(), 1);
        }
        assert!(tracks.insert(track_of(blurred)), "one event per track");
        let load = |event: &Event| -> anyhow::Result<image::RgbImage> {
            let path = agent.store().evidence_path(&event.evidence[0].sha256);
            Ok(image::load_from_memory(&std::fs::read(&path)?)?.to_rgb8())
        };
        let (blurred_img, visible_img) = (load(blurred)?, load(visible)?);
        let marks = private_marks(&visible_img);
        assert!(!marks.is_empty(), "no person box drawn on {visible:?}");
        let area: u64 = marks.iter().map(|m| u64::from(m.width * m.height)).sum();
        let inside: f64 = marks
            .iter()
            .map(|m| {
                pixels::mean_abs_diff(&blurred_img, &visible_img, pixels::inner(*m, 3))
                    * f64::from(m.width * m.height)
            })
            .sum::<f64>()
            / area as f64;
        // Same frame, same drawing: without the blur the two JPEGs would be identical (0 here).
        // Boxes of neighbours merge into one group, so the mean includes the gaps between them.
        assert!(
            inside > 3.0,
            "the person boxes of the intrusion evidence are not blurred (mean difference {inside:.2} to the visible evidence of the same frame)"
        );
        let compared =
            pixels::assert_equal_away_from(&blurred_img, &visible_img, &marks, "away from persons");
        assert!(
            compared > u64::from(blurred_img.width() * blurred_img.height()) / 10,
            "compared only {compared} pixels"
        );
    }
    let status = camera(&agent.camera_stats().unwrap(), "street-cam");
    assert_eq!(status.state, CameraState::Streaming);
    assert!(
        status.detected > 0 && status.detect_errors == 0,
        "{status:?}"
    );
    agent.shutdown().await;
    Ok(())
}

/// Line crossing on the street clip, asserted against crossings counted by eye.
///
/// `sample.mp4` is "A Trip Down Market Street" (1906), filmed from the front of a moving cable
/// car: the whole scene flows outwards from the vanishing point in the middle of the picture.
/// A vertical line through that point (x = 0.5) is therefore crossed only by things that move
/// sideways themselves, never by things standing still, however close the car comes. The line
/// is only its near part (from the bottom edge up to y = 0.7), so it counts objects on the
/// near street, whose feet the detector sees, and not the far crowd at the horizon. It is
/// drawn upwards, so `left_to_right` means from the picture's left to its right.
///
/// Counted by eye on frames extracted at 5 fps (`videorate ! video/x-raw,framerate=5/1`,
/// frame n at n/5 s) over 16.75–31.0 s of the clip (the excerpt below):
/// - 20.0–22.4 s (frames 100–112): a policeman in a long dark coat walks from the left of the
///   tracks to the right; his feet pass x = 0.5 at about 21.0 s (frame 105), low in the picture
///   (y ≈ 0.8). **Person, left to right.**
/// - 24.8–28.0 s (frames 124–140): a horse pulling a two-wheeled carriage crosses from left to
///   right. The horse and carriage cross too, but this rule counts persons; the driver and
///   the passenger ride in the carriage with their feet hidden, their boxes ending at y ≈ 0.6,
///   above the line.
/// - 29.0–30.8 s (frames 145–154): a man in a dark suit and hat walks from the right of the
///   tracks to the left kerb; his feet pass x = 0.5 at about 29.5 s (frame 147), y ≈ 0.83.
///   **Person, right to left.**
/// - Nothing else crosses the near line: a cable car crosses the street left to right at
///   14–17 s, far off (bottom edge at y ≈ 0.58) and before the window's persons; the standing
///   people near the tracks drift outwards as the car approaches, away from x = 0.5.
///
/// So: 1 person left to right, 1 person right to left.
///
/// COCO-SSD finds these walkers in only some frames of this 1906 film (the man, for instance,
/// at 29.4 and 29.6 s, on either side of the line, then not until 30.2 s); the tracker's
/// motion-gated second stage keeps his id across such gaps. With IoU matching alone his
/// crossing was lost (counted 1 and 0).
///
/// Deterministic on a loaded machine: the camera reads the excerpt as a file, so the rate
/// limit keeps frames by their timestamps (over RTSP, arrival jitter decides which of the six
/// frames in each 200 ms passes), and a file is held back while the detector is behind instead
/// of losing frames (its appsink and its camera thread wait): the test checks that every frame
/// out of the pipeline was detected, none superseded, so the counts come from the same 5 fps
/// frame sequence on every run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossings_of_a_line_across_the_street_clip_are_counted_per_direction() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    // The window: from the keyframe at 16.75 s (the clip has one every 8.34 s) to 31.0 s.
    let excerpt = hardware::sim::clip::excerpt(
        &media("sample.mp4")?,
        Duration::from_millis(16_000),
        Duration::from_millis(31_000),
        &dir.path().join("market-street-16-31.mp4"),
    )?;
    assert!(
        (16_600..=16_760).contains(&excerpt.offset.as_millis()) && excerpt.frames > 400,
        "the excerpt starts at the keyframe at 16.75 s and runs to 31 s: {excerpt:?}"
    );
    let config = format!(
        r#"{site}
        [[cameras]]
        id = "street-cam"
        detect_fps = 5
        source = {{ kind = "file", path = "{clip}" }}
        [cameras.motion]
        enabled = false
        [cameras.health]
        reconnect_min_ms = 120000
        reconnect_max_ms = 120000
        [[cameras.rules]]
        id = "centre-line"
        kind = "line_crossing"
        category = "street_order.intrusion"
        classes = ["person"]
        line = [[0.5, 1.0], [0.5, 0.7]]
        "#,
        site = site(dir.path()),
        clip = excerpt.path.display(),
    );
    let agent = start(&config).await?;
    let stats = agent.camera_stats().unwrap();
    // The file ends (end of stream, counted as a reconnect; the next play is 2 minutes away),
    // then the detector finishes the queued frames.
    let status = e2e::wait_until(
        Duration::from_secs(120),
        "the excerpt played and detected",
        || {
            let s = camera(&stats, "street-cam");
            (s.reconnects >= 1
                && stats.queue_len() == 0
                && s.detected + s.detect_errors + s.dropped_superseded + s.gated == s.frames)
                .then_some(s)
        },
    )
    .await?;
    assert!(status.frames >= 65, "about 71 frames at 5 fps: {status:?}");
    assert_eq!(
        (
            status.dropped_superseded,
            status.detect_errors,
            status.bad_frames
        ),
        (0, 0, 0),
        "every frame must be detected for the counts to be reproducible: {status:?}"
    );
    let crossings = e2e::wait_until(Duration::from_secs(10), "the crossing events", || {
        let all = events(&agent);
        let crossings: Vec<Event> = all
            .iter()
            .filter(|e| e.attributes.get("rule") == Some(&AttrValue::Text("centre-line".into())))
            .cloned()
            .collect();
        (crossings.len() as u64 == status.observations).then_some(crossings)
    })
    .await?;
    let direction = |e: &Event| match e.attributes.get("direction") {
        Some(AttrValue::Text(d)) => d.clone(),
        other => panic!("no direction: {other:?}"),
    };
    let count = |d: &str| crossings.iter().filter(|e| direction(e) == d).count();
    let summary: Vec<String> = crossings
        .iter()
        .map(|e| format!("{} track {:?}", direction(e), e.attributes.get("track")))
        .collect();
    assert_eq!(
        (count("left_to_right"), count("right_to_left")),
        (1, 1),
        "eye count: the policeman left to right, the man in the suit right to left; got {summary:?}"
    );
    // The rule's own running counts travel on each event; the last one has both.
    let last = crossings.last().unwrap();
    assert_eq!(
        (
            last.attributes.get("count_left_to_right"),
            last.attributes.get("count_right_to_left")
        ),
        (Some(&AttrValue::Int(1)), Some(&AttrValue::Int(1)))
    );
    for e in &crossings {
        assert_eq!(
            e.attributes.get("label"),
            Some(&AttrValue::Text("person".into()))
        );
        assert_eq!(e.evidence.len(), 1, "a snapshot of the crossing");
    }
    // Left to right first (21 s), then right to left (29.5 s).
    assert_eq!(direction(&crossings[0]), "left_to_right", "{summary:?}");
    agent.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_rtsp_server_raises_camera_offline_and_its_restart_a_recovery()
-> anyhow::Result<()> {
    let mut server = TestCamera::start(TestMedia::Pattern {
        width_px: 320,
        height_px: 240,
        fps: 10,
    })?;
    let dir = tempfile::tempdir()?;
    let config = format!(
        r#"{}
        [[cameras]]
        id = "gate"
        detect_fps = 2
        frame_width_px = 320
        frame_height_px = 240
        source = {{ kind = "rtsp", url = "{}", tcp_timeout_ms = 2000 }}
        [cameras.health]
        stall_after_secs = 2
        fault_debounce_secs = 2
        reconnect_min_ms = 100
        reconnect_max_ms = 400
        "#,
        site(dir.path()),
        server.url()
    );
    let agent = start(&config).await?;
    let stats = agent.camera_stats().unwrap();
    e2e::wait_until(Duration::from_secs(20), "streaming", || {
        (camera(&stats, "gate").state == CameraState::Streaming).then_some(())
    })
    .await?;
    server.stop();
    let stopped = Instant::now();
    let offline = e2e::wait_until(Duration::from_secs(20), "camera offline event", || {
        of_category(&events(&agent), "device.camera_offline")
            .first()
            .map(|e| (*e).clone())
    })
    .await?;
    assert!(stopped.elapsed() >= Duration::from_secs(2), "debounced");
    assert_eq!(offline.source.id.as_str(), "gate");
    assert!(matches!(
        offline.attributes.get("error"),
        Some(AttrValue::Text(_))
    ));
    assert_ne!(camera(&stats, "gate").state, CameraState::Streaming);

    server.restart()?;
    let recovered = e2e::wait_until(Duration::from_secs(20), "recovery event", || {
        of_category(&events(&agent), "device.recovered")
            .first()
            .map(|e| (*e).clone())
    })
    .await?;
    assert_eq!(
        recovered.attributes.get("fault"),
        Some(&AttrValue::Text("device.camera_offline".into()))
    );
    assert_eq!(camera(&stats, "gate").state, CameraState::Streaming);
    assert!(camera(&stats, "gate").reconnects >= 1);
    agent.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_url_and_an_unsupported_stream_fail_only_their_own_cameras() -> anyhow::Result<()> {
    let good = TestCamera::start(TestMedia::Pattern {
        width_px: 320,
        height_px: 240,
        fps: 10,
    })?;
    let mjpeg = TestCamera::start(TestMedia::Mjpeg)?;
    // A port nothing listens on: bind one, note it, release it.
    let closed_port = e2e::free_port()?;
    let dir = tempfile::tempdir()?;
    let config = format!(
        r#"{site}
        [[cameras]]
        id = "good"
        detect_fps = 2
        source = {{ kind = "rtsp", url = "{good}" }}
        [[cameras]]
        id = "nobody-home"
        source = {{ kind = "rtsp", url = "rtsp://127.0.0.1:{closed_port}/cam" }}
        [cameras.health]
        reconnect_min_ms = 100
        reconnect_max_ms = 400
        [[cameras]]
        id = "mjpeg"
        source = {{ kind = "rtsp", url = "{mjpeg}" }}
        [cameras.health]
        reconnect_min_ms = 100
        reconnect_max_ms = 400
        "#,
        site = site(dir.path()),
        good = good.url(),
        mjpeg = mjpeg.url(),
    );
    let agent = start(&config).await?;
    let stats = agent.camera_stats().unwrap();
    // Each attempt on the MJPEG stream fails only when rtspsrc gives up negotiating (about 5 s
    // idle, much longer with every test running on two cores): the wait ends as soon as two
    // have failed, so its bound only has to hold under load.
    let (bad, unsupported) =
        e2e::wait_until(Duration::from_secs(60), "both failures reported", || {
            let bad = camera(&stats, "nobody-home");
            let unsupported = camera(&stats, "mjpeg");
            (bad.last_error.is_some()
                && unsupported.last_error.is_some()
                && unsupported.reconnects >= 2)
                .then_some((bad, unsupported))
        })
        .await?;
    assert_eq!(bad.state, CameraState::Offline);
    assert_eq!(bad.frames, 0);
    assert_eq!(unsupported.frames, 0);
    let bad_error = bad.last_error.unwrap();
    let unsupported_error = unsupported.last_error.unwrap();
    assert!(bad_error.contains("rtspsrc"), "{bad_error}");
    assert!(!unsupported_error.is_empty());
    // The good camera streams on regardless.
    let before = camera(&stats, "good").frames;
    e2e::wait_until(Duration::from_secs(10), "more good frames", || {
        (camera(&stats, "good").frames >= before + 4).then_some(())
    })
    .await?;
    let good_status = camera(&stats, "good");
    assert_eq!(good_status.state, CameraState::Streaming);
    assert_eq!(good_status.last_error, None);
    agent.shutdown().await;
    Ok(())
}

/// Fusion: a leak sensor whose config names the camera covering the same place gets that
/// camera's view attached to its event as a confirming snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sensor_event_carries_a_confirming_snapshot_from_its_camera() -> anyhow::Result<()> {
    let server = e2e::media::motorcycle_camera(25)?;
    let broker = e2e::mosquitto::Mosquitto::start()?;
    let dir = tempfile::tempdir()?;
    let config = format!(
        r#"{}
        [mqtt]
        port = {}
        client_id = "fusion-e2e"
        reconnect_min_ms = 50

        [[sensors]]
        id = "leak-kerb"
        device = "kerb_leak"
        profile = {{ kind = "zigbee2mqtt" }}
        camera = "kerb-cam"
        [[sensors.rules]]
        name = "leak"
        kind = "state"
        quantity = "water_leak"
        category = "other.water_leak"

        [[sensors]]
        id = "leak-cellar"
        device = "cellar_leak"
        profile = {{ kind = "zigbee2mqtt" }}
        [[sensors.rules]]
        name = "leak"
        kind = "state"
        quantity = "water_leak"
        category = "other.water_leak"

        [[cameras]]
        id = "kerb-cam"
        detect_fps = 1
        frame_width_px = 640
        frame_height_px = 432
        source = {{ kind = "rtsp", url = "{}" }}
        "#,
        site(dir.path()),
        broker.port(),
        server.url()
    );
    let agent = start(&config).await?;
    let stats = agent.camera_stats().unwrap();
    let sensors = agent.sensor_stats().unwrap();
    e2e::wait_until(
        Duration::from_secs(20),
        "a frame and the subscription",
        || {
            (camera(&stats, "kerb-cam").frames > 0 && sensors.lock().unwrap().link.subscribed > 0)
                .then_some(())
        },
    )
    .await?;
    let publisher =
        hardware::sim::publisher::Publisher::connect("devices", "127.0.0.1", broker.port());
    for device in ["kerb_leak", "cellar_leak"] {
        publisher.publish(
            &hardware::sim::Zigbee2MqttDevice::new(device).water_leak(true),
            Duration::from_secs(10),
        )?;
    }
    let leaks = e2e::wait_until(Duration::from_secs(20), "two leak events", || {
        let all = events(&agent);
        let leaks: Vec<Event> = of_category(&all, "other.water_leak")
            .into_iter()
            .cloned()
            .collect();
        (leaks.len() == 2).then_some(leaks)
    })
    .await?;
    let by = |id: &str| leaks.iter().find(|e| e.source.id.as_str() == id).unwrap();
    let kerb = by("leak-kerb");
    assert_eq!(
        kerb.attributes.get("confirming_camera"),
        Some(&AttrValue::Text("kerb-cam".into())),
        "{kerb:?}"
    );
    assert!(
        matches!(kerb.attributes.get("camera_objects"), Some(AttrValue::Int(n)) if *n >= 1),
        "the motorcycle is in view: {kerb:?}"
    );
    assert_eq!(kerb.evidence.len(), 1);
    let snapshot = std::fs::read(agent.store().evidence_path(&kerb.evidence[0].sha256))?;
    assert!(
        snapshot.len() > 10_000 && snapshot.starts_with(&[0xFF, 0xD8]),
        "a JPEG of the camera's view"
    );
    let cellar = by("leak-cellar");
    assert!(cellar.evidence.is_empty(), "no camera covers the cellar");
    assert!(!cellar.attributes.contains_key("confirming_camera"));
    agent.shutdown().await;
    Ok(())
}

/// The boxes drawn in the private-mark colour (yellow: a person's outline with its label tab)
/// on evidence of a black-and-white film: the bounding boxes of the 8-connected groups of
/// clearly yellow pixels (small specks of JPEG colour noise left out).
fn private_marks(img: &image::RgbImage) -> Vec<edge_agent::events::PixelRect> {
    let (w, h) = img.dimensions();
    let yellow = |x: u32, y: u32| {
        let [r, g, b] = img.get_pixel(x, y).0;
        r >= 170
            && g >= 130
            && i32::from(r) - i32::from(b) >= 80
            && i32::from(g) - i32::from(b) >= 60
    };
    let mut seen = vec![false; (w * h) as usize];
    let mut marks = Vec::new();
    for y0 in 0..h {
        for x0 in 0..w {
            if seen[(y0 * w + x0) as usize] || !yellow(x0, y0) {
                continue;
            }
            let (mut x1, mut y1, mut x2, mut y2, mut n) = (x0, y0, x0, y0, 0u32);
            let mut stack = vec![(x0, y0)];
            seen[(y0 * w + x0) as usize] = true;
            while let Some((x, y)) = stack.pop() {
                n += 1;
                (x1, y1, x2, y2) = (x1.min(x), y1.min(y), x2.max(x), y2.max(y));
                for (dx, dy) in [
                    (-1, -1),
                    (0, -1),
                    (1, -1),
                    (-1, 0),
                    (1, 0),
                    (-1, 1),
                    (0, 1),
                    (1, 1),
                ] {
                    let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                    if nx < 0 || ny < 0 || nx >= i64::from(w) || ny >= i64::from(h) {
                        continue;
                    }
                    let (nx, ny) = (nx as u32, ny as u32);
                    let i = (ny * w + nx) as usize;
                    if !seen[i] && yellow(nx, ny) {
                        seen[i] = true;
                        stack.push((nx, ny));
                    }
                }
            }
            if n >= 40 {
                marks.push(edge_agent::events::PixelRect {
                    x: x1,
                    y: y1,
                    width: x2 - x1 + 1,
                    height: y2 - y1 + 1,
                });
            }
        }
    }
    marks
}

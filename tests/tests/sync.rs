//! Sync end to end: enrollment, the mutual-TLS QUIC uplink and the hub ingest, with real QUIC on
//! 127.0.0.1, real SQLite on both sides, and a UDP fault proxy between them.

// Harness code unwraps: a panic there is a broken fixture, which the test should report.
#![allow(clippy::unwrap_used)]

mod sync_support;

use std::time::Duration;

use e2e::fault_proxy::{FaultProxy, Faults};
use edge_agent::uplink::{UplinkError, UplinkMode};
use protocol::{AttrValue, BoxId, CommandAction, CommandOutcome, EnrollRefusal};
use sync_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_enrolls_once_and_a_wrong_ca_fingerprint_is_refused() {
    let hub = TestHub::start().await;
    let token = hub.add_box("box-a");
    let tls = tempfile::tempdir().unwrap();
    let done = edge_agent::enroll::enroll(
        &hub.addr().to_string(),
        "gridsense-hub",
        &token,
        &identity(tls.path()),
    )
    .await
    .unwrap();
    assert_eq!(done.box_id.as_str(), "box-a");
    assert!(tls.path().join("box.key").exists() && tls.path().join("box.pem").exists());

    let again = edge_agent::enroll::enroll(
        &hub.addr().to_string(),
        "gridsense-hub",
        &token,
        &identity(tempfile::tempdir().unwrap().path()),
    )
    .await;
    assert!(
        matches!(
            again,
            Err(UplinkError::Refused {
                reason: EnrollRefusal::UsedToken,
                ..
            })
        ),
        "{again:?}"
    );

    // Same secret format, another CA's fingerprint: the TLS handshake fails, nothing is sent.
    let other = hub.add_box("box-b");
    let forged = format!("gs1-{}-{}", "00".repeat(32), &other[other.len() - 32..]);
    let wrong = edge_agent::enroll::enroll(
        &hub.addr().to_string(),
        "gridsense-hub",
        &forged,
        &identity(tempfile::tempdir().unwrap().path()),
    )
    .await;
    assert!(
        matches!(
            wrong,
            Err(UplinkError::Connection(_) | UplinkError::Connect(_))
        ),
        "{wrong:?}"
    );
    // The real token for box-b was not burnt by the refused attempt.
    let ok = edge_agent::enroll::enroll(
        &hub.addr().to_string(),
        "gridsense-hub",
        &other,
        &identity(tempfile::tempdir().unwrap().path()),
    )
    .await;
    assert!(ok.is_ok(), "{ok:?}");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_produced_during_repeated_outages_arrive_exactly_once_in_order() {
    const N: u64 = 10_000;
    let hub = TestHub::start().await;
    let proxy = FaultProxy::start(hub.addr(), 42).await.unwrap();
    let edge = TestEdge::enroll(&hub, "box-a", &proxy.addr().to_string()).await;
    let uplink = edge.start_uplink();

    let producer = edge.produce(N, 16);
    // Outages while events are produced and synced: black holes long enough to kill the
    // session (idle timeout 1.5 s), and lossy, reordering, duplicating stretches.
    let pattern = [
        (Faults::default(), 400),
        (
            Faults {
                blackhole: true,
                ..Faults::default()
            },
            2500,
        ),
        (
            Faults {
                drop_percent: 20,
                reorder_percent: 15,
                duplicate_percent: 10,
                ..Faults::default()
            },
            1200,
        ),
        (
            Faults {
                blackhole: true,
                ..Faults::default()
            },
            800,
        ),
        (
            Faults {
                drop_percent: 5,
                reorder_percent: 30,
                duplicate_percent: 30,
                ..Faults::default()
            },
            800,
        ),
    ];
    let mut rounds = 0;
    while !producer.is_finished() || rounds < 2 {
        for (faults, ms) in pattern {
            proxy.set(faults);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        rounds += 1;
    }
    proxy.set(Faults::default());
    producer.await.unwrap();

    let box_id = BoxId::parse("box-a").unwrap();
    let arrived =
        wait_until(Duration::from_secs(90), || {
            let hub = hub.clone_handle();
            let id = box_id.clone();
            async move {
                hub.with_log(move |l| l.counts()).await.unwrap().0 >= N && id.as_str() == "box-a"
            }
        })
        .await;
    let stats = proxy.stats();
    assert!(arrived, "not all events arrived; proxy {stats:?}");
    assert!(
        stats.dropped > 0 && stats.reordered > 0 && stats.duplicated > 0,
        "{stats:?}"
    );

    let id = box_id.clone();
    let events = hub
        .clone_handle()
        .with_log(move |l| l.events_of(&id))
        .await
        .unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq.0).collect();
    assert_eq!(seqs, (1..=N).collect::<Vec<_>>(), "exactly once, in order");
    let on_box = edge
        .store
        .events_from(protocol::Seq(1), N as usize + 10)
        .unwrap();
    assert_eq!(
        on_box.iter().map(|e| e.id).collect::<Vec<_>>(),
        events.iter().map(|e| e.id).collect::<Vec<_>>(),
        "the hub holds exactly the box's events"
    );
    let synced = wait_until(Duration::from_secs(10), || {
        let store = edge.store.clone();
        async move { store.stats().unwrap().acked_seq == N }
    })
    .await;
    assert!(synced, "the box saw every ack: {:?}", edge.store.stats());
    assert!(
        uplink.status.borrow().sessions_total >= 2,
        "the outages forced reconnects"
    );
    uplink.stop().await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_box_is_disconnected_and_refused_within_sixty_seconds() {
    let hub = TestHub::start().await;
    let edge = TestEdge::enroll(&hub, "box-r", &hub.addr().to_string()).await;
    let mut uplink = edge.start_uplink();
    edge.produce(10, 1).await.unwrap();
    assert!(
        wait_for_mode(
            &mut uplink.status,
            UplinkMode::Connected,
            Duration::from_secs(20)
        )
        .await,
        "{:?}",
        uplink.status.borrow()
    );
    let revoked_at = std::time::Instant::now();
    hub::registry::admin::box_revoke(
        hub.dir(),
        &BoxId::parse("box-r").unwrap(),
        protocol::Timestamp::from_unix_millis(0),
    )
    .unwrap();
    assert!(
        wait_for_mode(
            &mut uplink.status,
            UplinkMode::Revoked,
            Duration::from_secs(60)
        )
        .await,
        "{:?}",
        uplink.status.borrow()
    );
    assert!(revoked_at.elapsed() < Duration::from_secs(60));
    assert!(hub.handle.connected().is_empty());
    // It keeps trying (slowly) and keeps being refused.
    let refused_before = hub
        .handle
        .stats()
        .refused_total
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(refused_before >= 1 || revoked_at.elapsed() < Duration::from_secs(60));
    uplink.stop().await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_recorded_under_the_certificate_id_whatever_the_payload_claims() {
    let hub = TestHub::start().await;
    let edge = TestEdge::enroll(&hub, "box-a", &hub.addr().to_string()).await;
    let uplink = edge.start_uplink();
    edge.produce_with(5, |e| {
        e.attributes
            .insert("box_id".into(), AttrValue::Text("box-b".into()));
    })
    .await
    .unwrap();
    let handle = hub.clone_handle();
    assert!(
        wait_until(Duration::from_secs(20), || {
            let h = handle.clone();
            async move { h.with_log(|l| l.counts()).await.unwrap().0 == 5 }
        })
        .await
    );
    let (mine, theirs) = handle
        .with_log(|l| {
            Ok((
                l.events_of(&BoxId::parse("box-a").unwrap())?.len(),
                l.events_of(&BoxId::parse("box-b").unwrap())?.len(),
            ))
        })
        .await
        .unwrap();
    assert_eq!((mine, theirs), (5, 0));
    uplink.stop().await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_frames_close_that_connection_and_the_hub_serves_others() {
    let hub = TestHub::start().await;
    let edge = TestEdge::enroll(&hub, "box-a", &hub.addr().to_string()).await;
    let rogue_tls = tempfile::tempdir().unwrap();
    let rogue = enroll_into(&hub, "box-x", rogue_tls.path()).await;

    for garbage in [
        // A header announcing 1 GiB.
        (1u32 << 30).to_be_bytes().to_vec(),
        // A well-sized frame of junk.
        [&5u32.to_be_bytes()[..], &[0xc1, 0xc1, 0xc1, 0xc1, 0xc1]].concat(),
    ] {
        let before = hub
            .handle
            .stats()
            .protocol_errors_total
            .load(std::sync::atomic::Ordering::Relaxed);
        let closed = raw_session_send(hub.addr(), &rogue, &garbage).await;
        assert!(closed, "the hub closed the rogue connection");
        assert!(
            wait_until(Duration::from_secs(5), || {
                let h = hub.clone_handle();
                async move {
                    h.stats()
                        .protocol_errors_total
                        .load(std::sync::atomic::Ordering::Relaxed)
                        > before
                }
            })
            .await
        );
    }
    let uplink = edge.start_uplink();
    edge.produce(20, 2).await.unwrap();
    let handle = hub.clone_handle();
    assert!(
        wait_until(Duration::from_secs(20), || {
            let h = handle.clone();
            async move { h.with_log(|l| l.counts()).await.unwrap().0 == 20 }
        })
        .await,
        "the hub still serves a well-behaved box"
    );
    uplink.stop().await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recheck_without_cameras_fails_and_an_unknown_command_is_unsupported() {
    let hub = TestHub::start().await;
    let edge = TestEdge::enroll(&hub, "box-c", &hub.addr().to_string()).await;
    let mut uplink = edge.start_uplink();
    assert!(
        wait_for_mode(
            &mut uplink.status,
            UplinkMode::Connected,
            Duration::from_secs(20)
        )
        .await
    );
    let id = BoxId::parse("box-c").unwrap();
    let recheck = hub
        .handle
        .command(
            &id,
            CommandAction::Recheck {
                camera: protocol::CameraId::parse("cam-1").unwrap(),
                reference: "case 7".into(),
                categories: vec![],
            },
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert!(matches!(recheck.outcome, CommandOutcome::Failed { .. }));
    let unknown = hub
        .handle
        .command(&id, CommandAction::Unknown, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(unknown.outcome, CommandOutcome::Unsupported);
    uplink.stop().await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_reports_its_sensors_and_disk_in_health_to_the_hub() {
    let hub = TestHub::start().await;
    let tls = tempfile::tempdir().unwrap();
    let paths = enroll_into(&hub, "box-h", tls.path()).await;
    let broker = e2e::mosquitto::Mosquitto::start().unwrap();
    let data = tempfile::tempdir().unwrap();
    let config = edge_agent::config::Config::from_toml_str(
        &format!(
            r#"[site]
lat = 31.3
lon = 120.6

[store]
data_dir = "{data}"

[mqtt]
port = {port}
client_id = "agent-health"
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

[[sensors]]
id = "silent-9"
device = "never_heard_9"
profile = {{ kind = "zigbee2mqtt" }}
[[sensors.rules]]
name = "leak"
kind = "state"
quantity = "water_leak"
category = "other.water_leak"

[uplink]
hub_addr = "{hub}"
ca_path = "{ca}"
cert_path = "{cert}"
key_path = "{key}"
health_interval_secs = 1
"#,
            data = data.path().display(),
            port = broker.port(),
            hub = hub.addr(),
            ca = paths.ca_path.display(),
            cert = paths.cert_path.display(),
            key = paths.key_path.display(),
        ),
        "test",
    )
    .unwrap();
    let agent = edge_agent::agent::Agent::start(config, tokio_util::sync::CancellationToken::new())
        .await
        .unwrap();
    let stats = agent.sensor_stats().unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || {
            let up = stats.lock().unwrap().link.subscribed > 0;
            async move { up }
        })
        .await
    );
    let publisher =
        hardware::sim::publisher::Publisher::connect("devices", "127.0.0.1", broker.port());
    publisher
        .publish(
            &hardware::sim::Zigbee2MqttDevice::new("kitchen_leak_301").water_leak(false),
            Duration::from_secs(10),
        )
        .unwrap();

    // The hub keeps the latest health report: it names both sensors, the one heard from as ok and
    // the silent one as degraded, and the data disk's free space.
    let id = BoxId::parse("box-h").unwrap();
    let handle = hub.clone_handle();
    let reported = wait_until(Duration::from_secs(20), || {
        let (handle, id) = (handle.clone(), id.clone());
        async move {
            let Ok(Some((_, health))) = handle.with_log(move |log| log.health(&id)).await else {
                return false;
            };
            let state = |name: &str| {
                health
                    .components
                    .iter()
                    .find(|c| c.source.id.as_str() == name)
                    .map(|c| c.state)
            };
            health.disk_free_bytes > 0
                && state("leak-301") == Some(protocol::ComponentState::Ok)
                && state("silent-9") == Some(protocol::ComponentState::Degraded)
        }
    })
    .await;
    let last = hub.handle.with_log(move |log| log.health(&id)).await;
    assert!(reported, "latest health: {last:?}");
    agent.shutdown().await;
    hub.stop().await;
}

/// The hub asks a box to re-check a case through its camera: the box looks now, records the look
/// as an event whose evidence (the "after" picture) reaches the hub by the normal durable path,
/// and answers with the objects its rule looks for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_recheck_answers_with_matching_objects_and_its_evidence_reaches_the_hub() {
    use hardware::sim::rtsp::{TestCamera, TestMedia};
    let camera = TestCamera::start(TestMedia::Still {
        path: e2e::media::media("motorcycle_left.png").unwrap(),
        fps: 25,
        width_px: 740,
        height_px: 500,
    })
    .unwrap();
    let hub = TestHub::start().await;
    let tls = tempfile::tempdir().unwrap();
    let paths = enroll_into(&hub, "box-r", tls.path()).await;
    let data = tempfile::tempdir().unwrap();
    // Two rules on one camera: the no-parking zone around the motorcycle, and an intrusion zone
    // in the sky above it where nothing stands.
    let config = edge_agent::config::Config::from_toml_str(
        &format!(
            r#"[site]
lat = 31.3
lon = 120.6

[store]
data_dir = "{data}"

[[cameras]]
id = "kerb-cam"
detect_fps = 1
frame_width_px = 640
frame_height_px = 432
source = {{ kind = "rtsp", url = "{url}" }}
[[cameras.zones]]
id = "no-parking"
polygon = [[0.05, 0.05], [0.98, 0.05], [0.98, 0.98], [0.05, 0.98]]
classes = ["bicycle", "motorcycle"]
[[cameras.zones]]
id = "sky"
polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 0.04], [0.0, 0.04]]
[[cameras.rules]]
id = "nonmotor-parking"
kind = "dwell"
zone = "no-parking"
category = "street_order.illegal_nonmotor_parking"
dwell_secs = 600
[[cameras.rules]]
id = "sky-intrusion"
kind = "intrusion"
zone = "sky"
category = "street_order.intrusion"

[uplink]
hub_addr = "{hub}"
ca_path = "{ca}"
cert_path = "{cert}"
key_path = "{key}"
"#,
            data = data.path().display(),
            url = camera.url(),
            hub = hub.addr(),
            ca = paths.ca_path.display(),
            cert = paths.cert_path.display(),
            key = paths.key_path.display(),
        ),
        "test",
    )
    .unwrap();
    let agent = edge_agent::agent::Agent::start(config, tokio_util::sync::CancellationToken::new())
        .await
        .unwrap();
    let id = BoxId::parse("box-r").unwrap();
    let handle = hub.clone_handle();
    let ask = |reference: &str, category: &str| {
        let (handle, id) = (handle.clone(), id.clone());
        let action = CommandAction::Recheck {
            camera: protocol::CameraId::parse("kerb-cam").unwrap(),
            reference: reference.to_owned(),
            categories: vec![
                protocol::Catalog::embedded()
                    .resolve(category)
                    .unwrap()
                    .code
                    .clone(),
            ],
        };
        async move { handle.command(&id, action, Duration::from_secs(20)).await }
    };
    // The box answers as soon as it is connected and its camera has a frame.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let parked = loop {
        match ask("case 7", "street_order.illegal_nonmotor_parking").await {
            Ok(r) if r.outcome == CommandOutcome::Done => break r,
            other => assert!(
                tokio::time::Instant::now() < deadline,
                "no re-check answer: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        parked.attributes.get("matching"),
        Some(&AttrValue::Int(1)),
        "{parked:?}"
    );
    assert_eq!(parked.evidence.len(), 1);
    let sky = ask("case 8", "street_order.intrusion").await.unwrap();
    assert_eq!(sky.outcome, CommandOutcome::Done);
    assert_eq!(
        sky.attributes.get("matching"),
        Some(&AttrValue::Int(0)),
        "{sky:?}"
    );

    // The look was recorded as an event naming the case, and its picture reaches the hub.
    let sha = parked.evidence[0].sha256;
    let arrived = wait_until(Duration::from_secs(30), || {
        let (handle, id) = (handle.clone(), id.clone());
        async move {
            let Ok(events) = handle.with_log(move |log| log.events_of(&id)).await else {
                return false;
            };
            let named = events.iter().any(|e| {
                e.attributes.get("recheck_reference") == Some(&AttrValue::Text("case 7".into()))
                    && e.evidence.iter().any(|r| r.sha256 == sha)
            });
            let complete = handle
                .with_log(move |log| log.evidence_state(&sha))
                .await
                .is_ok_and(|s| s.is_some_and(|(_, _, done)| done));
            named && complete
        }
    })
    .await;
    assert!(
        arrived,
        "the re-check event or its evidence did not reach the hub"
    );
    agent.shutdown().await;
    hub.stop().await;
}

//! Sync end to end: enrollment, the mutual-TLS QUIC uplink and the hub ingest, with real QUIC on
//! 127.0.0.1, real SQLite on both sides, and a UDP fault proxy between them.

// Harness code unwraps: a panic there is a broken fixture, which the test should report.
#![allow(clippy::unwrap_used)]

mod sync_support;

use std::sync::Arc;
use std::time::Duration;

use e2e::fault_proxy::{FaultProxy, Faults};
use edge_agent::uplink::{IdentityPaths, UplinkError, UplinkMode};
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

    // Outages while events are produced and synced: black holes long enough to kill the
    // session (idle timeout 1.5 s), and lossy, reordering, duplicating stretches. A share of
    // the events is committed at the start of every stretch, and a lossy stretch lasts at least
    // until the proxy has done each of its faults to some datagram (a box still backing off
    // after an outage sends nothing for a while), so each kind of fault meets events in flight
    // however fast the store commits them and however slow the machine is.
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
    const ROUNDS: u64 = 2;
    let stretches = ROUNDS * pattern.len() as u64;
    let mut produced = 0;
    for stretch in 0..stretches {
        let (faults, ms) = pattern[(stretch % pattern.len() as u64) as usize];
        proxy.set(faults);
        let until = N * (stretch + 1) / stretches;
        edge.produce_range(produced..until, 16).await.unwrap();
        produced = until;
        let before = proxy.stats();
        tokio::time::sleep(Duration::from_millis(ms)).await;
        if !faults.blackhole {
            let applied = wait_until(Duration::from_secs(60), || {
                let now = proxy.stats();
                let moved = |on: u8, a: u64, b: u64| on == 0 || a > b;
                std::future::ready(
                    moved(faults.drop_percent, now.dropped, before.dropped)
                        && moved(faults.reorder_percent, now.reordered, before.reordered)
                        && moved(faults.duplicate_percent, now.duplicated, before.duplicated),
                )
            })
            .await;
            assert!(
                applied,
                "stretch {stretch}: {faults:?} met no traffic; proxy {:?}",
                proxy.stats()
            );
        }
    }
    proxy.set(Faults::default());

    let box_id = BoxId::parse("box-a").unwrap();
    let arrived = wait_until(Duration::from_secs(90), || {
        let hub = hub.clone_handle();
        async move { hub.with_log(|l| l.counts()).await.unwrap().0 >= N }
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
    // The box saw every ack.
    edge.assert_acked(N, Duration::from_secs(10), &uplink).await;
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
    wait_for_mode(
        &mut uplink.status,
        UplinkMode::Connected,
        Duration::from_secs(20),
    )
    .await;
    let revoked_at = std::time::Instant::now();
    hub::registry::admin::box_revoke(
        hub.dir(),
        &BoxId::parse("box-r").unwrap(),
        protocol::Timestamp::from_unix_millis(0),
    )
    .unwrap();
    wait_for_mode(
        &mut uplink.status,
        UplinkMode::Revoked,
        Duration::from_secs(60),
    )
    .await;
    assert!(revoked_at.elapsed() < Duration::from_secs(60));
    assert!(hub.handle.connected().is_empty());
    // It keeps trying (slowly) and keeps being refused.
    let refused_before = hub
        .handle
        .stats()
        .refused_total
        .load(std::sync::atomic::Ordering::Relaxed);
    let refused_again = wait_until(Duration::from_secs(20), || {
        let h = hub.clone_handle();
        async move {
            h.stats()
                .refused_total
                .load(std::sync::atomic::Ordering::Relaxed)
                > refused_before
        }
    })
    .await;
    assert!(refused_again, "the revoked box tried again and was refused");
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
    wait_for_mode(
        &mut uplink.status,
        UplinkMode::Connected,
        Duration::from_secs(20),
    )
    .await;
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
    let camera = e2e::media::motorcycle_camera(25).unwrap();
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

{camera}
[[cameras.zones]]
id = "sky"
polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 0.04], [0.0, 0.04]]
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
            camera = e2e::media::kerb_camera_toml(&camera.url(), 1, 600),
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
        parked.recheck.as_ref().map(|r| r.matching),
        Some(1),
        "{parked:?}"
    );
    assert_eq!(parked.evidence.len(), 1);
    let sky = ask("case 8", "street_order.intrusion").await.unwrap();
    assert_eq!(sky.outcome, CommandOutcome::Done);
    assert_eq!(sky.recheck.as_ref().map(|r| r.matching), Some(0), "{sky:?}");

    // The look was recorded as an event naming the case, and its picture reaches the hub.
    let sha = parked.evidence[0].sha256;
    let arrived = wait_until(Duration::from_secs(30), || {
        let (handle, id) = (handle.clone(), id.clone());
        async move {
            let Ok(events) = handle.with_log(move |log| log.events_of(&id)).await else {
                return false;
            };
            let named = events.iter().any(|e| {
                e.recheck_reference() == Some("case 7")
                    && e.evidence.iter().any(|r| r.sha256 == sha)
            });
            let complete = handle
                .with_log(move |log| log.evidence_state(&sha))
                .await
                .is_ok_and(|s| {
                    s.is_some_and(|(_, _, state)| state == hub::ingest::EvidenceState::Complete)
                });
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

/// Certificate renewal end to end. A box whose certificate is in its renewal window (both
/// clocks moved 50 minutes on, certificates last an hour) asks the hub for a new one over its
/// session, checks and swaps it in on disk, reconnects with it and syncs on: every event arrives
/// exactly once; its session stays up past the old certificate's expiry, so it really is on the
/// new one. The old certificate keeps working until it expires, as the design has it
/// (short-lived certificates, no revocation list): then a session on it is closed, and a new one
/// is refused, by a full handshake and by resuming its TLS session alike, while the renewed one
/// is still accepted. After revocation both are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_renews_its_certificate_in_session_and_syncs_on_with_it_exactly_once() {
    use std::sync::atomic::Ordering::Relaxed;
    const N: u64 = 3000;
    const M: u64 = 500;
    let clock = TestClock::default();
    let hub = TestHub::start_with(&clock, |s| {
        s.certificate_lifetime = Duration::from_secs(3600);
    })
    .await;
    let edge = TestEdge::enroll(&hub, "box-n", &hub.addr().to_string()).await;
    let id = edge.config.identity();
    let kept = tempfile::tempdir().unwrap();
    let old = identity(kept.path());
    for (from, to) in [
        (&id.ca_path, &old.ca_path),
        (&id.cert_path, &old.cert_path),
        (&id.key_path, &old.key_path),
    ] {
        std::fs::copy(from, to).unwrap();
    }
    let box_id = BoxId::parse("box-n").unwrap();
    let registry_expiry = |dir: &std::path::Path| {
        hub::registry::Registry::open_in(dir)
            .unwrap()
            .list()
            .unwrap()
            .into_iter()
            .find(|b| b.id.as_str() == "box-n")
            .and_then(|b| b.cert_not_after)
            .unwrap()
    };
    let old_expiry = registry_expiry(hub.dir());

    // Fifty minutes on: past two thirds of the hour, the box is due to renew.
    clock.set_ahead(Duration::from_secs(50 * 60));
    let uplink = edge.start_uplink_at(&clock);
    edge.produce(N, 8).await.unwrap();
    let handle = hub.clone_handle();
    edge.assert_acked(N, Duration::from_secs(60), &uplink).await;
    // Acks go on while the renewal is out: the renewal is done once the box has installed the
    // new certificate and reconnected with it.
    let mut status = uplink.status.clone();
    let reconnected = tokio::time::timeout(
        Duration::from_secs(30),
        status.wait_for(|s| s.sessions_total >= 2),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    assert!(
        reconnected,
        "no reconnect after the renewal: {:?}",
        uplink.status.borrow()
    );
    assert_eq!(handle.stats().renewals_total.load(Relaxed), 1);
    assert_ne!(
        std::fs::read(&id.cert_path).unwrap(),
        std::fs::read(&old.cert_path).unwrap(),
        "the box holds a new certificate"
    );
    assert_ne!(
        std::fs::read(&id.key_path).unwrap(),
        std::fs::read(&old.key_path).unwrap(),
        "with a new key made on the box"
    );
    let new_expiry = registry_expiry(hub.dir());
    assert!(new_expiry > old_expiry, "the hub recorded the renewal");
    let leftovers: Vec<_> = std::fs::read_dir(id.cert_path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".new") || n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "the swap finished: {leftovers:?}");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&id.key_path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the new key is private");
    }
    assert!(
        uplink.status.borrow().sessions_total >= 2,
        "the box reconnected with the new certificate"
    );
    // Its session is on the new certificate: past the old one's expiry, the hub (which checks
    // the session's certificate at every message) keeps it, and more events go through.
    clock.set_ahead(Duration::from_secs(65 * 60));
    edge.produce(M, 2).await.unwrap();
    edge.assert_acked(N + M, Duration::from_secs(30), &uplink)
        .await;
    assert_eq!(
        handle.stats().expired_total.load(Relaxed),
        0,
        "no session of the box was on the old certificate"
    );
    uplink.stop().await;

    // The old certificate still opens a session until it expires ...
    clock.set_ahead(Duration::from_secs(50 * 60));
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    // Kept: it holds the TLS session ticket of the session below.
    let old_config = session_client_config(&old);
    let live_old = hello_session(&endpoint, old_config.clone(), hub.addr())
        .await
        .expect("the old certificate is valid until it expires");
    // ... then the hub closes that session (within its check interval) and refuses new ones.
    clock.set_ahead(Duration::from_secs(65 * 60));
    let reason = tokio::time::timeout(Duration::from_secs(20), live_old.conn.closed())
        .await
        .expect("the session on the expired certificate is closed");
    assert!(
        matches!(
            &reason,
            quinn::ConnectionError::ApplicationClosed(c)
                if c.error_code == hub::ingest::close_code::CERT_EXPIRED.into()
        ),
        "{reason:?}"
    );
    assert!(handle.stats().expired_total.load(Relaxed) >= 1);
    let failed_before = handle.stats().handshakes_failed_total.load(Relaxed);
    let refused = hello_session(&endpoint, session_client_config(&old), hub.addr()).await;
    assert!(refused.is_err(), "an expired certificate is refused");
    assert!(
        wait_until(Duration::from_secs(10), || {
            let h = hub.clone_handle();
            async move { h.stats().handshakes_failed_total.load(Relaxed) > failed_before }
        })
        .await,
        "the hub counted the refused handshake"
    );
    // Resuming the old certificate's TLS session skips the certificate checks of a handshake;
    // the hub still finds the certificate expired and closes.
    let expired_before = handle.stats().expired_total.load(Relaxed);
    let resumed = hello_session(&endpoint, old_config.clone(), hub.addr()).await;
    assert!(
        resumed.is_err(),
        "a resumed session on an expired certificate is refused"
    );
    assert!(
        wait_until(Duration::from_secs(10), || {
            let h = hub.clone_handle();
            async move { h.stats().expired_total.load(Relaxed) > expired_before }
        })
        .await,
        "the refusal came from the session's own expiry check"
    );

    // The renewed certificate is still good: a restarted uplink syncs on with it.
    let uplink = edge.start_uplink_at(&clock);
    edge.produce(M, 2).await.unwrap();
    edge.assert_acked(N + 2 * M, Duration::from_secs(30), &uplink)
        .await;
    let id_ = box_id.clone();
    let events = handle.with_log(move |l| l.events_of(&id_)).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.seq.0).collect::<Vec<_>>(),
        (1..=N + 2 * M).collect::<Vec<_>>(),
        "exactly once, in order, across the certificate swap"
    );
    let on_box = edge
        .store
        .events_from(protocol::Seq(1), (N + 2 * M) as usize)
        .unwrap();
    assert_eq!(
        on_box.iter().map(|e| e.id).collect::<Vec<_>>(),
        events.iter().map(|e| e.id).collect::<Vec<_>>()
    );
    assert_eq!(
        handle.stats().renewals_total.load(Relaxed),
        1,
        "one renewal, not one per session"
    );

    // Revoked: the live session ends and the renewed certificate is refused as well.
    hub::registry::admin::box_revoke(hub.dir(), &box_id, clock.now()).unwrap();
    let mut status = uplink.status.clone();
    wait_for_mode(&mut status, UplinkMode::Revoked, Duration::from_secs(30)).await;
    let refused_before = handle.stats().refused_total.load(Relaxed);
    assert!(
        hello_session(&endpoint, session_client_config(&id), hub.addr())
            .await
            .is_err()
    );
    assert!(handle.stats().refused_total.load(Relaxed) > refused_before);
    uplink.stop().await;
    endpoint.close(0u32.into(), b"");
    hub.stop().await;
}

/// Address validation under a handshake flood. While an enrolled box syncs, flood tasks open
/// connection after connection: half present a certificate of another hub's CA, half none and
/// ask to enroll with a token the hub never issued. Above the handshake rate the hub answers
/// unvalidated addresses with a QUIC Retry; the foreign certificates fail their handshake and
/// the enrollments are refused, each counted; the box's events all arrive exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_flood_is_retried_and_refused_while_an_enrolled_box_syncs_exactly_once() {
    use std::sync::atomic::Ordering::Relaxed;
    use std::sync::atomic::{AtomicBool, AtomicU64};
    const N: u64 = 4000;
    const FLOODERS: usize = 16;
    let hub = TestHub::start_with(&TestClock::default(), |s| {
        s.handshake_rate_per_sec = 20;
        s.max_pending_handshakes = 8;
    })
    .await;
    let foreign = TestHub::start().await;
    let mut edge = TestEdge::enroll(&hub, "box-f", &hub.addr().to_string()).await;
    // The test machine is shared: a starved keep-alive must not be what ends the session.
    edge.config.idle_timeout_ms = 10_000;
    edge.config.keep_alive_interval_ms = 500;
    let mut uplink = edge.start_uplink();
    wait_for_mode(
        &mut uplink.status,
        UplinkMode::Connected,
        Duration::from_secs(20),
    )
    .await;
    let ours = edge.config.identity();
    // A box of another hub: its certificate is from a CA this hub does not trust.
    let other_tls = tempfile::tempdir().unwrap();
    let other = enroll_into(&foreign, "box-f", other_tls.path()).await;
    let forged = IdentityPaths {
        ca_path: ours.ca_path.clone(),
        cert_path: other.cert_path.clone(),
        key_path: other.key_path.clone(),
    };
    let enroll_request = protocol::Codec::default()
        .encode_to_vec(&protocol::Message::EnrollRequest(protocol::EnrollRequest {
            token: "0123456789abcdef0123456789abcdef".into(),
            csr_pem: "not a csr".into(),
            agent_version: "flood".into(),
        }))
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicU64::new(0));
    let mut flood = Vec::new();
    for i in 0..FLOODERS {
        let (stop, attempts, addr) = (stop.clone(), attempts.clone(), hub.addr());
        let config = if i % 2 == 0 {
            session_client_config(&forged)
        } else {
            anonymous_client_config(&ours.ca_path)
        };
        let request = enroll_request.clone();
        flood.push(tokio::spawn(async move {
            let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
            while !stop.load(Relaxed) {
                attempts.fetch_add(1, Relaxed);
                if i % 2 == 0 {
                    if let Ok(session) = hello_session(&endpoint, config.clone(), addr).await {
                        session.conn.close(0u32.into(), b"");
                        panic!("a foreign certificate was let in");
                    }
                } else {
                    let attempt = async {
                        let conn = endpoint
                            .connect_with(config.clone(), addr, "gridsense-hub")
                            .ok()?
                            .await
                            .ok()?;
                        let (mut send, mut recv) = conn.open_bi().await.ok()?;
                        send.write_all(&request).await.ok()?;
                        let _ = send.finish();
                        let _ = recv.read_to_end(1 << 16).await;
                        conn.close(0u32.into(), b"");
                        Some(())
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(5), attempt).await;
                }
            }
            endpoint.close(0u32.into(), b"");
        }));
    }

    // Events are produced and synced through the flood.
    let handle = hub.clone_handle();
    let events_before = handle.stats().events_total.load(Relaxed);
    let producer = edge.produce(N, 4);
    let moved = |h: &hub::ingest::IngestHandle| {
        let s = h.stats();
        (
            s.retries_total.load(Relaxed),
            s.handshakes_failed_total.load(Relaxed),
            s.enrollments_refused_total.load(Relaxed),
            s.events_total.load(Relaxed) - events_before,
        )
    };
    // The flood lasts until each counter moved, many attempts were made and the box got events
    // through meanwhile (or a deadline, after which the asserts below say what did not happen).
    wait_until(Duration::from_secs(90), || {
        let (h, attempts) = (hub.clone_handle(), attempts.clone());
        async move {
            let (retries, failed, refused, events) = moved(&h);
            retries > 0
                && failed > 0
                && refused > 0
                && events >= N / 4
                && attempts.load(Relaxed) >= 200
        }
    })
    .await;
    let during = moved(&handle);
    stop.store(true, Relaxed);
    eprintln!(
        "flood: {} attempts; (retries, failed handshakes, refused enrollments, events) {during:?}; refused at the pending limit {}",
        attempts.load(Relaxed),
        handle.stats().handshakes_refused_total.load(Relaxed)
    );
    for f in flood {
        f.await.unwrap();
    }
    producer.await.unwrap();
    let (retries, failed, refused, events) = during;
    assert!(retries > 0, "no Retry under the flood: {during:?}");
    assert!(failed > 0, "foreign certificates not counted: {during:?}");
    assert!(refused > 0, "bogus enrollments not counted: {during:?}");
    assert!(
        events >= N / 4,
        "the box was starved during the flood: {during:?}"
    );
    assert!(attempts.load(Relaxed) >= 200, "{attempts:?}");

    edge.assert_acked(N, Duration::from_secs(60), &uplink).await;
    let id = BoxId::parse("box-f").unwrap();
    let events = handle.with_log(move |l| l.events_of(&id)).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.seq.0).collect::<Vec<_>>(),
        (1..=N).collect::<Vec<_>>(),
        "exactly once, in order, through the flood"
    );
    assert_eq!(
        handle.stats().enrollments_total.load(Relaxed),
        1,
        "only the real box ever enrolled"
    );
    uplink.stop().await;
    foreign.stop().await;
    hub.stop().await;
}

/// Connections without a certificate cannot hold what boxes need. Flood tasks on another
/// loopback address (127.0.0.2) connect without a certificate, complete the handshake and then
/// just wait, reconnecting whenever the hub closes them. Meanwhile an enrolled box restarts its
/// uplink: its very first connection attempt gets in (no failed attempt, so no backoff), because
/// such connections leave the handshake slots once their handshake is done and queue for a small
/// enrolling pool of their own, from which the surplus is closed at once and the idle are closed
/// after the enrollment deadline. (Before, each held a handshake slot until its enrollment timed
/// out, and eight of them locked every box out.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_connections_without_certificates_does_not_keep_a_restarting_box_out() {
    use std::sync::atomic::AtomicU64;
    use std::sync::atomic::Ordering::Relaxed;
    const FLOODERS: usize = 32;
    let hub = TestHub::start_with(&TestClock::default(), |s| {
        s.max_pending_handshakes = 8;
        s.max_pending_per_address = 4;
        s.max_enrolling = 4;
        s.max_enrolling_per_address = 2;
        // idle enrolling connections hold their slots a long time: only the pool bounds them
        s.enroll_timeout = Duration::from_secs(30);
    })
    .await;
    let edge = TestEdge::enroll(&hub, "box-r", &hub.addr().to_string()).await;
    let mut first = edge.start_uplink();
    wait_for_mode(
        &mut first.status,
        UplinkMode::Connected,
        Duration::from_secs(20),
    )
    .await;
    let ca = edge.config.identity().ca_path;

    let stop = tokio_util::sync::CancellationToken::new();
    let held = Arc::new(AtomicU64::new(0));
    let mut flood = Vec::new();
    for _ in 0..FLOODERS {
        let (stop, held, addr) = (stop.clone(), held.clone(), hub.addr());
        let config = anonymous_client_config(&ca);
        flood.push(tokio::spawn(async move {
            let endpoint = quinn::Endpoint::client("127.0.0.2:0".parse().unwrap()).unwrap();
            while !stop.is_cancelled() {
                let Ok(connecting) = endpoint.connect_with(config.clone(), addr, "gridsense-hub")
                else {
                    continue;
                };
                if let Ok(Ok(conn)) = tokio::time::timeout(Duration::from_secs(5), connecting).await
                {
                    held.fetch_add(1, Relaxed);
                    // hold it, saying nothing, until the hub closes it (or the flood ends)
                    tokio::select! {
                        _ = conn.closed() => {}
                        _ = stop.cancelled() => {}
                    }
                    conn.close(0u32.into(), b"");
                }
                // a bounded flood: it must not starve the 2-core test machine of CPU
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            endpoint.close(0u32.into(), b"");
        }));
    }
    let handle = hub.clone_handle();
    // The flood is on: connections were held and the surplus turned away.
    let flooding =
        wait_until(Duration::from_secs(60), || {
            let (h, held) = (handle.clone(), held.clone());
            async move {
                h.stats().certless_refused_total.load(Relaxed) >= 20 && held.load(Relaxed) >= 40
            }
        })
        .await;
    assert!(
        flooding,
        "the flood did not get going: {} held, {} refused",
        held.load(Relaxed),
        handle.stats().certless_refused_total.load(Relaxed)
    );

    // The box restarts into the flood.
    first.stop().await;
    let events_before = handle.stats().events_total.load(Relaxed);
    let mut second = edge.start_uplink();
    wait_for_mode(
        &mut second.status,
        UplinkMode::Connected,
        Duration::from_secs(30),
    )
    .await;
    let status = second.status.borrow().clone();
    assert_eq!(
        status.last_error, None,
        "the restarted box's first connection attempt failed: {status:?}"
    );
    let producer = edge.produce(50, 1);
    producer.await.unwrap();
    edge.assert_acked(50, Duration::from_secs(30), &second)
        .await;
    assert_eq!(
        handle.stats().events_total.load(Relaxed) - events_before,
        50
    );

    stop.cancel();
    for f in flood {
        f.await.unwrap();
    }
    eprintln!(
        "flood: {} connections held, {} closed at the enrolling cap, {} enrollment timeouts, {} refused at the handshake limits",
        held.load(Relaxed),
        handle.stats().certless_refused_total.load(Relaxed),
        handle.stats().enroll_timeouts_total.load(Relaxed),
        handle.stats().handshakes_refused_total.load(Relaxed)
    );
    assert_eq!(
        handle.stats().enrollments_total.load(Relaxed),
        1,
        "only the real box ever enrolled"
    );
    second.stop().await;
    hub.stop().await;
}

/// Per-box limits at ingest, each counted and none losing an event: a box delivering faster
/// than `max_events_per_sec` is slowed down (its events wait, all arrive exactly once); health
/// reports beyond `max_health_per_min` are dropped; a picture declared larger than
/// `max_evidence_bytes` is refused and never asked for, while its event and a smaller picture
/// arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_over_its_limits_is_slowed_its_extra_health_dropped_and_a_huge_picture_refused() {
    use std::sync::atomic::Ordering::Relaxed;
    const N: u64 = 300;
    let hub = TestHub::start_with(&TestClock::default(), |s| {
        s.max_events_per_sec = 100;
        s.max_health_per_min = 1;
        s.max_evidence_bytes = 16 << 10;
    })
    .await;
    let edge = TestEdge::enroll(&hub, "box-l", &hub.addr().to_string()).await;
    let producer = edge.produce(N, 1);
    producer.await.unwrap();
    let uplink = edge.start_uplink();
    edge.assert_acked(N, Duration::from_secs(60), &uplink).await;
    let handle = hub.clone_handle();
    let stats = handle.stats();
    assert!(
        stats.rate_limited_events_total.load(Relaxed) > 0,
        "{N} events at once were not slowed to 100/s"
    );
    let id = BoxId::parse("box-l").unwrap();
    let seqs: Vec<u64> = {
        let id = id.clone();
        handle
            .with_log(move |l| l.events_of(&id))
            .await
            .unwrap()
            .iter()
            .map(|e| e.seq.0)
            .collect()
    };
    assert_eq!(seqs, (1..=N).collect::<Vec<_>>(), "all, once, in order");

    // health every second, one a minute taken
    let health = wait_until(Duration::from_secs(30), || {
        let h = handle.clone();
        async move { h.stats().health_refused_total.load(Relaxed) >= 2 }
    })
    .await;
    assert!(health, "extra health reports were not dropped");

    let huge = edge_agent::store::EvidenceFile::new(vec![7u8; 32 << 10], "image/jpeg");
    let small = edge_agent::store::EvidenceFile::new(vec![8u8; 8 << 10], "image/jpeg");
    let (huge_sha, small_sha) = (huge.reference.sha256, small.reference.sha256);
    for (i, picture) in [huge, small].into_iter().enumerate() {
        let mut e = event(N + i as u64);
        e.evidence = vec![picture.reference.clone()];
        edge.store.submit(e, vec![picture]).unwrap();
    }
    edge.assert_acked(N + 2, Duration::from_secs(30), &uplink)
        .await;
    let arrived = wait_until(Duration::from_secs(30), || {
        let h = handle.clone();
        async move { h.stats().evidence_files_total.load(Relaxed) >= 1 }
    })
    .await;
    assert!(arrived, "the small picture did not arrive");
    assert_eq!(stats.evidence_refused_total.load(Relaxed), 1);
    let states = handle
        .with_log(move |l| {
            Ok((
                l.evidence_state(&huge_sha)?.map(|s| s.2),
                l.evidence_state(&small_sha)?.map(|s| s.2),
            ))
        })
        .await
        .unwrap();
    assert_eq!(
        states,
        (
            Some(hub::ingest::EvidenceState::Refused),
            Some(hub::ingest::EvidenceState::Complete)
        )
    );
    uplink.stop().await;
    hub.stop().await;
}

/// A box given two hub addresses besides a dead one moves on from the dead one, and when the
/// hub process it syncs with goes away, fails over to the other: every event arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_fails_over_between_hub_processes_and_delivers_every_event_once() {
    let first = TestHub::start().await;
    let second = TestHub::start_beside(&first).await;
    // an address nobody answers on (a UDP port just given back)
    let dead = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut edge = TestEdge::enroll(&first, "box-failover", &dead.to_string()).await;
    edge.config.hubs = vec![first.addr().to_string(), second.addr().to_string()];
    edge.produce(300, 4).await.unwrap();
    let uplink = edge.start_uplink();
    edge.assert_acked(300, Duration::from_secs(60), &uplink)
        .await;
    let on_first = first.handle.connected().len() == 1;
    let (gone, survivor) = if on_first {
        (first, second)
    } else {
        (second, first)
    };
    let _data = gone.stop().await;
    edge.produce_range(300..600, 4).await.unwrap();
    edge.assert_acked(600, Duration::from_secs(60), &uplink)
        .await;
    assert_eq!(
        survivor.handle.connected().len(),
        1,
        "the box is on the survivor"
    );
    let id = protocol::BoxId::parse("box-failover").unwrap();
    let seqs: Vec<u64> = survivor
        .handle
        .with_log(move |log| log.events_of(&id))
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq.0)
        .collect();
    assert_eq!(
        seqs,
        (1..=600).collect::<Vec<_>>(),
        "each event once, in order"
    );
    uplink.stop().await;
    survivor.stop().await;
}

//! Sync across crashes: the `hub` and `edge-agent` binaries killed with SIGKILL mid-sync, many
//! times, lose no event and duplicate none.

// Harness code unwraps: a panic there is a broken fixture, which the test should report.
#![allow(clippy::unwrap_used)]

mod sync_support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use e2e::process::{Proc, free_udp_port};
use edge_agent::store::{Store, StoreOptions};
use hub::ingest::{INGEST_FILE, IngestLog};
use protocol::{BoxId, Seq};
use sync_support::*;

/// Kill cycles per test; `SYNC_CRASH_CYCLES` raises it for a soak.
fn cycles() -> usize {
    std::env::var("SYNC_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8)
}
const EVENTS: u64 = 3000;
/// Events the agent test adds to the box's store while the agent is down, so that every restart
/// has a backlog to sync and every kill lands mid-sync however fast the machine is.
const EVENTS_PER_CYCLE: u64 = 600;

fn hub_count(dir: &Path, box_id: &BoxId) -> u64 {
    IngestLog::open(&dir.join(INGEST_FILE))
        .and_then(|l| l.events_of(box_id))
        .map_or(0, |e| e.len() as u64)
}

/// Appends `n` events to the box's store (the agent must not be running) and returns their ids.
fn prefill(data: &Path, n: u64) -> Vec<protocol::EventId> {
    let store = Store::open(StoreOptions::new(data, location())).unwrap();
    let ids = (0..n)
        .map(|i| store.submit(event(i), vec![]).unwrap().id)
        .collect();
    store.close();
    ids
}

fn assert_exactly_once(dir: &Path, box_id: &BoxId, ids: &[protocol::EventId]) {
    let events = IngestLog::open(&dir.join(INGEST_FILE))
        .unwrap()
        .events_of(box_id)
        .unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq.0).collect();
    assert_eq!(seqs, (1..=ids.len() as u64).collect::<Vec<_>>());
    assert_eq!(events.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
}

/// Waits (polling) until the hub holds more than `than` events, then a random short time.
async fn wait_for_progress(dir: &Path, box_id: &BoxId, than: u64, rng: &mut fastrand::Rng) -> u64 {
    let dir = dir.to_owned();
    let id = box_id.clone();
    let ok = wait_until(Duration::from_secs(90), || {
        let (dir, id) = (dir.clone(), id.clone());
        async move { hub_count(&dir, &id) > than }
    })
    .await;
    assert!(ok, "sync made no progress past {than}");
    tokio::time::sleep(Duration::from_millis(rng.u64(0..150))).await;
    hub_count(&dir, box_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_killed_mid_sync_many_times_loses_and_duplicates_nothing() {
    let hub_bin = e2e::binary("hub");
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    hub::registry::admin::init(
        dir.path(),
        "crash hub",
        format!("127.0.0.1:{port}").parse().unwrap(),
        now(),
    )
    .unwrap();
    let config_path = dir.path().join("hub.toml");
    let config = std::fs::read_to_string(&config_path)
        .unwrap()
        .replace("127.0.0.1:8080", "127.0.0.1:0");
    std::fs::write(&config_path, config).unwrap();
    let start_hub = || {
        Proc::spawn(
            Command::new(&hub_bin)
                .arg("serve")
                .arg("--config")
                .arg(&config_path),
        )
        .unwrap()
    };
    let mut hub = start_hub();
    let ready = wait_until(Duration::from_secs(60), || {
        let up = hub.log_contains("ingest listening");
        async move { up }
    })
    .await;
    assert!(ready, "hub did not start: {}", hub.log());

    let box_id = BoxId::parse("box-k").unwrap();
    let tls = tempfile::tempdir().unwrap();
    boxes::add_and_enroll(
        dir.path(),
        &format!("127.0.0.1:{port}"),
        box_id.as_str(),
        tls.path(),
        now(),
    )
    .await
    .unwrap();

    let data = tempfile::tempdir().unwrap();
    let ids = prefill(data.path(), EVENTS);
    let store = Store::open(StoreOptions::new(data.path(), location())).unwrap();
    let mut config = edge_agent::uplink::UplinkConfig::new(format!("127.0.0.1:{port}"), tls.path());
    config.batch_max_events = 20;
    config.max_batches_in_flight = 2;
    config.idle_timeout_ms = 1500;
    config.keep_alive_interval_ms = 300;
    config.backoff_initial_ms = 50;
    config.backoff_max_ms = 300;
    config.poll_interval_ms = 20;
    let uplink = edge_agent::uplink::Uplink::from_config(&config, store.clone());
    let cancel = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(uplink.run(cancel.clone()));

    let mut rng = fastrand::Rng::with_seed(7);
    let mut seen = 0;
    for _ in 0..cycles() {
        if seen >= EVENTS {
            // Everything arrived before the cycles ran out: later kills could not land mid-sync.
            break;
        }
        seen = wait_for_progress(dir.path(), &box_id, seen, &mut rng).await;
        hub.kill();
        hub = start_hub();
    }
    let d = dir.path().to_owned();
    let id = box_id.clone();
    let all = wait_until(Duration::from_secs(180), || {
        let (d, id) = (d.clone(), id.clone());
        async move { hub_count(&d, &id) >= EVENTS }
    })
    .await;
    assert!(
        all,
        "only {} of {EVENTS} arrived",
        hub_count(dir.path(), &box_id)
    );
    let acked = wait_until(Duration::from_secs(20), || {
        let s = store.clone();
        async move { s.stats().unwrap().acked_seq == EVENTS }
    })
    .await;
    assert!(acked, "{:?}", store.stats());
    cancel.cancel();
    task.await.unwrap().unwrap();
    hub.kill();
    assert_exactly_once(dir.path(), &box_id, &ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_killed_mid_sync_many_times_loses_and_duplicates_nothing() {
    let agent_bin = e2e::binary("edge-agent");
    let hub = TestHub::start().await;
    let tls = tempfile::tempdir().unwrap();
    let paths = enroll_into(&hub, "box-k", tls.path()).await;
    let box_id = BoxId::parse("box-k").unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut ids = prefill(data.path(), EVENTS);
    let config_path = data.path().join("agent.toml");
    std::fs::write(
        &config_path,
        format!(
            r#"[site]
lat = 31.3
lon = 120.6

[store]
data_dir = "{}"

[uplink]
hub_addr = "{}"
ca_path = "{}"
cert_path = "{}"
key_path = "{}"
batch_max_events = 20
max_batches_in_flight = 2
idle_timeout_ms = 1500
keep_alive_interval_ms = 300
backoff_initial_ms = 50
backoff_max_ms = 300
poll_interval_ms = 20
"#,
            data.path().display(),
            hub.addr(),
            paths.ca_path.display(),
            paths.cert_path.display(),
            paths.key_path.display()
        ),
    )
    .unwrap();
    let start_agent = || {
        Proc::spawn(
            Command::new(&agent_bin)
                .arg("run")
                .arg("--config")
                .arg(&config_path),
        )
        .unwrap()
    };
    let mut agent = start_agent();
    let mut rng = fastrand::Rng::with_seed(11);
    let mut seen = 0;
    for _ in 0..cycles() {
        if seen < ids.len() as u64 {
            seen = wait_for_progress(hub.dir(), &box_id, seen, &mut rng).await;
        }
        agent.kill();
        // A new backlog while the agent is down: the next run resumes mid-stream with new events
        // behind the ones that were in flight when it died.
        ids.extend(prefill(data.path(), EVENTS_PER_CYCLE));
        agent = start_agent();
    }
    let total = ids.len() as u64;
    let d = hub.dir().to_owned();
    let id = box_id.clone();
    let all = wait_until(Duration::from_secs(180), || {
        let (d, id) = (d.clone(), id.clone());
        async move { hub_count(&d, &id) >= total }
    })
    .await;
    assert!(
        all,
        "only {} of {total} arrived; agent log:\n{}",
        hub_count(hub.dir(), &box_id),
        agent.log()
    );
    agent.kill();
    assert_exactly_once(hub.dir(), &box_id, &ids);
    let store = Store::open(StoreOptions::new(data.path(), location())).unwrap();
    assert_eq!(
        store.events_from(Seq(1), 10).unwrap().len(),
        10,
        "the box kept its events"
    );
    hub.stop().await;
}

//! Nothing accepted is lost silently, tried the way boxes fail in the field: a store wiped or
//! replaced under an enrolled box, a store copied onto a second box, and pictures evicted from
//! a full box before they were uploaded. A real hub (`hub::serve::run`: QUIC ingest, cases, REST
//! API) and the box's real store and uplink, on loopback.

// Harness code unwraps: a panic there is a broken fixture, which the test should report.
#![allow(clippy::unwrap_used)]

mod hub_support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use edge_agent::store::{EvidenceFile, Store, StoreOptions};
use edge_agent::uplink::{IdentityPaths, Uplink, UplinkConfig};
use hub_support::RunningHub;
use protocol::{
    CategoryCode, Crs, Event, EventId, Location, Seq, Severity, Source, SourceId, SourceKind,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const TOKENS: [(&str, &str, &str); 2] = [
    ("t-admin", "admin", "admin-1"),
    ("t-desk", "dispatcher", "desk-1"),
];

/// How long a box may take to deliver what the test waits for.
const T: Duration = Duration::from_secs(60);

/// The events of a box whose store was deleted reuse sequence numbers the hub holds from the
/// old store; a new store has a new epoch, so every one of them still becomes a case (before
/// epochs they were taken for duplicates and dropped, and the box marked them synced).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_raised_after_the_box_store_was_deleted_becomes_a_case() {
    let dir = tempfile::tempdir().unwrap();
    let hub = start_hub(dir.path()).await;
    let tls = hub
        .enroll(
            &dir.path().join("hub"),
            "box-wiped",
            &dir.path().join("tls"),
        )
        .await;
    let data = dir.path().join("box");

    let first = BoxUnderTest::start(&hub, &tls, &data, 1 << 30, 1 << 20);
    let old: Vec<EventId> = (0..5).map(|i| first.raise(i, None)).collect();
    first.wait_synced().await;
    let old_epoch = first.store.epoch();
    first.stop().await;
    std::fs::remove_dir_all(&data).unwrap();

    let second = BoxUnderTest::start(&hub, &tls, &data, 1 << 30, 1 << 20);
    assert_ne!(
        second.store.epoch(),
        old_epoch,
        "a new store has a new epoch"
    );
    let new: Vec<EventId> = (5..10).map(|i| second.raise(i, None)).collect();
    assert_eq!(
        second.store.stats().unwrap().last_seq,
        5,
        "seqs 1..=5 again"
    );
    second.wait_synced().await;

    // Each event stands in a cell of its own: each is a case of its own.
    let h = &hub;
    let cases = e2e::wait_for(T, "ten cases", || async move {
        let events = case_events(h).await;
        (events.len() == 10).then_some(events)
    })
    .await
    .unwrap();
    let at_hub: BTreeSet<String> = cases.iter().map(|(id, _)| id.clone()).collect();
    for id in old.iter().chain(&new) {
        assert!(at_hub.contains(&id.to_string()), "event {id} is in no case");
    }
    second.stop().await;
    hub.stop().await;
}

/// A copy of a box's store on a second box (an SD card image cloned) has the same epoch: when
/// the copy sends its own events at sequence numbers the hub holds with other events, they are
/// refused and counted, never acknowledged, so the copy keeps them (before, the hub's word
/// that it held those numbers marked them synced on the copy without their being sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloned_store_is_refused_at_the_first_conflicting_event_and_keeps_its_events() {
    let dir = tempfile::tempdir().unwrap();
    let hub = start_hub(dir.path()).await;
    let tls = hub
        .enroll(
            &dir.path().join("hub"),
            "box-cloned",
            &dir.path().join("tls"),
        )
        .await;
    let data = dir.path().join("box");
    let clone_data = dir.path().join("clone");

    let original = BoxUnderTest::start(&hub, &tls, &data, 1 << 30, 1 << 20);
    for i in 0..3 {
        original.raise(i, None);
    }
    original.wait_synced().await;
    original.stop().await;
    e2e::copy_dir(&data, &clone_data).unwrap();

    // The original goes on: seqs 4 and 5 at the hub.
    let original = BoxUnderTest::start(&hub, &tls, &data, 1 << 30, 1 << 20);
    for i in 3..5 {
        original.raise(i, None);
    }
    original.wait_synced().await;
    let epoch = original.store.epoch();
    original.stop().await;

    // The copy raises other events at seqs 4 and 5.
    let copy = BoxUnderTest::start(&hub, &tls, &clone_data, 1 << 30, 1 << 20);
    assert_eq!(copy.store.epoch(), epoch);
    let mine: Vec<EventId> = (10..12).map(|i| copy.raise(i, None)).collect();
    let h = &hub;
    e2e::wait_for(T, "the hub counting the conflict", || async move {
        (metric(h, "hub_ingest_conflicts_total").await >= 1.0).then_some(())
    })
    .await
    .unwrap();
    let stats = copy.store.stats().unwrap();
    assert_eq!(
        (stats.last_seq, stats.acked_seq),
        (5, 3),
        "the copy's own events are not marked synced"
    );
    let at_hub: BTreeSet<String> = case_events(&hub)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(at_hub.len(), 5, "the original's five events and no more");
    for id in &mine {
        assert!(!at_hub.contains(&id.to_string()), "{id} was taken");
    }
    copy.stop().await;
    hub.stop().await;
}

/// A box with a small quota raises pictures faster than its evidence budget uploads them: some
/// are evicted before the hub has them. Every picture either arrives or is reported lost, and
/// both sides agree on which: the box counts them and names them in data-loss events, the hub
/// stops asking for them and its API says "lost on the box" (410) instead of "not arrived".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_picture_evicted_before_upload_is_reported_lost_on_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let hub = start_hub(dir.path()).await;
    let tls = hub
        .enroll(
            &dir.path().join("hub"),
            "box-small",
            &dir.path().join("tls"),
        )
        .await;
    // 1 MiB holds about fifteen 64 KiB pictures; the budget uploads two a second.
    let edge = BoxUnderTest::start(
        &hub,
        &tls,
        &dir.path().join("box"),
        edge_agent::config::MIN_QUOTA_BYTES,
        128 << 10,
    );
    let raised = 40;
    let mut pictures = Vec::new();
    for i in 0..raised {
        let picture = EvidenceFile::new(noise(64 << 10, i), "image/jpeg");
        pictures.push(picture.reference.sha256);
        edge.raise(i, Some(picture));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Settled: every event synced, and no picture of a synced event waits for the hub.
    let store = &edge.store;
    e2e::wait_until(T, "every picture delivered or given up", || {
        let stats = store.stats().unwrap();
        (stats.unsynced_events == 0 && store.unconfirmed_evidence(10).unwrap().is_empty())
            .then_some(())
    })
    .await
    .unwrap();
    let box_lost = store.stats().unwrap().lost_evidence_total;
    assert_eq!(
        store.stats().unwrap().lost_events_total,
        0,
        "only pictures went"
    );

    // The hub: each picture of a case is served, or named lost and answered 410.
    let h = &hub;
    let expected = pictures.len();
    let cases = e2e::wait_for(T, "the cases of all pictures", || async move {
        let cases = cases_with_evidence(h).await;
        let named: usize = cases.iter().map(|c| c.1.len()).sum();
        (named == expected).then_some(cases)
    })
    .await
    .unwrap();
    let (mut arrived, mut lost) = (0u64, 0u64);
    for (case, files, lost_list) in &cases {
        for sha in files {
            let (status, _) = hub
                .call(
                    "GET",
                    &format!("/api/v1/cases/{case}/evidence/{sha}"),
                    "t-admin",
                    None,
                )
                .await;
            if lost_list.contains(sha) {
                assert_eq!(status, 410, "case {case}: {sha} is named lost");
                lost += 1;
            } else {
                assert_eq!(status, 200, "case {case}: {sha} neither arrived nor lost");
                arrived += 1;
            }
        }
    }
    assert_eq!(arrived + lost, raised);
    assert_eq!(
        lost, box_lost,
        "the hub names lost exactly what the box counted"
    );
    assert!(
        lost > 0,
        "the quota made the box evict pictures before upload"
    );
    assert!(arrived > 0, "the budget uploaded some");
    edge.stop().await;
    hub.stop().await;
}

/// Retention deletes on purpose, and says so: the pictures of a case closed longer ago than
/// `[retention] evidence_days` are deleted, counted and answered 410 "deleted after the
/// retention period", while an open case keeps its picture; delivered events' bodies leave the
/// ingest log after `ingest_log_days`, and the box's re-delivery is still a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pictures_of_cases_closed_past_retention_are_deleted_counted_and_answered_410() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hub");
    std::fs::create_dir_all(&data).unwrap();
    // the hub's clock, which the test moves on
    let offset = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let clock: hub::api::Clock = {
        let offset = offset.clone();
        std::sync::Arc::new(move || {
            let now = e2e::now().as_unix_millis();
            protocol::Timestamp::from_unix_millis(
                now + offset.load(std::sync::atomic::Ordering::SeqCst),
            )
        })
    };
    let hub = RunningHub::start_with(
        &data,
        &TOKENS,
        "[retention]\nevidence_days = 7\ningest_log_days = 7\nsweep_interval_secs = 1\n",
        clock,
    )
    .await;
    let tls = hub
        .enroll(&data, "box-retained", &dir.path().join("tls"))
        .await;
    let edge = BoxUnderTest::start(&hub, &tls, &dir.path().join("box"), 1 << 30, 1 << 20);
    let pictures: Vec<EvidenceFile> = (0..2)
        .map(|i| EvidenceFile::new(noise(32 << 10, 100 + i), "image/jpeg"))
        .collect();
    let shas: Vec<String> = pictures
        .iter()
        .map(|p| p.reference.sha256.to_hex())
        .collect();
    // two cells apart: two cases
    edge.raise(0, Some(pictures[0].clone()));
    edge.raise(9, Some(pictures[1].clone()));
    let h = &hub;
    let cases = e2e::wait_for(T, "both pictures at the hub", || async move {
        let cases = cases_with_evidence(h).await;
        let mut served = 0;
        for (case, files, _) in &cases {
            for sha in files {
                let path = format!("/api/v1/cases/{case}/evidence/{sha}");
                served += usize::from(h.call("GET", &path, "t-admin", None).await.0 == 200);
            }
        }
        (served == 2).then_some(cases)
    })
    .await
    .unwrap();
    let (closed, open) = if cases[0].1[0] == shas[0] {
        (cases[0].0, cases[1].0)
    } else {
        (cases[1].0, cases[0].0)
    };
    for (token, action) in [
        ("t-admin", json!({"action": "accept"})),
        ("t-admin", json!({"action": "feedback", "note": "cleared"})),
        ("t-desk", json!({"action": "verify", "passed": true})),
        ("t-admin", json!({"action": "close"})),
    ] {
        let path = format!("/api/v1/cases/{closed}/actions");
        let (status, body) = hub.call("POST", &path, token, Some(action)).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(metric(&hub, "hub_ingest_evidence_expired_total").await, 0.0);

    // eight days on
    offset.store(8 * 86_400_000, std::sync::atomic::Ordering::SeqCst);
    e2e::wait_for(T, "the retention sweep", || async move {
        (metric(h, "hub_ingest_evidence_expired_total").await >= 1.0
            && metric(h, "hub_ingest_log_pruned_total").await >= 2.0)
            .then_some(())
    })
    .await
    .unwrap();
    assert_eq!(metric(&hub, "hub_ingest_evidence_expired_total").await, 1.0);
    assert_eq!(
        metric(&hub, "hub_ingest_evidence_expired_bytes_total").await,
        f64::from(32u32 << 10)
    );
    assert!(!data.join("evidence").join(&shas[0]).exists());
    let (status, body) = hub
        .call(
            "GET",
            &format!("/api/v1/cases/{closed}/evidence/{}", shas[0]),
            "t-admin",
            None,
        )
        .await;
    assert_eq!(status, 410);
    assert!(body.to_string().contains("retention"), "{body}");
    let (_, shown) = hub
        .call("GET", &format!("/api/v1/cases/{closed}"), "t-admin", None)
        .await;
    assert_eq!(strings(&shown["evidence_expired"]), [shas[0].clone()]);
    assert_eq!(shown["case"]["state"], "closed", "the case itself stays");
    let (status, _) = hub
        .call(
            "GET",
            &format!("/api/v1/cases/{open}/evidence/{}", shas[1]),
            "t-admin",
            None,
        )
        .await;
    assert_eq!(status, 200, "an open case keeps its picture");
    edge.stop().await;
    hub.stop().await;
}

/// A box's store and uplink against the test hub.
struct BoxUnderTest {
    store: Store,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl BoxUnderTest {
    fn start(
        hub: &RunningHub,
        tls: &IdentityPaths,
        data: &Path,
        quota_bytes: u64,
        evidence_budget_bytes_per_sec: u64,
    ) -> BoxUnderTest {
        let mut options = StoreOptions::new(data, place(0));
        options.quota_bytes = quota_bytes;
        let store = Store::open(options).unwrap();
        let tls_dir = tls.ca_path.parent().unwrap();
        let mut config = UplinkConfig::new(hub.ingest.to_string(), tls_dir);
        config.backoff_initial_ms = 50;
        config.backoff_max_ms = 500;
        config.poll_interval_ms = 20;
        config.evidence_budget_bytes_per_sec = evidence_budget_bytes_per_sec;
        config.evidence_chunk_bytes = 16 << 10;
        let uplink = Uplink::from_config(&config, store.clone());
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        let task = tokio::spawn(async move { uplink.run(c).await.unwrap() });
        BoxUnderTest {
            store,
            cancel,
            task,
        }
    }

    /// Commits event `i` (in cell `i` of the sample city), with `picture`.
    fn raise(&self, i: u64, picture: Option<EvidenceFile>) -> EventId {
        let at = e2e::now();
        let mut random = [0u8; 10];
        random[..8].copy_from_slice(&i.to_be_bytes());
        random[8] = fastrand::u8(..);
        let event = Event {
            id: EventId::v7(at.as_unix_millis() as u64, random),
            seq: Seq(0),
            source: Source {
                kind: SourceKind::Camera,
                id: SourceId::parse("cam-1").unwrap(),
            },
            category: CategoryCode::parse("0102").unwrap(),
            severity: Severity::Medium,
            observed_at: at,
            location: place(i),
            grid: None,
            attributes: Default::default(),
            evidence: picture.iter().map(|p| p.reference.clone()).collect(),
        };
        let id = event.id;
        self.store
            .submit(event, picture.into_iter().collect())
            .unwrap();
        id
    }

    async fn wait_synced(&self) {
        let store = &self.store;
        e2e::wait_until(T, "every event acknowledged", || {
            let s = store.stats().unwrap();
            (s.acked_seq == s.last_seq).then_some(())
        })
        .await
        .unwrap();
    }

    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(T, self.task).await.unwrap().unwrap();
    }
}

async fn start_hub(dir: &Path) -> RunningHub {
    let data = dir.join("hub");
    std::fs::create_dir_all(&data).unwrap();
    RunningHub::start(&data, &TOKENS).await
}

/// The middle of cell `i` (of 32) of the sample city: each about 200 m from the next.
fn place(i: u64) -> Location {
    let (x, y) = (i % 8, (i / 8) % 4);
    Location {
        lat: 31.281 + y as f64 * 0.002,
        lon: 120.581 + x as f64 * 0.002,
        crs: Crs::Wgs84,
    }
}

/// `(event id, case id)` of every event in a case at the hub.
async fn case_events(hub: &RunningHub) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for case in case_ids(hub).await {
        let (_, body) = hub
            .call("GET", &format!("/api/v1/cases/{case}"), "t-admin", None)
            .await;
        for e in body["events"].as_array().into_iter().flatten() {
            out.push((e["event"]["id"].as_str().unwrap().to_owned(), case));
        }
    }
    out
}

/// Each case's id, the pictures its events name, and those the hub says were lost.
async fn cases_with_evidence(hub: &RunningHub) -> Vec<(i64, Vec<String>, Vec<String>)> {
    let mut out = Vec::new();
    for case in case_ids(hub).await {
        let (_, body) = hub
            .call("GET", &format!("/api/v1/cases/{case}"), "t-admin", None)
            .await;
        let files = body["events"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|e| {
                e["event"]["evidence"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .map(|r| r["sha256"].as_str().unwrap().to_owned())
            .collect();
        let lost = strings(&body["evidence_lost"]);
        out.push((case, files, lost));
    }
    out
}

async fn case_ids(hub: &RunningHub) -> Vec<i64> {
    let (status, body) = hub
        .call("GET", "/api/v1/cases?limit=500", "t-admin", None)
        .await;
    assert_eq!(status, 200, "{body}");
    body["cases"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["id"].as_i64().unwrap())
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

/// The value of an unlabelled counter in the hub's `/metrics` (0 when absent).
async fn metric(hub: &RunningHub, name: &str) -> f64 {
    let (_, body) = hub.call("GET", "/metrics", "t-admin", None).await;
    e2e::metric_value(body.as_str().unwrap_or_default(), name).unwrap_or(0.0)
}

/// `len` reproducible incompressible bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v);
    v
}

//! The store: round trips, group commit, the sync cursor, eviction order, retention and the
//! start-up checks.

use std::collections::BTreeSet;
use std::sync::Arc;

use edge_agent::store::{Store, StoreError};
use protocol::{AttrValue, Catalog, Seq, SourceKind, Timestamp};

use crate::helpers::{self, T0_MS, event, event_with_evidence};

#[test]
fn a_committed_event_reads_back_exactly_with_its_assigned_seq() {
    let dir = tempfile::tempdir().unwrap();
    let store = helpers::open(dir.path());
    let (mut original, files) = event_with_evidence(1, 0, 3000);
    original
        .attributes
        .insert("reading".to_owned(), AttrValue::Float(-0.1 + f64::EPSILON));
    let committed = store.submit(original.clone(), files).unwrap();
    assert_eq!(committed.seq, Seq(1));
    assert_eq!(committed.id, original.id);
    let mut expected = original;
    expected.seq = Seq(1);
    assert_eq!(store.pending(10).unwrap(), vec![expected.clone()]);
    drop(store);
    let store = helpers::open(dir.path());
    assert_eq!(store.events_from(Seq(1), 10).unwrap(), vec![expected]);
    helpers::assert_evidence_intact(&store);
}

#[test]
fn concurrent_submitters_get_gap_free_sequence_numbers_in_commit_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = helpers::open(dir.path());
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                (0..100u64)
                    .map(|i| store.submit(event(i, t), Vec::new()).unwrap().seq.0)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all = BTreeSet::new();
    for t in threads {
        let seqs = t.join().unwrap();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "one submitter's seqs go up"
        );
        all.extend(seqs);
    }
    assert_eq!(all, (1..=800).collect::<BTreeSet<u64>>());
    let stats = store.stats().unwrap();
    assert_eq!((stats.last_seq, stats.events), (800, 800));
}

#[test]
fn tasks_awaiting_their_commits_share_them_with_blocked_threads_and_get_gap_free_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let store = helpers::open(dir.path());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..32u64)
        .map(|t| {
            let store = store.clone();
            runtime.spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..25u64 {
                    seqs.push(
                        store
                            .submit_async(event(i, t), Vec::new())
                            .await
                            .unwrap()
                            .seq
                            .0,
                    );
                }
                seqs
            })
        })
        .collect();
    let threads: Vec<_> = (32..36u64)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                (0..25u64)
                    .map(|i| store.submit(event(i, t), Vec::new()).unwrap().seq.0)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all = BTreeSet::new();
    for seqs in tasks
        .into_iter()
        .map(|t| runtime.block_on(t).unwrap())
        .chain(threads.into_iter().map(|t| t.join().unwrap()))
    {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "one submitter's seqs go up"
        );
        all.extend(seqs);
    }
    assert_eq!(all, (1..=900).collect::<BTreeSet<u64>>());

    // evidence is written (on the blocking pool) before its event commits; refusals answer as
    // `submit` does
    let (with_files, files) = event_with_evidence(1000, 0, 700);
    let committed = runtime
        .block_on(store.submit_async(with_files.clone(), files))
        .unwrap();
    assert_eq!((committed.seq, committed.id), (Seq(901), with_files.id));
    helpers::assert_evidence_intact(&store);
    let again = runtime.block_on(store.submit_async(event(0, 0), Vec::new()));
    assert!(
        matches!(again, Err(StoreError::DuplicateId { .. })),
        "{again:?}"
    );
    let (mut mismatched, stray) = event_with_evidence(1001, 0, 100);
    mismatched.evidence.clear();
    let refused = runtime.block_on(store.submit_async(mismatched, stray));
    assert!(
        matches!(refused, Err(StoreError::EvidenceMismatch { .. })),
        "{refused:?}"
    );
    assert_eq!(store.stats().unwrap().last_seq, 901);

    // a writer queue of one: most tasks find it full and wait for room on the blocking pool
    let small = tempfile::tempdir().unwrap();
    let mut options = helpers::options(small.path());
    options.queue_capacity = 1;
    let store = Store::open(options).unwrap();
    let tasks: Vec<_> = (0..16u64)
        .map(|t| {
            let store = store.clone();
            runtime.spawn(async move {
                for i in 0..10u64 {
                    store.submit_async(event(i, t), Vec::new()).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        runtime.block_on(t).unwrap();
    }
    let stats = store.stats().unwrap();
    assert_eq!((stats.last_seq, stats.events), (160, 160));
}

#[test]
fn a_burst_submitted_together_gets_consecutive_seqs_and_each_event_its_own_answer() {
    let dir = tempfile::tempdir().unwrap();
    let store = helpers::open(dir.path());
    store.submit(event(1, 0), Vec::new()).unwrap();
    let (with_files, files) = event_with_evidence(2, 0, 500);
    let (mut mismatched, stray) = event_with_evidence(3, 0, 100);
    mismatched.evidence.clear();
    let results = store.submit_many(vec![
        (event(10, 0), Vec::new()),
        (event(1, 0), Vec::new()), // already stored
        (mismatched, stray),       // refused before it reaches the writer
        (with_files.clone(), files),
        (event(11, 0), Vec::new()),
    ]);
    let seqs: Vec<Option<u64>> = results
        .iter()
        .map(|r| r.as_ref().ok().map(|c| c.seq.0))
        .collect();
    assert_eq!(seqs, [Some(2), None, None, Some(3), Some(4)]);
    assert!(matches!(results[1], Err(StoreError::DuplicateId { .. })));
    assert!(matches!(
        results[2],
        Err(StoreError::EvidenceMismatch { .. })
    ));
    assert_eq!(results[3].as_ref().unwrap().id, with_files.id);
    assert!(store.submit_many(Vec::new()).is_empty());
    let stats = store.stats().unwrap();
    assert_eq!(
        (stats.last_seq, stats.events, stats.evidence_files),
        (4, 4, 1)
    );
    helpers::assert_evidence_intact(&store);
}

#[test]
fn pending_returns_unsynced_events_in_order_and_ack_moves_the_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let store = helpers::open(dir.path());
    for n in 1..=5 {
        store.submit(event(n, 0), Vec::new()).unwrap();
    }
    let seqs = |events: Vec<protocol::Event>| events.iter().map(|e| e.seq.0).collect::<Vec<_>>();
    assert_eq!(seqs(store.pending(3).unwrap()), [1, 2, 3]);
    store.ack(Seq(2)).unwrap();
    assert_eq!(seqs(store.pending(10).unwrap()), [3, 4, 5]);
    store.ack(Seq(1)).unwrap(); // an older ack never moves the cursor back
    assert_eq!(store.stats().unwrap().acked_seq, 2);
    assert!(matches!(
        store.ack(Seq(6)),
        Err(StoreError::AckBeyondCommitted { last_seq: 5, .. })
    ));
    store.ack(Seq(5)).unwrap();
    assert!(store.pending(10).unwrap().is_empty());
    drop(store);
    let store = helpers::open(dir.path());
    assert_eq!(store.stats().unwrap().acked_seq, 5, "the cursor is durable");
}

#[test]
fn a_duplicate_event_id_is_refused_without_consuming_a_seq() {
    let dir = tempfile::tempdir().unwrap();
    let store = helpers::open(dir.path());
    store.submit(event(1, 0), Vec::new()).unwrap();
    assert!(matches!(
        store.submit(event(1, 0), Vec::new()),
        Err(StoreError::DuplicateId { .. })
    ));
    let (dup, files) = event_with_evidence(1, 0, 100);
    assert!(matches!(
        store.submit(dup, files),
        Err(StoreError::DuplicateId { .. })
    ));
    assert_eq!(store.submit(event(2, 0), Vec::new()).unwrap().seq, Seq(2));
    let stats = store.stats().unwrap();
    assert_eq!((stats.events, stats.evidence_files), (2, 0));
    let leftovers = std::fs::read_dir(dir.path().join("evidence"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_type().unwrap().is_file())
        .count();
    assert_eq!(leftovers, 0, "a refused event's evidence file is removed");
}

#[test]
fn an_event_too_large_to_send_is_refused_without_consuming_a_seq() {
    let dir = tempfile::tempdir().unwrap();
    let store = helpers::open(dir.path());
    let mut huge = event(1, 0);
    huge.attributes.insert(
        "note".to_owned(),
        AttrValue::Text("x".repeat(edge_agent::store::MAX_EVENT_BYTES)),
    );
    let refused = store.submit(huge, Vec::new());
    assert!(
        matches!(refused, Err(StoreError::EventTooLarge { bytes, max_bytes, .. }) if bytes > max_bytes),
        "{refused:?}"
    );
    assert_eq!(store.submit(event(2, 0), Vec::new()).unwrap().seq, Seq(1));
}

#[test]
fn evidence_that_the_event_does_not_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = helpers::open(dir.path());
    let (mut e, files) = event_with_evidence(1, 0, 100);
    e.evidence.clear();
    assert!(matches!(
        store.submit(e, files),
        Err(StoreError::EvidenceMismatch { .. })
    ));
}

#[test]
fn a_reader_holding_a_snapshot_never_blocks_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let store = helpers::open(dir.path());
    store.submit(event(1, 0), Vec::new()).unwrap();
    let reader = rusqlite::Connection::open(store.db_path()).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let before: i64 = reader
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .unwrap();
    for n in 2..=50 {
        store.submit(event(n, 0), Vec::new()).unwrap();
    }
    let still: i64 = reader
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!((before, still), (1, 1), "the reader keeps its snapshot");
    reader.execute_batch("COMMIT").unwrap();
    let mut own = store.reader().unwrap();
    assert_eq!(own.stats().unwrap().events, 50);
}

/// Quota 450 kB; each event carries 100 kB of evidence. Eviction must take, in order: files of
/// synced events that the hub confirmed (oldest first), synced events (keeping their files that
/// are not confirmed), unconfirmed files of synced events (a loss), and only then unsynced
/// events (a loss); each loss reported by a data-loss event in the same commit.
#[test]
fn eviction_follows_the_declared_order_and_reports_every_loss() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = helpers::options(dir.path());
    options.quota_bytes = 450_000;
    let store = Store::open(options).unwrap();
    let refs: Vec<_> = (1..=8)
        .map(|n| event_with_evidence(n, 0, 100_000).0.evidence[0].sha256)
        .collect();
    let submit = |n: u64| {
        let (e, files) = event_with_evidence(n, 0, 100_000);
        store.submit(e, files).unwrap().seq
    };
    for n in 1..=4 {
        assert_eq!(submit(n), Seq(n));
    }
    store.ack(Seq(2)).unwrap();
    // the hub holds the first picture (of the four, the only one confirmed)
    assert_eq!(store.confirm_evidence(vec![refs[0]]).unwrap(), 1);
    let has = |i: usize| store.has_evidence(&refs[i]).unwrap();
    let present_seqs = || {
        store
            .events_from(Seq(1), 100)
            .unwrap()
            .iter()
            .map(|e| e.seq.0)
            .collect::<Vec<_>>()
    };
    let counts = || {
        let s = store.stats().unwrap();
        (
            s.evicted_evidence_total,
            s.evicted_events_total,
            s.lost_evidence_total,
            s.lost_events_total,
        )
    };

    // 1. the confirmed file of a synced event
    assert_eq!(submit(5), Seq(5));
    assert_eq!((has(0), has(1), has(2)), (false, true, true));
    assert!(!store.evidence_path(&refs[0]).exists());
    assert_eq!(present_seqs(), [1, 2, 3, 4, 5]);
    assert_eq!(counts(), (1, 0, 0, 0));
    // 2. the synced events (their unconfirmed file stays), then 3. that file: lost before
    //    upload, reported in the same commit
    assert_eq!(submit(6), Seq(6));
    assert_eq!(present_seqs(), [3, 4, 5, 6, 7]);
    assert!(!has(1) && !store.evidence_path(&refs[1]).exists());
    assert_eq!(counts(), (2, 2, 1, 0));
    let report = store.events_from(Seq(7), 1).unwrap().remove(0);
    let expected = Catalog::embedded().by_key("device.data_loss").unwrap();
    assert_eq!(report.category, expected.code);
    let attr = |e: &protocol::Event, k: &str| e.attributes.get(k).cloned();
    assert_eq!(
        attr(&report, "reason"),
        Some(AttrValue::Text("quota".into()))
    );
    assert_eq!(attr(&report, "lost_events"), Some(AttrValue::Int(0)));
    assert_eq!(attr(&report, "lost_evidence"), Some(AttrValue::Int(1)));
    assert_eq!(
        attr(&report, "lost_evidence_sha256"),
        Some(AttrValue::Text(refs[1].to_hex()))
    );
    assert_eq!(
        attr(&report, "lost_evidence_seqs"),
        Some(AttrValue::Text("2".into())),
        "named with the event that carried it"
    );
    assert_eq!(
        attr(&report, "lost_evidence_total"),
        Some(AttrValue::Int(1))
    );

    // 4. nothing synced is left: the oldest unsynced event goes (data-loss events last), a
    //    loss reported in the same commit
    assert_eq!(submit(7), Seq(8));
    assert_eq!(present_seqs(), [4, 5, 6, 7, 8, 9]);
    assert!(!has(2) && !store.evidence_path(&refs[2]).exists());
    assert_eq!(counts(), (2, 2, 1, 1));
    let stats = store.stats().unwrap();
    assert!(stats.usage_bytes <= 450_000);

    let loss = store.events_from(Seq(9), 1).unwrap().remove(0);
    assert_eq!(loss.category, expected.code);
    assert_eq!(loss.severity, expected.severity);
    assert_eq!(loss.source.kind, SourceKind::Box);
    assert_eq!(loss.location, helpers::site());
    assert_eq!(loss.grid, helpers::options(dir.path()).grid);
    assert_eq!(
        attr(&loss, "reason"),
        Some(AttrValue::Text("quota".to_owned()))
    );
    assert_eq!(attr(&loss, "lost_events"), Some(AttrValue::Int(1)));
    assert_eq!(attr(&loss, "first_lost_seq"), Some(AttrValue::Int(3)));
    assert_eq!(attr(&loss, "last_lost_seq"), Some(AttrValue::Int(3)));
    assert_eq!(attr(&loss, "lost_events_total"), Some(AttrValue::Int(1)));
    assert_eq!(
        attr(&loss, "lost_evidence"),
        None,
        "the lost event's file is in its loss"
    );
    assert_eq!(
        store
            .pending(10)
            .unwrap()
            .iter()
            .map(|e| e.seq.0)
            .collect::<Vec<_>>(),
        [4, 5, 6, 7, 8, 9],
        "the data-loss events are queued for the hub"
    );
    helpers::assert_evidence_intact(&store);
}

/// Retention deletes a synced event but not its picture while the hub has not confirmed it;
/// the confirmation then removes the picture at once.
#[test]
fn a_picture_outlives_its_expired_event_until_the_hub_confirms_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = helpers::options(dir.path());
    options.retention = std::time::Duration::from_secs(60);
    let store = Store::open(options).unwrap();
    let (e, files) = event_with_evidence(1, 0, 10_000);
    let sha = e.evidence[0].sha256;
    store.submit(e, files).unwrap();
    store.ack(Seq(1)).unwrap();
    assert_eq!(store.unconfirmed_evidence(10).unwrap(), [sha]);
    let later = Timestamp::from_unix_millis(T0_MS + 3_600_000);
    assert_eq!(store.sweep_retention(later).unwrap(), 1);
    assert_eq!(store.stats().unwrap().events, 0);
    assert!(store.has_evidence(&sha).unwrap(), "kept for the upload");
    assert!(store.evidence_path(&sha).exists());
    assert_eq!(store.confirm_evidence(vec![sha]).unwrap(), 1);
    assert!(!store.has_evidence(&sha).unwrap());
    assert!(
        !store.evidence_path(&sha).exists(),
        "no event names it any more"
    );
    let stats = store.stats().unwrap();
    assert_eq!(
        (
            stats.evidence_files,
            stats.usage_bytes,
            stats.lost_evidence_total
        ),
        (0, 0, 0)
    );
    assert!(store.unconfirmed_evidence(10).unwrap().is_empty());
}

#[test]
fn an_event_larger_than_the_quota_is_refused_and_nothing_is_evicted() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = helpers::options(dir.path());
    options.quota_bytes = 50_000;
    let store = Store::open(options).unwrap();
    store.submit(event(1, 0), Vec::new()).unwrap();
    let (big, files) = event_with_evidence(2, 0, 60_000);
    assert!(matches!(
        store.submit(big, files),
        Err(StoreError::TooLarge { .. })
    ));
    let stats = store.stats().unwrap();
    assert_eq!((stats.events, stats.lost_events_total), (1, 0));
}

#[test]
fn retention_deletes_only_synced_events_past_their_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = helpers::options(dir.path());
    options.retention = std::time::Duration::from_secs(3600);
    let store = Store::open(options).unwrap();
    // observed at T0 + n s
    for n in [1, 2, 3, 7200] {
        store.submit(event(n, 0), Vec::new()).unwrap();
    }
    store.ack(Seq(2)).unwrap();
    let now = Timestamp::from_unix_millis(T0_MS + 7200 * 1000);
    assert_eq!(store.sweep_retention(now).unwrap(), 2);
    let left: Vec<u64> = store
        .events_from(Seq(1), 10)
        .unwrap()
        .iter()
        .map(|e| e.seq.0)
        .collect();
    assert_eq!(left, [3, 4], "unsynced seq 3 stays although it is old");
    assert_eq!(store.stats().unwrap().expired_events_total, 2);
}

#[test]
fn a_corrupt_database_is_reported_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.db");
    let junk = helpers::noise(8192, 7);
    std::fs::write(&db, &junk).unwrap();
    let listing = |p: &std::path::Path| {
        let mut v: Vec<_> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    };
    let before = listing(dir.path());
    let err = Store::open(helpers::options(dir.path())).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert_eq!(std::fs::read(&db).unwrap(), junk);
    assert_eq!(listing(dir.path()), before, "nothing created beside it");
}

#[test]
fn a_truncated_store_fails_its_integrity_check_and_is_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let store = helpers::open(dir.path());
    for n in 1..=300 {
        let (e, files) = event_with_evidence(n, 0, 10);
        store.submit(e, files).unwrap();
    }
    drop(store);
    let db = dir.path().join("events.db");
    // Fold the WAL in, then cut the file in the middle of its pages.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    let bytes = std::fs::read(&db).unwrap();
    assert!(bytes.len() > 8 * 4096, "{} bytes", bytes.len());
    let mut damaged = bytes.clone();
    for b in &mut damaged[3 * 4096..5 * 4096] {
        *b = 0x5a;
    }
    std::fs::write(&db, &damaged).unwrap();
    let err = Store::open(helpers::options(dir.path())).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert_eq!(std::fs::read(&db).unwrap(), damaged);
}

#[test]
fn a_database_of_another_application_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE songs (title TEXT)")
        .unwrap();
    let before = std::fs::read(&db).unwrap();
    assert!(matches!(
        Store::open(helpers::options(dir.path())),
        Err(StoreError::Foreign { .. })
    ));
    assert_eq!(std::fs::read(&db).unwrap(), before);
}

#[test]
fn start_up_removes_half_written_and_orphan_evidence_but_keeps_named_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = helpers::open(dir.path());
    let (e, files) = event_with_evidence(1, 0, 500);
    let kept = e.evidence[0].sha256;
    store.submit(e, files).unwrap();
    drop(store);
    let evidence = dir.path().join("evidence");
    let orphan = evidence.join("ab".repeat(32));
    std::fs::write(&orphan, b"never committed").unwrap();
    let staged = evidence.join("staging").join("cd.part");
    std::fs::write(&staged, b"half written").unwrap();
    let unrelated = evidence.join("README");
    std::fs::write(&unrelated, b"not ours to judge").unwrap();

    let store = helpers::open(dir.path());
    let report = store.open_report();
    assert_eq!(
        (
            report.orphans_removed,
            report.staged_removed,
            report.missing_evidence
        ),
        (1, 1, 0)
    );
    assert!(!orphan.exists() && !staged.exists());
    assert!(unrelated.exists());
    assert!(store.evidence_path(&kept).exists());
    helpers::assert_evidence_intact(&store);
}

#[test]
fn a_missing_evidence_file_is_reported_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = helpers::open(dir.path());
    let (e, files) = event_with_evidence(1, 0, 500);
    let sha = e.evidence[0].sha256;
    store.submit(e, files).unwrap();
    let path = store.evidence_path(&sha);
    drop(store);
    std::fs::remove_file(path).unwrap();
    let store = helpers::open(dir.path());
    assert_eq!(store.open_report().missing_evidence, 1);
    assert!(!store.has_evidence(&sha).unwrap());
    let events = store.events_from(Seq(1), 10).unwrap();
    assert_eq!(events[0].seq, Seq(1), "the event itself stays");
    // The hub never had the file: it learns that it will not arrive.
    let stats = store.stats().unwrap();
    assert_eq!((stats.events, stats.lost_evidence_total), (2, 1));
    let report = &events[1];
    let loss = Catalog::embedded().by_key("device.data_loss").unwrap();
    assert_eq!(report.category, loss.code);
    let attr = |k: &str| report.attributes.get(k).cloned();
    assert_eq!(attr("reason"), Some(AttrValue::Text("missing".into())));
    assert_eq!(attr("lost_evidence"), Some(AttrValue::Int(1)));
    assert_eq!(
        attr("lost_evidence_sha256"),
        Some(AttrValue::Text(sha.to_hex()))
    );
    assert_eq!(
        attr("lost_evidence_seqs"),
        Some(AttrValue::Text("1".into()))
    );
    assert_eq!(attr("lost_events"), Some(AttrValue::Int(0)));
    assert_eq!(attr("first_lost_seq"), None);
}

/// A missing file the hub had confirmed is no loss: nothing is reported.
#[test]
fn a_missing_file_the_hub_confirmed_is_not_reported_lost() {
    let dir = tempfile::tempdir().unwrap();
    let store = helpers::open(dir.path());
    let (e, files) = event_with_evidence(1, 0, 500);
    let sha = e.evidence[0].sha256;
    store.submit(e, files).unwrap();
    store.ack(Seq(1)).unwrap();
    assert_eq!(store.confirm_evidence(vec![sha]).unwrap(), 1);
    let path = store.evidence_path(&sha);
    drop(store);
    std::fs::remove_file(path).unwrap();
    let store = helpers::open(dir.path());
    assert_eq!(store.open_report().missing_evidence, 1);
    let stats = store.stats().unwrap();
    assert_eq!((stats.events, stats.lost_evidence_total), (1, 0));
}

#[test]
fn closing_the_last_handle_commits_everything_queued() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(helpers::open(dir.path()));
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let store = Store::clone(&store);
            std::thread::spawn(move || {
                for n in 0..25 {
                    store.submit(event(n, t), Vec::new()).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    Arc::try_unwrap(store).unwrap().close();
    assert_eq!(helpers::open(dir.path()).stats().unwrap().last_seq, 100);
}

/// `stats` keeps its row counts from one call to the next and counts only what changed; it must
/// agree with a reader counting afresh after new events, acks, retention and eviction.
#[test]
fn stats_counts_stay_exact_as_events_arrive_are_acked_expire_and_are_evicted() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = helpers::options(dir.path());
    options.retention = std::time::Duration::from_secs(3600);
    options.quota_bytes = 450_000;
    let store = Store::open(options).unwrap();
    let agree = |step: &str| {
        let kept = store.stats().unwrap();
        let fresh = store.reader().unwrap().stats().unwrap();
        assert_eq!(kept, fresh, "after {step}");
        (kept.events, kept.unsynced_events)
    };
    assert_eq!(agree("opening"), (0, 0));
    for n in 1..=5 {
        store.submit(event(n, 0), Vec::new()).unwrap();
    }
    assert_eq!(agree("new events"), (5, 5));
    store.ack(Seq(3)).unwrap();
    assert_eq!(agree("an ack"), (5, 2));
    for n in [6, 7200] {
        store.submit(event(n, 0), Vec::new()).unwrap();
    }
    store.ack(Seq(6)).unwrap();
    assert_eq!(agree("events and an ack past them"), (7, 1));
    let now = Timestamp::from_unix_millis(T0_MS + 7200 * 1000);
    assert_eq!(store.sweep_retention(now).unwrap(), 6);
    assert_eq!(agree("retention"), (1, 1));
    // Big events, two of them synced, then far more than the quota holds: eviction takes the
    // synced events' evidence, then the synced events, and only then unsynced ones (each loss
    // reported by a data-loss event).
    for n in 1..=2 {
        let (e, files) = event_with_evidence(100 + n, 0, 100_000);
        store.submit(e, files).unwrap();
    }
    let synced = store.stats().unwrap().last_seq;
    store.ack(Seq(synced)).unwrap();
    assert_eq!(agree("big synced events"), (3, 0));
    for n in 3..=8 {
        let (e, files) = event_with_evidence(100 + n, 0, 100_000);
        store.submit(e, files).unwrap();
    }
    let (events, unsynced) = agree("eviction");
    let stats = store.stats().unwrap();
    assert_eq!(
        (stats.evicted_evidence_total, stats.evicted_events_total),
        (2, 3),
        "the synced events' files and rows went first: {stats:?}"
    );
    assert!(stats.lost_events_total > 0, "{stats:?}");
    assert_eq!(events, unsynced, "nothing synced is left");
}

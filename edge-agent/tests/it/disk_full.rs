//! A full disk: the store reports a clear error, evicts by its policy (counted), keeps running
//! and stays consistent; once the disk has room again, the lowered quota is raised.
//!
//! The data folder is a 4 MiB tmpfs mounted for the test (the test machines run as root in a
//! sandbox that allows it). Where `mount` is refused, the test says so and exercises the same
//! policy through a quota smaller than the data instead.

use std::path::{Path, PathBuf};
use std::process::Command;

use edge_agent::store::{Store, StoreError};
use protocol::{AttrValue, Catalog, Seq};

use crate::helpers::{self, event_with_evidence};

#[test]
fn a_full_disk_gives_a_clear_error_and_counted_evictions_and_the_store_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let mount = SmallFs::mount(&dir.path().join("data"), 4);
    let data = dir.path().join("data");
    let mut options = helpers::options(&data);
    if mount.is_none() {
        eprintln!("mount refused here: using a quota smaller than the data instead");
        options.quota_bytes = 4 << 20;
    } else {
        options.quota_bytes = 1 << 30; // far above the disk: the disk is the limit
    }
    let store = Store::open(options).unwrap();

    // 20 events of 64 KiB evidence, half of them synced.
    let mut n = 0;
    let mut accepted = Vec::new();
    for _ in 0..20 {
        n += 1;
        let (e, files) = event_with_evidence(n, 1, 64 << 10);
        accepted.push(store.submit(e, files).unwrap().seq);
    }
    store.ack(Seq(10)).unwrap();

    // Keep going well past the disk's size: errors must be DiskFull, and the store must
    // recover by itself (through eviction) and accept events again.
    let mut disk_full_errors = 0;
    let mut accepted_after_full = 0;
    for _ in 0..150 {
        n += 1;
        let (e, files) = event_with_evidence(n, 1, 64 << 10);
        match store.submit(e, files) {
            Ok(c) => {
                accepted.push(c.seq);
                if disk_full_errors > 0 {
                    accepted_after_full += 1;
                }
            }
            Err(StoreError::DiskFull) => disk_full_errors += 1,
            Err(other) => panic!("unexpected error on a full disk: {other:?}"),
        }
    }
    // A barrier: the writer handles requests in order, relieves a full disk reported by a
    // refused submit before its next request, and replies after committing; so the eviction
    // that the last refusal caused (and its data-loss event) is committed before this ack
    // returns, and the snapshot below is final.
    store.ack(Seq(10)).unwrap();
    let stats = store.stats().unwrap();
    if mount.is_some() {
        assert!(disk_full_errors > 0, "the 4 MiB disk never filled up");
        assert!(store.disk_full_total() > 0);
        assert!(
            store.disk_reserve_bytes() > 0,
            "the disk reserve was not allocated again"
        );
    }
    if mount.is_none() {
        accepted_after_full = accepted.len() - 20;
    }
    assert!(
        accepted_after_full >= 50,
        "the store did not recover: {accepted_after_full} accepted after the first error"
    );
    assert!(
        stats.evicted_evidence_total >= 10,
        "synced evidence goes first: {stats:?}"
    );
    assert!(
        stats.lost_events_total > 0,
        "unsynced events had to go: {stats:?}"
    );

    // Every accepted event is either still held, was synced, or is covered by a data-loss
    // event: nothing vanished silently.
    let events = store.events_from(Seq(1), usize::MAX).unwrap();
    let held: std::collections::BTreeSet<u64> = events.iter().map(|e| e.seq.0).collect();
    let loss_code = &Catalog::embedded().by_key("device.data_loss").unwrap().code;
    let mut reported = Vec::new();
    for e in events.iter().filter(|e| &e.category == loss_code) {
        let int = |k: &str| match e.attributes.get(k) {
            Some(AttrValue::Int(v)) => Some(*v as u64),
            None => None,
            other => panic!("data-loss attribute {k}: {other:?}"),
        };
        // a report of lost pictures alone names no range of events
        if let (Some(first), Some(last)) = (int("first_lost_seq"), int("last_lost_seq")) {
            reported.push(first..=last);
        }
    }
    for seq in accepted {
        let covered = held.contains(&seq.0)
            || seq.0 <= stats.acked_seq
            || reported.iter().any(|r| r.contains(&seq.0));
        assert!(covered, "accepted seq {seq} vanished without a report");
    }
    helpers::assert_evidence_intact(&store);

    // The disk grows (space freed by someone else): the next periodic sweep raises the quota
    // that the full disk lowered, and the store holds more again without losing anything.
    if let Some(fs) = &mount {
        fs.resize(64);
        store
            .sweep_retention(protocol::Timestamp::from_unix_millis(helpers::T0_MS))
            .unwrap();
        for _ in 0..40 {
            n += 1;
            let (e, files) = event_with_evidence(n, 1, 64 << 10);
            store.submit(e, files).unwrap();
        }
        let grown = store.stats().unwrap();
        assert_eq!(
            grown.lost_events_total, stats.lost_events_total,
            "the lowered quota was not raised: {grown:?}"
        );
        assert!(
            grown.usage_bytes > stats.usage_bytes + (2 << 20),
            "{grown:?}"
        );
    }
    let stats = store.stats().unwrap();
    drop(store);

    // Consistent after a restart: the start-up integrity check passes and counts agree.
    let store = Store::open(helpers::options(&data)).unwrap();
    let again = store.stats().unwrap();
    assert_eq!(again.last_seq, stats.last_seq);
    assert_eq!(again.lost_events_total, stats.lost_events_total);
    helpers::assert_evidence_intact(&store);
    drop(store);
    drop(mount);
}

/// A disk filled to the last byte by another program, over a store whose WAL still holds
/// uncheckpointed pages: whatever write is refused with `DiskFull`, the writer frees room before
/// it takes the next request, so the next write succeeds. (Freeing room needs room itself:
/// checkpointing the WAL may grow the database file and the eviction is a transaction; a store
/// without room to spare stays wedged until someone deletes files by hand.)
#[test]
fn after_a_refused_write_on_a_full_disk_the_next_write_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let Some(_mount) = SmallFs::mount(&data, 8) else {
        eprintln!("mount refused here: a full disk cannot be made; nothing checked");
        return;
    };
    let mut options = helpers::options(&data);
    options.quota_bytes = 1 << 30; // far above the disk: the disk is the limit
    let store = Store::open(options).unwrap();

    // 24 events with 64 KiB pictures, all synced: room the store may take back.
    let mut n = 0;
    for _ in 0..24 {
        n += 1;
        let (e, files) = event_with_evidence(n, 3, 64 << 10);
        store.submit(e, files).unwrap();
    }
    store.ack(Seq(n)).unwrap();

    // An event without a picture, on a disk another program has filled: its commit may find
    // room in the WAL or be refused; a refusal is followed by a write that succeeds.
    let reserve = store.disk_reserve_bytes();
    assert!(reserve > 0, "no disk reserve at start");
    let filler = Filler::fill(&data.join("filler"));
    n += 1;
    if let Err(e) = store.submit(helpers::event(n, 3), Vec::new()) {
        assert!(matches!(e, StoreError::DiskFull), "{e:?}");
        n += 1;
        store
            .submit(helpers::event(n, 3), Vec::new())
            .expect("the write after a refused commit");
    }
    drop(filler);

    // A picture on a full disk cannot even be staged: refused at once. The writer frees room
    // before its next request: the ack behind it and the next picture both succeed.
    let filler = Filler::fill(&data.join("filler"));
    let reliefs = store.disk_full_total();
    n += 1;
    let (e, files) = event_with_evidence(n, 3, 64 << 10);
    let refused = store.submit(e, files);
    assert!(matches!(refused, Err(StoreError::DiskFull)), "{refused:?}");
    store.ack(Seq(24)).expect("the ack after a refused picture");
    assert_eq!(
        store.disk_full_total(),
        reliefs + 1,
        "one relief for one refusal"
    );
    n += 1;
    let (e, files) = event_with_evidence(n, 3, 64 << 10);
    store
        .submit(e, files)
        .expect("the picture after a refused one");
    assert_eq!(
        store.disk_reserve_bytes(),
        reserve,
        "the reserve is held again"
    );
    drop(filler);

    let stats = store.stats().unwrap();
    assert!(stats.evicted_evidence_total > 0, "{stats:?}");
    assert_eq!(
        stats.lost_events_total, 0,
        "synced pictures were enough: {stats:?}"
    );
    helpers::assert_evidence_intact(&store);
}

/// A file that takes every free byte of its file system, removed on drop.
struct Filler {
    path: PathBuf,
}

impl Filler {
    fn fill(path: &Path) -> Filler {
        use std::io::Write;
        let mut f = std::fs::File::create(path).unwrap();
        for chunk in [64 << 10, 4 << 10, 512, 1] {
            let bytes = vec![0xa5u8; chunk];
            while f.write_all(&bytes).is_ok() {}
        }
        let _ = f.sync_all();
        assert_eq!(
            edge_agent::store::disk_free_bytes(path),
            Some(0),
            "the filler left room"
        );
        Filler {
            path: path.to_owned(),
        }
    }
}

impl Drop for Filler {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A size-limited tmpfs, unmounted on drop.
struct SmallFs {
    path: PathBuf,
}

impl SmallFs {
    fn mount(path: &Path, mib: u32) -> Option<SmallFs> {
        std::fs::create_dir_all(path).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(path)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallFs {
            path: path.to_owned(),
        })
    }
}

impl SmallFs {
    /// Grows (or shrinks) the mounted file system.
    fn resize(&self, mib: u32) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "remounting {} failed", self.path.display());
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

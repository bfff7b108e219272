//! Store throughput against the raw speed of the data folder's disk, measured in the same run.
//!
//! Prints one table: 4 KiB `write + fsync` per second on the folder's disk, durable single-event
//! commits per second (one submitter), events per second with group commit (many submitters),
//! and the ratio single/raw (goal ≥ 0.8) and grouped events/s (goal ≥ 50 000). The data folder
//! is `GRIDSENSE_BENCH_DIR` if set, else a temporary folder under cargo's target directory.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use edge_agent::store::{Store, StoreOptions};
use protocol::{
    AttrValue, CategoryCode, Crs, Event, EventId, Location, Seq, Severity, Source, SourceId,
    SourceKind, Timestamp,
};

const PHASE: Duration = Duration::from_secs(3);
const SUBMITTERS: u64 = 64;

fn main() -> anyhow::Result<()> {
    let base = std::env::var_os("GRIDSENSE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&base)?;
    let dir = tempfile::tempdir_in(&base)?;

    let raw = raw_fsync_rate(dir.path())?;
    let single = submit_rate(&dir.path().join("single"), 1)?;
    let grouped = submit_rate(&dir.path().join("grouped"), SUBMITTERS)?;

    println!("store benchmark (data folder {})", base.display());
    println!("| measure                                   |        per s | goal        |");
    println!("|-------------------------------------------|-------------:|-------------|");
    println!("| raw 4 KiB write + fsync                   | {raw:>12.0} |             |");
    println!("| durable single-event commits (1 submitter)| {single:>12.0} |             |");
    println!(
        "| grouped events ({SUBMITTERS} submitters)            | {grouped:>12.0} | >= 50000    |"
    );
    println!(
        "| ratio single / raw                        | {:>12.2} | >= 0.80     |",
        single / raw
    );
    Ok(())
}

/// Appends 4 KiB and fsyncs, for one phase; returns operations per second.
fn raw_fsync_rate(dir: &Path) -> anyhow::Result<f64> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("raw.bin"))?;
    let block = vec![0xa5u8; 4096];
    let start = Instant::now();
    let mut ops = 0u64;
    while start.elapsed() < PHASE {
        file.write_all(&block)?;
        file.sync_all()?;
        ops += 1;
    }
    Ok(ops as f64 / start.elapsed().as_secs_f64())
}

/// Events per second committed by `submitters` threads, each waiting for its commit.
fn submit_rate(dir: &Path, submitters: u64) -> anyhow::Result<f64> {
    let location = Location {
        lat: 39.9,
        lon: 116.4,
        crs: Crs::Wgs84,
    };
    let store = Store::open(StoreOptions::new(dir, location))?;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..submitters)
        .map(|t| {
            let store = store.clone();
            let stop = Arc::clone(&stop);
            let done = Arc::clone(&done);
            std::thread::spawn(move || -> anyhow::Result<()> {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    store.submit(event(t, n)?, Vec::new())?;
                    done.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
                Ok(())
            })
        })
        .collect();
    let start = Instant::now();
    let begin = done.load(Ordering::Relaxed);
    while start.elapsed() < PHASE {
        std::thread::park_timeout(PHASE - start.elapsed().min(PHASE));
    }
    let events = done.load(Ordering::Relaxed) - begin;
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("submitter panicked"))??;
    }
    Ok(events as f64 / elapsed)
}

fn event(thread: u64, n: u64) -> anyhow::Result<Event> {
    let mut random = [0u8; 10];
    random[..8].copy_from_slice(&n.to_be_bytes());
    random[8..].copy_from_slice(&(thread as u16).to_be_bytes());
    let now = 1_767_225_600_000 + n as i64;
    Ok(Event {
        id: EventId::v7(now as u64, random),
        seq: Seq(0),
        source: Source {
            kind: SourceKind::Camera,
            id: SourceId::parse("cam-bench")?,
        },
        category: CategoryCode::parse("0404")?,
        severity: Severity::Medium,
        observed_at: Timestamp::from_unix_millis(now),
        location: Location {
            lat: 39.9,
            lon: 116.4,
            crs: Crs::Wgs84,
        },
        grid: None,
        attributes: BTreeMap::from([
            ("label".to_owned(), AttrValue::Text("car".to_owned())),
            ("score".to_owned(), AttrValue::Float(0.91)),
            ("track".to_owned(), AttrValue::Int(n as i64)),
        ]),
        evidence: Vec::new(),
    })
}

//! Point → cell over a generated grid of 100 000 cells, the index against a naive scan in the same
//! run, and events/s through grid match + case creation with SQLite commits.
//!
//! Run with `cargo bench -p hub --bench grid`. Prints a table; no external harness.
//!
//! Lookups per second are given twice: per wall-clock second, and per second the benchmark
//! thread actually ran on a core (`/proc/thread-self/schedstat`), which is the "per core" figure
//! and stays meaningful when other work shares the machine. The load average is printed beside.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use hub::cases::{CaseService, CaseSettings};
use hub::db::Db;
use hub::duties::{DepartmentId, DutyList, WorkCalendar};
use hub::grid::sample::generated_grid;
use protocol::{
    BoxId, CategoryCode, Event, EventId, Location, Seq, Severity, Source, SourceId, SourceKind,
    Timestamp,
};

const CELL_DEG: f64 = 0.0005;

fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let grid = Arc::new(generated_grid(40, CELL_DEG, 5.0));
    let cells = grid.cells().len();
    eprintln!(
        "generated {cells} cells in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let (w, h) = (400.0 * CELL_DEG, 250.0 * CELL_DEG);
    let mut rng = fastrand::Rng::with_seed(7);
    let points: Vec<(f64, f64)> = (0..200_000)
        .map(|_| (30.0 + rng.f64() * h, 120.0 + rng.f64() * w))
        .collect();

    // latency: each lookup timed on its own
    let mut times = Vec::with_capacity(points.len());
    let mut found = 0usize;
    for &(lat, lon) in &points {
        let t = Instant::now();
        found += usize::from(std::hint::black_box(grid.locate(lat, lon)).is_some());
        times.push(t.elapsed().as_nanos() as u64);
    }
    // throughput: the same lookups back to back, without the clock reads between them
    let cpu = thread_cpu_ns();
    let all = Instant::now();
    for &(lat, lon) in &points {
        std::hint::black_box(grid.locate(lat, lon));
    }
    let index_rate = points.len() as f64 / all.elapsed().as_secs_f64();
    let index_cpu_rate = per_cpu_second(points.len(), cpu);
    let index_p50 = percentile(&mut times, 50);
    let index_p99 = percentile(&mut times, 99);
    anyhow::ensure!(found == points.len(), "every point lies in a cell");

    let scan_points = &points[..1000];
    let mut scan_times = Vec::with_capacity(scan_points.len());
    let cpu = thread_cpu_ns();
    let all = Instant::now();
    for &(lat, lon) in scan_points {
        let t = Instant::now();
        std::hint::black_box(grid.locate_by_scan(lat, lon));
        scan_times.push(t.elapsed().as_nanos() as u64);
    }
    let scan_rate = scan_points.len() as f64 / all.elapsed().as_secs_f64();
    let scan_cpu_rate = per_cpu_second(scan_points.len(), cpu);
    for &(lat, lon) in scan_points {
        let indexed = grid.locate(lat, lon).map(|l| &l.cell.code);
        let scanned = grid.locate_by_scan(lat, lon).map(|c| &c.code);
        anyhow::ensure!(scanned == indexed, "index and scan agree");
    }
    let scan_p50 = percentile(&mut scan_times, 50);

    // events through grid match + duty routing + case creation, one SQLite commit each
    let dir = tempfile::tempdir()?;
    let depts: HashSet<DepartmentId> = ["a", "b", "c"]
        .into_iter()
        .map(DepartmentId::parse)
        .collect::<Result<_, _>>()?;
    let duties = DutyList::from_csv_str(
        "category,community_department,street_department,district_department,time_limit,registration\n0102,a,b,c,4h,auto\n",
        protocol::Catalog::embedded(),
        &depts,
    )?;
    let calendar = WorkCalendar::from_toml_str(
        "utc_offset_minutes = 480\nworking_hours = [\"08:30-12:00\", \"13:30-17:30\"]\n",
    )?;
    let svc = CaseService::new(
        Db::open(&dir.path().join("bench.db"))?,
        grid.clone(),
        duties,
        calendar,
        depts,
        CaseSettings::default(),
        1024,
    );
    let box_id = BoxId::parse("bench-box")?;
    let event = |i: u64| -> anyhow::Result<Event> {
        let (lat, lon) = points[i as usize % points.len()];
        Ok(Event {
            id: EventId::v7(1_790_000_000_000 + i, [i as u8; 10]),
            seq: Seq(i + 1),
            source: Source {
                kind: SourceKind::Camera,
                id: SourceId::parse("cam")?,
            },
            category: CategoryCode::parse("0102")?,
            severity: Severity::Medium,
            observed_at: Timestamp::from_unix_millis(1_790_000_000_000 + i as i64 * 1000),
            location: Location {
                lat,
                lon,
                crs: protocol::Crs::Wgs84,
            },
            grid: None,
            attributes: Default::default(),
            evidence: vec![],
        })
    };
    let now = Timestamp::from_unix_millis(1_790_000_000_000);
    // one event per commit (the API's Open311 path)
    let n_events = 2000u64;
    let all = Instant::now();
    for i in 0..n_events {
        svc.ingest(&box_id, &event(i)?, now)?;
    }
    let events_rate = n_events as f64 / all.elapsed().as_secs_f64();
    // the ingest's hand-off: 256 events per commit
    let n_batched = 50_000u64;
    let all = Instant::now();
    for chunk in (n_events..n_events + n_batched)
        .collect::<Vec<_>>()
        .chunks(256)
    {
        let batch = chunk
            .iter()
            .map(|&i| Ok((box_id.clone(), event(i)?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        svc.ingest_many(&batch, now)?;
    }
    let batched_rate = n_batched as f64 / all.elapsed().as_secs_f64();

    println!(
        "load average while measuring: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "| measurement ({cells} cells)                  | p50 ns/lookup | p99 ns | per second | per CPU-second |"
    );
    println!(
        "|-----------------------------------------------|--------------:|-------:|-----------:|---------------:|"
    );
    println!(
        "| point -> cell, index ({} lookups)          | {index_p50:>13} | {index_p99:>6} | {index_rate:>10.0} | {index_cpu_rate:>14.0} |",
        points.len()
    );
    println!(
        "| point -> cell, naive scan ({} lookups)       | {scan_p50:>13} |        | {scan_rate:>10.0} | {scan_cpu_rate:>14.0} |",
        scan_points.len()
    );
    println!(
        "| events: match + case + SQLite commit ({n_events}) |               |        | {events_rate:>10.0} |                |"
    );
    println!(
        "| events: the same, 256 per commit ({n_batched})  |               |        | {batched_rate:>10.0} |                |"
    );
    println!(
        "goal: p50 <= 1000 ns and >= 1,000,000 lookups per CPU-second; index over scan at p50: {:.0}x",
        scan_p50 as f64 / index_p50.max(1) as f64
    );
    Ok(())
}

/// Nanoseconds this thread has run on a CPU (`/proc/thread-self/schedstat`, first field).
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `n` operations over the CPU time used since `start` (0 when the kernel does not say).
fn per_cpu_second(n: usize, start: Option<u64>) -> f64 {
    match (start, thread_cpu_ns()) {
        (Some(a), Some(b)) if b > a => n as f64 / ((b - a) as f64 / 1e9),
        _ => 0.0,
    }
}

fn percentile(v: &mut [u64], p: usize) -> u64 {
    v.sort_unstable();
    v[(v.len() - 1) * p / 100]
}

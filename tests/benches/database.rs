//! The hub's case database under ingest, each figure beside its anchor in the same run:
//!
//! - events turned into cases (grid match, duty routing, merge look-up, case, audit trail,
//!   outbox) through the case service, 256 events per commit as the ingest hands them on: on
//!   SQLite (the anchor: one hub process as today), on PostgreSQL (a private cluster on this
//!   machine) with one service, and with two services on separate pools from two threads (two
//!   hub processes sharing the database, as far as one process can show it);
//! - the ceiling: the database's own insert rate for the same event rows (the events table
//!   only, same transaction size);
//! - the case list (`GET /cases`' query, 100 a page by cursor) p50/p99 over what was stored;
//! - the case list at district scale: the stored cases copied up to `DB_BENCH_LIST_CASES`
//!   (default 1,000,000), then pages from random cursors, unfiltered, by state and by
//!   department, on both engines.
//!
//! `cargo bench -p e2e --bench database`; `DB_BENCH_EVENTS` (default 20000) events per row.
//! Prints a table; the machine's load is printed too (others may share it: compare ratios).
//!
//! Measured (release, this 2-vCPU VM, load about 1.5, PostgreSQL 15 on the same machine):
//!
//! | 20,000 events, 256 per commit | events/s to cases | of the insert ceiling | vs SQLite | case list p50 / p99 ms |
//! |---|---:|---:|---:|---:|
//! | SQLite (anchor) | 17,449 | 0.11 (165,669/s) | 1.00 | 0.15 / 0.52 |
//! | PostgreSQL, one service | 1,261 | 0.15 (8,624/s) | 0.07 | 0.94 / 1.32 |
//! | PostgreSQL, two services | 1,399 | 0.16 | 0.08 | |
//!
//! A later run (release, load about 11 from other work on the VM), with the case list at scale:
//!
//! | 20,000 events | events/s to cases | of the insert ceiling | vs SQLite |
//! |---|---:|---:|---:|
//! | SQLite (anchor) | 24,566 | 0.11 (231,639/s) | 1.00 |
//! | PostgreSQL, one service | 1,831 | 0.12 (15,513/s) | 0.07 |
//! | PostgreSQL, two services | 3,435 | 0.22 | 0.14 |
//!
//! | 1,000,000 cases, pages of 100 from random cursors | SQLite p50 / p99 ms | PostgreSQL p50 / p99 ms |
//! |---|---:|---:|
//! | all cases | 0.15 / 0.28 | 0.77 / 0.97 |
//! | dispatched only | 0.13 / 0.27 | 0.76 / 0.90 |
//! | one department's | 0.21 / 0.40 | 0.77 / 1.16 |
//!
//! With a batch's event rows stored in one statement (the next run, load about 1.7, its ceiling
//! 11,013/s): PostgreSQL one service 1,986 events/s (0.18 of the ceiling, from 0.12), two
//! services 2,699 (0.25, from 0.22); SQLite 24,042.
//!
//! PostgreSQL before statements were kept prepared per connection: 277 events/s; before a new
//! case was stored, linked and given its transitions in two statements instead of six: 669.
//! Each statement is still a round trip with the synchronous client (five for an event that
//! opens a case): the batch's statements merged (multi-row inserts) would come nearer the goal.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use e2e::postgres::Postgres;
use hub::cases::db::{CasePageQuery, Db, DbError};
use hub::cases::{CaseService, CaseSettings};
use hub::duties::{DepartmentId, DutyList, WorkCalendar};
use hub::grid::Grid;
use hub::grid::sample::generated_grid;
use hub::storage::{DatabaseUrl, Engine, PoolSettings, Sql};
use protocol::{
    BoxId, CategoryCode, Event, EventId, Location, Seq, Severity, Source, SourceId, SourceKind,
    Timestamp,
};

const CELL_DEG: f64 = 0.0005;
const BATCH: usize = 256;

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("DB_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let grid = Arc::new(generated_grid(10, CELL_DEG, 5.0));
    let events = events(n)?;
    let pg = Postgres::start()?;
    let load_before = load();
    let dir = tempfile::tempdir()?;

    let sqlite = service(Db::open(&dir.path().join("bench.db"))?, &grid)?;
    let sqlite_rate = ingest(&[&sqlite], &events)?;
    let (sqlite_p50, sqlite_p99) = page_latency(&sqlite)?;

    let one = service(postgres(&pg, "one")?, &grid)?;
    let pg_rate = ingest(&[&one], &events)?;
    let (pg_p50, pg_p99) = page_latency(&one)?;

    pg.create_db("two")?;
    let url = pg.url("two");
    let two_a = service(connect(&url)?, &grid)?;
    let two_b = service(connect(&url)?, &grid)?;
    let pg_two_rate = ingest(&[&two_a, &two_b], &events)?;

    // the case list at district scale: the stored cases copied up to `list_cases`
    let list_cases: i64 = std::env::var("DB_BENCH_LIST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let sqlite_engine = Engine::open_sqlite(&dir.path().join("bench.db"))?;
    let sqlite_lists = list_at_scale(&sqlite, &sqlite_engine, list_cases, "SQLite")?;
    let pg_engine = Engine::connect_postgres(&pg.url("one"), PoolSettings::default())?;
    let pg_lists = list_at_scale(&one, &pg_engine, list_cases, "PostgreSQL")?;

    let raw = postgres(&pg, "raw")?;
    let ceiling = raw_inserts(&raw, &events)?;
    let raw_sqlite = Db::open(&dir.path().join("raw.db"))?;
    let sqlite_ceiling = raw_inserts(&raw_sqlite, &events)?;

    println!("load average before: {load_before}; after: {}", load());
    println!(
        "| {n} events, {BATCH} per commit | events/s to cases | of the engine's insert ceiling | vs SQLite | case list p50 / p99 ms |"
    );
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| SQLite, one process (anchor) | {sqlite_rate:.0} | {:.2} ({sqlite_ceiling:.0}/s) | 1.00 | {sqlite_p50:.2} / {sqlite_p99:.2} |",
        sqlite_rate / sqlite_ceiling
    );
    println!(
        "| PostgreSQL, one service | {pg_rate:.0} | {:.2} ({ceiling:.0}/s) | {:.2} | {pg_p50:.2} / {pg_p99:.2} |",
        pg_rate / ceiling,
        pg_rate / sqlite_rate
    );
    println!(
        "| PostgreSQL, two services on separate pools | {pg_two_rate:.0} | {:.2} | {:.2} | |",
        pg_two_rate / ceiling,
        pg_two_rate / sqlite_rate
    );
    println!("goal (issue #19, with QUIC and two processes): >= 10,000 events/s to cases");
    println!();
    println!(
        "| case list, {list_cases} cases stored, 100 a page from a random cursor | SQLite p50 / p99 ms | PostgreSQL p50 / p99 ms | PostgreSQL p99 vs SQLite |"
    );
    println!("|---|---:|---:|---:|");
    for ((name, s50, s99), (_, p50, p99)) in sqlite_lists.iter().zip(&pg_lists) {
        println!(
            "| {name} | {s50:.2} / {s99:.2} | {p50:.2} / {p99:.2} | {:.2} |",
            p99 / s99
        );
    }
    println!("goal (issues #19, #23): API `GET /cases` p99 fast with 1,000,000 cases stored");
    Ok(())
}

/// Copies the cases stored in `engine` (ids kept in the bodies) until it holds `target`, then
/// times pages of the case list as the API asks for them: from random cursors, unfiltered, by
/// state and by department. Returns (query, p50 ms, p99 ms) for each.
fn list_at_scale(
    svc: &CaseService,
    engine: &Engine,
    target: i64,
    name: &str,
) -> anyhow::Result<Vec<(&'static str, f64, f64)>> {
    let count = |sql: &'static str| -> anyhow::Result<i64> {
        Ok(engine
            .atomically(|tx| tx.query_first(&Sql::same(sql), &[], |r| r.int(0)))?
            .unwrap_or(0))
    };
    let (base, base_max) = (
        count("SELECT COUNT(*) FROM cases")?,
        count("SELECT MAX(id) FROM cases")?,
    );
    anyhow::ensure!(base > 0, "no cases to copy");
    let copy = Sql::each(
        "INSERT INTO cases (id, category, state, last_observed_at, escalate_at, lat, lon, body) \
         SELECT id + ?1, category, state, last_observed_at, escalate_at, lat, lon, \
                json_set(body, '$.id', id + ?1) FROM cases WHERE id <= ?2",
        "INSERT INTO cases (id, category, state, last_observed_at, escalate_at, lat, lon, body) \
         SELECT id + $1, category, state, last_observed_at, escalate_at, lat, lon, \
                jsonb_set(body, '{id}', to_jsonb(id + $1)) FROM cases WHERE id <= $2",
    );
    let started = Instant::now();
    let mut held = base;
    let mut k = 1i64;
    while held < target {
        engine.atomically(|tx| tx.execute(&copy, &[(k * base_max).into(), base_max.into()]))?;
        held += base;
        k += 1;
        if k % 10 == 0 {
            eprintln!("{name}: {held} of {target} cases");
        }
    }
    if engine.kind() == hub::storage::EngineKind::Postgres {
        engine.atomically(|tx| tx.execute(&Sql::same("ANALYZE cases"), &[]))?;
    }
    let max = count("SELECT MAX(id) FROM cases")?;
    eprintln!(
        "{name}: {} cases stored in {:.1} s",
        count("SELECT COUNT(*) FROM cases")?,
        started.elapsed().as_secs_f64()
    );
    let mut rng = fastrand::Rng::with_seed(23);
    let queries: [(&'static str, CasePageQuery); 3] = [
        ("all cases", CasePageQuery::default()),
        (
            "dispatched only",
            CasePageQuery {
                states: vec![hub::cases::CaseState::Dispatched],
                ..CasePageQuery::default()
            },
        ),
        (
            "one department's",
            CasePageQuery {
                department: Some("a".into()),
                ..CasePageQuery::default()
            },
        ),
    ];
    let mut out = Vec::new();
    for (label, query) in queries {
        let mut times = Vec::with_capacity(1000);
        for _ in 0..1000 {
            let q = CasePageQuery {
                after: Some(hub::cases::CaseId(rng.i64(0..max))),
                limit: 100,
                ..query.clone()
            };
            let started = Instant::now();
            let (page, _) = svc.cases_page(&q)?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
            std::hint::black_box(page);
        }
        times.sort_by(f64::total_cmp);
        let at = |p: usize| times[(times.len() - 1) * p / 100];
        out.push((label, at(50), at(99)));
    }
    Ok(out)
}

/// Events `0..n` at random points of the grid, one box, a second apart.
fn events(n: usize) -> anyhow::Result<Vec<(BoxId, Event)>> {
    let box_id = BoxId::parse("bench-box")?;
    let mut rng = fastrand::Rng::with_seed(19);
    let (w, h) = (40.0 * CELL_DEG * 10.0, 25.0 * CELL_DEG * 10.0);
    (0..n)
        .map(|i| {
            Ok((
                box_id.clone(),
                Event {
                    id: EventId::v7(1_790_000_000_000 + i as u64, {
                        let mut random = [0u8; 10];
                        random[..8].copy_from_slice(&(i as u64).to_be_bytes());
                        random
                    }),
                    seq: Seq(i as u64 + 1),
                    source: Source {
                        kind: SourceKind::Camera,
                        id: SourceId::parse("cam")?,
                    },
                    category: CategoryCode::parse("0102")?,
                    severity: Severity::Medium,
                    observed_at: Timestamp::from_unix_millis(1_790_000_000_000 + i as i64 * 1000),
                    location: Location {
                        lat: 30.0 + rng.f64() * h,
                        lon: 120.0 + rng.f64() * w,
                        crs: protocol::Crs::Wgs84,
                    },
                    grid: None,
                    attributes: Default::default(),
                    evidence: vec![],
                },
            ))
        })
        .collect()
}

fn service(db: Db, grid: &Arc<Grid>) -> anyhow::Result<CaseService> {
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
    Ok(CaseService::new(
        db,
        grid.clone(),
        duties,
        calendar,
        depts,
        CaseSettings::default(),
        1024,
    ))
}

fn postgres(pg: &Postgres, name: &str) -> anyhow::Result<Db> {
    pg.create_db(name)?;
    connect(&pg.url(name))
}

fn connect(url: &str) -> anyhow::Result<Db> {
    Ok(Db::connect(
        &DatabaseUrl::Postgres(url.to_owned()),
        PoolSettings::default(),
    )?)
}

/// Events per second through `services`, each taking every other batch from a thread of its
/// own.
fn ingest(services: &[&CaseService], events: &[(BoxId, Event)]) -> anyhow::Result<f64> {
    let now = Timestamp::from_unix_millis(1_790_000_000_000);
    let batches: Vec<&[(BoxId, Event)]> = events.chunks(BATCH).collect();
    let started = Instant::now();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let workers: Vec<_> = services
            .iter()
            .enumerate()
            .map(|(k, svc)| {
                let batches = &batches;
                s.spawn(move || -> anyhow::Result<()> {
                    for batch in batches.iter().skip(k).step_by(services.len()) {
                        svc.ingest_many(batch, now)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("an ingest thread panicked"))??;
        }
        Ok(())
    })?;
    Ok(events.len() as f64 / started.elapsed().as_secs_f64())
}

/// The same event rows inserted alone, `BATCH` per transaction: the engine's ceiling.
fn raw_inserts(db: &Db, events: &[(BoxId, Event)]) -> anyhow::Result<f64> {
    let now = Timestamp::from_unix_millis(1_790_000_000_000);
    let started = Instant::now();
    for batch in events.chunks(BATCH) {
        db.atomically(|tx| -> Result<(), DbError> {
            for (box_id, event) in batch {
                tx.insert_event(box_id, event, now)?;
            }
            Ok(())
        })?;
    }
    Ok(events.len() as f64 / started.elapsed().as_secs_f64())
}

/// p50 and p99 in ms of reading every page (100 cases) of the case list by cursor.
fn page_latency(svc: &CaseService) -> anyhow::Result<(f64, f64)> {
    let mut times = Vec::new();
    let mut after = None;
    loop {
        let started = Instant::now();
        let (page, more) = svc.cases_page(&CasePageQuery {
            after,
            limit: 100,
            ..CasePageQuery::default()
        })?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        after = page.last().map(|c| c.id);
        if !more {
            break;
        }
    }
    times.sort_by(f64::total_cmp);
    let at = |p: usize| times[(times.len() - 1) * p / 100];
    Ok((at(50), at(99)))
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

//! Shared test set-up.

use hub::grid::{Cell, Grid, ImportOptions, sample::sample_city_geojson};

/// The sample city, imported with default options (15 m edge distance).
pub(crate) fn sample_grid() -> Grid {
    Grid::from_geojson(
        &sample_city_geojson(),
        &ImportOptions::default(),
        &mut |_, _| {},
    )
    .expect("sample imports")
    .0
}

/// The centre of a rectangular cell, as (lat, lon).
pub(crate) fn cell_centre(cell: &Cell) -> (f64, f64) {
    (
        (cell.shape.min[1] + cell.shape.max[1]) / 2.0,
        (cell.shape.min[0] + cell.shape.max[0]) / 2.0,
    )
}

use std::collections::HashSet;
use std::sync::Arc;

use hub::cases::{CaseService, CaseSettings};
use hub::db::Db;
use hub::duties::{DepartmentId, DutyList, WorkCalendar};
use protocol::{
    BoxId, CategoryCode, Event, EventId, Location, Seq, Severity, Source, SourceId, SourceKind,
    Timestamp,
};

/// Monday 2026-09-28 is a holiday; Saturday 2026-10-10 a make-up working day.
pub(crate) const CALENDAR: &str = r#"
utc_offset_minutes = 480
working_hours = ["08:30-12:00", "13:30-17:30"]
weekend_days = ["saturday", "sunday"]
holidays = ["2026-09-28"]
makeup_workdays = ["2026-10-10"]
"#;

pub(crate) const DUTIES: &str = "\
category,community_department,street_department,district_department,time_limit,registration
environment.exposed_garbage,sanitation-pj,sanitation-gusu,city-management,4h,auto
street_order.illegal_parking,traffic-pj,traffic-gusu,city-management,1d,review
";

pub(crate) const DEPARTMENTS: [&str; 5] = [
    "sanitation-pj",
    "sanitation-gusu",
    "city-management",
    "traffic-pj",
    "traffic-gusu",
];

/// Friday 2026-09-25 16:00 +08:00.
pub(crate) const FRIDAY_4PM: i64 = 1_790_323_200_000;

pub(crate) fn departments() -> HashSet<DepartmentId> {
    DEPARTMENTS
        .iter()
        .map(|d| DepartmentId::parse(*d).unwrap())
        .collect()
}

pub(crate) fn service_with(db: Db) -> CaseService {
    let duties =
        DutyList::from_csv_str(DUTIES, protocol::Catalog::embedded(), &departments()).unwrap();
    CaseService::new(
        db,
        Arc::new(sample_grid()),
        duties,
        WorkCalendar::from_toml_str(CALENDAR).unwrap(),
        departments(),
        CaseSettings {
            merge_radius_m: 50.0,
            merge_window_ms: 10 * 60_000,
            warn_before_ms: 60 * 60_000,
            ..CaseSettings::default()
        },
        64,
    )
}

pub(crate) fn service() -> CaseService {
    service_with(db())
}

/// Runs `f` on a thread of its own and returns what it returns: the service blocks (on
/// PostgreSQL, on the client's own runtime), which a tokio test's thread may not. The hub
/// calls it from `spawn_blocking` likewise.
pub(crate) fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().unwrap())
}

/// A new, empty case database: on the PostgreSQL server named by `GRIDSENSE_TEST_POSTGRES`
/// when the suite runs against one (the `with-postgres` runner of `make test`), else SQLite
/// in memory.
pub(crate) fn db() -> Db {
    match std::env::var("GRIDSENSE_TEST_POSTGRES") {
        Ok(server) if !server.is_empty() => off_runtime(move || {
            let url = hub::storage::create_fresh_database(&server, "it").unwrap();
            Db::connect(
                &hub::storage::DatabaseUrl::Postgres(url),
                hub::storage::PoolSettings::default(),
            )
            .unwrap()
        }),
        _ => Db::open_in_memory().unwrap(),
    }
}

pub(crate) fn box_id() -> BoxId {
    BoxId::parse("box-01").unwrap()
}

pub(crate) fn event(seq: u64, category: &str, lat: f64, lon: f64, observed_at: i64) -> Event {
    Event {
        id: EventId::v7(observed_at as u64, [seq as u8; 10]),
        seq: Seq(seq),
        source: Source {
            kind: SourceKind::Camera,
            id: SourceId::parse("cam-1").unwrap(),
        },
        category: CategoryCode::parse(category).unwrap(),
        severity: Severity::Medium,
        observed_at: Timestamp::from_unix_millis(observed_at),
        location: Location {
            lat,
            lon,
            crs: protocol::Crs::Wgs84,
        },
        grid: None,
        attributes: Default::default(),
        evidence: vec![],
    }
}

/// Metres north of a point, in degrees of latitude.
pub(crate) fn north_m(m: f64) -> f64 {
    m / 111_320.0
}

/// Polls `check` until it holds or `timeout` passes.
pub(crate) async fn wait_until(
    timeout: std::time::Duration,
    mut check: impl FnMut() -> bool,
) -> bool {
    let end = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < end {
        if check() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    check()
}

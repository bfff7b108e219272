//! Fixtures for the hub's unit tests (compiled for tests only): one box event builder instead
//! of a copy per module.

use protocol::{
    CategoryCode, Crs, Event, EventId, Location, Seq, Severity, Source, SourceId, SourceKind,
    Timestamp,
};

/// A camera event of `cam-1` at sequence number `seq` in Suzhou's Gusu district, category
/// 0102; `salt` makes another event (another id) at the same number.
pub(crate) fn event(seq: u64, salt: u8) -> Event {
    Event {
        id: EventId::v7(1_767_225_600_000 + seq, [salt; 10]),
        seq: Seq(seq),
        source: Source {
            kind: SourceKind::Camera,
            id: SourceId::parse("cam-1").expect("a valid source id"),
        },
        category: CategoryCode::parse("0102").expect("a valid category code"),
        severity: Severity::Medium,
        observed_at: Timestamp::from_unix_millis(1_767_225_600_000),
        location: Location {
            lat: 31.28,
            lon: 120.58,
            crs: Crs::Wgs84,
        },
        grid: None,
        attributes: Default::default(),
        evidence: Vec::new(),
    }
}

/// A new, empty case database: on the PostgreSQL server named by `GRIDSENSE_TEST_POSTGRES`
/// when the tests run against one (`scripts/with-postgres`), else SQLite in memory.
pub(crate) fn db() -> crate::cases::db::Db {
    use crate::storage::{DatabaseUrl, PoolSettings};
    match std::env::var("GRIDSENSE_TEST_POSTGRES") {
        Ok(server) if !server.is_empty() => {
            let url = crate::storage::create_database(&server, &fresh_database_name())
                .expect("a test database on GRIDSENSE_TEST_POSTGRES");
            crate::cases::db::Db::connect(&DatabaseUrl::Postgres(url), PoolSettings::default())
                .expect("the test database opens")
        }
        _ => crate::cases::db::Db::open_in_memory().expect("an in-memory database"),
    }
}

/// A database name no other test of any process takes.
fn fresh_database_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "test_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

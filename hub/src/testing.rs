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

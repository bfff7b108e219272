//! Builders and checks shared by the integration tests.

use std::collections::BTreeMap;
use std::path::Path;

use edge_agent::store::{EvidenceFile, Store, StoreOptions};
use protocol::{
    AttrValue, CategoryCode, Crs, Event, EventId, GridCode, Location, Seq, Severity, Source,
    SourceId, SourceKind, Timestamp,
};
use sha2::{Digest as _, Sha256};

/// A fixed point in time the tests count from (2026-01-01T00:00:00Z).
pub(crate) const T0_MS: i64 = 1_767_225_600_000;

pub(crate) fn site() -> Location {
    Location {
        lat: 39.9042,
        lon: 116.4074,
        crs: Crs::Wgs84,
    }
}

pub(crate) fn options(dir: &Path) -> StoreOptions {
    let mut o = StoreOptions::new(dir, site());
    o.grid = Some(GridCode::parse("11010100100101").unwrap());
    o
}

pub(crate) fn open(dir: &Path) -> Store {
    Store::open(options(dir)).unwrap()
}

/// A camera event numbered `n`, observed `n` seconds after `T0_MS`, with an id made from `n`
/// and `salt` so that ids are unique and reproducible.
pub(crate) fn event(n: u64, salt: u64) -> Event {
    let mut random = [0u8; 10];
    random[..8].copy_from_slice(&n.to_be_bytes());
    random[8..].copy_from_slice(&(salt as u16).to_be_bytes());
    let observed = T0_MS + n as i64 * 1000;
    let mut attributes = BTreeMap::new();
    attributes.insert("label".to_owned(), AttrValue::Text("car".to_owned()));
    attributes.insert("score".to_owned(), AttrValue::Float(0.875));
    attributes.insert("track".to_owned(), AttrValue::Int(n as i64));
    attributes.insert("in_zone".to_owned(), AttrValue::Bool(true));
    Event {
        id: EventId::v7(observed as u64, random),
        seq: Seq(0),
        source: Source {
            kind: SourceKind::Camera,
            id: SourceId::parse("cam-north").unwrap(),
        },
        category: CategoryCode::parse("0404").unwrap(),
        severity: Severity::Medium,
        observed_at: Timestamp::from_unix_millis(observed),
        location: site(),
        grid: Some(GridCode::parse("11010100100101").unwrap()),
        attributes,
        evidence: Vec::new(),
    }
}

/// `len` reproducible incompressible bytes.
pub(crate) fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v);
    v
}

/// An event with one evidence file of `len` bytes.
pub(crate) fn event_with_evidence(n: u64, salt: u64, len: usize) -> (Event, Vec<EvidenceFile>) {
    let mut e = event(n, salt);
    let file = EvidenceFile::new(noise(len, n ^ (salt << 32)), "image/jpeg");
    e.evidence = vec![file.reference.clone()];
    (e, vec![file])
}

/// Asserts that every evidence file named by the store's events is present and hashes right.
pub(crate) fn assert_evidence_intact(store: &Store) {
    for event in store.events_from(Seq(1), usize::MAX).unwrap() {
        for r in &event.evidence {
            if !store.has_evidence(&r.sha256).unwrap() {
                continue;
            }
            let path = store.evidence_path(&r.sha256);
            let bytes = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("evidence of seq {} unreadable: {e}", event.seq));
            assert_eq!(bytes.len() as u64, r.bytes, "length of {}", path.display());
            assert_eq!(
                Sha256::digest(&bytes).as_slice(),
                &r.sha256.0[..],
                "hash of {}",
                path.display()
            );
        }
    }
}

//! Moving a hub: `hub db migrate` copies its case database from SQLite into PostgreSQL (a
//! private cluster) and back — every table, every id, the counts checked; new cases continue
//! after the copied ids; a destination with data is refused — and with `--data` the box
//! registry, the ingest log and the evidence files of the data folder go into the database
//! and come back out as files, byte for byte. The README's `pg_dump` / `pg_restore` recipe
//! gives back a database the hub reads alike.
#![allow(clippy::unwrap_used)] // test code: helpers outside #[test] functions unwrap too

use std::path::Path;
use std::process::Command;

use e2e::binaries::binary;
use e2e::postgres::Postgres;
use hub::cases::db::{Db, DbError};
use hub::cases::{Case, CaseChange, CaseId, Transition};
use hub::ingest::{INGEST_FILE, IngestLog};
use hub::registry::Registry;
use hub::storage::{DatabaseUrl, PoolSettings};
use protocol::{
    BoxId, CategoryCode, Crs, Digest, Event, EventId, EvidenceRef, Location, Seq, Severity, Source,
    SourceId, SourceKind, Timestamp,
};

/// Cases written for the copy (more than one chunk of its 1000 rows).
const CASES: i64 = 1100;

/// Cases written for the dump.
const DUMPED: i64 = 40;

fn case(id: i64, state: &str) -> Case {
    serde_json::from_value(serde_json::json!({
        "id": id, "category": "0102", "state": state, "source": "box-1",
        "lat": 31.28 + id as f64 * 1e-5, "lon": 120.58, "cell": null, "candidate_cells": [],
        "worker": null, "department": "sanitation-pj", "level": 0, "observed_at": id,
        "last_observed_at": id, "event_count": 1, "deadline": 99, "escalate_at": 99 + id,
        "warned": false, "escalations": 0, "reworks": 0, "returns": 0,
        "description": "井盖 missing", "created_at": id, "updated_at": id
    }))
    .unwrap()
}

fn event(seq: u64) -> Event {
    Event {
        id: EventId::v7(1_767_225_600_000 + seq, [7; 10]),
        seq: Seq(seq),
        source: Source {
            kind: SourceKind::Camera,
            id: SourceId::parse("cam-1").unwrap(),
        },
        category: CategoryCode::parse("0102").unwrap(),
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

/// `cases` cases, with rows in every table.
fn fill(db: &Db, cases: i64) {
    let b = BoxId::parse("box-1").unwrap();
    let t = Timestamp::from_unix_millis;
    db.atomically(|tx| -> Result<(), DbError> {
        for i in 1..=cases {
            let state = if i % 3 == 0 { "closed" } else { "dispatched" };
            let id = tx.insert_case(&case(0, state))?;
            let mut stored = case(id.0, state);
            stored.id = id;
            tx.update_case(&stored)?;
            let e = event(i as u64);
            tx.insert_event(&b, &e, t(i))?;
            tx.link_event(&e.id, id)?;
            tx.add_transition(&Transition {
                case_id: id,
                at: t(i),
                actor: hub::cases::Actor::system(),
                action: "register".into(),
                from: hub::cases::CaseState::Reported,
                to: hub::cases::CaseState::Dispatched,
                note: "自动登记".into(),
                evidence: vec![],
            })?;
            let mut change = CaseChange {
                id: 0,
                action: "created".into(),
                case: stored,
            };
            tx.record_change(&mut change, t(i))?;
        }
        tx.set_webhook_cursor("sanitation-pj", 17)?;
        tx.record_webhook_failure("sanitation-pj", 3, t(5), 8, "HTTP 502")?;
        tx.insert_recheck("rc-1", CaseId(2), &b, t(9))?;
        tx.answer_recheck("rc-1", t(10))?;
        tx.evidence_expired(CaseId(3), t(11), 2, 4096)?;
        Ok(())
    })
    .unwrap();
    db.serving(
        "gridsense-hub pid 1 on test",
        &[("grid", "{}"), ("duties", "category\n"), ("calendar", "")],
        t(12),
    )
    .unwrap();
}

/// Everything a hub reads from its case database, in a comparable form.
fn contents(db: &Db) -> String {
    db.atomically(|tx| -> Result<String, DbError> {
        let mut out = String::new();
        let cases = tx.cases()?;
        out.push_str(&serde_json::to_string(&cases)?);
        out.push_str(&serde_json::to_string(&tx.all_transitions()?)?);
        out.push_str(&format!("{:?}", tx.box_events("box-1")?));
        out.push_str(&format!("{:?}", tx.changes_since(0, 100_000)?.len()));
        out.push_str(&format!("{:?}", tx.changes_after("sanitation-pj", 0, 5)?));
        out.push_str(&format!("{:?}", tx.webhook_cursor("sanitation-pj")?));
        out.push_str(&format!("{:?}", tx.recheck("rc-1")?));
        out.push_str(&format!(
            "{:?}",
            tx.finished_unexpired(Timestamp::from_unix_millis(i64::MAX), 10)?
        ));
        Ok(out)
    })
    .unwrap()
}

fn migrate(from: &str, to: &str, data: &Path) -> std::process::Output {
    Command::new(binary("hub"))
        .args(["db", "migrate", "--from", from, "--to", to, "--data"])
        .arg(data)
        .output()
        .unwrap()
}

/// The evidence file written by [`fill_boxes`].
const PICTURE: &[u8] = b"\xff\xd8 a picture of an overflowing bin \xff\xd9";

fn picture_sha() -> Digest {
    use sha2::Digest as _;
    Digest(sha2::Sha256::digest(PICTURE).into())
}

/// A SQLite hub's data folder with two boxes (one enrolled), their events in the ingest log,
/// a health report, one evidence file held and one still wanted.
fn fill_boxes(data: &Path) {
    let t = Timestamp::from_unix_millis;
    let mut registry = Registry::open_in(data).unwrap();
    let b1 = BoxId::parse("box-1").unwrap();
    let secret = registry
        .add_box(&b1, "north gate", None, 3600, t(1))
        .unwrap();
    registry
        .enroll(&secret, t(2), |_| Ok(("cert".into(), t(99_000))))
        .unwrap();
    registry
        .add_box(&BoxId::parse("box-2").unwrap(), "market", None, 3600, t(3))
        .unwrap();
    let log = IngestLog::open(&data.join(INGEST_FILE)).unwrap();
    let mut events: Vec<Event> = (1..=30).map(event).collect();
    events[0].evidence = vec![
        EvidenceRef {
            sha256: picture_sha(),
            bytes: PICTURE.len() as u64,
            media_type: "image/jpeg".into(),
        },
        EvidenceRef {
            sha256: Digest([9; 32]),
            bytes: 1000,
            media_type: "image/jpeg".into(),
        },
    ];
    log.commit(&b1, 4, &events, 1 << 20, t(5)).unwrap();
    log.mark_handed(&[(b1.clone(), 4, Seq(1), 1)]).unwrap();
    std::fs::create_dir_all(data.join("evidence")).unwrap();
    std::fs::write(data.join("evidence").join(picture_sha().to_hex()), PICTURE).unwrap();
    log.evidence_complete(&picture_sha()).unwrap();
}

/// Everything a hub reads of its boxes, in a comparable form.
fn boxes_contents(data: &Path, database: Option<&DatabaseUrl>) -> String {
    let registry = Registry::open_for(data, database).unwrap();
    let log = IngestLog::open_for(data, database).unwrap();
    let b1 = BoxId::parse("box-1").unwrap();
    format!(
        "{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
        registry.list().unwrap(),
        log.events_of(&b1).unwrap(),
        log.counts().unwrap(),
        log.last_seq(&b1, 4).unwrap(),
        log.wanted_evidence(&b1).unwrap(),
        log.evidence_state(&picture_sha()).unwrap(),
        log.evidence_held().unwrap(),
    )
}

fn postgres(url: &str) -> Db {
    Db::connect(
        &DatabaseUrl::Postgres(url.to_owned()),
        PoolSettings::default(),
    )
    .unwrap()
}

fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

#[test]
fn a_sqlite_hub_moves_to_postgres_and_back_with_every_row_and_id() {
    let dir = tempfile::tempdir().unwrap();
    let source_path = dir.path().join("hub.db");
    let source = Db::open(&source_path).unwrap();
    fill(&source, CASES);
    let expected = contents(&source);
    drop(source);
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    fill_boxes(&data);
    let expected_boxes = boxes_contents(&data, None);

    let pg = Postgres::start().unwrap();
    pg.create_db("hub").unwrap();
    // the boxes must move with the cases
    let without = Command::new(binary("hub"))
        .args([
            "db",
            "migrate",
            "--from",
            &sqlite_url(&source_path),
            "--to",
            &pg.url("hub"),
        ])
        .output()
        .unwrap();
    assert!(!without.status.success());
    assert!(
        String::from_utf8_lossy(&without.stderr).contains("--data is needed"),
        "{without:?}"
    );
    // a mistyped data folder is refused before anything is copied
    let mistyped = dir.path().join("no-hub-here");
    std::fs::create_dir_all(&mistyped).unwrap();
    let wrong = migrate(&sqlite_url(&source_path), &pg.url("hub"), &mistyped);
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("holds no registry.db"),
        "{wrong:?}"
    );
    assert!(
        !mistyped.join("registry.db").exists(),
        "no registry made there"
    );
    let out = migrate(&sqlite_url(&source_path), &pg.url("hub"), &data);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!("cases: 1000 of {CASES} rows"))
            && stderr.contains("the counts match in every table")
            && stderr.contains("evidence files: 1 of 1"),
        "progress by chunk: {stderr}"
    );
    // cases, transitions, events, changes; one row in four tables; three file versions; then
    // the boxes: 2 boxes, 2 tokens, 30 events, 2 evidence rows, 1 evidence file
    let total = 4 * CASES + 4 + 3 + 2 + 2 + 30 + 2 + 1;
    assert!(stdout.contains(&format!("{total} rows copied")), "{stdout}");

    let copied = postgres(&pg.url("hub"));
    assert_eq!(contents(&copied), expected, "every row as it was");
    // a new case continues after the copied ids
    let next = copied
        .atomically(|tx| tx.insert_case(&case(0, "reported")))
        .unwrap();
    assert_eq!(next, CaseId(CASES + 1));
    drop(copied);
    let in_pg = DatabaseUrl::Postgres(pg.url("hub"));
    let elsewhere = dir.path().join("another-machine");
    std::fs::create_dir_all(&elsewhere).unwrap();
    assert_eq!(
        boxes_contents(&elsewhere, Some(&in_pg)),
        expected_boxes,
        "the boxes, their events and evidence are in the database, not the folder"
    );

    // a database with data is not overwritten
    let again = migrate(&sqlite_url(&source_path), &pg.url("hub"), &data);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("rows in cases already"),
        "{again:?}"
    );

    // and back, into a new SQLite file and data folder: the evidence a file again
    let back_path = dir.path().join("back.db");
    let back_data = dir.path().join("back-data");
    std::fs::create_dir_all(&back_data).unwrap();
    let back = migrate(&pg.url("hub"), &sqlite_url(&back_path), &back_data);
    assert!(back.status.success(), "{back:?}");
    let back = Db::open(&back_path).unwrap();
    let copied = postgres(&pg.url("hub"));
    assert_eq!(contents(&back), contents(&copied));
    assert_eq!(boxes_contents(&back_data, None), expected_boxes);
    assert_eq!(
        std::fs::read(back_data.join("evidence").join(picture_sha().to_hex())).unwrap(),
        PICTURE
    );
}

#[test]
fn the_readmes_pg_dump_recipe_restores_a_database_the_hub_reads_alike() {
    let pg = Postgres::start().unwrap();
    pg.create_db("gridsense").unwrap();
    let live = postgres(&pg.url("gridsense"));
    fill(&live, DUMPED);
    let expected = contents(&live);

    // README, "Back up a PostgreSQL hub": a dump in the custom format, restored into a new
    // database (while the hub keeps running: pg_dump reads one consistent snapshot)
    let dump = pg.scratch().join("hub.dump");
    let dump = dump.to_str().unwrap();
    pg.tool(
        "pg_dump",
        &["--format=custom", "--file", dump, "--dbname", "gridsense"],
    )
    .unwrap();
    live.atomically(|tx| tx.insert_case(&case(0, "reported")))
        .unwrap();
    pg.create_db("restored").unwrap();
    pg.tool(
        "pg_restore",
        &[
            "--no-owner",
            "--exit-on-error",
            "--dbname",
            "restored",
            dump,
        ],
    )
    .unwrap();

    let restored = postgres(&pg.url("restored"));
    assert_eq!(
        contents(&restored),
        expected,
        "the dump's moment, not later"
    );
    assert_eq!(
        restored
            .atomically(|tx| tx.insert_case(&case(0, "reported")))
            .unwrap(),
        CaseId(DUMPED + 1),
        "numbering continues"
    );
    assert_eq!(
        restored.schema_version().unwrap(),
        hub::cases::db::POSTGRES_SCHEMA_VERSION
    );
}

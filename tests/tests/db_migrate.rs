//! Moving a hub's case database: `hub db migrate` copies it from SQLite into PostgreSQL (a
//! private cluster) and back — every table, every id, the counts checked; new cases continue
//! after the copied ids; a destination with data is refused — and the README's `pg_dump` /
//! `pg_restore` recipe gives back a database the hub reads alike.
#![allow(clippy::unwrap_used)] // test code: helpers outside #[test] functions unwrap too

use std::path::Path;
use std::process::Command;

use e2e::binaries::binary;
use e2e::postgres::Postgres;
use hub::cases::db::{Db, DbError};
use hub::cases::{Case, CaseChange, CaseId, Transition};
use hub::storage::{DatabaseUrl, PoolSettings};
use protocol::{
    BoxId, CategoryCode, Crs, Event, EventId, Location, Seq, Severity, Source, SourceId,
    SourceKind, Timestamp,
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

fn migrate(from: &str, to: &str) -> std::process::Output {
    Command::new(binary("hub"))
        .args(["db", "migrate", "--from", from, "--to", to])
        .output()
        .unwrap()
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

    let pg = Postgres::start().unwrap();
    pg.create_db("hub").unwrap();
    let out = migrate(&sqlite_url(&source_path), &pg.url("hub"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!("cases: 1000 of {CASES} rows"))
            && stderr.contains("the counts match"),
        "progress by chunk: {stderr}"
    );
    let total = 4 * CASES + 4; // cases, transitions, events, changes; one row in four tables
    assert!(stdout.contains(&format!("{total} rows copied")), "{stdout}");

    let copied = postgres(&pg.url("hub"));
    assert_eq!(contents(&copied), expected, "every row as it was");
    // a new case continues after the copied ids
    let next = copied
        .atomically(|tx| tx.insert_case(&case(0, "reported")))
        .unwrap();
    assert_eq!(next, CaseId(CASES + 1));
    drop(copied);

    // a database with data is not overwritten
    let again = migrate(&sqlite_url(&source_path), &pg.url("hub"));
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("rows in cases already"),
        "{again:?}"
    );

    // and back, into a new SQLite file
    let back_path = dir.path().join("back.db");
    let back = migrate(&pg.url("hub"), &sqlite_url(&back_path));
    assert!(back.status.success(), "{back:?}");
    let back = Db::open(&back_path).unwrap();
    let copied = postgres(&pg.url("hub"));
    assert_eq!(contents(&back), contents(&copied));
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

//! Opening the database: start-up checks, connection settings and embedded migrations.
//!
//! The checks only read until the file is known to be ours and healthy: a file that is not an
//! SQLite database, fails `PRAGMA quick_check`, belongs to another application or was written by
//! a newer agent is reported and left exactly as found. Migrations are SQL embedded in this
//! file, applied in order inside transactions, and `PRAGMA user_version` records the last one.
//! This module must never delete, truncate or recreate a database file.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::{StoreError, sqlite_error};

/// `PRAGMA application_id` of a Gridsense store ("GSEA").
pub(super) const APPLICATION_ID: i32 = 0x4753_4541;

/// Each migration's SQL; migration `i` brings the schema to `user_version = i + 1`.
const MIGRATIONS: &[&str] = &[V1, V2];

/// Schema version 1.
///
/// - `events`: one row per event. `seq` is the per-box sequence number (the rowid, so rows are
///   stored in commit order); `body` is the MessagePack encoding of the whole event (its `seq`
///   field is not used: the column is authoritative); `stored_bytes` is what the row costs
///   against the quota.
/// - `evidence`: one row per evidence file ever named and not yet forgotten; `present` is 1
///   while the file is on disk; `last_seq` is the newest event naming it (evidence is evictable
///   once that event is synced).
/// - `event_evidence`: which events name which files.
/// - `meta`: counters and the sync cursor (`acked_seq`), updated in the same transactions.
const V1: &str = "
CREATE TABLE events (
    seq            INTEGER PRIMARY KEY,
    id             BLOB    NOT NULL UNIQUE,
    observed_at_ms INTEGER NOT NULL,
    category       TEXT    NOT NULL,
    stored_bytes   INTEGER NOT NULL,
    body           BLOB    NOT NULL
);
CREATE TABLE evidence (
    sha256     BLOB    PRIMARY KEY,
    bytes      INTEGER NOT NULL,
    media_type TEXT    NOT NULL,
    present    INTEGER NOT NULL,
    last_seq   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX evidence_by_present_last_seq ON evidence(present, last_seq);
CREATE TABLE event_evidence (
    seq    INTEGER NOT NULL,
    sha256 BLOB    NOT NULL,
    PRIMARY KEY (seq, sha256)
) WITHOUT ROWID;
CREATE INDEX event_evidence_by_sha256 ON event_evidence(sha256);
CREATE TABLE meta (
    key   TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO meta (key, value) VALUES
    ('last_seq', 0), ('acked_seq', 0), ('usage_bytes', 0), ('lost_events_total', 0),
    ('evicted_events_total', 0), ('evicted_evidence_total', 0), ('expired_events_total', 0);
";

/// Schema version 2.
///
/// - `evidence.confirmed`: 1 once the hub said it holds the file complete. An acknowledgement
///   covers an event, not its files (they upload separately): only confirmed files are evicted
///   freely; evicting an unconfirmed one is a counted, reported loss.
/// - `meta.lost_evidence_total`: files evicted (or found missing) before the hub had them.
/// - `meta.epoch`: the store's epoch, sent in `Hello` (sequence numbers count within it). A store
///   made by this version gets a random one; a store made before keeps 0, the epoch the hub
///   gives events of agents that send none.
const V2: &str = "
ALTER TABLE evidence ADD COLUMN confirmed INTEGER NOT NULL DEFAULT 0;
DROP INDEX evidence_by_present_last_seq;
CREATE INDEX evidence_by_state ON evidence(present, confirmed, last_seq);
INSERT INTO meta (key, value) VALUES ('lost_evidence_total', 0), ('epoch', 0);
";

/// Opens the writer's connection: checks, settings, migrations.
pub(super) fn open_writer(path: &Path, busy_timeout: Duration) -> Result<Connection, StoreError> {
    if let Ok(meta) = std::fs::metadata(path)
        && !meta.is_file()
    {
        return Err(StoreError::Corrupt {
            path: path.to_owned(),
            detail: "not a regular file".to_owned(),
        });
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| classify(path, e, "open"))?;
    conn.busy_timeout(busy_timeout)
        .map_err(|e| sqlite_error("set busy timeout", e))?;
    check(path, &conn)?;
    // From here on the file is known to be ours (or new) and healthy.
    let version = user_version(&conn).map_err(|e| classify(path, e, "read schema version"))?;
    if version == 0 {
        // Must precede the first table; frees pages of evicted rows back to the file system.
        conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL;")
            .map_err(|e| sqlite_error("set auto_vacuum", e))?;
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(|e| sqlite_error("set application_id", e))?;
    }
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| sqlite_error("switch to WAL", e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Corrupt {
            path: path.to_owned(),
            detail: format!("journal mode stays `{mode}`, WAL is required"),
        });
    }
    conn.execute_batch(
        "PRAGMA synchronous = FULL;
         PRAGMA journal_size_limit = 67108864;",
    )
    .map_err(|e| sqlite_error("configure connection", e))?;
    migrate(&conn, version)?;
    Ok(conn)
}

/// Opens a read-only connection to an existing store.
pub(super) fn open_reader(path: &Path, busy_timeout: Duration) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| classify(path, e, "open"))?;
    conn.busy_timeout(busy_timeout)
        .map_err(|e| sqlite_error("set busy timeout", e))?;
    Ok(conn)
}

/// The newest schema version this build knows.
pub(super) fn latest_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Read-only checks: readable, healthy, ours, not from the future.
fn check(path: &Path, conn: &Connection) -> Result<(), StoreError> {
    // Reading the schema forces SQLite to read the header: a file that is not a database fails
    // here without having been written to.
    let objects: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
        .map_err(|e| classify(path, e, "read schema"))?;
    let verdict: String = conn
        .query_row("PRAGMA quick_check(1)", [], |r| r.get(0))
        .map_err(|e| classify(path, e, "check integrity"))?;
    if verdict != "ok" {
        return Err(StoreError::Corrupt {
            path: path.to_owned(),
            detail: format!("integrity check: {verdict}"),
        });
    }
    let app_id: i32 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(|e| classify(path, e, "read application id"))?;
    if (app_id == 0 && objects > 0) || (app_id != 0 && app_id != APPLICATION_ID) {
        return Err(StoreError::Foreign {
            path: path.to_owned(),
        });
    }
    let version = user_version(conn).map_err(|e| classify(path, e, "read schema version"))?;
    if version > latest_version() {
        return Err(StoreError::SchemaTooNew {
            path: path.to_owned(),
            found: version,
            supported: latest_version(),
        });
    }
    Ok(())
}

fn migrate(conn: &Connection, from: i64) -> Result<(), StoreError> {
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(from.max(0) as usize) {
        let to = i as i64 + 1;
        // A new store gets its epoch in the transaction that makes it.
        let epoch = if from == 0 && to == EPOCH_VERSION {
            format!(
                "UPDATE meta SET value = {} WHERE key = 'epoch';",
                new_epoch()
            )
        } else {
            String::new()
        };
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE;\n{sql}\n{epoch}\nPRAGMA user_version = {to};\nCOMMIT;"
        ))
        .map_err(|e| {
            // A failed migration leaves the transaction open; roll it back before reporting.
            let _ = conn.execute_batch("ROLLBACK");
            sqlite_error("migrate the schema", e)
        })?;
        tracing::info!(stage = "store", version = to, "store schema migrated");
    }
    Ok(())
}

/// The schema version that introduced the store epoch.
const EPOCH_VERSION: i64 = 2;

/// A random epoch: positive, never 0 (0 is the epoch of stores made before epochs).
fn new_epoch() -> i64 {
    fastrand::Rng::new().i64(1..=i64::MAX)
}

/// The store's epoch.
pub(super) fn epoch(conn: &Connection) -> Result<u64, StoreError> {
    conn.query_row("SELECT value FROM meta WHERE key = 'epoch'", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|v| v.max(0) as u64)
    .map_err(|e| sqlite_error("read the store epoch", e))
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

/// Corruption and "not a database" become [`StoreError::Corrupt`]; the rest stay SQLite errors.
fn classify(path: &Path, e: rusqlite::Error, op: &'static str) -> StoreError {
    if let rusqlite::Error::SqliteFailure(f, msg) = &e
        && matches!(f.code, ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
    {
        return StoreError::Corrupt {
            path: path.to_owned(),
            detail: msg.clone().unwrap_or_else(|| f.to_string()),
        };
    }
    sqlite_error(op, e)
}

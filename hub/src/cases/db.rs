//! SQLite storage for events, cases and their transitions.
//!
//! The boundary is deliberately narrow: [`Db::atomically`] hands a [`Tx`] with a handful of
//! typed operations, and cases are stored as JSON bodies beside the few columns that queries
//! filter on, so a PostgreSQL backend can implement the same operations without the case logic
//! changing. Migrations are embedded and applied on open (`PRAGMA user_version`). This module
//! must not hold workflow rules.

use std::path::Path;

use protocol::{BoxId, CategoryCode, Event, Seq, Timestamp};
use rusqlite::{Connection, OptionalExtension, params};

use crate::cases::{Case, CaseId, CaseState, Transition};

/// Schema versions, applied in order.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE events (
    box_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event_id TEXT NOT NULL UNIQUE,
    case_id INTEGER,
    received_at INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (box_id, seq)
);
CREATE TABLE cases (
    id INTEGER PRIMARY KEY,
    category TEXT NOT NULL,
    state TEXT NOT NULL,
    last_observed_at INTEGER NOT NULL,
    escalate_at INTEGER,
    body TEXT NOT NULL
);
CREATE INDEX cases_open ON cases (category, state, last_observed_at);
CREATE TABLE transitions (
    id INTEGER PRIMARY KEY,
    case_id INTEGER NOT NULL REFERENCES cases (id),
    body TEXT NOT NULL
);
CREATE INDEX transitions_case ON transitions (case_id);
"#,
    r#"
ALTER TABLE cases ADD COLUMN worker TEXT GENERATED ALWAYS AS (json_extract(body, '$.worker')) VIRTUAL;
ALTER TABLE cases ADD COLUMN department TEXT GENERATED ALWAYS AS (json_extract(body, '$.department')) VIRTUAL;
CREATE INDEX cases_worker ON cases (worker, id);
CREATE INDEX cases_department ON cases (department, id);
"#,
    r#"
ALTER TABLE cases ADD COLUMN lat REAL;
ALTER TABLE cases ADD COLUMN lon REAL;
UPDATE cases SET lat = json_extract(body, '$.lat'), lon = json_extract(body, '$.lon');
CREATE INDEX cases_near ON cases (category, lat, lon, last_observed_at);
"#,
    // A box's sequence numbers count within the epoch of its store (the ingest log keys them
    // so); here an event is known by its id, so that a new store's seq 1 is not taken for the
    // old one's. (box_id, seq) stays indexed for the Open311 numbering.
    r#"
CREATE TABLE events_v4 (
    event_id TEXT PRIMARY KEY,
    box_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    case_id INTEGER,
    received_at INTEGER NOT NULL,
    body TEXT NOT NULL
);
INSERT INTO events_v4 (event_id, box_id, seq, case_id, received_at, body)
    SELECT event_id, box_id, seq, case_id, received_at, body FROM events;
DROP TABLE events;
ALTER TABLE events_v4 RENAME TO events;
CREATE INDEX events_box_seq ON events (box_id, seq);
CREATE INDEX events_case ON events (case_id);
"#,
    // Every case change, written in the transaction that makes it: the webhook outbox (each
    // target's cursor says how far it has been delivered), and what live listeners of any hub
    // process can read back.
    r#"
CREATE TABLE changes (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    case_id INTEGER NOT NULL,
    department TEXT,
    action TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX changes_department ON changes (department, id);
CREATE INDEX changes_at ON changes (at);
CREATE TABLE webhook_cursors (
    department TEXT PRIMARY KEY,
    done_id INTEGER NOT NULL
);
CREATE TABLE webhook_failures (
    department TEXT NOT NULL,
    change_id INTEGER NOT NULL,
    at INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT NOT NULL,
    PRIMARY KEY (department, change_id)
);
"#,
    // Camera re-checks the hub asked for: an answer counts only for a request issued here, from
    // the box it was asked of, once.
    r#"
CREATE TABLE rechecks (
    request_id TEXT PRIMARY KEY,
    case_id INTEGER NOT NULL,
    box_id TEXT NOT NULL,
    asked_at INTEGER NOT NULL,
    answered_at INTEGER
);
"#,
    // Finished cases whose evidence files were deleted after the retention period, with what
    // that freed; the index finds finished cases by when they last changed.
    r#"
CREATE TABLE evidence_expired (
    case_id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    files INTEGER NOT NULL,
    bytes INTEGER NOT NULL
);
CREATE INDEX cases_finished ON cases (json_extract(body, '$.updated_at'))
    WHERE state IN ('closed', 'rejected');
"#,
];

/// The schema version this hub writes (`PRAGMA user_version`): the number of migrations.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// One page of the case list: cases after a cursor, oldest first, narrowed by who asks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CasePageQuery {
    /// Only cases with a larger id (the previous page's last id).
    pub after: Option<CaseId>,
    /// At most this many (a page of 0 is empty).
    pub limit: usize,
    /// Only these states; all when empty.
    pub states: Vec<CaseState>,
    /// Only cases of this grid worker.
    pub worker: Option<String>,
    /// Only cases dispatched to this department.
    pub department: Option<String>,
}

/// A camera re-check the hub asked for (see [`Tx::recheck`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecheckRequest {
    /// The case re-checked.
    pub case: CaseId,
    /// The box asked (as stored).
    pub box_id: String,
    /// When the hub asked (its own clock).
    pub asked_at: Timestamp,
    /// Whether an answer was taken already.
    pub answered: bool,
}

/// A storage failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// SQLite failed.
    #[error("database operation failed")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored body could not be encoded or decoded.
    #[error("stored record is malformed")]
    Body(#[from] serde_json::Error),
    /// The database was written by a newer hub: this one refuses to touch it.
    #[error(
        "the hub database has schema version {found}, newer than this hub's {supported}: run the newer hub"
    )]
    SchemaTooNew {
        /// Its `user_version`.
        found: i64,
        /// The newest this build knows.
        supported: i64,
    },
}

/// The hub database.
#[derive(Debug)]
pub struct Db {
    conn: Connection,
}

/// One transaction's operations.
#[derive(Debug)]
pub struct Tx<'a>(rusqlite::Transaction<'a>);

impl Db {
    /// Opens (creating if needed) and migrates the database at `path`.
    ///
    /// # Errors
    /// [`DbError`] when the file cannot be opened or migrated.
    pub fn open(path: &Path) -> Result<Db, DbError> {
        let conn = Connection::open(path)?;
        // Another connection (another hub process, a tool) may hold the write lock a moment.
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // 32 MiB of page cache (the default 2 MiB re-read hot index pages from the OS)
        conn.pragma_update(None, "cache_size", -32_768)?;
        Self::migrate(conn)
    }

    /// An in-memory database (tests, tools).
    ///
    /// # Errors
    /// [`DbError`] when migration fails.
    pub fn open_in_memory() -> Result<Db, DbError> {
        Self::migrate(Connection::open_in_memory()?)
    }

    fn migrate(mut conn: Connection) -> Result<Db, DbError> {
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > MIGRATIONS.len() as i64 {
            return Err(DbError::SchemaTooNew {
                found: version,
                supported: MIGRATIONS.len() as i64,
            });
        }
        let tx = conn.transaction()?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i as i64 + 1)?;
        }
        tx.commit()?;
        Ok(Db { conn })
    }

    /// Runs `f` in one transaction, committed when it returns `Ok`. The transaction takes the
    /// write lock as it begins (`BEGIN IMMEDIATE`), so what `f` reads stays true until it
    /// commits even with other connections to the file (a number read and then used, a case
    /// looked at and then changed), instead of failing when it upgrades.
    ///
    /// # Errors
    /// Whatever `f` returns, or [`DbError`] when the commit fails.
    pub fn atomically<T, E: From<DbError>>(
        &mut self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let tx = Tx(self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(DbError::from)?);
        let out = f(&tx)?;
        tx.0.commit().map_err(DbError::from)?;
        Ok(out)
    }
}

impl Tx<'_> {
    /// Records an event unless its id is known; true when it was new.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn insert_event(
        &self,
        box_id: &BoxId,
        event: &Event,
        received_at: Timestamp,
    ) -> Result<bool, DbError> {
        let n = self.0.execute(
            "INSERT OR IGNORE INTO events (box_id, seq, event_id, received_at, body) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                box_id.as_str(),
                event.seq.0 as i64,
                event.id.to_string(),
                received_at.as_unix_millis(),
                serde_json::to_string(event)?
            ],
        )?;
        Ok(n == 1)
    }

    /// Links a stored event to its case.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn link_event(&self, event: &protocol::EventId, case: CaseId) -> Result<(), DbError> {
        self.0.execute(
            "UPDATE events SET case_id = ?2 WHERE event_id = ?1",
            params![event.to_string(), case.0],
        )?;
        Ok(())
    }

    /// The event of `box_id` at `seq` (the first, should there be several) and its case.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn box_event(
        &self,
        box_id: &str,
        seq: Seq,
    ) -> Result<Option<(Event, Option<CaseId>)>, DbError> {
        let row: Option<(String, Option<i64>)> = self
            .0
            .prepare_cached(
                "SELECT body, case_id FROM events WHERE box_id = ?1 AND seq = ?2 \
                 ORDER BY received_at LIMIT 1",
            )?
            .query_row(params![box_id, seq.0 as i64], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        row.map(|(body, case)| Ok((decode_event(&body)?, case.map(CaseId))))
            .transpose()
    }

    /// Every event of `box_id` in sequence order, with its case.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn box_events(&self, box_id: &str) -> Result<Vec<(Event, Option<CaseId>)>, DbError> {
        let mut stmt = self.0.prepare_cached(
            "SELECT body, case_id FROM events WHERE box_id = ?1 ORDER BY seq, received_at",
        )?;
        let rows = stmt.query_map(params![box_id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (body, case) = row?;
            out.push((decode_event(&body)?, case.map(CaseId)));
        }
        Ok(out)
    }

    /// Records a case change in the outbox, giving it its id (increasing; the transaction holds
    /// the write lock, so the next id is the highest plus one).
    ///
    /// # Errors
    /// [`DbError`].
    pub fn record_change(
        &self,
        change: &mut crate::cases::CaseChange,
        at: Timestamp,
    ) -> Result<(), DbError> {
        change.id = self
            .0
            .query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM changes", [], |r| {
                r.get(0)
            })?;
        self.0
            .prepare_cached(
                "INSERT INTO changes (id, at, case_id, department, action, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                change.id,
                at.as_unix_millis(),
                change.case.id.0,
                change.case.department.as_ref().map(|d| d.as_str()),
                change.action,
                serde_json::to_string(change)?
            ])?;
        Ok(())
    }

    /// Up to `limit` changes of cases dispatched to `department`, after change `after`, oldest
    /// first: `(id, body)`.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn changes_after(
        &self,
        department: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, DbError> {
        let mut stmt = self.0.prepare_cached(
            "SELECT id, body FROM changes WHERE department = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
        )?;
        let rows = stmt.query_map(
            params![department, after, i64::try_from(limit).unwrap_or(i64::MAX)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The id of the newest change (0 before the first).
    ///
    /// # Errors
    /// [`DbError`].
    pub fn last_change_id(&self) -> Result<i64, DbError> {
        Ok(self
            .0
            .query_row("SELECT COALESCE(MAX(id), 0) FROM changes", [], |r| r.get(0))?)
    }

    /// How far a department's webhook has been done (delivered or given up on).
    ///
    /// # Errors
    /// [`DbError`].
    pub fn webhook_cursor(&self, department: &str) -> Result<Option<i64>, DbError> {
        Ok(self
            .0
            .prepare_cached("SELECT done_id FROM webhook_cursors WHERE department = ?1")?
            .query_row(params![department], |r| r.get(0))
            .optional()?)
    }

    /// Moves a department's webhook cursor (never back).
    ///
    /// # Errors
    /// [`DbError`].
    pub fn set_webhook_cursor(&self, department: &str, done: i64) -> Result<(), DbError> {
        self.0
            .prepare_cached(
                "INSERT INTO webhook_cursors (department, done_id) VALUES (?1, ?2)
                 ON CONFLICT (department) DO UPDATE SET done_id = MAX(done_id, excluded.done_id)",
            )?
            .execute(params![department, done])?;
        Ok(())
    }

    /// Records a change given up on after its last attempt (the dead letters, for operators).
    ///
    /// # Errors
    /// [`DbError`].
    pub fn record_webhook_failure(
        &self,
        department: &str,
        change: i64,
        at: Timestamp,
        attempts: u32,
        error: &str,
    ) -> Result<(), DbError> {
        self.0
            .prepare_cached(
                "INSERT OR REPLACE INTO webhook_failures (department, change_id, at, attempts, last_error)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![department, change, at.as_unix_millis(), attempts, error])?;
        Ok(())
    }

    /// Deletes changes recorded before `before` that every webhook cursor has passed (the
    /// newest always stays, so that ids never start again); returns how many.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn prune_changes(&self, before: Timestamp) -> Result<u64, DbError> {
        let n = self.0.execute(
            // the newest change stays: ids continue from it
            "DELETE FROM changes WHERE at < ?1
             AND id <= (SELECT COALESCE(MIN(done_id), (SELECT MAX(id) FROM changes)) FROM webhook_cursors)
             AND id < (SELECT MAX(id) FROM changes)",
            params![before.as_unix_millis()],
        )?;
        Ok(n as u64)
    }

    /// Records a re-check request the hub is about to send.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn insert_recheck(
        &self,
        request_id: &str,
        case: CaseId,
        box_id: &BoxId,
        asked_at: Timestamp,
    ) -> Result<(), DbError> {
        self.0
            .prepare_cached(
                "INSERT INTO rechecks (request_id, case_id, box_id, asked_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![request_id, case.0, box_id.as_str(), asked_at.as_unix_millis()])?;
        Ok(())
    }

    /// A re-check request: its case, the box asked, when, and whether it was answered.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn recheck(&self, request_id: &str) -> Result<Option<RecheckRequest>, DbError> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT case_id, box_id, asked_at, answered_at FROM rechecks WHERE request_id = ?1",
            )?
            .query_row(params![request_id], |r| {
                Ok(RecheckRequest {
                    case: CaseId(r.get(0)?),
                    box_id: r.get(1)?,
                    asked_at: Timestamp::from_unix_millis(r.get(2)?),
                    answered: r.get::<_, Option<i64>>(3)?.is_some(),
                })
            })
            .optional()?)
    }

    /// Marks a re-check request answered.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn answer_recheck(&self, request_id: &str, at: Timestamp) -> Result<(), DbError> {
        self.0
            .prepare_cached("UPDATE rechecks SET answered_at = ?2 WHERE request_id = ?1")?
            .execute(params![request_id, at.as_unix_millis()])?;
        Ok(())
    }

    /// The highest sequence number stored for a box.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn last_seq(&self, box_id: &BoxId) -> Result<Option<Seq>, DbError> {
        let v: Option<i64> = self.0.query_row(
            "SELECT MAX(seq) FROM events WHERE box_id = ?1",
            params![box_id.as_str()],
            |r| r.get(0),
        )?;
        Ok(v.map(|s| Seq(s as u64)))
    }

    /// Open cases of `category` observed at or after `since` whose position lies in the box
    /// `lat` × `lon` (degrees; the caller measures the exact distance).
    ///
    /// # Errors
    /// [`DbError`].
    pub fn open_cases_near(
        &self,
        category: &CategoryCode,
        since: Timestamp,
        lat: (f64, f64),
        lon: (f64, f64),
    ) -> Result<Vec<Case>, DbError> {
        let mut stmt = self.0.prepare_cached(
            // without statistics the planner took `cases_open` and visited every case of the
            // category; the position index narrows to the neighbourhood
            "SELECT body FROM cases INDEXED BY cases_near WHERE category = ?1 AND lat BETWEEN ?3 AND ?4 \
             AND lon BETWEEN ?5 AND ?6 AND state NOT IN ('closed', 'rejected') \
             AND last_observed_at >= ?2",
        )?;
        let rows = stmt.query_map(
            params![
                category.as_str(),
                since.as_unix_millis(),
                lat.0,
                lat.1,
                lon.0,
                lon.1
            ],
            |r| r.get::<_, String>(0),
        )?;
        let mut out = Vec::new();
        for body in rows {
            out.push(serde_json::from_str(&body?)?);
        }
        Ok(out)
    }

    /// Open cases whose escalation time is at or before `now`.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn cases_to_escalate(&self, now: Timestamp) -> Result<Vec<Case>, DbError> {
        self.bodies(
            "SELECT body FROM cases WHERE state NOT IN ('closed', 'rejected') AND escalate_at IS NOT NULL AND escalate_at <= ?1",
            params![now.as_unix_millis()],
        )
    }

    /// Stores a new case and returns its number (also written into the stored body).
    ///
    /// # Errors
    /// [`DbError`].
    pub fn insert_case(&self, case: &Case) -> Result<CaseId, DbError> {
        self.0.execute(
            "INSERT INTO cases (category, state, last_observed_at, escalate_at, body) \
             VALUES (?1, ?2, ?3, ?4, '{}')",
            params![
                case.category.as_str(),
                case.state.as_str(),
                case.last_observed_at.as_unix_millis(),
                case.escalate_at.map(Timestamp::as_unix_millis),
            ],
        )?;
        let id = CaseId(self.0.last_insert_rowid());
        let mut stored = case.clone();
        stored.id = id;
        self.update_case(&stored)?;
        Ok(id)
    }

    /// Overwrites a case, with the columns its indexes read (so they always match the body).
    ///
    /// # Errors
    /// [`DbError`].
    pub fn update_case(&self, case: &Case) -> Result<(), DbError> {
        self.0.execute(
            "UPDATE cases SET state = ?2, last_observed_at = ?3, escalate_at = ?4, lat = ?5, \
             lon = ?6, body = ?7 WHERE id = ?1",
            params![
                case.id.0,
                case.state.as_str(),
                case.last_observed_at.as_unix_millis(),
                case.escalate_at.map(Timestamp::as_unix_millis),
                case.lat,
                case.lon,
                serde_json::to_string(case)?
            ],
        )?;
        Ok(())
    }

    /// Appends a transition.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn add_transition(&self, t: &Transition) -> Result<(), DbError> {
        self.0.execute(
            "INSERT INTO transitions (case_id, body) VALUES (?1, ?2)",
            params![t.case_id.0, serde_json::to_string(t)?],
        )?;
        Ok(())
    }

    /// A case by number.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn case(&self, id: CaseId) -> Result<Option<Case>, DbError> {
        let body: Option<String> = self
            .0
            .query_row("SELECT body FROM cases WHERE id = ?1", params![id.0], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(body.map(|b| serde_json::from_str(&b)).transpose()?)
    }

    /// How many cases are in each state, and how many open cases are past their deadline at
    /// `now` (for metrics). States with no case are left out.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn case_counts(&self, now: Timestamp) -> Result<(Vec<(String, u64)>, u64), DbError> {
        let mut stmt = self
            .0
            .prepare_cached("SELECT state, COUNT(*) FROM cases GROUP BY state ORDER BY state")?;
        let rows = stmt.query_map(params![], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })?;
        let mut by_state = Vec::new();
        for row in rows {
            let (state, n) = row?;
            by_state.push((state, n.max(0) as u64));
        }
        let overdue: i64 = self.0.query_row(
            "SELECT COUNT(*) FROM cases WHERE state NOT IN ('closed', 'rejected') \
             AND json_extract(body, '$.deadline') IS NOT NULL \
             AND json_extract(body, '$.deadline') < ?1",
            params![now.as_unix_millis()],
            |r| r.get(0),
        )?;
        Ok((by_state, overdue.max(0) as u64))
    }

    /// Every case, oldest first.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn cases(&self) -> Result<Vec<Case>, DbError> {
        self.bodies("SELECT body FROM cases ORDER BY id", params![])
    }

    /// One page of cases in id order, and whether more follow it.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn cases_page(&self, q: &CasePageQuery) -> Result<(Vec<Case>, bool), DbError> {
        let mut sql = String::from("SELECT body FROM cases WHERE id > ?1");
        let mut args: Vec<rusqlite::types::Value> = vec![q.after.map_or(0, |c| c.0).into()];
        if let Some(w) = &q.worker {
            args.push(w.clone().into());
            sql.push_str(&format!(" AND worker = ?{}", args.len()));
        }
        if let Some(d) = &q.department {
            args.push(d.clone().into());
            // its current department and every one it was dispatched or escalated to before
            let n = args.len();
            sql.push_str(&format!(
                " AND (department = ?{n} OR EXISTS (SELECT 1 FROM json_each(body, '$.dispatched_to') WHERE value = ?{n}))"
            ));
        }
        if !q.states.is_empty() {
            let mut marks = Vec::new();
            for state in &q.states {
                args.push(state.as_str().to_owned().into());
                marks.push(format!("?{}", args.len()));
            }
            sql.push_str(&format!(" AND state IN ({})", marks.join(", ")));
        }
        args.push(
            i64::try_from(q.limit.saturating_add(1))
                .unwrap_or(i64::MAX)
                .into(),
        );
        sql.push_str(&format!(" ORDER BY id LIMIT ?{}", args.len()));
        let mut page: Vec<Case> = self.bodies(&sql, rusqlite::params_from_iter(args))?;
        let more = page.len() > q.limit;
        page.truncate(q.limit);
        Ok((page, more))
    }

    /// A statement that touches the database and nothing else.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn ping(&self) -> Result<(), DbError> {
        self.0
            .query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))?;
        Ok(())
    }

    /// Up to `limit` cases closed or rejected before `before` whose evidence has not been
    /// deleted yet, oldest change first.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn finished_unexpired(
        &self,
        before: Timestamp,
        limit: usize,
    ) -> Result<Vec<CaseId>, DbError> {
        let mut stmt = self.0.prepare_cached(
            "SELECT id FROM cases
             WHERE state IN ('closed', 'rejected') AND json_extract(body, '$.updated_at') < ?1
               AND id NOT IN (SELECT case_id FROM evidence_expired)
             ORDER BY json_extract(body, '$.updated_at') LIMIT ?2",
        )?;
        let rows = stmt.query_map(
            params![
                before.as_unix_millis(),
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            |r| r.get::<_, i64>(0),
        )?;
        Ok(rows.map(|r| r.map(CaseId)).collect::<Result<_, _>>()?)
    }

    /// Records that the evidence of case `id` was deleted: `files` files, `bytes` bytes.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn evidence_expired(
        &self,
        id: CaseId,
        at: Timestamp,
        files: u64,
        bytes: u64,
    ) -> Result<(), DbError> {
        self.0.execute(
            "INSERT OR REPLACE INTO evidence_expired (case_id, at, files, bytes) VALUES (?1, ?2, ?3, ?4)",
            params![
                id.0,
                at.as_unix_millis(),
                i64::try_from(files).unwrap_or(i64::MAX),
                i64::try_from(bytes).unwrap_or(i64::MAX)
            ],
        )?;
        Ok(())
    }

    /// A case's transitions in order.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn transitions(&self, id: CaseId) -> Result<Vec<Transition>, DbError> {
        self.bodies(
            "SELECT body FROM transitions WHERE case_id = ?1 ORDER BY id",
            params![id.0],
        )
    }

    /// The events merged into a case, in the order they were received, with their boxes.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn case_events(&self, id: CaseId) -> Result<Vec<(String, Event)>, DbError> {
        let mut stmt = self.0.prepare_cached(
            "SELECT box_id, body FROM events WHERE case_id = ?1 ORDER BY received_at, box_id, seq",
        )?;
        let rows = stmt.query_map(params![id.0], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (box_id, body) = row?;
            out.push((box_id, decode_event(&body)?));
        }
        Ok(out)
    }

    /// Every transition, in order.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn all_transitions(&self) -> Result<Vec<Transition>, DbError> {
        self.bodies("SELECT body FROM transitions ORDER BY id", params![])
    }

    fn bodies<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<T>, DbError> {
        let mut stmt = self.0.prepare_cached(sql)?;
        let rows = stmt.query_map(params, |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for body in rows {
            out.push(serde_json::from_str(&body?)?);
        }
        Ok(out)
    }
}

/// An event body as stored. One stored before values were checked may hold what JSON cannot
/// carry (a NaN stored as `null`): such attributes are left out rather than making the event,
/// and its case, unreadable.
fn decode_event(body: &str) -> Result<Event, DbError> {
    match serde_json::from_str(body) {
        Ok(event) => Ok(event),
        Err(strict) => {
            let mut value: serde_json::Value = serde_json::from_str(body)?;
            let Some(attributes) = value
                .get_mut("attributes")
                .and_then(serde_json::Value::as_object_mut)
            else {
                return Err(strict.into());
            };
            attributes.retain(|_, v| v.is_boolean() || v.is_number() || v.is_string());
            tracing::warn!(error = %strict, "a stored event held unreadable attributes; left out");
            Ok(serde_json::from_value(value)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::event;

    #[test]
    fn events_are_known_by_id_so_a_new_store_may_reuse_a_seq_and_old_rows_migrate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.db");
        let b = BoxId::parse("box-1").unwrap();
        let now = Timestamp::from_unix_millis(1_767_225_700_000);
        {
            // a database of a hub before version 4
            let mut conn = Connection::open(&path).unwrap();
            let tx = conn.transaction().unwrap();
            for sql in &MIGRATIONS[..3] {
                tx.execute_batch(sql).unwrap();
            }
            tx.pragma_update(None, "user_version", 3).unwrap();
            tx.execute(
                "INSERT INTO events (box_id, seq, event_id, received_at, body) VALUES (?1, 1, ?2, 0, ?3)",
                params![b.as_str(), event(1, 1).id.to_string(), serde_json::to_string(&event(1, 1)).unwrap()],
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let mut db = Db::open(&path).unwrap();
        db.atomically(|tx| {
            assert_eq!(tx.last_seq(&b)?, Some(Seq(1)), "the old row is kept");
            assert!(!tx.insert_event(&b, &event(1, 1), now)?, "known by its id");
            assert!(
                tx.insert_event(&b, &event(1, 2), now)?,
                "seq 1 of another store"
            );
            Ok::<_, DbError>(())
        })
        .unwrap();
        drop(db);
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        assert!(matches!(
            Db::open(&path),
            Err(DbError::SchemaTooNew { found: 99, .. })
        ));
    }
}

#[cfg(test)]
mod outbox_tests {
    use super::*;
    use crate::cases::CaseChange;

    #[test]
    fn pruning_keeps_what_a_webhook_has_not_done_and_ids_never_start_again() {
        let mut db = Db::open_in_memory().unwrap();
        let t = Timestamp::from_unix_millis;
        let case: crate::cases::Case = serde_json::from_value(serde_json::json!({
            "id": 1, "category": "0102", "state": "reported", "source": "box-1",
            "lat": 31.28, "lon": 120.58, "cell": null, "candidate_cells": [], "worker": null,
            "department": "sanitation-pj", "level": 0, "observed_at": 0, "last_observed_at": 0,
            "event_count": 1, "deadline": null, "escalate_at": null, "warned": false,
            "escalations": 0, "reworks": 0, "returns": 0, "description": "",
            "created_at": 0, "updated_at": 0
        }))
        .unwrap();
        db.atomically(|tx| -> Result<(), DbError> {
            for i in 0..4 {
                let mut c = CaseChange {
                    id: 0,
                    action: "created".into(),
                    case: case.clone(),
                };
                tx.record_change(&mut c, t(i))?;
                assert_eq!(c.id, i + 1);
            }
            tx.set_webhook_cursor("sanitation-pj", 2)?;
            tx.set_webhook_cursor("sanitation-pj", 1)?; // never back
            assert_eq!(tx.webhook_cursor("sanitation-pj")?, Some(2));
            assert_eq!(
                tx.prune_changes(t(100))?,
                2,
                "only what the webhook is done with"
            );
            tx.set_webhook_cursor("sanitation-pj", 4)?;
            assert_eq!(tx.prune_changes(t(100))?, 1, "the newest stays");
            let mut c = CaseChange {
                id: 0,
                action: "merged".into(),
                case: case.clone(),
            };
            tx.record_change(&mut c, t(200))?;
            assert_eq!(c.id, 5);
            assert_eq!(tx.changes_after("sanitation-pj", 4, 10)?.len(), 1);
            Ok(())
        })
        .unwrap();
    }
}

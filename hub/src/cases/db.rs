//! Storage for events, cases, their transitions and the change outbox, on SQLite or
//! PostgreSQL (through [`crate::storage`]).
//!
//! The boundary is deliberately narrow: [`Db::atomically`] hands a [`Tx`] with a handful of
//! typed operations, and cases are stored as JSON bodies beside the few columns that queries
//! filter on. Each operation's SQL is written once where the engines agree and side by side
//! where they differ. Migrations are embedded per engine and applied on open; a newer schema
//! is refused. On PostgreSQL several hub processes share the tables: the operations that read
//! and then change take row locks (`FOR UPDATE`) or advisory locks, named in their docs. This
//! module must not hold workflow rules.

use std::path::Path;

use protocol::{BoxId, CategoryCode, Event, Seq, Timestamp};
use rusqlite::Connection;
use sha2::Digest as _;

use crate::cases::{Case, CaseId, CaseState, Transition};
use crate::storage::{self, DatabaseUrl, Engine, EngineKind, PoolSettings, Sql, StorageError, Val};

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
    // Commands for boxes connected to another hub process on the same database (a re-check
    // asked through one process): the process holding the box's connection takes, sends and
    // answers them.
    r#"
CREATE TABLE relayed_commands (
    id TEXT PRIMARY KEY,
    box_id TEXT NOT NULL,
    action TEXT NOT NULL,
    asked_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    taken_at INTEGER,
    answered_at INTEGER,
    result TEXT,
    failure TEXT
);
CREATE INDEX relayed_waiting ON relayed_commands (box_id) WHERE taken_at IS NULL;
"#,
    SERVED_FILES_SQLITE,
];

/// Every version of the grid, duty list and work calendar a hub process served (by SHA-256 of
/// the text), and what each process serves now, so that `hub doctor` finds processes that
/// route by different files and a case's routing can be traced to the text in force.
const SERVED_FILES_SQLITE: &str = r#"
CREATE TABLE file_versions (
    kind TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    body TEXT NOT NULL,
    first_served_at INTEGER NOT NULL,
    PRIMARY KEY (kind, sha256)
);
CREATE TABLE hub_processes (
    process TEXT PRIMARY KEY,
    started_at INTEGER NOT NULL,
    seen_at INTEGER NOT NULL,
    files TEXT NOT NULL
);
"#;

/// [`SERVED_FILES_SQLITE`] on PostgreSQL.
const SERVED_FILES_POSTGRES: &str = r#"
CREATE TABLE file_versions (
    kind TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    body TEXT NOT NULL,
    first_served_at BIGINT NOT NULL,
    PRIMARY KEY (kind, sha256)
);
CREATE TABLE hub_processes (
    process TEXT PRIMARY KEY,
    started_at BIGINT NOT NULL,
    seen_at BIGINT NOT NULL,
    files TEXT NOT NULL
);
"#;

/// The same schema on PostgreSQL, applied in order (its own numbering: the `cases` row of
/// `gridsense_schema`). Bodies of cases are JSONB so that queries read fields of them (the
/// departments a case was dispatched to); the columns queries filter on are kept beside them.
const POSTGRES_MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE events (
    event_id TEXT PRIMARY KEY,
    box_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    case_id BIGINT,
    received_at BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX events_box_seq ON events (box_id, seq);
CREATE INDEX events_case ON events (case_id);
CREATE TABLE cases (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    category TEXT NOT NULL,
    state TEXT NOT NULL,
    last_observed_at BIGINT NOT NULL,
    escalate_at BIGINT,
    lat DOUBLE PRECISION,
    lon DOUBLE PRECISION,
    body JSONB NOT NULL,
    worker TEXT GENERATED ALWAYS AS (body ->> 'worker') STORED,
    department TEXT GENERATED ALWAYS AS (body ->> 'department') STORED
);
CREATE INDEX cases_open ON cases (category, state, last_observed_at);
CREATE INDEX cases_worker ON cases (worker, id);
CREATE INDEX cases_department ON cases (department, id);
CREATE INDEX cases_near ON cases (category, lat, lon, last_observed_at);
CREATE INDEX cases_escalate ON cases (escalate_at) WHERE escalate_at IS NOT NULL;
CREATE INDEX cases_finished ON cases (((body ->> 'updated_at')::BIGINT))
    WHERE state IN ('closed', 'rejected');
CREATE TABLE transitions (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    case_id BIGINT NOT NULL REFERENCES cases (id),
    body TEXT NOT NULL
);
CREATE INDEX transitions_case ON transitions (case_id);
CREATE TABLE changes (
    id BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
    case_id BIGINT NOT NULL,
    department TEXT,
    action TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX changes_department ON changes (department, id);
CREATE INDEX changes_at ON changes (at);
CREATE TABLE webhook_cursors (
    department TEXT PRIMARY KEY,
    done_id BIGINT NOT NULL
);
CREATE TABLE webhook_failures (
    department TEXT NOT NULL,
    change_id BIGINT NOT NULL,
    at BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    last_error TEXT NOT NULL,
    PRIMARY KEY (department, change_id)
);
CREATE TABLE rechecks (
    request_id TEXT PRIMARY KEY,
    case_id BIGINT NOT NULL,
    box_id TEXT NOT NULL,
    asked_at BIGINT NOT NULL,
    answered_at BIGINT
);
CREATE TABLE evidence_expired (
    case_id BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
    files BIGINT NOT NULL,
    bytes BIGINT NOT NULL
);
"#,
    r#"
CREATE TABLE relayed_commands (
    id TEXT PRIMARY KEY,
    box_id TEXT NOT NULL,
    action TEXT NOT NULL,
    asked_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    taken_at BIGINT,
    answered_at BIGINT,
    result TEXT,
    failure TEXT
);
CREATE INDEX relayed_waiting ON relayed_commands (box_id) WHERE taken_at IS NULL;
"#,
    SERVED_FILES_POSTGRES,
];

/// The schema version this hub writes on SQLite (`PRAGMA user_version`): the number of
/// migrations.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The schema version this hub writes on PostgreSQL (the `cases` row of `gridsense_schema`).
pub const POSTGRES_SCHEMA_VERSION: i64 = POSTGRES_MIGRATIONS.len() as i64;

/// The store's name in `gridsense_schema`.
pub const STORE: &str = "cases";

/// A hub process and the files it serves (see [`Db::serving`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServingProcess {
    /// Its name (`gridsense-hub pid N on HOST`).
    pub process: String,
    /// When it started serving.
    pub started_at: Timestamp,
    /// When it last said it still serves.
    pub seen_at: Timestamp,
    /// SHA-256 (hex) of each file it serves, by kind.
    pub files: std::collections::BTreeMap<String, String>,
}

/// How long a hub process that stopped saying it serves stays in `hub_processes`.
const PROCESS_FORGOTTEN_MS: i64 = 7 * 86_400_000;

/// How a served file is named in `file_versions` and `hub_processes`: the SHA-256 of its
/// bytes in hex (what `hub doctor` computes of the files it reads, to compare).
pub fn file_sha256(bytes: &[u8]) -> String {
    protocol::Digest(sha2::Sha256::digest(bytes).into()).to_hex()
}

/// The hub processes seen at or after `since`, by name.
///
/// # Errors
/// [`StorageError`]; a row whose files do not parse is skipped.
pub fn serving_processes(
    engine: &Engine,
    since: Timestamp,
) -> Result<Vec<ServingProcess>, StorageError> {
    engine.atomically(|tx| {
        tx.query(
            &Sql::same(
                "SELECT process, started_at, seen_at, files FROM hub_processes \
                 WHERE seen_at >= ?1 ORDER BY process",
            ),
            &[since.as_unix_millis().into()],
            |r| {
                Ok::<_, StorageError>(ServingProcess {
                    process: r.text(0)?,
                    started_at: Timestamp::from_unix_millis(r.int(1)?),
                    seen_at: Timestamp::from_unix_millis(r.int(2)?),
                    files: serde_json::from_str(&r.text(3)?).unwrap_or_default(),
                })
            },
        )
    })
}

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

/// Where a relayed command stands (see [`Tx::relayed_state`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayedState {
    /// No hub process took it yet.
    Waiting,
    /// The process holding the box's connection sent it.
    Taken,
    /// The box's result (JSON), or why there is none.
    Answered(Result<String, String>),
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
    /// The database failed (either engine), or was written by a newer hub.
    #[error("database operation failed: {0}")]
    Storage(#[from] StorageError),
    /// A stored body could not be encoded or decoded.
    #[error("stored record is malformed")]
    Body(#[from] serde_json::Error),
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> DbError {
        DbError::Storage(e.into())
    }
}

/// The hub database, on SQLite or PostgreSQL.
#[derive(Debug)]
pub struct Db {
    engine: Engine,
}

/// An error of [`Db::atomically`]'s closure carried through [`Engine::atomically`] (whose
/// errors convert from [`StorageError`]).
struct Carried<E>(E);

impl<E: From<DbError>> From<StorageError> for Carried<E> {
    fn from(e: StorageError) -> Self {
        Carried(E::from(DbError::Storage(e)))
    }
}

/// Where an event of a category may merge: its category, and the latitude and longitude spans
/// (degrees) around it.
pub type Neighbourhood<'a> = (&'a CategoryCode, (f64, f64), (f64, f64));

/// One transaction's operations.
#[derive(Debug, Clone, Copy)]
pub struct Tx<'t, 'c>(&'t storage::Tx<'c>);

/// What `record_change` locks on PostgreSQL: change ids are handed out under it, so they
/// commit in the order they are given and a reader that saw id n never later finds a smaller
/// one appear.
const CHANGES_LOCK: &str = "gridsense cases: changes";

/// The memo ([`storage::Tx::memo`]) holding the next change id within a transaction.
const NEXT_CHANGE: &str = "next change id";

/// The notification channel a recorded change is announced on (PostgreSQL).
const CHANGES_CHANNEL: &str = "gridsense_changes";

/// Grid squares (degrees) for the merge locks: a new event locks the squares its merge
/// neighbourhood touches, so that two processes cannot both find no case nearby and each
/// open one.
const MERGE_SQUARE_DEG: f64 = 0.01;

/// More squares than this and the whole category is locked instead.
const MAX_MERGE_SQUARES: usize = 16;

impl Db {
    /// Opens (creating if needed) and migrates the SQLite database at `path`.
    ///
    /// # Errors
    /// [`DbError`] when the file cannot be opened or migrated.
    pub fn open(path: &Path) -> Result<Db, DbError> {
        Self::migrated(Engine::open_sqlite(path)?)
    }

    /// An in-memory SQLite database (tests, tools).
    ///
    /// # Errors
    /// [`DbError`] when migration fails.
    pub fn open_in_memory() -> Result<Db, DbError> {
        Self::migrated(Engine::sqlite(Connection::open_in_memory()?))
    }

    /// Opens the database `url` names: a SQLite file, or a pool to a PostgreSQL server (whose
    /// schema is migrated once, however many hub processes start together).
    ///
    /// # Errors
    /// [`DbError`] when it cannot be reached or migrated.
    pub fn connect(url: &DatabaseUrl, pool: PoolSettings) -> Result<Db, DbError> {
        match url {
            DatabaseUrl::Sqlite(path) => Self::open(path),
            DatabaseUrl::Postgres(url) => Self::migrated(Engine::connect_postgres(url, pool)?),
        }
    }

    fn migrated(engine: Engine) -> Result<Db, DbError> {
        engine.migrate(STORE, MIGRATIONS, POSTGRES_MIGRATIONS)?;
        Ok(Db { engine })
    }

    /// The leadership of the role `name` among the hub processes sharing this database (see
    /// [`storage::Leadership`]).
    pub fn leadership(&self, name: &'static str) -> storage::Leadership {
        self.engine.leadership(name)
    }

    /// Another handle on the same database for a thread of its own, when the engine is shared
    /// by several processes (PostgreSQL); `None` on SQLite.
    pub fn shared(&self) -> Option<Db> {
        self.engine.shared().map(|engine| Db { engine })
    }

    /// A connection that wakes when any hub process on the database records a case change
    /// (see [`Tx::record_change`]); `None` on SQLite.
    ///
    /// # Errors
    /// [`DbError`] when the server cannot be reached.
    pub fn listen_changes(&self) -> Result<Option<storage::Listener>, DbError> {
        Ok(self.engine.listen(CHANGES_CHANNEL)?)
    }

    /// Which engine holds it.
    pub fn engine(&self) -> EngineKind {
        self.engine.kind()
    }

    /// Records that `process` serves `files` (kind and text: the grid, the duty list, the
    /// calendar) from `now`: each text is kept once by its SHA-256, and the process's row says
    /// which it serves.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn serving(
        &self,
        process: &str,
        files: &[(&str, &str)],
        now: Timestamp,
    ) -> Result<(), DbError> {
        let mut hashes = std::collections::BTreeMap::new();
        self.atomically(|tx| -> Result<(), DbError> {
            for (kind, body) in files {
                let sha = file_sha256(body.as_bytes());
                tx.0.execute(
                    &Sql::same(
                        "INSERT INTO file_versions (kind, sha256, body, first_served_at) \
                         VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                    ),
                    &[
                        (*kind).into(),
                        sha.clone().into(),
                        (*body).into(),
                        now.as_unix_millis().into(),
                    ],
                )?;
                hashes.insert((*kind).to_owned(), sha);
            }
            // processes gone a week (each restart is a new pid) are forgotten
            tx.0.execute(
                &Sql::same("DELETE FROM hub_processes WHERE seen_at < ?1"),
                &[now
                    .as_unix_millis()
                    .saturating_sub(PROCESS_FORGOTTEN_MS)
                    .into()],
            )?;
            let files = serde_json::to_string(&hashes)?;
            tx.0.execute(
                &Sql::same(
                    "INSERT INTO hub_processes (process, started_at, seen_at, files) \
                     VALUES (?1, ?2, ?2, ?3) ON CONFLICT (process) DO UPDATE \
                     SET started_at = excluded.started_at, seen_at = excluded.seen_at, \
                         files = excluded.files",
                ),
                &[process.into(), now.as_unix_millis().into(), files.into()],
            )?;
            Ok(())
        })
    }

    /// Records that `process` is still serving at `now`.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn still_serving(&self, process: &str, now: Timestamp) -> Result<(), DbError> {
        self.atomically(|tx| -> Result<(), DbError> {
            tx.0.execute(
                &Sql::same("UPDATE hub_processes SET seen_at = ?2 WHERE process = ?1"),
                &[process.into(), now.as_unix_millis().into()],
            )?;
            Ok(())
        })
    }

    /// The engine under the store (for copying it).
    pub(crate) fn storage_engine(&self) -> &Engine {
        &self.engine
    }

    /// The schema version in place.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn schema_version(&self) -> Result<i64, DbError> {
        Ok(self.engine.schema_version(STORE)?)
    }

    /// Runs `f` in one transaction, committed when it returns `Ok` (see
    /// [`Engine::atomically`]: on SQLite it holds the write lock from its first statement; on
    /// PostgreSQL the operations that read and then change take the locks they need).
    ///
    /// # Errors
    /// Whatever `f` returns, or [`DbError`] when the commit fails.
    pub fn atomically<T, E: From<DbError>>(
        &self,
        f: impl FnOnce(&Tx<'_, '_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.engine
            .atomically(|tx| f(&Tx(tx)).map_err(Carried))
            .map_err(|Carried(e)| e)
    }
}

impl Tx<'_, '_> {
    /// Which engine runs this transaction.
    pub fn engine(&self) -> EngineKind {
        self.0.engine()
    }

    /// Takes the locks that make looking for a case to merge into and then opening one a
    /// single step across hub processes: for each `(category, lat, lon)` box around an event,
    /// every grid square (0.01° a side) it touches, all in ascending key order so
    /// that two transactions cannot each hold one and wait for the other. On SQLite the
    /// transaction holds the file's write lock already, and this does nothing.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn lock_neighbourhoods(&self, spans: &[Neighbourhood<'_>]) -> Result<(), DbError> {
        if self.engine() == EngineKind::Sqlite {
            return Ok(());
        }
        let mut keys: Vec<i64> = spans
            .iter()
            .flat_map(|(category, lat, lon)| neighbourhood_keys(category, *lat, *lon))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        for key in keys {
            self.0.lock(key)?;
        }
        Ok(())
    }

    /// Takes the lock named `name` until the transaction ends (an advisory lock on
    /// PostgreSQL; nothing more on SQLite, whose transactions hold the write lock): for
    /// numbers read and then used, like the next citizen report's.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn lock_name(&self, name: &str) -> Result<(), DbError> {
        Ok(self.0.lock(storage::lock_key(name))?)
    }

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
            &Sql::same(
                "INSERT INTO events (box_id, seq, event_id, received_at, body) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
            ),
            &[
                box_id.as_str().into(),
                event.seq.0.into(),
                event.id.to_string().into(),
                received_at.as_unix_millis().into(),
                serde_json::to_string(event)?.into(),
            ],
        )?;
        Ok(n == 1)
    }

    /// Stores events of several boxes in one statement, as [`Tx::insert_event`] does one;
    /// returns the ids (as stored: text) of those new to the database (an event stored
    /// before is not).
    ///
    /// # Errors
    /// [`DbError`].
    pub fn insert_events(
        &self,
        events: &[(&BoxId, &Event)],
        received_at: Timestamp,
    ) -> Result<std::collections::HashSet<String>, DbError> {
        let mut new = std::collections::HashSet::new();
        if events.is_empty() {
            return Ok(new);
        }
        let mut args = Vec::with_capacity(events.len() * 5);
        let mut rows = Vec::with_capacity(events.len());
        for (i, (box_id, event)) in events.iter().enumerate() {
            let n = i * 5;
            rows.push(format!(
                "(?{}, ?{}, ?{}, ?{}, ?{})",
                n + 1,
                n + 2,
                n + 3,
                n + 4,
                n + 5
            ));
            args.extend([
                Val::from(box_id.as_str()),
                event.seq.0.into(),
                event.id.to_string().into(),
                received_at.as_unix_millis().into(),
                serde_json::to_string(event)?.into(),
            ]);
        }
        let sql = Sql::same(format!(
            "INSERT INTO events (box_id, seq, event_id, received_at, body) VALUES {} \
             ON CONFLICT DO NOTHING RETURNING event_id",
            rows.join(", ")
        ));
        new.extend(self.0.query(&sql, &args, |r| r.text(0))?);
        Ok(new)
    }

    /// Links a stored event to its case.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn link_event(&self, event: &protocol::EventId, case: CaseId) -> Result<(), DbError> {
        self.0.execute(
            &Sql::same("UPDATE events SET case_id = ?2 WHERE event_id = ?1"),
            &[event.to_string().into(), case.0.into()],
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
        self.0.query_first(
            &Sql::same(
                "SELECT body, case_id FROM events WHERE box_id = ?1 AND seq = ?2 \
                 ORDER BY received_at LIMIT 1",
            ),
            &[box_id.into(), seq.0.into()],
            |r| Ok((decode_event(&r.text(0)?)?, r.opt_int(1)?.map(CaseId))),
        )
    }

    /// Every event of `box_id` in sequence order, with its case.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn box_events(&self, box_id: &str) -> Result<Vec<(Event, Option<CaseId>)>, DbError> {
        self.0.query(
            &Sql::same(
                "SELECT body, case_id FROM events WHERE box_id = ?1 ORDER BY seq, received_at",
            ),
            &[box_id.into()],
            |r| Ok((decode_event(&r.text(0)?)?, r.opt_int(1)?.map(CaseId))),
        )
    }

    /// Records a case change in the outbox, giving it its id: increasing, and committed in
    /// that order (on PostgreSQL under a lock held to the commit; on SQLite the transaction
    /// holds the write lock), so the next id is the highest plus one.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn record_change(
        &self,
        change: &mut crate::cases::CaseChange,
        at: Timestamp,
    ) -> Result<(), DbError> {
        // the lock and the highest id once a transaction: later changes of it count on
        let first = self.0.memo(NEXT_CHANGE).is_none();
        change.id = match self.0.memo(NEXT_CHANGE) {
            Some(next) => next,
            None => {
                self.lock_name(CHANGES_LOCK)?;
                self.0
                    .query_first(
                        &Sql::same("SELECT COALESCE(MAX(id), 0) + 1 FROM changes"),
                        &[],
                        |r| r.int(0),
                    )?
                    .unwrap_or(1)
            }
        };
        self.0.set_memo(NEXT_CHANGE, change.id + 1);
        self.0.execute(
            &Sql::same(
                "INSERT INTO changes (id, at, case_id, department, action, body) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            ),
            &[
                change.id.into(),
                at.as_unix_millis().into(),
                change.case.id.0.into(),
                change.case.department.as_ref().map(|d| d.as_str()).into(),
                change.action.as_str().into(),
                serde_json::to_string(change)?.into(),
            ],
        )?;
        if first && self.engine() == EngineKind::Postgres {
            // delivered to every listening hub process when this transaction commits (once:
            // the listeners read every change after the last they told)
            self.0
                .execute(&Sql::same(format!("NOTIFY {CHANGES_CHANNEL}")), &[])?;
        }
        Ok(())
    }

    /// Up to `limit` changes of every case after change `after`, oldest first (what live
    /// listeners of any hub process are told).
    ///
    /// # Errors
    /// [`DbError`].
    pub fn changes_since(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<crate::cases::CaseChange>, DbError> {
        self.0.query(
            &Sql::same("SELECT body FROM changes WHERE id > ?1 ORDER BY id LIMIT ?2"),
            &[after.into(), limit.into()],
            |r| Ok::<_, DbError>(serde_json::from_str(&r.text(0)?)?),
        )
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
        self.0.query(
            &Sql::same(
                "SELECT id, body FROM changes WHERE department = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
            ),
            &[department.into(), after.into(), limit.into()],
            |r| Ok::<_, DbError>((r.int(0)?, r.text(1)?)),
        )
    }

    /// The id of the newest change (0 before the first).
    ///
    /// # Errors
    /// [`DbError`].
    pub fn last_change_id(&self) -> Result<i64, DbError> {
        Ok(self
            .0
            .query_first(
                &Sql::same("SELECT COALESCE(MAX(id), 0) FROM changes"),
                &[],
                |r| r.int(0),
            )?
            .unwrap_or(0))
    }

    /// How far a department's webhook has been done (delivered or given up on).
    ///
    /// # Errors
    /// [`DbError`].
    pub fn webhook_cursor(&self, department: &str) -> Result<Option<i64>, DbError> {
        Ok(self.0.query_first(
            &Sql::same("SELECT done_id FROM webhook_cursors WHERE department = ?1"),
            &[department.into()],
            |r| r.int(0),
        )?)
    }

    /// Moves a department's webhook cursor (never back).
    ///
    /// # Errors
    /// [`DbError`].
    pub fn set_webhook_cursor(&self, department: &str, done: i64) -> Result<(), DbError> {
        self.0.execute(
            &Sql::each(
                "INSERT INTO webhook_cursors (department, done_id) VALUES (?1, ?2) \
                 ON CONFLICT (department) DO UPDATE SET done_id = MAX(done_id, excluded.done_id)",
                "INSERT INTO webhook_cursors (department, done_id) VALUES ($1, $2) \
                 ON CONFLICT (department) DO UPDATE \
                 SET done_id = GREATEST(webhook_cursors.done_id, excluded.done_id)",
            ),
            &[department.into(), done.into()],
        )?;
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
        self.0.execute(
            &Sql::same(
                "INSERT INTO webhook_failures (department, change_id, at, attempts, last_error) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (department, change_id) DO UPDATE \
                 SET at = excluded.at, attempts = excluded.attempts, last_error = excluded.last_error",
            ),
            &[
                department.into(),
                change.into(),
                at.as_unix_millis().into(),
                attempts.into(),
                error.into(),
            ],
        )?;
        Ok(())
    }

    /// Deletes changes recorded before `before` that every webhook cursor has passed (the
    /// newest always stays, so that ids never start again); returns how many.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn prune_changes(&self, before: Timestamp) -> Result<u64, DbError> {
        Ok(self.0.execute(
            // the newest change stays: ids continue from it
            &Sql::same(
                "DELETE FROM changes WHERE at < ?1 \
                 AND id <= (SELECT COALESCE(MIN(done_id), (SELECT MAX(id) FROM changes)) FROM webhook_cursors) \
                 AND id < (SELECT MAX(id) FROM changes)",
            ),
            &[before.as_unix_millis().into()],
        )?)
    }

    /// Records a command for a box that another hub process may hold the connection of:
    /// `action` and, later, the result are JSON (see [`Tx::take_relayed`]).
    ///
    /// # Errors
    /// [`DbError`].
    pub fn relay_command(
        &self,
        id: &str,
        box_id: &BoxId,
        action: &str,
        asked_at: Timestamp,
        expires_at: Timestamp,
    ) -> Result<(), DbError> {
        self.0.execute(
            &Sql::same(
                "INSERT INTO relayed_commands (id, box_id, action, asked_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            ),
            &[
                id.into(),
                box_id.as_str().into(),
                action.into(),
                asked_at.as_unix_millis().into(),
                expires_at.as_unix_millis().into(),
            ],
        )?;
        Ok(())
    }

    /// Takes the unexpired relayed commands for any of `boxes` that nobody took yet, marking
    /// them taken at `now`: `(id, box id, action JSON)`. On PostgreSQL rows another process is
    /// taking are skipped, so each command is taken once.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn take_relayed(
        &self,
        boxes: &[BoxId],
        now: Timestamp,
    ) -> Result<Vec<(String, String, String)>, DbError> {
        if boxes.is_empty() {
            return Ok(Vec::new());
        }
        let mut args: Vec<Val> = vec![now.as_unix_millis().into()];
        args.extend(boxes.iter().map(|b| Val::from(b.as_str())));
        let (marks_sqlite, marks_pg): (Vec<String>, Vec<String>) = (2..=args.len())
            .map(|i| (format!("?{i}"), format!("${i}")))
            .unzip();
        let taken = self.0.query(
            &Sql::each(
                format!(
                    "SELECT id, box_id, action FROM relayed_commands WHERE taken_at IS NULL \
                     AND expires_at > ?1 AND box_id IN ({}) ORDER BY asked_at",
                    marks_sqlite.join(", ")
                ),
                format!(
                    "SELECT id, box_id, action FROM relayed_commands WHERE taken_at IS NULL \
                     AND expires_at > $1 AND box_id IN ({}) ORDER BY asked_at \
                     FOR UPDATE SKIP LOCKED",
                    marks_pg.join(", ")
                ),
            ),
            &args,
            |r| Ok::<_, DbError>((r.text(0)?, r.text(1)?, r.text(2)?)),
        )?;
        for (id, _, _) in &taken {
            self.0.execute(
                &Sql::same("UPDATE relayed_commands SET taken_at = ?2 WHERE id = ?1"),
                &[id.as_str().into(), now.as_unix_millis().into()],
            )?;
        }
        Ok(taken)
    }

    /// Records what came of a relayed command: the box's result (JSON), or why there is none.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn answer_relayed(
        &self,
        id: &str,
        outcome: Result<&str, &str>,
        at: Timestamp,
    ) -> Result<(), DbError> {
        let (result, failure) = match outcome {
            Ok(result) => (Some(result), None),
            Err(failure) => (None, Some(failure)),
        };
        self.0.execute(
            &Sql::same(
                "UPDATE relayed_commands SET answered_at = ?2, result = ?3, failure = ?4 \
                 WHERE id = ?1",
            ),
            &[
                id.into(),
                at.as_unix_millis().into(),
                result.into(),
                failure.into(),
            ],
        )?;
        Ok(())
    }

    /// Where a relayed command stands: whether a process took it, and, once it was answered,
    /// the result (JSON) or the failure. `None` for an unknown id.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn relayed_state(&self, id: &str) -> Result<Option<RelayedState>, DbError> {
        self.0.query_first(
            &Sql::same(
                "SELECT taken_at, answered_at, result, failure FROM relayed_commands WHERE id = ?1",
            ),
            &[id.into()],
            |r| {
                Ok::<_, DbError>(match (r.opt_int(1)?, r.opt_text(2)?) {
                    (Some(_), Some(result)) => RelayedState::Answered(Ok(result)),
                    (Some(_), None) => {
                        RelayedState::Answered(Err(r.opt_text(3)?.unwrap_or_default()))
                    }
                    (None, _) if r.opt_int(0)?.is_some() => RelayedState::Taken,
                    (None, _) => RelayedState::Waiting,
                })
            },
        )
    }

    /// Deletes relayed commands that expired before `before`; returns how many.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn prune_relayed(&self, before: Timestamp) -> Result<u64, DbError> {
        Ok(self.0.execute(
            &Sql::same("DELETE FROM relayed_commands WHERE expires_at < ?1"),
            &[before.as_unix_millis().into()],
        )?)
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
        self.0.execute(
            &Sql::same(
                "INSERT INTO rechecks (request_id, case_id, box_id, asked_at) VALUES (?1, ?2, ?3, ?4)",
            ),
            &[
                request_id.into(),
                case.0.into(),
                box_id.as_str().into(),
                asked_at.as_unix_millis().into(),
            ],
        )?;
        Ok(())
    }

    /// A re-check request: its case, the box asked, when, and whether it was answered. Locked
    /// until the transaction ends on PostgreSQL, so that an answer is taken once.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn recheck(&self, request_id: &str) -> Result<Option<RecheckRequest>, DbError> {
        self.0.query_first(
            &Sql::each(
                "SELECT case_id, box_id, asked_at, answered_at FROM rechecks WHERE request_id = ?1",
                "SELECT case_id, box_id, asked_at, answered_at FROM rechecks WHERE request_id = $1 \
                 FOR UPDATE",
            ),
            &[request_id.into()],
            |r| {
                Ok::<_, DbError>(RecheckRequest {
                    case: CaseId(r.int(0)?),
                    box_id: r.text(1)?,
                    asked_at: Timestamp::from_unix_millis(r.int(2)?),
                    answered: r.opt_int(3)?.is_some(),
                })
            },
        )
    }

    /// Marks a re-check request answered.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn answer_recheck(&self, request_id: &str, at: Timestamp) -> Result<(), DbError> {
        self.0.execute(
            &Sql::same("UPDATE rechecks SET answered_at = ?2 WHERE request_id = ?1"),
            &[request_id.into(), at.as_unix_millis().into()],
        )?;
        Ok(())
    }

    /// The highest sequence number stored for a box.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn last_seq(&self, box_id: &BoxId) -> Result<Option<Seq>, DbError> {
        let v = self.0.query_first(
            &Sql::same("SELECT MAX(seq) FROM events WHERE box_id = ?1"),
            &[box_id.as_str().into()],
            |r| r.opt_int(0),
        )?;
        Ok(v.flatten().map(|s| Seq(s as u64)))
    }

    /// Open cases of `category` observed at or after `since` whose position lies in the box
    /// `lat` × `lon` (degrees; the caller measures the exact distance). Locked until the
    /// transaction ends on PostgreSQL (the caller may merge into one).
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
        self.bodies(
            &Sql::each(
                // without statistics the planner took `cases_open` and visited every case of
                // the category; the position index narrows to the neighbourhood
                "SELECT body FROM cases INDEXED BY cases_near WHERE category = ?1 \
                 AND lat BETWEEN ?3 AND ?4 AND lon BETWEEN ?5 AND ?6 \
                 AND state NOT IN ('closed', 'rejected') AND last_observed_at >= ?2",
                "SELECT body FROM cases WHERE category = $1 \
                 AND lat BETWEEN $3 AND $4 AND lon BETWEEN $5 AND $6 \
                 AND state NOT IN ('closed', 'rejected') AND last_observed_at >= $2 \
                 ORDER BY id FOR UPDATE",
            ),
            &[
                category.as_str().into(),
                since.as_unix_millis().into(),
                lat.0.into(),
                lat.1.into(),
                lon.0.into(),
                lon.1.into(),
            ],
        )
    }

    /// Open cases whose escalation time is at or before `now`. Locked until the transaction
    /// ends on PostgreSQL, and read again after a concurrent change, so that two hub
    /// processes checking deadlines at once escalate a case once.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn cases_to_escalate(&self, now: Timestamp) -> Result<Vec<Case>, DbError> {
        self.bodies(
            &Sql::each(
                "SELECT body FROM cases WHERE state NOT IN ('closed', 'rejected') \
                 AND escalate_at IS NOT NULL AND escalate_at <= ?1 ORDER BY id",
                "SELECT body FROM cases WHERE state NOT IN ('closed', 'rejected') \
                 AND escalate_at IS NOT NULL AND escalate_at <= $1 ORDER BY id FOR UPDATE",
            ),
            &[now.as_unix_millis().into()],
        )
    }

    /// Stores a new case and returns its number (also written into the stored body).
    ///
    /// # Errors
    /// [`DbError`].
    pub fn insert_case(&self, case: &Case) -> Result<CaseId, DbError> {
        let id = self.0.query_first(
            &Sql::same(
                "INSERT INTO cases (category, state, last_observed_at, escalate_at, body) \
                 VALUES (?1, ?2, ?3, ?4, '{}') RETURNING id",
            ),
            &[
                case.category.as_str().into(),
                case.state.as_str().into(),
                case.last_observed_at.as_unix_millis().into(),
                case.escalate_at.map(Timestamp::as_unix_millis).into(),
            ],
            |r| r.int(0),
        )?;
        let id = CaseId(id.ok_or(StorageError::Type {
            column: 0,
            wanted: "the new case's id",
        })?);
        let mut stored = case.clone();
        stored.id = id;
        self.update_case(&stored)?;
        Ok(id)
    }

    /// Stores a new case and links the event that opened it to it, in one statement on
    /// PostgreSQL (a round trip each counts there); returns the case's number (also written
    /// into the stored body).
    ///
    /// # Errors
    /// [`DbError`].
    pub fn insert_case_for(
        &self,
        case: &Case,
        event: &protocol::EventId,
    ) -> Result<CaseId, DbError> {
        if self.engine() == EngineKind::Sqlite {
            let id = self.insert_case(case)?;
            self.link_event(event, id)?;
            return Ok(id);
        }
        let id = self.0.query_first(
            &Sql::each(
                "", // SQLite took the three statements above
                "WITH n AS (SELECT nextval(pg_get_serial_sequence('cases', 'id')) AS id), \
                 c AS (INSERT INTO cases \
                     (id, category, state, last_observed_at, escalate_at, lat, lon, body) \
                     SELECT n.id, $1, $2, $3, $4, $5, $6, \
                         jsonb_set($7::jsonb, '{id}', to_jsonb(n.id)) FROM n RETURNING id), \
                 l AS (UPDATE events SET case_id = (SELECT id FROM c) WHERE event_id = $8) \
                 SELECT id FROM c",
            ),
            &[
                case.category.as_str().into(),
                case.state.as_str().into(),
                case.last_observed_at.as_unix_millis().into(),
                case.escalate_at.map(Timestamp::as_unix_millis).into(),
                case.lat.into(),
                case.lon.into(),
                serde_json::to_string(case)?.into(),
                event.to_string().into(),
            ],
            |r| r.int(0),
        )?;
        Ok(CaseId(id.ok_or(StorageError::Type {
            column: 0,
            wanted: "the new case's id",
        })?))
    }

    /// Overwrites a case, with the columns its indexes read (so they always match the body).
    ///
    /// # Errors
    /// [`DbError`].
    pub fn update_case(&self, case: &Case) -> Result<(), DbError> {
        self.0.execute(
            &Sql::same(
                "UPDATE cases SET state = ?2, last_observed_at = ?3, escalate_at = ?4, lat = ?5, \
                 lon = ?6, body = ?7 WHERE id = ?1",
            ),
            &[
                case.id.0.into(),
                case.state.as_str().into(),
                case.last_observed_at.as_unix_millis().into(),
                case.escalate_at.map(Timestamp::as_unix_millis).into(),
                case.lat.into(),
                case.lon.into(),
                serde_json::to_string(case)?.into(),
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
            &Sql::same("INSERT INTO transitions (case_id, body) VALUES (?1, ?2)"),
            &[t.case_id.0.into(), serde_json::to_string(t)?.into()],
        )?;
        Ok(())
    }

    /// Appends transitions, in order, in one statement.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn add_transitions(&self, transitions: &[Transition]) -> Result<(), DbError> {
        if transitions.is_empty() {
            return Ok(());
        }
        let mut args = Vec::with_capacity(transitions.len() * 2);
        let mut rows = Vec::with_capacity(transitions.len());
        for t in transitions {
            args.push(Val::from(t.case_id.0));
            args.push(serde_json::to_string(t)?.into());
            rows.push(format!("(?{}, ?{})", args.len() - 1, args.len()));
        }
        self.0.execute(
            &Sql::same(format!(
                "INSERT INTO transitions (case_id, body) VALUES {}",
                rows.join(", ")
            )),
            &args,
        )?;
        Ok(())
    }

    /// A case by number.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn case(&self, id: CaseId) -> Result<Option<Case>, DbError> {
        Ok(self
            .bodies(
                &Sql::same("SELECT body FROM cases WHERE id = ?1"),
                &[id.0.into()],
            )?
            .pop())
    }

    /// A case by number, to be changed: locked until the transaction ends on PostgreSQL, so
    /// that two hub processes acting on it at once take turns (the second sees the first's
    /// change) instead of one overwriting the other.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn case_to_change(&self, id: CaseId) -> Result<Option<Case>, DbError> {
        Ok(self
            .bodies(
                &Sql::each(
                    "SELECT body FROM cases WHERE id = ?1",
                    "SELECT body FROM cases WHERE id = $1 FOR UPDATE",
                ),
                &[id.0.into()],
            )?
            .pop())
    }

    /// How many cases are in each state, and how many open cases are past their deadline at
    /// `now` (for metrics). States with no case are left out.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn case_counts(&self, now: Timestamp) -> Result<(Vec<(String, u64)>, u64), DbError> {
        let by_state = self.0.query(
            &Sql::same("SELECT state, COUNT(*) FROM cases GROUP BY state ORDER BY state"),
            &[],
            |r| Ok::<_, DbError>((r.text(0)?, r.int(1)?.max(0) as u64)),
        )?;
        let overdue = self
            .0
            .query_first(
                &Sql::each(
                    "SELECT COUNT(*) FROM cases WHERE state NOT IN ('closed', 'rejected') \
                     AND json_extract(body, '$.deadline') IS NOT NULL \
                     AND json_extract(body, '$.deadline') < ?1",
                    "SELECT COUNT(*) FROM cases WHERE state NOT IN ('closed', 'rejected') \
                     AND (body ->> 'deadline')::BIGINT < $1",
                ),
                &[now.as_unix_millis().into()],
                |r| r.int(0),
            )?
            .unwrap_or(0);
        Ok((by_state, overdue.max(0) as u64))
    }

    /// Every case, oldest first.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn cases(&self) -> Result<Vec<Case>, DbError> {
        self.bodies(&Sql::same("SELECT body FROM cases ORDER BY id"), &[])
    }

    /// One page of cases in id order, and whether more follow it.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn cases_page(&self, q: &CasePageQuery) -> Result<(Vec<Case>, bool), DbError> {
        let mut sqlite = String::from("SELECT body FROM cases WHERE id > ?1");
        let mut postgres = String::from("SELECT body FROM cases WHERE id > $1");
        let mut args: Vec<Val> = vec![q.after.map_or(0, |c| c.0).into()];
        if let Some(w) = &q.worker {
            args.push(w.as_str().into());
            let n = args.len();
            sqlite.push_str(&format!(" AND worker = ?{n}"));
            postgres.push_str(&format!(" AND worker = ${n}"));
        }
        if let Some(d) = &q.department {
            args.push(d.as_str().into());
            // its current department and every one it was dispatched or escalated to before
            let n = args.len();
            sqlite.push_str(&format!(
                " AND (department = ?{n} OR EXISTS (SELECT 1 FROM json_each(body, '$.dispatched_to') WHERE value = ?{n}))"
            ));
            postgres.push_str(&format!(
                " AND (department = ${n} OR jsonb_exists(body -> 'dispatched_to', ${n}))"
            ));
        }
        if !q.states.is_empty() {
            let (mut marks_sqlite, mut marks_pg) = (Vec::new(), Vec::new());
            for state in &q.states {
                args.push(state.as_str().into());
                marks_sqlite.push(format!("?{}", args.len()));
                marks_pg.push(format!("${}", args.len()));
            }
            sqlite.push_str(&format!(" AND state IN ({})", marks_sqlite.join(", ")));
            postgres.push_str(&format!(" AND state IN ({})", marks_pg.join(", ")));
        }
        args.push(q.limit.saturating_add(1).into());
        let n = args.len();
        sqlite.push_str(&format!(" ORDER BY id LIMIT ?{n}"));
        postgres.push_str(&format!(" ORDER BY id LIMIT ${n}"));
        let mut page: Vec<Case> = self.bodies(&Sql::each(sqlite, postgres), &args)?;
        let more = page.len() > q.limit;
        page.truncate(q.limit);
        Ok((page, more))
    }

    /// A statement that touches the database and nothing else.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn ping(&self) -> Result<(), DbError> {
        self.0.query_first(
            &Sql::each(
                "SELECT count(*) FROM sqlite_schema",
                "SELECT count(*) FROM cases WHERE false",
            ),
            &[],
            |_| Ok::<_, DbError>(()),
        )?;
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
        self.0.query(
            &Sql::each(
                "SELECT id FROM cases \
                 WHERE state IN ('closed', 'rejected') AND json_extract(body, '$.updated_at') < ?1 \
                   AND id NOT IN (SELECT case_id FROM evidence_expired) \
                 ORDER BY json_extract(body, '$.updated_at') LIMIT ?2",
                "SELECT id FROM cases \
                 WHERE state IN ('closed', 'rejected') AND (body ->> 'updated_at')::BIGINT < $1 \
                   AND id NOT IN (SELECT case_id FROM evidence_expired) \
                 ORDER BY (body ->> 'updated_at')::BIGINT LIMIT $2",
            ),
            &[before.as_unix_millis().into(), limit.into()],
            |r| Ok::<_, DbError>(CaseId(r.int(0)?)),
        )
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
            &Sql::same(
                "INSERT INTO evidence_expired (case_id, at, files, bytes) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (case_id) DO UPDATE \
                 SET at = excluded.at, files = excluded.files, bytes = excluded.bytes",
            ),
            &[
                id.0.into(),
                at.as_unix_millis().into(),
                files.into(),
                bytes.into(),
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
            &Sql::same("SELECT body FROM transitions WHERE case_id = ?1 ORDER BY id"),
            &[id.0.into()],
        )
    }

    /// The events merged into a case, in the order they were received, with their boxes.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn case_events(&self, id: CaseId) -> Result<Vec<(String, Event)>, DbError> {
        self.0.query(
            &Sql::same(
                "SELECT box_id, body FROM events WHERE case_id = ?1 \
                 ORDER BY received_at, box_id, seq",
            ),
            &[id.0.into()],
            |r| Ok((r.text(0)?, decode_event(&r.text(1)?)?)),
        )
    }

    /// Every transition, in order.
    ///
    /// # Errors
    /// [`DbError`].
    pub fn all_transitions(&self) -> Result<Vec<Transition>, DbError> {
        self.bodies(&Sql::same("SELECT body FROM transitions ORDER BY id"), &[])
    }

    fn bodies<T: serde::de::DeserializeOwned>(
        &self,
        sql: &Sql,
        args: &[Val],
    ) -> Result<Vec<T>, DbError> {
        self.0
            .query(sql, args, |r| Ok(serde_json::from_str(&r.text(0)?)?))
    }
}

/// The advisory lock keys for the merge neighbourhood of an event of `category` (see
/// [`Tx::lock_neighbourhoods`]), ascending.
fn neighbourhood_keys(category: &CategoryCode, lat: (f64, f64), lon: (f64, f64)) -> Vec<i64> {
    let square = |v: f64| (v / MERGE_SQUARE_DEG).floor() as i64;
    let (lat0, lat1) = (square(lat.0.min(lat.1)), square(lat.0.max(lat.1)));
    let (lon0, lon1) = (square(lon.0.min(lon.1)), square(lon.0.max(lon.1)));
    let count = (lat1.saturating_sub(lat0).saturating_add(1) as u128)
        .saturating_mul(lon1.saturating_sub(lon0).saturating_add(1) as u128);
    let mut keys = if count > MAX_MERGE_SQUARES as u128 || !lat.0.is_finite() || !lon.0.is_finite()
    {
        vec![storage::lock_key(&format!(
            "gridsense merge {}",
            category.as_str()
        ))]
    } else {
        let mut keys = Vec::new();
        for i in lat0..=lat1 {
            for j in lon0..=lon1 {
                keys.push(storage::lock_key(&format!(
                    "gridsense merge {} {i} {j}",
                    category.as_str()
                )));
            }
        }
        keys
    };
    keys.sort_unstable();
    keys.dedup();
    keys
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
            use rusqlite::params;
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
        let db = Db::open(&path).unwrap();
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
            Err(DbError::Storage(StorageError::SchemaTooNew {
                found: 99,
                ..
            }))
        ));
    }
}

/// Fixtures for this crate's unit tests.
#[cfg(test)]
mod test_support {
    use super::Db;

    /// A new, empty case database: on the PostgreSQL server named by `GRIDSENSE_TEST_POSTGRES`
    /// when the tests run against one (the `with-postgres` runner of `make test`), else
    /// SQLite in memory.
    pub(crate) fn test_db() -> Db {
        use crate::storage::{DatabaseUrl, PoolSettings};
        match std::env::var("GRIDSENSE_TEST_POSTGRES") {
            Ok(server) if !server.is_empty() => {
                let url = crate::storage::create_fresh_database(&server, "cases")
                    .expect("a test database on GRIDSENSE_TEST_POSTGRES");
                Db::connect(&DatabaseUrl::Postgres(url), PoolSettings::default())
                    .expect("the test database opens")
            }
            _ => Db::open_in_memory().expect("an in-memory database"),
        }
    }
}

#[cfg(test)]
pub(crate) use test_support::test_db;

#[cfg(test)]
mod outbox_tests {
    use super::*;
    use crate::cases::CaseChange;

    #[test]
    fn pruning_keeps_what_a_webhook_has_not_done_and_ids_never_start_again() {
        let db = test_db();
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

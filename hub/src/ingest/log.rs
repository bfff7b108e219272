//! The ingest log: every event a box delivered, committed before it is acknowledged, with a
//! hand-off mark so that each one is handed on to the cases exactly once in effect even across
//! crashes (a crash between hand-off and mark repeats the hand-off, which the sink ignores as a
//! duplicate of the event id). Also the evidence files wanted, held and lost.
//!
//! Events are keyed by `(box, epoch, seq)`: a box's sequence numbers count within the epoch of
//! its store, so a wiped or replaced store (a new epoch) starts again at 1 without its events
//! being taken for duplicates. The same `(box, epoch, seq)` with another event id is a conflict
//! (a cloned store): it is refused, never acknowledged.
//!
//! On SQLite one file of its own (`ingest.db`, WAL, `synchronous=FULL`); on PostgreSQL tables
//! in the database every hub process shares (`ingest_events`, `ingest_evidence`,
//! `box_health`, and the evidence bytes of [`super::evidence`]), so a box that reconnects to
//! another process finds its events, its evidence wanted and its resume offsets there. Schemas
//! versioned per engine ([`Engine::migrate`]); a newer one is refused. A box's commits are
//! serialised by an advisory lock on its id (a box reconnecting mid-batch to another process
//! commits after the first), and the hand-off claims a batch for 30 s (`FOR UPDATE SKIP
//! LOCKED`) so two processes do not hand the same events on at once; a claim of a process
//! that died lapses and another takes the events.
//!
//! Blocking, so callers use `spawn_blocking`. This module must not decide what an event
//! means, beyond reading which evidence files an event names and which a box's data-loss
//! report says are gone.

use std::path::Path;

use protocol::{BoxId, Digest, Event, Seq, Timestamp};

use super::IngestError;
use crate::storage::{self, DatabaseUrl, Engine, EngineKind, PoolSettings, Sql, StorageError, Val};

/// File name of the ingest log in the data folder (SQLite).
pub const INGEST_FILE: &str = "ingest.db";

/// The store's name in PostgreSQL's `gridsense_schema`.
pub const STORE: &str = "ingest";

/// Schema versions on SQLite, applied in order (`user_version` counts them). Version 1 is the
/// schema of the first hubs, which did not set `user_version`: it creates only what is missing.
const MIGRATIONS: &[&str] = &[V1, V2, V3, V4];

/// The schema version this hub writes on SQLite (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Schema versions on PostgreSQL (the `ingest` row of `gridsense_schema`).
const POSTGRES_MIGRATIONS: &[&str] = &[PG1];

/// The schema version this hub writes on PostgreSQL.
pub const POSTGRES_SCHEMA_VERSION: i64 = POSTGRES_MIGRATIONS.len() as i64;

/// How long a hand-off batch is claimed by the process that read it.
const CLAIM_MILLIS: i64 = 30_000;
const V1: &str = r#"
CREATE TABLE IF NOT EXISTS events (
    box_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event_id BLOB NOT NULL,
    received_at INTEGER NOT NULL,
    body BLOB NOT NULL,
    handed_on INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (box_id, seq),
    UNIQUE (box_id, event_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_to_hand_on ON events (handed_on, received_at) WHERE handed_on = 0;
CREATE TABLE IF NOT EXISTS evidence (
    sha256 BLOB PRIMARY KEY,
    box_id TEXT NOT NULL,
    total_bytes INTEGER NOT NULL,
    complete INTEGER NOT NULL DEFAULT 0
);
-- What each session opens with: the evidence still wanted from that box.
CREATE INDEX IF NOT EXISTS evidence_wanted ON evidence (box_id) WHERE complete = 0;
CREATE TABLE IF NOT EXISTS health (
    box_id TEXT PRIMARY KEY,
    at INTEGER NOT NULL,
    body BLOB NOT NULL
);
"#;

/// Store epochs (events of agents that send none are epoch 0) and lost evidence.
const V2: &str = r#"
CREATE TABLE events_v2 (
    box_id TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    event_id BLOB NOT NULL,
    received_at INTEGER NOT NULL,
    body BLOB NOT NULL,
    handed_on INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (box_id, epoch, seq),
    UNIQUE (box_id, event_id)
) WITHOUT ROWID;
INSERT INTO events_v2 (box_id, epoch, seq, event_id, received_at, body, handed_on)
    SELECT box_id, 0, seq, event_id, received_at, body, handed_on FROM events;
DROP TABLE events;
ALTER TABLE events_v2 RENAME TO events;
CREATE INDEX events_to_hand_on ON events (handed_on, received_at) WHERE handed_on = 0;
ALTER TABLE evidence ADD COLUMN lost INTEGER NOT NULL DEFAULT 0;
DROP INDEX evidence_wanted;
CREATE INDEX evidence_wanted ON evidence (box_id) WHERE complete = 0 AND lost = 0;
"#;

/// The retention sweep finds delivered events whose bodies can go by when they arrived.
const V3: &str = r#"
CREATE INDEX events_prunable ON events (received_at) WHERE handed_on <> 0 AND length(body) > 0;
"#;

/// Tables renamed to the names they have on PostgreSQL (where the case store's `events` is in
/// the same database), and the hand-off claim.
const V4: &str = r#"
ALTER TABLE events RENAME TO ingest_events;
ALTER TABLE evidence RENAME TO ingest_evidence;
ALTER TABLE health RENAME TO box_health;
ALTER TABLE ingest_events ADD COLUMN claimed_until INTEGER NOT NULL DEFAULT 0;
"#;

/// The same schema on PostgreSQL, with the evidence bytes (chunks as they arrived, and the
/// files verified complete).
const PG1: &str = r#"
CREATE TABLE ingest_events (
    box_id TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    event_id BYTEA NOT NULL,
    received_at BIGINT NOT NULL,
    body BYTEA NOT NULL,
    handed_on INTEGER NOT NULL DEFAULT 0,
    claimed_until BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (box_id, epoch, seq),
    UNIQUE (box_id, event_id)
);
CREATE INDEX events_to_hand_on ON ingest_events (received_at) WHERE handed_on = 0;
CREATE INDEX events_prunable ON ingest_events (received_at) WHERE handed_on <> 0 AND length(body) > 0;
CREATE TABLE ingest_evidence (
    sha256 BYTEA PRIMARY KEY,
    box_id TEXT NOT NULL,
    total_bytes BIGINT NOT NULL,
    complete INTEGER NOT NULL DEFAULT 0,
    lost INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX evidence_wanted ON ingest_evidence (box_id) WHERE complete = 0 AND lost = 0;
CREATE TABLE box_health (
    box_id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    body BYTEA NOT NULL
);
CREATE TABLE evidence_chunks (
    sha256 BYTEA NOT NULL,
    at BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (sha256, at)
);
CREATE TABLE evidence_files (
    sha256 BYTEA PRIMARY KEY,
    bytes BIGINT NOT NULL
);
"#;

/// An event waiting to be handed on.
#[derive(Debug, Clone, PartialEq)]
pub struct Unhanded {
    /// The box it came from (from its certificate).
    pub box_id: BoxId,
    /// The epoch of the box's store it came from.
    pub epoch: u64,
    /// The event.
    pub event: Event,
}

/// Where an evidence file stands on the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvidenceState {
    /// Asked for; not (all) here yet.
    Wanted,
    /// Here and verified.
    Complete,
    /// The box reported it gone before it was uploaded: it will never arrive.
    Lost,
    /// Declared larger than the hub takes: never asked for.
    Refused,
    /// Held once, deleted after the retention period of its finished cases.
    Expired,
}

/// The `lost` column's values.
const LOST: i64 = 1;
const REFUSED: i64 = 2;
const EXPIRED: i64 = 3;

/// What a commit of delivered events did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Committed {
    /// Events new to the log.
    pub inserted: u64,
    /// Events already in it (a re-delivery).
    pub duplicates: u64,
    /// The box's highest committed sequence number after the commit (within the epoch, and
    /// below a conflict).
    pub up_to: Option<Seq>,
    /// The first event refused because its `(box, epoch, seq)` holds another event: neither
    /// it nor any later event of the batch was committed.
    pub conflict: Option<Conflict>,
    /// Evidence files refused for declaring more than the hub takes.
    pub evidence_refused: u64,
}

/// A sequence number already committed with another event (a cloned store).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conflict {
    /// The sequence number.
    pub seq: Seq,
    /// The event the hub holds at it.
    pub held: protocol::EventId,
    /// The event the box sent.
    pub sent: protocol::EventId,
}

/// The ingest log.
#[derive(Debug)]
pub struct IngestLog {
    engine: Engine,
}

impl IngestLog {
    /// Opens (creating if needed) the log in the SQLite file at `path`.
    ///
    /// # Errors
    /// [`IngestError::Storage`], [`IngestError::SchemaTooNew`].
    pub fn open(path: &Path) -> Result<IngestLog, IngestError> {
        let shown = path.display().to_string();
        let engine = Engine::open_sqlite(path).map_err(|e| schema_error(&shown, e))?;
        IngestLog::migrated(engine, &shown)
    }

    /// Opens the log where a hub keeps it: in the PostgreSQL database every hub process
    /// shares when `database` is one, else `ingest.db` in the data folder.
    ///
    /// # Errors
    /// As [`IngestLog::open`].
    pub fn open_for(
        data_dir: &Path,
        database: Option<&DatabaseUrl>,
    ) -> Result<IngestLog, IngestError> {
        match database {
            Some(DatabaseUrl::Postgres(url)) => {
                let shown = storage::redact(url);
                let settings = PoolSettings {
                    size: 4,
                    ..PoolSettings::default()
                };
                let engine =
                    Engine::connect_postgres(url, settings).map_err(|e| schema_error(&shown, e))?;
                IngestLog::migrated(engine, &shown)
            }
            _ => IngestLog::open(&data_dir.join(INGEST_FILE)),
        }
    }

    fn migrated(engine: Engine, shown: &str) -> Result<IngestLog, IngestError> {
        engine
            .migrate(STORE, MIGRATIONS, POSTGRES_MIGRATIONS)
            .map_err(|e| schema_error(shown, e))?;
        Ok(IngestLog { engine })
    }

    /// Which engine the log is on.
    pub fn engine(&self) -> EngineKind {
        self.engine.kind()
    }

    /// Another handle to the log's PostgreSQL pool (none on SQLite): where the evidence
    /// bytes are kept beside it.
    pub(crate) fn shared_engine(&self) -> Option<Engine> {
        self.engine.shared()
    }

    /// Where the evidence files of this log are: beside it in the PostgreSQL database, or
    /// the `evidence` folder of the data folder.
    ///
    /// # Errors
    /// [`IngestError::Io`] when the folder cannot be made.
    pub(crate) fn evidence_store(
        &self,
        data_dir: &Path,
    ) -> Result<super::evidence::EvidenceStore, IngestError> {
        match self.shared_engine() {
            Some(engine) => Ok(super::evidence::EvidenceStore::in_database(engine)),
            None => super::evidence::EvidenceStore::open(&data_dir.join("evidence")),
        }
    }

    /// The engine under the log (for copying it).
    pub(crate) fn storage_engine(&self) -> &Engine {
        &self.engine
    }

    /// Every evidence file held complete.
    ///
    /// # Errors
    /// [`IngestError::Storage`].
    pub fn evidence_held(&self) -> Result<Vec<Digest>, IngestError> {
        let sql =
            Sql::same("SELECT sha256 FROM ingest_evidence WHERE complete = 1 ORDER BY sha256");
        self.engine
            .atomically(|tx| tx.query(&sql, &[], |r| digest(&r.bytes(0)?)))
    }

    /// The highest sequence number committed for a box's store epoch.
    ///
    /// # Errors
    /// [`IngestError::Storage`].
    pub fn last_seq(&self, box_id: &BoxId, epoch: u64) -> Result<Option<Seq>, IngestError> {
        self.engine.atomically(|tx| last_seq(tx, box_id, epoch))
    }

    /// What a session opens with, in one transaction: the highest sequence number committed
    /// for the box's store epoch and the evidence still wanted from the box.
    ///
    /// # Errors
    /// [`IngestError::Storage`].
    #[allow(clippy::type_complexity)]
    pub fn session_start(
        &self,
        box_id: &BoxId,
        epoch: u64,
    ) -> Result<(Option<Seq>, Vec<(Digest, u64)>), IngestError> {
        self.engine
            .atomically(|tx| Ok((last_seq(tx, box_id, epoch)?, wanted(tx, box_id)?)))
    }

    /// Commits delivered events of one box's store epoch in one transaction, in order,
    /// ignoring any already held (same `(box, epoch, seq)` and id, or the same id). An event
    /// whose `(box, epoch, seq)` holds another event is a [`Conflict`]: it and the rest of the
    /// batch are not committed. Evidence the events name is recorded as wanted; evidence a
    /// data-loss report of the box names as lost is marked lost. Returns once the commit is
    /// durable, with the evidence newly wanted.
    ///
    /// # Errors
    /// [`IngestError::Storage`] or [`IngestError::Encode`]; nothing is committed then.
    pub fn commit(
        &self,
        box_id: &BoxId,
        epoch: u64,
        events: &[Event],
        max_evidence_bytes: u64,
        now: Timestamp,
    ) -> Result<(Committed, Vec<(Digest, u64)>), IngestError> {
        let held = Sql::same(
            "SELECT event_id FROM ingest_events WHERE box_id = ?1 AND epoch = ?2 AND seq = ?3",
        );
        let insert = Sql::same(
            "INSERT INTO ingest_events (box_id, epoch, seq, event_id, received_at, body) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
        );
        let want = Sql::same(
            "INSERT INTO ingest_evidence (sha256, box_id, total_bytes, lost) \
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
        );
        self.engine.atomically(|tx| {
            // another process may be committing this box's batch (it reconnected mid-batch)
            tx.lock(storage::lock_key(&format!("ingest {box_id}")))?;
            let mut out = Committed::default();
            let mut wanted = Vec::new();
            for event in events {
                let id = event.id.as_uuid().as_bytes().to_vec();
                let seq_args: [Val; 3] = [box_id.as_str().into(), epoch.into(), event.seq.0.into()];
                let existing = tx.query_first(&held, &seq_args, |r| r.bytes(0))?;
                match existing {
                    Some(other) if other == id => {
                        out.duplicates += 1;
                        continue;
                    }
                    Some(other) => {
                        out.conflict = Some(Conflict {
                            seq: event.seq,
                            held: event_id(&other)?,
                            sent: event.id,
                        });
                        break;
                    }
                    None => {}
                }
                let body = rmp_serde::to_vec_named(event).map_err(IngestError::Encode)?;
                let [b, e, s] = seq_args;
                let n = tx.execute(
                    &insert,
                    &[b, e, s, id.into(), now.as_unix_millis().into(), body.into()],
                )?;
                if n == 0 {
                    // the same event under another epoch (re-sent after the store got one)
                    out.duplicates += 1;
                    continue;
                }
                out.inserted += 1;
                for e in &event.evidence {
                    let refused = e.bytes > max_evidence_bytes;
                    let state = if refused { REFUSED } else { 0 };
                    let new = tx.execute(
                        &want,
                        &[
                            e.sha256.0.as_slice().into(),
                            box_id.as_str().into(),
                            e.bytes.into(),
                            state.into(),
                        ],
                    )? == 1;
                    match (new, refused) {
                        (true, false) => wanted.push((e.sha256, e.bytes)),
                        (true, true) => out.evidence_refused += 1,
                        _ => {}
                    }
                }
                for sha in lost_in_report(event) {
                    mark_lost(tx, box_id, &sha)?;
                }
            }
            out.up_to = last_seq(tx, box_id, epoch)?;
            if let Some(c) = out.conflict {
                // never past a sequence number the box's own event is not committed at
                out.up_to = out.up_to.map(|u| Seq(u.0.min(c.seq.0.saturating_sub(1))));
                out.up_to = out.up_to.filter(|u| u.0 > 0);
            }
            Ok((out, wanted))
        })
    }

    /// Marks evidence files of a box lost: it reported them gone before they were uploaded.
    /// Files held complete, or wanted from another box, are left as they are. Returns how many
    /// were marked.
    ///
    /// # Errors
    /// [`IngestError::Storage`].
    pub fn evidence_lost(&self, box_id: &BoxId, files: &[Digest]) -> Result<u64, IngestError> {
        self.engine.atomically(|tx| {
            let mut n = 0;
            for sha in files {
                n += mark_lost(tx, box_id, sha)?;
            }
            Ok(n)
        })
    }

    /// Up to `limit` events not yet handed on, oldest commit first and in sequence order per
    /// box. On PostgreSQL they are claimed for this process for a while (`now` on), so
    /// another process's hand-off skips them until then.
    ///
    /// # Errors
    /// [`IngestError::Storage`]; a body that does not decode is [`IngestError::Decode`].
    pub fn unhanded(&self, limit: usize, now: Timestamp) -> Result<Vec<Unhanded>, IngestError> {
        let sql = Sql::each(
            "SELECT box_id, epoch, body, received_at, seq FROM ingest_events WHERE handed_on = 0 \
             ORDER BY received_at, box_id, epoch, seq LIMIT ?1",
            "UPDATE ingest_events SET claimed_until = $2 + $3 \
             WHERE (box_id, epoch, seq) IN (SELECT box_id, epoch, seq FROM ingest_events \
                 WHERE handed_on = 0 AND claimed_until < $2 \
                 ORDER BY received_at, box_id, epoch, seq LIMIT $1 FOR UPDATE SKIP LOCKED) \
             RETURNING box_id, epoch, body, received_at, seq",
        );
        let args: Vec<Val> = match self.engine.kind() {
            EngineKind::Sqlite => vec![limit.into()],
            EngineKind::Postgres => vec![
                limit.into(),
                now.as_unix_millis().into(),
                CLAIM_MILLIS.into(),
            ],
        };
        let mut rows = self.engine.atomically(|tx| {
            tx.query(&sql, &args, |r| {
                Ok::<_, IngestError>((r.int(3)?, r.text(0)?, r.int(1)?, r.int(4)?, r.bytes(2)?))
            })
        })?;
        // RETURNING keeps no order
        rows.sort_unstable_by(|a, b| (a.0, &a.1, a.2, a.3).cmp(&(b.0, &b.1, b.2, b.3)));
        rows.into_iter()
            .map(|(_, box_id, epoch, _, body)| {
                Ok(Unhanded {
                    box_id: BoxId::parse(box_id).map_err(|_| IngestError::Corrupt)?,
                    epoch: epoch.max(0) as u64,
                    event: rmp_serde::from_slice(&body).map_err(IngestError::Decode)?,
                })
            })
            .collect()
    }

    /// Marks events, by `(box, epoch, seq)`, as handed on (`state` 1) or refused by the sink
    /// (`state` 2).
    ///
    /// # Errors
    /// [`IngestError::Storage`].
    pub fn mark_handed(&self, done: &[(BoxId, u64, Seq, u8)]) -> Result<(), IngestError> {
        let sql = Sql::same(
            "UPDATE ingest_events SET handed_on = ?4 WHERE box_id = ?1 AND epoch = ?2 AND seq = ?3",
        );
        self.engine.atomically(|tx| {
            for (b, epoch, s, state) in done {
                tx.execute(
                    &sql,
                    &[
                        b.as_str().into(),
                        (*epoch).into(),
                        s.0.into(),
                        u32::from(*state).into(),
                    ],
                )?;
            }
            Ok(())
        })
    }

    /// Records evidence files as deleted after their retention period (their files are gone:
    /// never asked for again). Returns how many rows were marked.
    ///
    /// # Errors
    /// [`IngestError::Storage`].
    pub fn evidence_expired(&self, files: &[Digest]) -> Result<u64, IngestError> {
        let sql = Sql::same("UPDATE ingest_evidence SET complete = 0, lost = ?2 WHERE sha256 = ?1");
        self.engine.atomically(|tx| {
            let mut n = 0;
            for sha in files {
                n += tx.execute(&sql, &[sha.0.as_slice().into(), EXPIRED.into()])?;
            }
            Ok(n)
        })
    }

    /// Drops the bodies of up to `limit` events handed on (or refused by the cases) and
    /// received before `before` (the cases hold them): each keeps its `(box, epoch, seq)` and
    /// event id, so a re-delivery is still a duplicate and a cloned store still a conflict.
    /// Returns the events pruned and the bytes of body dropped.
    ///
    /// # Errors
    /// [`IngestError::Storage`].
    pub fn prune_bodies(&self, before: Timestamp, limit: usize) -> Result<(u64, u64), IngestError> {
        let pick = Sql::same(
            "SELECT box_id, epoch, seq, length(body) FROM ingest_events \
             WHERE handed_on <> 0 AND received_at < ?1 AND length(body) > 0 LIMIT ?2",
        );
        let prune = Sql::same(
            "UPDATE ingest_events SET body = ?4 WHERE box_id = ?1 AND epoch = ?2 AND seq = ?3",
        );
        self.engine.atomically(|tx| {
            let rows = tx.query(
                &pick,
                &[before.as_unix_millis().into(), limit.into()],
                |r| Ok::<_, IngestError>((r.text(0)?, r.int(1)?, r.int(2)?, r.int(3)?)),
            )?;
            let (mut events, mut bytes) = (0u64, 0u64);
            for (box_id, epoch, seq, len) in rows {
                tx.execute(
                    &prune,
                    &[box_id.into(), epoch.into(), seq.into(), Vec::new().into()],
                )?;
                events += 1;
                bytes += len.max(0) as u64;
            }
            Ok((events, bytes))
        })
    }

    /// Every event of a box, by epoch, in sequence order (tests, tools).
    ///
    /// # Errors
    /// [`IngestError::Storage`] or [`IngestError::Decode`].
    pub fn events_of(&self, box_id: &BoxId) -> Result<Vec<Event>, IngestError> {
        let sql = Sql::same(
            "SELECT body FROM ingest_events WHERE box_id = ?1 AND length(body) > 0 ORDER BY epoch, seq",
        );
        self.engine.atomically(|tx| {
            tx.query(&sql, &[box_id.as_str().into()], |r| {
                rmp_serde::from_slice(&r.bytes(0)?).map_err(IngestError::Decode)
            })
        })
    }

    /// Number of events held, and of those not handed on.
    ///
    /// # Errors
    /// [`IngestError::Storage`].
    pub fn counts(&self) -> Result<(u64, u64), IngestError> {
        let sql = Sql::same(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN handed_on = 0 THEN 1 ELSE 0 END), 0) \
             FROM ingest_events",
        );
        let row = self.engine.atomically(|tx| {
            tx.query_first(&sql, &[], |r| Ok::<_, IngestError>((r.int(0)?, r.int(1)?)))
        })?;
        let (all, waiting) = row.unwrap_or((0, 0));
        Ok((all.max(0) as u64, waiting.max(0) as u64))
    }

    /// Evidence files of a box still wanted, with their lengths.
    ///
    /// # Errors
    /// [`IngestError::Storage`].
    pub fn wanted_evidence(&self, box_id: &BoxId) -> Result<Vec<(Digest, u64)>, IngestError> {
        self.engine.atomically(|tx| wanted(tx, box_id))
    }

    /// The box an evidence file is wanted from, its announced length, and where it stands.
    ///
    /// # Errors
    /// [`IngestError::Storage`].
    pub fn evidence_state(
        &self,
        sha256: &Digest,
    ) -> Result<Option<(BoxId, u64, EvidenceState)>, IngestError> {
        let sql = Sql::same(
            "SELECT box_id, total_bytes, complete, lost FROM ingest_evidence WHERE sha256 = ?1",
        );
        self.engine.atomically(|tx| {
            tx.query_first(&sql, &[sha256.0.as_slice().into()], |r| {
                let (complete, lost) = (r.int(2)? != 0, r.int(3)?);
                Ok((
                    BoxId::parse(r.text(0)?).map_err(|_| IngestError::Corrupt)?,
                    r.int(1)?.max(0) as u64,
                    match (complete, lost) {
                        (true, _) => EvidenceState::Complete,
                        (false, LOST) => EvidenceState::Lost,
                        (false, REFUSED) => EvidenceState::Refused,
                        (false, EXPIRED) => EvidenceState::Expired,
                        (false, _) => EvidenceState::Wanted,
                    },
                ))
            })
        })
    }

    /// Records an evidence file as held and verified (a file reported lost that arrives after
    /// all is held all the same).
    ///
    /// # Errors
    /// [`IngestError::Storage`].
    pub fn evidence_complete(&self, sha256: &Digest) -> Result<(), IngestError> {
        let sql = Sql::same("UPDATE ingest_evidence SET complete = 1, lost = 0 WHERE sha256 = ?1");
        self.engine.atomically(|tx| {
            Ok::<_, IngestError>(tx.execute(&sql, &[sha256.0.as_slice().into()])?)
        })?;
        Ok(())
    }

    /// Records a box's latest health report (MessagePack body).
    ///
    /// # Errors
    /// [`IngestError::Storage`] or [`IngestError::Encode`].
    pub fn record_health(
        &self,
        box_id: &BoxId,
        health: &protocol::Health,
        now: Timestamp,
    ) -> Result<(), IngestError> {
        let body = rmp_serde::to_vec_named(health).map_err(IngestError::Encode)?;
        let sql = Sql::same(
            "INSERT INTO box_health (box_id, at, body) VALUES (?1, ?2, ?3) \
             ON CONFLICT (box_id) DO UPDATE SET at = excluded.at, body = excluded.body",
        );
        self.engine.atomically(|tx| {
            Ok::<_, IngestError>(tx.execute(
                &sql,
                &[
                    box_id.as_str().into(),
                    now.as_unix_millis().into(),
                    body.into(),
                ],
            )?)
        })?;
        Ok(())
    }

    /// A box's latest health report and when it arrived.
    ///
    /// # Errors
    /// [`IngestError::Storage`] or [`IngestError::Decode`].
    pub fn health(
        &self,
        box_id: &BoxId,
    ) -> Result<Option<(Timestamp, protocol::Health)>, IngestError> {
        let sql = Sql::same("SELECT at, body FROM box_health WHERE box_id = ?1");
        self.engine.atomically(|tx| {
            tx.query_first(&sql, &[box_id.as_str().into()], |r| {
                Ok((
                    Timestamp::from_unix_millis(r.int(0)?),
                    rmp_serde::from_slice(&r.bytes(1)?).map_err(IngestError::Decode)?,
                ))
            })
        })
    }
}

/// The highest sequence number committed for a box's store epoch, in `tx`.
fn last_seq(tx: &storage::Tx<'_>, box_id: &BoxId, epoch: u64) -> Result<Option<Seq>, IngestError> {
    let sql = Sql::same("SELECT MAX(seq) FROM ingest_events WHERE box_id = ?1 AND epoch = ?2");
    let max = tx.query_first(&sql, &[box_id.as_str().into(), epoch.into()], |r| {
        Ok::<_, IngestError>(r.opt_int(0)?)
    })?;
    Ok(max.flatten().map(|s| Seq(s.max(0) as u64)))
}

/// Evidence files of a box still wanted, with their lengths, in `tx`.
fn wanted(tx: &storage::Tx<'_>, box_id: &BoxId) -> Result<Vec<(Digest, u64)>, IngestError> {
    let sql = Sql::same(
        "SELECT sha256, total_bytes FROM ingest_evidence \
         WHERE box_id = ?1 AND complete = 0 AND lost = 0",
    );
    tx.query(&sql, &[box_id.as_str().into()], |r| {
        Ok((digest(&r.bytes(0)?)?, r.int(1)?.max(0) as u64))
    })
}

/// A stored event id.
fn event_id(bytes: &[u8]) -> Result<protocol::EventId, IngestError> {
    <[u8; 16]>::try_from(bytes)
        .map(|b| protocol::EventId::from_uuid(uuid::Uuid::from_bytes(b)))
        .map_err(|_| IngestError::Corrupt)
}

/// A stored SHA-256.
fn digest(bytes: &[u8]) -> Result<Digest, IngestError> {
    <[u8; 32]>::try_from(bytes)
        .map(Digest)
        .map_err(|_| IngestError::Corrupt)
}

/// A storage error opening `shown`, with a newer schema named as such.
fn schema_error(shown: &str, e: StorageError) -> IngestError {
    match e {
        StorageError::SchemaTooNew {
            found, supported, ..
        } => IngestError::SchemaTooNew {
            file: shown.to_owned(),
            found,
            supported,
        },
        other => IngestError::Storage(other),
    }
}

/// The evidence files a box's data-loss report names as lost (`lost_evidence_sha256`: hashes in
/// hex, separated by spaces); nothing for other events. Unreadable hashes are skipped.
fn lost_in_report(event: &Event) -> Vec<Digest> {
    let Some(protocol::AttrValue::Text(list)) = event.attributes.get("lost_evidence_sha256") else {
        return Vec::new();
    };
    if event.source.kind != protocol::SourceKind::Box {
        return Vec::new();
    }
    list.split_ascii_whitespace()
        .filter_map(|hex| Digest::from_hex(hex).ok())
        .collect()
}

/// Marks one file of a box lost unless it is complete or wanted from another box.
fn mark_lost(tx: &storage::Tx<'_>, box_id: &BoxId, sha: &Digest) -> Result<u64, IngestError> {
    let sql = Sql::same(
        "UPDATE ingest_evidence SET lost = 1 \
         WHERE sha256 = ?1 AND box_id = ?2 AND complete = 0 AND lost = 0",
    );
    Ok(tx.execute(&sql, &[sha.0.as_slice().into(), box_id.as_str().into()])?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::event;
    use protocol::{AttrValue, EvidenceRef, SourceKind};
    use rusqlite::{Connection, params};

    /// A new log: in a database of its own on the PostgreSQL server named by
    /// `GRIDSENSE_TEST_POSTGRES` when the tests run against one, else `ingest.db` in a folder.
    fn open() -> (tempfile::TempDir, IngestLog) {
        let dir = tempfile::tempdir().unwrap();
        let log = match std::env::var("GRIDSENSE_TEST_POSTGRES") {
            Ok(server) if !server.is_empty() => {
                let url = storage::create_fresh_database(&server, "ingest").unwrap();
                let log =
                    IngestLog::open_for(dir.path(), Some(&DatabaseUrl::Postgres(url))).unwrap();
                assert_eq!(log.engine(), EngineKind::Postgres);
                log
            }
            _ => IngestLog::open(&dir.path().join(INGEST_FILE)).unwrap(),
        };
        (dir, log)
    }

    const NOW: Timestamp = Timestamp::from_unix_millis(1_767_225_700_000);
    const MAX: u64 = 8 << 20;

    #[test]
    fn a_new_epoch_counts_again_from_one_and_nothing_is_taken_for_a_duplicate() {
        let (_dir, log) = open();
        let b = BoxId::parse("box-1").unwrap();
        let old: Vec<Event> = (1..=3).map(|s| event(s, 1)).collect();
        let (c, _) = log.commit(&b, 7, &old, MAX, NOW).unwrap();
        assert_eq!((c.inserted, c.up_to), (3, Some(Seq(3))));
        let new: Vec<Event> = (1..=2).map(|s| event(s, 2)).collect();
        let (c, _) = log.commit(&b, 9, &new, MAX, NOW).unwrap();
        assert_eq!((c.inserted, c.duplicates, c.up_to), (2, 0, Some(Seq(2))));
        assert_eq!(log.last_seq(&b, 7).unwrap(), Some(Seq(3)));
        assert_eq!(log.last_seq(&b, 9).unwrap(), Some(Seq(2)));
        assert_eq!(log.unhanded(10, NOW).unwrap().len(), 5);
        // the same events again: duplicates, acknowledged
        let (c, _) = log.commit(&b, 9, &new, MAX, NOW).unwrap();
        assert_eq!((c.inserted, c.duplicates, c.up_to), (0, 2, Some(Seq(2))));
        // the same event under another epoch (re-sent after an upgrade gave the store one)
        let (c, _) = log.commit(&b, 11, &old[2..], MAX, NOW).unwrap();
        assert_eq!((c.inserted, c.duplicates), (0, 1));
    }

    #[test]
    fn a_hand_off_batch_is_claimed_from_other_processes_until_its_claim_lapses() {
        let (_dir, log) = open();
        let b = BoxId::parse("box-1").unwrap();
        let events: Vec<Event> = (1..=4).map(|s| event(s, 1)).collect();
        log.commit(&b, 7, &events, MAX, NOW).unwrap();
        let first = log.unhanded(3, NOW).unwrap();
        let seqs = |u: &[Unhanded]| u.iter().map(|u| u.event.seq.0).collect::<Vec<_>>();
        assert_eq!(seqs(&first), [1, 2, 3], "oldest first, in order");
        let soon = Timestamp::from_unix_millis(NOW.as_unix_millis() + 1000);
        let second = log.unhanded(10, soon).unwrap();
        match log.engine() {
            // another process's hand-off (the same calls, another pool) takes only the rest
            EngineKind::Postgres => assert_eq!(seqs(&second), [4]),
            // one process per file: each round reads what is waiting
            EngineKind::Sqlite => assert_eq!(seqs(&second), [1, 2, 3, 4]),
        }
        log.mark_handed(&[(b.clone(), 7, Seq(1), 1)]).unwrap();
        // the claimers died: after their claims lapse the rest are handed on by another
        let later = Timestamp::from_unix_millis(NOW.as_unix_millis() + CLAIM_MILLIS + 1);
        let expected: &[u64] = match log.engine() {
            EngineKind::Postgres => &[2, 3],
            EngineKind::Sqlite => &[2, 3, 4],
        };
        assert_eq!(seqs(&log.unhanded(10, later).unwrap()), expected);
        let latest = Timestamp::from_unix_millis(later.as_unix_millis() + CLAIM_MILLIS + 1);
        assert_eq!(seqs(&log.unhanded(10, latest).unwrap()), [2, 3, 4]);
    }

    #[test]
    fn another_event_at_a_committed_seq_is_a_conflict_and_is_never_acknowledged() {
        let (_dir, log) = open();
        let b = BoxId::parse("box-1").unwrap();
        let original: Vec<Event> = (1..=5).map(|s| event(s, 1)).collect();
        log.commit(&b, 7, &original, MAX, NOW).unwrap();
        // a copy of the store: seqs 1..=3 as the original, then its own 4 and 5
        let copy: Vec<Event> = (1..=3)
            .map(|s| event(s, 1))
            .chain((4..=5).map(|s| event(s, 3)))
            .collect();
        let (c, _) = log.commit(&b, 7, &copy, MAX, NOW).unwrap();
        let conflict = c.conflict.expect("a conflict");
        assert_eq!((conflict.seq, conflict.held), (Seq(4), original[3].id));
        assert_eq!(conflict.sent, copy[3].id);
        assert_eq!(
            c.up_to,
            Some(Seq(3)),
            "acknowledged up to the conflict only"
        );
        assert_eq!((c.inserted, c.duplicates), (0, 3));
        assert_eq!(
            log.events_of(&b).unwrap(),
            original,
            "nothing of the copy's taken"
        );
        // a conflict at the first event of a batch acknowledges nothing past it
        let (c, _) = log.commit(&b, 7, &copy[3..], MAX, NOW).unwrap();
        assert!(c.conflict.is_some());
        assert_eq!(c.up_to, Some(Seq(3)));
        let (c, _) = log.commit(&b, 8, &[event(1, 4)], MAX, NOW).unwrap();
        let (c2, _) = log.commit(&b, 8, &[event(1, 5)], MAX, NOW).unwrap();
        assert_eq!(
            (c.up_to, c2.up_to),
            (Some(Seq(1)), None),
            "nothing below seq 1"
        );
    }

    #[test]
    fn a_data_loss_report_marks_its_files_lost_and_they_are_no_longer_wanted() {
        let (_dir, log) = open();
        let b = BoxId::parse("box-1").unwrap();
        let files: Vec<Digest> = (0..3u8).map(|i| Digest([i + 1; 32])).collect();
        let mut with_pictures = event(1, 1);
        with_pictures.evidence = files
            .iter()
            .map(|sha| EvidenceRef {
                sha256: *sha,
                bytes: 10,
                media_type: "image/jpeg".into(),
            })
            .collect();
        let (_, wanted) = log.commit(&b, 0, &[with_pictures], MAX, NOW).unwrap();
        assert_eq!(wanted.len(), 3);
        log.evidence_complete(&files[0]).unwrap();
        let mut report = event(2, 2);
        report.source.kind = SourceKind::Box;
        report.attributes.insert(
            "lost_evidence_sha256".into(),
            AttrValue::Text(format!(
                "{} {} nonsense",
                files[0].to_hex(),
                files[1].to_hex()
            )),
        );
        log.commit(&b, 0, &[report], MAX, NOW).unwrap();
        let state = |log: &IngestLog, i: usize| log.evidence_state(&files[i]).unwrap().unwrap().2;
        assert_eq!(state(&log, 0), EvidenceState::Complete, "held stays held");
        assert_eq!(state(&log, 1), EvidenceState::Lost);
        assert_eq!(state(&log, 2), EvidenceState::Wanted);
        let wanted: Vec<Digest> = log
            .wanted_evidence(&b)
            .unwrap()
            .into_iter()
            .map(|w| w.0)
            .collect();
        assert_eq!(wanted, [files[2]]);
        // another box cannot declare this box's file lost
        let other = BoxId::parse("box-2").unwrap();
        assert_eq!(log.evidence_lost(&other, &[files[2]]).unwrap(), 0);
        assert_eq!(log.evidence_lost(&b, &[files[2]]).unwrap(), 1);
        // a lost file that arrives after all is held
        log.evidence_complete(&files[2]).unwrap();
        assert_eq!(state(&log, 2), EvidenceState::Complete);
    }

    #[test]
    fn pruned_bodies_still_make_a_redelivery_a_duplicate_and_a_copy_a_conflict() {
        let (_dir, log) = open();
        let b = BoxId::parse("box-1").unwrap();
        let events: Vec<Event> = (1..=4).map(|s| event(s, 1)).collect();
        let old = Timestamp::from_unix_millis(NOW.as_unix_millis() - 1000);
        log.commit(&b, 7, &events[..3], MAX, old).unwrap();
        log.commit(&b, 7, &events[3..], MAX, NOW).unwrap();
        let handed: Vec<_> = (1..=3).map(|s| (b.clone(), 7, Seq(s), 1)).collect();
        log.mark_handed(&handed[..2]).unwrap();
        // only handed-on events received before the cut lose their bodies
        let (n, bytes) = log.prune_bodies(NOW, 10).unwrap();
        assert_eq!(n, 2);
        assert!(bytes > 0);
        assert_eq!(log.prune_bodies(NOW, 10).unwrap(), (0, 0), "once");
        assert_eq!(log.events_of(&b).unwrap(), events[2..]);
        assert_eq!(
            log.unhanded(10, NOW).unwrap().len(),
            2,
            "waiting events keep theirs"
        );
        let (c, _) = log.commit(&b, 7, &events[..2], MAX, NOW).unwrap();
        assert_eq!((c.inserted, c.duplicates), (0, 2));
        let (c, _) = log.commit(&b, 7, &[event(1, 9)], MAX, NOW).unwrap();
        assert!(c.conflict.is_some(), "another event at a pruned seq");
        assert_eq!(log.last_seq(&b, 7).unwrap(), Some(Seq(4)));
    }

    #[test]
    fn expired_evidence_is_no_longer_wanted_and_says_so() {
        let (_dir, log) = open();
        let b = BoxId::parse("box-1").unwrap();
        let mut e = event(1, 1);
        e.evidence = vec![EvidenceRef {
            sha256: Digest([5; 32]),
            bytes: 10,
            media_type: "image/jpeg".into(),
        }];
        log.commit(&b, 0, &[e], MAX, NOW).unwrap();
        log.evidence_complete(&Digest([5; 32])).unwrap();
        assert_eq!(log.evidence_expired(&[Digest([5; 32])]).unwrap(), 1);
        let state = log.evidence_state(&Digest([5; 32])).unwrap().unwrap().2;
        assert_eq!(state, EvidenceState::Expired);
        assert!(log.wanted_evidence(&b).unwrap().is_empty());
    }

    #[test]
    fn a_log_of_the_first_hubs_is_migrated_with_its_events_in_epoch_0() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(INGEST_FILE);
        let b = BoxId::parse("box-1").unwrap();
        let e = event(1, 1);
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(V1).unwrap();
            conn.execute(
                "INSERT INTO events (box_id, seq, event_id, received_at, body) VALUES (?1, 1, ?2, 0, ?3)",
                params![
                    b.as_str(),
                    e.id.as_uuid().as_bytes().as_slice(),
                    rmp_serde::to_vec_named(&e).unwrap()
                ],
            )
            .unwrap();
        }
        let log = IngestLog::open(&path).unwrap();
        assert_eq!(log.last_seq(&b, 0).unwrap(), Some(Seq(1)));
        assert_eq!(log.unhanded(10, NOW).unwrap()[0].epoch, 0);
        drop(log);
        // and a log of a newer hub is refused
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        assert!(matches!(
            IngestLog::open(&path),
            Err(IngestError::SchemaTooNew { found: 99, .. })
        ));
    }

    #[test]
    fn evidence_declared_larger_than_the_limit_is_refused_and_never_wanted() {
        let (_dir, log) = open();
        let b = BoxId::parse("box-1").unwrap();
        let mut e = event(1, 1);
        e.evidence = vec![
            EvidenceRef {
                sha256: Digest([1; 32]),
                bytes: 100,
                media_type: "image/jpeg".into(),
            },
            EvidenceRef {
                sha256: Digest([2; 32]),
                bytes: 101,
                media_type: "image/jpeg".into(),
            },
        ];
        let (c, wanted) = log.commit(&b, 0, &[e], 100, NOW).unwrap();
        assert_eq!(c.evidence_refused, 1);
        assert_eq!(wanted, [(Digest([1; 32]), 100)]);
        let state = log.evidence_state(&Digest([2; 32])).unwrap().unwrap().2;
        assert_eq!(state, EvidenceState::Refused);
        assert_eq!(log.wanted_evidence(&b).unwrap().len(), 1);
        // a box reporting it lost does not make it look lost
        assert_eq!(log.evidence_lost(&b, &[Digest([2; 32])]).unwrap(), 0);
    }
}

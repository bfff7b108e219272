//! The ingest log: every event a box delivered, committed before it is acknowledged, with a
//! hand-off mark so that each one is handed on to the cases exactly once in effect even across
//! crashes (a crash between hand-off and mark repeats the hand-off, which the sink ignores as a
//! duplicate of `(box, seq)`). Also the evidence files wanted and held.
//!
//! One SQLite file (`ingest.db`, WAL, `synchronous=FULL`); blocking, so callers use
//! `spawn_blocking`. This module must not decide what an event means.

use std::path::Path;

use protocol::{BoxId, Digest, Event, Seq, Timestamp};
use rusqlite::{Connection, OptionalExtension, params};

use super::IngestError;

/// File name of the ingest log in the data folder.
pub const INGEST_FILE: &str = "ingest.db";

const SCHEMA: &str = r#"
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

/// An event waiting to be handed on.
#[derive(Debug, Clone, PartialEq)]
pub struct Unhanded {
    /// The box it came from (from its certificate).
    pub box_id: BoxId,
    /// The event.
    pub event: Event,
}

/// What a commit of delivered events did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Committed {
    /// Events new to the log.
    pub inserted: u64,
    /// Events already in it (a re-delivery).
    pub duplicates: u64,
    /// The box's highest committed sequence number after the commit.
    pub up_to: Option<Seq>,
}

/// The ingest log.
#[derive(Debug)]
pub struct IngestLog {
    conn: Connection,
}

impl IngestLog {
    /// Opens (creating if needed) the log at `path`.
    ///
    /// # Errors
    /// [`IngestError::Sqlite`].
    pub fn open(path: &Path) -> Result<IngestLog, IngestError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(IngestLog { conn })
    }

    /// The highest sequence number committed for a box.
    ///
    /// # Errors
    /// [`IngestError::Sqlite`].
    pub fn last_seq(&self, box_id: &BoxId) -> Result<Option<Seq>, IngestError> {
        let v: Option<i64> = self
            .conn
            .prepare_cached("SELECT MAX(seq) FROM events WHERE box_id = ?1")?
            .query_row(params![box_id.as_str()], |r| r.get(0))?;
        Ok(v.map(|s| Seq(s as u64)))
    }

    /// Commits delivered events of one box in one transaction, ignoring any already held
    /// (same `(box, seq)` or same event id). Evidence they name is recorded as wanted.
    /// Returns once the commit is durable.
    ///
    /// # Errors
    /// [`IngestError::Sqlite`] or [`IngestError::Encode`]; nothing is committed then.
    pub fn commit(
        &mut self,
        box_id: &BoxId,
        events: &[Event],
        now: Timestamp,
    ) -> Result<(Committed, Vec<(Digest, u64)>), IngestError> {
        let tx = self.conn.transaction()?;
        let mut out = Committed::default();
        let mut wanted = Vec::new();
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO events (box_id, seq, event_id, received_at, body) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut want = tx.prepare_cached(
                "INSERT OR IGNORE INTO evidence (sha256, box_id, total_bytes) VALUES (?1, ?2, ?3)",
            )?;
            for event in events {
                let body = rmp_serde::to_vec_named(event).map_err(IngestError::Encode)?;
                let n = insert.execute(params![
                    box_id.as_str(),
                    event.seq.0 as i64,
                    event.id.as_uuid().as_bytes().as_slice(),
                    now.as_unix_millis(),
                    body
                ])?;
                if n == 1 {
                    out.inserted += 1;
                    for e in &event.evidence {
                        if want.execute(params![
                            e.sha256.0.as_slice(),
                            box_id.as_str(),
                            e.bytes as i64
                        ])? == 1
                        {
                            wanted.push((e.sha256, e.bytes));
                        }
                    }
                } else {
                    out.duplicates += 1;
                }
            }
            out.up_to = tx
                .query_row(
                    "SELECT MAX(seq) FROM events WHERE box_id = ?1",
                    params![box_id.as_str()],
                    |r| r.get::<_, Option<i64>>(0),
                )?
                .map(|s| Seq(s as u64));
        }
        tx.commit()?;
        Ok((out, wanted))
    }

    /// Up to `limit` events not yet handed on, oldest commit first and in sequence order per box.
    ///
    /// # Errors
    /// [`IngestError::Sqlite`]; a body that does not decode is [`IngestError::Decode`].
    pub fn unhanded(&self, limit: usize) -> Result<Vec<Unhanded>, IngestError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT box_id, body FROM events WHERE handed_on = 0 ORDER BY received_at, box_id, seq LIMIT ?1",
        )?;
        let rows = stmt.query_map(params![limit.min(i64::MAX as usize) as i64], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (box_id, body) = row?;
            let box_id = BoxId::parse(box_id).map_err(|_| IngestError::Corrupt)?;
            let event = rmp_serde::from_slice(&body).map_err(IngestError::Decode)?;
            out.push(Unhanded { box_id, event });
        }
        Ok(out)
    }

    /// Marks events as handed on (`state` 1) or refused by the sink (`state` 2).
    ///
    /// # Errors
    /// [`IngestError::Sqlite`].
    pub fn mark_handed(&mut self, done: &[(BoxId, Seq, u8)]) -> Result<(), IngestError> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE events SET handed_on = ?3 WHERE box_id = ?1 AND seq = ?2",
            )?;
            for (b, s, state) in done {
                stmt.execute(params![b.as_str(), s.0 as i64, i64::from(*state)])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Every event of a box in sequence order (tests, tools).
    ///
    /// # Errors
    /// [`IngestError::Sqlite`] or [`IngestError::Decode`].
    pub fn events_of(&self, box_id: &BoxId) -> Result<Vec<Event>, IngestError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT body FROM events WHERE box_id = ?1 ORDER BY seq")?;
        let rows = stmt.query_map(params![box_id.as_str()], |r| r.get::<_, Vec<u8>>(0))?;
        let mut out = Vec::new();
        for body in rows {
            out.push(rmp_serde::from_slice(&body?).map_err(IngestError::Decode)?);
        }
        Ok(out)
    }

    /// Number of events held per box, and of those not handed on.
    ///
    /// # Errors
    /// [`IngestError::Sqlite`].
    pub fn counts(&self) -> Result<(u64, u64), IngestError> {
        Ok(self.conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(handed_on = 0), 0) FROM events",
            [],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
        )?)
    }

    /// Evidence files of a box still wanted, with their lengths.
    ///
    /// # Errors
    /// [`IngestError::Sqlite`].
    pub fn wanted_evidence(&self, box_id: &BoxId) -> Result<Vec<(Digest, u64)>, IngestError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT sha256, total_bytes FROM evidence WHERE box_id = ?1 AND complete = 0",
        )?;
        let rows = stmt.query_map(params![box_id.as_str()], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (sha, len) = row?;
            let sha = <[u8; 32]>::try_from(sha.as_slice()).map_err(|_| IngestError::Corrupt)?;
            out.push((Digest(sha), len.max(0) as u64));
        }
        Ok(out)
    }

    /// Whether an evidence file is wanted from this box, and its announced length.
    ///
    /// # Errors
    /// [`IngestError::Sqlite`].
    pub fn evidence_state(
        &self,
        sha256: &Digest,
    ) -> Result<Option<(BoxId, u64, bool)>, IngestError> {
        let row = self
            .conn
            .query_row(
                "SELECT box_id, total_bytes, complete FROM evidence WHERE sha256 = ?1",
                params![sha256.0.as_slice()],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, bool>(2)?,
                    ))
                },
            )
            .optional()?;
        match row {
            None => Ok(None),
            Some((b, len, done)) => Ok(Some((
                BoxId::parse(b).map_err(|_| IngestError::Corrupt)?,
                len.max(0) as u64,
                done,
            ))),
        }
    }

    /// Records an evidence file as held and verified.
    ///
    /// # Errors
    /// [`IngestError::Sqlite`].
    pub fn evidence_complete(&self, sha256: &Digest) -> Result<(), IngestError> {
        self.conn.execute(
            "UPDATE evidence SET complete = 1 WHERE sha256 = ?1",
            params![sha256.0.as_slice()],
        )?;
        Ok(())
    }

    /// Records a box's latest health report (MessagePack body).
    ///
    /// # Errors
    /// [`IngestError::Sqlite`] or [`IngestError::Encode`].
    pub fn record_health(
        &self,
        box_id: &BoxId,
        health: &protocol::Health,
        now: Timestamp,
    ) -> Result<(), IngestError> {
        let body = rmp_serde::to_vec_named(health).map_err(IngestError::Encode)?;
        self.conn.execute(
            "INSERT INTO health (box_id, at, body) VALUES (?1, ?2, ?3)
             ON CONFLICT (box_id) DO UPDATE SET at = excluded.at, body = excluded.body",
            params![box_id.as_str(), now.as_unix_millis(), body],
        )?;
        Ok(())
    }

    /// A box's latest health report and when it arrived.
    ///
    /// # Errors
    /// [`IngestError::Sqlite`] or [`IngestError::Decode`].
    pub fn health(
        &self,
        box_id: &BoxId,
    ) -> Result<Option<(Timestamp, protocol::Health)>, IngestError> {
        let row = self
            .conn
            .query_row(
                "SELECT at, body FROM health WHERE box_id = ?1",
                params![box_id.as_str()],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)),
            )
            .optional()?;
        row.map(|(at, body)| {
            Ok((
                Timestamp::from_unix_millis(at),
                rmp_serde::from_slice(&body).map_err(IngestError::Decode)?,
            ))
        })
        .transpose()
    }
}

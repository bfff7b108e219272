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
//! One SQLite file (`ingest.db`, WAL, `synchronous=FULL`), its schema versioned by
//! `PRAGMA user_version`; a file written by a newer hub is refused. Blocking, so callers use
//! `spawn_blocking`. This module must not decide what an event means, beyond reading which
//! evidence files an event names and which a box's data-loss report says are gone.

use std::path::Path;

use protocol::{BoxId, Digest, Event, Seq, Timestamp};
use rusqlite::{Connection, OptionalExtension, params};

use super::IngestError;

/// File name of the ingest log in the data folder.
pub const INGEST_FILE: &str = "ingest.db";

/// Schema versions, applied in order (`user_version` counts them). Version 1 is the schema of
/// the first hubs, which did not set `user_version`: it creates only what is missing.
const MIGRATIONS: &[&str] = &[V1, V2, V3];

/// The schema version this hub writes (`PRAGMA user_version`): the number of migrations.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

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
    conn: Connection,
}

impl IngestLog {
    /// Opens (creating if needed) the log at `path`.
    ///
    /// # Errors
    /// [`IngestError::Sqlite`].
    pub fn open(path: &Path) -> Result<IngestLog, IngestError> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > MIGRATIONS.len() as i64 {
            return Err(IngestError::SchemaTooNew {
                file: INGEST_FILE,
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
        Ok(IngestLog { conn })
    }

    /// The highest sequence number committed for a box's store epoch.
    ///
    /// # Errors
    /// [`IngestError::Sqlite`].
    pub fn last_seq(&self, box_id: &BoxId, epoch: u64) -> Result<Option<Seq>, IngestError> {
        let v: Option<i64> = self
            .conn
            .prepare_cached("SELECT MAX(seq) FROM events WHERE box_id = ?1 AND epoch = ?2")?
            .query_row(params![box_id.as_str(), to_i64(epoch)], |r| r.get(0))?;
        Ok(v.map(|s| Seq(s as u64)))
    }

    /// Commits delivered events of one box's store epoch in one transaction, in order,
    /// ignoring any already held (same `(box, epoch, seq)` and id, or the same id). An event
    /// whose `(box, epoch, seq)` holds another event is a [`Conflict`]: it and the rest of the
    /// batch are not committed. Evidence the events name is recorded as wanted; evidence a
    /// data-loss report of the box names as lost is marked lost. Returns once the commit is
    /// durable, with the evidence newly wanted.
    ///
    /// # Errors
    /// [`IngestError::Sqlite`] or [`IngestError::Encode`]; nothing is committed then.
    pub fn commit(
        &mut self,
        box_id: &BoxId,
        epoch: u64,
        events: &[Event],
        max_evidence_bytes: u64,
        now: Timestamp,
    ) -> Result<(Committed, Vec<(Digest, u64)>), IngestError> {
        let tx = self.conn.transaction()?;
        let mut out = Committed::default();
        let mut wanted = Vec::new();
        {
            let mut held = tx.prepare_cached(
                "SELECT event_id FROM events WHERE box_id = ?1 AND epoch = ?2 AND seq = ?3",
            )?;
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO events (box_id, epoch, seq, event_id, received_at, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let mut want = tx.prepare_cached(
                "INSERT OR IGNORE INTO evidence (sha256, box_id, total_bytes, lost) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for event in events {
                let id = event.id.as_uuid().as_bytes().to_vec();
                let existing: Option<Vec<u8>> = held
                    .query_row(
                        params![box_id.as_str(), to_i64(epoch), event.seq.0 as i64],
                        |r| r.get(0),
                    )
                    .optional()?;
                match existing {
                    Some(other) if other == id => {
                        out.duplicates += 1;
                        continue;
                    }
                    Some(other) => {
                        let held = <[u8; 16]>::try_from(other.as_slice())
                            .map(|b| protocol::EventId::from_uuid(uuid::Uuid::from_bytes(b)))
                            .map_err(|_| IngestError::Corrupt)?;
                        out.conflict = Some(Conflict {
                            seq: event.seq,
                            held,
                            sent: event.id,
                        });
                        break;
                    }
                    None => {}
                }
                let body = rmp_serde::to_vec_named(event).map_err(IngestError::Encode)?;
                let n = insert.execute(params![
                    box_id.as_str(),
                    to_i64(epoch),
                    event.seq.0 as i64,
                    id,
                    now.as_unix_millis(),
                    body
                ])?;
                if n == 0 {
                    // the same event under another epoch (re-sent after the store got one)
                    out.duplicates += 1;
                    continue;
                }
                out.inserted += 1;
                for e in &event.evidence {
                    let refused = e.bytes > max_evidence_bytes;
                    let state = if refused { REFUSED } else { 0 };
                    let new = want.execute(params![
                        e.sha256.0.as_slice(),
                        box_id.as_str(),
                        to_i64(e.bytes),
                        state
                    ])? == 1;
                    match (new, refused) {
                        (true, false) => wanted.push((e.sha256, e.bytes)),
                        (true, true) => out.evidence_refused += 1,
                        _ => {}
                    }
                }
                for sha in lost_in_report(event) {
                    mark_lost(&tx, box_id, &sha)?;
                }
            }
            let last: Option<i64> = tx.query_row(
                "SELECT MAX(seq) FROM events WHERE box_id = ?1 AND epoch = ?2",
                params![box_id.as_str(), to_i64(epoch)],
                |r| r.get(0),
            )?;
            out.up_to = last.map(|s| Seq(s as u64));
            if let Some(c) = out.conflict {
                // never past a sequence number the box's own event is not committed at
                out.up_to = out.up_to.map(|u| Seq(u.0.min(c.seq.0.saturating_sub(1))));
                out.up_to = out.up_to.filter(|u| u.0 > 0);
            }
        }
        tx.commit()?;
        Ok((out, wanted))
    }

    /// Marks evidence files of a box lost: it reported them gone before they were uploaded.
    /// Files held complete, or wanted from another box, are left as they are. Returns how many
    /// were marked.
    ///
    /// # Errors
    /// [`IngestError::Sqlite`].
    pub fn evidence_lost(&mut self, box_id: &BoxId, files: &[Digest]) -> Result<u64, IngestError> {
        let tx = self.conn.transaction()?;
        let mut n = 0;
        for sha in files {
            n += mark_lost(&tx, box_id, sha)?;
        }
        tx.commit()?;
        Ok(n)
    }

    /// Up to `limit` events not yet handed on, oldest commit first and in sequence order per box.
    ///
    /// # Errors
    /// [`IngestError::Sqlite`]; a body that does not decode is [`IngestError::Decode`].
    pub fn unhanded(&self, limit: usize) -> Result<Vec<Unhanded>, IngestError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT box_id, epoch, body FROM events WHERE handed_on = 0
             ORDER BY received_at, box_id, epoch, seq LIMIT ?1",
        )?;
        let rows = stmt.query_map(params![limit.min(i64::MAX as usize) as i64], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (box_id, epoch, body) = row?;
            let box_id = BoxId::parse(box_id).map_err(|_| IngestError::Corrupt)?;
            let event = rmp_serde::from_slice(&body).map_err(IngestError::Decode)?;
            out.push(Unhanded {
                box_id,
                epoch: epoch.max(0) as u64,
                event,
            });
        }
        Ok(out)
    }

    /// Marks events, by `(box, epoch, seq)`, as handed on (`state` 1) or refused by the sink
    /// (`state` 2).
    ///
    /// # Errors
    /// [`IngestError::Sqlite`].
    pub fn mark_handed(&mut self, done: &[(BoxId, u64, Seq, u8)]) -> Result<(), IngestError> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE events SET handed_on = ?4 WHERE box_id = ?1 AND epoch = ?2 AND seq = ?3",
            )?;
            for (b, epoch, s, state) in done {
                stmt.execute(params![
                    b.as_str(),
                    to_i64(*epoch),
                    s.0 as i64,
                    i64::from(*state)
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Records evidence files as deleted after their retention period (their files are gone:
    /// never asked for again). Returns how many rows were marked.
    ///
    /// # Errors
    /// [`IngestError::Sqlite`].
    pub fn evidence_expired(&mut self, files: &[Digest]) -> Result<u64, IngestError> {
        let tx = self.conn.transaction()?;
        let mut n = 0;
        for sha in files {
            n += tx.execute(
                "UPDATE evidence SET complete = 0, lost = ?2 WHERE sha256 = ?1",
                params![sha.0.as_slice(), EXPIRED],
            )? as u64;
        }
        tx.commit()?;
        Ok(n)
    }

    /// Drops the bodies of up to `limit` events handed on (or refused by the cases) and received
    /// before `before` (the cases hold them): each keeps its `(box, epoch, seq)` and event id, so a re-delivery is
    /// still a duplicate and a cloned store still a conflict. Returns the events pruned and the
    /// bytes of body dropped.
    ///
    /// # Errors
    /// [`IngestError::Sqlite`].
    pub fn prune_bodies(
        &mut self,
        before: Timestamp,
        limit: usize,
    ) -> Result<(u64, u64), IngestError> {
        let tx = self.conn.transaction()?;
        let (mut events, mut bytes) = (0u64, 0u64);
        {
            let mut pick = tx.prepare_cached(
                "SELECT box_id, epoch, seq, length(body) FROM events
                 WHERE handed_on <> 0 AND received_at < ?1 AND length(body) > 0 LIMIT ?2",
            )?;
            let rows = pick
                .query_map(
                    params![
                        before.as_unix_millis(),
                        i64::try_from(limit).unwrap_or(i64::MAX)
                    ],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, i64>(3)?,
                        ))
                    },
                )?
                .collect::<Result<Vec<_>, _>>()?;
            let mut prune = tx.prepare_cached(
                "UPDATE events SET body = x'' WHERE box_id = ?1 AND epoch = ?2 AND seq = ?3",
            )?;
            for (box_id, epoch, seq, len) in rows {
                prune.execute(params![box_id, epoch, seq])?;
                events += 1;
                bytes += len.max(0) as u64;
            }
        }
        tx.commit()?;
        Ok((events, bytes))
    }

    /// Every event of a box, by epoch, in sequence order (tests, tools).
    ///
    /// # Errors
    /// [`IngestError::Sqlite`] or [`IngestError::Decode`].
    pub fn events_of(&self, box_id: &BoxId) -> Result<Vec<Event>, IngestError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT body FROM events WHERE box_id = ?1 AND length(body) > 0 ORDER BY epoch, seq",
        )?;
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
            "SELECT sha256, total_bytes FROM evidence WHERE box_id = ?1 AND complete = 0 AND lost = 0",
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

    /// The box an evidence file is wanted from, its announced length, and where it stands.
    ///
    /// # Errors
    /// [`IngestError::Sqlite`].
    pub fn evidence_state(
        &self,
        sha256: &Digest,
    ) -> Result<Option<(BoxId, u64, EvidenceState)>, IngestError> {
        let row = self
            .conn
            .query_row(
                "SELECT box_id, total_bytes, complete, lost FROM evidence WHERE sha256 = ?1",
                params![sha256.0.as_slice()],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, bool>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                },
            )
            .optional()?;
        match row {
            None => Ok(None),
            Some((b, len, complete, lost)) => Ok(Some((
                BoxId::parse(b).map_err(|_| IngestError::Corrupt)?,
                len.max(0) as u64,
                match (complete, lost) {
                    (true, _) => EvidenceState::Complete,
                    (false, LOST) => EvidenceState::Lost,
                    (false, REFUSED) => EvidenceState::Refused,
                    (false, EXPIRED) => EvidenceState::Expired,
                    (false, _) => EvidenceState::Wanted,
                },
            ))),
        }
    }

    /// Records an evidence file as held and verified (a file reported lost that arrives after
    /// all is held all the same).
    ///
    /// # Errors
    /// [`IngestError::Sqlite`].
    pub fn evidence_complete(&self, sha256: &Digest) -> Result<(), IngestError> {
        self.conn.execute(
            "UPDATE evidence SET complete = 1, lost = 0 WHERE sha256 = ?1",
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
fn mark_lost(conn: &Connection, box_id: &BoxId, sha: &Digest) -> Result<u64, IngestError> {
    let n = conn
        .prepare_cached(
            "UPDATE evidence SET lost = 1 WHERE sha256 = ?1 AND box_id = ?2 AND complete = 0 AND lost = 0",
        )?
        .execute(params![sha.0.as_slice(), box_id.as_str()])?;
    Ok(n as u64)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::event;
    use protocol::{AttrValue, EvidenceRef, SourceKind};

    fn open() -> (tempfile::TempDir, IngestLog) {
        let dir = tempfile::tempdir().unwrap();
        let log = IngestLog::open(&dir.path().join(INGEST_FILE)).unwrap();
        (dir, log)
    }

    const NOW: Timestamp = Timestamp::from_unix_millis(1_767_225_700_000);
    const MAX: u64 = 8 << 20;

    #[test]
    fn a_new_epoch_counts_again_from_one_and_nothing_is_taken_for_a_duplicate() {
        let (_dir, mut log) = open();
        let b = BoxId::parse("box-1").unwrap();
        let old: Vec<Event> = (1..=3).map(|s| event(s, 1)).collect();
        let (c, _) = log.commit(&b, 7, &old, MAX, NOW).unwrap();
        assert_eq!((c.inserted, c.up_to), (3, Some(Seq(3))));
        let new: Vec<Event> = (1..=2).map(|s| event(s, 2)).collect();
        let (c, _) = log.commit(&b, 9, &new, MAX, NOW).unwrap();
        assert_eq!((c.inserted, c.duplicates, c.up_to), (2, 0, Some(Seq(2))));
        assert_eq!(log.last_seq(&b, 7).unwrap(), Some(Seq(3)));
        assert_eq!(log.last_seq(&b, 9).unwrap(), Some(Seq(2)));
        assert_eq!(log.unhanded(10).unwrap().len(), 5);
        // the same events again: duplicates, acknowledged
        let (c, _) = log.commit(&b, 9, &new, MAX, NOW).unwrap();
        assert_eq!((c.inserted, c.duplicates, c.up_to), (0, 2, Some(Seq(2))));
        // the same event under another epoch (re-sent after an upgrade gave the store one)
        let (c, _) = log.commit(&b, 11, &old[2..], MAX, NOW).unwrap();
        assert_eq!((c.inserted, c.duplicates), (0, 1));
    }

    #[test]
    fn another_event_at_a_committed_seq_is_a_conflict_and_is_never_acknowledged() {
        let (_dir, mut log) = open();
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
        let (_dir, mut log) = open();
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
        let (_dir, mut log) = open();
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
            log.unhanded(10).unwrap().len(),
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
        let (_dir, mut log) = open();
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
        assert_eq!(log.unhanded(10).unwrap()[0].epoch, 0);
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
        let (_dir, mut log) = open();
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

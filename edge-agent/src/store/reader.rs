//! Read-only access to the store on a connection of its own. WAL lets readers see the last
//! committed state without ever blocking the writer or being blocked by it.

use std::path::Path;
use std::time::Duration;

use protocol::{Digest, Event, Seq};
use rusqlite::{Connection, OptionalExtension, Row};

use super::schema;
use super::{StoreError, StoreStats, sqlite_error};

/// A read-only connection to the store (one per reading task; not shared between threads).
pub struct StoreReader {
    conn: Connection,
    /// The row counts of the previous [`StoreReader::stats`], so the next one counts only the
    /// rows that changed instead of walking a table of a million events each time.
    counted: Option<Counted>,
}

/// Row counts as of some positions and deletion counters (see [`StoreReader::stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counted {
    last_seq: u64,
    acked_seq: u64,
    /// Deletions of any kind, ever: when it moves, the counts are taken afresh.
    deletions: u64,
    events: u64,
    unsynced_events: u64,
}

impl StoreReader {
    pub(super) fn open_at(path: &Path, busy_timeout: Duration) -> Result<StoreReader, StoreError> {
        Ok(StoreReader {
            conn: schema::open_reader(path, busy_timeout)?,
            counted: None,
        })
    }

    /// Up to `limit` unsynced events in sequence order.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] or [`StoreError::Decode`].
    pub fn pending(&mut self, limit: usize) -> Result<Vec<Event>, StoreError> {
        // One statement, so the cursor and the rows come from the same snapshot.
        self.query_events(
            "SELECT seq, body FROM events
             WHERE seq > (SELECT value FROM meta WHERE key = 'acked_seq')
             ORDER BY seq LIMIT ?1",
            [limit_param(limit)],
        )
    }

    /// Up to `limit` events (synced or not) with `seq >= from`, in sequence order.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] or [`StoreError::Decode`].
    pub fn events_from(&mut self, from: Seq, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.query_events(
            "SELECT seq, body FROM events WHERE seq >= ?1 ORDER BY seq LIMIT ?2",
            [seq_param(from), limit_param(limit)],
        )
    }

    /// Counters and positions, from one snapshot.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn stats(&mut self) -> Result<StoreStats, StoreError> {
        let tx = self
            .conn
            .transaction()
            .map_err(|e| sqlite_error("begin read", e))?;
        let mut stats = StoreStats::default();
        {
            let mut stmt = tx
                .prepare_cached("SELECT key, value FROM meta")
                .map_err(|e| sqlite_error("read meta", e))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(|e| sqlite_error("read meta", e))?;
            for row in rows {
                let (key, value) = row.map_err(|e| sqlite_error("read meta", e))?;
                let value = value.max(0) as u64;
                match key.as_str() {
                    "last_seq" => stats.last_seq = value,
                    "acked_seq" => stats.acked_seq = value,
                    "usage_bytes" => stats.usage_bytes = value,
                    "lost_events_total" => stats.lost_events_total = value,
                    "evicted_events_total" => stats.evicted_events_total = value,
                    "evicted_evidence_total" => stats.evicted_evidence_total = value,
                    "expired_events_total" => stats.expired_events_total = value,
                    "lost_evidence_total" => stats.lost_evidence_total = value,
                    _ => {}
                }
            }
        }
        let count = |sql: &str, from: u64, to: u64| -> Result<u64, StoreError> {
            tx.query_row(sql, [seq_i64(from), seq_i64(to)], |r| r.get::<_, i64>(0))
                .map(|n| n.max(0) as u64)
                .map_err(|e| sqlite_error("count rows", e))
        };
        // Rows are appended above `last_seq` and deleted only by eviction (any row) and
        // retention (synced rows); both move a deletion counter. Without a deletion, the counts
        // of the previous call move by the rows between the old and new positions.
        let deletions =
            stats.lost_events_total + stats.evicted_events_total + stats.expired_events_total;
        let between = "SELECT count(*) FROM events WHERE seq > ?1 AND seq <= ?2";
        let counted = match self.counted {
            Some(c)
                if c.deletions == deletions
                    && c.last_seq <= stats.last_seq
                    && c.acked_seq <= stats.acked_seq =>
            {
                let added = count(between, c.last_seq, stats.last_seq)?;
                let acked = count(between, c.acked_seq, stats.acked_seq)?;
                Counted {
                    events: c.events + added,
                    unsynced_events: (c.unsynced_events + added).saturating_sub(acked),
                    ..c
                }
            }
            _ => Counted {
                // A bare count(*) reads the smallest index, cheaper than the table's rows.
                events: tx
                    .query_row("SELECT count(*) FROM events", [], |r| r.get::<_, i64>(0))
                    .map(|n| n.max(0) as u64)
                    .map_err(|e| sqlite_error("count rows", e))?,
                unsynced_events: count(between, stats.acked_seq, u64::MAX)?,
                last_seq: 0,
                acked_seq: 0,
                deletions: 0,
            },
        };
        let counted = Counted {
            last_seq: stats.last_seq,
            acked_seq: stats.acked_seq,
            deletions,
            ..counted
        };
        stats.events = counted.events;
        stats.unsynced_events = counted.unsynced_events;
        let count = |sql: &str| -> Result<u64, StoreError> {
            tx.query_row(sql, [], |r| r.get::<_, i64>(0))
                .map(|n| n.max(0) as u64)
                .map_err(|e| sqlite_error("count rows", e))
        };
        stats.evidence_files = count("SELECT count(*) FROM evidence WHERE present = 1")?;
        self.counted = Some(counted);
        Ok(stats)
    }

    /// Whether the evidence file named by `sha256` is held on the box.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn has_evidence(&mut self, sha256: &Digest) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached("SELECT present FROM evidence WHERE sha256 = ?1")
            .and_then(|mut s| {
                s.query_row([&sha256.0[..]], |r| r.get::<_, i64>(0))
                    .optional()
            })
            .map(|p| p == Some(1))
            .map_err(|e| sqlite_error("read evidence", e))
    }

    /// Up to `limit` evidence files of synced events that are held and not confirmed by the
    /// hub, oldest first.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn unconfirmed_evidence(&mut self, limit: usize) -> Result<Vec<Digest>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT sha256 FROM evidence WHERE present = 1 AND confirmed = 0
                 AND last_seq <= (SELECT value FROM meta WHERE key = 'acked_seq')
                 ORDER BY last_seq LIMIT ?1",
            )
            .map_err(|e| sqlite_error("read evidence", e))?;
        let rows = stmt
            .query_map([limit_param(limit)], |r| r.get::<_, Vec<u8>>(0))
            .map_err(|e| sqlite_error("read evidence", e))?;
        let mut out = Vec::new();
        for row in rows {
            let bytes = row.map_err(|e| sqlite_error("read evidence", e))?;
            if let Ok(d) = <[u8; 32]>::try_from(bytes.as_slice()) {
                out.push(Digest(d));
            }
        }
        Ok(out)
    }

    fn query_events<P: rusqlite::Params>(
        &mut self,
        sql: &str,
        params: P,
    ) -> Result<Vec<Event>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(sql)
            .map_err(|e| sqlite_error("read events", e))?;
        let rows = stmt
            .query_map(params, row_parts)
            .map_err(|e| sqlite_error("read events", e))?;
        let mut events = Vec::new();
        for row in rows {
            let (seq, body) = row.map_err(|e| sqlite_error("read events", e))?;
            events.push(decode(seq, &body)?);
        }
        Ok(events)
    }
}

impl std::fmt::Debug for StoreReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreReader").finish_non_exhaustive()
    }
}

/// Decodes a stored body and puts the authoritative `seq` into it.
pub(super) fn decode(seq: u64, body: &[u8]) -> Result<Event, StoreError> {
    let mut event: Event =
        rmp_serde::from_slice(body).map_err(|source| StoreError::Decode { seq, source })?;
    event.seq = Seq(seq);
    Ok(event)
}

fn row_parts(row: &Row<'_>) -> rusqlite::Result<(u64, Vec<u8>)> {
    Ok((row.get::<_, i64>(0)?.max(0) as u64, row.get(1)?))
}

fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn seq_param(seq: Seq) -> i64 {
    seq_i64(seq.0)
}

fn seq_i64(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

//! `hub db migrate`: copies the case database from one engine to the other (SQLite to
//! PostgreSQL as a hub grows, or back), table by table in chunks with progress, keeping every
//! id, and checks the row counts at the end. Relayed box commands (wanted for seconds) are not
//! copied.
//!
//! The destination must be empty (its schema is made by opening it); the source should not be
//! written meanwhile (stop `hub serve` first: a row written during the copy may be missed, and
//! the count check then fails). This module must not change the source (opening it brings its
//! schema up to date, as `hub serve` would).

use super::db::{Db, DbError};
use crate::storage::{EngineKind, Sql, Val};

/// A table of the case store and the columns copied (generated columns left out), first its
/// key: rows are read in key order, a chunk after the last key read.
struct Table {
    name: &'static str,
    columns: &'static [&'static str],
}

/// Every table, parents before children (transitions refer to cases).
const TABLES: &[Table] = &[
    Table {
        name: "cases",
        columns: &[
            "id",
            "category",
            "state",
            "last_observed_at",
            "escalate_at",
            "lat",
            "lon",
            "body",
        ],
    },
    Table {
        name: "transitions",
        columns: &["id", "case_id", "body"],
    },
    Table {
        name: "events",
        columns: &[
            "event_id",
            "box_id",
            "seq",
            "case_id",
            "received_at",
            "body",
        ],
    },
    Table {
        name: "changes",
        columns: &["id", "at", "case_id", "department", "action", "body"],
    },
    Table {
        name: "webhook_cursors",
        columns: &["department", "done_id"],
    },
    Table {
        name: "rechecks",
        columns: &["request_id", "case_id", "box_id", "asked_at", "answered_at"],
    },
    Table {
        name: "evidence_expired",
        columns: &["case_id", "at", "files", "bytes"],
    },
    // keyed by (department, change_id): ordered by both, a chunk after the last pair
    Table {
        name: "webhook_failures",
        columns: &["department", "change_id", "at", "attempts", "last_error"],
    },
];

/// Rows copied per transaction.
const CHUNK: usize = 1000;

/// What a copy did: rows per table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// `(table, rows)` in copy order.
    pub tables: Vec<(&'static str, u64)>,
}

impl CopyReport {
    /// Rows in all.
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|(_, n)| n).sum()
    }
}

/// A copy that could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CopyError {
    /// Reading the source or writing the destination failed (nothing of the source changed;
    /// the destination holds a partial copy: empty it before trying again).
    #[error("copying failed")]
    Db(#[from] DbError),
    /// The destination holds cases or events already.
    #[error("the destination holds {rows} rows in {table} already: copy into an empty database")]
    NotEmpty {
        /// The first table found with rows.
        table: &'static str,
        /// How many.
        rows: u64,
    },
    /// The counts differ after the copy (the source was written meanwhile?).
    #[error(
        "{table}: {source_rows} rows in the source, {copied} in the destination (was the hub running?)"
    )]
    CountMismatch {
        /// The table.
        table: &'static str,
        /// Rows in the source now.
        source_rows: u64,
        /// Rows in the destination.
        copied: u64,
    },
}

/// Copies every row of the case store in `from` into `to` (empty, migrated), reporting each
/// chunk to `progress`.
///
/// # Errors
/// [`CopyError`].
pub fn copy(from: &Db, to: &Db, progress: &mut dyn FnMut(&str)) -> Result<CopyReport, CopyError> {
    for table in TABLES {
        let rows = count(to, table.name)?;
        if rows > 0 {
            return Err(CopyError::NotEmpty {
                table: table.name,
                rows,
            });
        }
    }
    let mut report = CopyReport::default();
    for table in TABLES {
        let total = count(from, table.name)?;
        let mut copied = 0u64;
        let mut after: Option<Vec<Val>> = None;
        loop {
            let rows = read_chunk(from, table, after.as_deref())?;
            if rows.is_empty() {
                break;
            }
            write_chunk(to, table, &rows)?;
            copied += rows.len() as u64;
            after = rows.last().map(|r| key_of(table, r));
            progress(&format!("{}: {copied} of {total} rows", table.name));
        }
        let now_there = count(to, table.name)?;
        let source_rows = count(from, table.name)?;
        if now_there != source_rows {
            return Err(CopyError::CountMismatch {
                table: table.name,
                source_rows,
                copied: now_there,
            });
        }
        report.tables.push((table.name, now_there));
    }
    if to.engine() == EngineKind::Postgres {
        // identity columns continue after the copied ids
        to.atomically(|tx| -> Result<(), DbError> {
            for table in ["cases", "transitions"] {
                tx.storage().execute(
                    &Sql::same(format!(
                        "SELECT setval(pg_get_serial_sequence('{table}', 'id'), \
                         GREATEST((SELECT MAX(id) FROM {table}), 1))"
                    )),
                    &[],
                )?;
            }
            Ok(())
        })?;
    }
    progress(&format!(
        "copied {} rows; the counts match in every table",
        report.rows()
    ));
    Ok(report)
}

fn count(db: &Db, table: &str) -> Result<u64, DbError> {
    db.atomically(|tx| {
        let n = tx
            .storage()
            .query_first(
                &Sql::same(format!("SELECT COUNT(*) FROM {table}")),
                &[],
                |r| r.int(0),
            )?
            .unwrap_or(0);
        Ok(n.max(0) as u64)
    })
}

/// The key columns of a table: the first, or the first two for the one keyed by a pair.
fn key_len(table: &Table) -> usize {
    if table.name == "webhook_failures" {
        2
    } else {
        1
    }
}

fn key_of(table: &Table, row: &[Val]) -> Vec<Val> {
    row[..key_len(table)].to_vec()
}

fn read_chunk(db: &Db, table: &Table, after: Option<&[Val]>) -> Result<Vec<Vec<Val>>, DbError> {
    let columns = table.columns.join(", ");
    let key = &table.columns[..key_len(table)];
    let order = key.join(", ");
    let (condition, mut args) = match after {
        None => (String::new(), Vec::new()),
        Some(last) => {
            let marks: Vec<String> = (1..=key.len()).map(|i| format!("?{i}")).collect();
            (
                format!("WHERE ({order}) > ({})", marks.join(", ")),
                last.to_vec(),
            )
        }
    };
    args.push(CHUNK.into());
    let limit = args.len();
    let sql = Sql::same(format!(
        "SELECT {columns} FROM {} {condition} ORDER BY {order} LIMIT ?{limit}",
        table.name
    ));
    db.atomically(|tx| {
        tx.storage().query(&sql, &args, |r| {
            (0..table.columns.len())
                .map(|i| r.value(i))
                .collect::<Result<Vec<Val>, _>>()
                .map_err(DbError::from)
        })
    })
}

fn write_chunk(db: &Db, table: &Table, rows: &[Vec<Val>]) -> Result<(), DbError> {
    let columns = table.columns.join(", ");
    let marks: Vec<String> = (1..=table.columns.len()).map(|i| format!("?{i}")).collect();
    let sql = Sql::same(format!(
        "INSERT INTO {} ({columns}) VALUES ({})",
        table.name,
        marks.join(", ")
    ));
    db.atomically(|tx| {
        for row in rows {
            tx.storage().execute(&sql, row)?;
        }
        Ok(())
    })
}

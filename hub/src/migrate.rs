//! `hub db migrate`: copies a hub from one engine to the other (SQLite to PostgreSQL as a hub
//! grows, or back): the case database, and with the hub's data folder the box registry, the
//! ingest log and the evidence files, which on SQLite are files of the data folder and on
//! PostgreSQL live in the database beside the cases. Tables are copied in key order in chunks
//! with progress, keeping every id, and the row counts are checked at the end. Relayed box
//! commands (wanted for seconds), which processes serve the database, and evidence uploads not
//! finished (the box is asked again) are not copied.
//!
//! The destination must be empty (its schema is made by opening it); the source should not be
//! written meanwhile (stop `hub serve` first: a row written during the copy may be missed, and
//! the count check then fails). This module must not change the source (opening it brings its
//! schema up to date, as `hub serve` would).

use std::path::Path;

use crate::cases::db::{Db, DbError};
use crate::ingest::evidence::{ChunkOutcome, EvidenceStore};
use crate::ingest::{IngestError, IngestLog};
use crate::registry::{Registry, RegistryError};
use crate::storage::{DatabaseUrl, Engine, EngineKind, Sql, StorageError, Val};

/// A table and the columns copied (generated and per-process columns left out), its key
/// first: rows are read in key order, a chunk after the last key read.
struct Table {
    name: &'static str,
    /// How many of the first columns are the key.
    key: usize,
    columns: &'static [&'static str],
}

/// The case store's tables, parents before children (transitions refer to cases).
const CASE_TABLES: &[Table] = &[
    Table {
        name: "cases",
        key: 1,
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
        key: 1,
        columns: &["id", "case_id", "body"],
    },
    Table {
        name: "events",
        key: 1,
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
        key: 1,
        columns: &["id", "at", "case_id", "department", "action", "body"],
    },
    Table {
        name: "webhook_cursors",
        key: 1,
        columns: &["department", "done_id"],
    },
    Table {
        name: "rechecks",
        key: 1,
        columns: &["request_id", "case_id", "box_id", "asked_at", "answered_at"],
    },
    Table {
        name: "evidence_expired",
        key: 1,
        columns: &["case_id", "at", "files", "bytes"],
    },
    Table {
        name: "webhook_failures",
        key: 2,
        columns: &["department", "change_id", "at", "attempts", "last_error"],
    },
    // every grid, duty list and calendar text served (which processes serve now is not
    // copied: they record it when they start on the copy)
    Table {
        name: "file_versions",
        key: 2,
        columns: &["kind", "sha256", "body", "first_served_at"],
    },
];

/// The box registry's tables (tokens refer to boxes).
const REGISTRY_TABLES: &[Table] = &[
    Table {
        name: "boxes",
        key: 1,
        columns: &[
            "box_id",
            "name",
            "grid",
            "status",
            "created_at",
            "enrolled_at",
            "revoked_at",
            "cert_not_after",
            "last_seen_at",
        ],
    },
    Table {
        name: "tokens",
        key: 1,
        columns: &["secret_sha256", "box_id", "expires_at", "used_at"],
    },
];

/// The ingest log's tables (a hand-off claim is a process's own: not copied).
const INGEST_TABLES: &[Table] = &[
    Table {
        name: "ingest_events",
        key: 3,
        columns: &[
            "box_id",
            "epoch",
            "seq",
            "event_id",
            "received_at",
            "body",
            "handed_on",
        ],
    },
    Table {
        name: "ingest_evidence",
        key: 1,
        columns: &["sha256", "box_id", "total_bytes", "complete", "lost"],
    },
    Table {
        name: "box_health",
        key: 1,
        columns: &["box_id", "at", "body"],
    },
];

/// Rows copied per transaction.
const CHUNK: usize = 1000;

/// Bytes of an evidence file written per chunk into the database.
const EVIDENCE_CHUNK: usize = 256 << 10;

/// What a copy did: rows per table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// `(table, rows)` in copy order; evidence files as the table `evidence files`.
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
    /// The same, in the box registry, the ingest log or the evidence.
    #[error("copying failed: {0}")]
    Storage(#[from] StorageError),
    /// The box registry could not be opened.
    #[error("the box registry could not be opened")]
    Registry(#[from] RegistryError),
    /// The ingest log or the evidence could not be opened, read or written.
    #[error("the ingest log or the evidence could not be copied")]
    Ingest(#[from] IngestError),
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
    /// The SQLite side's data folder holds no box registry (a mistyped `--data`): copying it
    /// would move the hub without its boxes.
    #[error(
        "`{}` holds no {}: give the hub's data folder ([ingest] data_dir)",
        .0.display(),
        crate::registry::REGISTRY_FILE
    )]
    NotAHubFolder(std::path::PathBuf),
    /// An evidence file listed as held does not hash to its name.
    #[error("evidence file {0} is not what its name says (its SHA-256 differs): not copied")]
    BadEvidence(String),
}

/// Copies every row of the case store in `from` into `to` (empty, migrated), reporting each
/// chunk to `progress`.
///
/// # Errors
/// [`CopyError`].
pub fn copy(from: &Db, to: &Db, progress: &mut dyn FnMut(&str)) -> Result<CopyReport, CopyError> {
    let mut report = CopyReport::default();
    copy_tables(
        from.storage_engine(),
        to.storage_engine(),
        CASE_TABLES,
        &mut report,
        progress,
    )?;
    if to.engine() == EngineKind::Postgres {
        // identity columns continue after the copied ids
        to.storage_engine().atomically(|tx| {
            for table in ["cases", "transitions"] {
                tx.execute(
                    &Sql::same(format!(
                        "SELECT setval(pg_get_serial_sequence('{table}', 'id'), \
                         GREATEST((SELECT MAX(id) FROM {table}), 1))"
                    )),
                    &[],
                )?;
            }
            Ok::<_, StorageError>(())
        })?;
    }
    progress(&format!(
        "copied {} rows; the counts match in every table",
        report.rows()
    ));
    Ok(report)
}

/// Where a hub's boxes are: a SQLite hub's data folder (`registry.db`, `ingest.db`,
/// `evidence/`), or the PostgreSQL database that holds them beside the cases.
#[derive(Debug, Clone, Copy)]
pub struct BoxesAt<'a> {
    /// The data folder (on PostgreSQL only its CA files are there).
    pub data_dir: &'a Path,
    /// The database, when PostgreSQL.
    pub database: Option<&'a DatabaseUrl>,
}

impl BoxesAt<'_> {
    /// Refuses a SQLite data folder without a box registry as the source of a copy: opening a
    /// registry makes one, so a mistyped folder would move the hub without its boxes. Check
    /// before copying anything.
    ///
    /// # Errors
    /// [`CopyError::NotAHubFolder`].
    pub fn check_source(&self) -> Result<(), CopyError> {
        let registry = self.data_dir.join(crate::registry::REGISTRY_FILE);
        if self.database.is_none() && !registry.is_file() {
            return Err(CopyError::NotAHubFolder(self.data_dir.to_owned()));
        }
        Ok(())
    }
}

/// Copies the box registry, the ingest log and the evidence files from one hub's place to
/// another's (the destination empty), reporting progress.
///
/// # Errors
/// [`CopyError`].
pub fn copy_boxes(
    from: BoxesAt<'_>,
    to: BoxesAt<'_>,
    progress: &mut dyn FnMut(&str),
) -> Result<CopyReport, CopyError> {
    from.check_source()?;
    let mut report = CopyReport::default();
    let (source, destination) = (
        Registry::open_for(from.data_dir, from.database)?,
        Registry::open_for(to.data_dir, to.database)?,
    );
    copy_tables(
        source.storage_engine(),
        destination.storage_engine(),
        REGISTRY_TABLES,
        &mut report,
        progress,
    )?;
    let (source, destination) = (
        IngestLog::open_for(from.data_dir, from.database)?,
        IngestLog::open_for(to.data_dir, to.database)?,
    );
    copy_tables(
        source.storage_engine(),
        destination.storage_engine(),
        INGEST_TABLES,
        &mut report,
        progress,
    )?;
    let files = copy_evidence(
        &source,
        &source.evidence_store(from.data_dir)?,
        &destination.evidence_store(to.data_dir)?,
        progress,
    )?;
    report.tables.push(("evidence files", files));
    progress(&format!(
        "copied the box registry, the ingest log and {files} evidence files; the counts match"
    ));
    Ok(report)
}

/// Copies every evidence file the source holds complete into the destination's store.
fn copy_evidence(
    log: &IngestLog,
    from: &EvidenceStore,
    to: &EvidenceStore,
    progress: &mut dyn FnMut(&str),
) -> Result<u64, CopyError> {
    let held = log.evidence_held()?;
    let total = held.len();
    let mut copied = 0u64;
    for sha in held {
        // listed as held but gone from the folder: the box is not asked again; say so
        let Some(bytes) = from.read(&sha)? else {
            progress(&format!(
                "evidence file {sha} is listed as held but is not there: skipped"
            ));
            continue;
        };
        let len = bytes.len() as u64;
        // an empty file is one empty chunk
        let mut outcome = ChunkOutcome::Partial(0);
        if bytes.is_empty() {
            outcome = to.write_chunk(&sha, 0, &[], 0)?;
        }
        for (i, piece) in bytes.chunks(EVIDENCE_CHUNK).enumerate() {
            outcome = to.write_chunk(&sha, (i * EVIDENCE_CHUNK) as u64, piece, len)?;
        }
        if outcome != ChunkOutcome::Complete {
            return Err(CopyError::BadEvidence(sha.to_hex()));
        }
        copied += 1;
        if copied.is_multiple_of(100) || copied as usize == total {
            progress(&format!("evidence files: {copied} of {total}"));
        }
    }
    Ok(copied)
}

/// Copies `tables` from `from` into `to`, refusing a destination that holds rows in any.
fn copy_tables(
    from: &Engine,
    to: &Engine,
    tables: &'static [Table],
    report: &mut CopyReport,
    progress: &mut dyn FnMut(&str),
) -> Result<(), CopyError> {
    for table in tables {
        let rows = count(to, table.name)?;
        if rows > 0 {
            return Err(CopyError::NotEmpty {
                table: table.name,
                rows,
            });
        }
    }
    for table in tables {
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
            after = rows.last().map(|r| r[..table.key].to_vec());
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
    Ok(())
}

fn count(engine: &Engine, table: &str) -> Result<u64, StorageError> {
    engine.atomically(|tx| {
        let n = tx
            .query_first(
                &Sql::same(format!("SELECT COUNT(*) FROM {table}")),
                &[],
                |r| r.int(0),
            )?
            .unwrap_or(0);
        Ok(n.max(0) as u64)
    })
}

fn read_chunk(
    engine: &Engine,
    table: &Table,
    after: Option<&[Val]>,
) -> Result<Vec<Vec<Val>>, StorageError> {
    let columns = table.columns.join(", ");
    let order = table.columns[..table.key].join(", ");
    let (condition, mut args) = match after {
        None => (String::new(), Vec::new()),
        Some(last) => {
            let marks: Vec<String> = (1..=table.key).map(|i| format!("?{i}")).collect();
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
    engine.atomically(|tx| {
        tx.query(&sql, &args, |r| {
            (0..table.columns.len())
                .map(|i| r.value(i))
                .collect::<Result<Vec<Val>, _>>()
        })
    })
}

fn write_chunk(engine: &Engine, table: &Table, rows: &[Vec<Val>]) -> Result<(), StorageError> {
    let columns = table.columns.join(", ");
    let marks: Vec<String> = (1..=table.columns.len()).map(|i| format!("?{i}")).collect();
    let sql = Sql::same(format!(
        "INSERT INTO {} ({columns}) VALUES ({})",
        table.name,
        marks.join(", ")
    ));
    engine.atomically(|tx| {
        for row in rows {
            tx.execute(&sql, row)?;
        }
        Ok(())
    })
}

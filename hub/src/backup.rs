//! `hub backup`: a consistent copy of a running SQLite hub, made online (the hub keeps
//! serving), into a new folder that restores by copying its files back (see the README).
//!
//! Each database is copied with SQLite's online backup API, a page range at a time, from a
//! connection of its own that only reads, so writers go on meanwhile (a step that meets a lock waits and goes
//! on; a write by the hub restarts the copy of that database from a consistent point). The
//! databases are copied in the order that keeps a restore consistent: the registry, then the
//! ingest log, then the cases. A case database copied after the ingest log holds every event
//! the log calls handed on, and one the log does not call handed on yet is handed on again at
//! start and ignored as a duplicate. Evidence files are named by their SHA-256 and only ever
//! added or deleted, so they are copied last. Every copy is checked (`PRAGMA integrity_check`)
//! and the folder gets a `MANIFEST` that says where each file came from.
//!
//! This module must not write to the hub's own files: it opens the databases without creating
//! them and only reads (read-write, since a reader of a WAL database may need to set up its
//! shared-memory index when the hub is not running).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use crate::config::HubConfig;
use crate::ingest::INGEST_FILE;
use crate::registry::{CA_CERT_FILE, CA_KEY_FILE, REGISTRY_FILE};

/// Pages copied per backup step (4 KiB pages: 4 MiB a step).
const PAGES_PER_STEP: i32 = 1024;

/// How long a step that met a lock waits before trying again.
const BUSY_PAUSE: Duration = Duration::from_millis(20);

/// Why a backup failed. Nothing of the hub is changed by a failed backup; the destination is
/// left as far as it got.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The destination exists and is not an empty folder.
    #[error("`{}` exists and is not empty: a backup goes into a new folder", .0.display())]
    NotEmpty(PathBuf),
    /// The destination lies inside the hub's data folder (the evidence copy would copy itself,
    /// and a backup beside what it protects is lost with it).
    #[error("`{}` is inside the hub's data folder `{}`: back up to another place", to.display(), data.display())]
    InsideData {
        /// The destination.
        to: PathBuf,
        /// The data folder.
        data: PathBuf,
    },
    /// A file could not be read, written or copied.
    #[error("failed to {op} `{}`", path.display())]
    Io {
        /// What was done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A database could not be opened or copied.
    #[error("failed to copy the database `{}`", path.display())]
    Sqlite {
        /// The hub's database.
        path: PathBuf,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// A copied database does not pass SQLite's integrity check.
    #[error("the copy of `{}` fails its integrity check: {report}", path.display())]
    Corrupt {
        /// The hub's database.
        path: PathBuf,
        /// What `PRAGMA integrity_check` said.
        report: String,
    },
}

/// One file in the backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// Where it is in the hub.
    pub from: PathBuf,
    /// Where it is in the backup, relative to the backup folder.
    pub to: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
}

/// What a backup holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupReport {
    /// Every file, databases first.
    pub files: Vec<Copied>,
}

impl BackupReport {
    /// Bytes in all.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }
}

/// Copies the hub that `config` (read from `config_path`) describes into the new folder `to`:
/// its databases (online), CA, evidence, the configuration and the files it names. `progress`
/// gets a line per step (and per share of a large database).
///
/// # Errors
/// [`BackupError`] naming the file at fault.
pub fn backup(
    config: &HubConfig,
    config_path: &Path,
    to: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<BackupReport, BackupError> {
    let data = config.ingest.as_ref().map(|i| i.data_dir.clone());
    if let Some(data) = &data {
        refuse_inside(to, data)?;
    }
    prepare(to)?;
    let mut report = BackupReport::default();
    let mut databases = Vec::new();
    let boxes_in_database = config.hub_data().is_some_and(|h| h.database.is_some());
    if boxes_in_database {
        progress(
            "skipped the box registry, the ingest log and the evidence: they are in the PostgreSQL database (pg_dump, README)",
        );
    }
    if let Some(data) = data.as_ref().filter(|_| !boxes_in_database) {
        databases.push((
            data.join(REGISTRY_FILE),
            PathBuf::from("data").join(REGISTRY_FILE),
        ));
        databases.push((
            data.join(INGEST_FILE),
            PathBuf::from("data").join(INGEST_FILE),
        ));
    }
    match config.sqlite_path() {
        Some(path) => databases.push((
            path.clone(),
            PathBuf::from("database").join(file_name(&path)),
        )),
        None => progress(&format!(
            "skipped the case database ({}): back PostgreSQL up with pg_dump (see the README)",
            config.database_url()
        )),
    }
    for (from, rel) in databases {
        if !from.exists() {
            progress(&format!("skipped {} (not there)", from.display()));
            continue;
        }
        let bytes = copy_database(&from, &to.join(&rel), progress)?;
        report.files.push(Copied {
            from,
            to: rel,
            bytes,
        });
    }
    let mut plain: Vec<(PathBuf, PathBuf)> = [
        config_path,
        &config.grid_path,
        &config.duties_path,
        &config.calendar_path,
    ]
    .into_iter()
    .map(|p| (p.to_owned(), PathBuf::from("config").join(file_name(p))))
    .collect();
    if let Some(data) = &data {
        for name in [CA_CERT_FILE, CA_KEY_FILE] {
            plain.push((data.join(name), PathBuf::from("data").join(name)));
        }
    }
    for (from, rel) in plain {
        let bytes = copy_file(&from, &to.join(&rel))?;
        report.files.push(Copied {
            from,
            to: rel,
            bytes,
        });
    }
    progress(&format!(
        "copied {} databases and configuration files",
        report.files.len()
    ));
    if let Some(data) = data.as_ref().filter(|_| !boxes_in_database) {
        let evidence = data.join("evidence");
        let before = report.files.len();
        copy_tree(
            &evidence,
            &to.join("data/evidence"),
            Path::new("data/evidence"),
            &mut report,
        )?;
        progress(&format!(
            "copied {} evidence files",
            report.files.len() - before
        ));
    }
    write_manifest(to, &report)?;
    progress(&format!(
        "backup complete: {} files, {} bytes, in {}",
        report.files.len(),
        report.bytes(),
        to.display()
    ));
    Ok(report)
}

/// Refuses a destination inside `data` (compared as absolute paths, `..` resolved lexically).
fn refuse_inside(to: &Path, data: &Path) -> Result<(), BackupError> {
    let absolute = |p: &Path| -> Result<PathBuf, BackupError> {
        let p = std::path::absolute(p).map_err(|source| io("resolve", p, source))?;
        let mut out = PathBuf::new();
        for part in p.components() {
            match part {
                std::path::Component::ParentDir => {
                    out.pop();
                }
                std::path::Component::CurDir => {}
                other => out.push(other),
            }
        }
        Ok(out)
    };
    let (to_abs, data_abs) = (absolute(to)?, absolute(data)?);
    if to_abs.starts_with(&data_abs) {
        return Err(BackupError::InsideData {
            to: to.to_owned(),
            data: data.to_owned(),
        });
    }
    Ok(())
}

/// Makes `to` as a new folder (an existing empty one is taken).
fn prepare(to: &Path) -> Result<(), BackupError> {
    if to.exists() {
        let empty = std::fs::read_dir(to)
            .map_err(|source| io("read", to, source))?
            .next()
            .is_none();
        if !empty {
            return Err(BackupError::NotEmpty(to.to_owned()));
        }
    }
    std::fs::create_dir_all(to).map_err(|source| io("create", to, source))
}

/// Copies one database online with SQLite's backup API and checks the copy. Returns its size.
fn copy_database(
    from: &Path,
    to: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<u64, BackupError> {
    let sqlite = |source| BackupError::Sqlite {
        path: from.to_owned(),
        source,
    };
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).map_err(|source| io("create", dir, source))?;
    }
    let src =
        Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(sqlite)?;
    src.busy_timeout(Duration::from_secs(5)).map_err(sqlite)?;
    let mut dst = Connection::open(to).map_err(sqlite)?;
    {
        let copy = Backup::new(&src, &mut dst).map_err(sqlite)?;
        let mut last_said = 0;
        loop {
            match copy.step(PAGES_PER_STEP).map_err(sqlite)? {
                StepResult::Done => break,
                StepResult::More => {
                    let p = copy.progress();
                    let done = p.pagecount - p.remaining;
                    // a line every 10 % of a database of more than a few steps
                    let share = if p.pagecount > 0 {
                        done * 10 / p.pagecount
                    } else {
                        0
                    };
                    if p.pagecount > 4 * PAGES_PER_STEP && share > last_said {
                        last_said = share;
                        progress(&format!(
                            "{}: {}0 % ({done} of {} pages)",
                            from.display(),
                            share,
                            p.pagecount
                        ));
                    }
                }
                // busy or locked by a writer (or a result added to SQLite later): wait, go on
                _ => std::thread::sleep(BUSY_PAUSE),
            }
        }
    }
    let report: String = dst
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(sqlite)?;
    if report != "ok" {
        return Err(BackupError::Corrupt {
            path: from.to_owned(),
            report,
        });
    }
    drop(dst);
    let bytes = std::fs::metadata(to)
        .map_err(|source| io("read", to, source))?
        .len();
    progress(&format!(
        "{} → {} ({bytes} bytes, checked)",
        from.display(),
        to.display()
    ));
    Ok(bytes)
}

/// Copies one file, keeping its permissions (the CA key stays 0600). Returns its size.
fn copy_file(from: &Path, to: &Path) -> Result<u64, BackupError> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).map_err(|source| io("create", dir, source))?;
    }
    std::fs::copy(from, to).map_err(|source| io("copy", from, source))
}

/// Copies the files below `from` to `to`, recording each as `rel/...`.
fn copy_tree(
    from: &Path,
    to: &Path,
    rel: &Path,
    report: &mut BackupReport,
) -> Result<(), BackupError> {
    let entries = match std::fs::read_dir(from) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(io("read", from, source)),
    };
    for entry in entries {
        let entry = entry.map_err(|source| io("read", from, source))?;
        let path = entry.path();
        let name = entry.file_name();
        let kind = entry
            .file_type()
            .map_err(|source| io("read", &path, source))?;
        if kind.is_dir() {
            copy_tree(&path, &to.join(&name), &rel.join(&name), report)?;
        } else if kind.is_file() {
            match copy_file(&path, &to.join(&name)) {
                Ok(bytes) => report.files.push(Copied {
                    from: path,
                    to: rel.join(&name),
                    bytes,
                }),
                // deleted by retention meanwhile: not part of the hub any more
                Err(BackupError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// `MANIFEST`: one line a file, `backup path <TAB> bytes <TAB> where it came from`.
fn write_manifest(to: &Path, report: &BackupReport) -> Result<(), BackupError> {
    let mut text = String::from(
        "# gridsense hub backup: path in this folder, bytes, original path (restore: copy back)\n",
    );
    for f in &report.files {
        let _ = writeln!(
            text,
            "{}\t{}\t{}",
            f.to.display(),
            f.bytes,
            f.from.display()
        );
    }
    let path = to.join("MANIFEST");
    std::fs::write(&path, text).map_err(|source| io("write", &path, source))
}

fn file_name(path: &Path) -> PathBuf {
    path.file_name()
        .map_or_else(|| PathBuf::from("unnamed"), PathBuf::from)
}

fn io(op: &'static str, path: &Path, source: std::io::Error) -> BackupError {
    BackupError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

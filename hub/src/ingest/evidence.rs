//! Evidence files on the hub, by SHA-256, kept in one of two places:
//!
//! - **a folder** (a hub on SQLite): appended chunk by chunk to `<hex>.part`, verified against
//!   the hash when complete (read back in small pieces: a large file is never held in memory),
//!   fsynced and renamed to `<hex>`;
//! - **the PostgreSQL database** every hub process shares: chunks as rows of
//!   `evidence_chunks` (by offset), a file verified complete listed in `evidence_files`. Any
//!   process can then take a box's upload where another left off and serve it to operators;
//!   the bytes are backed up and replicated with the rest of the hub's data.
//!
//! Either way a chunk past the length announced with the event (which the ingest caps) is never
//! written, and a box resumes at the length held. Blocking; callers use `spawn_blocking`.
//! This module must not decide which files are wanted (the ingest log does).

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use protocol::Digest;
use sha2::{Digest as _, Sha256};

use super::IngestError;
use crate::storage::{self, Engine, Sql, Val};

/// What a chunk did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChunkOutcome {
    /// Held contiguously from the start so far.
    Partial(u64),
    /// Complete and verified.
    Complete,
    /// The bytes did not hash to the name: discarded, start again.
    Mismatch,
}

/// Where the evidence files are.
#[derive(Debug)]
pub(crate) enum EvidenceStore {
    /// A folder on this machine.
    Files(PathBuf),
    /// The shared PostgreSQL database.
    Database(Engine),
}

/// Chunks read per query when a file is read back (a chunk is at most a frame).
const CHUNKS_PER_READ: i64 = 16;

impl EvidenceStore {
    /// The folder `dir`, made if missing.
    pub(crate) fn open(dir: &Path) -> Result<EvidenceStore, IngestError> {
        std::fs::create_dir_all(dir).map_err(|source| IngestError::Io {
            op: "create the evidence folder",
            source,
        })?;
        Ok(EvidenceStore::Files(dir.to_owned()))
    }

    /// The tables beside the ingest log in `engine` (made by its migrations).
    pub(crate) fn in_database(engine: Engine) -> EvidenceStore {
        EvidenceStore::Database(engine)
    }

    /// Deletes the files (and parts) of `files`; ones already gone are skipped. Returns how
    /// many files were deleted and their bytes.
    pub(crate) fn delete(&self, files: &[Digest]) -> Result<(u64, u64), IngestError> {
        match self {
            EvidenceStore::Files(dir) => delete_files(dir, files),
            EvidenceStore::Database(engine) => engine.atomically(|tx| {
                let (mut count, mut bytes) = (0, 0);
                for sha in files {
                    let key: Val = sha.0.as_slice().into();
                    let held = tx.query_first(
                        &Sql::same(
                            "SELECT COUNT(*), COALESCE(SUM(length(data)), 0) \
                             FROM evidence_chunks WHERE sha256 = ?1",
                        ),
                        std::slice::from_ref(&key),
                        |r| Ok::<_, IngestError>((r.int(0)?, r.int(1)?)),
                    )?;
                    tx.execute(
                        &Sql::same("DELETE FROM evidence_chunks WHERE sha256 = ?1"),
                        std::slice::from_ref(&key),
                    )?;
                    let listed = tx.execute(
                        &Sql::same("DELETE FROM evidence_files WHERE sha256 = ?1"),
                        &[key],
                    )?;
                    if let Some((chunks, n)) = held
                        && (chunks > 0 || listed > 0)
                    {
                        count += 1;
                        bytes += n.max(0) as u64;
                    }
                }
                Ok((count, bytes))
            }),
        }
    }

    /// Bytes held from the start (the whole length when complete).
    pub(crate) fn received(&self, sha256: &Digest) -> Result<u64, IngestError> {
        match self {
            EvidenceStore::Files(dir) => {
                if let Ok(m) = std::fs::metadata(path_of(dir, sha256)) {
                    return Ok(m.len());
                }
                Ok(std::fs::metadata(part_of(dir, sha256)).map_or(0, |m| m.len()))
            }
            EvidenceStore::Database(engine) => engine.atomically(|tx| held_in(tx, sha256)),
        }
    }

    /// The whole file when it is held complete.
    pub(crate) fn read(&self, sha256: &Digest) -> Result<Option<Vec<u8>>, IngestError> {
        match self {
            EvidenceStore::Files(dir) => match std::fs::read(path_of(dir, sha256)) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(IngestError::Io {
                    op: "read an evidence file",
                    source,
                }),
            },
            EvidenceStore::Database(engine) => engine.atomically(|tx| {
                let complete = tx.query_first(
                    &Sql::same("SELECT bytes FROM evidence_files WHERE sha256 = ?1"),
                    &[sha256.0.as_slice().into()],
                    |r| Ok::<_, IngestError>(r.int(0)?),
                )?;
                let Some(len) = complete else {
                    return Ok(None);
                };
                let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
                read_chunks(tx, sha256, |piece| {
                    out.extend_from_slice(piece);
                    Ok(())
                })?;
                Ok(Some(out))
            }),
        }
    }

    /// Appends `data` at `offset` when that is where the held bytes end; otherwise keeps what
    /// is held and reports where it ends (the box resumes there).
    pub(crate) fn write_chunk(
        &self,
        sha256: &Digest,
        offset: u64,
        data: &[u8],
        total: u64,
    ) -> Result<ChunkOutcome, IngestError> {
        match self {
            EvidenceStore::Files(dir) => write_file_chunk(dir, sha256, offset, data, total),
            EvidenceStore::Database(engine) => engine.atomically(|tx| {
                // two processes may take chunks of one file (a box that reconnected)
                tx.lock(storage::lock_key(&format!("evidence {}", sha256.to_hex())))?;
                let key: Val = sha256.0.as_slice().into();
                let complete = tx.query_first(
                    &Sql::same("SELECT 1 FROM evidence_files WHERE sha256 = ?1"),
                    std::slice::from_ref(&key),
                    |_| Ok::<_, IngestError>(()),
                )?;
                if complete.is_some() {
                    return Ok(ChunkOutcome::Complete);
                }
                let held = held_in(tx, sha256)?;
                if offset != held || held + data.len() as u64 > total {
                    return Ok(ChunkOutcome::Partial(held));
                }
                if !data.is_empty() {
                    tx.execute(
                        &Sql::same(
                            "INSERT INTO evidence_chunks (sha256, at, data) VALUES (?1, ?2, ?3)",
                        ),
                        &[key.clone(), offset.into(), data.into()],
                    )?;
                }
                let held = held + data.len() as u64;
                if held < total {
                    return Ok(ChunkOutcome::Partial(held));
                }
                let mut hasher = Sha256::new();
                read_chunks(tx, sha256, |piece| {
                    hasher.update(piece);
                    Ok(())
                })?;
                if <[u8; 32]>::from(hasher.finalize()) != sha256.0 {
                    tx.execute(
                        &Sql::same("DELETE FROM evidence_chunks WHERE sha256 = ?1"),
                        &[key],
                    )?;
                    return Ok(ChunkOutcome::Mismatch);
                }
                tx.execute(
                    &Sql::same("INSERT INTO evidence_files (sha256, bytes) VALUES (?1, ?2)"),
                    &[key, total.into()],
                )?;
                Ok(ChunkOutcome::Complete)
            }),
        }
    }
}

/// Bytes of a file held in the database: where its last chunk ends (chunks are only ever
/// appended where the last ended), read by the key's index, not by summing every chunk on
/// each chunk that arrives.
fn held_in(tx: &storage::Tx<'_>, sha256: &Digest) -> Result<u64, IngestError> {
    let n = tx.query_first(
        &Sql::same(
            "SELECT at + length(data) FROM evidence_chunks WHERE sha256 = ?1 ORDER BY at DESC LIMIT 1",
        ),
        &[sha256.0.as_slice().into()],
        |r| Ok::<_, IngestError>(r.int(0)?),
    )?;
    Ok(n.unwrap_or(0).max(0) as u64)
}

/// Calls `f` with each chunk of a file held in the database, in order, a few chunks per query.
fn read_chunks(
    tx: &storage::Tx<'_>,
    sha256: &Digest,
    mut f: impl FnMut(&[u8]) -> Result<(), IngestError>,
) -> Result<(), IngestError> {
    let sql = Sql::same(
        "SELECT at, data FROM evidence_chunks WHERE sha256 = ?1 AND at >= ?2 ORDER BY at LIMIT ?3",
    );
    let mut from = 0i64;
    loop {
        let rows = tx.query(
            &sql,
            &[
                sha256.0.as_slice().into(),
                from.into(),
                CHUNKS_PER_READ.into(),
            ],
            |r| Ok::<_, IngestError>((r.int(0)?, r.bytes(1)?)),
        )?;
        let last = rows.len() < CHUNKS_PER_READ as usize;
        for (at, data) in rows {
            f(&data)?;
            from = at + 1;
        }
        if last {
            return Ok(());
        }
    }
}

fn path_of(dir: &Path, sha256: &Digest) -> PathBuf {
    dir.join(sha256.to_hex())
}

fn part_of(dir: &Path, sha256: &Digest) -> PathBuf {
    dir.join(format!("{}.part", sha256.to_hex()))
}

fn delete_files(dir: &Path, files: &[Digest]) -> Result<(u64, u64), IngestError> {
    let (mut count, mut bytes) = (0, 0);
    for sha in files {
        for path in [path_of(dir, sha), part_of(dir, sha)] {
            let len = match std::fs::metadata(&path) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(IngestError::Io {
                        op: "read an evidence file's length",
                        source,
                    });
                }
            };
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    count += 1;
                    bytes += len;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(IngestError::Io {
                        op: "delete an evidence file",
                        source,
                    });
                }
            }
        }
    }
    Ok((count, bytes))
}

fn write_file_chunk(
    dir: &Path,
    sha256: &Digest,
    offset: u64,
    data: &[u8],
    total: u64,
) -> Result<ChunkOutcome, IngestError> {
    let io = |op| move |source| IngestError::Io { op, source };
    if path_of(dir, sha256).exists() {
        return Ok(ChunkOutcome::Complete);
    }
    let part = part_of(dir, sha256);
    let held = std::fs::metadata(&part).map_or(0, |m| m.len());
    if offset != held || held + data.len() as u64 > total {
        return Ok(ChunkOutcome::Partial(held));
    }
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&part)
        .map_err(io("open an evidence part file"))?;
    file.write_all(data)
        .map_err(io("write an evidence part file"))?;
    let held = held + data.len() as u64;
    if held < total {
        return Ok(ChunkOutcome::Partial(held));
    }
    file.sync_all().map_err(io("sync an evidence file"))?;
    drop(file);
    if hash_file(&part).map_err(io("read an evidence part file"))? != sha256.0 {
        let _ = std::fs::remove_file(&part);
        return Ok(ChunkOutcome::Mismatch);
    }
    std::fs::rename(&part, path_of(dir, sha256)).map_err(io("rename an evidence file"))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(ChunkOutcome::Complete)
}

/// SHA-256 of a file, read in 64 KiB pieces.
fn hash_file(path: &Path) -> std::io::Result<[u8; 32]> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.finalize().into());
        }
        hasher.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store in a folder, and on the PostgreSQL server named by `GRIDSENSE_TEST_POSTGRES`
    /// too when the tests run against one.
    fn stores(dir: &Path) -> Vec<EvidenceStore> {
        let mut out = vec![EvidenceStore::open(dir).unwrap()];
        if let Ok(server) = std::env::var("GRIDSENSE_TEST_POSTGRES")
            && !server.is_empty()
        {
            let url = storage::create_fresh_database(&server, "evidence").unwrap();
            let log =
                super::super::IngestLog::open_for(dir, Some(&storage::DatabaseUrl::Postgres(url)))
                    .unwrap();
            out.push(EvidenceStore::in_database(log.shared_engine().unwrap()));
        }
        out
    }

    #[test]
    fn chunks_resume_at_the_held_length_and_a_wrong_hash_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        for store in stores(dir.path()) {
            let data = b"hello evidence".to_vec();
            let sha = Digest(Sha256::digest(&data).into());
            let total = data.len() as u64;
            assert_eq!(store.read(&sha).unwrap(), None);
            assert_eq!(
                store.write_chunk(&sha, 0, &data[..5], total).unwrap(),
                ChunkOutcome::Partial(5)
            );
            assert_eq!(
                store.write_chunk(&sha, 9, &data[9..], total).unwrap(),
                ChunkOutcome::Partial(5),
                "a gap is not written"
            );
            assert_eq!(store.received(&sha).unwrap(), 5);
            assert_eq!(store.read(&sha).unwrap(), None, "not complete");
            assert_eq!(
                store.write_chunk(&sha, 5, &data[5..], total).unwrap(),
                ChunkOutcome::Complete
            );
            assert_eq!(store.read(&sha).unwrap(), Some(data.clone()));
            assert_eq!(store.received(&sha).unwrap(), total);
            assert_eq!(
                store.write_chunk(&sha, 0, &data[..5], total).unwrap(),
                ChunkOutcome::Complete,
                "once complete, always complete"
            );
            let wrong = Digest([7; 32]);
            assert_eq!(
                store.write_chunk(&wrong, 0, b"abc", 3).unwrap(),
                ChunkOutcome::Mismatch
            );
            assert_eq!(store.received(&wrong).unwrap(), 0);
            let empty = Digest(Sha256::digest(b"").into());
            assert_eq!(
                store.write_chunk(&empty, 0, &[], 0).unwrap(),
                ChunkOutcome::Complete,
                "an empty file is complete at once"
            );
            assert_eq!(store.read(&empty).unwrap(), Some(Vec::new()));
            assert_eq!(store.delete(&[sha, wrong]).unwrap(), (1, total));
            assert_eq!(store.read(&sha).unwrap(), None);
            assert_eq!(store.received(&sha).unwrap(), 0);
        }
    }

    #[test]
    fn a_file_of_many_chunks_reads_back_whole_past_one_page_of_chunks() {
        let dir = tempfile::tempdir().unwrap();
        for store in stores(dir.path()) {
            let data: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
            let sha = Digest(Sha256::digest(&data).into());
            let total = data.len() as u64;
            let mut outcome = ChunkOutcome::Partial(0);
            for (i, piece) in data.chunks(1000).enumerate() {
                outcome = store
                    .write_chunk(&sha, i as u64 * 1000, piece, total)
                    .unwrap();
            }
            assert_eq!(outcome, ChunkOutcome::Complete);
            assert_eq!(store.read(&sha).unwrap(), Some(data));
        }
    }
}

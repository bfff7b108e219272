//! Evidence files on the hub, by SHA-256: appended chunk by chunk to `<hex>.part`, verified
//! against the hash when complete (read back in small pieces: a large file is never held in
//! memory), fsynced and renamed to `<hex>`. A chunk past the length announced with the event
//! (which the ingest caps) is never written. A box resumes at the length of the part file.
//! Blocking; callers use `spawn_blocking`.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use protocol::Digest;
use sha2::{Digest as _, Sha256};

use super::IngestError;

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

#[derive(Debug, Clone)]
pub(crate) struct EvidenceStore {
    dir: PathBuf,
}

impl EvidenceStore {
    pub(crate) fn open(dir: &Path) -> Result<EvidenceStore, IngestError> {
        std::fs::create_dir_all(dir).map_err(|source| IngestError::Io {
            op: "create the evidence folder",
            source,
        })?;
        Ok(EvidenceStore {
            dir: dir.to_owned(),
        })
    }

    pub(crate) fn path_of(&self, sha256: &Digest) -> PathBuf {
        self.dir.join(sha256.to_hex())
    }

    fn part_of(&self, sha256: &Digest) -> PathBuf {
        self.dir.join(format!("{}.part", sha256.to_hex()))
    }

    /// Deletes the files (and part files) of `files`; ones already gone are skipped. Returns
    /// how many files were deleted and their bytes.
    pub(crate) fn delete(&self, files: &[Digest]) -> Result<(u64, u64), IngestError> {
        let (mut count, mut bytes) = (0, 0);
        for sha in files {
            for path in [self.path_of(sha), self.part_of(sha)] {
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

    /// Bytes held from the start (the whole length when complete).
    pub(crate) fn received(&self, sha256: &Digest) -> u64 {
        if let Ok(m) = std::fs::metadata(self.path_of(sha256)) {
            return m.len();
        }
        std::fs::metadata(self.part_of(sha256)).map_or(0, |m| m.len())
    }

    /// Appends `data` at `offset` when that is where the part file ends; otherwise keeps the
    /// file as it is and reports where it ends (the box resumes there).
    pub(crate) fn write_chunk(
        &self,
        sha256: &Digest,
        offset: u64,
        data: &[u8],
        total: u64,
    ) -> Result<ChunkOutcome, IngestError> {
        let io = |op| move |source| IngestError::Io { op, source };
        if self.path_of(sha256).exists() {
            return Ok(ChunkOutcome::Complete);
        }
        let part = self.part_of(sha256);
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
        std::fs::rename(&part, self.path_of(sha256)).map_err(io("rename an evidence file"))?;
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(ChunkOutcome::Complete)
    }
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

    #[test]
    fn chunks_resume_at_the_held_length_and_a_wrong_hash_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let store = EvidenceStore::open(dir.path()).unwrap();
        let data = b"hello evidence".to_vec();
        let sha = Digest(Sha256::digest(&data).into());
        let total = data.len() as u64;
        assert_eq!(
            store.write_chunk(&sha, 0, &data[..5], total).unwrap(),
            ChunkOutcome::Partial(5)
        );
        assert_eq!(
            store.write_chunk(&sha, 9, &data[9..], total).unwrap(),
            ChunkOutcome::Partial(5),
            "a gap is not written"
        );
        assert_eq!(store.received(&sha), 5);
        assert_eq!(
            store.write_chunk(&sha, 5, &data[5..], total).unwrap(),
            ChunkOutcome::Complete
        );
        assert_eq!(std::fs::read(store.path_of(&sha)).unwrap(), data);
        let wrong = Digest([7; 32]);
        assert_eq!(
            store.write_chunk(&wrong, 0, b"abc", 3).unwrap(),
            ChunkOutcome::Mismatch
        );
        assert_eq!(store.received(&wrong), 0);
    }
}

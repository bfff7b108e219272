//! The evidence folder: files named by their SHA-256 (64 hex digits, no extension), written in
//! two steps so that a crash never leaves a half-written file under a final name.
//!
//! 1. A submitter stages the bytes in `staging/` and fsyncs them (in its own thread, so several
//!    submitters write in parallel).
//! 2. The writer thread renames the staged file to its final name and fsyncs the folder, before
//!    the transaction that names it commits.
//!
//! Start-up removes everything in `staging/` and every final file the database does not name.
//! This module knows nothing of SQL; it must not delete a final file unless the writer says so.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use protocol::{Digest, EvidenceRef};

use super::{EvidenceFile, StoreError};

/// The evidence folder and its staging sub-folder.
#[derive(Debug, Clone)]
pub(super) struct EvidenceDir {
    root: PathBuf,
    staging: PathBuf,
}

/// An evidence file written and fsynced under a temporary name, waiting for its commit.
#[derive(Debug)]
pub(super) struct Staged {
    pub(super) reference: EvidenceRef,
    pub(super) path: PathBuf,
}

impl EvidenceDir {
    /// Bytes an unprivileged writer may still use on the data disk (`None` when it cannot be
    /// asked, e.g. on a file system without `statvfs`).
    pub(super) fn free_bytes(&self) -> Option<u64> {
        disk_free_bytes(&self.root)
    }

    /// Creates the folders if missing.
    pub(super) fn create(root: &Path) -> Result<EvidenceDir, StoreError> {
        let staging = root.join(STAGING_DIR_NAME);
        fs::create_dir_all(&staging).map_err(|source| StoreError::Io {
            op: "create evidence folder",
            path: staging.clone(),
            source,
        })?;
        Ok(EvidenceDir {
            root: root.to_owned(),
            staging,
        })
    }

    /// The final path of a file.
    pub(super) fn path_of(&self, sha256: &Digest) -> PathBuf {
        self.root.join(sha256.to_hex())
    }

    /// Writes and fsyncs `file` under a unique temporary name.
    pub(super) fn stage(&self, file: &EvidenceFile) -> Result<Staged, StoreError> {
        let path = self.staging.join(format!(
            "{}.{:016x}.part",
            file.reference.sha256.to_hex(),
            fastrand::u64(..)
        ));
        let result = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut f| {
                f.write_all(&file.bytes)?;
                f.sync_all()
            });
        match result {
            Ok(()) => Ok(Staged {
                reference: file.reference.clone(),
                path,
            }),
            Err(source) => {
                let _ = fs::remove_file(&path);
                Err(io_error("write evidence file", path, source))
            }
        }
    }

    /// Removes a staged file that will not be committed.
    pub(super) fn discard(&self, staged: Staged) {
        let _ = fs::remove_file(&staged.path);
    }

    /// Removes a staged file by path (no-op once it was placed).
    pub(super) fn discard_path(&self, path: &Path) {
        let _ = fs::remove_file(path);
    }

    /// Moves a staged file to its final name (replacing a leftover of identical content).
    pub(super) fn place(&self, staged: &Staged) -> Result<(), StoreError> {
        let target = self.path_of(&staged.reference.sha256);
        fs::rename(&staged.path, &target)
            .map_err(|source| io_error("move evidence file into place", target, source))
    }

    /// Makes renames and unlinks in the folder durable.
    pub(super) fn sync(&self) -> Result<(), StoreError> {
        File::open(&self.root)
            .and_then(|d| d.sync_all())
            .map_err(|source| io_error("fsync evidence folder", self.root.clone(), source))
    }

    /// Removes a final file; a missing file is fine.
    pub(super) fn remove(&self, sha256: &Digest) -> Result<(), StoreError> {
        let path = self.path_of(sha256);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(source) => Err(io_error("remove evidence file", path, source)),
        }
    }

    /// Removes every staged file; returns how many.
    pub(super) fn clear_staging(&self) -> Result<u64, StoreError> {
        let mut removed = 0;
        for entry in read_dir(&self.staging)? {
            if entry.1 {
                fs::remove_file(&entry.0).map_err(|source| {
                    io_error("remove staged evidence file", entry.0.clone(), source)
                })?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The final files present, by digest. Other names are left alone and not listed.
    pub(super) fn list(&self) -> Result<Vec<Digest>, StoreError> {
        Ok(read_dir(&self.root)?
            .into_iter()
            .filter(|(_, is_file)| *is_file)
            .filter_map(|(path, _)| {
                path.file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| Digest::from_hex(n).ok())
            })
            .collect())
    }
}

/// Maps an I/O error, recognising a full disk (or a file-size limit) as [`StoreError::DiskFull`].
pub(super) fn io_error(op: &'static str, path: PathBuf, source: std::io::Error) -> StoreError {
    if matches!(
        source.kind(),
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded | ErrorKind::FileTooLarge
    ) {
        return StoreError::DiskFull;
    }
    StoreError::Io { op, path, source }
}

/// `(path, is_file)` for each entry of a folder.
fn read_dir(dir: &Path) -> Result<Vec<(PathBuf, bool)>, StoreError> {
    let list = |dir: &Path| -> std::io::Result<Vec<(PathBuf, bool)>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            out.push((entry.path(), entry.file_type()?.is_file()));
        }
        Ok(out)
    };
    list(dir).map_err(|source| io_error("list evidence folder", dir.to_owned(), source))
}

const STAGING_DIR_NAME: &str = "staging";

/// Bytes an unprivileged writer may still use on the file system holding `path` (`None` when
/// `statvfs` fails).
pub fn disk_free_bytes(path: &Path) -> Option<u64> {
    disk_space(path).map(|(free, _)| free)
}

/// Free bytes (for an unprivileged writer) and total bytes of the file system holding `path`
/// (`None` when `statvfs` fails).
pub fn disk_space(path: &Path) -> Option<(u64, u64)> {
    let st = rustix::fs::statvfs(path).ok()?;
    Some((
        st.f_bavail.saturating_mul(st.f_frsize),
        st.f_blocks.saturating_mul(st.f_frsize),
    ))
}

//! The disk reserve: a file of allocated blocks that the store gives back to the file system
//! when the disk is full, so that it has the room that freeing room needs.
//!
//! On a full disk the store frees space by evicting, but evicting is itself a write: the WAL
//! must first be checkpointed into the database file (which may grow it by up to the WAL's
//! size) and the eviction is a transaction whose pages go to the WAL. Evicted files are unlinked
//! only once that transaction has committed. Without spare room none of this can happen, and
//! the store would refuse every write until someone deleted files by hand. So the store holds
//! [`RESERVE_FILE_NAME`] in its data folder, sized for those writes (CockroachDB keeps an
//! emergency ballast file for the same reason), releases it when the disk fills up, frees room,
//! and allocates it again before it takes the next request.
//!
//! This module only allocates and releases the file; when to do so is the writer's decision.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use super::StoreError;
use super::evidence::io_error;

/// File name of the reserve inside the data folder.
pub const RESERVE_FILE_NAME: &str = "disk.reserve";

/// The smallest reserve: room to checkpoint a WAL of half of it and commit one eviction step.
pub(super) const MIN_RESERVE_BYTES: u64 = 256 << 10;

/// The largest reserve (a 1000-page WAL, SQLite's default checkpoint point, fits in half).
pub(super) const MAX_RESERVE_BYTES: u64 = 8 << 20;

/// The reserve file and whether its blocks are allocated.
#[derive(Debug)]
pub(super) struct DiskReserve {
    path: PathBuf,
    bytes: u64,
    held: bool,
}

impl DiskReserve {
    /// The reserve for a data folder on a disk of `disk_total_bytes` (`None`: unknown): a
    /// sixty-fourth of the disk, within [`MIN_RESERVE_BYTES`]..=[`MAX_RESERVE_BYTES`]. Nothing
    /// is allocated until [`DiskReserve::allocate`].
    pub(super) fn new(data_dir: &Path, disk_total_bytes: Option<u64>) -> DiskReserve {
        let bytes = disk_total_bytes
            .map_or(MAX_RESERVE_BYTES, |total| total / 64)
            .clamp(MIN_RESERVE_BYTES, MAX_RESERVE_BYTES);
        DiskReserve {
            path: data_dir.join(RESERVE_FILE_NAME),
            bytes,
            held: false,
        }
    }

    /// The size the reserve has when held.
    pub(super) fn size_bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether the reserve's blocks are allocated now.
    pub(super) fn is_held(&self) -> bool {
        self.held
    }

    /// Allocates the reserve (creating or resizing the file) and makes that durable. `Ok(false)`
    /// when the disk has no room for it: the file is then removed, holding nothing.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the file cannot be written for another reason.
    pub(super) fn allocate(&mut self) -> Result<bool, StoreError> {
        if self.held {
            return Ok(true);
        }
        match self.write_file() {
            Ok(()) => {
                self.held = true;
                Ok(true)
            }
            Err(e) => {
                // A partly allocated file holds room that the store needs more than a reserve.
                let _ = fs::remove_file(&self.path);
                match io_error("allocate the disk reserve", self.path.clone(), e) {
                    StoreError::DiskFull => Ok(false),
                    other => Err(other),
                }
            }
        }
    }

    /// Gives the reserve's blocks back to the file system (the file is removed).
    ///
    /// # Errors
    /// [`StoreError::Io`] when the file exists but cannot be removed.
    pub(super) fn release(&mut self) -> Result<(), StoreError> {
        match fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(source) => {
                return Err(io_error(
                    "release the disk reserve",
                    self.path.clone(),
                    source,
                ));
            }
        }
        self.held = false;
        Ok(())
    }

    fn write_file(&self) -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)?;
        if file.metadata()?.len() > self.bytes {
            file.set_len(self.bytes)?;
        }
        match rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, self.bytes) {
            Ok(()) => {}
            // A file system without fallocate: written blocks are allocated blocks.
            Err(rustix::io::Errno::OPNOTSUPP) => write_zeros(&mut file, self.bytes)?,
            Err(e) => return Err(e.into()),
        }
        file.sync_all()?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

fn write_zeros(file: &mut File, bytes: u64) -> std::io::Result<()> {
    let chunk = vec![0u8; 64 << 10];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_a_sixty_fourth_of_the_disk_within_its_bounds() {
        let dir = Path::new("/nonexistent");
        let size = |total| DiskReserve::new(dir, total).size_bytes();
        assert_eq!(size(Some(4 << 20)), MIN_RESERVE_BYTES);
        assert_eq!(size(Some(64 << 20)), 1 << 20);
        assert_eq!(size(Some(64 << 30)), MAX_RESERVE_BYTES);
        assert_eq!(size(None), MAX_RESERVE_BYTES);
    }

    #[test]
    fn allocating_makes_a_file_of_the_reserve_size_and_releasing_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut reserve = DiskReserve::new(dir.path(), Some(16 << 20));
        assert!(reserve.allocate().unwrap());
        assert!(reserve.is_held());
        let path = dir.path().join(RESERVE_FILE_NAME);
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), reserve.size_bytes());
        // allocated, not sparse
        use std::os::unix::fs::MetadataExt;
        assert!(meta.blocks() * 512 >= reserve.size_bytes(), "{meta:?}");
        reserve.release().unwrap();
        assert!(!path.exists());
        assert!(!reserve.is_held());
        // a file left larger (by a bigger disk) is cut to size
        fs::write(&path, vec![1u8; (2 << 20) + 5]).unwrap();
        assert!(reserve.allocate().unwrap());
        assert_eq!(fs::metadata(&path).unwrap().len(), reserve.size_bytes());
    }
}

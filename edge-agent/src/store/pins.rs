//! Evidence files in upload, shared by the uploader and the writer so that a file is never
//! both reported lost by the box and completed at the hub.
//!
//! - A *soft* pin: the file is being uploaded. Eviction takes it only when no other
//!   unconfirmed file can go (it may yet arrive, but losing events would be worse).
//! - A *hard* pin, taken by [`EvidencePins::claim_final`] just before the upload's last chunk:
//!   the hub will complete the file, so eviction never takes it (until the hub's confirmation
//!   or the end of the session releases it).
//! - The writer marks the file it is evicting (under the same lock) before it commits, so that
//!   a claim either comes first (the writer then passes the file by) or finds the file marked
//!   (the uploader then gives the upload up: the file is reported lost, and never completes).
//!
//! This module holds sets of hashes only; it must not touch files or SQL.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

use protocol::Digest;

/// The sets, behind one lock.
#[derive(Debug, Default)]
pub(super) struct PinState {
    soft: HashSet<Digest>,
    hard: HashSet<Digest>,
    evicting: HashSet<Digest>,
}

/// The shared sets.
pub(super) type Pins = Arc<Mutex<PinState>>;

impl PinState {
    /// Whether eviction may take `sha` at all.
    pub(super) fn evictable(&self, sha: &Digest) -> bool {
        !self.hard.contains(sha)
    }

    /// Whether `sha` is being uploaded (taken last).
    pub(super) fn uploading(&self, sha: &Digest) -> bool {
        self.soft.contains(sha)
    }

    /// How many files are pinned either way.
    pub(super) fn pinned(&self) -> usize {
        self.soft.len() + self.hard.len()
    }

    /// The writer is about to evict `sha` in the transaction in progress.
    pub(super) fn mark_evicting(&mut self, sha: Digest) {
        self.evicting.insert(sha);
    }

    /// The transaction is over (committed or rolled back).
    pub(super) fn clear_evicting(&mut self) {
        self.evicting.clear();
    }
}

pub(super) fn lock(pins: &Pins) -> MutexGuard<'_, PinState> {
    // one insert or remove at a time: consistent across a panic
    pins.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The files one uploader pins (see the module doc); dropping it releases them.
#[derive(Debug)]
pub struct EvidencePins {
    pub(super) pins: Pins,
    pub(super) mine: Mutex<HashSet<Digest>>,
}

impl EvidencePins {
    /// Soft-pins a file: its upload starts.
    pub fn pin(&self, sha256: Digest) {
        self.mine().insert(sha256);
        lock(&self.pins).soft.insert(sha256);
    }

    /// Hard-pins a file before its last chunk: true when the upload may finish (the writer
    /// will not evict it now); false when the writer is evicting it (give the upload up).
    /// The caller checks afterwards that the file is still held (it may have gone before).
    pub fn claim_final(&self, sha256: &Digest) -> bool {
        let mut pins = lock(&self.pins);
        if pins.evicting.contains(sha256) {
            return false;
        }
        pins.hard.insert(*sha256);
        true
    }

    /// Releases a file: confirmed by the hub, or its upload given up.
    pub fn unpin(&self, sha256: &Digest) {
        if self.mine().remove(sha256) {
            let mut pins = lock(&self.pins);
            pins.soft.remove(sha256);
            pins.hard.remove(sha256);
        }
    }

    fn mine(&self) -> MutexGuard<'_, HashSet<Digest>> {
        self.mine
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for EvidencePins {
    fn drop(&mut self) {
        let mine = std::mem::take(&mut *self.mine());
        let mut pins = lock(&self.pins);
        for sha in &mine {
            pins.soft.remove(sha);
            pins.hard.remove(sha);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_loses_to_an_eviction_in_progress_and_wins_over_a_later_one() {
        let pins: Pins = Arc::default();
        let up = EvidencePins {
            pins: Arc::clone(&pins),
            mine: Mutex::default(),
        };
        let (a, b) = (Digest([1; 32]), Digest([2; 32]));
        up.pin(a);
        up.pin(b);
        assert!(lock(&pins).uploading(&a));
        lock(&pins).mark_evicting(a);
        assert!(!up.claim_final(&a), "being evicted: give the upload up");
        assert!(up.claim_final(&b));
        assert!(!lock(&pins).evictable(&b), "claimed: never evicted");
        lock(&pins).clear_evicting();
        up.unpin(&b);
        assert!(lock(&pins).evictable(&b));
        drop(up);
        assert_eq!(lock(&pins).pinned(), 0, "released with the uploader");
    }
}

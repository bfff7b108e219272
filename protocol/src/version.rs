//! Protocol versions and what each side does with an older or newer peer.
//!
//! The rule: each side states the range of versions it speaks (`min..=max`). The hub answers a
//! [`crate::Hello`] with the highest version in both ranges ([`VersionRange::negotiate`]) in its
//! `Welcome`, and both sides speak that version from then on. When the ranges do not meet the hub
//! sends `Bye { reason: UnsupportedVersion }` naming both ranges and closes; a box that gets it
//! keeps buffering (nothing is lost) and retries with backoff, so upgrading either side later
//! resumes the sync. Within one version, compatibility comes from the codec's rules (unknown
//! fields ignored, new fields optional, unknown message types skipped); a version bump is for
//! changes that those rules cannot absorb. The ALPN name carries the major protocol family so that
//! a TLS peer of another protocol is refused during the handshake.

/// The newest protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// The oldest protocol version this build still speaks.
pub const MIN_PROTOCOL_VERSION: u16 = 1;

/// The TLS ALPN protocol name for Gridsense over QUIC.
pub const ALPN: &[u8] = b"gridsense/1";

/// An inclusive range of protocol versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionRange {
    /// The oldest version spoken.
    pub min: u16,
    /// The newest version spoken.
    pub max: u16,
}

/// Two peers have no protocol version in common.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "no common protocol version: we speak {ours_min}..={ours_max}, the peer {theirs_min}..={theirs_max}"
)]
pub struct VersionMismatch {
    /// Our oldest version.
    pub ours_min: u16,
    /// Our newest version.
    pub ours_max: u16,
    /// The peer's oldest version.
    pub theirs_min: u16,
    /// The peer's newest version.
    pub theirs_max: u16,
}

impl VersionMismatch {
    /// True when the peer is newer than anything we speak (we should be upgraded), false when it
    /// is older (it should be).
    pub fn peer_is_newer(&self) -> bool {
        self.theirs_min > self.ours_max
    }
}

impl VersionRange {
    /// The range this build speaks.
    pub const CURRENT: VersionRange = VersionRange {
        min: MIN_PROTOCOL_VERSION,
        max: PROTOCOL_VERSION,
    };

    /// The version to speak with a peer that speaks `theirs`: the highest in both ranges.
    ///
    /// # Errors
    /// [`VersionMismatch`] when the ranges do not meet (or either range is empty).
    pub fn negotiate(self, theirs: VersionRange) -> Result<u16, VersionMismatch> {
        let low = self.min.max(theirs.min);
        let high = self.max.min(theirs.max);
        if self.min <= self.max && theirs.min <= theirs.max && low <= high {
            Ok(high)
        } else {
            Err(VersionMismatch {
                ours_min: self.min,
                ours_max: self.max,
                theirs_min: theirs.min,
                theirs_max: theirs.max,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn r(min: u16, max: u16) -> VersionRange {
        VersionRange { min, max }
    }

    #[test]
    fn the_highest_common_version_wins() {
        assert_eq!(r(1, 3).negotiate(r(2, 5)), Ok(3));
        assert_eq!(r(2, 5).negotiate(r(1, 3)), Ok(3));
        assert_eq!(r(1, 1).negotiate(r(1, 1)), Ok(1));
    }

    #[test]
    fn disjoint_ranges_say_which_side_is_behind() {
        let err = r(1, 2).negotiate(r(3, 4)).unwrap_err();
        assert!(err.peer_is_newer());
        let err = r(3, 4).negotiate(r(1, 2)).unwrap_err();
        assert!(!err.peer_is_newer());
        assert!(
            r(2, 1).negotiate(r(1, 2)).is_err(),
            "an empty range meets nothing"
        );
    }

    #[test]
    fn alpn_names_the_current_major_version() {
        assert_eq!(ALPN, format!("gridsense/{PROTOCOL_VERSION}").as_bytes());
    }
}

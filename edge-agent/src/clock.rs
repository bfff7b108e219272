//! The box's wall clock as a wire timestamp: the one place the agent reads it. Pure cores take
//! `now` as an argument instead; only the thin run loops call this.

use std::time::{SystemTime, UNIX_EPOCH};

use protocol::Timestamp;

/// The current time (a clock before 1970 reads as the epoch).
pub(crate) fn now() -> Timestamp {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Timestamp::from_unix_millis(millis)
}

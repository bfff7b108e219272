//! The wall clock as a wire timestamp: the one place either binary reads it. Pure cores take
//! `now` as an argument instead; the run loops read a [`Clock`], which tests replace to move
//! time (deadlines, certificate renewal, retention).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use protocol::Timestamp;

/// A clock returning the current time.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The current system time (a clock before 1970 reads as the epoch).
pub fn now() -> Timestamp {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Timestamp::from_unix_millis(millis)
}

/// The clock of a real process: the system time.
pub fn system_clock() -> Clock {
    Arc::new(now)
}

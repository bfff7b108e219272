//! The hub's clock, injected everywhere the hub reads the time (deadlines, retention, ingest
//! stamps) so that tests control it. A leaf: it uses nothing of the hub.

use std::sync::Arc;

use protocol::Timestamp;

/// A clock returning the current time.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The clock of a real hub: the system time.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Timestamp::from_unix_millis(millis)
    })
}

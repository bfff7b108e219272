//! The hub's clock, injected everywhere the hub reads the time (deadlines, retention, ingest
//! stamps) so that tests control it (the type is shared with the box in `wire::clock`). A leaf:
//! it uses nothing of the hub.

pub use wire::clock::{Clock, now, system_clock};

//! systemd's service protocol for `hub serve` under `Type=notify` (see `wire::systemd`):
//! `READY=1` once the listeners are bound, `WATCHDOG=1` every half `WatchdogSec=` while the
//! database answers a write transaction, `STOPPING=1` on shutdown.
//!
//! This module only reports the hub's health to the service manager; it must not act on it.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::cases::CaseService;

pub use wire::systemd::stopping;

/// Tells systemd the hub is serving.
pub fn ready() {
    wire::systemd::ready("serving");
}

/// Until `cancel`: pets systemd's watchdog (when it runs one) as long as the case database
/// takes a write transaction within half its interval. A database that stays locked or a
/// runtime that stalls misses the pets, and systemd restarts the hub.
pub async fn watchdog(cases: Arc<CaseService>, cancel: CancellationToken) {
    let probe = move |_within| cases.ping().map_err(|e| crate::telemetry::chain(&e));
    wire::systemd::watchdog("the database", probe, cancel).await;
}

//! systemd's service protocol for `edge-agent run` under `Type=notify` (see `wire::systemd`):
//! `READY=1` once every stage is started, `WATCHDOG=1` every half `WatchdogSec=` while the
//! store's writer answers, `STOPPING=1` on shutdown.
//!
//! This module only reports the agent's health to the service manager; it must not act on it.

use tokio_util::sync::CancellationToken;

use crate::store::Store;

pub use wire::systemd::stopping;

/// Tells systemd the agent is running.
pub fn ready() {
    wire::systemd::ready("running");
}

/// Until `cancel`: pets systemd's watchdog (when it runs one) as long as the store's writer
/// answers within half its interval. A writer stuck in a commit or an fsync, or a runtime that
/// stalls, misses the pets, and systemd restarts the agent (the store keeps what was committed).
pub async fn watchdog(store: Store, cancel: CancellationToken) {
    let probe = move |within| {
        if store.ping(within) {
            Ok(())
        } else {
            Err("no answer".to_owned())
        }
    };
    wire::systemd::watchdog("the store's writer", probe, cancel).await;
}

//! systemd's service protocol for `edge-agent run` under `Type=notify` (sd_notify(3)):
//! `READY=1` once every stage is started, `WATCHDOG=1` every half `WatchdogSec=` while the store's
//! writer answers, `STOPPING=1` on shutdown.
//!
//! Outside systemd (no `NOTIFY_SOCKET`, no `WATCHDOG_USEC`) every call does nothing. This module
//! only reports the agent's health to the service manager; it must not act on it (restarting is
//! systemd's decision, after a missed watchdog).

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// Tells systemd the agent is running.
pub fn ready() {
    notify(&[NotifyState::Ready, NotifyState::Status("running")]);
}

/// Tells systemd the agent is shutting down.
pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

fn notify(state: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "telling systemd the service state failed");
    }
}

/// Until `cancel`: when systemd runs a watchdog for this process, pets it every half interval
/// as long as the store's writer answers within that half. A writer stuck in a commit or an
/// fsync, or a runtime that stalls, misses the pets, and systemd restarts the agent (the store
/// keeps what was committed).
pub async fn watchdog(store: Store, cancel: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let half = (interval / 2).max(Duration::from_millis(10));
    tracing::info!(
        interval_ms = interval.as_millis() as u64,
        "systemd watchdog on"
    );
    let mut tick = tokio::time::interval(half);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let probe = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || store.ping(half))
        };
        match probe.await {
            Ok(true) => notify(&[NotifyState::Watchdog]),
            Ok(false) => tracing::warn!(
                within_ms = half.as_millis() as u64,
                "watchdog: the store's writer did not answer in time"
            ),
            Err(e) => tracing::warn!(error = %e, "watchdog: the probe failed"),
        }
    }
}

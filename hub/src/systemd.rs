//! systemd's service protocol for `hub serve` under `Type=notify` (sd_notify(3)): `READY=1` once
//! the listeners are bound, `WATCHDOG=1` every half `WatchdogSec=` while the database answers a
//! write transaction, `STOPPING=1` on shutdown.
//!
//! Outside systemd (no `NOTIFY_SOCKET`, no `WATCHDOG_USEC`) every call does nothing. This module
//! only reports the hub's health to the service manager; it must not act on it (restarting is
//! systemd's decision, after a missed watchdog).

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::cases::CaseService;

/// Tells systemd the hub is serving.
pub fn ready() {
    notify(&[NotifyState::Ready, NotifyState::Status("serving")]);
}

/// Tells systemd the hub is shutting down.
pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

fn notify(state: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "telling systemd the service state failed");
    }
}

/// Until `cancel`: when systemd runs a watchdog for this process, pets it every half interval
/// as long as the case database takes a write transaction within that half. A database that
/// stays locked or a runtime that stalls misses the pets, and systemd restarts the hub.
pub async fn watchdog(cases: Arc<CaseService>, cancel: CancellationToken) {
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
            let cases = Arc::clone(&cases);
            tokio::task::spawn_blocking(move || cases.ping())
        };
        match tokio::time::timeout(half, probe).await {
            Ok(Ok(Ok(()))) => notify(&[NotifyState::Watchdog]),
            Ok(Ok(Err(e))) => {
                tracing::warn!(error = %crate::telemetry::chain(&e), "watchdog: the database does not answer");
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "watchdog: the probe failed"),
            Err(_) => tracing::warn!(
                within_ms = half.as_millis() as u64,
                "watchdog: the database did not answer in time"
            ),
        }
    }
}

//! systemd's service protocol for a service under `Type=notify` (sd_notify(3)): `READY=1` once
//! every stage is started, `WATCHDOG=1` every half `WatchdogSec=` while a probe of the
//! service's core answers (the box's store writer, the hub's database), `STOPPING=1` on
//! shutdown.
//!
//! Outside systemd (no `NOTIFY_SOCKET`, no `WATCHDOG_USEC`) every call does nothing. This module
//! only reports health to the service manager; it must not act on it (restarting is systemd's
//! decision, after a missed watchdog).

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

/// Tells systemd the service is up, with `status` for `systemctl status`.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tells systemd the service is shutting down.
pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

fn notify(state: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "telling systemd the service state failed");
    }
}

/// Until `cancel`: when systemd runs a watchdog for this process, pets it every half interval
/// as long as `probe` (run on the blocking pool, given that half as its time limit) answers
/// `Ok` within that half. A core stuck in a commit or an fsync, or a runtime that stalls,
/// misses the pets, and systemd restarts the service. `what` names the probed part in the log.
pub async fn watchdog<P>(what: &'static str, probe: P, cancel: CancellationToken)
where
    P: Fn(Duration) -> Result<(), String> + Clone + Send + 'static,
{
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
        let probe = probe.clone();
        let answer = tokio::task::spawn_blocking(move || probe(half));
        match tokio::time::timeout(half, answer).await {
            Ok(Ok(Ok(()))) => notify(&[NotifyState::Watchdog]),
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "watchdog: {what} does not answer"),
            Ok(Err(e)) => tracing::warn!(error = %e, "watchdog: the probe failed"),
            Err(_) => tracing::warn!(
                within_ms = half.as_millis() as u64,
                "watchdog: {what} did not answer in time"
            ),
        }
    }
}

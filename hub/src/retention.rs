//! The retention sweep (`[retention]`): deletes the evidence files of cases finished (closed or
//! rejected) longer ago than `evidence_days`, and drops the bodies of delivered events from the
//! ingest log after `ingest_log_days`. What it deletes is counted in the ingest stats (metrics)
//! and logged.
//!
//! It must never delete what an unfinished case shows: only the files a finished case names, and
//! ingest-log bodies the cases already hold. Cases, transitions and events in the case database
//! are never deleted here.

use std::sync::Arc;
use std::time::Duration;

use protocol::Timestamp;
use tokio_util::sync::CancellationToken;

use crate::cases::{CaseError, CaseService};
use crate::clock::Clock;
use crate::ingest::{IngestError, IngestHandle};

/// Cases looked at per database transaction.
const CASES_PER_BATCH: usize = 200;

const DAY_MS: i64 = 86_400_000;

/// What one sweep deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Finished cases whose evidence went.
    pub cases: u64,
    /// Evidence files deleted.
    pub files: u64,
    /// Their bytes.
    pub file_bytes: u64,
    /// Ingest-log events whose bodies were dropped.
    pub log_events: u64,
    /// Their bytes.
    pub log_bytes: u64,
}

/// Why a sweep stopped.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    /// The case database failed.
    #[error(transparent)]
    Cases(#[from] CaseError),
    /// The ingest log or the evidence folder failed.
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// A blocking task failed (it panicked, or the runtime is shutting down).
    #[error("a retention task failed: {0}")]
    Task(String),
}

/// One sweep at `now`.
///
/// # Errors
/// [`RetentionError`]: what was deleted before the failure stays deleted and recorded.
pub async fn sweep(
    cases: &Arc<CaseService>,
    ingest: &IngestHandle,
    settings: &RetentionSection,
    now: Timestamp,
) -> Result<Swept, RetentionError> {
    let mut swept = Swept::default();
    let days_ago = |days: u32| {
        Timestamp::from_unix_millis(
            now.as_unix_millis()
                .saturating_sub(DAY_MS.saturating_mul(i64::from(days))),
        )
    };
    if settings.evidence_days > 0 {
        let before = days_ago(settings.evidence_days);
        loop {
            let batch = {
                let cases = Arc::clone(cases);
                blocking(move || cases.evidence_past_retention(before, CASES_PER_BATCH)).await?
            };
            let n = batch.len();
            for (id, files) in batch {
                // files first, then the record: a crash between repeats the deletion, which
                // finds nothing left
                let (count, bytes) = ingest.expire_evidence(files).await?;
                let cases = Arc::clone(cases);
                blocking(move || cases.evidence_expired(id, count, bytes, now)).await?;
                swept.cases += 1;
                swept.files += count;
                swept.file_bytes += bytes;
            }
            if n < CASES_PER_BATCH {
                break;
            }
            tracing::info!(
                cases = swept.cases,
                files = swept.files,
                bytes = swept.file_bytes,
                "retention: deleting evidence of finished cases"
            );
        }
    }
    if settings.ingest_log_days > 0 {
        let (events, bytes) = ingest.prune_log(days_ago(settings.ingest_log_days)).await?;
        swept.log_events = events;
        swept.log_bytes = bytes;
    }
    if swept != Swept::default() {
        tracing::info!(
            cases = swept.cases,
            files = swept.files,
            file_bytes = swept.file_bytes,
            log_events = swept.log_events,
            log_bytes = swept.log_bytes,
            "retention sweep done"
        );
    }
    Ok(swept)
}

/// Sweeps every `sweep_interval_secs` until `cancel`.
pub async fn run(
    cases: Arc<CaseService>,
    ingest: IngestHandle,
    settings: RetentionSection,
    clock: Clock,
    cancel: CancellationToken,
) {
    if settings.evidence_days == 0 && settings.ingest_log_days == 0 {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(settings.sweep_interval_secs.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            done = sweep(&cases, &ingest, &settings, clock()) => {
                if let Err(e) = done {
                    tracing::warn!(error = %crate::telemetry::chain(&e), "retention sweep failed; it runs again later");
                }
            }
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CaseError> + Send + 'static,
) -> Result<T, RetentionError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(done) => Ok(done?),
        Err(e) => Err(RetentionError::Task(e.to_string())),
    }
}

/// `[retention]`: what the hub deletes after how long, counted in metrics
/// (`hub_ingest_evidence_expired_*`, `hub_ingest_log_pruned_*`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSection {
    /// Evidence files of a case closed or rejected more than this many days ago are deleted
    /// (the case and its events stay; the API answers 410 for the pictures). 0 keeps them
    /// forever. Default 0.
    pub evidence_days: u32,
    /// Bodies of delivered events in the ingest log (`ingest.db`) older than this many days are
    /// dropped: the cases hold the events; the log keeps each event's id and sequence number
    /// (duplicates and cloned stores are still recognised). 0 keeps them. Default 30.
    pub ingest_log_days: u32,
    /// How often the retention sweep runs. Default 3600.
    pub sweep_interval_secs: u64,
}

impl Default for RetentionSection {
    fn default() -> Self {
        RetentionSection {
            evidence_days: 0,
            ingest_log_days: 30,
            sweep_interval_secs: 3600,
        }
    }
}

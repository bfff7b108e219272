//! Webhooks: each case change is POSTed as JSON to its department's URL, signed with
//! HMAC-SHA256 over the body (`x-gridsense-signature: sha256=<hex>`), retried with doubling
//! back-off, and counted.
//!
//! One task delivers in order; a change for a department without a webhook is skipped. Plain
//! `http://` only (a TLS-terminating proxy in front of the receiver for anything else). The
//! task ends when the change channel closes or `cancel` fires.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::cases::CaseChange;
use crate::duties::DepartmentId;

/// Where and how to deliver one department's changes.
#[derive(Clone)]
pub struct WebhookTarget {
    /// `http://host:port/path`.
    pub url: hyper::Uri,
    /// The HMAC key.
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for WebhookTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookTarget")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookPolicy {
    /// Attempts per change, the first included.
    pub max_attempts: u32,
    /// Wait before the first retry; doubles after each.
    pub first_retry: Duration,
    /// Per-attempt timeout.
    pub timeout: Duration,
}

/// Delivery counters.
#[derive(Debug, Default)]
pub struct WebhookStats {
    /// Requests sent.
    pub attempts_total: AtomicU64,
    /// Requests that were retries.
    pub retries_total: AtomicU64,
    /// Changes delivered (2xx).
    pub delivered_total: AtomicU64,
    /// Changes given up on after the last attempt.
    pub failed_total: AtomicU64,
    /// Changes missed because the task fell behind the channel.
    pub lagged_total: AtomicU64,
}

/// The signature header value for a body.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mac = hmac_sha256::HMAC::mac(body, secret);
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Delivers changes from `changes` until it closes or `cancel` fires.
///
/// # Cancel safety
/// Stops between attempts; a delivery in flight when `cancel` fires is abandoned.
pub async fn run(
    mut changes: broadcast::Receiver<CaseChange>,
    targets: HashMap<DepartmentId, WebhookTarget>,
    policy: WebhookPolicy,
    stats: Arc<WebhookStats>,
    cancel: CancellationToken,
) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    loop {
        let change = tokio::select! {
            _ = cancel.cancelled() => return,
            c = changes.recv() => c,
        };
        let change = match change {
            Ok(c) => c,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                stats.lagged_total.fetch_add(n, Ordering::Relaxed);
                tracing::warn!(count = n, "webhook delivery fell behind; changes skipped");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let Some(target) = change.case.department.as_ref().and_then(|d| targets.get(d)) else {
            continue;
        };
        let Ok(body) = serde_json::to_vec(&change) else {
            continue;
        };
        let body = Bytes::from(body);
        let sig = signature(&target.secret, &body);
        let mut wait = policy.first_retry;
        let mut delivered = false;
        for attempt in 0..policy.max_attempts.max(1) {
            if attempt > 0 {
                stats.retries_total.fetch_add(1, Ordering::Relaxed);
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = wait.saturating_mul(2);
            }
            stats.attempts_total.fetch_add(1, Ordering::Relaxed);
            let request = hyper::Request::post(target.url.clone())
                .header("content-type", "application/json")
                .header("x-gridsense-signature", &sig)
                .body(Full::new(body.clone()));
            let Ok(request) = request else { break };
            match tokio::time::timeout(policy.timeout, client.request(request)).await {
                Ok(Ok(resp)) if resp.status().is_success() => {
                    delivered = true;
                    break;
                }
                Ok(Ok(resp)) => tracing::debug!(status = %resp.status(), "webhook refused"),
                Ok(Err(e)) => tracing::debug!(error = %e, "webhook request failed"),
                Err(_) => tracing::debug!("webhook request timed out"),
            }
        }
        if delivered {
            stats.delivered_total.fetch_add(1, Ordering::Relaxed);
        } else {
            stats.failed_total.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(case = %change.case.id, "webhook delivery failed after retries");
        }
    }
}

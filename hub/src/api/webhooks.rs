//! Webhooks: each case change is POSTed as JSON to the URL of the department the case is
//! dispatched to, from the change outbox in the hub database.
//!
//! - Durable: a change is recorded in the outbox in the transaction that makes it, and each
//!   target's cursor (the last change done) is stored there too, so a restart resumes where
//!   delivery stopped and loses nothing.
//! - One worker per target: a dead endpoint delays only its own department's changes. A worker
//!   wakes on each change announced in this process and looks again every `poll_interval`
//!   (changes written by another hub process on the same database).
//! - Signed the Standard Webhooks way (<https://www.standardwebhooks.com/>): `webhook-id` (the
//!   change's id, the same on every attempt), `webhook-timestamp` (Unix seconds of the attempt)
//!   and `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, so a receiver
//!   can refuse a replayed or altered delivery. A secret file holding `whsec_<base64>` is that
//!   key; any other content is the key's bytes.
//! - `http://` and `https://` (rustls with ring; the system's roots, plus `[webhooks] ca_path`).
//! - Retried with doubling back-off (at most `max_retry` apart) until the department accepts:
//!   its later changes wait, in order. With `max_attempts` set, a change is given up on after
//!   that many attempts instead, recorded in `webhook_failures` and counted.
//!
//! Workers end when `cancel` fires.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::cases::CaseService;
use crate::duties::DepartmentId;

/// Where and how to deliver one department's changes.
#[derive(Clone)]
pub struct WebhookTarget {
    /// `http://…` or `https://…`.
    pub url: reqwest::Url,
    /// The HMAC key (see [`WebhookTarget::key_from_secret`]).
    pub key: Vec<u8>,
}

impl WebhookTarget {
    /// The key a secret file holds: `whsec_<base64>` (the Standard Webhooks form) decoded,
    /// anything else as its bytes (a trailing newline dropped).
    ///
    /// # Errors
    /// When a `whsec_` secret is not valid base64.
    pub fn key_from_secret(secret: &[u8]) -> Result<Vec<u8>, base64::DecodeError> {
        let trimmed = secret.strip_suffix(b"\n").unwrap_or(secret);
        let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
        match trimmed.strip_prefix(b"whsec_") {
            Some(b64) => BASE64.decode(b64),
            None => Ok(trimmed.to_vec()),
        }
    }
}

impl std::fmt::Debug for WebhookTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookTarget")
            .field("url", &self.url.as_str())
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Retry and polling policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookPolicy {
    /// Attempts per change, the first included, before it is given up on; 0: never given up.
    pub max_attempts: u32,
    /// Wait before the first retry; doubles after each.
    pub first_retry: Duration,
    /// The longest wait between attempts.
    pub max_retry: Duration,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// How often a worker looks at the outbox without being woken.
    pub poll_interval: Duration,
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
    /// Changes given up on after the last attempt (recorded in `webhook_failures`).
    pub failed_total: AtomicU64,
    /// Outbox reads or cursor writes that failed (retried after the poll interval).
    pub outbox_errors_total: AtomicU64,
}

/// Why the webhook client could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The CA file is not a PEM certificate.
    #[error("webhook CA certificate is not a PEM certificate")]
    Ca(#[source] reqwest::Error),
    /// The client could not be built (TLS set-up).
    #[error("webhook client could not be built")]
    Client(#[source] reqwest::Error),
}

/// The HTTP client the workers share: rustls with the system's roots and `extra_ca_pem` (a
/// city's own CA), no redirects (a webhook answers where it is configured).
///
/// # Errors
/// [`WebhookError`].
pub fn client(extra_ca_pem: Option<&[u8]>) -> Result<reqwest::Client, WebhookError> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("gridsense-hub/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = extra_ca_pem {
        for cert in reqwest::Certificate::from_pem_bundle(pem).map_err(WebhookError::Ca)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(WebhookError::Client)
}

/// The `webhook-signature` value for a delivery: `v1,<base64 HMAC-SHA256>` of
/// `"{id}.{timestamp}.{body}"` under `key`.
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut signed = Vec::with_capacity(id.len() + 24 + body.len());
    signed.extend_from_slice(id.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(timestamp.to_string().as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    format!("v1,{}", BASE64.encode(hmac_sha256::HMAC::mac(&signed, key)))
}

/// The `webhook-id` of a change.
pub fn message_id(change: i64) -> String {
    format!("change_{change}")
}

/// Runs one worker per target until `cancel` fires.
///
/// # Cancel safety
/// A delivery in flight when `cancel` fires is abandoned; its change is not marked done, so
/// it is delivered again after a restart (receivers deduplicate by `webhook-id`).
pub async fn run(
    svc: Arc<CaseService>,
    client: reqwest::Client,
    targets: HashMap<DepartmentId, WebhookTarget>,
    policy: WebhookPolicy,
    stats: Arc<WebhookStats>,
    cancel: CancellationToken,
) {
    let workers = tokio_util::task::TaskTracker::new();
    for (department, target) in targets {
        let worker = Worker {
            svc: Arc::clone(&svc),
            client: client.clone(),
            department,
            target,
            policy,
            stats: Arc::clone(&stats),
        };
        let wake = svc.subscribe();
        workers.spawn(worker.run(wake, cancel.clone()));
    }
    workers.close();
    workers.wait().await;
}

/// Delivers one department's changes in order.
struct Worker {
    svc: Arc<CaseService>,
    client: reqwest::Client,
    department: DepartmentId,
    target: WebhookTarget,
    policy: WebhookPolicy,
    stats: Arc<WebhookStats>,
}

/// Changes read from the outbox at a time.
const BATCH: usize = 64;

impl Worker {
    async fn run(
        self,
        mut wake: broadcast::Receiver<crate::cases::CaseChange>,
        cancel: CancellationToken,
    ) {
        let mut done: Option<i64> = None;
        loop {
            let idle = match self.round(&mut done, &cancel).await {
                Ok(delivered_any) => !delivered_any,
                Err(error) => {
                    self.stats
                        .outbox_errors_total
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(department = %self.department, %error, "webhook outbox failed; trying again");
                    true
                }
            };
            if cancel.is_cancelled() {
                return;
            }
            if idle {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    // any change in this process may be ours; a closed or lagging channel just
                    // means looking at the outbox
                    _ = wake.recv() => {}
                    _ = tokio::time::sleep(self.policy.poll_interval) => {}
                }
            }
        }
    }

    /// Delivers what the outbox holds after the cursor; true when there was something.
    async fn round(
        &self,
        done: &mut Option<i64>,
        cancel: &CancellationToken,
    ) -> Result<bool, String> {
        // one hub process on a shared database delivers; the others stand by, and read the
        // cursor again when they take over
        let svc = Arc::clone(&self.svc);
        if !blocking(move || Ok::<_, crate::cases::CaseError>(svc.leads())).await? {
            *done = None;
            return Ok(false);
        }
        let after = match *done {
            Some(d) => d,
            None => {
                let (svc, d) = (Arc::clone(&self.svc), self.department.clone());
                let cursor = blocking(move || svc.webhook_cursor(&d)).await?;
                *done = Some(cursor);
                cursor
            }
        };
        let (svc, d) = (Arc::clone(&self.svc), self.department.clone());
        let pending = blocking(move || svc.changes_after(&d, after, BATCH)).await?;
        let any = !pending.is_empty();
        for (id, body) in pending {
            let failure = match self.deliver(id, body.into_bytes(), cancel).await {
                Some(outcome) => outcome,
                None => return Ok(any), // cancelled: not marked done
            };
            match &failure {
                None => self.stats.delivered_total.fetch_add(1, Ordering::Relaxed),
                Some(_) => self.stats.failed_total.fetch_add(1, Ordering::Relaxed),
            };
            let (svc, d) = (Arc::clone(&self.svc), self.department.clone());
            let now = self.svc_now();
            blocking(move || {
                let failure = failure.as_ref().map(|(n, e)| (*n, e.as_str()));
                svc.webhook_done(&d, id, failure, now)
            })
            .await?;
            *done = Some(id);
        }
        Ok(any)
    }

    /// Sends one change until it is accepted or the attempts run out: `Some(None)` delivered,
    /// `Some(Some((attempts, last error)))` given up, `None` cancelled.
    async fn deliver(
        &self,
        id: i64,
        body: Vec<u8>,
        cancel: &CancellationToken,
    ) -> Option<Option<(u32, String)>> {
        let message = message_id(id);
        let mut wait = self.policy.first_retry;
        let mut last_error = String::new();
        let attempts = match self.policy.max_attempts {
            0 => u32::MAX,
            n => n,
        };
        for attempt in 0..attempts {
            if attempt > 0 {
                self.stats.retries_total.fetch_add(1, Ordering::Relaxed);
                tokio::select! {
                    _ = cancel.cancelled() => return None,
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = wait.saturating_mul(2).min(self.policy.max_retry);
            }
            self.stats.attempts_total.fetch_add(1, Ordering::Relaxed);
            let timestamp = unix_secs();
            let request = self
                .client
                .post(self.target.url.clone())
                .timeout(self.policy.timeout)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header("webhook-id", &message)
                .header("webhook-timestamp", timestamp.to_string())
                .header(
                    "webhook-signature",
                    signature(&self.target.key, &message, timestamp, &body),
                )
                .body(body.clone());
            let sent = tokio::select! {
                _ = cancel.cancelled() => return None,
                r = request.send() => r,
            };
            match sent {
                Ok(resp) if resp.status().is_success() => return Some(None),
                Ok(resp) => last_error = format!("answered {}", resp.status()),
                Err(e) => last_error = crate::telemetry::chain(&e),
            }
            tracing::debug!(department = %self.department, change = id, error = %last_error, "webhook attempt failed");
        }
        tracing::warn!(department = %self.department, change = id, attempts, error = %last_error, "webhook delivery given up");
        Some(Some((attempts, last_error)))
    }

    fn svc_now(&self) -> protocol::Timestamp {
        protocol::Timestamp::from_unix_millis(unix_secs().saturating_mul(1000))
    }
}

fn unix_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Runs outbox work on the blocking pool; an error comes back described, for the log.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::cases::CaseError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| crate::telemetry::chain(&e)),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification (its reference libraries' tests).
    #[test]
    fn the_signature_matches_the_standard_webhooks_example() {
        let key =
            WebhookTarget::key_from_secret(b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap();
        let sig = signature(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn a_plain_secret_is_its_bytes() {
        assert_eq!(
            WebhookTarget::key_from_secret(b"s3cret\n").unwrap(),
            b"s3cret"
        );
        assert!(WebhookTarget::key_from_secret(b"whsec_not base64!").is_err());
    }
}

//! `edge-agent status`: fetches `/api/status` from a running agent's local API and prints it as
//! a table (or the JSON as served).
//!
//! This module must not read the store or the config itself: what it prints is what the running
//! agent reports.

use std::fmt::Write as _;
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::StatusReport;

/// The default address of the local API (`[local_api] listen`'s default).
pub const DEFAULT_URL: &str = "http://127.0.0.1:8089";

/// How long `edge-agent status` waits for the agent.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Why the status could not be shown.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StatusCliError {
    /// `--url` is not an `http://host:port` URL.
    #[error("`{url}` is not an http:// URL of the agent's local API (e.g. {DEFAULT_URL})")]
    BadUrl {
        /// As given.
        url: String,
    },
    /// Nothing answers there.
    #[error(
        "cannot reach the agent's local API at {url}: is edge-agent running, with a [local_api] section listening there?"
    )]
    Unreachable {
        /// Where.
        url: String,
        /// Why.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// It did not answer in time.
    #[error("the agent's local API at {url} did not answer within {TIMEOUT:?}")]
    Timeout {
        /// Where.
        url: String,
    },
    /// It answered with an error.
    #[error("the agent's local API at {url} answered {status}: {body}")]
    Status {
        /// Where.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The body, for a human.
        body: String,
    },
    /// The body could not be read or is not a status report.
    #[error("the answer from {url} is not a status report")]
    Decode {
        /// Where.
        url: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Fetches the report from the local API at `base` (`http://host:port`). Returns the report and
/// the JSON exactly as served.
///
/// # Errors
/// [`StatusCliError`] naming the URL: unreachable (the agent is not running), timeout, an HTTP
/// error or a body that is not a report.
pub async fn fetch(base: &str) -> Result<(StatusReport, String), StatusCliError> {
    let url = format!("{}/api/status", base.trim_end_matches('/'));
    let uri: hyper::Uri = url
        .parse()
        .ok()
        .filter(|u: &hyper::Uri| u.scheme_str() == Some("http") && u.host().is_some())
        .ok_or_else(|| StatusCliError::BadUrl {
            url: base.to_owned(),
        })?;
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let exchange = async {
        let response = client
            .get(uri)
            .await
            .map_err(|source| StatusCliError::Unreachable {
                url: url.clone(),
                source,
            })?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| StatusCliError::Decode {
                url: url.clone(),
                source: Box::new(e),
            })?
            .to_bytes();
        Ok::<_, StatusCliError>((status, body))
    };
    let (status, body) = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| StatusCliError::Timeout { url: url.clone() })??;
    let text = String::from_utf8_lossy(&body).into_owned();
    if !status.is_success() {
        return Err(StatusCliError::Status {
            url,
            status: status.as_u16(),
            body: text.chars().take(500).collect(),
        });
    }
    let report = serde_json::from_str(&text).map_err(|e| StatusCliError::Decode {
        url,
        source: Box::new(e),
    })?;
    Ok((report, text))
}

/// The report as a table for a terminal.
pub fn render_table(r: &StatusReport) -> String {
    let mut out = String::new();
    for section in [headline, cameras, sensors, uplink_and_store, recent_events] {
        section(&mut out, r);
    }
    out
}

/// The version, uptime, verdict and problems.
fn headline(out: &mut String, r: &StatusReport) {
    let verdict = if r.problems.is_empty() {
        "healthy".to_owned()
    } else {
        format!("{} problem(s)", r.problems.len())
    };
    let _ = writeln!(
        out,
        "edge-agent {}  up {}  {verdict}",
        r.version,
        duration(r.uptime_secs)
    );
    for p in &r.problems {
        let detail = p
            .detail
            .as_deref()
            .map(|d| format!(": {d}"))
            .unwrap_or_default();
        let _ = writeln!(out, "  ! {} {}{detail}", p.kind, p.subject);
    }
}

/// The cameras and the detector.
fn cameras(out: &mut String, r: &StatusReport) {
    let _ = writeln!(out, "\nCAMERAS");
    if r.cameras.is_empty() {
        let _ = writeln!(out, "  (none configured)");
    } else {
        let _ = writeln!(
            out,
            "  {:<16} {:<11} {:>6} {:>7} {:>9} {:>8} {:>10}  last error",
            "id", "state", "fps", "det/s", "frames", "drops", "reconnects"
        );
        for c in &r.cameras {
            let drops: u64 = c.drops.values().sum();
            let _ = writeln!(
                out,
                "  {:<16} {:<11} {:>6.1} {:>7.1} {:>9} {:>8} {:>10}  {}",
                c.id,
                c.state,
                c.fps,
                c.detect_fps,
                c.frames,
                drops,
                c.reconnects,
                c.last_error.as_deref().unwrap_or("-")
            );
        }
        let inference = r
            .detector
            .inference_ms
            .map_or("-".to_owned(), |ms| format!("{ms:.1} ms"));
        let _ = writeln!(
            out,
            "  detector: inference {inference}, queue {}",
            r.detector.queue_len
        );
    }
}

/// The broker link and the sensors.
fn sensors(out: &mut String, r: &StatusReport) {
    let _ = writeln!(out, "\nSENSORS");
    if let Some(m) = &r.mqtt {
        let _ = writeln!(
            out,
            "  broker: {} ({} connections, {} failures)",
            if m.connected { "connected" } else { "DOWN" },
            m.connections,
            m.failures
        );
    }
    if r.sensors.is_empty() {
        let _ = writeln!(out, "  (none configured)");
    } else {
        let _ = writeln!(
            out,
            "  {:<16} {:<7} {:>9} {:>8}  values",
            "id", "state", "last seen", "battery"
        );
        for s in &r.sensors {
            let seen = s.last_seen_ms.map_or("never".to_owned(), |t| {
                format!("{}s ago", (r.generated_at_ms - t).max(0) / 1000)
            });
            let battery = s
                .battery_percent
                .map_or("-".to_owned(), |b| format!("{b:.0}%"));
            let values: Vec<String> = s
                .values
                .iter()
                .filter(|(k, _)| k.as_str() != "battery")
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let _ = writeln!(
                out,
                "  {:<16} {:<7} {:>9} {:>8}  {}",
                s.id,
                if s.stale { "STALE" } else { "ok" },
                seen,
                battery,
                values.join(" ")
            );
        }
    }
}

/// The uplink's mode and backlog, and the store's use of its disk.
fn uplink_and_store(out: &mut String, r: &StatusReport) {
    let u = &r.uplink;
    let _ = writeln!(out, "\nUPLINK");
    let _ = writeln!(
        out,
        "  mode {}  rtt {}  backlog {}  oldest unsynced {}",
        u.mode,
        u.rtt_ms.map_or("-".to_owned(), |ms| format!("{ms:.1} ms")),
        u.backlog_events,
        u.oldest_unsynced_age_secs
            .map_or("-".to_owned(), |s| format!("{} ago", duration(s)))
    );
    if let Some(e) = &u.last_error {
        let _ = writeln!(out, "  last error: {e}");
    }
    let s = &r.store;
    let _ = writeln!(out, "\nSTORE");
    let _ = writeln!(
        out,
        "  {}  {} of {} quota  {} events ({} unsynced)  disk free {}",
        s.data_dir,
        bytes(s.usage_bytes),
        bytes(s.quota_bytes),
        s.events,
        s.unsynced_events,
        s.disk_free_bytes.map_or("-".to_owned(), bytes)
    );
}

/// The ten newest events.
fn recent_events(out: &mut String, r: &StatusReport) {
    let _ = writeln!(out, "\nRECENT EVENTS");
    if r.recent_events.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for e in r.recent_events.iter().take(10) {
        let _ = writeln!(
            out,
            "  #{:<6} {:>6}s ago  {:<40} {:<8} {}{}",
            e.seq,
            (r.generated_at_ms - e.observed_at_ms).max(0) / 1000,
            e.category_key.as_deref().unwrap_or(&e.category),
            e.severity,
            e.source_id,
            if e.synced { "" } else { "  (unsynced)" }
        );
    }
}

fn duration(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn bytes(n: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let n = n as f64;
    if n >= 1024.0 * MIB {
        format!("{:.1} GiB", n / (1024.0 * MIB))
    } else {
        format!("{:.1} MiB", n / MIB)
    }
}

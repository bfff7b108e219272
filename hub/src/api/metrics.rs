//! `GET /metrics`: the hub's Prometheus metrics, in the OpenMetrics text format.
//!
//! Names follow `hub_<noun>_<unit>_total` with low-cardinality labels only (`state`, `route`,
//! `method`, `status`); no box, case or department id is ever a label. The counters the hub
//! already keeps ([`CaseStats`](crate::cases::CaseStats), [`IngestStats`](crate::ingest::IngestStats),
//! [`WebhookStats`]) are read at scrape time by a collector rather than counted twice; case
//! gauges come from one grouped query on the blocking pool. Only API requests are counted here,
//! by a middleware.
//!
//! The route is unauthenticated, like every Prometheus endpoint: keep `api_listen_addr` on a
//! trusted network. This module changes no state.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::Clock;
use super::webhooks::WebhookStats;
use crate::cases::CaseService;
use crate::ingest::IngestHandle;

/// The OpenMetrics content type Prometheus negotiates.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(&'static str, String)>;

/// The hub's metrics: a registry of its own (no process-global recorder, so several hubs in one
/// test process do not mix), cloneable into the router.
#[derive(Clone)]
pub struct HubMetrics {
    registry: Arc<Registry>,
    requests: Family<Labels, Counter>,
}

impl fmt::Debug for HubMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubMetrics").finish_non_exhaustive()
    }
}

impl HubMetrics {
    /// Metrics over the case service, the ingest (when it runs) and webhook delivery.
    pub fn new(
        cases: Arc<CaseService>,
        ingest: Option<IngestHandle>,
        webhooks: Arc<WebhookStats>,
        http: Arc<super::server::HttpStats>,
        clock: Clock,
    ) -> HubMetrics {
        let mut registry = Registry::default();
        let requests = Family::<Labels, Counter>::default();
        registry.register(
            "hub_api_requests",
            "HTTP API requests answered, by route template, method and status class",
            requests.clone(),
        );
        registry.register_collector(Box::new(HubCollector {
            cases,
            ingest,
            webhooks,
            http,
            clock,
            collect_errors: AtomicU64::new(0),
        }));
        HubMetrics {
            registry: Arc::new(registry),
            requests,
        }
    }

    /// The `/metrics` route.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/metrics", get(scrape))
            .with_state(self.clone())
    }

    /// The metrics as OpenMetrics text (runs a database query: call from the blocking pool).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        out
    }
}

/// Counts each API request by its route template (`/api/v1/cases/{id}`, never the id itself),
/// method and status class. Install with `axum::middleware::from_fn_with_state`.
pub async fn count_requests(
    State(metrics): State<HubMetrics>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    // a fixed set: a client's made-up method must not make a series of its own
    let method = match request.method().as_str() {
        m @ ("GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS") => m,
        _ => "other",
    }
    .to_owned();
    let response = next.run(request).await;
    let status = format!("{}xx", response.status().as_u16() / 100);
    metrics
        .requests
        .get_or_create(&vec![
            ("route", route),
            ("method", method),
            ("status", status),
        ])
        .inc();
    response
}

async fn scrape(State(metrics): State<HubMetrics>) -> Response {
    match tokio::task::spawn_blocking(move || metrics.render()).await {
        Ok(body) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "metrics task failed");
            super::ApiError::Internal.into_response()
        }
    }
}

/// Reads the hub's own counters at scrape time.
struct HubCollector {
    cases: Arc<CaseService>,
    ingest: Option<IngestHandle>,
    webhooks: Arc<WebhookStats>,
    http: Arc<super::server::HttpStats>,
    clock: Clock,
    /// Scrapes whose case query failed (the case gauges are then left out).
    collect_errors: AtomicU64,
}

impl fmt::Debug for HubCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubCollector").finish_non_exhaustive()
    }
}

impl Collector for HubCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        self.encode_case_counts(&mut enc)?;
        self.encode_case_stats(&mut enc)?;
        self.encode_http(&mut enc)?;
        self.encode_webhooks(&mut enc)?;
        if let Some(ingest) = &self.ingest {
            encode_ingest(ingest, &mut enc)?;
        }
        Ok(())
    }
}

impl HubCollector {
    /// Cases by state and overdue, read from the database at each scrape.
    fn encode_case_counts(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        match self.cases.case_counts((self.clock)()) {
            Ok((by_state, overdue)) => {
                let mut m = enc.encode_descriptor(
                    "hub_cases",
                    "Cases held, by workflow state",
                    None,
                    MetricType::Gauge,
                )?;
                for (state, n) in &by_state {
                    let labels = [("state", state.as_str())];
                    ConstGauge::new(*n as i64).encode(m.encode_family(&labels)?)?;
                }
                gauge(
                    enc,
                    "hub_cases_overdue",
                    "Open cases past their deadline",
                    overdue,
                )?;
            }
            Err(e) => {
                self.collect_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %crate::telemetry::chain(&e), "case counts for metrics failed");
            }
        }
        gauge(
            enc,
            "hub_leader",
            "1 while this process runs the timers shared by every hub process on the database (deadlines, webhooks)",
            self.cases.stats().leading.load(Ordering::Relaxed),
        )?;
        counter(
            enc,
            "hub_metrics_collect_errors",
            "Scrapes whose case query failed",
            &self.collect_errors,
        )?;
        Ok(())
    }

    /// The case service's counters.
    fn encode_case_stats(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let c = self.cases.stats();
        for (name, help, v) in [
            (
                "hub_case_events",
                "Events taken into cases",
                &c.events_total,
            ),
            (
                "hub_case_duplicate_events",
                "Events ignored by the cases as duplicates",
                &c.duplicates_total,
            ),
            ("hub_cases_created", "Cases opened", &c.cases_created_total),
            (
                "hub_case_refused_events",
                "Events refused for a value that cannot be stored (NaN, infinite, invalid place)",
                &c.refused_total,
            ),
            (
                "hub_case_clamped_times",
                "Events whose box time was outside the window and was replaced by the arrival time",
                &c.clamped_times_total,
            ),
            (
                "hub_case_merged_events",
                "Events merged into an open case",
                &c.merged_total,
            ),
            (
                "hub_case_warnings",
                "Deadline warnings given",
                &c.warnings_total,
            ),
            (
                "hub_case_escalations",
                "Case escalations",
                &c.escalations_total,
            ),
            (
                "hub_deadline_checks",
                "Deadline checks completed by this process",
                &c.deadline_checks_total,
            ),
            (
                "hub_case_actions",
                "Workflow actions applied",
                &c.actions_total,
            ),
            (
                "hub_case_rechecks",
                "Camera re-check answers attached to their cases",
                &c.rechecks_total,
            ),
            (
                "hub_case_recheck_verdicts",
                "Handled cases verified (passed or failed) by a camera re-check",
                &c.recheck_verdicts_total,
            ),
            (
                "hub_case_rechecks_unavailable",
                "Re-checks asked after feedback that the box could not answer",
                &c.recheck_unavailable_total,
            ),
        ] {
            counter(enc, name, help, v)?;
        }
        Ok(())
    }

    /// The API server's counters.
    fn encode_http(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let h = &self.http;
        for (name, help, v) in [
            (
                "hub_http_connections_refused",
                "HTTP connections closed on arrival because the connection limit was reached",
                &h.connections_refused_total,
            ),
            (
                "hub_http_tls_failures",
                "TLS handshakes on the API that failed or timed out",
                &h.tls_failures_total,
            ),
            (
                "hub_http_timeouts",
                "API requests not answered within the request timeout",
                &h.timeouts_total,
            ),
        ] {
            counter(enc, name, help, v)?;
        }
        Ok(())
    }

    /// The webhook delivery's counters.
    fn encode_webhooks(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let w = &self.webhooks;
        for (name, help, v) in [
            (
                "hub_webhook_attempts",
                "Webhook requests sent",
                &w.attempts_total,
            ),
            (
                "hub_webhook_retries",
                "Webhook requests that were retries",
                &w.retries_total,
            ),
            (
                "hub_webhook_delivered",
                "Case changes delivered to departments",
                &w.delivered_total,
            ),
            (
                "hub_webhook_failed",
                "Case changes given up on after the last attempt",
                &w.failed_total,
            ),
            (
                "hub_webhook_outbox_errors",
                "Reads of the change outbox or cursor writes that failed (tried again)",
                &w.outbox_errors_total,
            ),
        ] {
            counter(enc, name, help, v)?;
        }
        Ok(())
    }
}

/// The QUIC ingest's connected boxes and counters. (Long as a table: one entry per counter,
/// name and help beside the value.)
fn encode_ingest(ingest: &IngestHandle, enc: &mut DescriptorEncoder) -> fmt::Result {
    gauge(
        enc,
        "hub_ingest_connections",
        "Boxes connected now",
        ingest.connected().len() as u64,
    )?;
    let s = ingest.stats();
    for (name, help, v) in [
        (
            "hub_ingest_events",
            "Events from boxes committed (new)",
            &s.events_total,
        ),
        (
            "hub_ingest_duplicate_events",
            "Events from boxes received again",
            &s.duplicates_total,
        ),
        (
            "hub_ingest_handed_on_events",
            "Events handed on to the cases",
            &s.handed_on_total,
        ),
        (
            "hub_ingest_handoff_refused_events",
            "Events the cases refused",
            &s.handoff_refused_total,
        ),
        (
            "hub_ingest_connections_accepted",
            "Box connections accepted",
            &s.connections_total,
        ),
        (
            "hub_ingest_connections_refused",
            "Box connections refused (revoked, unknown)",
            &s.refused_total,
        ),
        (
            "hub_ingest_handshakes_failed",
            "Handshakes that did not complete (certificate of another CA or expired, peer gone)",
            &s.handshakes_failed_total,
        ),
        (
            "hub_ingest_handshakes_refused",
            "Incoming connections refused while too many handshakes were pending",
            &s.handshakes_refused_total,
        ),
        (
            "hub_ingest_handshakes_timed_out",
            "Handshakes not done within handshake_timeout_ms",
            &s.handshakes_timed_out_total,
        ),
        (
            "hub_ingest_certless_refused",
            "Connections without a certificate closed while max_enrolling were enrolling",
            &s.certless_refused_total,
        ),
        (
            "hub_ingest_enroll_timeouts",
            "Connections without a certificate closed for sending no enrollment in time",
            &s.enroll_timeouts_total,
        ),
        (
            "hub_ingest_certificates_expired",
            "Sessions refused or ended because the box certificate had expired",
            &s.expired_total,
        ),
        (
            "hub_ingest_protocol_errors",
            "Connections closed for a protocol error",
            &s.protocol_errors_total,
        ),
        (
            "hub_ingest_retries",
            "Handshakes answered with a QUIC Retry",
            &s.retries_total,
        ),
        (
            "hub_ingest_enrollments",
            "Box enrollments accepted",
            &s.enrollments_total,
        ),
        (
            "hub_ingest_enrollments_refused",
            "Enrollments and renewals refused",
            &s.enrollments_refused_total,
        ),
        (
            "hub_ingest_renewals",
            "Box certificates renewed",
            &s.renewals_total,
        ),
        (
            "hub_ingest_evidence_files",
            "Evidence files completed",
            &s.evidence_files_total,
        ),
        (
            "hub_ingest_evidence_lost",
            "Evidence files boxes reported gone before upload when asked for them",
            &s.evidence_lost_total,
        ),
        (
            "hub_ingest_evidence_refused",
            "Evidence files refused for declaring more than max_evidence_bytes",
            &s.evidence_refused_total,
        ),
        (
            "hub_ingest_rate_limited_events",
            "Events held back because their box delivered faster than max_events_per_sec",
            &s.rate_limited_events_total,
        ),
        (
            "hub_ingest_health_refused",
            "Health reports dropped because their box sent more than max_health_per_min",
            &s.health_refused_total,
        ),
        (
            "hub_ingest_evidence_expired",
            "Evidence files deleted after the retention period of their finished cases",
            &s.evidence_expired_total,
        ),
        (
            "hub_ingest_evidence_expired_bytes",
            "Bytes of evidence files deleted after their retention period",
            &s.evidence_expired_bytes_total,
        ),
        (
            "hub_ingest_log_pruned",
            "Delivered events whose bodies were dropped from the ingest log after its retention",
            &s.log_pruned_total,
        ),
        (
            "hub_ingest_log_pruned_bytes",
            "Bytes of event bodies dropped from the ingest log after its retention",
            &s.log_pruned_bytes_total,
        ),
        (
            "hub_ingest_conflicts",
            "Sessions ended for events at sequence numbers committed with other events (a cloned box store)",
            &s.conflicts_total,
        ),
    ] {
        counter(enc, name, help, v)?;
    }
    Ok(())
}

/// A counter (the encoder appends `_total`).
fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: &AtomicU64) -> fmt::Result {
    let c = ConstCounter::new(v.load(Ordering::Relaxed));
    let m = enc.encode_descriptor(name, help, None, c.metric_type())?;
    c.encode(m)
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let g = ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
    let m = enc.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(m)
}

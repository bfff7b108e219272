//! The agent's Prometheus metrics: an HTTP listener of its own (`[metrics] listen_addr`, default
//! `127.0.0.1:9464`) answering `GET /metrics` in the OpenMetrics text format.
//!
//! Names follow `edge_agent_<noun>_<unit>_total`; labels are low-cardinality (`reason`, `kind`,
//! `state`, `category` from the bounded catalog). Camera and sensor ids are never labels (see
//! CONVENTIONS §6): per-camera and per-sensor detail is on the box page and in `doctor`.
//!
//! Nothing is counted here. The stages already count what they do ([`CameraStats`],
//! [`SensorStats`], [`FusionStats`](crate::fusion::FusionStats),
//! [`EventsStats`](crate::events::EventsStats), the store's
//! [`StoreStats`](crate::store::StoreStats), the uplink's
//! [`UplinkStatus`](crate::uplink::UplinkStatus)); a collector reads them at scrape time through
//! the agent's [`Probes`]. The store read is a SQLite query, so a scrape renders on the blocking
//! pool. This listener is separate from the box's local API so either can be turned off alone.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::camera::{CameraState, CameraStats, DETECT_BUCKETS_SECS};
use crate::probes::Probes;
use crate::sensors::SensorStats;

/// The OpenMetrics content type Prometheus negotiates.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The `[metrics]` section: present, the agent serves `/metrics`; absent, it does not.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where `/metrics` listens (plain HTTP, no authentication: keep it on loopback or a trusted
    /// network). Default `127.0.0.1:9464`.
    #[serde(default = "default_listen_addr")]
    pub listen_addr: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen_addr: default_listen_addr(),
        }
    }
}

/// Why the metrics listener could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// The listen address could not be bound.
    #[error("failed to listen for metrics on `{addr}`")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The metrics registry over a running agent's stages.
#[derive(Clone)]
pub struct AgentMetrics {
    registry: Arc<Registry>,
}

impl fmt::Debug for AgentMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentMetrics").finish_non_exhaustive()
    }
}

impl AgentMetrics {
    /// Metrics reading `probes` at each scrape; `quota_bytes` is the store's quota, for the
    /// usage ratio.
    pub fn new(probes: Probes, quota_bytes: u64) -> AgentMetrics {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(AgentCollector {
            sources: probes,
            quota_bytes,
            collect_errors: AtomicU64::new(0),
        }));
        AgentMetrics {
            registry: Arc::new(registry),
        }
    }

    /// The metrics as OpenMetrics text (reads the store: call from the blocking pool).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        out
    }

    /// Binds `addr` (port 0 picks a free one); done before the stages start so that a taken
    /// port fails the start-up with nothing running.
    ///
    /// # Errors
    /// [`MetricsError::Bind`].
    pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, MetricsError> {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| MetricsError::Bind { addr, source })
    }

    /// Serves `/metrics` on `listener` until `cancel` fires.
    pub async fn serve(self, listener: tokio::net::TcpListener, cancel: CancellationToken) {
        let app = Router::new()
            .route("/metrics", get(scrape))
            .with_state(self);
        // a scraper or two: a few connections, a short deadline for a request's head
        crate::status::serve_http(
            listener,
            app,
            METRICS_MAX_CONNECTIONS,
            std::time::Duration::from_secs(10),
            cancel,
        )
        .await;
    }
}

async fn scrape(State(metrics): State<AgentMetrics>) -> Response {
    match tokio::task::spawn_blocking(move || metrics.render()).await {
        Ok(body) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "metrics task failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Reads the stages' counters at scrape time.
#[derive(Debug)]
struct AgentCollector {
    sources: Probes,
    /// The store's quota.
    quota_bytes: u64,
    /// Scrapes whose store read failed (store metrics are then left out).
    collect_errors: AtomicU64,
}

impl Collector for AgentCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        let s = &self.sources;
        self.encode_store(&mut enc)?;
        let ev = &s.events;
        counter(
            &mut enc,
            "edge_agent_observations",
            "Observations from cameras and sensors",
            load(&ev.observations),
        )?;
        let by_category: Vec<(String, u64)> = ev
            .committed_by_category
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        labeled(
            &mut enc,
            "edge_agent_events",
            "Events committed to the store, by category code",
            MetricType::Counter,
            "category",
            &by_category,
        )?;
        counter(
            &mut enc,
            "edge_agent_events_suppressed",
            "Repeats inside the cooldown, not stored",
            load(&ev.suppressed),
        )?;
        labeled(
            &mut enc,
            "edge_agent_event_errors",
            "Observations that did not become stored events, by kind",
            MetricType::Counter,
            "kind",
            &[
                ("build".into(), load(&ev.build_errors)),
                ("store".into(), load(&ev.store_errors)),
            ],
        )?;
        if let Some(cameras) = &s.cameras {
            encode_cameras(&mut enc, cameras)?;
        }
        if let Some(sensors) = &s.sensors {
            let stats = sensors.lock().unwrap_or_else(|p| p.into_inner()).clone();
            encode_sensors(&mut enc, &stats)?;
        }
        if let Some(fusion) = &s.fusion {
            labeled(
                &mut enc,
                "edge_agent_fusion_observations",
                "Sensor observations of sensors with a confirming camera, by outcome: confirmed \
                 (the camera's snapshot attached) or unavailable (sent on without one)",
                MetricType::Counter,
                "kind",
                &[
                    ("confirmed".into(), load(&fusion.confirmed)),
                    ("unavailable".into(), load(&fusion.unavailable)),
                ],
            )?;
        }
        if let Some(uplink) = &s.uplink {
            let status = uplink.borrow().clone();
            gauge(
                &mut enc,
                "edge_agent_uplink_connected",
                "1 while a session with the hub is open",
                u64::from(status.mode.in_session()),
            )?;
            gauge(
                &mut enc,
                "edge_agent_uplink_acked_seq",
                "Highest sequence number the hub acknowledged",
                status.acked_seq,
            )?;
            counter(
                &mut enc,
                "edge_agent_uplink_sessions",
                "Sessions opened with the hub",
                status.sessions_total,
            )?;
            let lag = status
                .oldest_unsynced_at
                .map(|t| {
                    (crate::clock::now().as_unix_millis() - t.as_unix_millis()).max(0) as f64
                        / 1000.0
                })
                .unwrap_or(0.0);
            let g = ConstGauge::new(lag);
            let m = enc.encode_descriptor(
                "edge_agent_uplink_sync_lag_seconds",
                "Age of the oldest event not yet acknowledged by the hub (0 when synced)",
                None,
                g.metric_type(),
            )?;
            g.encode(m)?;
        }
        counter(
            &mut enc,
            "edge_agent_metrics_collect_errors",
            "Scrapes whose store read failed",
            load(&self.collect_errors),
        )?;
        Ok(())
    }
}

impl AgentCollector {
    fn encode_store(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let stats = match self.sources.store.stats() {
            Ok(s) => s,
            Err(e) => {
                self.collect_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %crate::telemetry::chain(&e), "store stats for metrics failed");
                return Ok(());
            }
        };
        gauge(
            enc,
            "edge_agent_store_usage_bytes",
            "Accounted bytes of the store (events and evidence)",
            stats.usage_bytes,
        )?;
        gauge(
            enc,
            "edge_agent_store_quota_bytes",
            "The store's quota",
            self.quota_bytes,
        )?;
        gauge(
            enc,
            "edge_agent_store_events",
            "Events held in the store",
            stats.events,
        )?;
        gauge(
            enc,
            "edge_agent_store_evidence_files",
            "Evidence files held",
            stats.evidence_files,
        )?;
        gauge(
            enc,
            "edge_agent_backlog_events",
            "Events committed but not yet acknowledged by the hub",
            stats.unsynced_events,
        )?;
        gauge(
            enc,
            "edge_agent_store_last_seq",
            "Highest sequence number committed",
            stats.last_seq,
        )?;
        labeled(
            enc,
            "edge_agent_store_evictions",
            "Rows and files evicted under quota pressure, by kind (unsynced_event is data loss)",
            MetricType::Counter,
            "kind",
            &[
                ("unsynced_event".into(), stats.lost_events_total),
                ("synced_event".into(), stats.evicted_events_total),
                ("evidence".into(), stats.evicted_evidence_total),
            ],
        )?;
        counter(
            enc,
            "edge_agent_store_expired_events",
            "Synced events deleted past their retention time",
            stats.expired_events_total,
        )?;
        counter(
            enc,
            "edge_agent_store_lost_evidence",
            "Pictures evicted (or found missing) before the hub confirmed them; each reported",
            stats.lost_evidence_total,
        )?;
        counter(
            enc,
            "edge_agent_store_disk_full",
            "Times the store found its data disk full and freed room (since start)",
            self.sources.store.disk_full_total(),
        )?;
        gauge(
            enc,
            "edge_agent_store_disk_reserve_bytes",
            "Room the store holds back to free a full disk (0: given back, nothing left to evict)",
            self.sources.store.disk_reserve_bytes(),
        )
    }
}

fn encode_cameras(enc: &mut DescriptorEncoder, cameras: &CameraStats) -> fmt::Result {
    let snap = cameras.snapshot();
    let sum = |f: fn(&crate::camera::CameraStatus) -> u64| snap.iter().map(f).sum::<u64>();
    counter(
        enc,
        "edge_agent_camera_frames",
        "Frames decoded, all cameras",
        sum(|c| c.frames),
    )?;
    counter(
        enc,
        "edge_agent_camera_frames_detected",
        "Frames the detector ran on",
        sum(|c| c.detected),
    )?;
    labeled(
        enc,
        "edge_agent_camera_frames_dropped",
        "Decoded frames not run through the detector, by reason",
        MetricType::Counter,
        "reason",
        &[
            ("motion_gated".into(), sum(|c| c.gated)),
            ("superseded".into(), sum(|c| c.dropped_superseded)),
            ("bad_frame".into(), sum(|c| c.bad_frames)),
            ("detect_error".into(), sum(|c| c.detect_errors)),
        ],
    )?;
    counter(
        enc,
        "edge_agent_camera_reconnects",
        "Camera pipeline rebuilds",
        sum(|c| c.reconnects),
    )?;
    let states: Vec<(String, u64)> = [
        CameraState::Connecting,
        CameraState::Streaming,
        CameraState::Stalled,
        CameraState::Offline,
    ]
    .iter()
    .map(|st| {
        (
            format!("{st:?}").to_ascii_lowercase(),
            snap.iter().filter(|c| c.state == *st).count() as u64,
        )
    })
    .collect();
    labeled(
        enc,
        "edge_agent_cameras",
        "Cameras by state",
        MetricType::Gauge,
        "state",
        &states,
    )?;
    gauge(
        enc,
        "edge_agent_detector_queue_frames",
        "Frames waiting for the detector",
        cameras.queue_len() as u64,
    )?;
    let timing = cameras.timing();
    let mut buckets: Vec<(f64, u64)> = DETECT_BUCKETS_SECS
        .iter()
        .copied()
        .zip(timing.detect_buckets.iter().copied())
        .collect();
    buckets.push((f64::MAX, timing.detect_buckets[DETECT_BUCKETS_SECS.len()]));
    let mut m = enc.encode_descriptor(
        "edge_agent_inference_latency_seconds",
        "Time per detected frame in the detector (pre-processing, inference, decoding)",
        None,
        MetricType::Histogram,
    )?;
    m.encode_histogram::<NoLabelSet>(timing.detect.as_secs_f64(), timing.frames, &buckets, None)
}

fn encode_sensors(enc: &mut DescriptorEncoder, stats: &SensorStats) -> fmt::Result {
    let per =
        |f: fn(&crate::sensors::SensorCounters) -> u64| stats.sensors.values().map(f).sum::<u64>();
    counter(
        enc,
        "edge_agent_mqtt_messages",
        "MQTT messages received on the sensors' topics",
        per(|c| c.messages) + stats.unrouted_messages,
    )?;
    counter(
        enc,
        "edge_agent_mqtt_unrouted_messages",
        "MQTT messages on topics no sensor claims",
        stats.unrouted_messages,
    )?;
    let mut bad: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for c in stats.sensors.values() {
        for (reason, n) in &c.bad_input {
            *bad.entry(reason).or_default() += n;
        }
    }
    let bad: Vec<(String, u64)> = bad.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    labeled(
        enc,
        "edge_agent_mqtt_bad_payloads",
        "Sensor payloads that could not be decoded, by reason",
        MetricType::Counter,
        "reason",
        &bad,
    )?;
    counter(
        enc,
        "edge_agent_sensor_readings",
        "Readings decoded from sensor payloads",
        per(|c| c.readings),
    )?;
    counter(
        enc,
        "edge_agent_sensor_polls",
        "Polls sent to sensors",
        per(|c| c.polls),
    )?;
    counter(
        enc,
        "edge_agent_sensor_poll_timeouts",
        "Polls not answered in time",
        per(|c| c.poll_timeouts),
    )?;
    gauge(
        enc,
        "edge_agent_mqtt_connected",
        "1 while connected to the broker",
        u64::from(stats.link.connected),
    )?;
    counter(
        enc,
        "edge_agent_mqtt_connections",
        "Broker connections made",
        stats.link.connections,
    )?;
    counter(
        enc,
        "edge_agent_mqtt_connection_failures",
        "Broker connection attempts failed and connections lost",
        stats.link.failures,
    )
}

fn load(v: &AtomicU64) -> u64 {
    v.load(Ordering::Relaxed)
}

/// A counter (the encoder appends `_total`).
fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let c = ConstCounter::new(v);
    let m = enc.encode_descriptor(name, help, None, c.metric_type())?;
    c.encode(m)
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let g = ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
    let m = enc.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(m)
}

/// One metric family with one label; an empty `values` still declares the family.
fn labeled(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    label: &str,
    values: &[(String, u64)],
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (value, n) in values {
        let labels = [(label, value.as_str())];
        let family = m.encode_family(&labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(*n).encode(family)?,
            _ => ConstGauge::new(i64::try_from(*n).unwrap_or(i64::MAX)).encode(family)?,
        }
    }
    Ok(())
}

fn default_listen_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}

/// Connections the metrics listener serves at once.
const METRICS_MAX_CONNECTIONS: usize = 8;

//! The box's state as the local API serves it (`GET /api/status`) and `edge-agent status` reads
//! it: plain serde types, a stable JSON shape, times in Unix milliseconds.
//!
//! [`StatusReport::problems`] lists what is dead at a glance (an offline camera, a stale sensor,
//! the uplink offline, the store nearly full); the page and the CLI translate its kinds.
//!
//! This module must not read any state by itself: `status::server` fills these types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::camera::CameraState;
use crate::uplink::UplinkMode;

/// Everything the box page shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The agent's version.
    pub version: String,
    /// When this report was made (Unix ms).
    pub generated_at_ms: i64,
    /// Seconds since the agent started.
    pub uptime_secs: u64,
    /// Whether a password is configured, so the page offers a sign-in.
    pub sign_in_available: bool,
    /// Cameras, in config order.
    pub cameras: Vec<CameraReport>,
    /// The shared detector.
    pub detector: DetectorReport,
    /// The MQTT broker link (absent without sensors).
    pub mqtt: Option<MqttReport>,
    /// Sensors, in id order.
    pub sensors: Vec<SensorReport>,
    /// The uplink to the hub.
    pub uplink: UplinkReport,
    /// The event store, its quota and the disk under it.
    pub store: StoreReport,
    /// What the events stage has done.
    pub events: EventCounts,
    /// The newest events, newest first.
    pub recent_events: Vec<EventReport>,
    /// What is dead or about to be, for the banner.
    pub problems: Vec<Problem>,
}

/// One camera.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CameraReport {
    /// Its id.
    pub id: String,
    /// `connecting`, `streaming`, `stalled` or `offline`.
    pub state: CameraState,
    /// The latest error (cleared by the next frame).
    pub last_error: Option<String>,
    /// Frames per second out of the pipeline, over the last few seconds.
    pub fps: f64,
    /// Frames per second the detector ran on, over the last few seconds.
    pub detect_fps: f64,
    /// Configured detection rate.
    pub configured_fps: f64,
    /// Frames out of the pipeline since start.
    pub frames: u64,
    /// Frames the detector ran on since start.
    pub detected: u64,
    /// Frames dropped, by reason: `motion_gated`, `superseded`, `bad_frame`, `detect_error`.
    pub drops: BTreeMap<String, u64>,
    /// Pipeline rebuilds.
    pub reconnects: u64,
    /// Observations handed to the events stage.
    pub observations: u64,
    /// When the newest kept frame was captured (Unix ms).
    pub last_frame_ms: Option<i64>,
    /// The zones' ids.
    pub zones: Vec<String>,
    /// Live tracks with the rules' explanations.
    pub tracks: Vec<TrackReport>,
}

/// One live track.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackReport {
    /// The track id.
    pub id: u64,
    /// Its label.
    pub label: String,
    /// Its latest score.
    pub score: f32,
    /// Seconds tracked.
    pub age_secs: f64,
    /// Whether it stands still.
    pub stationary: bool,
    /// Why each rule did or did not fire for it.
    pub explanations: Vec<ExplanationReport>,
}

/// One rule's verdict for a track.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExplanationReport {
    /// The rule id.
    pub rule: String,
    /// Whether it fired.
    pub fired: bool,
    /// The deciding step, in words.
    pub reason: String,
}

/// The shared detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectorReport {
    /// Mean inference time per frame over the last few seconds (pre-processing, inference,
    /// decoding), or since start when nothing ran lately.
    pub inference_ms: Option<f64>,
    /// Frames waiting for the detector.
    pub queue_len: usize,
}

/// The broker link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MqttReport {
    /// Connected now.
    pub connected: bool,
    /// Connections made.
    pub connections: u64,
    /// Failed attempts and lost connections.
    pub failures: u64,
    /// Messages on topics no sensor claims.
    pub unrouted_messages: u64,
}

/// One sensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensorReport {
    /// Its id.
    pub id: String,
    /// Its device name.
    pub device: String,
    /// Last value per quantity.
    pub values: BTreeMap<String, f64>,
    /// Battery, percent, when it reports one.
    pub battery_percent: Option<f64>,
    /// When it was last heard from (Unix ms).
    pub last_seen_ms: Option<i64>,
    /// The device's own availability announcement.
    pub online: Option<bool>,
    /// Silent for longer than expected (or announced offline, or never heard past that time).
    pub stale: bool,
    /// How much silence counts as stale, seconds.
    pub stale_after_secs: u64,
    /// Messages received.
    pub messages: u64,
    /// Readings decoded.
    pub readings: u64,
    /// Bad input by reason.
    pub bad_input: BTreeMap<String, u64>,
    /// Events raised by its rules.
    pub triggers: u64,
}

/// The uplink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UplinkReport {
    /// `disabled` (no `[uplink]`), `offline`, `catching_up`, `connected` or `revoked`.
    pub mode: UplinkMode,
    /// Round-trip time of the session, ms.
    pub rtt_ms: Option<f64>,
    /// Events not yet acknowledged by the hub.
    pub backlog_events: u64,
    /// When the oldest unacknowledged event was observed (Unix ms).
    pub oldest_unsynced_ms: Option<i64>,
    /// Its age, seconds.
    pub oldest_unsynced_age_secs: Option<u64>,
    /// Highest sequence number the hub acknowledged.
    pub acked_seq: u64,
    /// Sessions opened since start.
    pub sessions_total: u64,
    /// Why the last session ended.
    pub last_error: Option<String>,
}

/// The store and the disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreReport {
    /// Data folder.
    pub data_dir: String,
    /// Accounted bytes.
    pub usage_bytes: u64,
    /// The quota.
    pub quota_bytes: u64,
    /// Event rows.
    pub events: u64,
    /// Event rows not acknowledged.
    pub unsynced_events: u64,
    /// Evidence files.
    pub evidence_files: u64,
    /// Unsynced events lost to the quota, ever.
    pub lost_events_total: u64,
    /// Synced events evicted, ever.
    pub evicted_events_total: u64,
    /// Free bytes on the data folder's file system (for unprivileged users).
    pub disk_free_bytes: Option<u64>,
    /// Size of that file system.
    pub disk_total_bytes: Option<u64>,
}

/// The events stage's counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventCounts {
    /// Observations received.
    pub observations: u64,
    /// Events committed.
    pub committed: u64,
    /// Repeats inside the cooldown.
    pub suppressed: u64,
    /// Observations that could not become events.
    pub build_errors: u64,
    /// Events the store refused.
    pub store_errors: u64,
}

/// One stored event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventReport {
    /// Sequence number.
    pub seq: u64,
    /// Event id.
    pub id: String,
    /// Category code.
    pub category: String,
    /// Category key.
    pub category_key: Option<String>,
    /// English name.
    pub name_en: Option<String>,
    /// Chinese name.
    pub name_zh: Option<String>,
    /// Severity.
    pub severity: String,
    /// `camera`, `sensor` or `device`.
    pub source_kind: String,
    /// The source's id.
    pub source_id: String,
    /// When observed (Unix ms).
    pub observed_at_ms: i64,
    /// Whether the hub acknowledged it.
    pub synced: bool,
    /// Evidence hashes (served at `/api/evidence/{sha256}` while held).
    pub evidence: Vec<String>,
}

/// Something dead or about to be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// `camera_offline`, `camera_stalled`, `sensor_stale`, `mqtt_down`, `uplink_offline`,
    /// `uplink_revoked`, `store_nearly_full`, `disk_nearly_full`, `events_lost`.
    pub kind: String,
    /// The camera, sensor or component.
    pub subject: String,
    /// Details for a human (an error message, a percentage).
    pub detail: Option<String>,
}

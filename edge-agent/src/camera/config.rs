//! Camera configuration: the `[detector]` section and the `[[cameras]]` list with their zones
//! and rules, and the cross-field checks `Config::validate` runs on them.
//!
//! Every default is stated on its field and in `edge-agent/config/example.toml`. This module
//! must not open cameras or load models: it only describes them.

use confcheck::Problem;
use std::collections::BTreeSet;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use hardware::board::Codec;
use hardware::camera::CameraSource;
use protocol::{CameraId, Catalog, Location};
use serde::Deserialize;
pub use vision::config::{LineDirection, RuleConfig, RuleKind, TrackerConfig, ZoneConfig};

/// The `[detector]` section: the one model shared by every camera.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorConfig {
    /// A zoo name (`coco-ssd`) or a manifest `.toml`. Default `coco-ssd`.
    #[serde(default = "default_model")]
    pub model: String,
    /// The ONNX Runtime shared library. Default: `ORT_DYLIB_PATH`, then beside the binary.
    #[serde(default)]
    pub ort_library_path: Option<PathBuf>,
    /// Intra-op threads of the session. Default 1 (the other cores decode video).
    #[serde(default = "default_threads")]
    pub intra_threads: NonZeroU32,
    /// Frames per camera that may wait for the detector; when a camera's queue is full its
    /// oldest frame is dropped and counted (`superseded`), except that a file source waits for
    /// room. Default 1 (always the newest frame).
    #[serde(default = "default_queue_frames")]
    pub queue_frames: NonZeroU32,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            model: default_model(),
            ort_library_path: None,
            intra_threads: default_threads(),
            queue_frames: default_queue_frames(),
        }
    }
}

/// One `[[cameras]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// Unique id on the box (events name it). Required.
    pub id: CameraId,
    /// Where the video comes from (`kind = "rtsp" | "file" | "v4l2" | "test_pattern"`). Required.
    pub source: CameraSource,
    /// Codec of RTSP and file sources: `h264` (default) or `h265`.
    #[serde(default)]
    pub codec: Codec,
    /// Frames per second looked at (the rest are dropped right after decode). Default 5.
    #[serde(default = "default_detect_fps")]
    pub detect_fps: NonZeroU32,
    /// Width of the frames the agent works on (and evidence is cut from). Default 640.
    #[serde(default = "default_frame_width")]
    pub frame_width_px: NonZeroU32,
    /// Height of those frames. Default 360.
    #[serde(default = "default_frame_height")]
    pub frame_height_px: NonZeroU32,
    /// The camera's installed position (latitude). Default: the site's.
    #[serde(default)]
    pub lat: Option<f64>,
    /// The camera's installed position (longitude). Default: the site's.
    #[serde(default)]
    pub lon: Option<f64>,
    /// A 4-point image → map homography; when set, events are located at the object's
    /// bottom-centre. Default: none (the camera's position).
    #[serde(default)]
    pub homography: Option<HomographyConfig>,
    /// Stream health and reconnects.
    #[serde(default)]
    pub health: HealthConfig,
    /// The motion gate.
    #[serde(default)]
    pub motion: MotionConfig,
    /// The tracker.
    #[serde(default)]
    pub tracker: TrackerConfig,
    /// Zones (polygons in normalised image coordinates).
    #[serde(default)]
    pub zones: Vec<ZoneConfig>,
    /// Rules over zones and lines.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

/// `[cameras.homography]`: four image points (normalised x, y) and the map points they show.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomographyConfig {
    /// Four `[x, y]` points in normalised image coordinates (0..1, origin top-left).
    pub image: [[f64; 2]; 4],
    /// The same four points as `[lat, lon]` in the site's coordinate system.
    pub map: [[f64; 2]; 4],
}

/// `[cameras.health]`: when a camera counts as stalled or offline, and reconnect pacing.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// No frame for this long while connected: stalled, and the pipeline is rebuilt (a frozen
    /// RTSP server sends nothing for 25 s or more). Default 5 s.
    #[serde(
        default = "default_stall_after",
        rename = "stall_after_secs",
        deserialize_with = "confcheck::units::secs"
    )]
    pub stall_after: Duration,
    /// A fault (offline, or no frames) must last this long before it raises a device-fault
    /// event; the recovery after a raised fault raises `device.recovered`. Default 30 s.
    #[serde(
        default = "default_fault_debounce",
        rename = "fault_debounce_secs",
        deserialize_with = "confcheck::units::secs"
    )]
    pub fault_debounce: Duration,
    /// First reconnect delay; doubles up to `reconnect_max_ms`, with ±25 % jitter. Default 500 ms.
    #[serde(
        default = "default_reconnect_min",
        rename = "reconnect_min_ms",
        deserialize_with = "confcheck::units::millis"
    )]
    pub reconnect_min: Duration,
    /// Longest reconnect delay. Default 30 s.
    #[serde(
        default = "default_reconnect_max",
        rename = "reconnect_max_ms",
        deserialize_with = "confcheck::units::millis"
    )]
    pub reconnect_max: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            stall_after: default_stall_after(),
            fault_debounce: default_fault_debounce(),
            reconnect_min: default_reconnect_min(),
            reconnect_max: default_reconnect_max(),
        }
    }
}

/// `[cameras.motion]`: the motion gate in front of the detector.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MotionConfig {
    /// Run the detector only on motion or while a track is active. Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Grey-level difference (0–255) for a pixel of the small copy to count as changed.
    /// Default 18.
    #[serde(default = "default_pixel_threshold")]
    pub pixel_threshold: u8,
    /// Share of changed pixels that makes motion. Default 0.002.
    #[serde(default = "default_changed_ratio")]
    pub min_changed_ratio: f32,
    /// Without motion, still detect once per this period so stationary objects are
    /// confirmed. Default 5 s.
    #[serde(
        default = "default_recheck",
        rename = "recheck_secs",
        deserialize_with = "confcheck::units::secs"
    )]
    pub recheck: Duration,
}

impl Default for MotionConfig {
    fn default() -> Self {
        MotionConfig {
            enabled: true,
            pixel_threshold: default_pixel_threshold(),
            min_changed_ratio: default_changed_ratio(),
            recheck: default_recheck(),
        }
    }
}

impl CameraConfig {
    /// The camera's location: its own position if set, else the site's.
    pub fn location(&self, site: Location) -> Location {
        match (self.lat, self.lon) {
            (Some(lat), Some(lon)) => Location { lat, lon, ..site },
            _ => site,
        }
    }
}

/// Cross-field problems of the camera part, each at its key path.
pub(crate) fn problems(cameras: &[CameraConfig]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let catalog = Catalog::embedded();
    let mut ids = BTreeSet::new();
    for (c, cam) in cameras.iter().enumerate() {
        let at = format!("cameras[{c}]");
        if !ids.insert(cam.id.as_str()) {
            problems.push(Problem::at(
                format!("{at}.id"),
                format!("`{}` is used twice", cam.id),
            ));
        }
        if cam.lat.is_some() != cam.lon.is_some() {
            problems.push(Problem::at(format!("{at}.lat/lon"), "set both or neither"));
        }
        if let CameraSource::Rtsp {
            url,
            credentials_path: Some(_),
            ..
        } = &cam.source
            && hardware::camera::redact_url(url) != *url
        {
            problems.push(Problem::at(
                format!("{at}.source.url"),
                "carries credentials and credentials_path is set: keep them in the file only",
            ));
        }
        if let (Some(lat), Some(lon)) = (cam.lat, cam.lon)
            && !(Location {
                lat,
                lon,
                crs: protocol::Crs::Wgs84,
            })
            .is_valid()
        {
            problems.push(Problem::at(
                format!("{at}.lat/lon"),
                format!("({lat}, {lon}) is not a point on earth"),
            ));
        }
        if let Some(h) = &cam.homography
            && vision::Homography::from_points(&h.image, &h.map).is_none()
        {
            problems.push(Problem::at(
                format!("{at}.homography"),
                "the four image points must be distinct with no three on a line",
            ));
        }
        let health = &cam.health;
        if health.stall_after.is_zero() {
            problems.push(Problem::at(
                format!("{at}.health.stall_after_secs"),
                "must be at least 1",
            ));
        }
        if health.reconnect_min > health.reconnect_max || health.reconnect_min.is_zero() {
            problems.push(Problem::at(
                format!("{at}.health.reconnect_min_ms"),
                "must be positive and not above reconnect_max_ms",
            ));
        }
        if !(0.0..=1.0).contains(&cam.motion.min_changed_ratio) {
            problems.push(Problem::at(
                format!("{at}.motion.min_changed_ratio"),
                "must be between 0 and 1",
            ));
        }
        if !(0.0..=1.0).contains(&cam.tracker.iou_min) {
            problems.push(Problem::at(
                format!("{at}.tracker.iou_min"),
                "must be between 0 and 1",
            ));
        }
        if !(0.0..=2.0).contains(&cam.tracker.reacquire_distance_ratio) {
            problems.push(Problem::at(
                format!("{at}.tracker.reacquire_distance_ratio"),
                "must be between 0 and 2",
            ));
        }
        let mut zones = BTreeSet::new();
        for (z, zone) in cam.zones.iter().enumerate() {
            let at = format!("{at}.zones[{z}]");
            if !zones.insert(zone.id.as_str()) {
                problems.push(Problem::at(
                    format!("{at}.id"),
                    format!("`{}` is used twice", zone.id),
                ));
            }
            if zone.polygon.len() < 3 {
                problems.push(Problem::at(
                    format!("{at}.polygon"),
                    "needs at least 3 points",
                ));
            }
            if zone
                .polygon
                .iter()
                .flatten()
                .any(|v| !(0.0..=1.0).contains(v))
            {
                problems.push(Problem::at(
                    format!("{at}.polygon"),
                    "coordinates are normalised and must lie in 0..1",
                ));
            }
            if let Some([lat, lon]) = zone.location
                && !(Location {
                    lat,
                    lon,
                    crs: protocol::Crs::Wgs84,
                })
                .is_valid()
            {
                problems.push(Problem::at(
                    format!("{at}.location"),
                    format!("({lat}, {lon}) is not a point on earth"),
                ));
            }
        }
        let mut rules = BTreeSet::new();
        for (r, rule) in cam.rules.iter().enumerate() {
            let at = format!("{at}.rules[{r}]");
            if !rules.insert(rule.id.as_str()) {
                problems.push(Problem::at(
                    format!("{at}.id"),
                    format!("`{}` is used twice", rule.id),
                ));
            }
            match catalog.resolve(&rule.category) {
                Some(c) if c.code.is_minor() => {}
                _ => problems.push(Problem::at(
                    format!("{at}.category"),
                    format!("`{}` is not a minor category code or key", rule.category),
                )),
            }
            let needs_zone = rule.kind != RuleKind::LineCrossing;
            match &rule.zone {
                Some(z) if !zones.contains(z.as_str()) => {
                    problems.push(Problem::at(
                        format!("{at}.zone"),
                        format!("`{z}` is not a zone of this camera"),
                    ));
                }
                None if needs_zone => problems.push(Problem::at(
                    format!("{at}.zone"),
                    format!("required for kind = {:?}", rule.kind),
                )),
                _ => {}
            }
            if rule.kind == RuleKind::LineCrossing {
                match rule.line {
                    None => problems.push(Problem::at(
                        format!("{at}.line"),
                        "required for kind = line_crossing",
                    )),
                    Some([a, b]) if a == b => {
                        problems.push(Problem::at(
                            format!("{at}.line"),
                            "the two points must differ",
                        ));
                    }
                    Some(_) => {}
                }
            }
            for (w, window) in rule.windows.iter().enumerate() {
                if vision::TimeWindow::parse(window).is_none() {
                    problems.push(Problem::at(
                        format!("{at}.windows[{w}]"),
                        format!("`{window}` is not HH:MM-HH:MM"),
                    ));
                }
            }
            if !rule.windows.is_empty() && rule.kind != RuleKind::Intrusion {
                problems.push(Problem::at(
                    format!("{at}.windows"),
                    "only intrusion rules have windows",
                ));
            }
        }
    }
    problems
}

fn default_model() -> String {
    "coco-ssd".to_owned()
}

fn default_threads() -> NonZeroU32 {
    NonZeroU32::MIN
}

fn default_queue_frames() -> NonZeroU32 {
    NonZeroU32::MIN
}

fn default_detect_fps() -> NonZeroU32 {
    NonZeroU32::new(5).unwrap_or(NonZeroU32::MIN)
}

fn default_frame_width() -> NonZeroU32 {
    NonZeroU32::new(640).unwrap_or(NonZeroU32::MIN)
}

fn default_frame_height() -> NonZeroU32 {
    NonZeroU32::new(360).unwrap_or(NonZeroU32::MIN)
}

fn default_stall_after() -> Duration {
    Duration::from_secs(5)
}

fn default_fault_debounce() -> Duration {
    Duration::from_secs(30)
}

fn default_reconnect_min() -> Duration {
    Duration::from_millis(500)
}

fn default_reconnect_max() -> Duration {
    Duration::from_secs(30)
}

fn default_true() -> bool {
    true
}

fn default_pixel_threshold() -> u8 {
    18
}

fn default_changed_ratio() -> f32 {
    0.002
}

fn default_recheck() -> Duration {
    Duration::from_secs(5)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ConfigError};
    use hardware::board::Board;

    const EXAMPLE: &str = include_str!("../../config/example.toml");

    #[test]
    fn the_example_camera_states_every_default() {
        let config = Config::from_toml_str(EXAMPLE, "example.toml").unwrap();
        assert_eq!(config.board, Board::GenericX86);
        assert_eq!(config.detector, DetectorConfig::default());
        let cam = &config.cameras[0];
        assert_eq!(cam.health, HealthConfig::default());
        assert_eq!(cam.motion, MotionConfig::default());
        assert_eq!(cam.tracker, TrackerConfig::default());
        assert_eq!(cam.detect_fps.get(), 5);
        assert_eq!(
            (cam.frame_width_px.get(), cam.frame_height_px.get()),
            (640, 360)
        );
        assert_eq!(cam.codec, Codec::H264);
        assert!(matches!(
            cam.source,
            CameraSource::Rtsp {
                tcp: true,
                latency_ms: 200,
                tcp_timeout_ms: 5000,
                ..
            }
        ));
        assert_eq!(cam.rules.len(), 4);
        assert_eq!(cam.rules[3].min_count.get(), 8);
    }

    #[test]
    fn camera_problems_are_reported_with_their_key_paths() {
        let text = r#"
            [site]
            lat = 39.9
            lon = 116.4
            [[cameras]]
            id = "a"
            source = { kind = "rtsp", url = "rtsp://x/y" }
            [[cameras.zones]]
            id = "z"
            polygon = [[0.1, 0.1], [1.5, 0.1]]
            [[cameras.rules]]
            id = "r1"
            kind = "dwell"
            category = "no.such"
            zone = "nowhere"
            [[cameras.rules]]
            id = "r2"
            kind = "line_crossing"
            category = "street_order.intrusion"
            windows = ["25:00-01:00"]
            [[cameras]]
            id = "a"
            source = { kind = "test_pattern" }
        "#;
        let Err(ConfigError::Invalid { problems, .. }) = Config::from_toml_str(text, "t") else {
            panic!("expected an invalid config");
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "cameras[0].zones[0].polygon",
                "cameras[0].zones[0].polygon",
                "cameras[0].rules[0].category",
                "cameras[0].rules[0].zone",
                "cameras[0].rules[1].line",
                "cameras[0].rules[1].windows[0]",
                "cameras[0].rules[1].windows",
                "cameras[1].id",
            ]
        );
    }

    #[test]
    fn unknown_camera_keys_are_refused() {
        let text = "[site]\nlat = 1.0\nlon = 2.0\n[[cameras]]\nid = \"a\"\nsource = { kind = \"test_pattern\" }\nfps = 5\n";
        assert!(matches!(
            Config::from_toml_str(text, "t"),
            Err(ConfigError::Parse { .. })
        ));
    }
}

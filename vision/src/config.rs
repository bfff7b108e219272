//! The configuration of what a camera's boxes mean: `[cameras.tracker]`, `[[cameras.zones]]`
//! and `[[cameras.rules]]` (the agent's camera section embeds them). Types and defaults only;
//! checks that need the catalog or the other sections are the agent's `camera` config's.

use std::num::NonZeroU32;
use std::time::Duration;

use protocol::{GridCode, Severity};
use serde::Deserialize;

/// `[cameras.tracker]`: the IoU tracker.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackerConfig {
    /// Least IoU between a track's predicted box and a detection to match. Default 0.3.
    #[serde(default = "default_iou_min")]
    pub iou_min: f32,
    /// Detections a track needs before rules see it. Default 2.
    #[serde(default = "default_min_hits")]
    pub min_hits: NonZeroU32,
    /// A track unseen for this long is dropped. Default 3 s.
    #[serde(
        default = "default_max_missed",
        rename = "max_missed_secs",
        deserialize_with = "confcheck::units::secs"
    )]
    pub max_missed: Duration,
    /// A track whose centre stays within `stationary_tolerance_ratio` of its box size for this
    /// long is stationary. Default 10 s.
    #[serde(
        default = "default_stationary_after",
        rename = "stationary_after_secs",
        deserialize_with = "confcheck::units::secs"
    )]
    pub stationary_after: Duration,
    /// Movement (relative to the box's larger side) still counted as standing still.
    /// Default 0.15.
    #[serde(default = "default_stationary_tolerance")]
    pub stationary_tolerance_ratio: f32,
    /// A detection that matches no track by IoU continues an unmatched track of its label when
    /// its bottom-centre lies within this share of the box height of where the track's
    /// bottom-centre is predicted, and its size is alike (0 turns this off). Default 0.5.
    #[serde(default = "default_reacquire_distance")]
    pub reacquire_distance_ratio: f32,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            iou_min: default_iou_min(),
            min_hits: default_min_hits(),
            max_missed: default_max_missed(),
            stationary_after: default_stationary_after(),
            stationary_tolerance_ratio: default_stationary_tolerance(),
            reacquire_distance_ratio: default_reacquire_distance(),
        }
    }
}

/// One `[[cameras.zones]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    /// Unique id within the camera. Required.
    pub id: String,
    /// At least three `[x, y]` vertices in normalised image coordinates. Required.
    pub polygon: Vec<[f32; 2]>,
    /// Detector labels that count in this zone. Default: all.
    #[serde(default)]
    pub classes: Vec<String>,
    /// Least detection score. Default 0 (the model's own threshold applies).
    #[serde(default)]
    pub min_score: f32,
    /// Least box height as a share of the frame height (ignores far-away specks). Default 0.
    #[serde(default)]
    pub min_height_ratio: f32,
    /// Grid code stamped on events of this zone. Default: the box's.
    #[serde(default)]
    pub grid: Option<GridCode>,
    /// Fixed location of events in this zone (`[lat, lon]`). Default: homography or camera.
    #[serde(default)]
    pub location: Option<[f64; 2]>,
}

/// What a rule watches for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// An object in the zone for at least `dwell_secs` (illegal parking, loitering).
    Dwell,
    /// An object in the zone during one of `windows`.
    Intrusion,
    /// An object crossing `line` in `direction`; crossings are counted per direction.
    LineCrossing,
    /// At least `min_count` objects in the zone for at least `dwell_secs`.
    Crowding,
}

/// Which crossings of a line count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineDirection {
    /// Both directions.
    #[default]
    Any,
    /// From the left of the line (seen from its first point towards its second) to the right.
    LeftToRight,
    /// From the right to the left.
    RightToLeft,
}

/// One `[[cameras.rules]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique id within the camera (events carry it as `rule`). Required.
    pub id: String,
    /// The kind. Required.
    pub kind: RuleKind,
    /// Category code or key from the catalog (`edge-agent categories`). Required.
    pub category: String,
    /// Severity; default the category's.
    #[serde(default)]
    pub severity: Option<Severity>,
    /// The zone (required for dwell, intrusion and crowding).
    #[serde(default)]
    pub zone: Option<String>,
    /// Labels the rule applies to. Default: the zone's classes (or all).
    #[serde(default)]
    pub classes: Vec<String>,
    /// Dwell time (dwell) or hold time (crowding). Default 60 s.
    #[serde(
        default = "default_dwell",
        rename = "dwell_secs",
        deserialize_with = "confcheck::units::secs"
    )]
    pub dwell: Duration,
    /// Intrusion windows as `"HH:MM-HH:MM"` in local time (may wrap midnight). Default: always.
    #[serde(default)]
    pub windows: Vec<String>,
    /// Offset of local time from UTC in minutes, for `windows`. Default 480 (China).
    #[serde(default = "default_utc_offset")]
    pub utc_offset_mins: i32,
    /// The line, two `[x, y]` points in normalised image coordinates (line_crossing).
    #[serde(default)]
    pub line: Option<[[f32; 2]; 2]>,
    /// Crossings that raise events (line_crossing). Default `any`.
    #[serde(default)]
    pub direction: LineDirection,
    /// Objects needed (crowding). Default 5.
    #[serde(default = "default_min_count")]
    pub min_count: NonZeroU32,
}

fn default_iou_min() -> f32 {
    0.3
}

fn default_min_hits() -> NonZeroU32 {
    NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN)
}

fn default_max_missed() -> Duration {
    Duration::from_secs(3)
}

fn default_stationary_after() -> Duration {
    Duration::from_secs(10)
}

fn default_stationary_tolerance() -> f32 {
    0.15
}

fn default_reacquire_distance() -> f32 {
    0.5
}

fn default_dwell() -> Duration {
    Duration::from_secs(60)
}

fn default_utc_offset() -> i32 {
    480
}

fn default_min_count() -> NonZeroU32 {
    NonZeroU32::new(5).unwrap_or(NonZeroU32::MIN)
}

//! The `[events]` section: how observations become events (cooldown, the device time window)
//! and how evidence snapshots are rendered. Types, defaults and the section's own checks; the
//! agent's `config` composes it.

use confcheck::Problem;
use std::collections::BTreeSet;
use std::time::Duration;

use protocol::Catalog;
use serde::Deserialize;

use confcheck::units;

/// The `[events]` section: how observations become events.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// A repeat of the same (source, rule, zone, track) within this time raises no new event.
    /// Default 300 s.
    #[serde(
        default = "default_cooldown",
        rename = "cooldown_secs",
        deserialize_with = "units::secs"
    )]
    pub cooldown: Duration,
    /// An observation whose time (a sensor's own clock) is further than this from the box
    /// clock, either way, is given the box's time; its own time is kept in the event's
    /// `device_observed_at_ms` attribute. Default 86400 s (a day).
    #[serde(
        default = "default_time_window",
        rename = "time_window_secs",
        deserialize_with = "units::secs"
    )]
    pub time_window: Duration,
    /// Evidence snapshots.
    #[serde(default)]
    pub evidence: EvidenceConfig,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            cooldown: default_cooldown(),
            time_window: default_time_window(),
            evidence: EvidenceConfig::default(),
        }
    }
}

/// The `[events.evidence]` section: snapshot rendering and privacy.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceConfig {
    /// JPEG quality, 1 to 100. Default 80.
    #[serde(default = "default_jpeg_quality")]
    pub jpeg_quality: u8,
    /// Blur persons (and faces, where a face model is configured) in evidence. Default true.
    #[serde(default = "default_true")]
    pub privacy_blur: bool,
    /// Box-blur radius in pixels of the model-independent blur. Default 12.
    #[serde(default = "default_blur_radius_px")]
    pub blur_radius_px: u32,
    /// Category codes or keys whose evidence keeps persons visible (e.g. `emergency.person_fallen`).
    /// Default: none.
    #[serde(default)]
    pub unblurred_categories: Vec<String>,
}

impl Default for EvidenceConfig {
    fn default() -> Self {
        EvidenceConfig {
            jpeg_quality: default_jpeg_quality(),
            privacy_blur: true,
            blur_radius_px: default_blur_radius_px(),
            unblurred_categories: Vec::new(),
        }
    }
}

impl EventsConfig {
    /// The section's problems, as `events.key: problem` lines.
    pub fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let ev = &self.evidence;
        if !(1..=100).contains(&ev.jpeg_quality) {
            problems.push(Problem::at(
                "events.evidence.jpeg_quality",
                format!("{} is not between 1 and 100", ev.jpeg_quality),
            ));
        }
        if ev.privacy_blur && ev.blur_radius_px == 0 {
            problems.push(Problem::at(
                "events.evidence.blur_radius_px",
                "must be at least 1 while privacy_blur is on",
            ));
        }
        let catalog = Catalog::embedded();
        let mut seen = BTreeSet::new();
        for (i, name) in ev.unblurred_categories.iter().enumerate() {
            match catalog.resolve(name) {
                None => problems.push(Problem::at(
                    format!("events.evidence.unblurred_categories[{i}]"),
                    format!("`{name}` is not a category code or key"),
                )),
                Some(c) if !seen.insert(c.code.clone()) => problems.push(Problem::at(
                    format!("events.evidence.unblurred_categories[{i}]"),
                    format!("`{name}` names category {} twice", c.code),
                )),
                Some(_) => {}
            }
        }
        problems
    }
}

fn default_cooldown() -> Duration {
    Duration::from_secs(300)
}

fn default_time_window() -> Duration {
    Duration::from_secs(86_400)
}

fn default_jpeg_quality() -> u8 {
    80
}

fn default_blur_radius_px() -> u32 {
    12
}

fn default_true() -> bool {
    true
}

//! Zones: polygons in normalised image coordinates. An object is in a zone when its box's
//! bottom-centre (where it stands) lies inside the polygon and it passes the zone's class,
//! score and size filters.
//!
//! Pure geometry and filters; this module must not keep per-track state (rules do).

use protocol::GridCode;

use super::Track;
use crate::config::ZoneConfig;

/// A zone ready to test tracks against.
#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    /// Id within the camera.
    pub id: String,
    /// Vertices (normalised).
    pub polygon: Vec<(f32, f32)>,
    /// Labels that count (empty: all).
    pub classes: Vec<String>,
    /// Least score.
    pub min_score: f32,
    /// Least box height (share of the frame).
    pub min_height_ratio: f32,
    /// Grid code for events of this zone.
    pub grid: Option<GridCode>,
    /// Fixed `(lat, lon)` for events of this zone.
    pub location: Option<(f64, f64)>,
}

/// How a track relates to a zone (the zone step of a rule's explanation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// Standing inside and passing every filter.
    Inside,
    /// Its bottom-centre is outside the polygon.
    Outside,
    /// Its label is not one of the zone's classes.
    OtherClass,
    /// Its score is below the zone's minimum.
    LowScore,
    /// Its box is smaller than the zone's minimum height.
    TooSmall,
}

impl Zone {
    /// The zone of a config entry.
    pub fn from_config(config: &ZoneConfig) -> Zone {
        Zone {
            id: config.id.clone(),
            polygon: config.polygon.iter().map(|[x, y]| (*x, *y)).collect(),
            classes: config.classes.clone(),
            min_score: config.min_score,
            min_height_ratio: config.min_height_ratio,
            grid: config.grid.clone(),
            location: config.location.map(|[lat, lon]| (lat, lon)),
        }
    }

    /// Where `track` stands relative to this zone.
    pub fn membership(&self, track: &Track) -> Membership {
        if !self.classes.is_empty() && !self.classes.contains(&track.label) {
            Membership::OtherClass
        } else if track.score < self.min_score {
            Membership::LowScore
        } else if track.bbox.height() < self.min_height_ratio {
            Membership::TooSmall
        } else if !self.contains(track.foot()) {
            Membership::Outside
        } else {
            Membership::Inside
        }
    }

    /// Whether a point lies inside the polygon (even-odd rule).
    pub fn contains(&self, (x, y): (f32, f32)) -> bool {
        let mut inside = false;
        let n = self.polygon.len();
        for i in 0..n {
            let (xi, yi) = self.polygon[i];
            let (xj, yj) = self.polygon[(i + n - 1) % n];
            if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
                inside = !inside;
            }
        }
        inside
    }

    /// The polygon in pixels of a `width` × `height` frame.
    pub fn pixels(&self, width: u32, height: u32) -> Vec<(u32, u32)> {
        self.polygon
            .iter()
            .map(|(x, y)| {
                (
                    (x.clamp(0.0, 1.0) * width as f32) as u32,
                    (y.clamp(0.0, 1.0) * height as f32) as u32,
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NormBox;
    use crate::tracker::{NormDetection, Tracker};
    use std::time::Instant;

    fn track(label: &str, score: f32, bbox: NormBox) -> Track {
        let mut tracker = Tracker::new(Default::default());
        tracker.update(
            &[NormDetection {
                label: label.into(),
                score,
                bbox,
            }],
            Instant::now(),
        );
        tracker.tracks()[0].clone()
    }

    fn zone() -> Zone {
        Zone::from_config(&ZoneConfig {
            id: "kerb".into(),
            polygon: vec![[0.2, 0.5], [0.8, 0.5], [0.8, 1.0], [0.2, 1.0]],
            classes: vec!["motorcycle".into(), "bicycle".into()],
            min_score: 0.5,
            min_height_ratio: 0.1,
            grid: None,
            location: None,
        })
    }

    #[test]
    fn membership_is_decided_by_the_bottom_centre_and_the_filters() {
        let z = zone();
        // Box mostly above the zone but standing in it.
        assert_eq!(
            z.membership(&track("motorcycle", 0.9, NormBox::new(0.4, 0.1, 0.6, 0.6))),
            Membership::Inside
        );
        // Box overlapping the zone but standing outside it.
        assert_eq!(
            z.membership(&track("motorcycle", 0.9, NormBox::new(0.7, 0.3, 0.95, 0.7))),
            Membership::Outside
        );
        let inside = NormBox::new(0.4, 0.5, 0.6, 0.9);
        assert_eq!(
            z.membership(&track("car", 0.9, inside)),
            Membership::OtherClass
        );
        assert_eq!(
            z.membership(&track("bicycle", 0.3, inside)),
            Membership::LowScore
        );
        assert_eq!(
            z.membership(&track("bicycle", 0.9, NormBox::new(0.4, 0.85, 0.45, 0.9))),
            Membership::TooSmall
        );
    }

    #[test]
    fn concave_polygons_are_handled() {
        let mut z = zone();
        z.polygon = vec![(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 0.5), (0.0, 1.0)];
        assert!(z.contains((0.5, 0.3)));
        assert!(!z.contains((0.5, 0.8)));
        assert_eq!(z.pixels(100, 50)[2], (100, 50));
    }
}

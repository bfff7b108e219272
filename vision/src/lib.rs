//! Vision: what the detector's boxes mean for one camera.
//!
//! - [`tracker`]: SORT-style IoU tracker with stable ids, velocity and a stationary flag;
//! - [`zone`]: polygons in normalised image coordinates; membership by the box's bottom-centre,
//!   with per-zone classes, minimum score and size;
//! - [`rules`]: dwell, intrusion (time windows), line crossing (direction, counts), crowding,
//!   with stationary suppression; each rule explains, per track, why it fired or not;
//! - [`location`]: the camera's position, or a 4-point image → map homography.
//!
//! - [`config`]: the `[cameras.tracker]`, `[[cameras.zones]]` and `[[cameras.rules]]` sections.
//!
//! Everything here is a pure core: frames' times come in as `now`, nothing blocks, nothing
//! talks to GStreamer, the detector or the store, and the crate must not depend on any crate
//! that does (its tests build without them). The agent's camera stage feeds it and turns its
//! firings into observations.

pub mod config;
pub mod location;
pub mod rules;
pub mod tracker;
pub mod zone;

pub use location::Homography;
pub use rules::{Explanation, Firing, RuleEngine, TimeWindow};
pub use tracker::{NormDetection, Track, Tracker};
pub use zone::{Membership, Zone};

/// An axis-aligned box in normalised frame coordinates (0..1, origin top-left).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NormBox {
    /// Left.
    pub x1: f32,
    /// Top.
    pub y1: f32,
    /// Right.
    pub x2: f32,
    /// Bottom.
    pub y2: f32,
}

impl NormBox {
    /// A box from its corners (reordered if needed).
    pub fn new(x1: f32, y1: f32, x2: f32, y2: f32) -> Self {
        NormBox {
            x1: x1.min(x2),
            y1: y1.min(y2),
            x2: x1.max(x2),
            y2: y1.max(y2),
        }
    }

    /// A box given in frame pixels (`[x1, y1, x2, y2]`), normalised by the frame size.
    pub fn from_pixels(corners: [f32; 4], width: u32, height: u32) -> Self {
        let (w, h) = (width.max(1) as f32, height.max(1) as f32);
        NormBox::new(
            corners[0] / w,
            corners[1] / h,
            corners[2] / w,
            corners[3] / h,
        )
    }

    /// Width.
    pub fn width(&self) -> f32 {
        self.x2 - self.x1
    }

    /// Height.
    pub fn height(&self) -> f32 {
        self.y2 - self.y1
    }

    /// Centre.
    pub fn center(&self) -> (f32, f32) {
        ((self.x1 + self.x2) / 2.0, (self.y1 + self.y2) / 2.0)
    }

    /// Bottom-centre: where the object stands.
    pub fn foot(&self) -> (f32, f32) {
        ((self.x1 + self.x2) / 2.0, self.y2)
    }

    /// The box moved by (dx, dy).
    pub fn shifted(&self, dx: f32, dy: f32) -> NormBox {
        NormBox {
            x1: self.x1 + dx,
            y1: self.y1 + dy,
            x2: self.x2 + dx,
            y2: self.y2 + dy,
        }
    }

    /// Intersection over union, 0 for disjoint or empty boxes.
    pub fn iou(&self, other: &NormBox) -> f32 {
        let iw = (self.x2.min(other.x2) - self.x1.max(other.x1)).max(0.0);
        let ih = (self.y2.min(other.y2) - self.y1.max(other.y1)).max(0.0);
        let inter = iw * ih;
        let union = self.width() * self.height() + other.width() * other.height() - inter;
        if union <= 0.0 { 0.0 } else { inter / union }
    }
}

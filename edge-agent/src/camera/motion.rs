//! The motion gate: cheap frame differencing on a small grey copy decides whether a frame is
//! worth the detector.
//!
//! A frame passes when enough of the small copy changed since the previous frame, while a track
//! is active (objects must keep being detected to be tracked), or when the last pass is older
//! than `recheck` (so stationary objects are confirmed and dwell rules keep counting).
//!
//! Pure core: the frame and `now` come in; no GStreamer, no detector.

use std::time::Instant;

use crate::camera::config::MotionConfig;

/// Width of the grey copy.
const SMALL_W: usize = 64;
/// Height of the grey copy.
const SMALL_H: usize = 36;

/// Why a frame passes or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateDecision {
    /// Gating is off.
    Always,
    /// Enough pixels changed.
    Motion,
    /// A track is active.
    ActiveTrack,
    /// The periodic re-check is due.
    Recheck,
    /// Nothing changed: skip the detector.
    Still,
}

impl GateDecision {
    /// Whether the frame goes to the detector.
    pub fn passes(self) -> bool {
        self != GateDecision::Still
    }
}

/// The gate of one camera.
#[derive(Debug)]
pub struct MotionGate {
    config: MotionConfig,
    previous: Vec<u8>,
    last_pass: Option<Instant>,
}

impl MotionGate {
    /// A gate with no previous frame (the first frame passes).
    pub fn new(config: MotionConfig) -> Self {
        MotionGate {
            config,
            previous: Vec::new(),
            last_pass: None,
        }
    }

    /// Decides for an RGB frame (`width` × `height`, tightly packed) at `now`.
    pub fn decide(
        &mut self,
        rgb: &[u8],
        width: u32,
        height: u32,
        now: Instant,
        track_active: bool,
    ) -> GateDecision {
        if !self.config.enabled {
            return GateDecision::Always;
        }
        let small = shrink(rgb, width as usize, height as usize);
        let changed = if self.previous.len() == small.len() {
            let threshold = self.config.pixel_threshold;
            let n = small
                .iter()
                .zip(&self.previous)
                .filter(|(a, b)| a.abs_diff(**b) > threshold)
                .count();
            n as f32 / small.len().max(1) as f32
        } else {
            1.0
        };
        self.previous = small;
        let decision = if changed >= self.config.min_changed_ratio && changed > 0.0 {
            GateDecision::Motion
        } else if track_active {
            GateDecision::ActiveTrack
        } else if self
            .last_pass
            .is_none_or(|t| now.saturating_duration_since(t) >= self.config.recheck)
        {
            GateDecision::Recheck
        } else {
            GateDecision::Still
        };
        if decision.passes() {
            self.last_pass = Some(now);
        }
        decision
    }
}

/// A `SMALL_W` × `SMALL_H` grey copy, each cell the mean luma of a sparse sample of its block.
fn shrink(rgb: &[u8], width: usize, height: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(SMALL_W * SMALL_H);
    if width == 0 || height == 0 || rgb.len() < width * height * 3 {
        return out;
    }
    for cy in 0..SMALL_H {
        let (y0, y1) = (
            cy * height / SMALL_H,
            ((cy + 1) * height / SMALL_H).max(cy * height / SMALL_H + 1),
        );
        for cx in 0..SMALL_W {
            let (x0, x1) = (
                cx * width / SMALL_W,
                ((cx + 1) * width / SMALL_W).max(cx * width / SMALL_W + 1),
            );
            let (mut sum, mut n) = (0u32, 0u32);
            for y in (y0..y1.min(height)).step_by(2) {
                for x in (x0..x1.min(width)).step_by(2) {
                    let i = (y * width + x) * 3;
                    sum +=
                        (u32::from(rgb[i]) + 2 * u32::from(rgb[i + 1]) + u32::from(rgb[i + 2])) / 4;
                    n += 1;
                }
            }
            out.push(u8::try_from(sum / n.max(1)).unwrap_or(u8::MAX));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn frame(square_at: usize) -> Vec<u8> {
        let (w, h) = (320, 180);
        let mut rgb = vec![40u8; w * h * 3];
        for y in 60..100 {
            for x in square_at..square_at + 40 {
                let i = (y * w + x) * 3;
                rgb[i..i + 3].copy_from_slice(&[250, 250, 250]);
            }
        }
        rgb
    }

    #[test]
    fn a_still_scene_is_skipped_until_the_recheck_and_motion_passes() {
        let t0 = Instant::now();
        let mut gate = MotionGate::new(MotionConfig::default());
        let at = |s: u64| t0 + Duration::from_millis(s);
        assert!(gate.decide(&frame(50), 320, 180, at(0), false).passes());
        assert_eq!(
            gate.decide(&frame(50), 320, 180, at(200), false),
            GateDecision::Still
        );
        assert_eq!(
            gate.decide(&frame(50), 320, 180, at(400), true),
            GateDecision::ActiveTrack
        );
        assert_eq!(
            gate.decide(&frame(50), 320, 180, at(4000), false),
            GateDecision::Still
        );
        assert_eq!(
            gate.decide(&frame(50), 320, 180, at(5400), false),
            GateDecision::Recheck
        );
        assert_eq!(
            gate.decide(&frame(90), 320, 180, at(5600), false),
            GateDecision::Motion
        );
    }

    #[test]
    fn a_disabled_gate_passes_everything() {
        let mut gate = MotionGate::new(MotionConfig {
            enabled: false,
            ..MotionConfig::default()
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(
                gate.decide(&frame(50), 320, 180, t0, false),
                GateDecision::Always
            );
        }
    }
}

//! The per-camera tracker: SORT-style greedy IoU matching of detections to tracks whose boxes
//! are predicted forward with a constant velocity, then a second, motion-gated stage for what
//! is left: a detection whose bottom-centre lies near where an unmatched track's bottom-centre
//! is predicted (within `reacquire_distance_ratio` of the box height, sizes alike) continues
//! that track. At a detection rate of a few frames per second a person walking across the
//! near field moves more than a box width between the frames the detector finds them in, so
//! boxes stop overlapping while the object is plainly the same; without the second stage it
//! would get a new id at every gap, and line crossings across such a gap would be lost.
//!
//! A track keeps a stable id for as long as it is matched at least once per `max_missed`;
//! it carries its age, hits, velocity (normalised units per second, smoothed) and a stationary
//! flag (its centre stayed within a tolerance of an anchor for `stationary_after`). Matching is
//! within a label; the best IoU pairs are taken first.
//!
//! Pure core: time comes in as `now`; no clocks, channels or logging above `trace`.

use std::time::{Duration, Instant};

use super::NormBox;
use crate::config::TrackerConfig;

/// One detection in normalised frame coordinates.
#[derive(Debug, Clone, PartialEq)]
pub struct NormDetection {
    /// Detector label.
    pub label: String,
    /// Score, 0 to 1.
    pub score: f32,
    /// Box in 0..1 coordinates.
    pub bbox: NormBox,
}

/// A tracked object.
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    /// Stable id within the camera (never reused while the agent runs).
    pub id: u64,
    /// Label of the latest matched detection.
    pub label: String,
    /// Score of the latest matched detection.
    pub score: f32,
    /// Latest box.
    pub bbox: NormBox,
    /// The bottom-centre before the latest update (for line crossing).
    pub previous_foot: Option<(f32, f32)>,
    /// First detection.
    pub first_seen: Instant,
    /// Latest detection.
    pub last_seen: Instant,
    /// Detections matched so far.
    pub hits: u32,
    /// Smoothed velocity of the centre in normalised units per second.
    pub velocity: (f32, f32),
    /// Whether the track stood still for `stationary_after`.
    pub stationary: bool,
    /// Whether the track was matched by the latest update.
    pub seen_now: bool,
    anchor: (f32, f32),
    anchor_since: Instant,
}

impl Track {
    /// Time since the first detection.
    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.first_seen)
    }

    /// The box's bottom-centre, the point that decides zone membership.
    pub fn foot(&self) -> (f32, f32) {
        self.bbox.foot()
    }
}

/// The tracker of one camera.
#[derive(Debug)]
pub struct Tracker {
    config: TrackerConfig,
    tracks: Vec<Track>,
    next_id: u64,
}

/// Takes `(score, track, detection)` pairs in the given order, each whose track and detection
/// are both still free, and marks them taken: greedy one-to-one matching.
fn claim(
    pairs: Vec<(f32, usize, usize)>,
    track_taken: &mut [bool],
    det_taken: &mut [bool],
) -> Vec<(usize, usize)> {
    let mut claimed = Vec::new();
    for (_, t, d) in pairs {
        if !track_taken[t] && !det_taken[d] {
            track_taken[t] = true;
            det_taken[d] = true;
            claimed.push((t, d));
        }
    }
    claimed
}

impl Tracker {
    /// An empty tracker.
    pub fn new(config: TrackerConfig) -> Self {
        Tracker {
            config,
            tracks: Vec::new(),
            next_id: 1,
        }
    }

    /// Matches `detections` (seen at `now`) to the tracks, starts tracks for the rest and drops
    /// tracks unseen for `max_missed`. Returns every live track.
    pub fn update(&mut self, detections: &[NormDetection], now: Instant) -> &[Track] {
        // Where each track is expected now, from its velocity.
        let predicted: Vec<NormBox> = self
            .tracks
            .iter()
            .map(|track| {
                let dt = now.saturating_duration_since(track.last_seen).as_secs_f32();
                track
                    .bbox
                    .shifted(track.velocity.0 * dt, track.velocity.1 * dt)
            })
            .collect();
        let mut pairs = Vec::new();
        for (t, track) in self.tracks.iter().enumerate() {
            for (d, det) in detections.iter().enumerate() {
                if det.label != track.label {
                    continue;
                }
                let iou = predicted[t].iou(&det.bbox).max(track.bbox.iou(&det.bbox));
                if iou >= self.config.iou_min {
                    pairs.push((iou, t, d));
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut track_taken = vec![false; self.tracks.len()];
        let mut det_taken = vec![false; detections.len()];
        for track in &mut self.tracks {
            track.seen_now = false;
        }
        for (t, d) in claim(pairs, &mut track_taken, &mut det_taken) {
            self.tracks[t].observe(&detections[d], now, &self.config);
        }
        // Second stage: unmatched tracks and detections by the distance of the detection's
        // bottom-centre to the track's predicted one, closest pairs first.
        let ratio = self.config.reacquire_distance_ratio;
        let mut near = Vec::new();
        if ratio > 0.0 {
            for (t, track) in self.tracks.iter().enumerate() {
                if track_taken[t] {
                    continue;
                }
                let (px, py) = predicted[t].foot();
                let height = track.bbox.height();
                for (d, det) in detections.iter().enumerate() {
                    if det_taken[d] || det.label != track.label {
                        continue;
                    }
                    let det_height = det.bbox.height();
                    if det_height < height * 2.0 / 3.0 || det_height > height * 1.5 {
                        continue;
                    }
                    let (dx, dy) = det.bbox.foot();
                    let distance = ((dx - px).powi(2) + (dy - py).powi(2)).sqrt();
                    if distance <= ratio * height.max(det_height) {
                        near.push((distance, t, d));
                    }
                }
            }
        }
        near.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (t, d) in claim(near, &mut track_taken, &mut det_taken) {
            self.tracks[t].observe(&detections[d], now, &self.config);
        }
        let max_missed = self.config.max_missed;
        self.tracks
            .retain(|t| now.saturating_duration_since(t.last_seen) <= max_missed);
        for (d, det) in detections.iter().enumerate() {
            if det_taken[d] {
                continue;
            }
            let center = det.bbox.center();
            self.tracks.push(Track {
                id: self.next_id,
                label: det.label.clone(),
                score: det.score,
                bbox: det.bbox,
                previous_foot: None,
                first_seen: now,
                last_seen: now,
                hits: 1,
                velocity: (0.0, 0.0),
                stationary: false,
                seen_now: true,
                anchor: center,
                anchor_since: now,
            });
            self.next_id += 1;
        }
        &self.tracks
    }

    /// Live tracks.
    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    /// Whether a track is confirmed (enough hits for rules to see it).
    pub fn is_confirmed(&self, track: &Track) -> bool {
        track.hits >= self.config.min_hits.get()
    }

    /// Whether any track is alive (the motion gate keeps detecting while one is).
    pub fn has_tracks(&self) -> bool {
        !self.tracks.is_empty()
    }
}

impl Track {
    fn observe(&mut self, det: &NormDetection, now: Instant, config: &TrackerConfig) {
        let dt = now.saturating_duration_since(self.last_seen).as_secs_f32();
        let (old, new) = (self.bbox.center(), det.bbox.center());
        if dt > 0.0 {
            let v = ((new.0 - old.0) / dt, (new.1 - old.1) / dt);
            self.velocity = (
                0.5 * self.velocity.0 + 0.5 * v.0,
                0.5 * self.velocity.1 + 0.5 * v.1,
            );
        }
        self.previous_foot = Some(self.bbox.foot());
        self.bbox = det.bbox;
        self.label.clone_from(&det.label);
        self.score = det.score;
        self.last_seen = now;
        self.hits = self.hits.saturating_add(1);
        self.seen_now = true;
        let size = det.bbox.width().max(det.bbox.height());
        let moved = ((new.0 - self.anchor.0).powi(2) + (new.1 - self.anchor.1).powi(2)).sqrt();
        if moved > config.stationary_tolerance_ratio * size {
            self.anchor = new;
            self.anchor_since = now;
        }
        self.stationary =
            now.saturating_duration_since(self.anchor_since) >= config.stationary_after;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(label: &str, x: f32, y: f32) -> NormDetection {
        NormDetection {
            label: label.into(),
            score: 0.9,
            bbox: NormBox::new(x, y, x + 0.1, y + 0.2),
        }
    }

    fn config() -> TrackerConfig {
        TrackerConfig {
            stationary_after: Duration::from_secs(3),
            ..TrackerConfig::default()
        }
    }

    #[test]
    fn a_moving_object_keeps_its_id_and_gets_a_velocity() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new(config());
        for i in 0..10u16 {
            let x = 0.1 + f32::from(i) * 0.02;
            tracker.update(
                &[det("car", x, 0.5)],
                t0 + Duration::from_millis(200 * u64::from(i)),
            );
        }
        let tracks = tracker.tracks();
        assert_eq!(tracks.len(), 1);
        assert_eq!(tracks[0].id, 1);
        assert_eq!(tracks[0].hits, 10);
        assert!(
            (tracks[0].velocity.0 - 0.1).abs() < 0.01,
            "{:?}",
            tracks[0].velocity
        );
        assert!(!tracks[0].stationary);
    }

    #[test]
    fn two_objects_get_distinct_ids_and_labels_do_not_mix() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new(config());
        tracker.update(&[det("car", 0.1, 0.1), det("person", 0.1, 0.1)], t0);
        let ids: Vec<u64> = tracker.tracks().iter().map(|t| t.id).collect();
        assert_eq!(ids, [1, 2]);
        tracker.update(
            &[det("person", 0.11, 0.1), det("car", 0.1, 0.11)],
            t0 + Duration::from_millis(200),
        );
        for t in tracker.tracks() {
            assert_eq!(t.hits, 2);
            assert_eq!(t.label, if t.id == 1 { "car" } else { "person" });
        }
    }

    #[test]
    fn a_walker_missed_for_a_few_frames_keeps_its_id_when_it_reappears_where_it_was_heading() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // A person 0.1 wide walking 0.35 of the frame per second, seen at 5 fps...
        let walker = |ms: u64| det("person", 0.2 + 0.35 * ms as f32 / 1000.0, 0.6);
        let mut tracker = Tracker::new(config());
        for ms in [0, 200, 400] {
            tracker.update(&[walker(ms)], at(ms));
        }
        // ...missed for three frames: 0.28 further on, its box overlaps neither the last one
        // nor (enough) the one predicted from its smoothed velocity.
        for ms in [600, 800, 1000] {
            tracker.update(&[], at(ms));
        }
        let other = det("person", 0.45, 0.0);
        tracker.update(&[walker(1200), other], at(1200));
        let ids: Vec<(u64, u32)> = tracker.tracks().iter().map(|t| (t.id, t.hits)).collect();
        assert_eq!(ids, [(1, 4), (2, 1)], "the walker continues track 1");
        // Without the second stage it would have been a new track (at this speed even the
        // boxes of consecutive frames overlap too little).
        let mut iou_only = Tracker::new(TrackerConfig {
            reacquire_distance_ratio: 0.0,
            ..config()
        });
        for ms in [0, 200, 400] {
            iou_only.update(&[walker(ms)], at(ms));
        }
        iou_only.update(&[walker(1200)], at(1200));
        let seen: Vec<(u64, u32)> = iou_only
            .tracks()
            .iter()
            .filter(|t| t.seen_now)
            .map(|t| (t.id, t.hits))
            .collect();
        assert_eq!(seen, [(4, 1)]);
    }

    #[test]
    fn a_still_object_becomes_stationary_and_a_lost_one_is_dropped_after_max_missed() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new(config());
        for s in 0..4 {
            tracker.update(&[det("motorcycle", 0.4, 0.4)], t0 + Duration::from_secs(s));
        }
        assert!(tracker.tracks()[0].stationary);
        tracker.update(&[], t0 + Duration::from_secs(5));
        assert_eq!(tracker.tracks().len(), 1, "kept within max_missed");
        tracker.update(&[], t0 + Duration::from_secs(7));
        assert!(tracker.tracks().is_empty());
        tracker.update(&[det("motorcycle", 0.4, 0.4)], t0 + Duration::from_secs(8));
        assert_eq!(tracker.tracks()[0].id, 2, "ids are never reused");
    }
}

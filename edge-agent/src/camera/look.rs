//! Looking through a camera on request: the hub's re-check of a case and a sensor rule's
//! confirming snapshot both need "what does camera X see now?".
//!
//! A [`Looker`] (cloneable, from [`super::CameraStage::looker`]) sends a request to the detector
//! thread, which owns the one detector: between two queued frames it takes the camera's newest
//! kept frame (see [`super::LatestFrame`]), runs the detector on it and answers with the frame and
//! its detections. A camera without a recent frame (offline, stalled) is refused with a reason, so
//! a re-check never verifies a case on a stale picture.
//!
//! This module must not render evidence, write to the store or decide what a look means for a
//! case: callers do (the agent's command handler, the events stage).

use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use image::RgbImage;
use models::Detection;
use protocol::{CameraId, Timestamp};
use tokio::sync::oneshot;

use super::{CameraCounters, CameraState};

/// How old the newest kept frame may be for a look (a camera keeps one every 500 ms).
pub const LOOK_MAX_FRAME_AGE: Duration = Duration::from_secs(3);

/// What a camera sees now.
#[derive(Debug, Clone)]
pub struct Look {
    /// The camera.
    pub camera: CameraId,
    /// When the frame was captured, on the box clock.
    pub at: Timestamp,
    /// The frame, as the pipeline scaled it.
    pub image: Arc<RgbImage>,
    /// The detector's findings on it (pixel boxes in `image`).
    pub detections: Vec<Detection>,
}

impl Look {
    /// The detections as evidence marks.
    pub fn marks(&self) -> Vec<crate::events::Mark> {
        self.detections.iter().map(super::detection_mark).collect()
    }
}

/// Why a look could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LookError {
    /// The box has no camera of that id.
    #[error("this box has no camera `{0}`")]
    UnknownCamera(String),
    /// The camera has not delivered a frame recently.
    #[error("camera `{camera}` has no recent frame (it is {state})")]
    NoRecentFrame {
        /// The camera.
        camera: String,
        /// Its state now.
        state: String,
    },
    /// The detector failed on the frame.
    #[error("detection failed on camera `{camera}`: {detail}")]
    Detect {
        /// The camera.
        camera: String,
        /// Why.
        detail: String,
    },
    /// The camera stage is not running (stopping, or no detector).
    #[error("the camera stage is not running")]
    Stopped,
    /// No answer in time (the detector is overloaded).
    #[error("camera `{0}` did not answer in time")]
    Timeout(String),
}

/// A request queued for the detector thread.
#[derive(Debug)]
pub(super) struct LookRequest {
    pub(super) camera: usize,
    pub(super) reply: oneshot::Sender<Result<Look, LookError>>,
}

/// Asks cameras for a fresh look. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Looker {
    pub(super) ids: Vec<CameraId>,
    pub(super) tx: std_mpsc::Sender<LookRequest>,
}

impl Looker {
    /// The cameras that can be asked.
    pub fn cameras(&self) -> &[CameraId] {
        &self.ids
    }

    /// Looks through `camera` now: its newest frame (at most [`LOOK_MAX_FRAME_AGE`] old) and
    /// the detections on it, or why not, within `timeout`.
    ///
    /// # Errors
    /// [`LookError`].
    pub async fn look(&self, camera: &str, timeout: Duration) -> Result<Look, LookError> {
        let index = self
            .ids
            .iter()
            .position(|c| c.as_str() == camera)
            .ok_or_else(|| LookError::UnknownCamera(camera.to_owned()))?;
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(LookRequest {
                camera: index,
                reply,
            })
            .map_err(|_| LookError::Stopped)?;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(LookError::Stopped),
            Err(_) => Err(LookError::Timeout(camera.to_owned())),
        }
    }
}

/// The newest frame of a camera if it is recent enough, else why not (detector thread side).
pub(super) fn recent_frame(
    id: &CameraId,
    counters: &CameraCounters,
    now: Instant,
) -> Result<(Arc<RgbImage>, Timestamp), LookError> {
    let latest = counters
        .latest
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    match latest {
        Some(f) if now.saturating_duration_since(f.captured) <= LOOK_MAX_FRAME_AGE => {
            Ok((f.image, f.wall))
        }
        _ => Err(LookError::NoRecentFrame {
            camera: id.to_string(),
            state: format!(
                "{:?}",
                CameraState::from_u8(counters.state.load(std::sync::atomic::Ordering::Relaxed))
            )
            .to_lowercase(),
        }),
    }
}

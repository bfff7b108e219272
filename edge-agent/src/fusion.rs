//! Sensor–camera fusion: a sensor whose config names a camera covering the same place (a smoke
//! detector in a stairwell with a camera on it, a water-level gauge under a bridge camera) gets
//! what that camera sees at the moment of its event attached as a confirming snapshot.
//!
//! Sits between the sensor stage and the events stage, in order: each sensor observation waits
//! for its look (bounded by [`LOOK_TIMEOUT`]) before it goes on, so one sensor's events keep
//! their order; camera observations do not pass through here. A camera that cannot answer (no
//! recent frame, overloaded) never holds an event back: the event goes on without the snapshot,
//! marked with why, and the miss is counted.
//!
//! This module must not decide categories or severities, and must not drop an observation.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use protocol::{AttrValue, CameraId, SourceId};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::camera::Looker;
use crate::events::{Observation, Snapshot};

/// How long a sensor event waits for its camera.
pub const LOOK_TIMEOUT: Duration = Duration::from_secs(5);

/// What fusion has done.
#[derive(Debug, Default, Serialize)]
pub struct FusionStats {
    /// Sensor observations that got a confirming snapshot.
    pub confirmed: AtomicU64,
    /// Sensor observations whose camera could not answer (sent on without a snapshot).
    pub unavailable: AtomicU64,
}

/// Forwards `input` to `output`, attaching a camera snapshot to the observations of sensors
/// named in `cameras`. Ends when `input` closes (or `output` does).
pub async fn run(
    mut input: mpsc::Receiver<Observation>,
    output: mpsc::Sender<Observation>,
    cameras: HashMap<SourceId, CameraId>,
    looker: Looker,
    stats: Arc<FusionStats>,
) {
    while let Some(mut observation) = input.recv().await {
        if observation.snapshot.is_none()
            && let Some(camera) = cameras.get(&observation.source.id)
        {
            confirm(&mut observation, camera, &looker, &stats).await;
        }
        if output.send(observation).await.is_err() {
            return;
        }
    }
}

async fn confirm(
    observation: &mut Observation,
    camera: &CameraId,
    looker: &Looker,
    stats: &FusionStats,
) {
    match looker.look(camera.as_str(), LOOK_TIMEOUT).await {
        Ok(look) => {
            stats.confirmed.fetch_add(1, Ordering::Relaxed);
            let marks = look.marks();
            observation.attributes.insert(
                "confirming_camera".to_owned(),
                AttrValue::Text(camera.to_string()),
            );
            observation.attributes.insert(
                "camera_objects".to_owned(),
                AttrValue::Int(i64::try_from(look.detections.len()).unwrap_or(i64::MAX)),
            );
            observation.snapshot = Some(Snapshot {
                frame: (*look.image).clone(),
                marks,
                zone: Vec::new(),
            });
        }
        Err(e) => {
            stats.unavailable.fetch_add(1, Ordering::Relaxed);
            tracing::info!(stage = "fusion", sensor = %observation.source.id, %camera, error = %e, "no confirming snapshot");
            observation.attributes.insert(
                "confirming_camera_unavailable".to_owned(),
                AttrValue::Text(e.to_string()),
            );
        }
    }
}

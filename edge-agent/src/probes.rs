//! What the box page and the metrics read of the running stages: one set of probes (the
//! store, the stages' shared counters, the uplink's status), built once by the agent and handed
//! to both, so neither reaches into a stage.
//!
//! This module must not change a stage: everything here is read at request or scrape time.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::camera::CameraStats;
use crate::events::EventsStats;
use crate::fusion::FusionStats;
use crate::sensors::SensorStats;
use crate::store::Store;
use crate::uplink::UplinkStatus;

/// The running stages as readers see them.
#[derive(Debug, Clone)]
pub struct Probes {
    /// The event store (size, backlog, evictions, recent events).
    pub store: Store,
    /// The events stage's counters.
    pub events: Arc<EventsStats>,
    /// The sensors' counters and the broker link (none when none are configured).
    pub sensors: Option<Arc<Mutex<SensorStats>>>,
    /// The cameras' counters and the detector's timings (none when none are configured).
    pub cameras: Option<CameraStats>,
    /// Sensor–camera fusion's counters, when a sensor names a confirming camera.
    pub fusion: Option<Arc<FusionStats>>,
    /// The uplink's state (none without `[uplink]`).
    pub uplink: Option<watch::Receiver<UplinkStatus>>,
}

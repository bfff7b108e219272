//! Camera health: the state of a stream (connecting, streaming, stalled, offline) and the
//! debounce that turns a lasting fault into one device-fault event and its end into one
//! recovery event.
//!
//! A fault episode starts when a camera stops streaming (or never started). If it lasts
//! `fault_debounce`, [`Health::tick`] reports [`HealthEvent::Fault`] once: `Offline` when the
//! stream could not be opened or failed, `NoFrames` when it was connected but delivered nothing.
//! The first frame after a reported fault reports [`HealthEvent::Recovered`]. A short outage
//! (a reconnect within the debounce) reports nothing.
//!
//! Pure core: time comes in as `now`; no GStreamer, no channels.

use std::time::{Duration, Instant};

/// What a camera is doing. Written in snake case (`streaming`) on the status page, in its
/// JSON and in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum CameraState {
    /// Building the pipeline or waiting for its first frame.
    Connecting = 0,
    /// Frames are arriving.
    Streaming = 1,
    /// Connected, but no frame for `stall_after`.
    Stalled = 2,
    /// The stream failed or could not be opened; waiting to reconnect.
    Offline = 3,
}

impl CameraState {
    /// From its `repr(u8)` value (for atomics); unknown values read as offline.
    pub fn from_u8(v: u8) -> CameraState {
        match v {
            0 => CameraState::Connecting,
            1 => CameraState::Streaming,
            2 => CameraState::Stalled,
            _ => CameraState::Offline,
        }
    }

    /// The name the status page, its JSON and the log use.
    pub fn as_str(self) -> &'static str {
        match self {
            CameraState::Connecting => "connecting",
            CameraState::Streaming => "streaming",
            CameraState::Stalled => "stalled",
            CameraState::Offline => "offline",
        }
    }
}

impl std::fmt::Display for CameraState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Which fault a camera has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The stream cannot be opened or keeps failing (`device.camera_offline`).
    Offline,
    /// The stream is open but no frames arrive (`device.camera_no_frames`).
    NoFrames,
}

impl FaultKind {
    /// The catalog key of the fault's category.
    pub fn category_key(self) -> &'static str {
        match self {
            FaultKind::Offline => "device.camera_offline",
            FaultKind::NoFrames => "device.camera_no_frames",
        }
    }
}

/// A change worth an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthEvent {
    /// A fault lasted past the debounce.
    Fault {
        /// Which.
        kind: FaultKind,
        /// How long it has lasted.
        lasted: Duration,
        /// The latest error, if any.
        reason: Option<String>,
    },
    /// Frames are back after a reported fault.
    Recovered {
        /// The fault that ended.
        kind: FaultKind,
        /// How long the camera was down.
        down_for: Duration,
    },
}

/// The health of one camera.
#[derive(Debug, Clone)]
pub struct Health {
    debounce: Duration,
    state: CameraState,
    fault_since: Option<Instant>,
    kind: FaultKind,
    raised: bool,
    last_error: Option<String>,
}

impl Health {
    /// A camera starting up at `now` (a fault episode until its first frame).
    pub fn new(debounce: Duration, now: Instant) -> Health {
        Health {
            debounce,
            state: CameraState::Connecting,
            fault_since: Some(now),
            kind: FaultKind::NoFrames,
            raised: false,
            last_error: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> CameraState {
        self.state
    }

    /// The latest error, kept until the next frame.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// A (re)connect attempt starts. An offline camera stays offline until a frame arrives, so
    /// the state does not flicker while reconnects keep failing.
    pub fn on_connecting(&mut self, now: Instant) {
        if self.state != CameraState::Offline {
            self.state = CameraState::Connecting;
        }
        self.fault_since.get_or_insert(now);
    }

    /// A frame arrived.
    pub fn on_frame(&mut self, now: Instant) -> Option<HealthEvent> {
        self.state = CameraState::Streaming;
        self.last_error = None;
        let since = self.fault_since.take()?;
        let raised = std::mem::replace(&mut self.raised, false);
        let kind = std::mem::replace(&mut self.kind, FaultKind::NoFrames);
        raised.then(|| HealthEvent::Recovered {
            kind,
            down_for: now.saturating_duration_since(since),
        })
    }

    /// Connected, but no frame for the stall time.
    pub fn on_stalled(&mut self, now: Instant) {
        self.state = CameraState::Stalled;
        self.fault_since.get_or_insert(now);
    }

    /// The stream failed or could not be opened.
    pub fn on_failed(&mut self, now: Instant, reason: String) {
        self.state = CameraState::Offline;
        self.fault_since.get_or_insert(now);
        if !self.raised {
            self.kind = FaultKind::Offline;
        }
        self.last_error = Some(reason);
    }

    /// Reports a fault that has lasted past the debounce (once per episode).
    pub fn tick(&mut self, now: Instant) -> Option<HealthEvent> {
        let since = self.fault_since?;
        let lasted = now.saturating_duration_since(since);
        if self.raised || lasted < self.debounce {
            return None;
        }
        self.raised = true;
        Some(HealthEvent::Fault {
            kind: self.kind,
            lasted,
            reason: self.last_error.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(10);

    #[test]
    fn a_short_outage_within_the_debounce_raises_nothing() {
        let t0 = Instant::now();
        let mut h = Health::new(D, t0);
        assert_eq!(h.on_frame(t0 + Duration::from_secs(1)), None);
        h.on_failed(t0 + Duration::from_secs(2), "eos".into());
        assert_eq!(h.tick(t0 + Duration::from_secs(5)), None);
        assert_eq!(h.on_frame(t0 + Duration::from_secs(6)), None);
        assert_eq!(h.tick(t0 + Duration::from_secs(30)), None);
        assert_eq!(h.state(), CameraState::Streaming);
    }

    #[test]
    fn a_lasting_failure_raises_one_offline_fault_then_one_recovery() {
        let t0 = Instant::now();
        let mut h = Health::new(D, t0);
        h.on_frame(t0);
        h.on_failed(t0 + Duration::from_secs(1), "connection refused".into());
        h.on_connecting(t0 + Duration::from_secs(2));
        assert_eq!(h.tick(t0 + Duration::from_secs(10)), None);
        assert_eq!(
            h.tick(t0 + Duration::from_secs(11)),
            Some(HealthEvent::Fault {
                kind: FaultKind::Offline,
                lasted: Duration::from_secs(10),
                reason: Some("connection refused".into()),
            })
        );
        assert_eq!(
            h.tick(t0 + Duration::from_secs(60)),
            None,
            "once per episode"
        );
        assert_eq!(
            h.on_frame(t0 + Duration::from_secs(61)),
            Some(HealthEvent::Recovered {
                kind: FaultKind::Offline,
                down_for: Duration::from_secs(60),
            })
        );
    }

    #[test]
    fn a_connected_stream_without_frames_is_a_no_frames_fault() {
        let t0 = Instant::now();
        let mut h = Health::new(D, t0);
        h.on_frame(t0);
        h.on_stalled(t0 + Duration::from_secs(5));
        assert_eq!(h.state(), CameraState::Stalled);
        assert!(matches!(
            h.tick(t0 + Duration::from_secs(15)),
            Some(HealthEvent::Fault {
                kind: FaultKind::NoFrames,
                ..
            })
        ));
    }
}

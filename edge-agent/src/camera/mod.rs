//! Cameras: one GStreamer pipeline per camera, one shared detector, and the vision rules that
//! turn what is seen into observations for the event builder.
//!
//! ```text
//! camera thread (per camera)                       detector thread (one)
//! pipeline: decode ! videorate ! videoscale !      pop round-robin from the fair queue
//!   videoconvert ! appsink (newest frame only)  →  detect (ONNX Runtime, shared session)
//! motion gate → fair queue (drop-oldest, counted)  tracker → rules → observations
//! bus watch, stall watchdog, reconnect+backoff     (bounded channel, backpressure)
//! health debounce → device-fault observations
//! ```
//!
//! Main types: [`CameraStage`] (build with [`CameraStage::build`], then
//! [`CameraStage::run`]), [`CameraStats`] (cloneable counters and states for the status page,
//! tests and the benchmark), [`config`] (the `[detector]` and `[[cameras]]` sections).
//!
//! Threads, not tasks: appsink pulls, pipeline teardown and inference block, so they run on
//! named threads (`camera-<id>`, `detector`), never on the executor. One broken camera only
//! ever affects its own thread. This module must not write to the store or decide event ids;
//! it hands [`Observation`]s to a channel.

pub mod config;
pub mod credentials;
mod health;
mod look;
mod motion;
mod pipeline;
pub mod probe;
mod scheduler;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gstreamer as gst;
use hardware::board::Board;
use hardware::camera::{FrameSpec, render};
use image::RgbImage;
use models::{
    DetectError, Detection, Detector, LoadError, ManifestError, RgbView, Runtime, RuntimeError,
    SessionConfig,
};
use protocol::{CameraId, Location, Source, SourceKind, Timestamp};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::events::{Mark, Observation, PixelRect, Snapshot};
use vision::rules::RuleError;
use vision::{Homography, NormBox, NormDetection, RuleEngine, Track, Tracker, Zone};

pub use health::{CameraState, FaultKind, Health, HealthEvent};
pub use look::{LOOK_MAX_FRAME_AGE, Look, LookError, Looker};
pub use motion::{GateDecision, MotionGate};
pub use scheduler::{DetectorQueue, FairQueue};

use config::{CameraConfig, DetectorConfig};
use pipeline::{CameraWorker, SINK_NAME};

/// One decoded, scaled RGB frame.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Index of the camera in the config.
    pub camera: usize,
    /// When the appsink handed it over.
    pub captured: Instant,
    /// The same moment on the box clock.
    pub wall: Timestamp,
    /// The pixels.
    pub image: RgbImage,
}

/// Why the camera stage could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CameraError {
    /// GStreamer could not be initialised (stop: the box is misinstalled).
    #[error("failed to initialise GStreamer")]
    Gstreamer(#[source] gst::glib::Error),
    /// ONNX Runtime could not be found or loaded (stop).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The model name or manifest is wrong (stop).
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The model could not be loaded (stop).
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A camera's rules could not be built (stop: config validation should have caught it).
    #[error("camera `{camera}` has an unusable rule")]
    Rule {
        /// The camera.
        camera: CameraId,
        /// Why.
        #[source]
        source: RuleError,
    },
    /// A thread could not be started (stop).
    #[error("failed to start thread `{name}`")]
    Thread {
        /// The thread's name.
        name: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What one camera has done so far.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraStatus {
    /// The camera.
    pub id: CameraId,
    /// Its state now.
    pub state: CameraState,
    /// The latest error (cleared by the next frame).
    pub last_error: Option<String>,
    /// Frames out of the pipeline.
    pub frames: u64,
    /// Frames the motion gate kept from the detector.
    pub gated: u64,
    /// Frames dropped from the detector queue because a newer one of this camera replaced them.
    pub dropped_superseded: u64,
    /// Frames the detector ran on.
    pub detected: u64,
    /// Frames the detector failed on.
    pub detect_errors: u64,
    /// Frames whose buffer could not be read.
    pub bad_frames: u64,
    /// Observations handed on (rules and device faults).
    pub observations: u64,
    /// Pipeline rebuilds.
    pub reconnects: u64,
}

/// Shared, cloneable view of the stage's counters.
#[derive(Debug, Clone)]
pub struct CameraStats {
    ids: Vec<CameraId>,
    counters: Vec<Arc<CameraCounters>>,
    queue: Arc<DetectorQueue<Frame>>,
    timing: Arc<Mutex<Timing>>,
}

/// Time spent per detected frame, for the benchmark and the status page.
#[derive(Debug, Clone, Default)]
pub struct Timing {
    /// Frames measured.
    pub frames: u64,
    /// Total time in `Detector::detect` (pre-processing, inference, decoding).
    pub detect: Duration,
    /// Of `detect`: pre-processing (resize and layout into the input tensor).
    pub prepare: Duration,
    /// Of `detect`: ONNX Runtime's inference.
    pub infer: Duration,
    /// Total time in the tracker and rules.
    pub rules: Duration,
    /// Frame-to-observation latencies of the latest frames that raised observations (capture
    /// to hand-over), newest last, at most [`LATENCY_SAMPLES`].
    pub latencies: VecDeque<Duration>,
    /// Capture-to-detected latencies of the latest frames, at most [`LATENCY_SAMPLES`].
    pub frame_latencies: VecDeque<Duration>,
    /// Detected frames by time in `Detector::detect`: entry `i` counts those at most
    /// [`DETECT_BUCKETS_SECS`]`[i]` and above the previous bound; the last entry the rest.
    pub detect_buckets: [u64; DETECT_BUCKETS_SECS.len() + 1],
}

/// Upper bounds (seconds) of the inference-time histogram exported as a metric.
pub const DETECT_BUCKETS_SECS: [f64; 10] =
    [0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.12, 0.2, 0.4, 1.0];

/// Latency samples kept.
pub const LATENCY_SAMPLES: usize = 4096;

/// The newest frame of a camera, kept for the status page's thumbnail (at most one copy every
/// [`LATEST_FRAME_EVERY`], so keeping it costs next to nothing).
#[derive(Debug, Clone)]
pub struct LatestFrame {
    /// The pixels, as the pipeline scaled them.
    pub image: Arc<RgbImage>,
    /// When it was captured, on the box clock.
    pub wall: Timestamp,
    /// When it was captured.
    pub captured: Instant,
}

/// How often a camera thread copies a frame for [`LatestFrame`].
pub const LATEST_FRAME_EVERY: Duration = Duration::from_millis(500);

/// What the detector last made of a camera's frame: its detections and live tracks with the
/// rules' explanations, for the status page.
#[derive(Debug, Clone, Default)]
pub struct Scene {
    /// When the frame was captured (none before the first detected frame).
    pub at: Option<Timestamp>,
    /// The frame's detections.
    pub detections: Vec<NormDetection>,
    /// The live tracks.
    pub tracks: Vec<TrackView>,
}

/// One live track and why each rule did or did not fire for it.
#[derive(Debug, Clone)]
pub struct TrackView {
    /// The track id.
    pub id: u64,
    /// Its label.
    pub label: String,
    /// Its latest score.
    pub score: f32,
    /// Its latest box.
    pub bbox: NormBox,
    /// How long it has been tracked.
    pub age: Duration,
    /// Whether it stands still.
    pub stationary: bool,
    /// The rules' latest explanations.
    pub explanations: Vec<vision::rules::Explanation>,
}

impl CameraStats {
    /// Every camera's status, in config order.
    pub fn snapshot(&self) -> Vec<CameraStatus> {
        self.ids
            .iter()
            .zip(&self.counters)
            .map(|(id, c)| CameraStatus {
                id: id.clone(),
                state: CameraState::from_u8(c.state.load(Ordering::Relaxed)),
                last_error: c
                    .last_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
                frames: c.frames.load(Ordering::Relaxed),
                gated: c.gated.load(Ordering::Relaxed),
                dropped_superseded: c.superseded.load(Ordering::Relaxed),
                detected: c.detected.load(Ordering::Relaxed),
                detect_errors: c.detect_errors.load(Ordering::Relaxed),
                bad_frames: c.bad_frames.load(Ordering::Relaxed),
                observations: c.observations.load(Ordering::Relaxed),
                reconnects: c.reconnects.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// The status of one camera.
    pub fn camera(&self, id: &str) -> Option<CameraStatus> {
        self.snapshot().into_iter().find(|s| s.id.as_str() == id)
    }

    /// Frames waiting for the detector now.
    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    /// The newest kept frame of a camera (none before its first frame).
    pub fn latest_frame(&self, id: &str) -> Option<LatestFrame> {
        let i = self.ids.iter().position(|c| c.as_str() == id)?;
        self.counters[i]
            .latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Asks a camera's thread to rebuild its pipeline now (a technician's action on the box
    /// page). False when there is no such camera.
    pub fn request_reconnect(&self, id: &str) -> bool {
        let Some(i) = self.ids.iter().position(|c| c.as_str() == id) else {
            return false;
        };
        self.counters[i].reconnect.store(true, Ordering::Relaxed);
        true
    }

    /// What the detector last made of a camera's frames.
    pub fn scene(&self, id: &str) -> Option<Scene> {
        let i = self.ids.iter().position(|c| c.as_str() == id)?;
        Some(
            self.counters[i]
                .scene
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }

    /// Detector and rule timings so far.
    pub fn timing(&self) -> Timing {
        self.timing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Per-camera counters, shared by its thread, the detector thread and [`CameraStats`].
#[derive(Debug, Default)]
pub(crate) struct CameraCounters {
    frames: AtomicU64,
    gated: AtomicU64,
    superseded: AtomicU64,
    detected: AtomicU64,
    detect_errors: AtomicU64,
    bad_frames: AtomicU64,
    observations: AtomicU64,
    reconnects: AtomicU64,
    state: AtomicU8,
    /// Set by the detector thread; the motion gate lets frames through while a track lives.
    active_tracks: AtomicBool,
    last_error: Mutex<Option<String>>,
    /// Set by the status page, taken by the camera thread: rebuild the pipeline.
    reconnect: AtomicBool,
    /// Written by the camera thread, read by the status page.
    latest: Mutex<Option<LatestFrame>>,
    /// Written by the detector thread, read by the status page.
    scene: Mutex<Scene>,
}

/// The camera stage, built and ready to run.
#[derive(Debug)]
pub struct CameraStage {
    cameras: Vec<CameraPlan>,
    detector: Option<Detector>,
    analyses: Vec<CameraAnalysis>,
    stats: CameraStats,
    looks_tx: std::sync::mpsc::Sender<look::LookRequest>,
    looks_rx: std::sync::mpsc::Receiver<look::LookRequest>,
}

/// What a camera thread will run (`None` description: the camera could not be rendered).
#[derive(Debug)]
struct CameraPlan {
    config: CameraConfig,
    location: Location,
    description: Option<String>,
}

impl CameraStage {
    /// Renders every camera's pipeline for the configured board (a missing hardware decoder
    /// falls back to software with one warning; a camera that cannot be rendered is reported
    /// offline with its error while the others run), builds the rules, and loads the model
    /// once when any camera is configured.
    ///
    /// # Errors
    /// [`CameraError`] for GStreamer, ONNX Runtime, the model or a rule.
    pub fn build(
        cameras_config: &[CameraConfig],
        detector: &DetectorConfig,
        board: Board,
        site: Location,
    ) -> Result<CameraStage, CameraError> {
        let n = cameras_config.len();
        let queue = Arc::new(DetectorQueue::new(n, detector.queue_frames.get() as usize));
        let counters: Vec<Arc<CameraCounters>> = (0..n)
            .map(|_| Arc::new(CameraCounters::default()))
            .collect();
        let stats = CameraStats {
            ids: cameras_config.iter().map(|c| c.id.clone()).collect(),
            counters: counters.clone(),
            queue,
            timing: Arc::new(Mutex::new(Timing::default())),
        };
        if n == 0 {
            let (looks_tx, looks_rx) = std::sync::mpsc::channel();
            return Ok(CameraStage {
                cameras: Vec::new(),
                detector: None,
                analyses: Vec::new(),
                stats,
                looks_tx,
                looks_rx,
            });
        }
        gst::init().map_err(CameraError::Gstreamer)?;
        let profile = board.profile();
        let has_element = |name: &str| gst::ElementFactory::find(name).is_some();
        let mut cameras = Vec::with_capacity(n);
        let mut analyses = Vec::with_capacity(n);
        for (i, cam) in cameras_config.iter().enumerate() {
            let frames = FrameSpec {
                width: cam.frame_width_px,
                height: cam.frame_height_px,
                max_fps: cam.detect_fps,
                sink_name: SINK_NAME.to_owned(),
            };
            let rendered = credentials::resolve(&cam.source)
                .map_err(|e| e.to_string())
                .and_then(|source| {
                    render(&source, cam.codec, &profile, &frames, &has_element)
                        .map(|r| (r, redacted_source(&source)))
                        .map_err(|e| e.to_string())
                });
            let description = match rendered {
                Ok((rendered, secret_url)) => {
                    for f in &rendered.fallbacks {
                        tracing::warn!(
                            camera = %cam.id,
                            board = %profile.board,
                            missing = %f.missing,
                            using = f.used,
                            "hardware decoder missing, falling back to software decode"
                        );
                    }
                    let shown = match &secret_url {
                        Some((url, redacted)) => rendered.description.replace(url, redacted),
                        None => rendered.description.clone(),
                    };
                    tracing::debug!(camera = %cam.id, pipeline = %shown, "pipeline rendered");
                    Some(rendered.description)
                }
                Err(e) => {
                    report_unrenderable(cam, &e, &counters[i]);
                    None
                }
            };
            let location = cam.location(site);
            cameras.push(CameraPlan {
                config: cam.clone(),
                location,
                description,
            });
            analyses.push(CameraAnalysis::new(
                cam,
                location,
                Arc::clone(&counters[i]),
            )?);
        }
        let runtime = Runtime::locate_and_load(detector.ort_library_path.as_deref())?;
        let manifest = models::zoo::resolve(&detector.model)?;
        let session = SessionConfig {
            intra_threads: std::num::NonZeroUsize::new(detector.intra_threads.get() as usize)
                .unwrap_or(std::num::NonZeroUsize::MIN),
            execution_provider: execution_provider(profile.execution_provider),
            ..SessionConfig::default()
        };
        let detector = Detector::from_manifest(&runtime, manifest, &session)?;
        let (looks_tx, looks_rx) = std::sync::mpsc::channel();
        Ok(CameraStage {
            cameras,
            detector: Some(detector),
            analyses,
            stats,
            looks_tx,
            looks_rx,
        })
    }

    /// Asks the cameras for a fresh look (for re-checks and sensor fusion); take it before
    /// `run` consumes the stage. Looks are answered while the stage runs.
    pub fn looker(&self) -> Looker {
        Looker {
            ids: self.stats.ids.clone(),
            tx: self.looks_tx.clone(),
        }
    }

    /// A cloneable view of the counters (take it before `run` consumes the stage).
    pub fn stats(&self) -> CameraStats {
        self.stats.clone()
    }

    /// Runs every camera thread and the detector thread until `cancel`, then stops them and
    /// waits for them (off the executor). Observations are sent with backpressure; frames that
    /// pile up meanwhile are dropped oldest-first per camera and counted.
    ///
    /// # Errors
    /// [`CameraError::Thread`] when a thread cannot be started (the started ones are stopped).
    ///
    /// # Cancel safety
    /// Not cancel safe: drop it only after `cancel` fired and it returned.
    pub async fn run(
        self,
        observations: mpsc::Sender<Observation>,
        cancel: CancellationToken,
    ) -> Result<(), CameraError> {
        let CameraStage {
            cameras,
            detector,
            analyses,
            stats,
            looks_tx,
            looks_rx,
        } = self;
        // Only loopers hold senders now: a look asked after the stage stopped is refused.
        drop(looks_tx);
        let mut threads: Vec<JoinHandle<()>> = Vec::new();
        let stop = cancel.child_token();
        let result = (|| {
            if let Some(detector) = detector {
                let (queue, timing, tx, stop) = (
                    Arc::clone(&stats.queue),
                    Arc::clone(&stats.timing),
                    observations.clone(),
                    stop.clone(),
                );
                let mut analyses = analyses;
                let mut detector = detector;
                threads.push(spawn("detector".to_owned(), move || {
                    detect_loop(
                        &mut detector,
                        &mut analyses,
                        &queue,
                        &timing,
                        &tx,
                        &looks_rx,
                        &stop,
                    );
                })?);
            }
            for (index, plan) in cameras.into_iter().enumerate() {
                let Some(description) = plan.description else {
                    continue;
                };
                let worker = CameraWorker {
                    index,
                    source: camera_source(&plan.config.id),
                    location: plan.location,
                    description,
                    health: plan.config.health.clone(),
                    gate: MotionGate::new(plan.config.motion.clone()),
                    queue: Arc::clone(&stats.queue),
                    wait_for_detector: !plan.config.source.is_live(),
                    counters: Arc::clone(&stats.counters[index]),
                    observations: observations.clone(),
                    cancel: stop.clone(),
                    rng: fastrand::Rng::new(),
                };
                threads.push(spawn(format!("camera-{}", plan.config.id), move || {
                    worker.run();
                })?);
            }
            Ok(())
        })();
        drop(observations);
        if result.is_ok() {
            cancel.cancelled().await;
        }
        stop.cancel();
        stats.queue.close();
        let joined = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        if joined.is_err() {
            tracing::warn!("a camera thread panicked");
        }
        result
    }
}

/// The vision state of one camera: tracker, zones and rules, location mapping.
#[derive(Debug)]
struct CameraAnalysis {
    source: Source,
    location: Location,
    homography: Option<Homography>,
    tracker: Tracker,
    engine: RuleEngine,
    counters: Arc<CameraCounters>,
}

impl CameraAnalysis {
    fn new(
        cam: &CameraConfig,
        location: Location,
        counters: Arc<CameraCounters>,
    ) -> Result<Self, CameraError> {
        let zones = cam.zones.iter().map(Zone::from_config).collect();
        let engine =
            RuleEngine::new(zones, &cam.rules, cam.tracker.min_hits.get()).map_err(|source| {
                CameraError::Rule {
                    camera: cam.id.clone(),
                    source,
                }
            })?;
        Ok(CameraAnalysis {
            source: camera_source(&cam.id),
            location,
            homography: cam
                .homography
                .as_ref()
                .and_then(|h| Homography::from_points(&h.image, &h.map)),
            tracker: Tracker::new(cam.tracker.clone()),
            engine,
            counters,
        })
    }

    /// Keeps what this frame showed for the status page.
    fn publish_scene(&self, frame: &Frame, detections: Vec<NormDetection>, tracks: &[Track]) {
        let tracks = tracks
            .iter()
            .map(|t| TrackView {
                id: t.id,
                label: t.label.clone(),
                score: t.score,
                bbox: t.bbox,
                age: t.age(frame.captured),
                stationary: t.stationary,
                explanations: self.engine.explain(t.id),
            })
            .collect();
        *self
            .counters
            .scene
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Scene {
            at: Some(frame.wall),
            detections,
            tracks,
        };
    }

    /// Tracks the frame's detections, evaluates the rules and builds observations.
    fn process(&mut self, frame: &Frame, detections: &[Detection]) -> Vec<Observation> {
        let (w, h) = frame.image.dimensions();
        let norm: Vec<NormDetection> = detections
            .iter()
            .map(|d| NormDetection {
                label: d.label.clone(),
                score: d.score,
                bbox: NormBox::from_pixels([d.bbox.x1, d.bbox.y1, d.bbox.x2, d.bbox.y2], w, h),
            })
            .collect();
        let tracks = self.tracker.update(&norm, frame.captured).to_vec();
        self.counters
            .active_tracks
            .store(!tracks.is_empty(), Ordering::Relaxed);
        if tracing::enabled!(tracing::Level::TRACE) {
            let feet: Vec<(u64, &str, u32, (f32, f32))> = tracks
                .iter()
                .filter(|t| t.seen_now)
                .map(|t| (t.id, t.label.as_str(), t.hits, t.foot()))
                .collect();
            tracing::trace!(camera = %self.source.id, wall = %frame.wall, tracks = ?feet, "frame tracked");
        }
        let firings = self.engine.evaluate(&tracks, frame.captured, frame.wall);
        self.publish_scene(frame, norm, &tracks);
        if firings.is_empty() {
            return Vec::new();
        }
        let marks: Vec<Mark> = detections.iter().map(detection_mark).collect();
        firings
            .into_iter()
            .map(|f| {
                let zone = f.zone.and_then(|i| self.engine.zones().get(i));
                let foot = f.boxes.first().map(NormBox::foot);
                let location = match (zone.and_then(|z| z.location), &self.homography, foot) {
                    (Some((lat, lon)), _, _) => Location {
                        lat,
                        lon,
                        ..self.location
                    },
                    (None, Some(h), Some((x, y))) => h
                        .apply(f64::from(x), f64::from(y))
                        .map(|(lat, lon)| Location {
                            lat,
                            lon,
                            crs: self.location.crs,
                        })
                        .filter(Location::is_valid)
                        .unwrap_or(self.location),
                    _ => self.location,
                };
                tracing::debug!(camera = %self.source.id, rule = %f.rule, track = ?f.track, "rule fired");
                Observation {
                    source: self.source.clone(),
                    rule: f.rule,
                    zone: zone.map(|z| z.id.clone()),
                    track: f.track,
                    category: f.category,
                    severity: f.severity,
                    observed_at: frame.wall,
                    location,
                    grid: zone.and_then(|z| z.grid.clone()),
                    attributes: f.attributes,
                    snapshot: Some(Snapshot {
                        frame: frame.image.clone(),
                        marks: marks.clone(),
                        zone: zone.map(|z| z.pixels(w, h)).unwrap_or_default(),
                    }),
                }
            })
            .collect()
    }
}

/// The detector thread: fair pops, detection, vision, hand-over.
fn detect_loop(
    detector: &mut Detector,
    analyses: &mut [CameraAnalysis],
    queue: &DetectorQueue<Frame>,
    timing: &Mutex<Timing>,
    observations: &mpsc::Sender<Observation>,
    looks: &std::sync::mpsc::Receiver<look::LookRequest>,
    stop: &CancellationToken,
) {
    let mut warned = vec![false; analyses.len()];
    while !stop.is_cancelled() {
        while let Ok(request) = looks.try_recv() {
            let answer = answer_look(detector, analyses, request.camera);
            let _ = request.reply.send(answer);
        }
        let Some((camera, frame)) = queue.pop_timeout(Duration::from_millis(100)) else {
            continue;
        };
        let Some(analysis) = analyses.get_mut(camera) else {
            continue;
        };
        let started = Instant::now();
        let times_before = detector.times();
        let detections = match run_detector(detector, &frame) {
            Ok(d) => d,
            Err(e) => {
                analysis
                    .counters
                    .detect_errors
                    .fetch_add(1, Ordering::Relaxed);
                if !std::mem::replace(&mut warned[camera], true) {
                    tracing::warn!(camera = %analysis.source.id, error = %crate::telemetry::chain(&e), "detection failed");
                }
                continue;
            }
        };
        let detected = Instant::now();
        let times = detector.times();
        analysis.counters.detected.fetch_add(1, Ordering::Relaxed);
        let out = analysis.process(&frame, &detections);
        let done = Instant::now();
        {
            let mut t = timing.lock().unwrap_or_else(|p| p.into_inner());
            t.frames += 1;
            t.detect += detected - started;
            t.prepare += times.prepare.saturating_sub(times_before.prepare);
            t.infer += times.infer.saturating_sub(times_before.infer);
            let secs = (detected - started).as_secs_f64();
            let bucket = DETECT_BUCKETS_SECS
                .iter()
                .position(|b| secs <= *b)
                .unwrap_or(DETECT_BUCKETS_SECS.len());
            t.detect_buckets[bucket] += 1;
            t.rules += done - detected;
            push_bounded(&mut t.frame_latencies, done - frame.captured);
            if !out.is_empty() {
                push_bounded(&mut t.latencies, done - frame.captured);
            }
        }
        for observation in out {
            analysis
                .counters
                .observations
                .fetch_add(1, Ordering::Relaxed);
            if observations.blocking_send(observation).is_err() {
                return;
            }
        }
    }
}

/// Detects on the newest kept frame of `camera`, for a [`Looker`].
fn answer_look(
    detector: &mut Detector,
    analyses: &[CameraAnalysis],
    camera: usize,
) -> Result<Look, LookError> {
    let analysis = analyses.get(camera).ok_or(LookError::Stopped)?;
    let id = CameraId::parse(analysis.source.id.as_str()).map_err(|_| LookError::Stopped)?;
    let (image, at) = look::recent_frame(&id, &analysis.counters, Instant::now())?;
    let view = RgbView::new(image.width(), image.height(), image.as_raw()).map_err(|e| {
        LookError::Detect {
            camera: id.to_string(),
            detail: e.to_string(),
        }
    })?;
    let detections = detector.detect(view).map_err(|e| LookError::Detect {
        camera: id.to_string(),
        detail: crate::telemetry::chain(&e),
    })?;
    Ok(Look {
        camera: id,
        at,
        image,
        detections,
    })
}

fn run_detector(detector: &mut Detector, frame: &Frame) -> Result<Vec<Detection>, DetectError> {
    let view = RgbView::new(
        frame.image.width(),
        frame.image.height(),
        frame.image.as_raw(),
    )?;
    detector.detect(view)
}

/// Appends a latency sample, dropping the oldest beyond [`LATENCY_SAMPLES`].
pub(crate) fn push_bounded(v: &mut VecDeque<Duration>, d: Duration) {
    if v.len() >= LATENCY_SAMPLES {
        v.pop_front();
    }
    v.push_back(d);
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, CameraError> {
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(f)
        .map_err(|source| CameraError::Thread { name, source })
}

fn camera_source(id: &CameraId) -> Source {
    Source {
        kind: SourceKind::Camera,
        id: id.clone().into(),
    }
}

/// How a detection is drawn on evidence: its box in frame pixels, label and score; persons are
/// private (blurred where the category's policy says so).
pub fn detection_mark(d: &Detection) -> Mark {
    let x = d.bbox.x1.max(0.0);
    let y = d.bbox.y1.max(0.0);
    Mark {
        rect: PixelRect {
            x: x as u32,
            y: y as u32,
            width: (d.bbox.x2 - x).max(1.0) as u32,
            height: (d.bbox.y2 - y).max(1.0) as u32,
        },
        label: d.label.clone(),
        score: d.score,
        private: d.label == "person",
    }
}

fn report_unrenderable(cam: &CameraConfig, error: &str, counters: &CameraCounters) {
    tracing::error!(camera = %cam.id, source = %cam.source.redacted(), error = %error, "camera cannot be started");
    counters
        .state
        .store(CameraState::Offline as u8, Ordering::Relaxed);
    *counters
        .last_error
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = Some(error.to_string());
}

/// An RTSP source's URL and its redacted form (to take the credentials out of logs).
fn redacted_source(source: &hardware::camera::CameraSource) -> Option<(String, String)> {
    match source {
        hardware::camera::CameraSource::Rtsp { url, .. } => {
            Some((url.clone(), hardware::camera::redact_url(url)))
        }
        _ => None,
    }
}

fn execution_provider(name: &str) -> models::ExecutionProviderKind {
    use models::ExecutionProviderKind as K;
    match name {
        "cuda" => K::Cuda,
        "tensorrt" => K::Tensorrt,
        "openvino" => K::Openvino,
        _ => K::Cpu,
    }
}

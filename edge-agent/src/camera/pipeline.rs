//! The GStreamer side of one camera: a named thread (`camera-<id>`) that builds the rendered
//! pipeline, pulls RGB frames from its appsink, watches its bus, and rebuilds it after an
//! error, an end of stream or a stall, with exponential backoff and jitter.
//!
//! For a live source the appsink keeps only the newest frame (`max-buffers=1 drop=true`), so a
//! slow consumer never makes the pipeline queue, and each frame goes through the motion gate
//! into the shared [`DetectorQueue`] (drop-oldest per camera, counted). A file is not live:
//! nothing is gained by dropping its frames, so its appsink waits for this thread and this
//! thread waits for room in the detector queue; a file plays at its own rate or slower, and
//! every frame the rate limit keeps is detected. Health changes past the debounce
//! become device-fault / recovery observations, sent with backpressure (`blocking_send`: this
//! is a plain thread, never an executor thread).
//!
//! This module must not run inference or evaluate rules.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;
use image::RgbImage;
use protocol::{AttrValue, Catalog, Location, Source};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::config::HealthConfig;
use super::health::{Health, HealthEvent};
use super::motion::MotionGate;
use super::scheduler::DetectorQueue;
use super::{CameraCounters, Frame, LATEST_FRAME_EVERY, LatestFrame};
use crate::events::Observation;

/// Name of the appsink in rendered pipelines.
pub(crate) const SINK_NAME: &str = "frames";

/// Everything one camera thread owns.
pub(crate) struct CameraWorker {
    pub(crate) index: usize,
    pub(crate) source: Source,
    pub(crate) location: Location,
    pub(crate) description: String,
    pub(crate) health: HealthConfig,
    pub(crate) gate: MotionGate,
    pub(crate) queue: Arc<DetectorQueue<Frame>>,
    /// The source can wait (a file): hold it back while the detector queue is full instead of
    /// superseding frames.
    pub(crate) wait_for_detector: bool,
    pub(crate) counters: Arc<CameraCounters>,
    pub(crate) observations: mpsc::Sender<Observation>,
    pub(crate) cancel: CancellationToken,
    pub(crate) rng: fastrand::Rng,
}

/// How a streaming session ended.
enum SessionEnd {
    Cancelled,
    Failed(String),
    Stalled,
}

impl CameraWorker {
    /// Runs until `cancel`; every failure is handled here (retry), none ends the thread.
    pub(crate) fn run(mut self) {
        let camera = self.source.id.to_string();
        let mut health = Health::new(self.health.fault_debounce, Instant::now());
        let mut backoff = self.health.reconnect_min;
        let mut was_failing = false;
        while !self.cancel.is_cancelled() {
            health.on_connecting(Instant::now());
            self.publish(&health);
            let frames_before = self.counters.frames.load(Ordering::Relaxed);
            let end = match self.build() {
                Ok((pipeline, sink)) => {
                    let end = self.stream(&pipeline, &sink, &mut health, &mut backoff);
                    // Tearing down a pipeline blocks until its threads stop; this is our thread.
                    let _ = pipeline.set_state(gst::State::Null);
                    end
                }
                Err(reason) => SessionEnd::Failed(reason),
            };
            let now = Instant::now();
            if self.counters.frames.load(Ordering::Relaxed) > frames_before {
                was_failing = false;
            }
            match end {
                SessionEnd::Cancelled => break,
                SessionEnd::Failed(reason) => {
                    if !was_failing {
                        tracing::warn!(camera = %camera, error = %reason, "camera stream failed, reconnecting");
                    }
                    was_failing = true;
                    health.on_failed(now, reason);
                }
                SessionEnd::Stalled => {
                    if !was_failing {
                        tracing::warn!(camera = %camera, "camera delivers no frames, rebuilding its pipeline");
                    }
                    was_failing = true;
                    health.on_stalled(now);
                }
            }
            self.publish(&health);
            self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
            // ±25 % jitter so cameras behind one dead switch do not reconnect in lockstep.
            let jitter = 0.75 + 0.5 * self.rng.f64();
            let delay = backoff.mul_f64(jitter);
            backoff = (backoff * 2).min(self.health.reconnect_max);
            let deadline = Instant::now() + delay;
            while !self.cancel.is_cancelled() {
                let now = Instant::now();
                self.emit(health.tick(now));
                if now >= deadline {
                    break;
                }
                std::thread::sleep((deadline - now).min(TICK));
            }
        }
        tracing::debug!(camera = %camera, "camera thread stopped");
    }

    fn build(&self) -> Result<(gst::Pipeline, gst_app::AppSink), String> {
        let element = gst::parse::launch(&self.description).map_err(|e| e.to_string())?;
        let pipeline = element
            .downcast::<gst::Pipeline>()
            .map_err(|_| "the description is not a pipeline".to_owned())?;
        let sink = pipeline
            .by_name(SINK_NAME)
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            .ok_or_else(|| "the pipeline has no appsink".to_owned())?;
        Ok((pipeline, sink))
    }

    fn stream(
        &mut self,
        pipeline: &gst::Pipeline,
        sink: &gst_app::AppSink,
        health: &mut Health,
        backoff: &mut Duration,
    ) -> SessionEnd {
        let Some(bus) = pipeline.bus() else {
            return SessionEnd::Failed("the pipeline has no bus".to_owned());
        };
        if let Err(e) = pipeline.set_state(gst::State::Playing) {
            let detail = bus_error(&bus).unwrap_or_else(|| e.to_string());
            return SessionEnd::Failed(detail);
        }
        let mut last_frame = Instant::now();
        loop {
            if self.cancel.is_cancelled() {
                return SessionEnd::Cancelled;
            }
            if let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_mseconds(100)) {
                let now = Instant::now();
                *backoff = self.health.reconnect_min;
                let event = health.on_frame(now);
                self.publish(health);
                self.emit(event);
                match to_frame(&sample, self.index, now) {
                    Some(frame) => self.offer(frame, now),
                    None => {
                        self.counters.bad_frames.fetch_add(1, Ordering::Relaxed);
                    }
                }
                // A file held back by the detector is not stalled: count from the hand-over.
                last_frame = Instant::now();
            }
            if self.counters.reconnect.swap(false, Ordering::Relaxed) {
                return SessionEnd::Failed("reconnect requested on the box page".to_owned());
            }
            if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error, gst::MessageType::Eos]) {
                return SessionEnd::Failed(match msg.view() {
                    gst::MessageView::Error(err) => error_text(err),
                    _ => "end of stream".to_owned(),
                });
            }
            let now = Instant::now();
            if now.saturating_duration_since(last_frame) >= self.health.stall_after {
                return SessionEnd::Stalled;
            }
            self.emit(health.tick(now));
        }
    }

    /// Motion gate, then the detector queue.
    fn offer(&mut self, frame: Frame, now: Instant) {
        let c = &self.counters;
        c.frames.fetch_add(1, Ordering::Relaxed);
        {
            let mut latest = c.latest.lock().unwrap_or_else(|p| p.into_inner());
            if latest
                .as_ref()
                .is_none_or(|l| now.saturating_duration_since(l.captured) >= LATEST_FRAME_EVERY)
            {
                *latest = Some(LatestFrame {
                    image: Arc::new(frame.image.clone()),
                    wall: frame.wall,
                    captured: now,
                });
            }
        }
        let active = c.active_tracks.load(Ordering::Relaxed);
        let decision = self.gate.decide(
            frame.image.as_raw(),
            frame.image.width(),
            frame.image.height(),
            now,
            active,
        );
        if !decision.passes() {
            c.gated.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.wait_for_detector {
            // Handed back only when the camera stops.
            let cancel = &self.cancel;
            let _ = self
                .queue
                .push_wait(self.index, frame, TICK, || cancel.is_cancelled());
        } else if self.queue.push(self.index, frame).is_some() {
            c.superseded.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn publish(&self, health: &Health) {
        self.counters
            .state
            .store(health.state() as u8, Ordering::Relaxed);
        let mut last = self
            .counters
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *last = health.last_error().map(str::to_owned);
    }

    fn emit(&self, event: Option<HealthEvent>) {
        let Some(event) = event else { return };
        let catalog = Catalog::embedded();
        let (key, rule, mut attributes) = match &event {
            HealthEvent::Fault {
                kind,
                lasted,
                reason,
            } => {
                tracing::error!(camera = %self.source.id, fault = kind.category_key(), "camera fault");
                let mut a = std::collections::BTreeMap::new();
                a.insert(
                    "down_secs".to_owned(),
                    AttrValue::Float(lasted.as_secs_f64()),
                );
                if let Some(r) = reason {
                    a.insert("error".to_owned(), AttrValue::Text(r.clone()));
                }
                (kind.category_key(), "camera_fault", a)
            }
            HealthEvent::Recovered { kind, down_for } => {
                tracing::info!(camera = %self.source.id, "camera recovered");
                let mut a = std::collections::BTreeMap::new();
                a.insert(
                    "fault".to_owned(),
                    AttrValue::Text(kind.category_key().to_owned()),
                );
                a.insert(
                    "down_secs".to_owned(),
                    AttrValue::Float(down_for.as_secs_f64()),
                );
                ("device.recovered", "camera_recovered", a)
            }
        };
        let Some(category) = catalog.resolve(key) else {
            return;
        };
        attributes.insert(
            "camera".to_owned(),
            AttrValue::Text(self.source.id.to_string()),
        );
        let observation = Observation {
            source: self.source.clone(),
            rule: rule.to_owned(),
            zone: None,
            track: None,
            category: category.code.clone(),
            severity: None,
            observed_at: wall_now(),
            location: self.location,
            grid: None,
            attributes,
            snapshot: None,
        };
        self.counters.observations.fetch_add(1, Ordering::Relaxed);
        // A closed channel means the agent is stopping; the cancel check ends the loop.
        let _ = self.observations.blocking_send(observation);
    }
}

/// Copies a sample's RGB pixels (rows may be padded) into a tight image.
pub(crate) fn to_frame(sample: &gst::Sample, camera: usize, captured: Instant) -> Option<Frame> {
    let caps = sample.caps()?;
    let info = gst_video::VideoInfo::from_caps(caps).ok()?;
    let buffer = sample.buffer()?;
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info).ok()?;
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let stride = usize::try_from(*frame.plane_stride().first()?).ok()?;
    let data = frame.plane_data(0).ok()?;
    let mut pixels = Vec::with_capacity(w * h * 3);
    for row in 0..h {
        let start = row * stride;
        pixels.extend_from_slice(data.get(start..start + w * 3)?);
    }
    let image = RgbImage::from_raw(frame.width(), frame.height(), pixels)?;
    Some(Frame {
        camera,
        captured,
        wall: wall_now(),
        image,
    })
}

pub(crate) fn bus_error(bus: &gst::Bus) -> Option<String> {
    let msg = bus.pop_filtered(&[gst::MessageType::Error])?;
    match msg.view() {
        gst::MessageView::Error(err) => Some(error_text(err)),
        _ => None,
    }
}

pub(crate) fn error_text(err: &gst::message::Error) -> String {
    let src = err
        .src()
        .map(|s| s.path_string().to_string())
        .unwrap_or_default();
    format!("{src}: {}", err.error())
}

pub(crate) use crate::clock::now as wall_now;

/// Longest sleep between cancel and health checks while waiting to reconnect.
const TICK: Duration = Duration::from_millis(100);

//! A short, bounded look at one camera for the technician tools (`doctor`, `test-camera`): build
//! the camera's pipeline as the agent would, pull frames for at most a given time, and report how
//! many arrived, at what rate, and the last one.
//!
//! Unlike the camera threads it never reconnects and counts nothing in the agent's stats; it
//! must not be used by the running agent.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use hardware::board::{Board, Codec};
use hardware::camera::{CameraSource, FrameSpec, RenderError, render};
use image::RgbImage;

use super::pipeline::{SINK_NAME, bus_error, error_text, to_frame};

/// What to look at and for how long.
#[derive(Debug, Clone)]
pub struct ProbeSpec {
    /// The source.
    pub source: CameraSource,
    /// Its codec.
    pub codec: Codec,
    /// Frame size delivered.
    pub width: NonZeroU32,
    /// Frame height delivered.
    pub height: NonZeroU32,
    /// Most frames per second delivered.
    pub max_fps: NonZeroU32,
    /// The board (decoder choice).
    pub board: Board,
    /// Give up after this long.
    pub timeout: Duration,
    /// Stop after this many frames.
    pub max_frames: u64,
}

/// What the look found.
#[derive(Debug, Clone)]
pub struct Probe {
    /// Frames received.
    pub frames: u64,
    /// Frames per second between the first and the last frame (needs two frames).
    pub fps: Option<f64>,
    /// Time to the first frame.
    pub first_frame_after: Duration,
    /// The last frame.
    pub last: RgbImage,
}

/// Why no frame came.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// GStreamer could not start.
    #[error("failed to initialise GStreamer")]
    Gstreamer(#[source] gst::glib::Error),
    /// The source cannot be turned into a pipeline on this box.
    #[error("the camera source cannot be rendered into a pipeline")]
    Render(#[from] RenderError),
    /// The pipeline could not be built or started.
    #[error("the camera pipeline failed: {0}")]
    Pipeline(String),
    /// The stream ended or failed before the first frame.
    #[error("the camera stream failed before the first frame: {0}")]
    Stream(String),
    /// Nothing arrived in time.
    #[error("no frame within {} ms", .0.as_millis())]
    NoFrame(Duration),
}

/// Looks at the camera for at most `spec.timeout` (blocking: call from a plain thread or the
/// blocking pool).
///
/// # Errors
/// [`ProbeError`] when no frame arrived.
pub fn probe(spec: &ProbeSpec) -> Result<Probe, ProbeError> {
    gst::init().map_err(ProbeError::Gstreamer)?;
    let frames = FrameSpec {
        width: spec.width,
        height: spec.height,
        max_fps: spec.max_fps,
        sink_name: SINK_NAME.to_owned(),
    };
    let has_element = |name: &str| gst::ElementFactory::find(name).is_some();
    let source = super::credentials::resolve(&spec.source)
        .map_err(|e| ProbeError::Pipeline(e.to_string()))?;
    let rendered = render(
        &source,
        spec.codec,
        &spec.board.profile(),
        &frames,
        &has_element,
    )?;
    let pipeline = gst::parse::launch(&rendered.description)
        .map_err(|e| ProbeError::Pipeline(e.to_string()))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| ProbeError::Pipeline("the description is not a pipeline".to_owned()))?;
    let result = pull(&pipeline, spec);
    // Tearing down blocks until the pipeline's threads stop.
    let _ = pipeline.set_state(gst::State::Null);
    result
}

fn pull(pipeline: &gst::Pipeline, spec: &ProbeSpec) -> Result<Probe, ProbeError> {
    let sink = pipeline
        .by_name(SINK_NAME)
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| ProbeError::Pipeline("the pipeline has no appsink".to_owned()))?;
    let bus = pipeline
        .bus()
        .ok_or_else(|| ProbeError::Pipeline("the pipeline has no bus".to_owned()))?;
    if let Err(e) = pipeline.set_state(gst::State::Playing) {
        return Err(ProbeError::Stream(
            bus_error(&bus).unwrap_or_else(|| e.to_string()),
        ));
    }
    let started = Instant::now();
    let deadline = started + spec.timeout;
    let mut count = 0u64;
    let mut first: Option<Instant> = None;
    let mut last_at = started;
    let mut last: Option<RgbImage> = None;
    while count < spec.max_frames && Instant::now() < deadline {
        if let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_mseconds(100)) {
            let now = Instant::now();
            if let Some(frame) = to_frame(&sample, 0, now) {
                count += 1;
                first.get_or_insert(now);
                last_at = now;
                last = Some(frame.image);
            }
        }
        if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error, gst::MessageType::Eos]) {
            let detail = match msg.view() {
                gst::MessageView::Error(err) => error_text(err),
                _ => "end of stream".to_owned(),
            };
            if count == 0 {
                return Err(ProbeError::Stream(detail));
            }
            break;
        }
    }
    let (Some(first), Some(last)) = (first, last) else {
        return Err(ProbeError::NoFrame(spec.timeout));
    };
    let span = last_at.saturating_duration_since(first).as_secs_f64();
    Ok(Probe {
        frames: count,
        fps: (count >= 2 && span > 0.0).then(|| (count - 1) as f64 / span),
        first_frame_after: first.saturating_duration_since(started),
        last,
    })
}

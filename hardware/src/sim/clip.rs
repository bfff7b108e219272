//! Excerpts of test clips (feature `rtsp-sim`): copies a time window of an H.264 MP4 into a new
//! MP4 without re-encoding, so a test can play just the seconds it has looked at.
//!
//! The cut is made in decoding order: it starts at the first keyframe at or after the asked
//! start (a remux cannot start elsewhere) and ends before the first frame decoded at or after
//! the asked end, so every kept frame can be decoded. Timestamps are shifted so the excerpt
//! starts near zero; [`Excerpt::offset`] says by how much, so a test can map the excerpt's times
//! back to the clip's. The pixels are the clip's own.
//!
//! This is a simulator helper for tests, benchmarks and demos: production code must not use it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;

/// A written excerpt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excerpt {
    /// The new file.
    pub path: PathBuf,
    /// What was subtracted from the clip's timestamps: clip time = excerpt time + offset.
    pub offset: Duration,
    /// Frames copied.
    pub frames: u64,
}

/// Why an excerpt could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClipError {
    /// GStreamer could not be initialised.
    #[error("failed to initialise GStreamer")]
    Init(#[source] gst::glib::Error),
    /// A path cannot be put in a launch description.
    #[error("path `{}` contains a control character", path.display())]
    BadPath {
        /// The path.
        path: PathBuf,
    },
    /// The window is empty.
    #[error("the excerpt's end {end:?} is not after its start {start:?}")]
    EmptyWindow {
        /// Asked start.
        start: Duration,
        /// Asked end.
        end: Duration,
    },
    /// No keyframe lies in the window.
    #[error("`{}` has no keyframe between {start:?} and {end:?}", clip.display())]
    NoKeyframe {
        /// The clip.
        clip: PathBuf,
        /// Asked start.
        start: Duration,
        /// Asked end.
        end: Duration,
    },
    /// The pipeline failed (unreadable or non-H.264 input, unwritable output).
    #[error("failed to cut `{}`: {detail}", clip.display())]
    Pipeline {
        /// The clip.
        clip: PathBuf,
        /// What GStreamer said.
        detail: String,
    },
}

/// Copies the frames of the H.264 MP4 `clip` from the first keyframe at or after `start` up to
/// `end` into the MP4 `out`, without re-encoding.
///
/// # Errors
/// [`ClipError`] when GStreamer cannot start, a path cannot be quoted, the window is empty or
/// holds no keyframe, or the clip cannot be read or the excerpt written.
pub fn excerpt(
    clip: &Path,
    start: Duration,
    end: Duration,
    out: &Path,
) -> Result<Excerpt, ClipError> {
    if end <= start {
        return Err(ClipError::EmptyWindow { start, end });
    }
    gst::init().map_err(ClipError::Init)?;
    let failed = |detail: String| ClipError::Pipeline {
        clip: clip.to_owned(),
        detail,
    };
    let description = format!(
        "filesrc location={} ! qtdemux ! h264parse ! identity name=cut ! mp4mux ! filesink location={}",
        quoted(clip)?,
        quoted(out)?
    );
    let pipeline = gst::parse::launch(&description)
        .map_err(|e| failed(e.to_string()))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| failed("not a pipeline".to_owned()))?;
    let cut = Arc::new(Mutex::new(Cut {
        start: clock_time(start),
        end: clock_time(end),
        offset: None,
        done: false,
        frames: 0,
    }));
    let pad = pipeline
        .by_name("cut")
        .and_then(|e| e.static_pad("sink"))
        .ok_or_else(|| failed("no cut element".to_owned()))?;
    {
        let cut = Arc::clone(&cut);
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            let Some(gst::PadProbeData::Buffer(buffer)) = info.data.as_mut() else {
                return gst::PadProbeReturn::Ok;
            };
            let mut cut = cut.lock().unwrap_or_else(|p| p.into_inner());
            if cut.keep(buffer) {
                gst::PadProbeReturn::Ok
            } else {
                // Handled: the binding drops the buffer (with `Drop`, GStreamer would unref the
                // pointer the binding already took).
                gst::PadProbeReturn::Handled
            }
        });
    }
    let result = (|| {
        let bus = pipeline.bus().ok_or_else(|| failed("no bus".to_owned()))?;
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| failed(bus_error(&bus).unwrap_or_else(|| e.to_string())))?;
        let msg = bus
            .timed_pop_filtered(
                gst::ClockTime::from_seconds(60),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            )
            .ok_or_else(|| failed("no end of stream within 60 s".to_owned()))?;
        if let gst::MessageView::Error(err) = msg.view() {
            return Err(failed(err.error().to_string()));
        }
        Ok(())
    })();
    let _ = pipeline.set_state(gst::State::Null);
    if result.is_err() {
        // a half-written excerpt is no excerpt
        let _ = std::fs::remove_file(out);
    }
    result?;
    let cut = cut.lock().unwrap_or_else(|p| p.into_inner());
    let Some(offset) = cut.offset else {
        let _ = std::fs::remove_file(out);
        return Err(ClipError::NoKeyframe {
            clip: clip.to_owned(),
            start,
            end,
        });
    };
    Ok(Excerpt {
        path: out.to_owned(),
        offset: Duration::from_nanos(offset.nseconds()),
        frames: cut.frames,
    })
}

/// The cut's state, updated per buffer in decoding order.
struct Cut {
    start: gst::ClockTime,
    end: gst::ClockTime,
    /// Set at the first kept keyframe: its decoding time.
    offset: Option<gst::ClockTime>,
    done: bool,
    frames: u64,
}

impl Cut {
    /// Whether to keep `buffer`; shifts the kept ones' timestamps.
    fn keep(&mut self, buffer: &mut gst::Buffer) -> bool {
        let Some(pts) = buffer.pts() else {
            return self.offset.is_some() && !self.done;
        };
        let dts = buffer.dts().unwrap_or(pts);
        if self.done || dts >= self.end {
            self.done = true;
            return false;
        }
        let offset = match self.offset {
            Some(o) => o,
            None => {
                if pts < self.start || buffer.flags().contains(gst::BufferFlags::DELTA_UNIT) {
                    return false;
                }
                *self.offset.insert(dts)
            }
        };
        let b = buffer.make_mut();
        b.set_pts(pts.checked_sub(offset));
        b.set_dts(dts.checked_sub(offset));
        self.frames += 1;
        true
    }
}

fn bus_error(bus: &gst::Bus) -> Option<String> {
    let msg = bus.pop_filtered(&[gst::MessageType::Error])?;
    match msg.view() {
        gst::MessageView::Error(err) => Some(err.error().to_string()),
        _ => None,
    }
}

/// `d` as a clock time; a longer span than a clock time holds is the longest one (`u64::MAX`
/// nanoseconds means "none" to GStreamer, and `from_nseconds` refuses it).
fn clock_time(d: Duration) -> gst::ClockTime {
    let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    gst::ClockTime::from_nseconds(ns.min(gst::ClockTime::MAX.nseconds()))
}

/// `path` quoted for a launch description (see [`crate::camera::quote`]).
fn quoted(path: &Path) -> Result<String, ClipError> {
    crate::camera::quote(&path.to_string_lossy(), "path").map_err(|_| ClipError::BadPath {
        path: path.to_owned(),
    })
}

//! `edge-agent test-camera URL [--model NAME] [--zone POLYGON] --out snap.jpg`: connect to a
//! camera, grab frames for a bounded time, run the detector on the last one, write it annotated
//! (boxes, labels, and the zone outline) and print the frame rate and the detections.
//!
//! It runs nothing of the agent and writes only the snapshot.

use std::io::Write;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hardware::board::{Board, Codec};
use hardware::camera::CameraSource;
use image::{Rgb, RgbImage};
use models::{Detector, RgbView, SessionConfig};

use crate::camera::probe::{ProbeError, ProbeSpec, probe};
use crate::detect::{DetectCommandError, draw};

/// What `test-camera` was asked to do.
#[derive(Debug, Clone)]
pub struct TestCameraOptions {
    /// `rtsp://…` URL, or a video file path.
    pub url: String,
    /// Zoo name or manifest. Default `coco-ssd`.
    pub model: String,
    /// A zone, normalised image points, to draw and test detections against.
    pub zone: Option<Vec<(f32, f32)>>,
    /// Where the annotated snapshot goes (JPEG or PNG by extension).
    pub out: PathBuf,
    /// Give up when no frame came within this time.
    pub timeout: Duration,
    /// Frames to grab (the rate is measured over them).
    pub frames: u64,
    /// Frame size.
    pub width: NonZeroU32,
    /// Frame height.
    pub height: NonZeroU32,
    /// Codec of the stream.
    pub codec: Codec,
    /// Board (decoder choice).
    pub board: Board,
    /// ONNX Runtime library, overriding the default places.
    pub ort_lib: Option<PathBuf>,
    /// A file holding the camera's `user:password` (so that they need not be typed).
    pub credentials_path: Option<PathBuf>,
}

/// Why `test-camera` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestCameraError {
    /// No frame came from the camera.
    #[error("camera `{url}` gave no frame")]
    Camera {
        /// The URL, credentials redacted.
        url: String,
        /// Why.
        #[source]
        source: ProbeError,
    },
    /// The model could not be loaded or run.
    #[error(transparent)]
    Model(#[from] DetectCommandError),
    /// The snapshot could not be written.
    #[error("failed to write the snapshot `{}`", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: image::ImageError,
    },
    /// Writing the report failed.
    #[error("failed to write output")]
    Output(#[from] std::io::Error),
}

/// Parses `--zone`: at least three `x,y` points in 0..=1, separated by spaces or `;`.
///
/// # Errors
/// A message naming the bad point.
pub fn parse_zone(text: &str) -> Result<Vec<(f32, f32)>, String> {
    let mut points = Vec::new();
    for part in text.split([' ', ';']).filter(|p| !p.is_empty()) {
        let parsed = part.split_once(',').and_then(|(x, y)| {
            Some((x.trim().parse::<f32>().ok()?, y.trim().parse::<f32>().ok()?))
        });
        match parsed {
            Some((x, y)) if (0.0..=1.0).contains(&x) && (0.0..=1.0).contains(&y) => {
                points.push((x, y))
            }
            _ => return Err(format!("`{part}` is not a point x,y with both in 0..1")),
        }
    }
    if points.len() < 3 {
        return Err(format!(
            "a zone needs at least 3 points, got {}",
            points.len()
        ));
    }
    Ok(points)
}

/// Runs `test-camera`, reporting to `out`.
///
/// # Errors
/// [`TestCameraError`] naming the camera, the model or the snapshot file.
pub fn run_test_camera(
    opts: &TestCameraOptions,
    out: &mut impl Write,
) -> Result<(), TestCameraError> {
    let shown = hardware::camera::redact_url(&opts.url);
    let source = if opts.url.contains("://") {
        CameraSource::Rtsp {
            url: opts.url.clone(),
            tcp: true,
            latency_ms: 200,
            tcp_timeout_ms: 5000,
            credentials_path: opts.credentials_path.clone(),
        }
    } else {
        CameraSource::File {
            path: PathBuf::from(&opts.url),
        }
    };
    writeln!(out, "connecting to {shown} ...")?;
    let spec = ProbeSpec {
        source,
        codec: opts.codec,
        width: opts.width,
        height: opts.height,
        max_fps: NonZeroU32::new(30).unwrap_or(NonZeroU32::MIN),
        board: opts.board,
        timeout: opts.timeout,
        max_frames: opts.frames.max(1),
    };
    let grab = probe(&spec).map_err(|source| TestCameraError::Camera {
        url: shown.clone(),
        source,
    })?;
    let fps = grab
        .fps
        .map_or_else(|| "n/a".to_owned(), |f| format!("{f:.1}"));
    writeln!(
        out,
        "frames: {} at {fps} fps, {}x{}, first frame after {} ms",
        grab.frames,
        grab.last.width(),
        grab.last.height(),
        grab.first_frame_after.as_millis()
    )?;
    let (runtime, manifest) = crate::detect::resolve_model(&opts.model, opts.ort_lib.as_deref())?;
    let model = format!("{}@{}", manifest.name, manifest.version);
    let mut detector = Detector::from_manifest(&runtime, manifest, &SessionConfig::default())
        .map_err(DetectCommandError::from)?;
    let mut img = grab.last;
    let view = RgbView::new(img.width(), img.height(), img.as_raw()).map_err(|e| {
        DetectCommandError::Detect {
            image: PathBuf::from(&shown),
            source: e.into(),
        }
    })?;
    let started = Instant::now();
    let detections = detector
        .detect(view)
        .map_err(|source| DetectCommandError::Detect {
            image: PathBuf::from(&shown),
            source,
        })?;
    writeln!(
        out,
        "model {model}: {} detection(s) in {} ms",
        detections.len(),
        started.elapsed().as_millis()
    )?;
    let (w, h) = (img.width() as f32, img.height() as f32);
    for d in &detections {
        let in_zone = opts.zone.as_ref().map(|z| {
            // The object's ground point: its box's bottom centre, as the zone rules use.
            let p = ((d.bbox.x1 + d.bbox.x2) / 2.0 / w, d.bbox.y2 / h);
            if inside(z, p) {
                "  in zone"
            } else {
                "  outside zone"
            }
        });
        writeln!(
            out,
            "  {:<14} {:.2}  [{:.0}, {:.0}, {:.0}, {:.0}]{}",
            d.label,
            d.score,
            d.bbox.x1,
            d.bbox.y1,
            d.bbox.x2,
            d.bbox.y2,
            in_zone.unwrap_or("")
        )?;
    }
    draw(&mut img, &detections);
    if let Some(zone) = &opts.zone {
        outline_polygon(&mut img, zone);
    }
    img.save(&opts.out)
        .map_err(|source| TestCameraError::Write {
            path: opts.out.clone(),
            source,
        })?;
    writeln!(out, "snapshot written to {}", opts.out.display())?;
    Ok(())
}

/// Ray casting: whether `p` lies inside `polygon` (normalised coordinates).
fn inside(polygon: &[(f32, f32)], (x, y): (f32, f32)) -> bool {
    let mut inside = false;
    let mut j = polygon.len() - 1;
    for i in 0..polygon.len() {
        let (xi, yi) = polygon[i];
        let (xj, yj) = polygon[j];
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

/// Draws the zone's outline in yellow, 2 px wide.
fn outline_polygon(img: &mut RgbImage, polygon: &[(f32, f32)]) {
    let (w, h) = (img.width() as f32, img.height() as f32);
    for (i, a) in polygon.iter().enumerate() {
        let b = polygon[(i + 1) % polygon.len()];
        let (x0, y0, x1, y1) = (a.0 * w, a.1 * h, b.0 * w, b.1 * h);
        let steps = (x1 - x0).abs().max((y1 - y0).abs()).ceil().max(1.0) as u32;
        for s in 0..=steps {
            let t = s as f32 / steps as f32;
            let (x, y) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
            for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                let (px, py) = (x as i64 + dx, y as i64 + dy);
                if px >= 0 && py >= 0 && (px as u32) < img.width() && (py as u32) < img.height() {
                    img.put_pixel(px as u32, py as u32, Rgb([255, 220, 0]));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_parse_and_contain_points() {
        let z = parse_zone("0.1,0.5 0.9,0.5;0.9,1.0 0.1,1.0").unwrap();
        assert_eq!(z.len(), 4);
        assert!(inside(&z, (0.5, 0.75)));
        assert!(!inside(&z, (0.5, 0.25)));
        assert!(parse_zone("0.1,0.5 2,0.5 0.3,0.3").is_err());
        assert!(parse_zone("0.1,0.5 0.2,0.5").is_err());
    }
}

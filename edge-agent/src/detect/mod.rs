//! The `detect` and `model inspect` commands: run a model on still images, print what it finds
//! (text or JSON lines), optionally write the image with boxes drawn; describe an `.onnx` file and
//! suggest a manifest for Ultralytics exports.
//!
//! Main types: [`DetectOptions`], [`DetectCommandError`]; functions [`run_detect`] and
//! [`run_inspect`]. `main.rs` only parses flags into these. Output goes to the writer given, so
//! tests capture it. This module must not decide anything about events or talk to the hub.

pub(crate) mod annotate;

use std::io::Write;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use models::image_file::{ImageFileError, read_rgb};
use models::{
    DetectError, Detection, Detector, ExecutionProviderKind, LoadError, ManifestError,
    ModelManifest, RgbView, Runtime, RuntimeError, SessionConfig,
};
use serde::Serialize;

pub use annotate::draw;

/// What `edge-agent detect` was asked to do.
#[derive(Debug, Clone)]
pub struct DetectOptions {
    /// A zoo name (`coco-ssd`), a manifest `.toml`, or an Ultralytics `.onnx` export.
    pub model: String,
    /// The images to run on.
    pub images: Vec<PathBuf>,
    /// Print JSON lines instead of text.
    pub json: bool,
    /// Write the annotated image here (with `-N` before the extension for several images).
    pub out: Option<PathBuf>,
    /// ONNX Runtime library, overriding `ORT_DYLIB_PATH` and the default places.
    pub ort_lib: Option<PathBuf>,
    /// Intra-op threads.
    pub threads: NonZeroUsize,
    /// Execution provider to try first.
    pub execution_provider: ExecutionProviderKind,
}

/// Why `detect` or `model inspect` failed.
#[derive(Debug, thiserror::Error)]
pub enum DetectCommandError {
    /// ONNX Runtime could not be found or loaded.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The manifest could not be read, or the name is unknown.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The model could not be loaded or disagrees with its manifest.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// An `.onnx` was given without manifest and is not an Ultralytics export.
    #[error(
        "`{path}` has no Ultralytics metadata to build a manifest from; write one (see `edge-agent model inspect`)"
    )]
    NoManifest {
        /// The `.onnx` file.
        path: PathBuf,
    },
    /// An input image could not be read.
    #[error(transparent)]
    Image(#[from] ImageFileError),
    /// Inference failed on an image.
    #[error("detection failed on `{image}`")]
    Detect {
        /// The image.
        image: PathBuf,
        /// Why.
        #[source]
        source: DetectError,
    },
    /// The annotated image could not be written.
    #[error("failed to write annotated image `{path}`")]
    WriteImage {
        /// The output file.
        path: PathBuf,
        /// The encoder's error.
        #[source]
        source: image::ImageError,
    },
    /// Writing to the output stream failed.
    #[error("failed to write output")]
    Output(#[from] std::io::Error),
    /// Encoding a JSON line failed.
    #[error("failed to encode a detection as JSON")]
    Json(#[from] serde_json::Error),
}

/// One JSON line of `detect --json`.
#[derive(Debug, Serialize)]
struct JsonLine<'a> {
    image: String,
    label: &'a str,
    /// Rounded to 4 decimals: more digits of an f32 widened to f64 would only be noise.
    score: f64,
    /// Original-image pixels, rounded to 0.1 px for the same reason.
    #[serde(rename = "box")]
    bbox: [f64; 4],
}

/// Runs `edge-agent detect`: loads the model once, then each image in turn.
///
/// # Errors
/// The first failure, as a [`DetectCommandError`] naming the file involved.
pub fn run_detect(opts: &DetectOptions, out: &mut impl Write) -> Result<(), DetectCommandError> {
    let (runtime, manifest) = resolve_model(&opts.model, opts.ort_lib.as_deref())?;
    let config = SessionConfig {
        intra_threads: opts.threads,
        execution_provider: opts.execution_provider,
        ..SessionConfig::default()
    };
    let mut detector = Detector::from_manifest(&runtime, manifest, &config)?;
    for (i, image_path) in opts.images.iter().enumerate() {
        let mut img = read_rgb(image_path)?;
        let frame = RgbView::new(img.width(), img.height(), img.as_raw()).map_err(|e| {
            DetectCommandError::Detect {
                image: image_path.clone(),
                source: e.into(),
            }
        })?;
        let detections = detector
            .detect(frame)
            .map_err(|source| DetectCommandError::Detect {
                image: image_path.clone(),
                source,
            })?;
        write_detections(out, image_path, &detections, opts.json)?;
        if let Some(target) = &opts.out {
            let path = numbered(target, i, opts.images.len());
            annotate::draw(&mut img, &detections);
            img.save(&path)
                .map_err(|source| DetectCommandError::WriteImage { path, source })?;
        }
    }
    Ok(())
}

/// Runs `edge-agent model inspect`: prints the model's declarations and, for Ultralytics exports,
/// a suggested manifest.
///
/// # Errors
/// [`DetectCommandError::Runtime`], [`DetectCommandError::Load`] or [`DetectCommandError::Output`].
pub fn run_inspect(
    path: &Path,
    ort_lib: Option<&Path>,
    out: &mut impl Write,
) -> Result<(), DetectCommandError> {
    let runtime = Runtime::locate_and_load(ort_lib)?;
    let info = models::inspect::inspect(&runtime, path)?;
    write!(out, "{info}")?;
    match info.suggested_manifest().map(|m| m.to_toml()) {
        Some(Ok(toml)) => {
            writeln!(out)?;
            writeln!(
                out,
                "# suggested manifest (save as manifest.toml beside the model):"
            )?;
            write!(out, "{toml}")?;
        }
        Some(Err(_)) | None => {
            writeln!(out)?;
            writeln!(
                out,
                "# no manifest suggestion: not an Ultralytics detection export (no `names` metadata or unknown output layout)"
            )?;
        }
    }
    Ok(())
}

/// A zoo name or manifest path, or an `.onnx` whose Ultralytics metadata makes the manifest.
/// Names and manifests resolve before ONNX Runtime loads, so a typo fails fast.
pub(crate) fn resolve_model(
    model: &str,
    ort_lib: Option<&Path>,
) -> Result<(Arc<Runtime>, ModelManifest), DetectCommandError> {
    let path = Path::new(model);
    if path.extension().is_some_and(|e| e == "onnx") {
        let runtime = Runtime::locate_and_load(ort_lib)?;
        let info = models::inspect::inspect(&runtime, path)?;
        let manifest = info
            .suggested_manifest()
            .ok_or_else(|| DetectCommandError::NoManifest {
                path: path.to_owned(),
            })?;
        return Ok((runtime, manifest));
    }
    let manifest = models::zoo::resolve(model)?;
    Ok((Runtime::locate_and_load(ort_lib)?, manifest))
}

fn round_to(v: f32, scale: f64) -> f64 {
    (f64::from(v) * scale).round() / scale
}

fn write_detections(
    out: &mut impl Write,
    image: &Path,
    detections: &[Detection],
    json: bool,
) -> Result<(), DetectCommandError> {
    for d in detections {
        let b = d.bbox;
        if json {
            let line = JsonLine {
                image: image.display().to_string(),
                label: &d.label,
                score: round_to(d.score, 1e4),
                bbox: [b.x1, b.y1, b.x2, b.y2].map(|v| round_to(v, 10.0)),
            };
            writeln!(out, "{}", serde_json::to_string(&line)?)?;
        } else {
            writeln!(
                out,
                "{}\t{}\t{:.3}\t{:.0},{:.0},{:.0},{:.0}",
                image.display(),
                d.label,
                d.score,
                b.x1,
                b.y1,
                b.x2,
                b.y2
            )?;
        }
    }
    Ok(())
}

/// `out.jpg` for one image; `out-1.jpg`, `out-2.jpg`, ... for several.
fn numbered(target: &Path, index: usize, count: usize) -> PathBuf {
    if count <= 1 {
        return target.to_owned();
    }
    let stem = target
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match target.extension() {
        Some(ext) => format!("{stem}-{}.{}", index + 1, ext.to_string_lossy()),
        None => format!("{stem}-{}", index + 1),
    };
    target.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_images_get_numbered_output_files() {
        assert_eq!(
            numbered(Path::new("/t/a.jpg"), 0, 1),
            PathBuf::from("/t/a.jpg")
        );
        assert_eq!(
            numbered(Path::new("/t/a.jpg"), 1, 3),
            PathBuf::from("/t/a-2.jpg")
        );
        assert_eq!(numbered(Path::new("a"), 0, 2), PathBuf::from("a-1"));
    }

    #[test]
    fn text_and_json_lines_carry_label_score_and_box() {
        let d = Detection {
            class: 1,
            label: "person".into(),
            score: 0.65,
            bbox: models::BBox {
                x1: 1.0,
                y1: 2.0,
                x2: 30.4,
                y2: 40.6,
            },
        };
        let mut text = Vec::new();
        write_detections(
            &mut text,
            Path::new("a.png"),
            std::slice::from_ref(&d),
            false,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "a.png\tperson\t0.650\t1,2,30,41\n"
        );
        let mut json = Vec::new();
        write_detections(&mut json, Path::new("a.png"), &[d], true).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["image"], "a.png");
        assert_eq!(v["label"], "person");
        assert_eq!(v["box"][3], 40.6);
        assert_eq!(v["score"], 0.65);
    }
}

//! ONNX object detection for Gridsense: image in, detections out.
//!
//! Model manifests ([`manifest`]), pre-processing ([`preprocess`]), output decoders for the SSD and
//! YOLO families with class-aware NMS ([`decode`]), the ONNX Runtime library and session options
//! ([`runtime`]) and the detector that ties them together ([`detector`]), so that a model can be
//! tested and benchmarked on its own. `zoo/` holds the shipped models (COCO-SSD, see [`zoo`]);
//! [`inspect`] describes any `.onnx` and suggests a manifest for Ultralytics exports.
//!
//! Typical use:
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use models::{Detector, RgbView, Runtime, SessionConfig};
//! let runtime = Runtime::locate_and_load(None)?;
//! let mut detector = Detector::from_manifest(&runtime, models::zoo::resolve("coco-ssd")?, &SessionConfig::default())?;
//! let image = models::image_file::read_rgb("astronaut.png".as_ref())?;
//! let frame = RgbView::new(image.width(), image.height(), image.as_raw())?;
//! for d in detector.detect(frame)? {
//!     println!("{} {:.2} {:?}", d.label, d.score, d.bbox);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Python reference: `scripts/reference/detect_reference.py` re-implements pre- and
//! post-processing with Pillow and numpy on Python ONNX Runtime; its output is committed as
//! `models/tests/fixtures/reference.json` and the integration tests compare against it.
//!
//! This crate must not touch the network, GStreamer or MQTT: frames are handed to it.
#![warn(missing_docs)]

pub mod decode;
pub mod detector;
pub mod image_file;
pub mod inspect;
pub mod labels;
pub mod manifest;
pub mod preprocess;
pub mod runtime;
pub mod zoo;

pub use decode::{BBox, Detection};
pub use detector::{DetectError, DetectTimes, Detector, LoadError, Mismatch};
pub use manifest::{ManifestError, ModelManifest};
pub use preprocess::{Preprocessor, RgbView};
pub use runtime::{ExecutionProviderKind, Runtime, RuntimeError, SessionConfig};

//! Paths to the fetched test assets and shared set-up.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use models::{Detection, Detector, ModelManifest, RgbView, Runtime, SessionConfig};

/// `$GRIDSENSE_CACHE`, else the repository's `.cache/gridsense`.
pub(crate) fn cache_dir() -> PathBuf {
    std::env::var_os("GRIDSENSE_CACHE")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/gridsense"))
}

/// `$ORT_DYLIB_PATH`, else the library fetched into the cache.
pub(crate) fn library_path() -> PathBuf {
    std::env::var_os("ORT_DYLIB_PATH")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("onnxruntime/libonnxruntime.so.1.32.0"))
}

/// The process's ONNX Runtime.
pub(crate) fn runtime() -> Arc<Runtime> {
    Runtime::load(&library_path()).expect("onnx runtime loads (run `make setup`)")
}

pub(crate) fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub(crate) fn coco_ssd() -> ModelManifest {
    models::zoo::resolve("coco-ssd").unwrap()
}

/// The yolov12n manifest fixture, resolved against the cache.
pub(crate) fn yolov12n() -> ModelManifest {
    let text = std::fs::read_to_string(fixture("yolov12n.toml")).unwrap();
    ModelManifest::from_toml(
        &text,
        &fixture("yolov12n.toml"),
        cache_dir().join("models/yolov12n"),
    )
    .unwrap()
}

pub(crate) fn detector(manifest: ModelManifest) -> Detector {
    Detector::from_manifest(&runtime(), manifest, &SessionConfig::default()).unwrap()
}

pub(crate) fn photo(name: &str) -> image::RgbImage {
    models::image_file::read_rgb(&cache_dir().join("media").join(name)).unwrap()
}

pub(crate) fn detect(detector: &mut Detector, name: &str) -> Vec<Detection> {
    let img = photo(name);
    detector
        .detect(RgbView::new(img.width(), img.height(), img.as_raw()).unwrap())
        .unwrap()
}

/// Best score of `label` among `detections` (0 if absent).
pub(crate) fn best(detections: &[Detection], label: &str) -> f32 {
    detections
        .iter()
        .filter(|d| d.label == label)
        .map(|d| d.score)
        .fold(0.0, f32::max)
}

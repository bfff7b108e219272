//! Test media fetched by `scripts/setup` (sample.mp4, motorcycle_left.png, ...): found through
//! `GRIDSENSE_CACHE`, else the repository's `.cache/gridsense`.

use std::path::PathBuf;

use anyhow::{Context, ensure};

/// The path of a media file, checked to exist.
///
/// # Errors
/// When the file is missing (run `scripts/setup`).
pub fn media(name: &str) -> anyhow::Result<PathBuf> {
    let cache = std::env::var_os("GRIDSENSE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.cache/gridsense"));
    let path = cache.join("media").join(name);
    ensure!(
        path.is_file(),
        "test media `{}` is missing: run scripts/setup",
        path.display()
    );
    path.canonicalize()
        .with_context(|| format!("failed to resolve `{}`", path.display()))
}

/// A test camera streaming the parked-motorcycle photo (`motorcycle_left.png`, 740x500) over
/// RTSP at `fps` frames per second: what the camera, re-check and technician tests look at.
///
/// # Errors
/// When the photo is missing or the RTSP server does not start.
pub fn motorcycle_camera(fps: u32) -> anyhow::Result<hardware::sim::rtsp::TestCamera> {
    use hardware::sim::rtsp::{TestCamera, TestMedia};
    Ok(TestCamera::start(TestMedia::Still {
        path: media("motorcycle_left.png")?,
        fps,
        width_px: 740,
        height_px: 500,
    })?)
}

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

/// An agent's `[[cameras]]` entry for [`motorcycle_camera`] at `url`: camera `kerb-cam`
/// detecting at `detect_fps`, a `no-parking` zone around the motorcycle (COCO-SSD finds it at
/// (91,53)-(694,461) of 741x500) and a rule `nonmotor-parking` raising illegal non-motor parking
/// after `dwell_secs` in it. More zones and rules of the camera may follow it.
#[must_use]
pub fn kerb_camera_toml(url: &str, detect_fps: u32, dwell_secs: u32) -> String {
    format!(
        r#"
[[cameras]]
id = "kerb-cam"
detect_fps = {detect_fps}
frame_width_px = 640
frame_height_px = 432
source = {{ kind = "rtsp", url = "{url}" }}
[[cameras.zones]]
id = "no-parking"
polygon = [[0.05, 0.05], [0.98, 0.05], [0.98, 0.98], [0.05, 0.98]]
classes = ["bicycle", "motorcycle"]
[[cameras.rules]]
id = "nonmotor-parking"
kind = "dwell"
zone = "no-parking"
category = "street_order.illegal_nonmotor_parking"
dwell_secs = {dwell_secs}
"#
    )
}

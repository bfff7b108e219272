//! Reading still images (PNG, JPEG) from disk into RGB8 buffers for `detect` and tests.
//!
//! Cameras do not come through here: their frames arrive as raw buffers. This module must not
//! resize (that is [`crate::preprocess`]).

use std::path::{Path, PathBuf};

/// An image file could not be read or decoded.
#[derive(Debug, thiserror::Error)]
#[error("failed to read image `{path}`")]
pub struct ImageFileError {
    /// The file.
    pub path: PathBuf,
    /// The decoder's error.
    #[source]
    pub source: image::ImageError,
}

/// Decodes the image at `path` into packed RGB8 (alpha dropped, grey expanded).
///
/// # Errors
/// [`ImageFileError`] when the file is missing or not a decodable PNG/JPEG.
pub fn read_rgb(path: &Path) -> Result<image::RgbImage, ImageFileError> {
    image::open(path)
        .map(|img| img.to_rgb8())
        .map_err(|source| ImageFileError {
            path: path.to_owned(),
            source,
        })
}

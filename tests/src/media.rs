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

//! The model zoo: models shipped with Gridsense, found by name (`--model coco-ssd`).
//!
//! Manifests are embedded in the binary, so names resolve anywhere; the `.onnx` files are looked
//! up in `zoo/` beside the executable, in `../share/gridsense/zoo/` from it (installed layout),
//! then in this crate's `zoo/` directory (running from the repository). Only permissively
//! licensed models are shipped: `yolov12n` (AGPL weights) is not in the zoo and is used by giving
//! its `.onnx` path or a manifest explicitly. This module must not load models.

use std::path::{Path, PathBuf};

use crate::manifest::{ManifestError, ModelManifest};

/// Name and embedded manifest of each shipped model.
const ZOO: &[(&str, &str)] = &[("coco-ssd", include_str!("../zoo/coco-ssd/manifest.toml"))];

/// Names of the shipped models.
pub fn names() -> impl Iterator<Item = &'static str> {
    ZOO.iter().map(|(name, _)| *name)
}

/// Resolves `--model NAME_OR_MANIFEST`: an existing file is read as a manifest, otherwise the
/// name is looked up in the zoo.
///
/// # Errors
/// [`ManifestError::UnknownModel`] for a name the zoo does not have, or the errors of
/// [`ModelManifest::from_path`].
pub fn resolve(name_or_path: &str) -> Result<ModelManifest, ManifestError> {
    let path = Path::new(name_or_path);
    if path.is_file() {
        return ModelManifest::from_path(path);
    }
    let Some((name, text)) = ZOO.iter().find(|(name, _)| *name == name_or_path) else {
        return Err(ManifestError::UnknownModel {
            name: name_or_path.to_owned(),
            known: names().collect::<Vec<_>>().join(", "),
        });
    };
    let dirs = zoo_dirs();
    let origin = PathBuf::from(format!("zoo:{name}/manifest.toml"));
    // Parse once to learn the model file name, then pick the first directory that has it.
    let probe = ModelManifest::from_toml(text, &origin, PathBuf::new())?;
    let base_dir = dirs
        .iter()
        .map(|d| d.join(name))
        .find(|d| d.join(&probe.model).is_file())
        // None found: keep the last candidate so that the load error names a real path.
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("zoo").join(name));
    ModelManifest::from_toml(text, &origin, base_dir)
}

/// Directories searched for zoo models, in order.
pub fn zoo_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        dirs.push(exe_dir.join("zoo"));
        dirs.push(exe_dir.join("../share/gridsense/zoo"));
    }
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("zoo"));
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coco_ssd_resolves_by_name_to_an_existing_model_file() {
        let m = resolve("coco-ssd").unwrap();
        assert_eq!(m.name, "coco-ssd");
        assert!(m.model_path().is_file(), "{}", m.model_path().display());
    }

    #[test]
    fn an_unknown_name_lists_the_known_ones() {
        let err = resolve("yolov12n").unwrap_err();
        assert!(
            matches!(err, ManifestError::UnknownModel { ref known, .. } if known == "coco-ssd")
        );
    }
}

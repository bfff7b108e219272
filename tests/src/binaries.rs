//! The workspace's binaries for tests that run real processes.
//!
//! `cargo test --workspace` (as in `make test`) builds `edge-agent` and `hub` fresh, because their
//! own integration tests need them. A test run of this crate alone may find them missing or
//! older than the sources; then, and only then, it asks cargo to build the one it needs, so a
//! stale binary is never run and a fresh one is not rebuilt with another feature set.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

/// The path of the workspace binary `name` (`edge-agent` or `hub`), built if missing or stale:
/// the debug build for tests, the release build for benches (built with optimisations, as
/// this crate then is).
///
/// # Panics
/// When the binary cannot be built: the test cannot run without it.
pub fn binary(name: &str) -> PathBuf {
    static CHECKED: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let checked = CHECKED.get_or_init(|| Mutex::new(HashMap::new()));
    let mut checked = checked
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(path) = checked.get(name) {
        return path.clone();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    // a bench (built optimised) runs the binaries optimised too, a test the debug ones
    let release = !cfg!(debug_assertions);
    let path = target
        .join(if release { "release" } else { "debug" })
        .join(name);
    let built_at = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    // The crates a binary is built from (the dependency rules keep these lists short).
    let crates: &[&str] = match name {
        "hub" => &["hub", "protocol", "confcheck"],
        _ => &[
            "edge-agent",
            "protocol",
            "confcheck",
            "models",
            "hardware",
            "vision",
        ],
    };
    if built_at.is_none_or(|t| t < newest_source(&root, crates)) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .current_dir(&root)
            .args(["build", "--quiet", "-p", name, "--bin", name]);
        if release {
            build.arg("--release");
        }
        let status = build
            .status()
            .unwrap_or_else(|e| panic!("failed to run cargo to build `{name}`: {e}"));
        assert!(status.success(), "cargo build of `{name}` failed");
    }
    assert!(
        path.exists(),
        "`{}` missing after the build",
        path.display()
    );
    checked.insert(name.to_owned(), path.clone());
    path
}

/// The newest modification time among the workspace manifest, the lock file and the manifests
/// and Rust sources of `crates`.
fn newest_source(root: &Path, crates: &[&str]) -> SystemTime {
    fn walk(dir: &Path, newest: &mut SystemTime) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if path.is_dir() {
                if !matches!(
                    name.as_ref(),
                    "target" | ".git" | ".cache" | "fuzz" | "zoo" | "fixtures"
                ) {
                    walk(&path, newest);
                }
            } else if (name.ends_with(".rs") || name.ends_with(".toml") || name == "Cargo.lock")
                && let Ok(t) = entry.metadata().and_then(|m| m.modified())
            {
                *newest = (*newest).max(t);
            }
        }
    }
    let mut newest = SystemTime::UNIX_EPOCH;
    for file in ["Cargo.toml", "Cargo.lock"] {
        if let Ok(t) = std::fs::metadata(root.join(file)).and_then(|m| m.modified()) {
            newest = newest.max(t);
        }
    }
    for krate in crates {
        walk(&root.join(krate), &mut newest);
    }
    newest
}

//! The workspace's binaries for tests that run real processes.
//!
//! `cargo test` builds a package's binaries only for that package's own tests, so an end-to-end
//! test asks cargo to build the binaries before using them, and a stale binary from an earlier
//! build is never run. The build is `cargo build --workspace --tests`: the same targets and
//! feature set as `cargo test --workspace`, so after that command (as in `make test`) it is a
//! no-op, where building one package alone would recompile it with other features.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// The path of the workspace binary `name` (`edge-agent` or `hub`), built if needed.
///
/// # Panics
/// When the binary cannot be built: the test cannot run without it.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(|| Mutex::new(HashMap::new()));
    let mut built = built
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(path) = built.get(name) {
        return path.clone();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args(["build", "--quiet", "--workspace", "--tests"])
        .status()
        .unwrap_or_else(|e| panic!("failed to run cargo to build `{name}`: {e}"));
    assert!(status.success(), "cargo build of `{name}` failed");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let path = target.join("debug").join(name);
    assert!(
        path.exists(),
        "`{}` missing after the build",
        path.display()
    );
    built.insert(name.to_owned(), path.clone());
    path
}

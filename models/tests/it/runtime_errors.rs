//! A missing or wrong ONNX Runtime library gives a clear error naming the file.
//!
//! ONNX Runtime loads once per process, so each case that tries a bad library first runs in a
//! child process of this test binary (the test re-runs itself with `--exact`), where nothing has
//! loaded the real library yet.

use std::path::{Path, PathBuf};
use std::process::Command;

use models::{Runtime, RuntimeError};

use crate::helpers::runtime;

const CHILD_ENV: &str = "GRIDSENSE_MODELS_TEST_CHILD";

/// Runs `test` in a fresh child process; returns true in the child (the caller then does the work).
fn in_child(test: &str) -> bool {
    if std::env::var(CHILD_ENV).as_deref() == Ok(test) {
        return true;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, test)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child run of {test} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    false
}

#[test]
fn a_library_path_that_does_not_exist_is_refused_naming_it() {
    let missing = Path::new("/nonexistent/libonnxruntime.so.1.32.0");
    let err = Runtime::locate(Some(missing)).unwrap_err();
    assert!(matches!(&err, RuntimeError::Missing { path, .. } if path == missing));
    let err = Runtime::load(missing).unwrap_err();
    assert!(matches!(&err, RuntimeError::Missing { path, .. } if path == missing));
}

#[test]
fn a_file_that_is_not_a_library_is_refused_naming_it() {
    if !in_child("runtime_errors::a_file_that_is_not_a_library_is_refused_naming_it") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("libonnxruntime.so.1.32.0");
    std::fs::write(&fake, b"not an ELF file").unwrap();
    let err = Runtime::load(&fake).unwrap_err();
    assert!(
        matches!(&err, RuntimeError::Load { path, .. } if *path == std::fs::canonicalize(&fake).unwrap()),
        "{err:?}"
    );
}

#[test]
fn a_shared_library_that_is_not_onnx_runtime_is_refused_naming_it() {
    if !in_child("runtime_errors::a_shared_library_that_is_not_onnx_runtime_is_refused_naming_it") {
        return;
    }
    let other = other_shared_library();
    let err = Runtime::load(&other).unwrap_err();
    assert!(matches!(&err, RuntimeError::WrongLibrary { .. }), "{err:?}");
}

#[test]
fn a_second_different_library_in_the_same_process_is_refused() {
    let loaded = runtime();
    let other = other_shared_library();
    let err = Runtime::load(&other).unwrap_err();
    assert!(
        matches!(&err, RuntimeError::AlreadyLoaded { loaded: l, .. } if l == loaded.library()),
        "{err:?}"
    );
    // The same library again is the same runtime.
    assert!(std::sync::Arc::ptr_eq(&loaded, &runtime()));
}

/// A real shared library of the system that is not ONNX Runtime (glibc's libm).
fn other_shared_library() -> PathBuf {
    [
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/usr/lib/x86_64-linux-gnu/libm.so.6",
        "/lib64/libm.so.6",
        "/usr/lib/libm.so.6",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
    .expect("libm.so.6 present")
}

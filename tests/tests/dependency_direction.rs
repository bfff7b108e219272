//! The dependency-direction check, run against the real workspace and against a copy of it with
//! forbidden edges added (to show that the check can fail).
#![allow(clippy::unwrap_used)] // test code: helpers outside #[test] functions unwrap too

use std::fs;
use std::path::{Path, PathBuf};

use e2e::workspace::{Violation, metadata, violations};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Copies the workspace's manifests and Rust sources (enough for `cargo metadata`) to `dst`.
fn copy_sources(src: &Path, dst: &Path) {
    for entry in fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            if matches!(
                name.as_ref(),
                "target" | ".git" | ".cache" | "fuzz" | "zoo" | "fixtures"
            ) {
                continue;
            }
            fs::create_dir_all(dst.join(&*name)).unwrap();
            copy_sources(&path, &dst.join(&*name));
        } else if name.ends_with(".rs") || name.ends_with(".toml") || name == "Cargo.lock" {
            fs::copy(&path, dst.join(&*name)).unwrap();
        }
    }
}

fn add_dependency(root: &Path, krate: &str, dep_line: &str) {
    let manifest = root.join(krate).join("Cargo.toml");
    let text = fs::read_to_string(&manifest).unwrap();
    let text = text.replacen(
        "[dependencies]\n",
        &format!("[dependencies]\n{dep_line}\n"),
        1,
    );
    fs::write(&manifest, text).unwrap();
}

#[test]
fn workspace_dependencies_point_toward_protocol() {
    let meta = metadata(&workspace_root().join("Cargo.toml")).unwrap();
    let found = violations(&meta);
    assert!(
        found.is_empty(),
        "forbidden dependencies: {}",
        found
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    );
    // The check really saw the workspace: every crate of the table.
    assert_eq!(
        meta["packages"].as_array().unwrap().len(),
        e2e::workspace::ALLOWED.len()
    );
}

#[test]
fn adding_a_forbidden_dependency_is_caught() {
    let tmp = tempfile::tempdir().unwrap();
    copy_sources(&workspace_root(), tmp.path());
    add_dependency(tmp.path(), "protocol", "models = { path = \"../models\" }");
    add_dependency(tmp.path(), "hub", "hardware = { path = \"../hardware\" }");
    add_dependency(tmp.path(), "edge-agent", "hub = { path = \"../hub\" }");
    // the pure vision core must not pull in the detector (ONNX Runtime)
    add_dependency(tmp.path(), "vision", "models = { path = \"../models\" }");
    // the shared runtime must not know what the box keeps (its store lives in edge-agent)
    add_dependency(tmp.path(), "wire", "hardware = { path = \"../hardware\" }");
    let found = violations(&metadata(&tmp.path().join("Cargo.toml")).unwrap());
    let edge = |from: &str, to: &str| Violation {
        from: from.into(),
        to: to.into(),
    };
    assert_eq!(found.len(), 5, "{found:?}");
    assert!(found.contains(&edge("protocol", "models")));
    assert!(found.contains(&edge("hub", "hardware")));
    assert!(found.contains(&edge("edge-agent", "hub")));
    assert!(found.contains(&edge("vision", "models")));
    assert!(found.contains(&edge("wire", "hardware")));
}

#[test]
fn a_crate_missing_from_the_table_is_caught() {
    let tmp = tempfile::tempdir().unwrap();
    copy_sources(&workspace_root(), tmp.path());
    let root = tmp.path().join("Cargo.toml");
    let text =
        fs::read_to_string(&root)
            .unwrap()
            .replacen("\"tests\"]", "\"tests\", \"gadget\"]", 1);
    fs::write(&root, text).unwrap();
    fs::create_dir_all(tmp.path().join("gadget/src")).unwrap();
    fs::write(tmp.path().join("gadget/src/lib.rs"), "").unwrap();
    fs::write(
        tmp.path().join("gadget/Cargo.toml"),
        "[package]\nname = \"gadget\"\nversion = \"0.1.0\"\nedition = \"2024\"\n",
    )
    .unwrap();
    let found = violations(&metadata(&root).unwrap());
    assert_eq!(
        found,
        vec![Violation {
            from: "gadget".into(),
            to: String::new()
        }]
    );
}

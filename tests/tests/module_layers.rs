//! Module layers inside the edge agent and the hub (see `e2e::layers`), checked against the real sources and
//! against a copy with back-edges planted (to show that the check can fail).
#![allow(clippy::unwrap_used)] // test code

use std::fs;
use std::path::{Path, PathBuf};

use e2e::layers::{
    EDGE_AGENT_CONFIG_READERS, EDGE_AGENT_LAYERS, HUB_LAYERS, config_violations, layer_violations,
    uses,
};

fn agent_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../edge-agent/src")
}

fn plant(file: &Path, line: &str) {
    let text = fs::read_to_string(file).unwrap();
    fs::write(file, format!("{line}\n{text}")).unwrap();
}

#[test]
fn edge_agent_modules_use_only_lower_layers_and_only_the_wiring_sees_the_root_config() {
    let (found, config) = uses(&agent_src()).unwrap();
    assert!(found.len() > 20, "the check read too little: {found:?}");
    let back = layer_violations(&found, EDGE_AGENT_LAYERS);
    assert!(back.is_empty(), "uses against the layers: {back:#?}");
    assert!(
        !config.is_empty(),
        "config.rs itself names Config: the check did not see it"
    );
    let wrong = config_violations(&config, EDGE_AGENT_CONFIG_READERS);
    assert!(
        wrong.is_empty(),
        "modules that see the root config: {wrong:#?}"
    );
    assert!(
        found.iter().all(|u| u.to != "agent"),
        "nothing imports agent.rs"
    );
}

#[test]
fn hub_modules_use_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hub/src");
    let (found, _) = uses(&src).unwrap();
    assert!(found.len() > 20, "the check read too little: {found:?}");
    let back = layer_violations(&found, HUB_LAYERS);
    assert!(back.is_empty(), "uses against the layers: {back:#?}");
}

#[test]
fn a_planted_back_edge_and_a_stage_reading_the_root_config_are_caught() {
    let tmp = tempfile::tempdir().unwrap();
    e2e::copy_dir(&agent_src(), tmp.path()).unwrap();
    plant(&tmp.path().join("store/mod.rs"), "use crate::agent::Agent;");
    plant(
        &tmp.path().join("sensors/core.rs"),
        "use crate::config::{Config, SiteConfig};",
    );
    // a module nobody placed in a layer
    fs::write(tmp.path().join("newthing.rs"), "use crate::store::Store;\n").unwrap();
    let (found, config) = uses(tmp.path()).unwrap();
    let back: Vec<(String, String)> = layer_violations(&found, EDGE_AGENT_LAYERS)
        .into_iter()
        .map(|u| (u.from, u.to))
        .collect();
    assert_eq!(
        back,
        [
            ("newthing".to_owned(), "store".to_owned()),
            ("sensors".to_owned(), "config".to_owned()),
            ("store".to_owned(), "agent".to_owned()),
        ],
        "{back:?}"
    );
    let wrong: Vec<String> = config_violations(&config, EDGE_AGENT_CONFIG_READERS)
        .into_iter()
        .map(|u| u.file.display().to_string())
        .collect();
    assert_eq!(wrong, ["sensors/core.rs"]);
}

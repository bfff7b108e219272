//! Module layers inside a crate, checked from its sources: each top-level module of `src/` sits
//! in a layer and may use (`crate::module…`, in `use` lines or paths) only modules of lower
//! layers, so the modules form no circle and the wiring stays on top. Test modules (everything
//! after a file's `#[cfg(test)]`) and comments are not read. A module missing from the table is
//! a violation too, so a new module cannot slip past it.

use std::path::{Path, PathBuf};

/// The edge agent's layers, lowest first: leaves (clock, logging, drawing), the store, the
/// uplink, the events stage, the sources, what reads the sources (fusion, re-checks, the box
/// page), metrics, the config that composes every section, and the wiring (`agent`, `checks`).
pub const EDGE_AGENT_LAYERS: &[&[&str]] = &[
    &["clock", "telemetry", "detect"],
    &["store"],
    &["uplink", "systemd"],
    &["events", "enroll"],
    &["camera", "sensors"],
    &["fusion", "recheck"],
    &["probes"],
    &["status"],
    &["metrics"],
    &["config"],
    &["checks", "agent"],
];

/// The hub's layers, lowest first: leaves (clock, logging, randomness, rate buckets, the web
/// files, the grid), duties, the cases (with their database), what stands on cases (the box
/// registry, assessment, systemd), ingest, what serves people (the API, retention), the config
/// that composes every section, and the commands on top.
pub const HUB_LAYERS: &[&[&str]] = &[
    &[
        "clock",
        "telemetry",
        "random",
        "rate",
        "web",
        "grid",
        "sink",
        "storage",
        "testing",
    ],
    &["duties"],
    &["cases"],
    &["registry", "assess", "systemd"],
    &["ingest"],
    &["api", "retention"],
    &["config"],
    &["backup", "checks", "commands", "migrate", "serve"],
    &["doctor"],
];

/// The modules that may see the agent's root `Config` (the composed file): the config itself and
/// the wiring. Every stage takes its own section.
pub const EDGE_AGENT_CONFIG_READERS: &[&str] = &["config", "agent", "checks"];

/// One use of a module by another, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Use {
    /// The file (relative to `src/`).
    pub file: PathBuf,
    /// The module the file belongs to.
    pub from: String,
    /// The module it uses.
    pub to: String,
}

/// Every `crate::module` use between different top-level modules of the crate at `src`
/// (`lib.rs` and `main.rs` are the roots and not read). Also gives, per file, whether it names
/// `crate::config::Config`.
///
/// # Errors
/// When a source file cannot be read.
pub fn uses(src: &Path) -> std::io::Result<(Vec<Use>, Vec<Use>)> {
    let mut files = Vec::new();
    collect(src, &mut files)?;
    files.sort();
    let mut out = Vec::new();
    let mut config = Vec::new();
    for path in files {
        let rel = path.strip_prefix(src).unwrap_or(&path).to_path_buf();
        let first = rel
            .components()
            .next()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .unwrap_or_default();
        if first == "lib.rs" || first == "main.rs" {
            continue;
        }
        let from = first.trim_end_matches(".rs").to_owned();
        let text = std::fs::read_to_string(&path)?;
        let code = code_of(&text);
        let mut seen = std::collections::BTreeSet::new();
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != from && seen.insert(name.clone()) {
                out.push(Use {
                    file: rel.clone(),
                    from: from.clone(),
                    to: name,
                });
            }
        }
        if names_root_config(&code) {
            config.push(Use {
                file: rel.clone(),
                from: from.clone(),
                to: "config::Config".to_owned(),
            });
        }
    }
    Ok((out, config))
}

/// The uses that go sideways or up the `layers`, or involve a module the table does not list.
pub fn layer_violations(uses: &[Use], layers: &[&[&str]]) -> Vec<Use> {
    let layer = |m: &str| layers.iter().position(|l| l.contains(&m));
    uses.iter()
        .filter(|u| match (layer(&u.from), layer(&u.to)) {
            (Some(from), Some(to)) => to >= from,
            _ => true,
        })
        .cloned()
        .collect()
}

/// The files outside `readers` that name the root config type.
pub fn config_violations(config_uses: &[Use], readers: &[&str]) -> Vec<Use> {
    config_uses
        .iter()
        .filter(|u| !readers.contains(&u.from.as_str()))
        .cloned()
        .collect()
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// The text before the file's test module, without comment lines.
fn code_of(text: &str) -> String {
    let body = text.split("#[cfg(test)]").next().unwrap_or(text);
    body.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `crate::config::Config`, alone or in a `crate::config::{…}` group.
fn names_root_config(code: &str) -> bool {
    let is_config = |w: &str| w.trim() == "Config" || w.trim().starts_with("Config as ");
    code.match_indices("crate::config::").any(|(i, _)| {
        let rest = &code[i + "crate::config::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            group
                .split('}')
                .next()
                .is_some_and(|g| g.split(',').any(is_config))
        } else {
            let word: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            word == "Config"
        }
    })
}

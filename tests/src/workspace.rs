//! The workspace's dependency direction, checked from `cargo metadata`.
//!
//! Every arrow between workspace crates points toward `protocol` (or the leaf `confcheck`, the
//! config checking both binaries share); `edge-agent` and `hub` never
//! depend on each other (see `../shared/CONVENTIONS.md` section 1). A crate missing from
//! [`ALLOWED`] is a violation too, so a new crate cannot slip past the table.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};
use serde_json::Value;

/// For each workspace crate, the workspace crates it may depend on (any dependency kind).
/// `None` means any: only the end-to-end test crate.
pub const ALLOWED: &[(&str, Option<&[&str]>)] = &[
    ("protocol", Some(&[])),
    ("confcheck", Some(&[])),
    ("models", Some(&["protocol"])),
    ("hardware", Some(&["protocol"])),
    // pure: builds and tests without GStreamer, ONNX Runtime, QUIC or HTTP
    ("vision", Some(&["protocol", "confcheck"])),
    // what both binaries share at run time over protocol: no store, no cases, no config
    ("wire", Some(&["protocol"])),
    (
        "edge-agent",
        Some(&[
            "protocol",
            "confcheck",
            "models",
            "hardware",
            "vision",
            "wire",
        ]),
    ),
    ("hub", Some(&["protocol", "confcheck", "wire"])),
    ("e2e", None),
];

/// A dependency between workspace crates that the table forbids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The depending crate.
    pub from: String,
    /// The crate it must not depend on (empty when `from` itself is not in the table).
    pub to: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.to.is_empty() {
            write!(
                f,
                "crate `{}` is not in the dependency table (tests/src/workspace.rs)",
                self.from
            )
        } else {
            write!(f, "crate `{}` must not depend on `{}`", self.from, self.to)
        }
    }
}

/// Runs `cargo metadata --no-deps` on the workspace whose root manifest is `manifest`.
///
/// # Errors
/// When cargo cannot be run or fails.
pub fn metadata(manifest: &Path) -> anyhow::Result<Value> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--offline",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(manifest)
        .output()
        .context("failed to run cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("cargo metadata printed malformed JSON")
}

/// Every forbidden edge between workspace members in `metadata`.
pub fn violations(metadata: &Value) -> Vec<Violation> {
    let packages = metadata["packages"].as_array().cloned().unwrap_or_default();
    let members: Vec<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    let mut out = Vec::new();
    for p in &packages {
        let Some(from) = p["name"].as_str() else {
            continue;
        };
        let allowed = match ALLOWED.iter().find(|(name, _)| *name == from) {
            Some((_, allowed)) => *allowed,
            None => {
                out.push(Violation {
                    from: from.to_owned(),
                    to: String::new(),
                });
                continue;
            }
        };
        let Some(allowed) = allowed else { continue };
        for dep in p["dependencies"].as_array().into_iter().flatten() {
            let Some(to) = dep["name"].as_str() else {
                continue;
            };
            if members.contains(&to)
                && !allowed.contains(&to)
                && !out.iter().any(|v: &Violation| v.from == from && v.to == to)
            {
                out.push(Violation {
                    from: from.to_owned(),
                    to: to.to_owned(),
                });
            }
        }
    }
    out
}

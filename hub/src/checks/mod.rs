//! `hub check-config FILE`: every problem of a config file at once — TOML types and unknown keys
//! (by line), the cross-field rules of the config, and the files it names (grid, responsibility
//! list, work calendar, webhook secrets, the ingest's CA) parsed as `hub serve` would — or the
//! validated config with its secrets redacted.
//!
//! This module reads files but opens no socket and no database (a database is created on first
//! use, so only its folder is checked).

use std::path::Path;

use crate::config::{ConfigError, HubConfig};
use crate::duties::{DutyList, WorkCalendar};
use crate::grid::{Grid, ImportOptions};

pub use confcheck::Problem;

/// What `check-config` found.
pub type ConfigCheck = confcheck::ConfigCheck<HubConfig>;

/// Checks the config file at `path`. Relative paths in it are taken from the working folder, as
/// `hub serve` does.
pub fn check_config_file(path: &Path) -> ConfigCheck {
    confcheck::check_file(path, check_config_text)
}

/// Checks config text; `path` names it in the report.
pub fn check_config_text(text: &str, path: &Path) -> ConfigCheck {
    let mut check = confcheck::parse_text::<HubConfig>(text, path);
    if let Some(config) = &check.config {
        let rules = match config.validate() {
            Err(ConfigError::Invalid(lines)) => lines,
            _ => Vec::new(),
        };
        let files = referenced_files(config);
        check.problems.extend(rules);
        check.problems.extend(files);
    }
    check
}

/// Problems with the files a parsed config names, each parsed as `hub serve` parses it.
fn referenced_files(config: &HubConfig) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut problem = |key: &str, message: String| {
        problems.push(Problem {
            line: None,
            key: key.to_owned(),
            message,
        })
    };
    let sqlite = config.sqlite_path();
    let db_dir = sqlite
        .as_deref()
        .and_then(Path::parent)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if sqlite.is_some() && !db_dir.is_dir() {
        problem(
            "database_path",
            format!(
                "the folder `{}` does not exist (expected the database's folder; the file is created on first start)",
                db_dir.display()
            ),
        );
    }
    if let Some(text) = read(
        &config.grid_path,
        "a GeoJSON grid",
        &mut problem,
        "grid_path",
    ) {
        let options = ImportOptions {
            mapping: config.grid.properties.clone(),
            crs: config.grid.crs,
            edge_distance_m: config.grid.edge_distance_m,
        };
        if let Err(e) = Grid::from_geojson(&text, &options, &mut |_, _| {}) {
            problem("grid_path", crate::telemetry::chain(&e));
        }
    }
    if let Some(text) = read(
        &config.duties_path,
        "a responsibility list (CSV)",
        &mut problem,
        "duties_path",
    ) && let Err(e) = DutyList::from_csv_str(
        &text,
        protocol::Catalog::embedded(),
        &config.department_ids(),
    ) {
        problem("duties_path", crate::telemetry::chain(&e));
    }
    if let Some(text) = read(
        &config.calendar_path,
        "a work calendar (TOML)",
        &mut problem,
        "calendar_path",
    ) && let Err(e) = WorkCalendar::from_toml_str(&text)
    {
        problem("calendar_path", crate::telemetry::chain(&e));
    }
    for (i, d) in config.departments.iter().enumerate() {
        if let Some(p) = &d.webhook_secret_path {
            let key = format!("departments[{i}].webhook_secret_path");
            if let Some(secret) =
                read_bytes(p, "a file holding the webhook key", &mut problem, &key)
                && secret.is_empty()
            {
                problem(
                    &key,
                    format!("`{}` is empty (expected the webhook key)", p.display()),
                );
            }
        }
    }
    if let Some(ingest) = &config.ingest {
        if !ingest.data_dir.is_dir() {
            problem(
                "ingest.data_dir",
                format!(
                    "`{}` is not a folder (expected the folder made by `hub init --data`)",
                    ingest.data_dir.display()
                ),
            );
        } else {
            for file in ["ca.pem", "ca.key"] {
                let p = ingest.data_dir.join(file);
                if !p.is_file() {
                    problem(
                        "ingest.data_dir",
                        format!(
                            "`{}` is missing (run `hub init --data {}`)",
                            p.display(),
                            ingest.data_dir.display()
                        ),
                    );
                }
            }
        }
    }
    problems
}

fn read(
    path: &Path,
    what: &str,
    problem: &mut impl FnMut(&str, String),
    key: &str,
) -> Option<String> {
    let bytes = read_bytes(path, what, problem, key)?;
    match String::from_utf8(bytes) {
        Ok(text) => Some(text),
        Err(_) => {
            problem(
                key,
                format!("`{}` is not UTF-8 text (expected {what})", path.display()),
            );
            None
        }
    }
}

fn read_bytes(
    path: &Path,
    what: &str,
    problem: &mut impl FnMut(&str, String),
    key: &str,
) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            problem(
                key,
                format!("`{}` does not exist (expected {what})", path.display()),
            );
            None
        }
        Err(e) => {
            problem(
                key,
                format!("`{}` cannot be read: {e} (expected {what})", path.display()),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use confcheck::{parse_collecting, redact};

    use super::*;

    #[test]
    fn five_different_mistakes_are_all_reported() {
        let dir = tempfile::tempdir().unwrap();
        let grid = dir.path().join("grid.geojson");
        std::fs::write(&grid, "{\"type\": \"nope\"}").unwrap();
        let text = format!(
            "api_listen_addr = \"not an address\"\n\
             database_path = \"{d}/hub.db\"\n\
             grid_path = \"{g}\"\n\
             duties_path = \"{d}/missing.csv\"\n\
             calendar_path = \"{d}/missing.toml\"\n\
             colour = 3\n\
             [[tokens]]\nname = \"x\"\ntoken_sha256 = \"12\"\nrole = \"admin\"\nsubject = \"a\"\n",
            d = dir.path().display(),
            g = grid.display()
        );
        let check = check_config_text(&text, Path::new("hub.toml"));
        let keys: Vec<&str> = check.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "api_listen_addr",
                "colour",
                "tokens[0].token_sha256",
                "grid_path",
                "duties_path",
                "calendar_path"
            ],
            "{}",
            check.render()
        );
        assert_eq!(check.problems[0].line, Some(1));
    }

    #[test]
    fn the_example_config_prints_with_token_hashes_redacted() {
        let text = include_str!("../../config/example.toml");
        let (config, problems) = parse_collecting::<HubConfig>(text);
        assert!(problems.is_empty(), "{problems:?}");
        let out = redact(&format!("{config:#?}"));
        assert!(!out.contains("93be90c0069c4d32"), "{out}");
        assert!(out.contains("<redacted>"), "{out}");
    }
}

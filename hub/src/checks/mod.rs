//! `hub check-config FILE`: every problem of a config file at once — TOML types and unknown keys
//! (by line), the cross-field rules of the config, and the files it names (grid, responsibility
//! list, work calendar, webhook secrets, the ingest's CA) parsed as `hub serve` would — or the
//! validated config with its secrets redacted.
//!
//! This module reads files but opens no socket and no database (a database is created on first
//! use, so only its folder is checked).

use std::path::{Path, PathBuf};

use crate::config::{ConfigError, HubConfig};
use crate::duties::{DutyList, WorkCalendar};
use crate::grid::{Grid, ImportOptions};

mod toml_problems;

pub use toml_problems::Problem;
use toml_problems::{parse_collecting, redact};

/// What `check-config` found.
#[derive(Debug)]
pub struct ConfigCheck {
    /// The file checked.
    pub path: PathBuf,
    /// Every problem: in file order, then cross-field rules, then referenced files.
    pub problems: Vec<Problem>,
    /// The config as parsed (lines with type problems left out), when it could be parsed.
    pub config: Option<HubConfig>,
}

impl ConfigCheck {
    /// Whether the file has no problem.
    pub fn is_valid(&self) -> bool {
        self.problems.is_empty()
    }

    /// The report: the problems, or the validated config with secrets redacted.
    pub fn render(&self) -> String {
        if self.problems.is_empty() {
            let body = self
                .config
                .as_ref()
                .map(|c| redact(&format!("{c:#?}")))
                .unwrap_or_default();
            return format!(
                "config `{}` is valid (secrets redacted):\n{body}",
                self.path.display()
            );
        }
        let mut out = format!(
            "config `{}` has {} problem{}:\n",
            self.path.display(),
            self.problems.len(),
            if self.problems.len() == 1 { "" } else { "s" }
        );
        for p in &self.problems {
            out.push_str(&format!("  {p}\n"));
        }
        out
    }
}

/// Checks the config file at `path`. Relative paths in it are taken from the working folder, as
/// `hub serve` does.
pub fn check_config_file(path: &Path) -> ConfigCheck {
    match std::fs::read_to_string(path) {
        Ok(text) => check_config_text(&text, path),
        Err(e) => ConfigCheck {
            path: path.to_owned(),
            problems: vec![Problem {
                line: None,
                key: "(file)".to_owned(),
                message: format!("cannot be read: {e}"),
            }],
            config: None,
        },
    }
}

/// Checks config text; `path` names it in the report.
pub fn check_config_text(text: &str, path: &Path) -> ConfigCheck {
    if let Err(e) = toml::from_str::<toml::Table>(text) {
        let line = e.span().map(|s| {
            text.as_bytes()[..s.start.min(text.len())]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1
        });
        return ConfigCheck {
            path: path.to_owned(),
            problems: vec![Problem {
                line,
                key: "(syntax)".to_owned(),
                message: e.message().trim().to_owned(),
            }],
            config: None,
        };
    }
    let (config, mut problems) = parse_collecting::<HubConfig>(text);
    if let Some(config) = &config {
        if let Err(ConfigError::Invalid(lines)) = config.validate() {
            problems.extend(lines.iter().map(|l| Problem::from_validation_line(l)));
        }
        problems.extend(referenced_files(config));
    }
    ConfigCheck {
        path: path.to_owned(),
        problems,
        config,
    }
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
    let db_dir = config
        .database_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !db_dir.is_dir() {
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

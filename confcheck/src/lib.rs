//! `check-config` for both binaries: every problem of a TOML config file at once (syntax, types
//! and unknown keys by line and key path), then whatever the caller adds (cross-field rules, the
//! files the config names), and a report that prints the validated config with secrets redacted.
//!
//! Shared by `edge-agent` and `hub`, which otherwise share only `protocol`. This crate reads the
//! file it is asked to check and nothing else; it knows no config type (callers name theirs).

mod problems;
pub mod units;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

pub use problems::{Problem, parse_collecting, redact};

/// What `check-config` found in one file.
#[derive(Debug)]
pub struct ConfigCheck<T> {
    /// The file checked.
    pub path: PathBuf,
    /// Every problem: in file order, then what the caller added (cross-field rules, referenced
    /// files).
    pub problems: Vec<Problem>,
    /// The config as parsed (lines with type problems left out), when it could be parsed.
    pub config: Option<T>,
}

impl<T> ConfigCheck<T> {
    /// Whether the file has no problem.
    pub fn is_valid(&self) -> bool {
        self.problems.is_empty()
    }
}

impl<T: fmt::Debug> ConfigCheck<T> {
    /// The report a technician reads: the problems, or the validated config with secrets
    /// redacted.
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

/// Reads the file at `path` and checks it with `check`; an unreadable file is one problem.
pub fn check_file<T>(
    path: &Path,
    check: impl FnOnce(&str, &Path) -> ConfigCheck<T>,
) -> ConfigCheck<T> {
    match std::fs::read_to_string(path) {
        Ok(text) => check(&text, path),
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

/// Parses config text into `T`: a syntax error is the only problem (nothing after it reads
/// reliably); otherwise every type and key problem that can be isolated to a line. `path` names
/// the text in the report.
pub fn parse_text<T: DeserializeOwned>(text: &str, path: &Path) -> ConfigCheck<T> {
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
    let (config, problems) = parse_collecting::<T>(text);
    ConfigCheck {
        path: path.to_owned(),
        problems,
        config,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        a: u32,
    }

    #[test]
    fn a_syntax_error_is_the_only_problem_and_names_its_line() {
        let check = parse_text::<Doc>("a = 1\nb = = 2\n", Path::new("x.toml"));
        assert_eq!(check.problems.len(), 1);
        assert_eq!(check.problems[0].line, Some(2));
        assert_eq!(check.problems[0].key, "(syntax)");
        assert!(check.config.is_none());
    }

    #[test]
    fn the_report_lists_problems_or_prints_the_config() {
        let mut check = parse_text::<Doc>("a = 1\n", Path::new("x.toml"));
        assert!(check.is_valid());
        assert!(check.render().contains("is valid"), "{}", check.render());
        check.problems.push(Problem::at("a", "must be even"));
        assert!(!check.is_valid());
        assert!(
            check.render().contains("has 1 problem:\n  a: must be even"),
            "{}",
            check.render()
        );
    }

    #[test]
    fn an_unreadable_file_is_one_problem() {
        let check = check_file(Path::new("/nonexistent/x.toml"), parse_text::<Doc>);
        assert_eq!(check.problems.len(), 1);
        assert_eq!(check.problems[0].key, "(file)");
    }
}

//! Collects every type and key problem of a TOML config, not only the first.
//!
//! The TOML deserializer stops at the first problem. To report all of them, the line of each
//! problem is blanked and the text parsed again, until it parses or a problem cannot be isolated
//! to one line (a missing required key, or an edit that would break the syntax). Line numbers
//! stay those of the original file because a blanked line is kept as an empty one. This module
//! does no I/O.

use std::collections::HashMap;
use std::fmt;

use serde::de::DeserializeOwned;

/// One problem in a config file: where (line, key path) and what is expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line in the file, when the problem is at a place in it.
    pub line: Option<usize>,
    /// The key path, e.g. `store.quota_bytes` or `cameras[1].source`.
    pub key: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}: {}", self.key, self.message),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

impl Problem {
    /// A problem a validator found at a key path (no line: the value is wrong, not its place
    /// in the file).
    pub fn at(key: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            line: None,
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Most problems isolated before giving up: a file with more has bigger troubles.
const MAX_PROBLEMS: usize = 50;

/// Parses `text` into `T`, collecting every problem that can be isolated to a line. Returns the
/// value parsed with the problem lines left out (their defaults apply), or `None` when some
/// problem could not be isolated.
pub fn parse_collecting<T: DeserializeOwned>(text: &str) -> (Option<T>, Vec<Problem>) {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut problems = Vec::new();
    while problems.len() < MAX_PROBLEMS {
        let current = lines.join("\n");
        let error = match toml::from_str::<T>(&current) {
            Ok(value) => return (Some(value), in_file_order(problems)),
            Err(e) => e,
        };
        // After an edit, a syntax error is ours, not the file's: stop without reporting it.
        if !problems.is_empty() && toml::from_str::<toml::Table>(&current).is_err() {
            return (None, in_file_order(problems));
        }
        // An empty file has no line to name (the error's span is 0..0 of nothing).
        let line_idx = error
            .span()
            .map(|span| line_of(&current, span.start))
            .filter(|i| *i < lines.len());
        let message = error.message().trim().to_owned();
        let key = match line_idx {
            Some(i) => key_path(&lines, i),
            None => String::new(),
        };
        problems.push(Problem {
            line: line_idx.map(|i| i + 1),
            key,
            message,
        });
        match line_idx {
            Some(i) if !is_header(&lines[i]) && lines[i].contains('=') => lines[i].clear(),
            _ => return (None, in_file_order(problems)),
        }
    }
    (None, in_file_order(problems))
}

/// The deserializer visits fields in declaration order; a reader wants the file's order.
fn in_file_order(mut problems: Vec<Problem>) -> Vec<Problem> {
    problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
    problems
}

/// The 0-based line holding byte `offset`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
}

fn is_header(line: &str) -> bool {
    line.trim_start().starts_with('[')
}

/// The key path of line `idx`: the table headers above it (with the index of each array of
/// tables) and the key on the line.
fn key_path(lines: &[String], idx: usize) -> String {
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut table = String::new();
    for line in &lines[..=idx] {
        let t = line.trim();
        if let Some(name) = t.strip_prefix("[[").and_then(|r| r.split("]]").next()) {
            let name = name.trim().to_owned();
            *counts.entry(name.clone()).or_default() += 1;
            let child = format!("{name}.");
            counts.retain(|k, _| !k.starts_with(&child));
            table = name;
        } else if let Some(name) = t.strip_prefix('[').and_then(|r| r.split(']').next()) {
            table = name.trim().to_owned();
        }
    }
    let mut path = String::new();
    let mut prefix = String::new();
    for part in table.split('.').filter(|p| !p.is_empty()) {
        if !prefix.is_empty() {
            prefix.push('.');
            path.push('.');
        }
        prefix.push_str(part);
        path.push_str(part);
        if let Some(n) = counts.get(&prefix) {
            path.push_str(&format!("[{}]", n - 1));
        }
    }
    let line = lines[idx].trim();
    if !is_header(line)
        && let Some((key, _)) = line.split_once('=')
    {
        let key = key.trim().trim_matches('"');
        if path.is_empty() {
            return key.to_owned();
        }
        return format!("{path}.{key}");
    }
    if path.is_empty() {
        "(top level)".to_owned()
    } else {
        path
    }
}

/// Masks secrets in printed config: credentials in URLs (`rtsp://user:pass@host`) and the values
/// of fields that name a password, secret or token hash. Paths to secret files are kept (they
/// are not secret); their contents are never printed.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let lower = line.to_ascii_lowercase();
        let secret_field = [
            "password:",
            "password =",
            "secret:",
            "token_sha256",
            "token:",
        ]
        .iter()
        .any(|k| lower.contains(k))
            && !lower.contains("_path");
        if secret_field {
            let cut = line.find([':', '=']).map_or(line.len(), |i| i + 1);
            out.push_str(&line[..cut]);
            out.push_str(" \"<redacted>\"");
            if line.trim_end().ends_with(',') {
                out.push(',');
            }
        } else {
            out.push_str(&redact_url_credentials(line));
        }
        out.push('\n');
    }
    out
}

fn redact_url_credentials(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '/' || c == '"' || c.is_whitespace())
            .unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(at) => {
                out.push_str("<redacted>");
                rest = &tail[at..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        a: u32,
        #[serde(default)]
        t: Option<Inner>,
        #[serde(default)]
        items: Vec<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        #[serde(default)]
        x: u32,
        #[serde(default)]
        y: String,
    }

    #[test]
    fn every_line_problem_is_reported_with_its_key_path() {
        let text = "a = 1\n[t]\nx = \"no\"\nz = 3\n[[items]]\nx = 1\n[[items]]\ny = 5\n";
        let (value, problems) = parse_collecting::<Doc>(text);
        assert!(value.is_some());
        let keys: Vec<_> = problems.iter().map(|p| (p.line, p.key.as_str())).collect();
        assert_eq!(
            keys,
            [(Some(3), "t.x"), (Some(4), "t.z"), (Some(8), "items[1].y")]
        );
    }

    #[test]
    fn a_missing_required_key_stops_the_collection() {
        let (value, problems) = parse_collecting::<Doc>("[t]\nx = 1\n");
        assert!(value.is_none());
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].message.contains("missing field"),
            "{problems:?}"
        );
    }

    #[test]
    fn secrets_are_redacted() {
        let text = "url: \"rtsp://viewer:secret@10.0.0.1:554/x\",\npassword_path: \"/etc/p\"\ntoken_sha256: \"abcd\",\n";
        let out = redact(text);
        assert!(!out.contains("secret@"), "{out}");
        assert!(out.contains("rtsp://<redacted>@10.0.0.1:554/x"), "{out}");
        assert!(out.contains("/etc/p"), "{out}");
        assert!(!out.contains("abcd"), "{out}");
    }

    /// Found by the config fuzz targets: an empty file has no line to name.
    #[test]
    fn an_empty_file_reports_the_missing_key_without_a_line() {
        for text in ["", "\n", "   "] {
            let (value, problems) = parse_collecting::<Doc>(text);
            assert!(value.is_none());
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert!(
                problems[0].message.contains("missing field `a`"),
                "{problems:?}"
            );
        }
    }
}

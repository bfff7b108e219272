//! The event category catalog: major and minor classes with codes, names and default severity.
//!
//! The catalog is data (`protocol/catalog/categories.toml`), embedded at build time so that the box
//! and the hub agree on it without a file to deploy. [`Catalog::from_toml_str`] validates a
//! catalog and reports every problem at once (duplicate codes or keys, orphans, malformed codes);
//! the embedded one is validated by a unit test, so [`Catalog::embedded`] cannot fail at run time.
//! This module parses text handed to it; it never reads files.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::ids::CategoryCode;
use crate::message::Severity;

/// The catalog source embedded in this build.
pub const EMBEDDED_CATALOG: &str = include_str!("../catalog/categories.toml");

/// A validated category catalog.
#[derive(Debug, Clone)]
pub struct Catalog {
    majors: BTreeMap<CategoryCode, MajorClass>,
    minors: BTreeMap<CategoryCode, Category>,
    by_key: HashMap<String, CategoryCode>,
}

/// A major class (2-digit code).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MajorClass {
    /// The 2-digit code.
    pub code: CategoryCode,
    /// Stable machine name, e.g. `environment`.
    pub key: String,
    /// Chinese name.
    pub zh: String,
    /// English name.
    pub en: String,
}

/// A minor class (4-digit code): what events carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Category {
    /// The 4-digit code.
    pub code: CategoryCode,
    /// Stable machine name, e.g. `environment.exposed_garbage`.
    pub key: String,
    /// Chinese name.
    pub zh: String,
    /// English name.
    pub en: String,
    /// Default severity; a rule may override it.
    pub severity: Severity,
}

/// A catalog that failed validation, with every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("category catalog `{origin}` is invalid: {}", Problems(.problems))]
pub struct CatalogError {
    /// Where the catalog came from (a file name, or `embedded`).
    pub origin: String,
    /// Each problem.
    pub problems: Vec<CatalogProblem>,
}

/// One problem in a catalog.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogProblem {
    /// The text is not valid TOML of the expected shape.
    #[error("{0}")]
    Syntax(String),
    /// A code that is not 2 digits (major) or 4 digits (minor).
    #[error("class `{key}` has malformed code `{code}`: {expected}")]
    BadCode {
        /// The class's key.
        key: String,
        /// The code as written.
        code: String,
        /// What was expected.
        expected: &'static str,
    },
    /// Two classes share a code.
    #[error("code `{0}` is used twice")]
    DuplicateCode(String),
    /// Two classes share a key.
    #[error("key `{0}` is used twice")]
    DuplicateKey(String),
    /// A minor class whose major class does not exist.
    #[error("minor class `{code}` ({key}) has no major class `{major}`")]
    Orphan {
        /// The minor class's code.
        code: String,
        /// Its key.
        key: String,
        /// The missing major code.
        major: String,
    },
    /// A major class with no minor class under it.
    #[error("major class `{0}` has no minor classes")]
    EmptyMajor(String),
}

impl Catalog {
    /// The catalog embedded in this build.
    pub fn embedded() -> &'static Catalog {
        static CATALOG: OnceLock<Catalog> = OnceLock::new();
        CATALOG.get_or_init(|| {
            // invariant: the embedded catalog is validated by `embedded_catalog_is_valid`.
            #[allow(clippy::expect_used)]
            Catalog::from_toml_str(EMBEDDED_CATALOG, "embedded").expect("embedded catalog is valid")
        })
    }

    /// Parses and validates a catalog.
    ///
    /// # Errors
    /// [`CatalogError`] listing every problem found.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Catalog, CatalogError> {
        let fail = |problems| CatalogError {
            origin: origin.to_owned(),
            problems,
        };
        let raw: RawCatalog =
            toml::from_str(text).map_err(|e| fail(vec![CatalogProblem::Syntax(e.to_string())]))?;
        let mut problems = Vec::new();
        let mut majors = BTreeMap::new();
        let mut minors = BTreeMap::new();
        let mut by_key = HashMap::new();
        let mut seen_codes = std::collections::HashSet::new();

        for m in raw.major {
            let code = match CategoryCode::parse(&m.code) {
                Ok(c) if !c.is_minor() => c,
                _ => {
                    problems.push(CatalogProblem::BadCode {
                        key: m.key,
                        code: m.code,
                        expected: "2 digits for a major class",
                    });
                    continue;
                }
            };
            if !seen_codes.insert(m.code.clone()) {
                problems.push(CatalogProblem::DuplicateCode(m.code));
                continue;
            }
            if by_key.insert(m.key.clone(), code.clone()).is_some() {
                problems.push(CatalogProblem::DuplicateKey(m.key.clone()));
            }
            majors.insert(
                code.clone(),
                MajorClass {
                    code,
                    key: m.key,
                    zh: m.zh,
                    en: m.en,
                },
            );
        }
        for m in raw.minor {
            let code = match CategoryCode::parse(&m.code) {
                Ok(c) if c.is_minor() => c,
                _ => {
                    problems.push(CatalogProblem::BadCode {
                        key: m.key,
                        code: m.code,
                        expected: "4 digits for a minor class",
                    });
                    continue;
                }
            };
            if !seen_codes.insert(m.code.clone()) {
                problems.push(CatalogProblem::DuplicateCode(m.code));
                continue;
            }
            if !majors.contains_key(&code.major()) {
                problems.push(CatalogProblem::Orphan {
                    code: m.code.clone(),
                    key: m.key.clone(),
                    major: code.major().to_string(),
                });
            }
            if by_key.insert(m.key.clone(), code.clone()).is_some() {
                problems.push(CatalogProblem::DuplicateKey(m.key.clone()));
            }
            minors.insert(
                code.clone(),
                Category {
                    code,
                    key: m.key,
                    zh: m.zh,
                    en: m.en,
                    severity: m.severity,
                },
            );
        }
        for code in majors.keys() {
            if !minors.keys().any(|c| c.major() == *code) {
                problems.push(CatalogProblem::EmptyMajor(code.to_string()));
            }
        }
        if problems.is_empty() {
            Ok(Catalog {
                majors,
                minors,
                by_key,
            })
        } else {
            Err(fail(problems))
        }
    }

    /// The minor class with this code.
    pub fn by_code(&self, code: &CategoryCode) -> Option<&Category> {
        self.minors.get(code)
    }

    /// The minor class with this key (e.g. `device.data_loss`).
    pub fn by_key(&self, key: &str) -> Option<&Category> {
        self.by_key.get(key).and_then(|code| self.minors.get(code))
    }

    /// Looks a minor class up by code or by key, as configuration files name them.
    pub fn resolve(&self, code_or_key: &str) -> Option<&Category> {
        CategoryCode::parse(code_or_key)
            .ok()
            .and_then(|code| self.by_code(&code))
            .or_else(|| self.by_key(code_or_key))
    }

    /// The major class with this code.
    pub fn major(&self, code: &CategoryCode) -> Option<&MajorClass> {
        self.majors.get(&code.major())
    }

    /// All major classes in code order.
    pub fn majors(&self) -> impl Iterator<Item = &MajorClass> {
        self.majors.values()
    }

    /// All minor classes in code order.
    pub fn categories(&self) -> impl Iterator<Item = &Category> {
        self.minors.values()
    }

    /// A plain-text table of every class, majors followed by their minors, for CLI listings.
    pub fn to_table(&self) -> String {
        let mut out =
            String::from("CODE  KEY                                       SEVERITY  NAME\n");
        for major in self.majors() {
            out.push_str(&format!(
                "{:<5} {:<41} {:<9} {} / {}\n",
                major.code.as_str(),
                major.key,
                "",
                major.zh,
                major.en
            ));
            for c in self.categories().filter(|c| c.code.major() == major.code) {
                let severity = format!("{:?}", c.severity).to_lowercase();
                out.push_str(&format!(
                    "{:<5} {:<41} {:<9} {} / {}\n",
                    c.code.as_str(),
                    c.key,
                    severity,
                    c.zh,
                    c.en
                ));
            }
        }
        out
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    #[serde(default)]
    major: Vec<RawMajor>,
    #[serde(default)]
    minor: Vec<RawMinor>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMajor {
    code: String,
    key: String,
    zh: String,
    en: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMinor {
    code: String,
    key: String,
    zh: String,
    en: String,
    severity: Severity,
}

struct Problems<'a>(&'a [CatalogProblem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_catalog_is_valid() {
        let catalog = Catalog::from_toml_str(EMBEDDED_CATALOG, "embedded").unwrap();
        let majors: Vec<&str> = catalog.majors().map(|m| m.zh.as_str()).collect();
        for name in [
            "市容环境",
            "宣传广告",
            "施工管理",
            "街面秩序",
            "突发事件",
            "其他事件",
            "设备故障",
        ] {
            assert!(majors.contains(&name), "major class {name} missing");
        }
        let loss = catalog.by_key("device.data_loss").unwrap();
        assert_eq!(loss.code.major().as_str(), "90");
        assert_eq!(catalog.resolve("0102").unwrap().zh, "暴露垃圾");
        assert_eq!(
            catalog.resolve("street_order.illegal_parking").unwrap().zh,
            "机动车乱停放"
        );
        assert!(catalog.resolve("0199").is_none());
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = r#"
            [[major]]
            code = "01"
            key = "a"
            zh = "甲"
            en = "A"
            [[major]]
            code = "02"
            key = "b"
            zh = "乙"
            en = "B"
            [[minor]]
            code = "0101"
            key = "a.one"
            zh = "一"
            en = "One"
            severity = "low"
            [[minor]]
            code = "0101"
            key = "a.again"
            zh = "一"
            en = "Again"
            severity = "low"
            [[minor]]
            code = "0301"
            key = "a.one"
            zh = "孤"
            en = "Orphan"
            severity = "high"
            [[minor]]
            code = "1"
            key = "bad"
            zh = "坏"
            en = "Bad"
            severity = "high"
        "#;
        let err = Catalog::from_toml_str(text, "test.toml").unwrap_err();
        assert_eq!(err.origin, "test.toml");
        let p = &err.problems;
        assert!(
            p.contains(&CatalogProblem::DuplicateCode("0101".into())),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|x| matches!(x, CatalogProblem::Orphan { code, .. } if code == "0301")),
            "{p:?}"
        );
        assert!(
            p.contains(&CatalogProblem::DuplicateKey("a.one".into())),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|x| matches!(x, CatalogProblem::BadCode { code, .. } if code == "1")),
            "{p:?}"
        );
        assert!(
            p.contains(&CatalogProblem::EmptyMajor("02".into())),
            "{p:?}"
        );
        assert_eq!(p.len(), 5, "{p:?}");
    }

    #[test]
    fn syntax_errors_are_reported() {
        let err = Catalog::from_toml_str("[[minor]]\ncode = 5", "x.toml").unwrap_err();
        assert!(matches!(
            err.problems.as_slice(),
            [CatalogProblem::Syntax(_)]
        ));
    }
}

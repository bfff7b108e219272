//! The responsibility list: category → departments per level, time limit, registration mode.
//!
//! Format (CSV, `#` starts a comment line, no quoting):
//!
//! ```text
//! category,community_department,street_department,district_department,time_limit,registration
//! environment.exposed_garbage,sanitation-pj,sanitation-gusu,city-management,4h,auto
//! 04,street-office-pj,urban-order-gusu,city-management,1d,review
//! ```
//!
//! `category` is a minor code (`0102`), a key (`environment.exposed_garbage`) or a major code
//! (`04`, covering every minor class without its own row). `time_limit` is working time:
//! `90m`, `4h` or `2d` (a working day is the calendar's daily working hours).

use std::collections::{BTreeMap, HashSet};

use protocol::{Catalog, CategoryCode};

use super::DepartmentId;

/// How much working time a case gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeLimit {
    /// Working minutes.
    Minutes(u32),
    /// Working hours.
    Hours(u32),
    /// Working days (each the calendar's working hours of one day).
    Days(u32),
}

impl TimeLimit {
    /// The limit in working milliseconds, given a working day's length.
    pub fn working_ms(self, working_day_ms: i64) -> i64 {
        match self {
            TimeLimit::Minutes(m) => i64::from(m) * 60_000,
            TimeLimit::Hours(h) => i64::from(h) * 3_600_000,
            TimeLimit::Days(d) => i64::from(d) * working_day_ms,
        }
    }
}

/// Whether a category's events become registered cases by themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// Registered and dispatched to the community-level department on arrival.
    Auto,
    /// Wait for a dispatcher to register (or reject) them.
    Review,
}

/// One row of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duty {
    /// The category (minor or major code).
    pub category: CategoryCode,
    /// Departments at community, street and district level, in escalation order.
    pub departments: [DepartmentId; 3],
    /// The time limit.
    pub time_limit: TimeLimit,
    /// Registration mode.
    pub registration: Registration,
}

/// A validated responsibility list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DutyList {
    rows: BTreeMap<CategoryCode, Duty>,
}

/// One bad line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct DutyLine {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub problem: String,
}

/// A responsibility list that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DutyError {
    /// Lines with problems; every one is listed.
    #[error("responsibility list is invalid: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Lines(Vec<DutyLine>),
}

const HEADER: [&str; 6] = [
    "category",
    "community_department",
    "street_department",
    "district_department",
    "time_limit",
    "registration",
];

impl DutyList {
    /// Parses and validates a list against the catalog and the known departments.
    ///
    /// # Errors
    /// [`DutyError::Lines`] naming each bad line: unknown category or department, malformed
    /// time limit or mode, wrong column count, duplicate category.
    pub fn from_csv_str(
        text: &str,
        catalog: &Catalog,
        departments: &HashSet<DepartmentId>,
    ) -> Result<DutyList, DutyError> {
        let mut problems = Vec::new();
        let mut rows = BTreeMap::new();
        let mut header_seen = false;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = trimmed.split(',').map(str::trim).collect();
            let mut bad = |problem: String| problems.push(DutyLine { line, problem });
            if !header_seen {
                header_seen = true;
                if fields != HEADER {
                    bad(format!("expected the header `{}`", HEADER.join(",")));
                }
                continue;
            }
            if trimmed.contains('"') {
                bad("quotes are not supported".into());
                continue;
            }
            if fields.len() != HEADER.len() {
                bad(format!(
                    "expected {} fields, found {}",
                    HEADER.len(),
                    fields.len()
                ));
                continue;
            }
            let category = match resolve(catalog, fields[0]) {
                Some(c) => c,
                None => {
                    bad(format!("unknown category `{}`", fields[0]));
                    continue;
                }
            };
            let mut depts = Vec::new();
            for f in &fields[1..4] {
                match DepartmentId::parse(*f) {
                    Ok(d) if departments.contains(&d) => depts.push(d),
                    _ => bad(format!("unknown department `{f}`")),
                }
            }
            let time_limit = parse_limit(fields[4]);
            if time_limit.is_none() {
                bad(format!(
                    "time limit `{}` is not like 90m, 4h or 2d",
                    fields[4]
                ));
            }
            let registration = match fields[5] {
                "auto" => Some(Registration::Auto),
                "review" => Some(Registration::Review),
                other => {
                    bad(format!("registration `{other}` is neither auto nor review"));
                    None
                }
            };
            if rows.contains_key(&category) {
                bad(format!("category `{category}` is listed twice"));
                continue;
            }
            let (Ok(departments), Some(time_limit), Some(registration)) = (
                <[DepartmentId; 3]>::try_from(depts),
                time_limit,
                registration,
            ) else {
                continue;
            };
            rows.insert(
                category.clone(),
                Duty {
                    category,
                    departments,
                    time_limit,
                    registration,
                },
            );
        }
        if !header_seen {
            problems.push(DutyLine {
                line: 1,
                problem: "the list is empty".into(),
            });
        }
        if problems.is_empty() {
            Ok(DutyList { rows })
        } else {
            Err(DutyError::Lines(problems))
        }
    }

    /// The duty for a category: its own row, else its major class's row.
    pub fn for_category(&self, category: &CategoryCode) -> Option<&Duty> {
        self.rows
            .get(category)
            .or_else(|| self.rows.get(&category.major()))
    }

    /// Every row.
    pub fn rows(&self) -> impl Iterator<Item = &Duty> {
        self.rows.values()
    }
}

fn resolve(catalog: &Catalog, text: &str) -> Option<CategoryCode> {
    if let Some(c) = catalog.resolve(text) {
        return Some(c.code.clone());
    }
    let code = CategoryCode::parse(text).ok()?;
    catalog.major(&code).map(|m| m.code.clone())
}

fn parse_limit(text: &str) -> Option<TimeLimit> {
    let unit_char = text.chars().next_back()?;
    let (num, unit) = text.split_at(text.len() - unit_char.len_utf8());
    let n: u32 = num.parse().ok().filter(|n| *n > 0)?;
    match unit {
        "m" => Some(TimeLimit::Minutes(n)),
        "h" => Some(TimeLimit::Hours(n)),
        "d" => Some(TimeLimit::Days(n)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depts() -> HashSet<DepartmentId> {
        ["san-pj", "san-gusu", "cm"]
            .into_iter()
            .map(|d| DepartmentId::parse(d).unwrap())
            .collect()
    }

    #[test]
    fn a_valid_list_resolves_keys_codes_and_major_classes() {
        let text = "category,community_department,street_department,district_department,time_limit,registration\n\
            # garbage\n\
            environment.exposed_garbage,san-pj,san-gusu,cm,4h,auto\n\
            04,san-pj,san-gusu,cm,2d,review\n";
        let list = DutyList::from_csv_str(text, Catalog::embedded(), &depts()).unwrap();
        let g = list
            .for_category(&CategoryCode::parse("0102").unwrap())
            .unwrap();
        assert_eq!(g.time_limit, TimeLimit::Hours(4));
        assert_eq!(g.registration, Registration::Auto);
        let parking = list
            .for_category(&CategoryCode::parse("0404").unwrap())
            .unwrap();
        assert_eq!(parking.time_limit, TimeLimit::Days(2));
        assert!(
            list.for_category(&CategoryCode::parse("0501").unwrap())
                .is_none()
        );
    }

    #[test]
    fn unknown_categories_and_departments_are_errors_naming_the_line() {
        let text = "category,community_department,street_department,district_department,time_limit,registration\n\
            environment.no_such_thing,san-pj,san-gusu,cm,4h,auto\n\
            0102,san-pj,nobody,cm,4h,auto\n\
            0103,san-pj,san-gusu,cm,4 hours,sometimes\n\
            0104,san-pj\n";
        let DutyError::Lines(lines) =
            DutyList::from_csv_str(text, Catalog::embedded(), &depts()).unwrap_err();
        let at: Vec<usize> = lines.iter().map(|l| l.line).collect();
        assert_eq!(at, [2, 3, 4, 4, 5], "{lines:?}");
        assert!(lines[0].problem.contains("environment.no_such_thing"));
        assert!(lines[1].problem.contains("nobody"));
    }

    /// Found by the `duty_list` fuzz target: the unit was cut off at a byte, not a character.
    #[test]
    fn a_time_limit_ending_in_a_multibyte_character_is_a_problem_not_a_panic() {
        let text = "category,community_department,street_department,district_department,time_limit,registration\n\
            0102,san-pj,san-gusu,cm,4\u{31b},auto\n\
            0103,san-pj,san-gusu,cm,\u{5929},auto\n";
        let DutyError::Lines(lines) =
            DutyList::from_csv_str(text, Catalog::embedded(), &depts()).unwrap_err();
        let at: Vec<usize> = lines.iter().map(|l| l.line).collect();
        assert_eq!(at, [2, 3], "{lines:?}");
    }
}

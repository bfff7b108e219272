//! Duties: who handles what, and by when.
//!
//! - [`DutyList`]: the responsibility list (责任清单), a CSV file mapping each event category to
//!   the department responsible at community, street and district level, a time limit, and
//!   whether its events register automatically or wait for review;
//! - [`WorkCalendar`]: working hours, weekends, holidays and make-up working days, and the
//!   deadline arithmetic on them.
//!
//! Both parse text handed to them and report every problem with its line number. This module
//! must not read files, clocks or the database.

use std::fmt;

use serde::{Deserialize, Serialize};

mod calendar;
mod list;

pub use calendar::{CalendarError, WorkCalendar};
pub use list::{Duty, DutyError, DutyLine, DutyList, Registration, TimeLimit};

/// A department that handles cases (e.g. `city-management-gusu`), as named in the hub config.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DepartmentId(String);

impl DepartmentId {
    /// Validates a department id: 1 to 64 characters, no whitespace.
    ///
    /// # Errors
    /// [`crate::grid::BadName`].
    pub fn parse(value: impl Into<String>) -> Result<Self, crate::grid::BadName> {
        crate::grid::check_name(value.into()).map(DepartmentId)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DepartmentId {
    type Error = crate::grid::BadName;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl From<DepartmentId> for String {
    fn from(value: DepartmentId) -> String {
        value.0
    }
}

impl fmt::Display for DepartmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Line number (1-based) of a byte offset in `text`.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(0, |t| t.matches('\n').count()) + 1
}

//! The work calendar and deadline arithmetic.

use std::collections::HashSet;

use protocol::Timestamp;
use serde::Deserialize;
use toml::Spanned;

use super::line_of;

const DAY_MS: i64 = 86_400_000;
const MINUTE_MS: i64 = 60_000;
/// Deadlines further out than this are refused rather than searched for.
const MAX_SEARCH_DAYS: i64 = 3660;

/// Working hours on working days, in a fixed UTC offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkCalendar {
    offset_ms: i64,
    /// Working periods within a day, in milliseconds since local midnight, sorted.
    periods: Vec<(i64, i64)>,
    /// Index 0 = Monday.
    weekend: [bool; 7],
    holidays: HashSet<i64>,
    makeup_workdays: HashSet<i64>,
}

/// A calendar file that could not be read, with every problem and its line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("work calendar is invalid: {}", .problems.iter().map(|(l, p)| format!("line {l}: {p}")).collect::<Vec<_>>().join("; "))]
pub struct CalendarError {
    /// `(line, problem)` pairs.
    pub problems: Vec<(usize, String)>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCalendar {
    /// Local time's offset from UTC in minutes (China: 480).
    utc_offset_minutes: i32,
    /// `HH:MM-HH:MM` periods, e.g. `["08:30-12:00", "13:30-17:30"]`.
    working_hours: Vec<Spanned<String>>,
    /// Weekday names off work. Default Saturday and Sunday.
    #[serde(default = "default_weekend")]
    weekend_days: Vec<Spanned<String>>,
    /// `YYYY-MM-DD` days off (public holidays).
    #[serde(default)]
    holidays: Vec<Spanned<String>>,
    /// `YYYY-MM-DD` weekend days that are working days (调休).
    #[serde(default)]
    makeup_workdays: Vec<Spanned<String>>,
}

fn default_weekend() -> Vec<Spanned<String>> {
    vec![
        Spanned::new(0..0, "saturday".into()),
        Spanned::new(0..0, "sunday".into()),
    ]
}

impl WorkCalendar {
    /// Parses a calendar from TOML text.
    ///
    /// # Errors
    /// [`CalendarError`] listing every problem with its line.
    pub fn from_toml_str(text: &str) -> Result<WorkCalendar, CalendarError> {
        let raw: RawCalendar = toml::from_str(text).map_err(|e| CalendarError {
            problems: vec![(
                e.span().map_or(1, |s| line_of(text, s.start)),
                e.message().to_owned(),
            )],
        })?;
        let mut problems = Vec::new();
        let line = |s: &Spanned<String>| line_of(text, s.span().start);
        let mut periods = Vec::new();
        for p in &raw.working_hours {
            match parse_period(p.get_ref()) {
                Some(period) => periods.push(period),
                None => problems.push((
                    line(p),
                    format!("`{}` is not HH:MM-HH:MM with start before end", p.get_ref()),
                )),
            }
        }
        periods.sort();
        if periods.windows(2).any(|w| w[0].1 > w[1].0) {
            problems.push((1, "working hours overlap".into()));
        }
        if raw.working_hours.is_empty() {
            problems.push((1, "working_hours is empty".into()));
        }
        let mut weekend = [false; 7];
        for d in &raw.weekend_days {
            match weekday(d.get_ref()) {
                Some(i) => weekend[i] = true,
                None => {
                    problems.push((line(d), format!("`{}` is not a weekday name", d.get_ref())))
                }
            }
        }
        let days = |list: &[Spanned<String>], problems: &mut Vec<(usize, String)>| {
            let mut out = HashSet::new();
            for d in list {
                match parse_date(d.get_ref()) {
                    Some(day) => {
                        out.insert(day);
                    }
                    None => problems.push((
                        line(d),
                        format!("`{}` is not a YYYY-MM-DD date", d.get_ref()),
                    )),
                }
            }
            out
        };
        let holidays = days(&raw.holidays, &mut problems);
        let makeup_workdays = days(&raw.makeup_workdays, &mut problems);
        if !(-720..=840).contains(&raw.utc_offset_minutes) {
            problems.push((1, "utc_offset_minutes must be within -720..=840".into()));
        }
        if !problems.is_empty() {
            problems.sort();
            return Err(CalendarError { problems });
        }
        Ok(WorkCalendar {
            offset_ms: i64::from(raw.utc_offset_minutes) * MINUTE_MS,
            periods,
            weekend,
            holidays,
            makeup_workdays,
        })
    }

    /// Working milliseconds in one working day.
    pub fn working_day_ms(&self) -> i64 {
        self.periods.iter().map(|(s, e)| e - s).sum()
    }

    /// True when the local day containing `at` is a working day.
    pub fn is_working_day(&self, at: Timestamp) -> bool {
        self.working_day((at.as_unix_millis() + self.offset_ms).div_euclid(DAY_MS))
    }

    /// The instant `working_ms` of working time after `start`, or `None` when that is further
    /// than ten years out.
    pub fn add_working_time(&self, start: Timestamp, working_ms: i64) -> Option<Timestamp> {
        let local = start.as_unix_millis() + self.offset_ms;
        let mut day = local.div_euclid(DAY_MS);
        let mut cursor = local.rem_euclid(DAY_MS);
        let mut remaining = working_ms.max(0);
        for _ in 0..MAX_SEARCH_DAYS {
            if self.working_day(day) {
                for &(s, e) in &self.periods {
                    if cursor >= e {
                        continue;
                    }
                    let begin = cursor.max(s);
                    if remaining <= e - begin {
                        return Some(Timestamp::from_unix_millis(
                            day * DAY_MS + begin + remaining - self.offset_ms,
                        ));
                    }
                    remaining -= e - begin;
                }
            }
            day += 1;
            cursor = 0;
        }
        None
    }

    fn working_day(&self, day: i64) -> bool {
        if self.makeup_workdays.contains(&day) {
            return true;
        }
        if self.holidays.contains(&day) {
            return false;
        }
        // 1970-01-01 was a Thursday (index 3 with Monday = 0)
        !self.weekend[(day + 3).rem_euclid(7) as usize]
    }
}

fn parse_period(text: &str) -> Option<(i64, i64)> {
    let (a, b) = text.split_once('-')?;
    let hm = |t: &str| {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
        // `then`, not `then_some`: the product must not be computed for out-of-range parts.
        ((0..=24).contains(&h) && (0..60).contains(&m) && h * 60 + m <= 1440)
            .then(|| (h * 60 + m) * MINUTE_MS)
    };
    let (s, e) = (hm(a)?, hm(b)?);
    (s < e).then_some((s, e))
}

fn weekday(name: &str) -> Option<usize> {
    let names = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    let lower = name.to_ascii_lowercase();
    names
        .iter()
        .position(|n| *n == lower || (lower.len() == 3 && n.starts_with(&lower)))
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date.
fn parse_date(text: &str) -> Option<i64> {
    let mut it = text.split('-');
    let (y, m, d): (i64, i64, i64) = (
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
    );
    if it.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) || text.len() != 10 {
        return None;
    }
    // Howard Hinnant's days_from_civil
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAL: &str = r#"
utc_offset_minutes = 480
working_hours = ["08:30-12:00", "13:30-17:30"]
holidays = ["2026-09-28"]
makeup_workdays = ["2026-10-10"]
"#;

    fn at(millis: i64) -> Timestamp {
        Timestamp::from_unix_millis(millis)
    }

    #[test]
    fn dates_count_days_from_the_epoch() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2026-09-25"), Some(20_721));
        assert_eq!(parse_date("2026-02-30x"), None);
    }

    #[test]
    fn a_deadline_skips_the_weekend_and_a_holiday() {
        let cal = WorkCalendar::from_toml_str(CAL).unwrap();
        // Friday 2026-09-25 16:00 +08:00; 4 working hours: 1.5 h on Friday, Monday is a
        // holiday, 2.5 h on Tuesday → Tuesday 11:00 +08:00 (03:00Z)
        let start = at(1_790_323_200_000);
        let due = cal.add_working_time(start, 4 * 3_600_000).unwrap();
        assert_eq!(due.to_string(), "2026-09-29T03:00:00.000Z");
    }

    #[test]
    fn a_makeup_saturday_is_a_working_day() {
        let cal = WorkCalendar::from_toml_str(CAL).unwrap();
        // Saturday 2026-10-10 09:00 +08:00 = 01:00Z
        let sat = at(1_791_594_000_000);
        assert!(cal.is_working_day(sat));
        let due = cal.add_working_time(sat, 60 * MINUTE_MS).unwrap();
        assert_eq!(due.to_string(), "2026-10-10T02:00:00.000Z");
        assert!(
            !cal.is_working_day(at(1_791_594_000_000 + DAY_MS)),
            "Sunday 11th is off"
        );
    }

    #[test]
    fn an_event_before_opening_hours_counts_from_opening() {
        let cal = WorkCalendar::from_toml_str(CAL).unwrap();
        // Thursday 2026-09-24 06:00 +08:00 = 2026-09-23T22:00Z; 30 min → 09:00 +08:00
        let due = cal
            .add_working_time(at(1_790_200_800_000), 30 * MINUTE_MS)
            .unwrap();
        assert_eq!(due.to_string(), "2026-09-24T01:00:00.000Z");
        assert_eq!(cal.working_day_ms(), 450 * MINUTE_MS);
    }

    #[test]
    fn bad_entries_are_reported_with_their_lines() {
        let text = "utc_offset_minutes = 480\nworking_hours = [\"08:30-12:00\",\n \"25:00-26:00\"]\nholidays = [\"2026-13-01\"]\n";
        let err = WorkCalendar::from_toml_str(text).unwrap_err();
        let lines: Vec<usize> = err.problems.iter().map(|p| p.0).collect();
        assert_eq!(lines, [3, 4], "{err}");
        let err = WorkCalendar::from_toml_str("utc_offset_minutes = 480\nworking_hour = []\n")
            .unwrap_err();
        assert_eq!(err.problems[0].0, 2, "{err}");
    }

    /// Found by the `work_calendar` fuzz target: the minutes were multiplied out before they
    /// were found out of range.
    #[test]
    fn working_hours_with_absurd_minutes_are_a_problem_not_an_overflow() {
        let text = "utc_offset_minutes = 480\nworking_hours = [\"08:9999999999999910-10\"]\n";
        let err = WorkCalendar::from_toml_str(text).unwrap_err();
        assert_eq!(err.problems[0].0, 2, "{err}");
    }
}

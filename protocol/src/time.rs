//! UTC timestamps on the wire.
//!
//! A [`Timestamp`] is milliseconds since the Unix epoch in UTC: compact, totally ordered and free
//! of time-zone questions. This module never reads a clock; callers pass the time in.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A UTC instant, in milliseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    /// From milliseconds since the Unix epoch.
    pub const fn from_unix_millis(millis: i64) -> Self {
        Timestamp(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_unix_millis(self) -> i64 {
        self.0
    }

    /// Parses an RFC 3339 date-time with an explicit offset (`Z` or `±hh:mm`), e.g.
    /// `2026-11-25T08:30:00.250+08:00`. Fractions beyond milliseconds are truncated. Returns
    /// `None` for anything else, including date-times without an offset (their zone is unknown).
    pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
        let b = text.as_bytes();
        let num = |range: std::ops::Range<usize>| -> Option<i64> {
            let part = b.get(range)?;
            if part.iter().all(u8::is_ascii_digit) {
                std::str::from_utf8(part).ok()?.parse().ok()
            } else {
                None
            }
        };
        if b.len() < 20
            || b[4] != b'-'
            || b[7] != b'-'
            || !matches!(b[10], b'T' | b't' | b' ')
            || b[13] != b':'
            || b[16] != b':'
        {
            return None;
        }
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 60
        {
            return None;
        }
        let mut i = 19;
        let mut millis = 0;
        if b[i] == b'.' {
            let start = i + 1;
            i = start;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i == start {
                return None;
            }
            let digits = &text[start..i.min(start + 3)];
            millis = digits.parse::<i64>().ok()? * 10i64.pow(3 - digits.len() as u32);
        }
        let offset_secs = match b.get(i..)? {
            [b'Z' | b'z'] => 0,
            [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
                let hh = num(i + 1..i + 3)?;
                let mm = num(i + 4..i + 6)?;
                if hh > 23 || mm > 59 {
                    return None;
                }
                let secs = hh * 3600 + mm * 60;
                if *sign == b'+' { secs } else { -secs }
            }
            _ => return None,
        };
        let days = days_from_civil(year, month, day);
        let secs = days * 86_400 + hour * 3600 + minute * 60 + second.min(59) - offset_secs;
        Some(Timestamp(secs * 1000 + millis))
    }

    /// Milliseconds from `earlier` to `self` (negative when `earlier` is later).
    pub fn millis_since(self, earlier: Timestamp) -> i64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with milliseconds, e.g. `2026-11-25T08:30:00.250Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.rem_euclid(1000);
        let secs = self.0.div_euclid(1000);
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
            sod / 3600,
            sod / 60 % 60,
            sod % 60
        )
    }
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to a proleptic Gregorian date.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Howard Hinnant's `days_from_civil`: a proleptic Gregorian date to days since 1970-01-01.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_as_rfc3339_utc() {
        assert_eq!(
            Timestamp::from_unix_millis(0).to_string(),
            "1970-01-01T00:00:00.000Z"
        );
        // 2024-02-29T23:59:59.999Z: a leap day
        assert_eq!(
            Timestamp::from_unix_millis(1_709_251_199_999).to_string(),
            "2024-02-29T23:59:59.999Z"
        );
        assert_eq!(
            Timestamp::from_unix_millis(-1).to_string(),
            "1969-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn parses_rfc3339_with_offsets() {
        let utc = Timestamp::parse_rfc3339("2024-02-29T23:59:59.999Z").unwrap();
        assert_eq!(utc.as_unix_millis(), 1_709_251_199_999);
        let beijing = Timestamp::parse_rfc3339("2024-03-01T07:59:59.999+08:00").unwrap();
        assert_eq!(beijing, utc);
        assert_eq!(
            Timestamp::parse_rfc3339("1970-01-01T00:00:00Z")
                .unwrap()
                .as_unix_millis(),
            0
        );
        assert_eq!(
            Timestamp::parse_rfc3339("1970-01-01T00:00:00.5-01:00")
                .unwrap()
                .as_unix_millis(),
            3_600_500
        );
        for bad in [
            "2024-02-30T00:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01",
            "2024-13-01T00:00:00Z",
            "2024-01-01T00:00:00.Z",
            "x024-01-01T00:00:00Z",
            "2024-01-01T00:00:00+8:00",
            "2024-01-01T00:00:00Z ",
        ] {
            assert_eq!(Timestamp::parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn display_and_parse_agree() {
        for millis in [
            0,
            1,
            999,
            86_399_999,
            1_764_057_600_250,
            -86_400_001,
            253_402_300_799_999,
        ] {
            let t = Timestamp::from_unix_millis(millis);
            assert_eq!(Timestamp::parse_rfc3339(&t.to_string()), Some(t), "{t}");
        }
    }
}

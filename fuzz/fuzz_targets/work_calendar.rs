//! Fuzzes the work calendar: any text must load or fail with a named problem, never panic; a
//! loaded calendar must answer deadline sums and working-day questions for any instant and any
//! time limit without overflowing, and a deadline is never before its start.
//!
//! Input: the first 16 bytes are a start instant and a working time (little-endian i64
//! milliseconds), the rest is the calendar file.
#![no_main]

use hub::duties::WorkCalendar;
use libfuzzer_sys::fuzz_target;
use protocol::Timestamp;

fuzz_target!(|data: &[u8]| {
    if data.len() < 16 {
        return;
    }
    let (numbers, text) = data.split_at(16);
    let start = i64::from_le_bytes(numbers[..8].try_into().unwrap());
    let working = i64::from_le_bytes(numbers[8..].try_into().unwrap());
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let Ok(calendar) = WorkCalendar::from_toml_str(text) else {
        return;
    };
    let start = Timestamp::from_unix_millis(start);
    let _ = calendar.working_day_ms();
    let _ = calendar.is_working_day(start);
    if let Some(deadline) = calendar.add_working_time(start, working) {
        assert!(deadline >= start, "{deadline:?} before {start:?}");
    }
});

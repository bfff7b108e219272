//! Fuzzes the body of an Open311 `POST requests`: any bytes must parse into a report form or a
//! sentence for the 400 answer, and the form's checks must hold for what they accept.
#![no_main]

use hub::api::open311::parse_report_form;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(form) = parse_report_form(data) else {
        return;
    };
    if form.check(2000).is_ok() {
        assert!(form.lat.is_finite() && form.long.is_finite());
        assert!((-90.0..=90.0).contains(&form.lat) && (-180.0..=180.0).contains(&form.long));
        assert!(form.description.chars().count() <= 2000);
        assert!(!form.service_code.is_empty() && form.service_code.len() <= 64);
    }
});

//! Fuzzes the duty list CSV against the embedded category catalog: any text must load or give
//! problems naming lines, never panic; time limits of a loaded list convert without overflow.
#![no_main]

use std::collections::HashSet;

use hub::duties::{DepartmentId, DutyList};
use libfuzzer_sys::fuzz_target;
use protocol::Catalog;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let departments: HashSet<DepartmentId> = [
        "sanitation-pj",
        "sanitation-gusu",
        "city-management",
        "traffic-pj",
        "traffic-gusu",
    ]
        .into_iter()
        .map(|d| DepartmentId::parse(d).expect("valid department"))
        .collect();
    if let Ok(list) = DutyList::from_csv_str(text, Catalog::embedded(), &departments) {
        let _ = format!("{list:?}");
    }
});

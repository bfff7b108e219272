//! Assessment (综合评价): per area, department and worker, how many cases were registered, due,
//! closed (on time), reworked and returned in a period, the rates derived from them, and a CSV
//! export.
//!
//! Definitions, for a period `[from, to)`:
//! - **registered**: cases with a `register` transition in the period;
//! - **due**: cases (not rejected) whose deadline falls in the period;
//! - **closed**: due cases closed before `to`; **closed on time**: closed at or before their
//!   deadline;
//! - **handled**: cases with a `feedback` transition in the period; **reworked**: cases with a
//!   failed verification in the period; **returned**: cases returned by a department in it;
//! - closure rate = closed / due; on-time closure rate = closed on time / due; rework rate =
//!   reworked / handled; average handling time = first dispatch → close, in hours, over cases
//!   closed in the period.
//!
//! Areas and workers come from the case's cell, the department from its current department.
//! A pure function of cases and transitions: this module must not touch storage.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use protocol::Timestamp;
use serde::Serialize;

use crate::cases::{Case, CaseId, CaseState, Transition};

/// One line of an assessment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AssessmentRow {
    /// `district`, `street`, `community`, `department` or `worker`.
    pub dimension: &'static str,
    /// The area code, department id or worker id.
    pub key: String,
    /// Cases registered in the period.
    pub registered: u32,
    /// Cases due in the period.
    pub due: u32,
    /// Due cases closed.
    pub closed: u32,
    /// Due cases closed by their deadline.
    pub closed_on_time: u32,
    /// Cases given feedback in the period.
    pub handled: u32,
    /// Cases sent back for rework in the period.
    pub reworked: u32,
    /// Cases returned by a department in the period.
    pub returned: u32,
    /// closed / due.
    pub closure_rate: Option<f64>,
    /// closed on time / due.
    pub on_time_rate: Option<f64>,
    /// reworked / handled.
    pub rework_rate: Option<f64>,
    /// Mean hours from first dispatch to close over cases closed in the period.
    pub avg_handling_hours: Option<f64>,
}

#[derive(Default)]
struct Tally {
    registered: HashSet<CaseId>,
    due: HashSet<CaseId>,
    closed: HashSet<CaseId>,
    on_time: HashSet<CaseId>,
    handled: HashSet<CaseId>,
    reworked: HashSet<CaseId>,
    returned: HashSet<CaseId>,
    handling_ms: Vec<i64>,
}

/// Computes the assessment of `[from, to)`, rows sorted by dimension and key.
pub fn assess(
    cases: &[Case],
    transitions: &[Transition],
    from: Timestamp,
    to: Timestamp,
) -> Vec<AssessmentRow> {
    let in_period = |t: Timestamp| t >= from && t < to;
    let mut by_case: HashMap<CaseId, Vec<&Transition>> = HashMap::new();
    for t in transitions {
        by_case.entry(t.case_id).or_default().push(t);
    }
    let mut tallies: BTreeMap<(u8, String), Tally> = BTreeMap::new();
    for case in cases {
        let ts = by_case.get(&case.id).map(Vec::as_slice).unwrap_or_default();
        let has = |name: &str| ts.iter().any(|t| t.action == name && in_period(t.at));
        let closed_at = ts.iter().find(|t| t.action == "close").map(|t| t.at);
        let first_dispatch = ts.iter().find(|t| t.action == "dispatch").map(|t| t.at);
        let due = case.state != CaseState::Rejected && case.deadline.is_some_and(in_period);
        let mut keys = Vec::new();
        if let Some(cell) = &case.cell {
            let c = cell.as_str();
            keys.push((0u8, c[..6].to_owned()));
            keys.push((1, c[..9].to_owned()));
            keys.push((2, c[..12].to_owned()));
        }
        if let Some(d) = &case.department {
            keys.push((3, d.to_string()));
        }
        if let Some(w) = &case.worker {
            keys.push((4, w.to_string()));
        }
        for key in keys {
            let t = tallies.entry(key).or_default();
            let id = case.id;
            if has("register") {
                t.registered.insert(id);
            }
            if due {
                t.due.insert(id);
                if let Some(at) = closed_at.filter(|at| *at < to) {
                    t.closed.insert(id);
                    if case.deadline.is_some_and(|d| at <= d) {
                        t.on_time.insert(id);
                    }
                }
            }
            if has("feedback") {
                t.handled.insert(id);
            }
            if has("verify_failed") {
                t.reworked.insert(id);
            }
            if has("return") {
                t.returned.insert(id);
            }
            if let (Some(c), Some(d)) = (closed_at.filter(|at| in_period(*at)), first_dispatch) {
                t.handling_ms.push(c.millis_since(d));
            }
        }
    }
    const DIMENSIONS: [&str; 5] = ["district", "street", "community", "department", "worker"];
    let ratio = |a: usize, b: usize| (b > 0).then(|| a as f64 / b as f64);
    tallies
        .into_iter()
        .map(|((dim, key), t)| AssessmentRow {
            dimension: DIMENSIONS[usize::from(dim)],
            key,
            registered: t.registered.len() as u32,
            due: t.due.len() as u32,
            closed: t.closed.len() as u32,
            closed_on_time: t.on_time.len() as u32,
            handled: t.handled.len() as u32,
            reworked: t.reworked.len() as u32,
            returned: t.returned.len() as u32,
            closure_rate: ratio(t.closed.len(), t.due.len()),
            on_time_rate: ratio(t.on_time.len(), t.due.len()),
            rework_rate: ratio(t.reworked.len(), t.handled.len()),
            avg_handling_hours: (!t.handling_ms.is_empty()).then(|| {
                t.handling_ms.iter().sum::<i64>() as f64 / t.handling_ms.len() as f64 / 3_600_000.0
            }),
        })
        .collect()
}

/// The rows as CSV with a header line; rates with 4 decimals, hours with 2, empty when
/// undefined (nothing due or handled).
pub fn to_csv(rows: &[AssessmentRow]) -> String {
    let mut out = String::from(
        "dimension,key,registered,due,closed,closed_on_time,handled,reworked,returned,closure_rate,on_time_rate,rework_rate,avg_handling_hours\n",
    );
    let f = |v: Option<f64>, digits: usize| v.map(|v| format!("{v:.digits$}")).unwrap_or_default();
    for r in rows {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{},{}",
            r.dimension,
            r.key,
            r.registered,
            r.due,
            r.closed,
            r.closed_on_time,
            r.handled,
            r.reworked,
            r.returned,
            f(r.closure_rate, 4),
            f(r.on_time_rate, 4),
            f(r.rework_rate, 4),
            f(r.avg_handling_hours, 2)
        );
    }
    out
}

//! Assessment figures against a hand-computed fixture.
//!
//! Period [0 h, 100 h). Case 1 (cell …00100101, dept-a, w1): registered and dispatched at 10 h,
//! feedback 20 h, failed verification 25 h, feedback 30 h, verified 31 h, closed 32 h, deadline
//! 40 h: due, closed on time, reworked, handling 22 h. Case 2 (…00100102, dept-a, w2):
//! registered and dispatched 15 h, returned 16 h, dispatched 17 h, feedback 50 h, verified
//! 55 h, closed 90 h, deadline 60 h: due, closed late, returned, handling 75 h. Case 3
//! (…00200101, dept-b, w3): registered 20 h, deadline 200 h: not due. Case 4: rejected, no
//! cell: counts nowhere. See `tests/fixtures/assessment_expected.csv` for the figures.

use hub::assess::{assess, to_csv};
use hub::cases::{Actor, Case, CaseId, CaseState, Transition};
use hub::duties::DepartmentId;
use hub::grid::WorkerId;
use protocol::{CategoryCode, GridCode, Timestamp};

const H: i64 = 3_600_000;

fn at(hours: i64) -> Timestamp {
    Timestamp::from_unix_millis(hours * H)
}

fn case(
    id: i64,
    cell: Option<&str>,
    dept: &str,
    worker: &str,
    state: CaseState,
    deadline: i64,
) -> Case {
    Case {
        id: CaseId(id),
        category: CategoryCode::parse("0102").unwrap(),
        state,
        lat: 31.0,
        lon: 120.0,
        cell: cell.map(|c| GridCode::parse(c).unwrap()),
        candidate_cells: vec![],
        worker: cell.map(|_| WorkerId::parse(worker).unwrap()),
        department: cell.map(|_| DepartmentId::parse(dept).unwrap()),
        level: 0,
        observed_at: at(0),
        last_observed_at: at(0),
        event_count: 1,
        deadline: Some(at(deadline)),
        escalate_at: None,
        warned: false,
        escalations: 0,
        reworks: 0,
        returns: 0,
        source: "test".into(),
        description: String::new(),
        flags: Vec::new(),
        dispatched_to: Vec::new(),
        feedback_by: None,
        created_at: at(0),
        updated_at: at(0),
    }
}

fn steps(id: i64, list: &[(i64, &str)]) -> Vec<Transition> {
    list.iter()
        .map(|&(h, action)| Transition {
            case_id: CaseId(id),
            at: at(h),
            actor: Actor::system(),
            action: action.into(),
            from: CaseState::Reported,
            to: CaseState::Reported,
            note: String::new(),
            evidence: vec![],
        })
        .collect()
}

#[test]
fn assessment_figures_equal_the_hand_computed_fixture() {
    let cases = [
        case(
            1,
            Some("32050800100101"),
            "dept-a",
            "w1",
            CaseState::Closed,
            40,
        ),
        case(
            2,
            Some("32050800100102"),
            "dept-a",
            "w2",
            CaseState::Closed,
            60,
        ),
        case(
            3,
            Some("32050800200101"),
            "dept-b",
            "w3",
            CaseState::Dispatched,
            200,
        ),
        case(4, None, "", "", CaseState::Rejected, 50),
    ];
    let mut transitions = steps(
        1,
        &[
            (10, "register"),
            (10, "dispatch"),
            (20, "feedback"),
            (25, "verify_failed"),
            (30, "feedback"),
            (31, "verify"),
            (32, "close"),
        ],
    );
    transitions.extend(steps(
        2,
        &[
            (15, "register"),
            (15, "dispatch"),
            (16, "return"),
            (17, "dispatch"),
            (50, "feedback"),
            (55, "verify"),
            (90, "close"),
        ],
    ));
    transitions.extend(steps(3, &[(20, "register"), (20, "dispatch")]));
    transitions.extend(steps(4, &[(5, "reject")]));
    let rows = assess(&cases, &transitions, at(0), at(100));
    let expected = include_str!("../fixtures/assessment_expected.csv");
    assert_eq!(to_csv(&rows), expected);
    let d = rows.iter().find(|r| r.dimension == "district").unwrap();
    assert_eq!(d.on_time_rate, Some(0.5));
    assert_eq!(d.avg_handling_hours, Some(48.5));
}

#[test]
fn a_period_before_anything_happened_has_no_figures_worth_a_rate() {
    let cases = [case(
        1,
        Some("32050800100101"),
        "dept-a",
        "w1",
        CaseState::Closed,
        40,
    )];
    let rows = assess(&cases, &steps(1, &[(10, "register")]), at(-100), at(0));
    assert!(
        rows.iter()
            .all(|r| r.registered == 0 && r.due == 0 && r.closure_rate.is_none())
    );
}

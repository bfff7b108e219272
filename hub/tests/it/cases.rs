//! Events becoming cases: grid match, routing, deadline, merging, escalation.

use hub::cases::{Action, Actor, CaseError, CaseState, IngestOutcome, Role, WorkflowError};
use hub::db::Db;
use protocol::{GridCode, Timestamp};

use crate::helpers::{FRIDAY_4PM, box_id, cell_centre, event, north_m, service, service_with};

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(ms)
}

/// Ingests `event` from the test box at `at`; it must open a case.
fn opened(
    svc: &hub::cases::CaseService,
    event: &protocol::Event,
    at: Timestamp,
) -> hub::cases::CaseId {
    match svc.ingest(&box_id(), event, at).unwrap() {
        IngestOutcome::Created(id) => id,
        other => panic!("expected a new case, got {other:?}"),
    }
}

#[test]
fn an_event_inside_a_cell_becomes_a_case_with_cell_worker_department_and_calendar_deadline() {
    let svc = service();
    let cell = svc
        .grid()
        .cell(&GridCode::parse("32050800100101").unwrap())
        .unwrap()
        .clone();
    let (lat, lon) = cell_centre(&cell);
    // observed Friday 16:00, arriving (after an outage) on Tuesday: the deadline still counts
    // from Friday: 1.5 h Friday, weekend, Monday holiday, 2.5 h Tuesday → Tuesday 11:00 +08:00
    let arrival = FRIDAY_4PM + 4 * 86_400_000;
    let id = opened(&svc, &event(1, "0102", lat, lon, FRIDAY_4PM), ts(arrival));
    let (case, transitions) = svc.case(id).unwrap().unwrap();
    assert_eq!(case.cell.as_ref(), Some(&cell.code));
    assert_eq!(case.worker.as_ref().map(|w| w.as_str()), Some("w-zhang"));
    assert_eq!(
        case.department.as_ref().map(|d| d.as_str()),
        Some("sanitation-pj")
    );
    assert_eq!(
        case.deadline.unwrap().to_string(),
        "2026-09-29T03:00:00.000Z"
    );
    assert!(case.candidate_cells.is_empty());
    // auto-registered and dispatched, each step recorded
    assert_eq!(case.state, CaseState::Dispatched);
    let actions: Vec<&str> = transitions.iter().map(|t| t.action.as_str()).collect();
    assert_eq!(actions, ["report", "register", "dispatch"]);
    assert!(
        transitions
            .iter()
            .all(|t| t.actor.role == Role::System && t.at == ts(arrival))
    );
}

#[test]
fn a_review_category_waits_in_reported_for_a_dispatcher() {
    let svc = service();
    let id = opened(
        &svc,
        &event(1, "0404", 31.281, 120.581, FRIDAY_4PM),
        ts(FRIDAY_4PM),
    );
    let (case, _) = svc.case(id).unwrap().unwrap();
    assert_eq!(case.state, CaseState::Reported);
    assert_eq!(
        case.department.as_ref().map(|d| d.as_str()),
        Some("traffic-pj")
    );
}

#[test]
fn an_event_near_a_cell_edge_records_the_candidate_cells() {
    let svc = service();
    // the sample's cells 01 and 03 of community 320508001001 meet at latitude 31.282
    let id = opened(
        &svc,
        &event(1, "0102", 31.282 - north_m(4.0), 120.581, FRIDAY_4PM),
        ts(FRIDAY_4PM),
    );
    let (case, _) = svc.case(id).unwrap().unwrap();
    assert_eq!(case.cell.unwrap().as_str(), "32050800100101");
    let candidates: Vec<&str> = case.candidate_cells.iter().map(|c| c.as_str()).collect();
    assert_eq!(candidates, ["32050800100103"]);
}

#[test]
fn events_20_m_and_2_minutes_apart_make_one_case_and_2_km_apart_make_two() {
    let svc = service();
    let (lat, lon) = (31.281, 120.581);
    let first = opened(
        &svc,
        &event(1, "0102", lat, lon, FRIDAY_4PM),
        ts(FRIDAY_4PM),
    );
    let second = svc
        .ingest(
            &box_id(),
            &event(2, "0102", lat + north_m(20.0), lon, FRIDAY_4PM + 120_000),
            ts(FRIDAY_4PM + 120_000),
        )
        .unwrap();
    assert_eq!(second, IngestOutcome::Merged(first));
    let far = svc
        .ingest(
            &box_id(),
            &event(3, "0102", lat + north_m(2000.0), lon, FRIDAY_4PM + 120_000),
            ts(FRIDAY_4PM + 120_000),
        )
        .unwrap();
    assert!(matches!(far, IngestOutcome::Created(id) if id != first));
    // another category at the same spot is its own case
    assert!(matches!(
        svc.ingest(
            &box_id(),
            &event(4, "0404", lat, lon, FRIDAY_4PM),
            ts(FRIDAY_4PM)
        )
        .unwrap(),
        IngestOutcome::Created(_)
    ));
    assert_eq!(svc.case(first).unwrap().unwrap().0.event_count, 2);
    assert_eq!(svc.cases().unwrap().len(), 3);
    assert_eq!(
        svc.stats()
            .merged_total
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn a_redelivered_event_is_ignored_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hub.db");
    let e = event(7, "0102", 31.281, 120.581, FRIDAY_4PM);
    {
        let svc = service_with(Db::open(&path).unwrap());
        opened(&svc, &e, ts(FRIDAY_4PM));
        assert_eq!(
            svc.ingest(&box_id(), &e, ts(FRIDAY_4PM)).unwrap(),
            IngestOutcome::Duplicate
        );
    }
    let svc = service_with(Db::open(&path).unwrap());
    assert_eq!(
        svc.ingest(&box_id(), &e, ts(FRIDAY_4PM)).unwrap(),
        IngestOutcome::Duplicate
    );
    assert_eq!(svc.cases().unwrap().len(), 1);
}

#[test]
fn an_overdue_case_is_warned_first_then_escalated_to_the_street_department() {
    let svc = service();
    let id = opened(
        &svc,
        &event(1, "0102", 31.281, 120.581, FRIDAY_4PM),
        ts(FRIDAY_4PM),
    );
    let deadline = svc
        .case(id)
        .unwrap()
        .unwrap()
        .0
        .deadline
        .unwrap()
        .as_unix_millis();
    assert!(
        svc.check_deadlines(ts(deadline - 2 * 3_600_000))
            .unwrap()
            .is_empty()
    );
    assert!(
        !svc.case(id).unwrap().unwrap().0.warned,
        "too early for a warning"
    );
    assert!(
        svc.check_deadlines(ts(deadline - 30 * 60_000))
            .unwrap()
            .is_empty()
    );
    assert!(svc.case(id).unwrap().unwrap().0.warned);
    assert_eq!(svc.check_deadlines(ts(deadline + 1)).unwrap(), [id]);
    let (case, transitions) = svc.case(id).unwrap().unwrap();
    assert_eq!(case.escalations, 1);
    assert_eq!(case.department.unwrap().as_str(), "sanitation-gusu");
    let actions: Vec<&str> = transitions.iter().map(|t| t.action.as_str()).collect();
    assert_eq!(&actions[3..], ["warn", "escalate"]);
    // not again until another time limit has passed
    assert!(svc.check_deadlines(ts(deadline + 2)).unwrap().is_empty());
}

#[test]
fn actions_are_recorded_with_actor_note_and_evidence_and_wrong_ones_refused() {
    let svc = service();
    let id = opened(
        &svc,
        &event(1, "0102", 31.281, 120.581, FRIDAY_4PM),
        ts(FRIDAY_4PM),
    );
    let dept = Actor {
        role: Role::Department,
        subject: "sanitation-pj".into(),
    };
    svc.act(
        id,
        &Action::Accept,
        &dept,
        "on our way",
        &[],
        ts(FRIDAY_4PM + 1),
    )
    .unwrap();
    let err = svc
        .act(id, &Action::Close, &dept, "", &[], ts(FRIDAY_4PM + 2))
        .unwrap_err();
    assert!(matches!(
        err,
        CaseError::Workflow(WorkflowError::Forbidden { .. })
    ));
    let photo = vec!["sha256:ab12".to_owned()];
    svc.act(
        id,
        &Action::Feedback,
        &dept,
        "cleared",
        &photo,
        ts(FRIDAY_4PM + 3),
    )
    .unwrap();
    let (_, transitions) = svc.case(id).unwrap().unwrap();
    let last = transitions.last().unwrap();
    assert_eq!(
        (last.action.as_str(), last.note.as_str()),
        ("feedback", "cleared")
    );
    assert_eq!(last.evidence, photo);
    assert_eq!(last.actor, dept);
    assert_eq!(
        (last.from, last.to),
        (CaseState::Handling, CaseState::Handled)
    );
}

#[test]
fn a_camera_recheck_answer_is_attached_to_its_case_not_merged_or_opened() {
    let svc = service();
    let (lat, lon) = (31.281, 120.581);
    let id = opened(
        &svc,
        &event(1, "0102", lat, lon, FRIDAY_4PM),
        ts(FRIDAY_4PM),
    );
    // The box's answer: same category and place, naming the request; without the reference
    // it would merge into the case.
    let answer = recheck_answer(&svc, 2, id, 0, FRIDAY_4PM + 60_000, FRIDAY_4PM + 60_000);
    let outcome = svc
        .ingest(&box_id(), &answer, ts(FRIDAY_4PM + 61_000))
        .unwrap();
    assert_eq!(outcome, IngestOutcome::Attached(id));
    let (case, transitions) = svc.case(id).unwrap().unwrap();
    assert_eq!(
        case.event_count, 1,
        "not counted as a repeat of the problem"
    );
    let last = transitions.last().unwrap();
    assert_eq!(last.action, "recheck_evidence");
    assert_eq!(last.from, last.to);
    assert!(last.note.contains("0 matching"), "{}", last.note);
    assert_eq!(svc.cases().unwrap().len(), 1);

    // A reference to no request the hub issued: refused, no case opened.
    let mut stray = event(3, "0102", lat + 0.05, lon, FRIDAY_4PM + 120_000);
    stray.attributes.insert(
        protocol::Event::RECHECK_REFERENCE.into(),
        protocol::AttrValue::Text("case 999".into()),
    );
    let other = svc.ingest(&box_id(), &stray, ts(FRIDAY_4PM + 121_000));
    assert!(
        matches!(other, Err(CaseError::RecheckRefused { .. })),
        "{other:?}"
    );
    assert_eq!(svc.cases().unwrap().len(), 1);
}

/// Moves a case along the loop by hand up to `handled` (the department's feedback given).
fn to_handled(svc: &hub::cases::CaseService, id: hub::cases::CaseId, at: i64) {
    let admin = Actor {
        role: Role::Admin,
        subject: "root".into(),
    };
    loop {
        let (case, _) = svc.case(id).unwrap().unwrap();
        let action = match case.state {
            CaseState::Reported => Action::Register,
            CaseState::Registered => Action::Dispatch { department: None },
            CaseState::Dispatched => Action::Accept,
            CaseState::Handling => Action::Feedback,
            CaseState::Handled => return,
            other => panic!("{other:?}"),
        };
        svc.act(id, &action, &admin, "", &[], ts(at)).unwrap();
    }
}

/// The box's answer to a re-check of `case` the hub asks (of the test box) at `asked` (hub
/// clock), observed at `at` (box clock).
fn recheck_answer(
    svc: &hub::cases::CaseService,
    seq: u64,
    case: hub::cases::CaseId,
    matching: i64,
    asked: i64,
    at: i64,
) -> protocol::Event {
    let mut answer = event(seq, "0102", 31.281, 120.581, at);
    let reference = svc.ask_recheck(case, &box_id(), ts(asked)).unwrap();
    answer.attributes.insert(
        protocol::Event::RECHECK_REFERENCE.into(),
        protocol::AttrValue::Text(reference),
    );
    answer
        .attributes
        .insert("matching".into(), protocol::AttrValue::Int(matching));
    answer
}

#[test]
fn a_recheck_answer_verifies_a_handled_case_or_sends_it_back_for_rework() {
    let svc = service();
    let id = opened(
        &svc,
        &event(1, "0102", 31.281, 120.581, FRIDAY_4PM),
        ts(FRIDAY_4PM),
    );
    to_handled(&svc, id, FRIDAY_4PM + 60_000);

    // the camera still sees the problem: verification fails, back to the department
    let t = FRIDAY_4PM + 120_000;
    let outcome = svc
        .ingest(&box_id(), &recheck_answer(&svc, 2, id, 2, t, t), ts(t))
        .unwrap();
    assert_eq!(outcome, IngestOutcome::Attached(id));
    let (case, transitions) = svc.case(id).unwrap().unwrap();
    assert_eq!((case.state, case.reworks), (CaseState::Dispatched, 1));
    let tail: Vec<(&str, CaseState, CaseState, Role)> = transitions[transitions.len() - 2..]
        .iter()
        .map(|t| (t.action.as_str(), t.from, t.to, t.actor.role))
        .collect();
    assert_eq!(
        tail,
        [
            (
                "recheck_evidence",
                CaseState::Handled,
                CaseState::Handled,
                Role::System
            ),
            (
                "verify_failed",
                CaseState::Handled,
                CaseState::Dispatched,
                Role::System
            ),
        ]
    );
    assert!(
        transitions.last().unwrap().note.contains("2 matching"),
        "{:?}",
        transitions.last()
    );

    // an answer while the department works on it again only adds the picture
    let t = FRIDAY_4PM + 180_000;
    svc.ingest(&box_id(), &recheck_answer(&svc, 3, id, 0, t, t), ts(t))
        .unwrap();
    assert_eq!(
        svc.case(id).unwrap().unwrap().0.state,
        CaseState::Dispatched
    );

    // handled again; an answer to a re-check asked before this feedback (the look may show the
    // place before the work, its event arriving late) only adds its picture, whatever the box's
    // clock says of it
    to_handled(&svc, id, FRIDAY_4PM + 240_000);
    let t = FRIDAY_4PM + 270_000;
    svc.ingest(
        &box_id(),
        &recheck_answer(&svc, 4, id, 0, FRIDAY_4PM + 239_000, t + 600_000),
        ts(t),
    )
    .unwrap();
    let (case, transitions) = svc.case(id).unwrap().unwrap();
    assert_eq!(case.state, CaseState::Handled);
    let last = transitions.last().unwrap();
    assert_eq!(last.action, "recheck_evidence");
    assert!(last.note.contains("not a verification"), "{}", last.note);

    // asked at the feedback's own instant (the hub asks as it records the feedback) and the
    // camera sees nothing: verified by the system
    let t = FRIDAY_4PM + 300_000;
    svc.ingest(
        &box_id(),
        &recheck_answer(&svc, 6, id, 0, FRIDAY_4PM + 240_000, t),
        ts(t),
    )
    .unwrap();
    let (case, transitions) = svc.case(id).unwrap().unwrap();
    assert_eq!((case.state, case.reworks), (CaseState::Verified, 1));
    let last = transitions.last().unwrap();
    assert_eq!(
        (last.action.as_str(), last.actor.role),
        ("verify", Role::System)
    );
    assert_eq!(
        svc.stats()
            .recheck_verdicts_total
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    assert_eq!(svc.cases().unwrap().len(), 1, "no answer opened a case");
}

#[test]
fn a_batch_gives_the_same_outcomes_and_cases_as_one_at_a_time() {
    let (lat, lon) = (31.281, 120.581);
    let batch = vec![
        (box_id(), event(1, "0102", lat, lon, FRIDAY_4PM)),
        // 20 m and a minute later: merges into the case the batch just opened
        (
            box_id(),
            event(2, "0102", lat + north_m(20.0), lon, FRIDAY_4PM + 60_000),
        ),
        // the same event again: a duplicate
        (
            box_id(),
            event(2, "0102", lat + north_m(20.0), lon, FRIDAY_4PM + 60_000),
        ),
        // 2 km away: its own case
        (
            box_id(),
            event(3, "0102", lat + north_m(2000.0), lon, FRIDAY_4PM + 60_000),
        ),
    ];
    let batched = service();
    let outcomes = batched.ingest_many(&batch, ts(FRIDAY_4PM)).unwrap();
    let single = service();
    let one_by_one: Vec<IngestOutcome> = batch
        .iter()
        .map(|(b, e)| single.ingest(b, e, ts(FRIDAY_4PM)).unwrap())
        .collect();
    assert_eq!(outcomes, one_by_one);
    assert!(
        matches!(outcomes[1], IngestOutcome::Merged(id) if IngestOutcome::Created(id) == outcomes[0])
    );
    assert_eq!(outcomes[2], IngestOutcome::Duplicate);
    assert!(matches!(outcomes[3], IngestOutcome::Created(_)));
    assert_eq!(batched.cases().unwrap(), single.cases().unwrap());
    // delivered again beside a new event (a box that reconnected mid-batch): the stored one
    // is a duplicate, the new one placed
    let again = vec![
        batch[0].clone(),
        (
            box_id(),
            event(4, "0102", lat + north_m(4000.0), lon, FRIDAY_4PM + 60_000),
        ),
    ];
    let outcomes = batched.ingest_many(&again, ts(FRIDAY_4PM)).unwrap();
    assert_eq!(outcomes[0], IngestOutcome::Duplicate);
    assert!(
        matches!(outcomes[1], IngestOutcome::Created(_)),
        "{outcomes:?}"
    );

    // an event with an impossible location spoils the batch: it is refused whole (checked
    // before the transaction opens), so nothing of it is committed
    let mut bad = batch[3].clone();
    bad.1.seq = protocol::Seq(9);
    bad.1.location.lat = 95.0;
    let fresh = service();
    let refused = fresh.ingest_many(&[batch[0].clone(), bad], ts(FRIDAY_4PM));
    assert!(
        matches!(refused, Err(CaseError::BadLocation)),
        "{refused:?}"
    );
    assert!(fresh.cases().unwrap().is_empty());
}

/// A NaN or infinite attribute (a sensor's rate of change after a reading of 1.7e308) cannot be
/// stored faithfully: the event is refused, and the case it would have joined stays readable.
#[test]
fn an_event_with_a_non_finite_number_is_refused_and_its_neighbour_case_stays_readable() {
    let svc = service();
    let first = event(1, "0102", 31.281, 120.581, FRIDAY_4PM);
    let id = opened(&svc, &first, ts(FRIDAY_4PM));
    for (seq, value) in [(2, f64::NAN), (3, f64::INFINITY), (4, f64::NEG_INFINITY)] {
        let mut bad = event(seq, "0102", 31.281, 120.581, FRIDAY_4PM + 1000);
        bad.attributes
            .insert("rate_per_min".into(), protocol::AttrValue::Float(value));
        let refused = svc.ingest(&box_id(), &bad, ts(FRIDAY_4PM + 2000));
        assert!(
            matches!(refused, Err(CaseError::NonFinite { ref key }) if key == "rate_per_min"),
            "{refused:?}"
        );
    }
    assert_eq!(
        svc.stats()
            .refused_total
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    let (case, _) = svc.case(id).unwrap().unwrap();
    assert_eq!(case.event_count, 1);
    assert_eq!(svc.case_events(id).unwrap().len(), 1);
}

/// An event stored before values were checked, holding a number JSON cannot carry (stored as
/// `null`), must not make its case unreadable.
#[test]
fn a_stored_event_with_an_unreadable_value_does_not_make_its_case_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hub.db");
    let e = event(1, "0102", 31.281, 120.581, FRIDAY_4PM);
    let id = {
        let svc = service_with(Db::open(&path).unwrap());
        opened(&svc, &e, ts(FRIDAY_4PM))
    };
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let mut body: serde_json::Value = conn
            .query_row("SELECT body FROM events", [], |r| r.get::<_, String>(0))
            .map(|b| serde_json::from_str(&b).unwrap())
            .unwrap();
        body["attributes"]["rate_per_min"] = serde_json::Value::Null;
        conn.execute("UPDATE events SET body = ?1", [body.to_string()])
            .unwrap();
    }
    let svc = service_with(Db::open(&path).unwrap());
    let events = svc.case_events(id).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].1.id, e.id);
    assert!(!events[0].1.attributes.contains_key("rate_per_min"));
}

/// A box clock years off (or a device time that overflows): the time is replaced by the hub's
/// arrival time and flagged, so deadlines and the merge window never use it; nothing overflows.
#[test]
fn a_time_far_outside_the_window_is_replaced_by_the_arrival_time_and_flagged() {
    let svc = service();
    let arrival = FRIDAY_4PM;
    let cases = [
        ("two days ahead", FRIDAY_4PM + 2 * 86_400_000),
        ("before 1970", -5_000_000_000_000),
        ("the smallest time", i64::MIN),
        ("the largest time", i64::MAX),
    ];
    for (i, (what, observed)) in cases.into_iter().enumerate() {
        // each far from the others, so that each opens its own case
        let e = event(
            10 + i as u64,
            "0102",
            31.281 + north_m(500.0 * i as f64),
            120.581,
            observed,
        );
        let id = opened(&svc, &e, ts(arrival));
        let (case, _) = svc.case(id).unwrap().unwrap();
        assert_eq!(case.last_observed_at, ts(arrival), "{what}");
        let stored = &svc.case_events(id).unwrap()[0].1;
        assert_eq!(stored.observed_at, ts(arrival), "{what}");
        assert_eq!(
            stored.attributes.get("box_observed_at_ms"),
            Some(&protocol::AttrValue::Int(observed)),
            "{what}: the box's own time is kept as a flag"
        );
    }
    assert_eq!(
        svc.stats()
            .clamped_times_total
            .load(std::sync::atomic::Ordering::Relaxed),
        4
    );
    // An event from a box that was offline for days keeps its time (store and forward).
    let late = event(20, "0102", 31.283, 120.589, FRIDAY_4PM - 4 * 86_400_000);
    let id = opened(&svc, &late, ts(arrival));
    assert_eq!(
        svc.case_events(id).unwrap()[0].1.observed_at,
        late.observed_at
    );
}

/// Two hub processes on one database (or two requests at once) filing citizen reports: each
/// report gets a number of its own and is stored. (The number was read in one transaction and
/// used in another: two reports took the same one and the second was dropped as a duplicate.)
#[test]
fn citizen_reports_filed_at_once_from_two_services_each_get_their_own_number() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hub.db");
    drop(Db::open(&path).unwrap());
    let per_service = 60;
    let numbers: Vec<u64> = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..2)
            .map(|s| {
                let path = path.clone();
                scope.spawn(move || {
                    let svc = service_with(Db::open(&path).unwrap());
                    (0..per_service)
                        .map(|i| {
                            // a case each: 300 m apart
                            let report = hub::cases::CitizenReport {
                                category: "0102".into(),
                                lat: 31.2805 + north_m(3.0 * f64::from(i)),
                                lon: 120.5805 + 0.004 * f64::from(s),
                                description: format!("report {s}/{i}"),
                                contact: Default::default(),
                                moderated: false,
                            };
                            let receipt = svc.report(report, ts(FRIDAY_4PM)).unwrap();
                            assert!(
                                !matches!(receipt.outcome, IngestOutcome::Duplicate),
                                "report {s}/{i} was taken for a duplicate"
                            );
                            receipt.number
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        runs.into_iter().flat_map(|r| r.join().unwrap()).collect()
    });
    let distinct: std::collections::BTreeSet<u64> = numbers.iter().copied().collect();
    assert_eq!(distinct.len(), 2 * per_service as usize);
    let svc = service_with(Db::open(&path).unwrap());
    assert_eq!(
        svc.citizen_reports().unwrap().len(),
        2 * per_service as usize
    );
}

/// Any enrolled box could verify or send back any case by naming it in a re-check answer. An
/// answer now counts only for a request the hub issued (a random id it stored), from the box it
/// asked, once; everything else is refused and counted, and the case does not move.
#[test]
fn a_recheck_answer_counts_only_from_the_box_asked_for_a_request_the_hub_issued() {
    let svc = service();
    let id = opened(
        &svc,
        &event(1, "0102", 31.281, 120.581, FRIDAY_4PM),
        ts(FRIDAY_4PM),
    );
    to_handled(&svc, id, FRIDAY_4PM + 60_000);
    let other_box = protocol::BoxId::parse("box-02").unwrap();
    let t = FRIDAY_4PM + 120_000;
    let answer = |seq: u64, reference: &str| {
        let mut a = event(seq, "0102", 31.281, 120.581, t);
        a.attributes.insert(
            protocol::Event::RECHECK_REFERENCE.into(),
            protocol::AttrValue::Text(reference.to_owned()),
        );
        a.attributes
            .insert("matching".into(), protocol::AttrValue::Int(0));
        a
    };
    let refused = |r: Result<IngestOutcome, CaseError>| {
        assert!(matches!(r, Err(CaseError::RecheckRefused { .. })), "{r:?}");
    };
    // another box naming the case the way the hub used to
    refused(svc.ingest(
        &other_box,
        &answer(10, &format!("case {} asked {t}", id.0)),
        ts(t),
    ));
    // the box that raised it, naming a request nobody issued
    refused(svc.ingest(
        &box_id(),
        &answer(11, &format!("case {} asked {t}", id.0)),
        ts(t),
    ));
    refused(svc.ingest(
        &box_id(),
        &answer(12, "rc-00000000000000000000000000000000"),
        ts(t),
    ));
    // a request issued to the box that raised the case, answered by another box
    let request = svc.ask_recheck(id, &box_id(), ts(t)).unwrap();
    refused(svc.ingest(&other_box, &answer(13, &request), ts(t)));
    assert_eq!(svc.case(id).unwrap().unwrap().0.state, CaseState::Handled);
    assert_eq!(
        svc.stats()
            .recheck_refused_total
            .load(std::sync::atomic::Ordering::Relaxed),
        4
    );
    // the box asked, with the request's id: verified
    let outcome = svc.ingest(&box_id(), &answer(14, &request), ts(t + 1000));
    assert_eq!(outcome.unwrap(), IngestOutcome::Attached(id));
    assert_eq!(svc.case(id).unwrap().unwrap().0.state, CaseState::Verified);
    // once: a second answer to the same request is refused
    refused(svc.ingest(&box_id(), &answer(15, &request), ts(t + 2000)));
}

/// A box registered in one cell whose events lie kilometres away (moved, or its positions are
/// wrong): the cases are flagged for the operators; events near its area are not.
#[test]
fn an_event_far_outside_its_box_area_flags_its_case() {
    let cell = GridCode::parse("32050800100101").unwrap();
    let svc = service().with_box_areas(std::sync::Arc::new(move |b: &protocol::BoxId| {
        (b == &box_id()).then(|| cell.clone())
    }));
    let (lat, lon) = (31.281, 120.581);
    let near = opened(
        &svc,
        &event(1, "0102", lat + north_m(500.0), lon, FRIDAY_4PM),
        ts(FRIDAY_4PM),
    );
    let far = opened(
        &svc,
        &event(2, "0102", lat + north_m(3000.0), lon, FRIDAY_4PM),
        ts(FRIDAY_4PM),
    );
    assert!(svc.case(near).unwrap().unwrap().0.flags.is_empty());
    let (case, _) = svc.case(far).unwrap().unwrap();
    assert_eq!(case.flags, [hub::cases::OUTSIDE_AREA_FLAG]);
    let stored = &svc.case_events(far).unwrap()[0].1;
    let Some(protocol::AttrValue::Int(m)) =
        stored.attributes.get(hub::cases::OUTSIDE_AREA_ATTRIBUTE)
    else {
        panic!("{stored:?}");
    };
    assert!((2700..3000).contains(m), "{m} m outside");
    // another box registered nowhere: no flag
    let other = protocol::BoxId::parse("box-02").unwrap();
    let mut e = event(3, "0102", lat + north_m(6000.0), lon, FRIDAY_4PM);
    e.id = protocol::EventId::v7(1, [9; 10]);
    match svc.ingest(&other, &e, ts(FRIDAY_4PM)).unwrap() {
        IngestOutcome::Created(id) => assert!(svc.case(id).unwrap().unwrap().0.flags.is_empty()),
        o => panic!("{o:?}"),
    }
}

//! The case state machine as a pure function: `(case, action, actor, now) → (case', transition)`.
//!
//! It decides only from its inputs; it never reads a clock, the grid, the duty list or storage.
//! The service supplies what it needs (the escalation department, the next escalation time).

use protocol::Timestamp;
use serde::{Deserialize, Serialize};

use super::{Actor, Case, CaseState, Role, Transition};
use crate::duties::DepartmentId;

/// Something done to a case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Reported → registered.
    Register,
    /// Reported → rejected (invalid report).
    Reject,
    /// Registered → dispatched, to the given department (or the one already set).
    Dispatch {
        /// The department; required when the case has none.
        #[serde(default)]
        department: Option<DepartmentId>,
    },
    /// Dispatched → handling.
    Accept,
    /// Handling → handled: the department's feedback.
    Feedback,
    /// Handled → verified (passed) or back to dispatched for rework (failed).
    Verify {
        /// Whether the problem is gone.
        passed: bool,
    },
    /// Verified → closed.
    Close,
    /// Dispatched or handling → registered: wrongly routed, dispatch again.
    Return,
    /// The deadline is near (state unchanged).
    Warn,
    /// The escalation time passed: hand to the next level's department (state unchanged).
    Escalate {
        /// The next level's department.
        department: DepartmentId,
        /// When to escalate again if still open.
        next_escalation_at: Option<Timestamp>,
    },
}

impl Action {
    /// The action's name in the audit trail.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Register => "register",
            Action::Reject => "reject",
            Action::Dispatch { .. } => "dispatch",
            Action::Accept => "accept",
            Action::Feedback => "feedback",
            Action::Verify { passed: true } => "verify",
            Action::Verify { passed: false } => "verify_failed",
            Action::Close => "close",
            Action::Return => "return",
            Action::Warn => "warn",
            Action::Escalate { .. } => "escalate",
        }
    }

    fn allowed_roles(&self) -> &'static [Role] {
        use Role::*;
        match self {
            Action::Register | Action::Reject | Action::Close => &[Admin, Dispatcher, System],
            Action::Dispatch { .. } => &[Admin, Dispatcher, System],
            Action::Accept | Action::Feedback => &[Admin, Department, Worker],
            Action::Return => &[Admin, Department],
            Action::Verify { .. } => &[Admin, Dispatcher, Worker, System],
            Action::Warn | Action::Escalate { .. } => &[System],
        }
    }
}

/// An action that does not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WorkflowError {
    /// The action is not possible in the case's state.
    #[error("cannot {action} a case that is {state}")]
    WrongState {
        /// The action.
        action: &'static str,
        /// The case's state.
        state: &'static str,
    },
    /// The actor's role may not take this action.
    #[error("a {role:?} may not {action}")]
    Forbidden {
        /// The role.
        role: Role,
        /// The action.
        action: &'static str,
    },
    /// Dispatch without a department to dispatch to.
    #[error("no department to dispatch to")]
    NoDepartment,
    /// A department acting on a case that is now another department's.
    #[error("the case is now {department}'s: only they may {action} it")]
    NotTheirs {
        /// The action.
        action: &'static str,
        /// The case's department.
        department: String,
    },
    /// Verifying one's own feedback.
    #[error("whoever handed in the feedback may not verify it")]
    OwnWork,
}

/// Applies `action` to `case`.
///
/// # Errors
/// [`WorkflowError`] when the state or the actor's role does not allow it.
pub fn apply(
    case: &Case,
    action: &Action,
    actor: &Actor,
    note: &str,
    evidence: &[String],
    now: Timestamp,
) -> Result<(Case, Transition), WorkflowError> {
    if !action.allowed_roles().contains(&actor.role) {
        return Err(WorkflowError::Forbidden {
            role: actor.role,
            action: action.name(),
        });
    }
    if actor.role == Role::Department
        && matches!(action, Action::Accept | Action::Feedback | Action::Return)
        && case.department.as_ref().map(DepartmentId::as_str) != Some(actor.subject.as_str())
    {
        return Err(WorkflowError::NotTheirs {
            action: action.name(),
            department: case
                .department
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
        });
    }
    if matches!(action, Action::Verify { .. })
        && actor.role != Role::System
        && case.feedback_by.as_ref() == Some(actor)
    {
        return Err(WorkflowError::OwnWork);
    }
    use CaseState::*;
    let mut next = case.clone();
    let wrong = || WorkflowError::WrongState {
        action: action.name(),
        state: case.state.as_str(),
    };
    match (action, case.state) {
        (Action::Register, Reported) => next.state = Registered,
        (Action::Reject, Reported) => next.state = Rejected,
        (Action::Dispatch { department }, Registered) => {
            if let Some(d) = department {
                next.department = Some(d.clone());
            }
            let Some(d) = next.department.clone() else {
                return Err(WorkflowError::NoDepartment);
            };
            if !next.dispatched_to.contains(&d) {
                next.dispatched_to.push(d);
            }
            next.state = Dispatched;
        }
        (Action::Accept, Dispatched) => next.state = Handling,
        (Action::Feedback, Handling) => {
            next.state = Handled;
            next.feedback_by = Some(actor.clone());
        }
        (Action::Verify { passed: true }, Handled) => next.state = Verified,
        (Action::Verify { passed: false }, Handled) => {
            next.state = Dispatched;
            next.reworks += 1;
        }
        (Action::Close, Verified) => next.state = Closed,
        (Action::Return, Dispatched | Handling) => {
            next.state = Registered;
            next.returns += 1;
        }
        (Action::Warn, s) if !s.is_final() && !case.warned => next.warned = true,
        (
            Action::Escalate {
                department,
                next_escalation_at,
            },
            s,
        ) if !s.is_final() => {
            next.escalations += 1;
            next.level = (case.level + 1).min(2);
            next.department = Some(department.clone());
            if !next.dispatched_to.contains(department) {
                next.dispatched_to.push(department.clone());
            }
            next.escalate_at = *next_escalation_at;
        }
        _ => return Err(wrong()),
    }
    next.updated_at = now;
    let transition = Transition {
        case_id: case.id,
        at: now,
        actor: actor.clone(),
        action: action.name().into(),
        from: case.state,
        to: next.state,
        note: note.to_owned(),
        evidence: evidence.to_vec(),
    };
    Ok((next, transition))
}

#[cfg(test)]
mod tests {
    use protocol::CategoryCode;

    use super::*;
    use crate::cases::CaseId;

    fn case() -> Case {
        Case {
            id: CaseId(1),
            category: CategoryCode::parse("0102").unwrap(),
            state: CaseState::Reported,
            lat: 31.0,
            lon: 120.0,
            cell: None,
            candidate_cells: vec![],
            worker: None,
            department: Some(DepartmentId::parse("san").unwrap()),
            level: 0,
            observed_at: Timestamp::from_unix_millis(0),
            last_observed_at: Timestamp::from_unix_millis(0),
            event_count: 1,
            deadline: None,
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
            created_at: Timestamp::from_unix_millis(0),
            updated_at: Timestamp::from_unix_millis(0),
        }
    }

    /// Runs `a` as someone of `role`: a department as the case's department `san`.
    fn run(c: &Case, a: Action, role: Role) -> Result<Case, WorkflowError> {
        let subject = if role == Role::Department { "san" } else { "x" };
        run_as(c, a, role, subject)
    }

    fn run_as(c: &Case, a: Action, role: Role, subject: &str) -> Result<Case, WorkflowError> {
        let actor = Actor {
            role,
            subject: subject.into(),
        };
        apply(c, &a, &actor, "", &[], Timestamp::from_unix_millis(1)).map(|(c, _)| c)
    }

    #[test]
    fn the_full_loop_with_one_rework_ends_closed() {
        let mut c = case();
        for (a, role) in [
            (Action::Register, Role::Dispatcher),
            (Action::Dispatch { department: None }, Role::Dispatcher),
            (Action::Accept, Role::Department),
            (Action::Feedback, Role::Department),
            (Action::Verify { passed: false }, Role::Worker),
            (Action::Accept, Role::Department),
            (Action::Feedback, Role::Department),
            (Action::Verify { passed: true }, Role::Worker),
            (Action::Close, Role::Dispatcher),
        ] {
            c = run(&c, a, role).unwrap();
        }
        assert_eq!(c.state, CaseState::Closed);
        assert_eq!(c.reworks, 1);
    }

    #[test]
    fn a_returned_case_goes_back_to_registered_for_redispatch() {
        let mut c = case();
        c.state = CaseState::Dispatched;
        let c = run(&c, Action::Return, Role::Department).unwrap();
        assert_eq!((c.state, c.returns), (CaseState::Registered, 1));
    }

    #[test]
    fn wrong_states_and_roles_are_refused() {
        let c = case();
        assert!(matches!(
            run(&c, Action::Close, Role::Dispatcher),
            Err(WorkflowError::WrongState { .. })
        ));
        assert!(matches!(
            run(&c, Action::Register, Role::Worker),
            Err(WorkflowError::Forbidden { .. })
        ));
        assert!(matches!(
            run(&c, Action::Warn, Role::Admin),
            Err(WorkflowError::Forbidden { .. })
        ));
        let mut closed = c.clone();
        closed.state = CaseState::Closed;
        let esc = Action::Escalate {
            department: DepartmentId::parse("up").unwrap(),
            next_escalation_at: None,
        };
        assert!(
            run(&closed, esc, Role::System).is_err(),
            "closed cases do not escalate"
        );
    }

    #[test]
    fn dispatch_without_any_department_is_refused() {
        let mut c = case();
        c.state = CaseState::Registered;
        c.department = None;
        assert_eq!(
            run(&c, Action::Dispatch { department: None }, Role::Dispatcher),
            Err(WorkflowError::NoDepartment)
        );
    }

    #[test]
    fn whoever_hands_in_the_feedback_does_not_verify_it() {
        let mut c = case();
        c.state = CaseState::Handling;
        let done = run_as(&c, Action::Feedback, Role::Worker, "w-zhang").unwrap();
        assert_eq!(
            run_as(
                &done,
                Action::Verify { passed: true },
                Role::Worker,
                "w-zhang"
            ),
            Err(WorkflowError::OwnWork)
        );
        let verified = run_as(&done, Action::Verify { passed: true }, Role::Worker, "w-li");
        assert_eq!(verified.map(|c| c.state), Ok(CaseState::Verified));
    }

    #[test]
    fn only_the_current_department_accepts_hands_in_or_returns() {
        let mut c = case();
        c.state = CaseState::Dispatched;
        for a in [Action::Accept, Action::Return] {
            assert!(matches!(
                run_as(&c, a, Role::Department, "traffic"),
                Err(WorkflowError::NotTheirs { .. })
            ));
        }
        c.state = CaseState::Handling;
        assert!(matches!(
            run_as(&c, Action::Feedback, Role::Department, "traffic"),
            Err(WorkflowError::NotTheirs { .. })
        ));
    }

    #[test]
    fn every_department_dispatched_or_escalated_to_is_remembered_once() {
        let mut c = case();
        c.state = CaseState::Registered;
        let c = run(&c, Action::Dispatch { department: None }, Role::Dispatcher).unwrap();
        let c = run(&c, Action::Return, Role::Department).unwrap();
        let c = run(&c, Action::Dispatch { department: None }, Role::Dispatcher).unwrap();
        let up = DepartmentId::parse("up").unwrap();
        let esc = Action::Escalate {
            department: up.clone(),
            next_escalation_at: None,
        };
        let c = run(&c, esc, Role::System).unwrap();
        let san = DepartmentId::parse("san").unwrap();
        assert_eq!(c.dispatched_to, vec![san, up]);
        let former = Actor {
            role: Role::Department,
            subject: "san".into(),
        };
        let stranger = Actor {
            role: Role::Department,
            subject: "traffic".into(),
        };
        assert!(c.visible_to(&former));
        assert!(!c.visible_to(&stranger));
    }
}

//! The cases as the ingest's [`EventSink`]: each committed event of a box becomes (or joins) a
//! case. Storage failures are retried later; an event the cases will never take is refused.

use protocol::{BoxId, Event, Timestamp};

use super::{CaseError, CaseService};
use crate::sink::{EventSink, HandOffError, one_at_a_time};

fn hand_off_error(e: CaseError) -> HandOffError {
    match e {
        CaseError::Db(e) => HandOffError::Retry {
            reason: crate::telemetry::chain(&e),
        },
        e => HandOffError::Refused {
            reason: crate::telemetry::chain(&e),
        },
    }
}

impl EventSink for CaseService {
    fn hand_on(&self, box_id: &BoxId, event: &Event, now: Timestamp) -> Result<(), HandOffError> {
        self.ingest(box_id, event, now)
            .map(|_| ())
            .map_err(hand_off_error)
    }

    fn hand_on_many(
        &self,
        events: &[(BoxId, Event)],
        now: Timestamp,
    ) -> Vec<Result<(), HandOffError>> {
        match self.ingest_many(events, now) {
            Ok(outcomes) => outcomes.iter().map(|_| Ok(())).collect(),
            // storage failed: the whole batch again later
            Err(e @ CaseError::Db(_)) => {
                let failed = hand_off_error(e);
                events.iter().map(|_| Err(failed.clone())).collect()
            }
            // one event is at fault: one at a time, so the others still go through
            Err(_) => one_at_a_time(events, |(box_id, event)| self.hand_on(box_id, event, now)),
        }
    }
}

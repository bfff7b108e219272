//! Where the ingest hands committed events next: the [`EventSink`] contract between the QUIC
//! ingest (which calls it) and the cases (which implement it, in `cases::sink`).
//!
//! A leaf: it knows events and box ids, nothing of the ingest or the cases, so that neither
//! depends on the other.

use protocol::{BoxId, Event, Timestamp};

/// Why a hand-off to the sink did not take.
#[derive(Clone, Debug, thiserror::Error)]
pub enum HandOffError {
    /// A passing failure (storage busy): the event is offered again later.
    #[error("hand-off failed, will retry: {reason}")]
    Retry {
        /// Why, for the log.
        reason: String,
    },
    /// The sink will never take this event (e.g. an invalid location): it is marked refused.
    #[error("hand-off refused: {reason}")]
    Refused {
        /// Why, for the log.
        reason: String,
    },
}

/// Where committed events go next. Called from a blocking thread, once per event in effect:
/// an implementation must be idempotent on `(box, seq)`, because a crash between its commit
/// and the hub's mark repeats the call.
pub trait EventSink: Send + Sync + 'static {
    /// Takes one event of `box_id`.
    ///
    /// # Errors
    /// [`HandOffError`] saying whether to retry.
    fn hand_on(&self, box_id: &BoxId, event: &Event, now: Timestamp) -> Result<(), HandOffError>;

    /// Takes several events, in order; the result of each. A sink that can take a batch at
    /// once (one commit) overrides this; by default they are taken one at a time.
    fn hand_on_many(
        &self,
        events: &[(BoxId, Event)],
        now: Timestamp,
    ) -> Vec<Result<(), HandOffError>> {
        one_at_a_time(events, |(box_id, event)| self.hand_on(box_id, event, now))
    }
}

/// Takes `events` in order with `hand_on`, up to the first that must be retried: the ones
/// after it get the same answer without being tried, so that a retry takes them in order.
pub fn one_at_a_time<T>(
    events: &[T],
    mut hand_on: impl FnMut(&T) -> Result<(), HandOffError>,
) -> Vec<Result<(), HandOffError>> {
    let mut results = Vec::with_capacity(events.len());
    for event in events {
        let result = hand_on(event);
        if let Err(retry @ HandOffError::Retry { .. }) = &result {
            let retry = retry.clone();
            results.push(result);
            results.resize_with(events.len(), || Err(retry.clone()));
            return results;
        }
        results.push(result);
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_after_one_to_retry_are_not_taken_before_it() {
        let answers = ["ok", "refused", "retry", "ok"];
        let mut tried = Vec::new();
        let results = one_at_a_time(&answers, |&answer| {
            tried.push(answer);
            match answer {
                "ok" => Ok(()),
                "refused" => Err(HandOffError::Refused {
                    reason: "bad".into(),
                }),
                _ => Err(HandOffError::Retry {
                    reason: "busy".into(),
                }),
            }
        });
        assert_eq!(tried, ["ok", "refused", "retry"]);
        let kinds: Vec<&str> = results
            .iter()
            .map(|r| match r {
                Ok(()) => "ok",
                Err(HandOffError::Refused { .. }) => "refused",
                Err(HandOffError::Retry { reason }) => {
                    assert_eq!(reason, "busy");
                    "retry"
                }
            })
            .collect();
        assert_eq!(kinds, ["ok", "refused", "retry", "retry"]);
    }
}

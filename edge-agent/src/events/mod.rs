//! The event builder: turns an [`Observation`] from a camera or sensor rule into a wire
//! [`Event`] with its evidence, ready for [`crate::store::Store::submit`].
//!
//! - category and severity: the rule names a catalog category; severity is the rule's override
//!   or the catalog default;
//! - grid: the observation's own (a zone's) grid code, else the box's from config;
//! - cooldown per (source, rule, zone, track) ([`cooldown`]): a repeat inside the period raises
//!   nothing and is counted; the next event carries the count as `suppressed_repeats`;
//! - evidence ([`render`]): boxes and zone drawn on the snapshot, persons blurred unless the
//!   category is configured to keep them, encoded as JPEG.
//!
//! - values: an observation with a NaN or infinite attribute is refused; one whose time is
//!   further than `time_window_secs` from the box clock (a sensor's own clock, wrong) gets the
//!   box's time and keeps its own in [`DEVICE_TIME_ATTRIBUTE`].
//!
//! This is a pure core: the time comes from the observation, the box clock from an injectable
//! function and randomness (for event ids) from a seedable generator, so tests are
//! deterministic. It must not write files or touch the store.

pub mod config;
pub mod cooldown;
pub mod render;

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use serde::Serialize;

use protocol::{
    AttrValue, Catalog, CategoryCode, Event, EventId, GridCode, Location, Seq, Severity, Source,
    Timestamp,
};

use crate::store::EvidenceFile;

pub use cooldown::{Cooldown, CooldownDecision, CooldownKey};
pub use render::{EvidenceRenderer, Mark, PixelRect, Snapshot, blur_regions};

/// The catalog's major class of the boxes' own device faults, which the cooldown never holds back.
const DEVICE_CLASS_KEY: &str = "device";

/// Something a rule saw, on its way to becoming an event.
#[derive(Debug, Clone)]
pub struct Observation {
    /// The camera or sensor.
    pub source: Source,
    /// The rule's name (part of the cooldown key).
    pub rule: String,
    /// The zone, for camera rules.
    pub zone: Option<String>,
    /// The tracker's id of the object, for camera rules.
    pub track: Option<u64>,
    /// The category the rule raises (a minor class of the catalog).
    pub category: CategoryCode,
    /// The rule's severity; `None` takes the catalog's default.
    pub severity: Option<Severity>,
    /// When it was seen (box clock).
    pub observed_at: Timestamp,
    /// Where (the camera's or sensor's configured location).
    pub location: Location,
    /// The zone's grid code, if configured; else the box's applies.
    pub grid: Option<GridCode>,
    /// Rule-specific details.
    pub attributes: BTreeMap<String, AttrValue>,
    /// The frame to render as evidence (camera rules).
    pub snapshot: Option<Snapshot>,
}

/// What the builder made of an observation.
#[derive(Debug, Clone)]
pub enum Built {
    /// A new event and its evidence files, to submit to the store.
    Event {
        /// The event (its `seq` is assigned by the store).
        event: Box<Event>,
        /// Evidence files named by `event.evidence`, in order.
        evidence: Vec<EvidenceFile>,
    },
    /// A repeat inside the cooldown period: counted, no event.
    Suppressed {
        /// Repeats counted in this period so far.
        repeats: u64,
    },
}

/// Why an observation could not become an event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventsError {
    /// The category is not a minor class of the catalog (a rule misconfiguration: skip).
    #[error("category `{code}` is not a minor class of the catalog")]
    UnknownCategory {
        /// The code.
        code: CategoryCode,
    },
    /// The evidence image could not be encoded (skip the evidence or the event).
    #[error("failed to encode evidence image")]
    Encode {
        /// Why.
        #[source]
        source: image::ImageError,
    },
    /// An attribute is a NaN or infinite number (e.g. a rate of change after a reading of
    /// 1.7e308): the hub could not store it faithfully. The observation is refused (skip it).
    #[error("attribute `{key}` is not a finite number")]
    NonFinite {
        /// The attribute.
        key: String,
    },
}

/// Builds events from observations.
#[derive(Debug)]
pub struct EventBuilder {
    catalog: &'static Catalog,
    cooldown: Cooldown,
    renderer: EvidenceRenderer,
    box_grid: Option<GridCode>,
    rng: fastrand::Rng,
    /// Observations further than this from `clock` get the clock's time (see
    /// [`DEVICE_TIME_ATTRIBUTE`]).
    time_window: Duration,
    clock: fn() -> Timestamp,
}

/// The attribute that keeps an observation's own time when the builder replaced it with the
/// box's (a device clock outside the window).
pub const DEVICE_TIME_ATTRIBUTE: &str = "device_observed_at_ms";

impl EventBuilder {
    /// A builder configured by a validated `[events]` section, with a random id seed; events
    /// without a grid code of their own get `box_grid` (the site's).
    pub fn from_section(section: &config::EventsConfig, box_grid: Option<GridCode>) -> Self {
        let catalog = Catalog::embedded();
        let ev = &section.evidence;
        let unblurred: HashSet<CategoryCode> = ev
            .unblurred_categories
            .iter()
            .filter_map(|name| catalog.resolve(name).map(|c| c.code.clone()))
            .collect();
        EventBuilder {
            catalog,
            cooldown: Cooldown::new(section.cooldown),
            renderer: EvidenceRenderer::new(
                ev.jpeg_quality,
                ev.privacy_blur,
                ev.blur_radius_px,
                unblurred,
            ),
            box_grid,
            rng: fastrand::Rng::new(),
            time_window: section.time_window,
            clock: crate::clock::now,
        }
    }

    /// Reads the box clock from `clock` (for tests that replay a fixed time).
    #[must_use]
    pub fn with_clock(mut self, clock: fn() -> Timestamp) -> Self {
        self.clock = clock;
        self
    }

    /// Seeds the generator of event ids' random bits (for reproducible tests).
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.rng = fastrand::Rng::with_seed(seed);
        self
    }

    /// The evidence renderer in use.
    pub fn renderer(&self) -> &EvidenceRenderer {
        &self.renderer
    }

    /// Applies the cooldown, then builds the event and renders its evidence.
    ///
    /// # Errors
    /// [`EventsError::UnknownCategory`] or [`EventsError::Encode`]; neither consumes the
    /// cooldown period.
    pub fn build(&mut self, observation: Observation) -> Result<Built, EventsError> {
        self.build_inner(observation, true)
    }

    /// Builds an event whatever the cooldown says, without starting a period: for looks that
    /// were asked for (the hub's re-check of a case), each of which must be recorded.
    ///
    /// # Errors
    /// As [`EventBuilder::build`].
    pub fn build_requested(&mut self, observation: Observation) -> Result<Built, EventsError> {
        self.build_inner(observation, false)
    }

    fn build_inner(
        &mut self,
        mut observation: Observation,
        cooled: bool,
    ) -> Result<Built, EventsError> {
        if let Some((key, _)) = observation
            .attributes
            .iter()
            .find(|(_, v)| matches!(v, AttrValue::Float(f) if !f.is_finite()))
        {
            return Err(EventsError::NonFinite { key: key.clone() });
        }
        let now = (self.clock)();
        let window = i64::try_from(self.time_window.as_millis()).unwrap_or(i64::MAX);
        if observation.observed_at.millis_since(now).saturating_abs() > window {
            observation.attributes.insert(
                DEVICE_TIME_ATTRIBUTE.to_owned(),
                AttrValue::Int(observation.observed_at.as_unix_millis()),
            );
            observation.observed_at = now;
        }
        let Some(category) = self
            .catalog
            .by_code(&observation.category)
            .filter(|c| c.code.is_minor())
        else {
            return Err(EventsError::UnknownCategory {
                code: observation.category,
            });
        };
        let key = CooldownKey {
            source: observation.source.clone(),
            rule: observation.rule.clone(),
            zone: observation.zone.clone(),
            track: observation.track,
        };
        // Device faults and recoveries are edge-triggered by state machines that debounce them
        // already (camera health, sensor offline/battery latches): each one is a change the hub
        // must see, so a camera that recovers and fails again inside the period still reports.
        let exempt = !cooled
            || self
                .catalog
                .major(&category.code)
                .is_some_and(|m| m.key == DEVICE_CLASS_KEY);
        // Render before recording a raise, so a failed render does not start a period.
        let suppressed = match self.cooldown.peek(&key, observation.observed_at) {
            _ if exempt => 0,
            CooldownDecision::Suppress { .. } => {
                let repeats = match self.cooldown.check(&key, observation.observed_at) {
                    CooldownDecision::Suppress { repeats } => repeats,
                    CooldownDecision::Raise { .. } => 0,
                };
                return Ok(Built::Suppressed { repeats });
            }
            CooldownDecision::Raise { suppressed } => suppressed,
        };
        let evidence = match observation.snapshot {
            Some(snapshot) => vec![self.renderer.render(&category.code, snapshot)?],
            None => Vec::new(),
        };
        if !exempt {
            self.cooldown.check(&key, observation.observed_at);
        }

        let mut attributes = observation.attributes;
        attributes.insert("rule".to_owned(), AttrValue::Text(observation.rule));
        if let Some(zone) = observation.zone {
            attributes.insert("zone".to_owned(), AttrValue::Text(zone));
        }
        if let Some(track) = observation.track {
            attributes.insert(
                "track".to_owned(),
                AttrValue::Int(i64::try_from(track).unwrap_or(i64::MAX)),
            );
        }
        if suppressed > 0 {
            attributes.insert(
                "suppressed_repeats".to_owned(),
                AttrValue::Int(i64::try_from(suppressed).unwrap_or(i64::MAX)),
            );
        }
        let mut random = [0u8; 10];
        self.rng.fill(&mut random);
        let millis = u64::try_from(observation.observed_at.as_unix_millis()).unwrap_or(0);
        let event = Event {
            id: EventId::v7(millis, random),
            seq: Seq(0),
            source: observation.source,
            category: category.code.clone(),
            severity: observation.severity.unwrap_or(category.severity),
            observed_at: observation.observed_at,
            location: observation.location,
            grid: observation.grid.or_else(|| self.box_grid.clone()),
            attributes,
            evidence: evidence.iter().map(|f| f.reference.clone()).collect(),
        };
        Ok(Built::Event {
            event: Box::new(event),
            evidence,
        })
    }
}
/// What the events stage has done.
#[derive(Debug, Default, Serialize)]
pub struct EventsStats {
    /// Observations received from the sources.
    pub observations: AtomicU64,
    /// Events committed to the store.
    pub committed: AtomicU64,
    /// Repeats inside the cooldown, counted and not stored.
    pub suppressed: AtomicU64,
    /// Observations that could not become events (unknown category, evidence encoding).
    pub build_errors: AtomicU64,
    /// Events the store refused (disk full beyond eviction, closed).
    pub store_errors: AtomicU64,
    /// Events committed, by category code (bounded by the catalog).
    pub committed_by_category: Mutex<std::collections::BTreeMap<String, u64>>,
    /// Observation-to-commit latencies of the latest committed events, newest last, at most
    /// [`crate::camera::LATENCY_SAMPLES`] (as the camera's own samples): from the observation's time (a camera event's frame capture,
    /// a sensor event's reading) to the store's durable commit, on the box clock in whole
    /// milliseconds (a clock step distorts the samples around it).
    #[serde(skip)]
    pub commit_latencies: Mutex<std::collections::VecDeque<Duration>>,
}

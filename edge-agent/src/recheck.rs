//! The hub's camera re-check of a case, answered on the box: look through the camera now, record
//! what it sees as an event (evidence rendered under the privacy policy, stored durably and synced
//! like any other event, so the "after" picture reaches the hub), and answer with the counts.
//!
//! "Matching" objects are those the camera's rules for the asked categories look for: the rule's
//! and its zone's classes, standing (bottom-centre of the box) inside the rule's zone with the
//! zone's minimum score. The hub decides what the count means for its case; this module must not.

use std::collections::BTreeMap;
use std::time::Duration;

use protocol::{
    AttrValue, Catalog, CategoryCode, CommandAction, CommandOutcome, CommandResult, Event,
    Location, RecheckAnswer, Source, SourceKind,
};
use tokio::sync::mpsc;

use crate::camera::config::CameraConfig;
use crate::camera::{Look, Looker};
use crate::clock::now;
use crate::events::{Built, EventBuilder, Observation, Snapshot};
use crate::store::Store;
use crate::uplink::CommandRequest;
use vision::{NormBox, Zone};

/// How long a look may take (the detector serves every camera in turn).
const LOOK_TIMEOUT: Duration = Duration::from_secs(15);

/// What re-checks need besides the cameras' looks: the cameras' settings (zones, rules,
/// location), the site's location, and an event builder for the "after" pictures.
#[derive(Debug)]
pub struct Rechecks {
    /// The `[[cameras]]` entries.
    pub cameras: Vec<CameraConfig>,
    /// The site's location (for cameras without their own).
    pub site: Location,
    /// Builds the re-check's event.
    pub builder: EventBuilder,
}

/// Answers commands from the uplink until it drops its sender.
pub async fn serve(
    mut requests: mpsc::Receiver<CommandRequest>,
    looker: Looker,
    mut settings: Rechecks,
    store: Store,
) {
    while let Some(request) = requests.recv().await {
        let id = request.command.id;
        let outcome = match request.command.action {
            CommandAction::Recheck {
                camera,
                reference,
                categories,
            } => {
                recheck(
                    &looker,
                    &mut settings,
                    &store,
                    camera.as_str(),
                    &reference,
                    &categories,
                )
                .await
            }
            _ => Err(Answer::Unsupported),
        };
        let result = match outcome {
            Ok((evidence, answer)) => CommandResult {
                evidence,
                recheck: Some(answer),
                ..CommandResult::new(id, CommandOutcome::Done, now())
            },
            Err(Answer::Unsupported) => CommandResult::new(id, CommandOutcome::Unsupported, now()),
            Err(Answer::Failed(reason)) => {
                tracing::warn!(stage = "recheck", %reason, "re-check failed");
                CommandResult::new(id, CommandOutcome::Failed { reason }, now())
            }
        };
        let _ = request.reply.send(result);
    }
}

enum Answer {
    Unsupported,
    Failed(String),
}

type Done = (Vec<protocol::EvidenceRef>, RecheckAnswer);

async fn recheck(
    looker: &Looker,
    settings: &mut Rechecks,
    store: &Store,
    camera: &str,
    reference: &str,
    categories: &[CategoryCode],
) -> Result<Done, Answer> {
    let Rechecks {
        cameras,
        site,
        builder,
    } = settings;
    let site = *site;
    let cam = cameras
        .iter()
        .find(|c| c.id.as_str() == camera)
        .ok_or_else(|| Answer::Failed(format!("this box has no camera `{camera}`")))?;
    let look = looker
        .look(camera, LOOK_TIMEOUT)
        .await
        .map_err(|e| Answer::Failed(e.to_string()))?;
    let targets = targets(cam, categories);
    let category = categories
        .first()
        .cloned()
        .or_else(|| targets.first().map(|t| t.category.clone()))
        .ok_or_else(|| {
            Answer::Failed(format!(
                "camera `{camera}` has no rule and the hub named no category"
            ))
        })?;
    let (w, h) = look.image.dimensions();
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    let mut matching = 0u32;
    for d in &look.detections {
        *counts.entry(d.label.clone()).or_default() += 1;
        let b = NormBox::from_pixels([d.bbox.x1, d.bbox.y1, d.bbox.x2, d.bbox.y2], w, h);
        let hit = if targets.is_empty() {
            true
        } else {
            targets.iter().any(|t| t.matches(&d.label, d.score, &b))
        };
        matching += u32::from(hit);
    }
    // The event records the look with the same figures, as attributes a case page shows.
    let mut attributes = BTreeMap::new();
    attributes.insert(
        Event::RECHECK_REFERENCE.to_owned(),
        AttrValue::Text(reference.to_owned()),
    );
    attributes.insert("matching".to_owned(), AttrValue::Int(i64::from(matching)));
    for (label, n) in &counts {
        attributes.insert(format!("count.{label}"), AttrValue::Int(i64::from(*n)));
    }
    let observation = observation(site, cam, &look, category, attributes);
    let Built::Event { event, evidence } = builder
        .build_requested(observation)
        .map_err(|e| Answer::Failed(format!("could not record the look: {e}")))?
    else {
        return Err(Answer::Failed("the look was not recorded".to_owned()));
    };
    let refs = event.evidence.clone();
    let event_id = event.id;
    let committed = store
        .submit_async(*event, evidence)
        .await
        .map_err(|e| Answer::Failed(format!("could not store the look: {e}")))?;
    let answer = RecheckAnswer {
        reference: reference.to_owned(),
        matching,
        counts,
        event_id,
        seq: committed.seq,
    };
    tracing::info!(
        stage = "recheck",
        camera,
        reference,
        matching,
        "re-check answered"
    );
    Ok((refs, answer))
}

fn observation(
    site: Location,
    cam: &CameraConfig,
    look: &Look,
    category: CategoryCode,
    attributes: BTreeMap<String, AttrValue>,
) -> Observation {
    let marks = look.marks();
    let (w, h) = look.image.dimensions();
    let zone = cam
        .zones
        .first()
        .map(|z| Zone::from_config(z).pixels(w, h))
        .unwrap_or_default();
    Observation {
        source: Source {
            kind: SourceKind::Camera,
            id: cam.id.clone().into(),
        },
        rule: "recheck".to_owned(),
        zone: None,
        track: None,
        category,
        severity: None,
        observed_at: look.at,
        location: cam.location(site),
        grid: cam.zones.first().and_then(|z| z.grid.clone()),
        attributes,
        snapshot: Some(Snapshot {
            frame: (*look.image).clone(),
            marks,
            zone,
        }),
    }
}

/// What one of the camera's rules for an asked category looks for.
struct Target {
    category: CategoryCode,
    classes: Vec<String>,
    zone: Option<Zone>,
}

impl Target {
    fn matches(&self, label: &str, score: f32, b: &NormBox) -> bool {
        if !self.classes.is_empty() && !self.classes.iter().any(|c| c == label) {
            return false;
        }
        match &self.zone {
            Some(z) => score >= z.min_score && z.contains(b.foot()),
            None => true,
        }
    }
}

/// The camera's rules for `categories` (every rule when none are named).
fn targets(cam: &CameraConfig, categories: &[CategoryCode]) -> Vec<Target> {
    let catalog = Catalog::embedded();
    cam.rules
        .iter()
        .filter_map(|r| {
            let category = catalog.resolve(&r.category)?.code.clone();
            if !categories.is_empty() && !categories.contains(&category) {
                return None;
            }
            let zone = r
                .zone
                .as_ref()
                .and_then(|id| cam.zones.iter().find(|z| &z.id == id));
            let mut classes = r.classes.clone();
            if let Some(z) = zone {
                classes.extend(z.classes.iter().cloned());
            }
            Some(Target {
                category,
                classes,
                zone: zone.map(Zone::from_config),
            })
        })
        .collect()
}

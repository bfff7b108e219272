//! The event builder on real images: cooldown, privacy blur, and that no unblurred frame
//! reaches the disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use edge_agent::config::Config;
use edge_agent::events::{
    Built, EventBuilder, EventsError, Mark, Observation, PixelRect, Snapshot, blur_regions,
};
use image::RgbImage;
use protocol::{
    AttrValue, Catalog, CategoryCode, Severity, Source, SourceId, SourceKind, Timestamp,
};

use crate::helpers::{self, T0_MS};
use crate::pixels::{assert_equal_away_from, inner, mean_abs_diff};

const CONFIG: &str = r#"
[site]
lat = 39.9042
lon = 116.4074
grid = "11010100100101"
[store]
data_dir = "/var/lib/edge-agent"
[events]
cooldown_secs = 60
[events.evidence]
jpeg_quality = 85
blur_radius_px = 12
unblurred_categories = ["emergency.person_fallen"]
"#;

/// The astronaut's body and face in `astronaut.png` (512 × 512).
const PERSON: PixelRect = PixelRect {
    x: 20,
    y: 10,
    width: 350,
    height: 502,
};

fn builder() -> EventBuilder {
    let config = Config::from_toml_str(CONFIG, "test").unwrap();
    EventBuilder::from_section(&config.events, config.site.grid.clone())
        .with_seed(42)
        .with_clock(t0)
}

/// The box clock of these tests: the observations' time base.
fn t0() -> Timestamp {
    Timestamp::from_unix_millis(T0_MS)
}

fn load(name: &str) -> RgbImage {
    image::open(media(name)).unwrap().to_rgb8()
}

fn observation(category: &str, track: u64, secs: i64, snapshot: Option<Snapshot>) -> Observation {
    Observation {
        source: Source {
            kind: SourceKind::Camera,
            id: SourceId::parse("cam-gate").unwrap(),
        },
        rule: "loitering".to_owned(),
        zone: Some("gate".to_owned()),
        track: Some(track),
        category: Catalog::embedded().resolve(category).unwrap().code.clone(),
        severity: None,
        observed_at: Timestamp::from_unix_millis(T0_MS + secs * 1000),
        location: helpers::site(),
        grid: None,
        attributes: BTreeMap::from([("label".to_owned(), AttrValue::Text("person".to_owned()))]),
        snapshot,
    }
}

fn person_snapshot(frame: RgbImage) -> Snapshot {
    Snapshot {
        frame,
        marks: vec![Mark {
            rect: PERSON,
            label: "person".to_owned(),
            score: 0.93,
            private: true,
        }],
        zone: Vec::new(),
    }
}

#[test]
fn blurring_a_person_changes_that_region_and_no_pixel_outside_it() {
    for (name, region) in [
        ("astronaut.png", PERSON),
        (
            "coffee.png",
            PixelRect {
                x: 100,
                y: 60,
                width: 200,
                height: 150,
            },
        ),
        (
            "motorcycle_left.png",
            PixelRect {
                x: 0,
                y: 0,
                width: 120,
                height: 90,
            },
        ),
        (
            "chelsea.png",
            PixelRect {
                x: 250,
                y: 200,
                width: 200,
                height: 100,
            },
        ),
    ] {
        let original = load(name);
        let mut frame = original.clone();
        blur_regions(&mut frame, &[region], 12);
        let region = region.clip(frame.width(), frame.height()).unwrap();
        for (x, y, p) in frame.enumerate_pixels() {
            if !region.contains(x, y) {
                assert_eq!(p, original.get_pixel(x, y), "{name}: ({x}, {y}) changed");
            }
        }
        let diff = mean_abs_diff(&frame, &original, region);
        assert!(diff > 3.0, "{name}: region barely changed ({diff:.2})");
    }
}

#[test]
fn stored_evidence_has_the_person_blurred_and_the_rest_as_captured() {
    let dir = tempfile::tempdir().unwrap();
    let store = helpers::open(dir.path());
    let original = load("astronaut.png");
    let Built::Event { event, evidence } = builder()
        .build(observation(
            "street_order.intrusion",
            1,
            0,
            Some(person_snapshot(original.clone())),
        ))
        .unwrap()
    else {
        panic!("first observation must raise an event");
    };
    assert_eq!(evidence.len(), 1);
    assert_eq!(event.evidence[0].media_type, "image/jpeg");
    store.submit(*event.clone(), evidence).unwrap();

    let stored_bytes = std::fs::read(store.evidence_path(&event.evidence[0].sha256)).unwrap();
    let stored = image::load_from_memory(&stored_bytes).unwrap().to_rgb8();
    // Reference: the unblurred frame through the same encoder. JPEG codes 16×16 blocks
    // independently, so blocks clear of the person box (and its outline) decode identically.
    let reference = {
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85)
            .encode_image(&original)
            .unwrap();
        image::load_from_memory(&jpeg).unwrap().to_rgb8()
    };
    let compared = assert_equal_away_from(&stored, &reference, &[PERSON], "outside the person");
    assert!(compared > 100 * 512, "compared only {compared} pixels");
    let blurred = mean_abs_diff(&stored, &reference, inner(PERSON, 8));
    assert!(blurred > 3.0, "person region not blurred ({blurred:.2})");

    assert_no_unblurred_frame_on_disk(dir.path(), &original);
}

#[test]
fn a_category_that_needs_persons_keeps_them_visible() {
    let original = load("astronaut.png");
    let Built::Event { evidence, .. } = builder()
        .build(observation(
            "emergency.person_fallen",
            1,
            0,
            Some(person_snapshot(original.clone())),
        ))
        .unwrap()
    else {
        panic!("expected an event");
    };
    let stored = image::load_from_memory(&evidence[0].bytes)
        .unwrap()
        .to_rgb8();
    let diff = mean_abs_diff(&stored, &original, inner(PERSON, 8));
    assert!(
        diff < 3.0,
        "person region altered beyond JPEG loss ({diff:.2})"
    );
}

#[test]
fn repeats_within_the_cooldown_raise_nothing_and_are_counted_on_the_next_event() {
    let mut b = builder();
    let raise = |b: &mut EventBuilder, track, secs| {
        b.build(observation("street_order.intrusion", track, secs, None))
    };
    let Built::Event { event: first, .. } = raise(&mut b, 7, 0).unwrap() else {
        panic!("first raises");
    };
    assert!(matches!(
        raise(&mut b, 7, 10).unwrap(),
        Built::Suppressed { repeats: 1 }
    ));
    assert!(matches!(
        raise(&mut b, 7, 59).unwrap(),
        Built::Suppressed { repeats: 2 }
    ));
    assert!(
        matches!(raise(&mut b, 8, 30).unwrap(), Built::Event { .. }),
        "another track"
    );
    let Built::Event { event: again, .. } = raise(&mut b, 7, 60).unwrap() else {
        panic!("the period is over");
    };
    assert_eq!(
        again.attributes.get("suppressed_repeats"),
        Some(&AttrValue::Int(2))
    );
    assert!(!first.attributes.contains_key("suppressed_repeats"));
    assert_ne!(first.id, again.id);
}

#[test]
fn device_faults_and_recoveries_are_never_held_back_by_the_cooldown() {
    let mut b = builder();
    // A camera that fails, recovers and fails again within one cooldown period: every change
    // is an event (the health state machine has debounced them already).
    let sequence = [
        ("device.camera_offline", 0),
        ("device.recovered", 5),
        ("device.camera_offline", 10),
        ("device.recovered", 15),
    ];
    for (category, secs) in sequence {
        let mut obs = observation(category, 1, secs, None);
        obs.rule = "camera_fault".to_owned();
        obs.track = None;
        assert!(
            matches!(b.build(obs).unwrap(), Built::Event { .. }),
            "{category} at {secs} s raises"
        );
    }
    // The cooldown still holds back an ordinary rule's repeat inside the period.
    assert!(matches!(
        b.build(observation("street_order.intrusion", 1, 0, None))
            .unwrap(),
        Built::Event { .. }
    ));
    assert!(matches!(
        b.build(observation("street_order.intrusion", 1, 20, None))
            .unwrap(),
        Built::Suppressed { .. }
    ));
}

#[test]
fn events_take_catalog_severity_rule_overrides_and_the_box_grid() {
    let mut b = builder();
    let mut obs = observation("street_order.intrusion", 1, 0, None);
    let Built::Event { event, .. } = b.build(obs.clone()).unwrap() else {
        panic!("expected an event");
    };
    assert_eq!(event.severity, Severity::High, "catalog default");
    assert_eq!(
        event.grid.as_ref().map(|g| g.as_str()),
        Some("11010100100101")
    );
    assert_eq!(
        event.attributes.get("zone"),
        Some(&AttrValue::Text("gate".to_owned()))
    );
    assert_eq!(event.attributes.get("track"), Some(&AttrValue::Int(1)));
    assert_eq!(event.observed_at, Timestamp::from_unix_millis(T0_MS));

    obs.track = Some(2);
    obs.severity = Some(Severity::Low);
    obs.grid = Some(protocol::GridCode::parse("11010100100102").unwrap());
    let Built::Event { event, .. } = b.build(obs.clone()).unwrap() else {
        panic!("expected an event");
    };
    assert_eq!(event.severity, Severity::Low);
    assert_eq!(
        event.grid.as_ref().map(|g| g.as_str()),
        Some("11010100100102")
    );

    obs.category = CategoryCode::parse("04").unwrap();
    assert!(matches!(
        b.build(obs),
        Err(EventsError::UnknownCategory { .. })
    ));
}

/// No file under `dir` may hold the original frame: no image in it shows the person unblurred,
/// and no file contains a run of the original's raw pixel bytes from the person region.
fn assert_no_unblurred_frame_on_disk(dir: &Path, original: &RgbImage) {
    let row = PERSON.y + PERSON.height / 2;
    let start = ((row * original.width() + PERSON.x + 40) * 3) as usize;
    let needle = &original.as_raw()[start..start + 96];
    let mut files = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            files += 1;
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} holds raw pixels of the person",
                path.display()
            );
            if let Ok(img) = image::load_from_memory(&bytes) {
                let img = img.to_rgb8();
                if img.dimensions() == original.dimensions() {
                    let diff = mean_abs_diff(&img, original, inner(PERSON, 8));
                    assert!(diff > 3.0, "{} shows the person unblurred", path.display());
                }
            }
        }
    }
    assert!(files >= 2, "expected the database and the evidence file");
}

/// The folder of the shared test media (GRIDSENSE_CACHE, else `.cache/gridsense` at the root).
fn media(name: &str) -> PathBuf {
    let cache = std::env::var_os("GRIDSENSE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/gridsense"));
    let path = cache.join("media").join(name);
    assert!(
        path.is_file(),
        "test image {} is missing: run `make setup`",
        path.display()
    );
    path
}

/// A NaN or infinite attribute cannot reach the hub faithfully (JSON has no such numbers):
/// the observation is refused, without starting a cooldown period.
#[test]
fn an_observation_with_a_non_finite_number_is_refused() {
    let mut b = builder();
    for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let mut obs = observation("street_order.intrusion", 1, 0, None);
        obs.attributes
            .insert("rate_per_min".to_owned(), AttrValue::Float(value));
        let refused = b.build(obs);
        assert!(
            matches!(refused, Err(EventsError::NonFinite { ref key }) if key == "rate_per_min"),
            "{refused:?}"
        );
    }
    assert!(matches!(
        b.build(observation("street_order.intrusion", 1, 0, None)),
        Ok(Built::Event { .. })
    ));
}

/// A device clock far off (a sensor that never learnt the time, or one that overflows): the
/// event gets the box's time and keeps the device's in an attribute; within the window the
/// device's time stands.
#[test]
fn a_device_time_outside_the_window_is_replaced_by_the_box_time_and_kept_as_a_flag() {
    let mut b = builder();
    let day = 86_400;
    for (track, secs) in [(1, 2 * day), (2, -40 * 365 * day), (3, i64::MAX / 2000)] {
        let Built::Event { event, .. } = b
            .build(observation("street_order.intrusion", track, secs, None))
            .unwrap()
        else {
            panic!("suppressed");
        };
        assert_eq!(event.observed_at, t0(), "{secs} s off");
        assert_eq!(
            event
                .attributes
                .get(edge_agent::events::DEVICE_TIME_ATTRIBUTE),
            Some(&AttrValue::Int(T0_MS + secs * 1000))
        );
    }
    let Built::Event { event, .. } = b
        .build(observation("street_order.intrusion", 4, day - 60, None))
        .unwrap()
    else {
        panic!("suppressed");
    };
    assert_eq!(
        event.observed_at,
        Timestamp::from_unix_millis(T0_MS + (day - 60) * 1000)
    );
    assert!(
        !event
            .attributes
            .contains_key(edge_agent::events::DEVICE_TIME_ATTRIBUTE)
    );
}

//! A model that cannot be loaded, or a manifest that disagrees with its model, is refused at load
//! with an error naming what and where.

use std::num::NonZeroU32;

use models::manifest::{InputType, Layout, OutputSpec};
use models::{Detector, LoadError, Mismatch, SessionConfig};

use crate::helpers::{coco_ssd, runtime, yolov12n};

fn load(manifest: models::ModelManifest) -> LoadError {
    Detector::from_manifest(&runtime(), manifest, &SessionConfig::default()).unwrap_err()
}

#[test]
fn a_corrupt_onnx_file_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.onnx");
    std::fs::write(&path, b"this is not an onnx protobuf, just text").unwrap();
    let mut manifest = coco_ssd();
    manifest.base_dir = dir.path().to_owned();
    let err = load(manifest);
    assert!(
        matches!(&err, LoadError::Model { path: p, .. } if *p == path),
        "{err:?}"
    );
}

#[test]
fn a_missing_onnx_file_is_refused_naming_the_file() {
    let mut manifest = coco_ssd();
    manifest.model = "does-not-exist.onnx".into();
    let err = load(manifest);
    assert!(matches!(&err, LoadError::Model { path, .. } if path.ends_with("does-not-exist.onnx")));
}

#[test]
fn a_manifest_whose_input_size_disagrees_with_the_model_is_refused() {
    let mut manifest = yolov12n();
    manifest.input.width = NonZeroU32::new(320).unwrap();
    manifest.input.height = NonZeroU32::new(320).unwrap();
    let err = load(manifest);
    assert!(
        matches!(
            &err,
            LoadError::Mismatch { mismatch: Mismatch::InputShape { name, expected, found }, .. }
                if name == "images" && expected == &[1, 3, 320, 320] && found == &[1, 3, 640, 640]
        ),
        "{err:?}"
    );
}

#[test]
fn a_manifest_with_the_wrong_layout_or_type_is_refused() {
    let mut manifest = coco_ssd();
    manifest.input.layout = Layout::Nchw;
    assert!(matches!(
        load(manifest),
        LoadError::Mismatch {
            mismatch: Mismatch::InputShape { .. },
            ..
        }
    ));
    let mut manifest = coco_ssd();
    manifest.input.dtype = InputType::Float32;
    assert!(matches!(
        load(manifest),
        LoadError::Mismatch {
            mismatch: Mismatch::InputType { .. },
            ..
        }
    ));
}

#[test]
fn a_manifest_naming_an_unknown_output_is_refused_listing_the_real_ones() {
    let mut manifest = coco_ssd();
    manifest.output = OutputSpec::SsdTf {
        scores: "scores".into(),
        boxes: "Postprocessor/ExpandDims_1:0".into(),
    };
    let err = load(manifest);
    assert!(matches!(
        &err,
        LoadError::Mismatch { mismatch: Mismatch::NoSuchOutput { name, available }, .. }
            if name == "scores" && available.iter().any(|a| a == "Postprocessor/Slice:0")
    ));
}

#[test]
fn labels_that_do_not_match_the_class_count_are_refused() {
    let mut manifest = yolov12n();
    manifest.labels = models::manifest::Labels::List(vec!["helmet".into()]);
    let err = load(manifest);
    assert!(matches!(
        err,
        LoadError::Mismatch {
            mismatch: Mismatch::LabelCount {
                labels: 1,
                classes: 80
            },
            ..
        }
    ));
}

#[test]
fn an_allow_list_with_a_typo_is_refused_and_a_valid_one_filters() {
    let mut manifest = coco_ssd();
    manifest.thresholds.allow = Some(vec!["persn".into()]);
    assert!(matches!(
        load(manifest),
        LoadError::Mismatch {
            mismatch: Mismatch::UnknownLabel { key: "allow", .. },
            ..
        }
    ));
    let mut manifest = coco_ssd();
    manifest.thresholds.allow = Some(vec!["dining table".into()]);
    let mut d = crate::helpers::detector(manifest);
    let found = crate::helpers::detect(&mut d, "coffee.png");
    assert!(!found.is_empty());
    assert!(found.iter().all(|d| d.label == "dining table"));
}

#[test]
fn per_class_thresholds_raise_the_bar_for_one_class_only() {
    let mut manifest = coco_ssd();
    manifest.thresholds.per_class.insert("cup".into(), 0.99);
    let mut d = crate::helpers::detector(manifest);
    let found = crate::helpers::detect(&mut d, "coffee.png");
    assert!(found.iter().all(|d| d.label != "cup"));
    assert!(found.iter().any(|d| d.label == "dining table"));
}

#[test]
fn a_cpu_fallback_happens_when_an_accelerator_is_not_available() {
    let config = SessionConfig {
        execution_provider: models::ExecutionProviderKind::Cuda,
        ..SessionConfig::default()
    };
    let d = Detector::from_manifest(&runtime(), coco_ssd(), &config).unwrap();
    // The wheel's library is CPU-only.
    assert_eq!(d.execution_provider(), models::ExecutionProviderKind::Cpu);
}

#[test]
fn inspect_suggests_a_manifest_for_an_ultralytics_export_that_loads() {
    let path = yolov12n().model_path();
    let info = models::inspect::inspect(&runtime(), &path).unwrap();
    assert_eq!(info.inputs[0].shape, vec![1, 3, 640, 640]);
    assert!(info.custom.contains_key("names"));
    let suggested = info.suggested_manifest().unwrap();
    assert!(matches!(
        suggested.output,
        OutputSpec::YoloUltralytics { .. }
    ));
    let toml = suggested.to_toml().unwrap();
    let reparsed =
        models::ModelManifest::from_toml(&toml, &path, path.parent().unwrap().to_owned()).unwrap();
    let mut d = crate::helpers::detector(reparsed);
    assert!(
        crate::helpers::best(&crate::helpers::detect(&mut d, "astronaut.png"), "person") >= 0.75
    );
    // COCO-SSD has no Ultralytics metadata: no suggestion.
    let info = models::inspect::inspect(&runtime(), &coco_ssd().model_path()).unwrap();
    assert_eq!(info.suggested_manifest(), None);
}

//! `edge-agent detect` and `edge-agent model inspect`, run as the real binary on the fetched test
//! photos, the shipped COCO-SSD and the yolov12n test model.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn cache_dir() -> PathBuf {
    std::env::var_os("GRIDSENSE_CACHE")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/gridsense"))
}

fn photo(name: &str) -> PathBuf {
    cache_dir().join("media").join(name)
}

fn edge_agent(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edge-agent"))
        .args(args)
        .output()
        .expect("edge-agent runs")
}

fn json_lines(out: &Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn best(lines: &[Value], image: &Path, label: &str) -> f64 {
    lines
        .iter()
        .filter(|l| l["image"] == image.display().to_string() && l["label"] == label)
        .map(|l| l["score"].as_f64().unwrap_or(0.0))
        .fold(0.0, f64::max)
}

#[test]
fn detect_with_coco_ssd_finds_person_motorcycle_and_cup_above_the_issue_thresholds() {
    let (a, m, c) = (
        photo("astronaut.png"),
        photo("motorcycle_left.png"),
        photo("coffee.png"),
    );
    let out = edge_agent(&[
        "detect".as_ref(),
        "--model".as_ref(),
        "coco-ssd".as_ref(),
        "--json".as_ref(),
        a.as_ref(),
        m.as_ref(),
        c.as_ref(),
    ]);
    let lines = json_lines(&out);
    assert!(best(&lines, &a, "person") >= 0.6);
    assert!(best(&lines, &m, "motorcycle") >= 0.9);
    assert!(best(&lines, &c, "cup") >= 0.9);
    let person = lines.iter().find(|l| l["label"] == "person").unwrap();
    let b: Vec<f64> = person["box"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(b.len() == 4 && b[0] < b[2] && b[1] < b[3] && b[2] <= 512.0 && b[3] <= 512.0);
}

#[test]
fn detect_prints_one_text_line_per_detection_with_label_score_and_box() {
    let c = photo("coffee.png");
    let out = edge_agent(&[
        "detect".as_ref(),
        "--model".as_ref(),
        "coco-ssd".as_ref(),
        c.as_ref(),
    ]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let cup = stdout
        .lines()
        .find(|l| l.split('\t').nth(1) == Some("cup"))
        .expect("a cup line");
    let fields: Vec<&str> = cup.split('\t').collect();
    assert_eq!(fields.len(), 4);
    assert!(fields[2].parse::<f64>().unwrap() >= 0.9);
    assert_eq!(fields[3].split(',').count(), 4);
}

#[test]
fn detect_with_an_ultralytics_onnx_finds_person_motorcycle_and_cup_above_the_issue_thresholds() {
    let model = cache_dir().join("models/yolov12n/yolov12n.onnx");
    let (a, m, c) = (
        photo("astronaut.png"),
        photo("motorcycle_left.png"),
        photo("coffee.png"),
    );
    let out = edge_agent(&[
        "detect".as_ref(),
        "--model".as_ref(),
        model.as_ref(),
        "--json".as_ref(),
        a.as_ref(),
        m.as_ref(),
        c.as_ref(),
    ]);
    let lines = json_lines(&out);
    assert!(best(&lines, &a, "person") >= 0.75);
    assert!(best(&lines, &m, "motorcycle") >= 0.85);
    assert!(best(&lines, &c, "cup") >= 0.75);
}

#[test]
fn detect_out_writes_an_annotated_image_of_the_same_size() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("annotated.jpg");
    let c = photo("coffee.png");
    let out = edge_agent(&[
        "detect".as_ref(),
        "--model".as_ref(),
        "coco-ssd".as_ref(),
        "--out".as_ref(),
        target.as_ref(),
        c.as_ref(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = image::open(&target).unwrap().to_rgb8();
    let original = image::open(&c).unwrap().to_rgb8();
    assert_eq!(written.dimensions(), original.dimensions());
    // The cup's box (about x 173..416, y 24..257) has its left edge drawn in.
    let edge_changed = (60..200).filter(|&y| {
        let (w, o) = (written.get_pixel(173, y), original.get_pixel(173, y));
        w.0.iter()
            .zip(o.0)
            .map(|(a, b)| a.abs_diff(b) as u32)
            .sum::<u32>()
            > 60
    });
    assert!(edge_changed.count() > 100);
}

#[test]
fn model_inspect_suggests_a_manifest_that_detect_accepts() {
    let model = cache_dir().join("models/yolov12n/yolov12n.onnx");
    let out = edge_agent(&["model".as_ref(), "inspect".as_ref(), model.as_ref()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("images: Float32 [1, 3, 640, 640]"));
    assert!(stdout.contains("output0: Float32 [1, 84, 8400]"));
    let (_, suggestion) = stdout
        .split_once("# suggested manifest")
        .expect("a suggestion");
    let toml = suggestion.split_once('\n').unwrap().1.replace(
        "model = \"yolov12n.onnx\"",
        &format!("model = {:?}", model.display().to_string()),
    );
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("manifest.toml");
    std::fs::write(&manifest, toml).unwrap();
    let a = photo("astronaut.png");
    let lines = json_lines(&edge_agent(&[
        "detect".as_ref(),
        "--model".as_ref(),
        manifest.as_ref(),
        "--json".as_ref(),
        a.as_ref(),
    ]));
    assert!(best(&lines, &a, "person") >= 0.75);
}

#[test]
fn model_inspect_of_a_non_ultralytics_model_says_there_is_no_suggestion() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/zoo/coco-ssd/model.onnx");
    let out = edge_agent(&["model".as_ref(), "inspect".as_ref(), model.as_ref()]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("image_tensor:0: Uint8"));
    assert!(stdout.contains("# no manifest suggestion"));
}

#[test]
fn detect_with_a_missing_runtime_library_fails_naming_the_path() {
    let a = photo("astronaut.png");
    let out = edge_agent(&[
        "detect".as_ref(),
        "--model".as_ref(),
        "coco-ssd".as_ref(),
        "--ort-lib".as_ref(),
        "/nonexistent/libonnxruntime.so".as_ref(),
        a.as_ref(),
    ]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/libonnxruntime.so"));
}

#[test]
fn detect_with_an_unknown_model_name_fails_listing_the_zoo() {
    let a = photo("astronaut.png");
    let out = edge_agent(&[
        "detect".as_ref(),
        "--model".as_ref(),
        "yolo-nope".as_ref(),
        a.as_ref(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("coco-ssd"));
}

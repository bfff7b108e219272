//! The `hub` binary's command line.

use std::process::Command;

fn hub(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hub"))
        .args(args)
        .output()
        .expect("hub binary runs")
}

#[test]
fn help_lists_only_built_commands() {
    let out = hub(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for command in ["categories", "grid", "serve", "token-hash"] {
        assert!(text.contains(command), "{text}");
    }
}

#[test]
fn categories_as_json_lines_carry_every_minor_class() {
    let out = hub(&["categories", "--json"]);
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.len(),
        protocol::Catalog::embedded().categories().count()
    );
    let loss = lines
        .iter()
        .find(|v| v["key"] == "device.data_loss")
        .expect("data-loss category listed");
    assert_eq!(loss["code"], "9005");
    assert_eq!(loss["severity"], "high");
}

#[test]
fn an_unknown_command_fails_with_usage() {
    let out = hub(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2), "clap's usage-error exit status");
    assert!(out.stdout.is_empty(), "nothing printed as if it had worked");
}

#[test]
fn grid_sample_then_locate_prints_the_chain_and_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("city.geojson");
    let out = hub(&["grid", "sample", "--out", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // the centre of cell 32050800100101: origin + half a cell
    let out = hub(&[
        "grid",
        "locate",
        "31.281",
        "120.581",
        "--grid",
        file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("city") && lines[0].contains("苏州市"),
        "{text}"
    );
    assert!(
        lines[1].contains("320508") && lines[1].contains("姑苏区"),
        "{text}"
    );
    assert!(
        lines[2].contains("320508001 ") && lines[2].contains("平江街道"),
        "{text}"
    );
    assert!(
        lines[3].contains("320508001001") && lines[3].contains("钮家巷社区"),
        "{text}"
    );
    assert!(lines[4].contains("32050800100101"), "{text}");
    assert_eq!(lines[5], "worker     w-zhang");
}

#[test]
fn grid_locate_converts_gcj02_input_before_matching() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("city.geojson");
    assert!(
        hub(&["grid", "sample", "--out", file.to_str().unwrap()])
            .status
            .success()
    );
    let (lat, lon) = hub::grid::crs::wgs84_to_gcj02(31.281, 120.581);
    let out = hub(&[
        "grid",
        "locate",
        &lat.to_string(),
        &lon.to_string(),
        "--crs",
        "gcj02",
        "--grid",
        file.to_str().unwrap(),
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("32050800100101"), "{text}");
}

#[test]
fn grid_locate_with_a_broken_grid_file_names_the_feature_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.geojson");
    std::fs::write(
        &file,
        r#"{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"code":"12"},"geometry":null}]}"#,
    )
    .unwrap();
    let out = hub(&[
        "grid",
        "locate",
        "31.2",
        "120.5",
        "--grid",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("feature #1 (code 12)"), "{err}");
}

/// `hub token new` makes a random token and the `[[tokens]]` entry for it; `hub token-hash`
/// takes a token from standard input, so that no secret has to be typed on a command line.
#[test]
fn a_new_token_is_random_and_its_entry_holds_its_hash_which_token_hash_reads_from_stdin() {
    use std::io::Write as _;
    let new = |subject: &str| {
        let out = hub(&[
            "token",
            "new",
            "--name",
            "desk",
            "--role",
            "dispatcher",
            "--subject",
            subject,
        ]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let (a, b) = (new("desk-1"), new("desk-1"));
    let token_of = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("# gst_").map(|t| format!("gst_{t}")))
            .unwrap()
    };
    assert_ne!(token_of(&a), token_of(&b));
    let entry: toml::Value = toml::from_str(&a).unwrap();
    let entry = &entry["tokens"][0];
    assert_eq!(entry["role"].as_str(), Some("dispatcher"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_hub"))
        .arg("token-hash")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{}", token_of(&a)).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        entry["token_sha256"].as_str().unwrap()
    );
    assert!(
        !hub(&[
            "token",
            "new",
            "--name",
            "x",
            "--role",
            "system",
            "--subject",
            "x"
        ])
        .status
        .success()
    );
}

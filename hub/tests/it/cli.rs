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
    assert!(text.contains("categories"), "{text}");
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

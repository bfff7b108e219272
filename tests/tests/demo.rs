//! `make demo` in CI mode: `scripts/demo --ci` runs the whole product (mosquitto, the hub, an
//! enrolled box with two test cameras over RTSP and simulated sensors) with the binaries cargo
//! already built, and stops with success once the hub's REST API shows a case raised by a camera
//! and one raised by a sensor. Afterwards no process of the demo is left and its folder is gone.
//! `DEMO_DB=postgres` does the same with the cases in a private PostgreSQL cluster served by two
//! hub processes.
#![allow(clippy::unwrap_used)] // test code

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The script gives up after this; the test waits a little longer for its own clean-up.
const DEMO_TIMEOUT_SECS: u64 = 150;

/// The script, killed with SIGTERM (its trap stops every child) if the test ends early.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-TERM", &self.0.id().to_string()])
                .status();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn the_demo_in_ci_mode_sees_a_camera_case_and_a_sensor_case_then_stops_everything() {
    run_demo("sqlite");
}

#[test]
fn the_demo_on_postgresql_runs_two_hub_processes_and_stops_the_cluster() {
    let text = run_demo("postgres");
    for line in [
        "cases in postgres://",
        "second hub process: API on",
        "hub-2 stopped",
        "postgresql stopped",
    ] {
        assert!(text.contains(line), "{line:?} missing in:\n{text}");
    }
}

/// Runs `scripts/demo --ci` with `DEMO_DB=db`, checks that it passed and left nothing behind,
/// and returns what it printed. One demo at a time: the check for processes left behind would
/// see the other's.
fn run_demo(db: &str) -> String {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let bins = [
        e2e::binary("edge-agent"),
        e2e::binary("hub"),
        PathBuf::from(env!("CARGO_BIN_EXE_gridsense-sim")),
    ];
    let bin_dir = bins[0].parent().unwrap();
    assert!(bins.iter().all(|b| b.parent() == Some(bin_dir)));

    let output = tempfile::NamedTempFile::new().unwrap();
    let mut demo = Demo(
        Command::new(root.join("scripts/demo"))
            .arg("--ci")
            .env("DEMO_BIN_DIR", bin_dir)
            .env("DEMO_TIMEOUT_SECS", DEMO_TIMEOUT_SECS.to_string())
            .env("DEMO_DB", db)
            .stdin(Stdio::null())
            .stdout(output.reopen().unwrap())
            .stderr(output.reopen().unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(DEMO_TIMEOUT_SECS + 60);
    let status = loop {
        if let Some(status) = demo.0.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    drop(demo);
    let mut text = String::new();
    output.reopen().unwrap().read_to_string(&mut text).unwrap();
    let status = status.unwrap_or_else(|| panic!("the demo did not end in time:\n{text}"));
    assert!(status.success(), "the demo failed ({status}):\n{text}");
    assert!(
        text.contains("a camera case and a sensor case reached the hub"),
        "{text}"
    );

    // Everything it started is stopped and its folder removed.
    let folder = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("logs"))
        .and_then(|l| l.trim().split('{').next())
        .map(|f| f.trim_end_matches('/').to_owned())
        .unwrap_or_else(|| panic!("no logs line in:\n{text}"));
    assert!(folder.contains("gridsense-demo"), "{folder}");
    assert!(!Path::new(&folder).exists(), "{folder} left behind");
    let sim = bins[2].display().to_string();
    let stray: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&folder) || c.contains(&sim))
        .collect();
    assert!(stray.is_empty(), "processes left behind: {stray:?}");
    text
}

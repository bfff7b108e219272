//! `hub backup` on a running hub: the copy is made while reports keep arriving, and a hub whose
//! files were lost serves the copied cases again once the files are put back.
#![allow(clippy::unwrap_used)] // test code: helpers outside #[test] functions unwrap too

#[path = "hub_support/mod.rs"]
mod hub_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hub_support::RunningHub;

const OPERATOR: (&str, &str, &str) = ("t-backup", "dispatcher", "desk-1");
const APP_KEY: &str = "backup-test-app-key";

/// Files a citizen report through Open311 (blocking HTTP); its status.
fn report(api: SocketAddr, n: u32) -> u16 {
    // spread over ~100 m of one street, 2.5 m apart: some join a case, most open their own
    let lat = 31.281 + f64::from(n) * 0.000_02;
    let body = format!(
        "api_key={APP_KEY}&service_code=0102&lat={lat:.6}&long=120.581&description=report+{n}"
    );
    let answer = e2e::http::request(
        api,
        "POST",
        "/open311/v2/requests.json",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(answer.status, 201, "{}", answer.text());
    answer.status
}

/// Reports the hub holds (Open311's public list: every report, merged into a case or not).
async fn report_count(hub: &RunningHub) -> usize {
    let (status, list) =
        hub_support::http_json(hub.api, "GET", "/open311/v2/requests.json", None, None).await;
    assert_eq!(status, 200, "{list}");
    list.as_array().map_or(0, Vec::len)
}

async fn case_count(hub: &RunningHub) -> usize {
    let (status, cases) = hub.call("GET", "/api/v1/cases", OPERATOR.0, None).await;
    assert_eq!(status, 200, "{cases}");
    cases["cases"].as_array().map_or(0, Vec::len)
}

/// Puts every file of the backup back where the MANIFEST says it came from.
fn restore(backup: &Path) {
    let manifest = std::fs::read_to_string(backup.join("MANIFEST")).unwrap();
    for line in manifest.lines().filter(|l| !l.starts_with('#')) {
        let mut cols = line.split('\t');
        let (rel, _bytes, original) = (
            cols.next().unwrap(),
            cols.next().unwrap(),
            PathBuf::from(cols.next().unwrap()),
        );
        std::fs::create_dir_all(original.parent().unwrap()).unwrap();
        std::fs::copy(backup.join(rel), &original).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_backed_up_while_serving_comes_back_from_the_copy() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hub");
    let extra = format!(
        "[open311]\nposts_per_min_per_key = 100000\nposts_per_min_per_address = 100000\n\
         [[open311.clients]]\nname = \"app\"\napi_key_sha256 = \"{}\"\n",
        hub::api::hash_token(APP_KEY)
    );
    let clock = hub::api::system_clock();
    let hub = RunningHub::start_with(&data, &[OPERATOR], &extra, clock.clone()).await;
    let api = hub.api;
    for n in 0..5 {
        assert_eq!(
            tokio::task::spawn_blocking(move || report(api, n))
                .await
                .unwrap(),
            201
        );
    }
    assert!(case_count(&hub).await >= 1);
    let before = report_count(&hub).await;
    assert_eq!(before, 5);

    // Reports keep arriving until the copy is made.
    let copying = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let going = std::sync::Arc::clone(&copying);
    let writer = tokio::task::spawn_blocking(move || {
        let mut n = 5;
        while going.load(std::sync::atomic::Ordering::Relaxed) {
            assert_eq!(report(api, n), 201);
            n += 1;
        }
        (n - 5) as usize
    });
    let to = dir.path().join("backup");
    let config_path = hub.config_path.clone();
    let (target, lines) = (
        to.clone(),
        std::sync::Arc::new(std::sync::Mutex::new(Vec::new())),
    );
    let said = std::sync::Arc::clone(&lines);
    let report = tokio::task::spawn_blocking(move || {
        let text = std::fs::read_to_string(&config_path).unwrap();
        let config = hub::config::HubConfig::from_toml_str(&text).unwrap();
        hub::backup::backup(&config, &config_path, &target, &mut |l| {
            said.lock().unwrap().push(l.to_owned());
        })
    })
    .await
    .unwrap()
    .unwrap();
    copying.store(false, std::sync::atomic::Ordering::Relaxed);
    let written = writer.await.unwrap();
    let after = report_count(&hub).await;
    assert_eq!(after, before + written);
    hub.stop().await;
    let names: Vec<String> = report
        .files
        .iter()
        .map(|f| f.to.display().to_string())
        .collect();
    for expected in [
        "data/registry.db",
        "data/ingest.db",
        "database/hub.db",
        "data/ca.key",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} not in {names:?}"
        );
    }
    assert!(
        lines.lock().unwrap().iter().any(|l| l.contains("checked")),
        "progress names each checked copy: {:?}",
        lines.lock().unwrap()
    );
    // a second backup into the same folder is refused, not mixed in
    let text = std::fs::read_to_string(to.join("config/hub-test.toml")).unwrap();
    let config = hub::config::HubConfig::from_toml_str(&text).unwrap();
    let again = hub::backup::backup(&config, Path::new("x"), &to, &mut |_| {});
    assert!(
        matches!(again, Err(hub::backup::BackupError::NotEmpty(_))),
        "{again:?}"
    );
    // and one into the hub's own data folder (its evidence would copy itself)
    let inside = hub::backup::backup(
        &config,
        Path::new("x"),
        &data.join("evidence/../b"),
        &mut |_| {},
    );
    assert!(
        matches!(inside, Err(hub::backup::BackupError::InsideData { .. })),
        "{inside:?}"
    );
    assert!(
        !data.join("b").exists(),
        "nothing made for a refused backup"
    );

    // The hub's files are lost; put back from the copy, it serves what the copy holds.
    std::fs::remove_dir_all(&data).unwrap();
    restore(&to);
    let hub = RunningHub::start_with(&data, &[OPERATOR], &extra, clock).await;
    let restored = report_count(&hub).await;
    eprintln!(
        "reports: {before} before the backup, {after} after, {restored} restored; {} files",
        report.files.len()
    );
    assert!(
        (before..=after).contains(&restored),
        "restored {restored} reports; {before} before the backup, {after} after"
    );
    assert!(case_count(&hub).await >= 1);
    hub.stop().await;
}

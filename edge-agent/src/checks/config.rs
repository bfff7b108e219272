//! `edge-agent check-config FILE`: every problem of a config file at once — TOML types and
//! unknown keys, the cross-field rules of [`Config::validate`], and the files the config names
//! (model, ONNX Runtime library, certificates and keys, video files) — or the validated config
//! with its secrets redacted.
//!
//! This module reads the files a config names but opens no device, socket or database.

use std::path::Path;

use hardware::camera::CameraSource;

use crate::config::Config;
use confcheck::Problem;

/// What `check-config` found.
pub type ConfigCheck = confcheck::ConfigCheck<Config>;

/// Checks the config file at `path`.
pub fn check_config_file(path: &Path) -> ConfigCheck {
    confcheck::check_file(path, check_config_text)
}

/// Checks config text; `path` names it in the report.
pub fn check_config_text(text: &str, path: &Path) -> ConfigCheck {
    let mut check = confcheck::parse_text::<Config>(text, path);
    if let Some(config) = &check.config {
        let (rules, files) = (config.validate(), referenced_files(config));
        check.problems.extend(rules);
        check.problems.extend(files);
    }
    check
}

/// Problems with the files a parsed config names.
fn referenced_files(config: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut need = |key: &str, path: &Path, what: &str| {
        if let Some(message) = file_problem(path, what) {
            problems.push(Problem {
                line: None,
                key: key.to_owned(),
                message,
            });
        }
    };
    if config.store.data_dir.exists() && !config.store.data_dir.is_dir() {
        need("store.data_dir", &config.store.data_dir, "a folder");
    }
    if let Some(lib) = &config.detector.ort_library_path {
        need("detector.ort_library_path", lib, "the ONNX Runtime library");
    }
    if let Some(tls) = &config.mqtt.tls {
        need("mqtt.tls.ca_path", &tls.ca_path, "a PEM certificate");
        if let Some(p) = &tls.cert_path {
            need("mqtt.tls.cert_path", p, "a PEM certificate");
        }
        if let Some(p) = &tls.key_path {
            need("mqtt.tls.key_path", p, "a PEM private key");
        }
    }
    if let Some(p) = &config.mqtt.password_path {
        need("mqtt.password_path", p, "a file holding the password");
    }
    if let Some(up) = &config.uplink {
        need(
            "uplink.ca_path",
            &up.ca_path,
            "the hub CA (PEM), from `edge-agent enroll`",
        );
        need(
            "uplink.cert_path",
            &up.cert_path,
            "the box certificate (PEM), from `edge-agent enroll`",
        );
        need(
            "uplink.key_path",
            &up.key_path,
            "the box key (PEM), from `edge-agent enroll`",
        );
    }
    for (i, cam) in config.cameras.iter().enumerate() {
        match &cam.source {
            CameraSource::File { path } => {
                need(&format!("cameras[{i}].source.path"), path, "a video file")
            }
            CameraSource::V4l2 { device } => need(
                &format!("cameras[{i}].source.device"),
                device,
                "a V4L2 device node",
            ),
            CameraSource::Rtsp {
                credentials_path: Some(path),
                ..
            } => need(
                &format!("cameras[{i}].source.credentials_path"),
                path,
                "the camera's `user:password` file",
            ),
            _ => {}
        }
    }
    if !config.cameras.is_empty() {
        match models::zoo::resolve(&config.detector.model) {
            Ok(manifest) if !manifest.model_path().is_file() => problems.push(Problem {
                line: None,
                key: "detector.model".to_owned(),
                message: format!(
                    "the model file `{}` does not exist",
                    manifest.model_path().display()
                ),
            }),
            Ok(_) => {}
            Err(e) => problems.push(Problem {
                line: None,
                key: "detector.model".to_owned(),
                message: format!(
                    "expected a zoo name or a manifest file: {}",
                    crate::telemetry::chain(&e)
                ),
            }),
        }
    }
    problems
}

/// Why `path` is not a readable `what`, if it is not.
fn file_problem(path: &Path, what: &str) -> Option<String> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(format!(
            "`{}` does not exist (expected {what})",
            path.display()
        )),
        Err(e) => Some(format!(
            "`{}` cannot be read: {e} (expected {what})",
            path.display()
        )),
        Ok(m) if what == "a folder" => {
            (!m.is_dir()).then(|| format!("`{}` is not a folder", path.display()))
        }
        Ok(m) if m.is_dir() => Some(format!(
            "`{}` is a folder (expected {what})",
            path.display()
        )),
        Ok(_) => match std::fs::File::open(path) {
            Ok(_) => None,
            Err(e) => Some(format!(
                "`{}` cannot be read: {e} (expected {what})",
                path.display()
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_different_mistakes_are_all_reported() {
        let text = r#"
[site]
lat = 39.9
lon = 116.4
[store]
quota_bytes = "lots"
colour = "blue"
max_batch = 8
queue_capacity = 4
[events.evidence]
jpeg_quality = 0
[uplink]
hub_addr = "hub:4433"
ca_path = "/nonexistent/ca.pem"
cert_path = "/nonexistent/box.pem"
key_path = "/nonexistent/box.key"
"#;
        let check = check_config_text(text, Path::new("t.toml"));
        let keys: Vec<&str> = check.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "store.quota_bytes",
                "store.colour",
                "store.max_batch",
                "events.evidence.jpeg_quality",
                "uplink.ca_path",
                "uplink.cert_path",
                "uplink.key_path",
            ],
            "{}",
            check.render()
        );
        assert_eq!(check.problems[0].line, Some(6));
        assert!(!check.is_valid());
    }

    #[test]
    fn the_example_config_prints_with_camera_credentials_redacted() {
        let text = include_str!("../../config/example.toml");
        let check = check_config_text(text, Path::new("example.toml"));
        let out = check.render();
        // The example's uplink files and data folder do not exist here; nothing else is wrong.
        assert!(
            check.problems.iter().all(|p| p.key.starts_with("uplink.")),
            "{out}"
        );
        let without_uplink = text.split("[uplink]").next().unwrap_or_default();
        let check = check_config_text(without_uplink, Path::new("example.toml"));
        assert!(check.is_valid(), "{}", check.render());
        let out = check.render();
        assert!(out.contains("rtsp://<redacted>@192.168.1.64"), "{out}");
        assert!(!out.contains("viewer:secret"), "{out}");
    }
}

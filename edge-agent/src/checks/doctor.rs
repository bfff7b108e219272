//! `edge-agent doctor [--config FILE]`: is this box healthy? Checks, in order: the config, the
//! clock, ONNX Runtime, the model (load and one test inference), each camera (reachable and
//! decoding, with its frame rate, within a short bound), the MQTT broker, the hub (enrolled,
//! certificate validity, reachable and its round-trip time over QUIC), and disk space against
//! the store's quota. Each check gives a status, a detail and what to do about a failure.
//!
//! Every check is bounded in time and independent: a failing one never stops the others. The
//! doctor reads the box; it never writes the store or the config, and it does not run the agent.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use models::{Detector, RgbView, SessionConfig};
use protocol::Timestamp;

use super::config::check_config_file;
use crate::camera::probe::{ProbeSpec, probe};
use crate::config::Config;

/// How long each kind of check may take.
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    /// Per camera. Default 5 s.
    pub camera_timeout: Duration,
    /// The broker's answer. Default 3 s.
    pub broker_timeout: Duration,
    /// The hub's handshake. Default 5 s.
    pub hub_timeout: Duration,
}

impl Default for DoctorOptions {
    fn default() -> Self {
        DoctorOptions {
            camera_timeout: Duration::from_secs(5),
            broker_timeout: Duration::from_secs(3),
            hub_timeout: Duration::from_secs(5),
        }
    }
}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Fine.
    Ok,
    /// Works, but needs attention soon.
    Warn,
    /// Broken: the box is not healthy.
    Fail,
    /// Not applicable (not configured) or not possible (an earlier check failed).
    Skip,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        }
    }
}

/// One line of the doctor's table.
#[derive(Debug, Clone)]
pub struct Check {
    /// What was checked, e.g. `camera gate-north`.
    pub name: String,
    /// The outcome.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do about it (empty when nothing is to be done).
    pub action: String,
}

/// Every check's outcome.
#[derive(Debug, Clone, Default)]
pub struct DoctorReport {
    /// In the order they ran.
    pub checks: Vec<Check>,
}

impl DoctorReport {
    /// True when no check failed.
    pub fn healthy(&self) -> bool {
        self.checks.iter().all(|c| c.status != Status::Fail)
    }

    /// The check named `name`.
    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// The table a technician reads, then a one-line verdict.
    pub fn render(&self) -> String {
        let w = |f: fn(&Check) -> usize, title: &str| {
            self.checks
                .iter()
                .map(f)
                .max()
                .unwrap_or(0)
                .max(title.len())
        };
        let name_w = w(|c| c.name.chars().count(), "check");
        let detail_w = w(|c| c.detail.chars().count(), "detail").min(70);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<name_w$}  {:<6}  {:<detail_w$}  what to do",
            "check", "status", "detail"
        );
        for c in &self.checks {
            let _ = writeln!(
                out,
                "{:<name_w$}  {:<6}  {:<detail_w$}  {}",
                c.name,
                c.status.as_str(),
                c.detail,
                c.action
            );
        }
        let failed = self
            .checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .count();
        let warned = self
            .checks
            .iter()
            .filter(|c| c.status == Status::Warn)
            .count();
        if failed == 0 {
            let _ = writeln!(out, "healthy ({warned} warning(s))");
        } else {
            let _ = writeln!(
                out,
                "NOT healthy: {failed} check(s) failed, {warned} warning(s)"
            );
        }
        out
    }

    fn push(
        &mut self,
        name: impl Into<String>,
        status: Status,
        detail: impl Into<String>,
        action: impl Into<String>,
    ) {
        self.checks.push(Check {
            name: name.into(),
            status,
            detail: detail.into(),
            action: action.into(),
        });
    }
}

/// Runs every check for the config at `config_path`.
pub async fn run_doctor(config_path: &Path, options: &DoctorOptions) -> DoctorReport {
    let mut report = DoctorReport::default();
    let path = config_path.to_owned();
    let check = match tokio::task::spawn_blocking(move || check_config_file(&path)).await {
        Ok(c) => c,
        Err(e) => {
            report.push("config", Status::Fail, format!("check failed: {e}"), "");
            return report;
        }
    };
    let config = match (&check.config, check.problems.first()) {
        (Some(config), None) => {
            report.push(
                "config",
                Status::Ok,
                format!("{} is valid", config_path.display()),
                "",
            );
            config.clone()
        }
        (_, first) => {
            let detail = format!(
                "{} problem(s){}",
                check.problems.len(),
                first.map(|p| format!(", first: {p}")).unwrap_or_default()
            );
            report.push(
                "config",
                Status::Fail,
                detail,
                format!(
                    "run `edge-agent check-config {}` and fix every line",
                    config_path.display()
                ),
            );
            match &check.config {
                // Parsed, with problems: the other checks still tell something.
                Some(config) => config.clone(),
                None => {
                    report.push(
                        "other checks",
                        Status::Skip,
                        "the config cannot be read",
                        "fix the config first",
                    );
                    return report;
                }
            }
        }
    };
    check_clock(&config, &mut report);
    check_detector_and_cameras(&config, options, &mut report).await;
    check_broker(&config, options, &mut report).await;
    check_hub(&config, options, &mut report).await;
    check_disk(&config, &mut report);
    report
}

fn check_clock(config: &Config, report: &mut DoctorReport) {
    let now = crate::clock::now();
    let year = civil_from_days(now.as_unix_millis().div_euclid(86_400_000)).0;
    let not_before = config
        .uplink
        .as_ref()
        .and_then(|u| crate::uplink::cert_validity(&u.cert_path))
        .map(|(nb, _)| nb);
    let text = time_text(now);
    if !(2024..2100).contains(&year) {
        report.push(
            "clock",
            Status::Fail,
            format!("the clock says {text}"),
            "set the time (enable NTP: `timedatectl set-ntp true`)",
        );
    } else if let Some(nb) = not_before.filter(|nb| now < *nb) {
        report.push(
            "clock",
            Status::Fail,
            format!(
                "the clock says {text}, before the box certificate's start {}",
                time_text(nb)
            ),
            "set the time (enable NTP): TLS to the hub fails until then",
        );
    } else {
        report.push("clock", Status::Ok, format!("{text} (UTC)"), "");
    }
}

async fn check_detector_and_cameras(
    config: &Config,
    options: &DoctorOptions,
    report: &mut DoctorReport,
) {
    if config.cameras.is_empty() {
        report.push("onnx runtime", Status::Skip, "no cameras configured", "");
        return;
    }
    let cfg = config.clone();
    let loaded = tokio::task::spawn_blocking(move || load_and_test_model(&cfg)).await;
    match loaded {
        Ok(Ok((lib, model, elapsed))) => {
            report.push("onnx runtime", Status::Ok, lib.display().to_string(), "");
            report.push(
                "model",
                Status::Ok,
                format!("{model}: test inference {} ms", elapsed.as_millis()),
                "",
            );
        }
        Ok(Err((stage, detail))) => {
            let action = if stage == "onnx runtime" {
                "install ONNX Runtime 1.32 (the package ships it) or set detector.ort_library_path"
            } else {
                "check detector.model (a zoo name or a manifest); `edge-agent detect --model NAME IMAGE` shows the error"
            };
            report.push(stage, Status::Fail, detail, action);
            if stage == "onnx runtime" {
                report.push("model", Status::Skip, "ONNX Runtime did not load", "");
            }
        }
        Err(e) => report.push("model", Status::Fail, format!("check failed: {e}"), ""),
    }
    for cam in &config.cameras {
        let spec = ProbeSpec {
            source: cam.source.clone(),
            codec: cam.codec,
            width: cam.frame_width_px,
            height: cam.frame_height_px,
            max_fps: cam.detect_fps,
            board: config.board,
            timeout: options.camera_timeout,
            // Enough frames for a rate, bounded so a healthy camera answers in about a second.
            max_frames: u64::from(cam.detect_fps.get()) + 1,
        };
        let name = format!("camera {}", cam.id);
        match tokio::task::spawn_blocking(move || probe(&spec)).await {
            Ok(Ok(p)) => {
                let fps = p.fps.map_or_else(|| "one frame".to_owned(), |f| format!("{f:.1} fps"));
                report.push(
                    name,
                    Status::Ok,
                    format!(
                        "decoding {}x{}, {fps} (limit detect_fps {}), first frame after {} ms",
                        p.last.width(),
                        p.last.height(),
                        cam.detect_fps,
                        p.first_frame_after.as_millis()
                    ),
                    "",
                );
            }
            Ok(Err(e)) => report.push(
                name,
                Status::Fail,
                crate::telemetry::chain(&e),
                "check the camera's power and network, the URL and credentials; `edge-agent test-camera URL` tries it alone",
            ),
            Err(e) => report.push(name, Status::Fail, format!("check failed: {e}"), ""),
        }
    }
}

/// Loads ONNX Runtime and the model, runs one inference on a grey frame.
fn load_and_test_model(
    config: &Config,
) -> Result<(PathBuf, String, Duration), (&'static str, String)> {
    let lib = models::Runtime::locate(config.detector.ort_library_path.as_deref())
        .map_err(|e| ("onnx runtime", crate::telemetry::chain(&e)))?;
    let runtime =
        models::Runtime::load(&lib).map_err(|e| ("onnx runtime", crate::telemetry::chain(&e)))?;
    let manifest = models::zoo::resolve(&config.detector.model)
        .map_err(|e| ("model", crate::telemetry::chain(&e)))?;
    let name = format!("{}@{}", manifest.name, manifest.version);
    let mut detector = Detector::from_manifest(&runtime, manifest, &SessionConfig::default())
        .map_err(|e| ("model", crate::telemetry::chain(&e)))?;
    let (w, h) = (640u32, 360u32);
    let pixels = vec![128u8; (w * h * 3) as usize];
    let frame = RgbView::new(w, h, &pixels).map_err(|e| ("model", e.to_string()))?;
    let started = Instant::now();
    detector
        .detect(frame)
        .map_err(|e| ("model", crate::telemetry::chain(&e)))?;
    Ok((runtime_path(&lib), name, started.elapsed()))
}

fn runtime_path(lib: &Path) -> PathBuf {
    std::fs::canonicalize(lib).unwrap_or_else(|_| lib.to_owned())
}

async fn check_broker(config: &Config, options: &DoctorOptions, report: &mut DoctorReport) {
    if config.sensors.is_empty() {
        report.push("mqtt broker", Status::Skip, "no sensors configured", "");
        return;
    }
    let m = &config.mqtt;
    let target = format!("{}:{}", m.host, m.port);
    let started = Instant::now();
    let tcp = tokio::time::timeout(
        options.broker_timeout,
        tokio::net::TcpStream::connect(&target),
    )
    .await;
    let action = "start the broker (`systemctl start mosquitto`) or fix [mqtt] host and port";
    match tcp {
        Err(_) => report.push(
            "mqtt broker",
            Status::Fail,
            format!(
                "{target}: no answer within {} ms",
                options.broker_timeout.as_millis()
            ),
            action,
        ),
        Ok(Err(e)) => report.push(
            "mqtt broker",
            Status::Fail,
            format!("cannot connect to {target}: {e}"),
            action,
        ),
        Ok(Ok(stream)) => {
            drop(stream);
            if m.tls.is_some() || m.username.is_some() {
                report.push(
                    "mqtt broker",
                    Status::Ok,
                    format!(
                        "{target} accepts connections (TLS/credentials are checked by the agent)"
                    ),
                    "",
                );
                return;
            }
            match mqtt_connack(&m.host, m.port, options.broker_timeout).await {
                Ok(()) => report.push(
                    "mqtt broker",
                    Status::Ok,
                    format!(
                        "{target} answered MQTT CONNECT in {} ms",
                        started.elapsed().as_millis()
                    ),
                    "",
                ),
                Err(detail) => report.push(
                    "mqtt broker",
                    Status::Fail,
                    format!("{target}: {detail}"),
                    "check that the port is an MQTT broker and that it allows this client",
                ),
            }
        }
    }
}

/// An MQTT CONNECT answered by CONNACK within `timeout`.
async fn mqtt_connack(host: &str, port: u16, timeout: Duration) -> Result<(), String> {
    let mut options = rumqttc::MqttOptions::new(
        format!("edge-agent-doctor-{}", std::process::id()),
        host,
        port,
    );
    options.set_clean_session(true);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 4);
    let result = tokio::time::timeout(timeout, async {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .unwrap_or_else(|_| Err(format!("no CONNACK within {} ms", timeout.as_millis())));
    let _ = client.try_disconnect();
    result
}

async fn check_hub(config: &Config, options: &DoctorOptions, report: &mut DoctorReport) {
    let Some(up) = &config.uplink else {
        report.push(
            "hub",
            Status::Skip,
            "no [uplink]: events stay on the box",
            "",
        );
        return;
    };
    let enroll =
        "enroll: `edge-agent enroll --hub HOST:PORT --token TOKEN` (token from `hub box add`)";
    let missing: Vec<String> = [&up.ca_path, &up.cert_path, &up.key_path]
        .iter()
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    if !missing.is_empty() {
        report.push(
            "hub enrollment",
            Status::Fail,
            format!("not enrolled: missing {}", missing.join(", ")),
            enroll,
        );
        report.push("hub", Status::Skip, "not enrolled", "");
        return;
    }
    let now = crate::clock::now();
    match crate::uplink::cert_validity(&up.cert_path) {
        None => report.push("hub enrollment", Status::Fail, format!("{} does not parse as a certificate", up.cert_path.display()), enroll),
        Some((_, not_after)) if not_after <= now => report.push(
            "hub enrollment",
            Status::Fail,
            format!("certificate expired at {}", time_text(not_after)),
            "the box renews while connected; an expired one needs a new token: `hub box add`, then enroll again",
        ),
        Some((_, not_after)) if not_after.as_unix_millis() - now.as_unix_millis() < 3 * 86_400_000 => report.push(
            "hub enrollment",
            Status::Warn,
            format!("certificate expires at {}", time_text(not_after)),
            "let the agent reach the hub: it renews over the session",
        ),
        Some((_, not_after)) => report.push("hub enrollment", Status::Ok, format!("enrolled; certificate valid until {}", time_text(not_after)), ""),
    }
    // Every hub process the box may use: a dead one is where the box fails over to the next.
    for hub in up.hub_addrs() {
        match crate::uplink::probe_hub(up, &hub, options.hub_timeout).await {
            Ok(p) => report.push(
                "hub",
                Status::Ok,
                format!("{hub} reachable at {}: handshake {} ms, rtt {} ms", p.addr, p.handshake.as_millis(), p.rtt.as_millis()),
                "",
            ),
            Err(e) => report.push(
                "hub",
                Status::Fail,
                format!("{hub}: {}", crate::telemetry::chain(&e)),
                "check uplink.hub_addr and uplink.hubs, the network and firewall (UDP), and that the hub runs and this box is not revoked",
            ),
        }
    }
}

fn check_disk(config: &Config, report: &mut DoctorReport) {
    let data = &config.store.data_dir;
    let Some(existing) = data.ancestors().find(|p| p.exists()) else {
        report.push(
            "disk",
            Status::Fail,
            format!("no part of {} exists", data.display()),
            "",
        );
        return;
    };
    let Some(free) = crate::store::disk_free_bytes(existing) else {
        report.push(
            "disk",
            Status::Warn,
            format!("free space of {} unknown", existing.display()),
            "",
        );
        return;
    };
    let used = dir_bytes(data);
    let quota = config.store.quota_bytes;
    let detail = format!(
        "{} free on {}; store uses {} of its {} quota",
        bytes_text(free),
        existing.display(),
        bytes_text(used),
        bytes_text(quota)
    );
    if free < 64 * 1024 * 1024 {
        report.push(
            "disk",
            Status::Fail,
            detail,
            "free space on the data disk: the store cannot commit events",
        );
    } else if free.saturating_add(used) < quota {
        report.push(
            "disk",
            Status::Warn,
            detail,
            "the disk fills before the quota: lower store.quota_bytes or free space",
        );
    } else {
        report.push("disk", Status::Ok, detail, "");
    }
}

/// Bytes of the files under `dir` (0 when it does not exist).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

fn bytes_text(b: u64) -> String {
    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
    if b as f64 >= GIB {
        format!("{:.1} GiB", b as f64 / GIB)
    } else {
        format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
    }
}

/// `YYYY-MM-DD HH:MM` (UTC).
fn time_text(t: Timestamp) -> String {
    let secs = t.as_unix_millis().div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_render_in_utc() {
        assert_eq!(
            time_text(Timestamp::from_unix_millis(0)),
            "1970-01-01 00:00"
        );
        assert_eq!(
            time_text(Timestamp::from_unix_millis(1_790_323_200_000)),
            "2026-09-25 08:00"
        );
    }
}

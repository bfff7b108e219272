//! `edge-agent`: the command line of the Gridsense edge box.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use edge_agent::detect::{self, DetectOptions};
use models::ExecutionProviderKind;
use protocol::Catalog;

/// Gridsense edge agent: watches cameras and sensors on a community edge box, raises events and
/// syncs them to the hub.
#[derive(Debug, Parser)]
#[command(name = "edge-agent", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent: sensors (and, as they are configured, cameras) raise events into the
    /// durable store, until SIGINT or SIGTERM.
    Run {
        /// The configuration file.
        #[arg(long, default_value = "/etc/edge-agent/edge-agent.toml")]
        config: PathBuf,
    },
    /// Check a config file: every problem at once (with its key path and what is expected),
    /// or the validated config with secrets redacted. Exit status 1 when it has problems.
    CheckConfig {
        /// The configuration file.
        file: PathBuf,
    },
    /// Is this box healthy? Checks the config, clock, ONNX Runtime and model, each camera, the
    /// MQTT broker, the hub and the disk; prints a table with what to do. Exit status 1 when a
    /// check failed.
    Doctor {
        /// The configuration file.
        #[arg(long, default_value = "/etc/edge-agent/edge-agent.toml")]
        config: PathBuf,
        /// Longest wait for each camera's frames.
        #[arg(long, default_value_t = 5)]
        camera_timeout_secs: u64,
    },
    /// Try one camera alone: connect, grab frames, run the detector on the last one, write it
    /// annotated, print the frame rate and the detections.
    TestCamera {
        /// `rtsp://user:pass@host/path`, or a video file.
        url: String,
        /// Zoo name (coco-ssd) or manifest .toml.
        #[arg(long, default_value = "coco-ssd")]
        model: String,
        /// A zone to draw and test against: normalised points `x,y x,y x,y ...`.
        #[arg(long)]
        zone: Option<String>,
        /// Where to write the annotated snapshot (.jpg or .png).
        #[arg(long)]
        out: PathBuf,
        /// Frames to grab.
        #[arg(long, default_value_t = 10)]
        frames: u64,
        /// Longest wait for frames.
        #[arg(long, default_value_t = 10)]
        timeout_secs: u64,
        /// Frame width delivered by the pipeline.
        #[arg(long, default_value = "640")]
        width: std::num::NonZeroU32,
        /// Frame height delivered by the pipeline.
        #[arg(long, default_value = "360")]
        height: std::num::NonZeroU32,
        /// The stream's codec: h264 or h265.
        #[arg(long, default_value = "h264", value_parser = parse_codec)]
        codec: hardware::board::Codec,
        /// ONNX Runtime library (default: ORT_DYLIB_PATH, then beside the binary).
        #[arg(long)]
        ort_lib: Option<PathBuf>,
        /// A file holding the camera's `user:password` (first line), instead of putting them in
        /// the URL (and so in the shell's history).
        #[arg(long)]
        credentials_file: Option<PathBuf>,
    },
    /// Print a sensor topic's messages decoded live by a payload profile, until --count
    /// messages or --seconds.
    TestSensor {
        /// The topic filter, e.g. `zigbee2mqtt/door_301` or `tele/+/SENSOR`.
        topic: String,
        /// `zigbee2mqtt`, `tasmota`, or an inline table such as
        /// `{ kind = "generic-json", topic = "city/{device}/level", quantity = "water_level", value_pointer = "/level" }`.
        /// Default: from the topic's prefix.
        #[arg(long)]
        profile: Option<String>,
        /// The broker's host.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// The broker's port.
        #[arg(long, default_value_t = 1883)]
        port: u16,
        /// Stop after this many messages.
        #[arg(long, default_value_t = u64::MAX)]
        count: u64,
        /// Stop after this many seconds.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Enroll this box with a hub once: makes the key here, sends a CSR with the one-time
    /// token from `hub box add`, installs the certificate, the hub CA and the key.
    Enroll {
        /// The hub's ingest, HOST:PORT.
        #[arg(long)]
        hub: String,
        /// The token `hub box add` printed (it pins the hub's CA); `-` (the default) reads it
        /// from standard input, so that it does not stay in the shell's history.
        #[arg(long, default_value = "-")]
        token: String,
        /// Where to write ca.pem, box.pem and box.key (the `[uplink]` defaults).
        #[arg(long, default_value = "/var/lib/edge-agent/tls")]
        tls_dir: PathBuf,
        /// The name in the hub's certificate.
        #[arg(long, default_value = "gridsense-hub")]
        server_name: String,
    },
    /// Make the box page's admin password file: reads the password from standard input and
    /// writes its argon2id hash (for `local_api.admin_password_path`).
    AdminPassword {
        /// The file to write (readable by its owner and group only).
        #[arg(long)]
        out: PathBuf,
    },
    /// Show the running agent's state (cameras, sensors, uplink, store, recent events) from its
    /// local API (`[local_api]`).
    Status {
        /// Print the JSON as the API serves it.
        #[arg(long)]
        json: bool,
        /// The local API's address.
        #[arg(long, default_value = edge_agent::status::cli::DEFAULT_URL)]
        url: String,
    },
    /// List the event categories (codes and keys to use in rules).
    Categories {
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run a detection model on images and print what it finds.
    Detect {
        /// Zoo name (coco-ssd), manifest .toml, or an Ultralytics .onnx export.
        #[arg(long)]
        model: String,
        /// Images (PNG or JPEG).
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// Print JSON lines {"image","label","score","box":[x1,y1,x2,y2]}.
        #[arg(long)]
        json: bool,
        /// Write the image with boxes and labels drawn (numbered for several images).
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
    /// Inspect ONNX models.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ModelCommand {
    /// Print a model's inputs, outputs and metadata, and a suggested manifest for Ultralytics exports.
    Inspect {
        /// The .onnx file.
        file: PathBuf,
        /// ONNX Runtime library (default: ORT_DYLIB_PATH, then beside the binary).
        #[arg(long)]
        ort_lib: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
struct RuntimeArgs {
    /// ONNX Runtime library (default: ORT_DYLIB_PATH, then beside the binary).
    #[arg(long)]
    ort_lib: Option<PathBuf>,
    /// Intra-op threads for inference.
    #[arg(long, default_value = "1")]
    threads: NonZeroUsize,
    /// Execution provider to try first: cpu, cuda, tensorrt, openvino (falls back to cpu).
    #[arg(long, default_value = "cpu")]
    execution_provider: ExecutionProviderKind,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    edge_agent::telemetry::init();
    match cli.command {
        Command::Run { config } => run_agent(&config),
        Command::Categories { json } => print_categories(json),
        Command::Status { json, url } => print_status(&url, json),
        Command::CheckConfig { file } => check_config(&file),
        Command::Doctor {
            config,
            camera_timeout_secs,
        } => doctor(&config, camera_timeout_secs),
        Command::TestSensor {
            topic,
            profile,
            host,
            port,
            count,
            seconds,
        } => test_sensor(topic, profile.as_deref(), host, port, count, seconds),
        Command::TestCamera {
            url,
            model,
            zone,
            out,
            frames,
            timeout_secs,
            width,
            height,
            codec,
            ort_lib,
            credentials_file,
        } => {
            let zone = match zone.as_deref().map(edge_agent::checks::camera::parse_zone) {
                None => None,
                Some(Ok(z)) => Some(z),
                Some(Err(e)) => {
                    eprintln!("error: --zone: {e}");
                    return ExitCode::from(2);
                }
            };
            let opts = edge_agent::checks::camera::TestCameraOptions {
                url,
                model,
                zone,
                out,
                timeout: std::time::Duration::from_secs(timeout_secs),
                frames,
                width,
                height,
                codec,
                board: hardware::board::Board::default(),
                ort_lib,
                credentials_path: credentials_file,
            };
            match edge_agent::checks::camera::run_test_camera(&opts, &mut std::io::stdout().lock())
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {}", edge_agent::telemetry::chain(&e));
                    ExitCode::FAILURE
                }
            }
        }
        Command::Enroll {
            hub,
            token,
            tls_dir,
            server_name,
        } => match secret_arg(token) {
            Ok(token) => enroll(&hub, &token, &tls_dir, &server_name),
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::AdminPassword { out } => match admin_password(&out) {
            Ok(()) => {
                println!(
                    "wrote {}: set local_api.admin_password_path to it",
                    out.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Detect {
            model,
            images,
            json,
            out,
            runtime,
        } => {
            let opts = DetectOptions {
                model,
                images,
                json,
                out,
                ort_lib: runtime.ort_lib,
                threads: runtime.threads,
                execution_provider: runtime.execution_provider,
            };
            report(detect::run_detect(&opts, &mut std::io::stdout().lock()))
        }
        Command::Model {
            command: ModelCommand::Inspect { file, ort_lib },
        } => report(detect::run_inspect(
            &file,
            ort_lib.as_deref(),
            &mut std::io::stdout().lock(),
        )),
    }
}

fn check_config(path: &std::path::Path) -> ExitCode {
    let check = edge_agent::checks::config::check_config_file(path);
    print!("{}", check.render());
    if check.is_valid() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn test_sensor(
    topic: String,
    profile: Option<&str>,
    host: String,
    port: u16,
    count: u64,
    seconds: u64,
) -> ExitCode {
    use edge_agent::checks::sensor;
    let result = sensor::parse_profile(profile, &topic).and_then(|profile| {
        let opts = sensor::TestSensorOptions {
            topic,
            profile,
            host,
            port,
            count,
            duration: std::time::Duration::from_secs(seconds),
        };
        let runtime = tokio::runtime::Runtime::new()?;
        runtime.block_on(sensor::run_test_sensor(&opts, &mut std::io::stdout()))
    });
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", edge_agent::telemetry::chain(&e));
            ExitCode::FAILURE
        }
    }
}

fn parse_codec(s: &str) -> Result<hardware::board::Codec, String> {
    match s {
        "h264" => Ok(hardware::board::Codec::H264),
        "h265" => Ok(hardware::board::Codec::H265),
        _ => Err(format!("`{s}` is not h264 or h265")),
    }
}

fn doctor(config: &std::path::Path, camera_timeout_secs: u64) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: failed to start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let options = edge_agent::checks::doctor::DoctorOptions {
        camera_timeout: std::time::Duration::from_secs(camera_timeout_secs),
        ..Default::default()
    };
    let report = runtime.block_on(edge_agent::checks::doctor::run_doctor(config, &options));
    print!("{}", report.render());
    if report.healthy() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn report(result: Result<(), detect::DetectCommandError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", edge_agent::telemetry::chain(&e));
            ExitCode::FAILURE
        }
    }
}

fn run_agent(path: &std::path::Path) -> ExitCode {
    let config = match edge_agent::config::Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {}", edge_agent::telemetry::chain(&e));
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: failed to start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let cancel = tokio_util::sync::CancellationToken::new();
        let signals = cancel.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown requested");
            signals.cancel();
        });
        match edge_agent::agent::run(config, cancel).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %edge_agent::telemetry::chain(&e), "agent failed to start");
                ExitCode::FAILURE
            }
        }
    })
}

/// SIGINT or SIGTERM, whichever comes first.
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn print_status(url: &str, json: bool) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: failed to start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(edge_agent::status::cli::fetch(url)) {
        Ok((report, raw)) => {
            if json {
                println!("{raw}");
            } else {
                print!("{}", edge_agent::status::cli::render_table(&report));
            }
            // The exit status says whether anything is dead, for scripts and monitoring.
            if report.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            }
        }
        Err(e) => {
            eprintln!("error: {}", edge_agent::telemetry::chain(&e));
            ExitCode::FAILURE
        }
    }
}

fn print_categories(json: bool) -> ExitCode {
    let catalog = Catalog::embedded();
    if !json {
        print!("{}", catalog.to_table());
        return ExitCode::SUCCESS;
    }
    for c in catalog.categories() {
        match serde_json::to_string(c) {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("error: failed to encode category {}: {e}", c.code);
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

fn enroll(hub: &str, token: &str, tls_dir: &std::path::Path, server_name: &str) -> ExitCode {
    let paths = edge_agent::uplink::IdentityPaths::in_dir(tls_dir);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: failed to start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(edge_agent::enroll::enroll(hub, server_name, token, &paths)) {
        Ok(done) => {
            println!(
                "enrolled as `{}`; certificate valid until {} (renewed automatically)\n\
                 identity written to {}\n\
                 add to the agent config:\n[uplink]\nhub_addr = \"{hub}\"\nserver_name = \"{server_name}\"\n\
                 ca_path = \"{}\"\ncert_path = \"{}\"\nkey_path = \"{}\"",
                done.box_id,
                done.not_after,
                tls_dir.display(),
                paths.ca_path.display(),
                paths.cert_path.display(),
                paths.key_path.display(),
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", edge_agent::telemetry::chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// A secret given as an argument, or `-`: read from the first line of standard input.
fn secret_arg(value: String) -> anyhow::Result<String> {
    if value != "-" {
        return Ok(value);
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let line = line.trim().to_owned();
    anyhow::ensure!(!line.is_empty(), "nothing on standard input");
    Ok(line)
}

/// Hashes the password on standard input into `out` (0640).
fn admin_password(out: &std::path::Path) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let password = secret_arg("-".into())?;
    anyhow::ensure!(
        password.chars().count() >= 8,
        "the password must have at least 8 characters"
    );
    let hash = edge_agent::status::password::hash(&password)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o640)
        .open(out)?;
    writeln!(file, "{hash}")?;
    file.sync_all()?;
    Ok(())
}

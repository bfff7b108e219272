//! `gridsense-sim`: the simulators of `hardware::sim` as a command, for `make demo` (scripts/demo)
//! and its test.
//!
//! ```text
//! gridsense-sim camera --clip FILE                      serve an H.264 MP4 over RTSP
//! gridsense-sim camera --still FILE [--fps N] [--size WxH]   serve a PNG as a video
//! gridsense-sim sensors --port PORT [--host HOST] [--wait-for TOPIC] [--repeat-secs N]
//! ```
//!
//! `camera` prints the URL (`rtsp://127.0.0.1:<free port>/cam`) as its only stdout line and
//! serves until it is killed. `sensors` plays the demo street scenario (a drain filling up, a
//! kitchen leak, ...) against the broker, after the retained `online` of `--wait-for` (the
//! agent's availability topic) when given, then again every `--repeat-secs` (after resetting the
//! devices) until killed. Both end on SIGTERM/SIGINT by the default action: they hold nothing
//! that needs flushing.
//!
//! A simulator for demos and tests: production code must not use it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use hardware::sim::publisher::Publisher;
use hardware::sim::rtsp::{TestCamera, TestMedia};
use hardware::sim::{Scenario, TasmotaDevice, Zigbee2MqttDevice};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

type Error = Box<dyn std::error::Error + Send + Sync>;

const USAGE: &str = "usage:
  gridsense-sim camera --clip FILE
  gridsense-sim camera --still FILE [--fps N] [--size WxH]
  gridsense-sim sensors --port PORT [--host HOST] [--wait-for TOPIC] [--repeat-secs N]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("camera") => camera(&args[1..]),
        Some("sensors") => sensors(&args[1..]),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => Err(format!("expected a command\n{USAGE}").into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut text = e.to_string();
            let mut source = e.source();
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("gridsense-sim: error: {text}");
            ExitCode::FAILURE
        }
    }
}

/// `--name value` pairs, each name allowed once.
struct Flags(Vec<(String, String)>);

impl Flags {
    fn parse(args: &[String], known: &[&str]) -> Result<Flags, Error> {
        let mut out = Vec::new();
        let mut it = args.iter();
        while let Some(name) = it.next() {
            let Some(key) = name.strip_prefix("--").filter(|k| known.contains(k)) else {
                return Err(format!("unknown argument `{name}`\n{USAGE}").into());
            };
            let Some(value) = it.next() else {
                return Err(format!("`{name}` needs a value").into());
            };
            out.push((key.to_owned(), value.clone()));
        }
        Ok(Flags(out))
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn number<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T, Error> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("`--{key} {v}`: expected a number").into()),
        }
    }
}

fn camera(args: &[String]) -> Result<(), Error> {
    let flags = Flags::parse(args, &["clip", "still", "fps", "size"])?;
    let existing = |p: &str| -> Result<PathBuf, Error> {
        let path = PathBuf::from(p);
        if path.is_file() {
            Ok(path)
        } else {
            Err(format!("media file `{p}` does not exist (run scripts/setup)").into())
        }
    };
    let media = match (flags.get("clip"), flags.get("still")) {
        (Some(clip), None) => TestMedia::Clip {
            path: existing(clip)?,
        },
        (None, Some(still)) => {
            let (w, h) = flags
                .get("size")
                .unwrap_or("740x500")
                .split_once('x')
                .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
                .ok_or("`--size`: expected WIDTHxHEIGHT, e.g. 740x500")?;
            TestMedia::Still {
                path: existing(still)?,
                fps: flags.number("fps", 25)?,
                width_px: w,
                height_px: h,
            }
        }
        _ => return Err(format!("give exactly one of --clip and --still\n{USAGE}").into()),
    };
    let server = TestCamera::start(media)?;
    println!("{}", server.url());
    // Serve until killed; the server runs on its own thread.
    loop {
        std::thread::park();
    }
}

fn sensors(args: &[String]) -> Result<(), Error> {
    let flags = Flags::parse(args, &["host", "port", "wait-for", "repeat-secs"])?;
    let host = flags.get("host").unwrap_or("127.0.0.1").to_owned();
    let port: u16 = flags
        .get("port")
        .ok_or("`--port` (the MQTT broker's) is required")?
        .parse()
        .map_err(|_| "`--port`: expected a port number")?;
    let repeat = Duration::from_secs(flags.number("repeat-secs", 60u64)?.max(15));
    if let Some(topic) = flags.get("wait-for") {
        wait_for_online(&host, port, topic, Duration::from_secs(120))?;
    }
    let publisher = Publisher::connect("gridsense-sim", &host, port);
    let mut round = 0u64;
    loop {
        let started = Instant::now();
        round += 1;
        eprintln!("gridsense-sim: playing the demo street scenario (round {round})");
        publisher.play(&Scenario::demo_street())?;
        // Back to normal before the next round, so that the rules fire again.
        std::thread::sleep(Duration::from_secs(5));
        publisher.play(&reset())?;
        if let Some(rest) = repeat.checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
    }
}

/// The demo street back to normal: the drain empties, the leak dries.
fn reset() -> Scenario {
    let drain = TasmotaDevice::new("drain_7");
    let leak = Zigbee2MqttDevice::new("kitchen_leak_301");
    Scenario::default()
        .at(Duration::ZERO, leak.water_leak(false))
        .at(Duration::ZERO, drain.distance(90.0))
}

/// Waits for the retained `online` on `topic` (an agent announces it once it has subscribed).
fn wait_for_online(host: &str, port: u16, topic: &str, timeout: Duration) -> Result<(), Error> {
    let mut options = MqttOptions::new("gridsense-sim-watch", host, port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut connection) = Client::new(options, 16);
    client.subscribe(topic, QoS::AtLeastOnce)?;
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .ok_or_else(|| format!("no `online` on `{topic}` within {timeout:?}"))?;
        match connection.recv_timeout(left) {
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) if p.payload.as_ref() == b"online" => {
                let _ = client.disconnect();
                return Ok(());
            }
            Ok(Ok(_)) => {}
            // The broker may not be up yet: retry until the deadline.
            Ok(Err(_)) => std::thread::sleep(Duration::from_millis(200)),
            Err(_) => return Err(format!("no `online` on `{topic}` within {timeout:?}").into()),
        }
    }
}

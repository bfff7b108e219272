//! Camera scaling: N concurrent 720p30 H.264 RTSP streams from the test camera, detection at
//! 5 fps with COCO-SSD, with and without motion gating. For each N it prints frames out of the
//! pipelines, frames superseded in the detector queue (dropped: the detector was busy), the
//! queue at the end, the detector/rules time per frame, the process CPU split (decode and
//! pre-processing are the rest of the process CPU beyond inference and rules), and the
//! capture-to-observation-ready latency p50/p99 of detected frames.
//!
//! The clip is `sample.mp4` scaled to 1280x720 and re-encoded once (x264, scenecut off,
//! key-int 30) into the cache; the RTSP factory is shared so the server does not re-encode.
//!
//! `GRIDSENSE_BENCH_SECS` (default 60) sets the measuring time per run; `GRIDSENSE_BENCH_N`
//! (default "1,2,4,8") the stream counts.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use e2e::media::media;
use edge_agent::agent::Agent;
use edge_agent::config::Config;
use hardware::sim::rtsp::{TestCamera, TestMedia};
use tokio_util::sync::CancellationToken;

fn main() -> anyhow::Result<()> {
    let secs: u64 = env_or("GRIDSENSE_BENCH_SECS", 60);
    let counts: Vec<usize> = std::env::var("GRIDSENSE_BENCH_N")
        .unwrap_or_else(|_| "1,2,4,8".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let clip = clip_720p()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!("\nCamera scaling: 720p30 H.264 over RTSP, COCO-SSD at 5 fps, {secs} s per run\n");
    println!(
        "| N | gating | frames | superseded | drop % | queue end | detect ms/frame | rules ms/frame | CPU % (all) | CPU % detect | latency p50 ms | p99 ms |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &n in &counts {
        for gating in [false, true] {
            let r = runtime.block_on(run_once(&clip, n, gating, Duration::from_secs(secs)))?;
            println!(
                "| {n} | {} | {} | {} | {:.2} | {} | {:.1} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} |",
                if gating { "on" } else { "off" },
                r.frames,
                r.superseded,
                100.0 * r.superseded as f64 / r.frames.max(1) as f64,
                r.queue_end,
                r.detect_ms,
                r.rules_ms,
                r.cpu_percent,
                r.detect_cpu_percent,
                r.p50_ms,
                r.p99_ms,
            );
        }
    }
    Ok(())
}

struct RunResult {
    frames: u64,
    superseded: u64,
    queue_end: usize,
    detect_ms: f64,
    rules_ms: f64,
    cpu_percent: f64,
    detect_cpu_percent: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn run_once(
    clip: &Path,
    n: usize,
    gating: bool,
    measure: Duration,
) -> anyhow::Result<RunResult> {
    let server = TestCamera::start(TestMedia::Clip {
        path: clip.to_owned(),
    })?;
    let dir = tempfile::tempdir()?;
    let mut config = format!(
        "[site]\nlat = 31.3\nlon = 120.6\n[store]\ndata_dir = \"{}\"\n",
        dir.path().display()
    );
    for i in 0..n {
        config.push_str(&format!(
            "[[cameras]]\nid = \"cam-{i}\"\ndetect_fps = 5\nsource = {{ kind = \"rtsp\", url = \"{}\" }}\n[cameras.motion]\nenabled = {gating}\n",
            server.url()
        ));
    }
    let config = Config::from_toml_str(&config, "bench")?;
    let agent = Agent::start(config, CancellationToken::new()).await?;
    let stats = agent.camera_stats().context("cameras configured")?;
    // Warm-up: every stream delivering.
    let deadline = Instant::now() + Duration::from_secs(30);
    while stats.snapshot().iter().any(|s| s.frames == 0) {
        ensure!(Instant::now() < deadline, "streams did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = stats.snapshot();
    let timing_before = stats.timing();
    let cpu_before = process_cpu()?;
    let started = Instant::now();
    tokio::time::sleep(measure).await;
    let wall = started.elapsed();
    let cpu = process_cpu()? - cpu_before;
    let after = stats.snapshot();
    let timing = stats.timing();
    let queue_end = stats.queue_len();
    agent.shutdown().await;
    drop(server);

    let sum = |f: fn(&edge_agent::camera::CameraStatus) -> u64| -> u64 {
        after.iter().map(f).sum::<u64>() - before.iter().map(f).sum::<u64>()
    };
    let frames = sum(|s| s.frames);
    let superseded = sum(|s| s.dropped_superseded);
    let detected = (timing.frames - timing_before.frames).max(1);
    let detect = timing.detect - timing_before.detect;
    let rules = timing.rules - timing_before.rules;
    let mut lat: Vec<Duration> = timing.frame_latencies.iter().copied().collect();
    lat.sort();
    let pct = |p: f64| -> f64 {
        lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Ok(RunResult {
        frames,
        superseded,
        queue_end,
        detect_ms: detect.as_secs_f64() * 1000.0 / detected as f64,
        rules_ms: rules.as_secs_f64() * 1000.0 / detected as f64,
        cpu_percent: 100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
        detect_cpu_percent: 100.0 * detect.as_secs_f64() / wall.as_secs_f64(),
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
    })
}

/// User + system CPU time of this process (includes the test camera's encoder-free serving).
fn process_cpu() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after the command name.
    let ticks: u64 = fields
        .get(11)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    Ok(Duration::from_secs_f64(ticks as f64 / 100.0))
}

/// sample.mp4 scaled to 720p and re-encoded once; cached beside the media.
fn clip_720p() -> anyhow::Result<PathBuf> {
    let sample = media("sample.mp4")?;
    let out = sample.with_file_name("sample_720p30.mp4");
    if out.is_file() {
        return Ok(out);
    }
    let partial = out.with_extension("partial.mp4");
    let status = Command::new("gst-launch-1.0")
        .args(["-q", "filesrc"])
        .arg(format!("location={}", sample.display()))
        .args([
            "!",
            "qtdemux",
            "!",
            "h264parse",
            "!",
            "avdec_h264",
            "!",
            "videoscale",
            "!",
            "video/x-raw,width=1280,height=720",
            "!",
            "videorate",
            "!",
            "video/x-raw,framerate=30/1",
            "!",
            "videoconvert",
            "!",
            "x264enc",
            "speed-preset=veryfast",
            "key-int-max=30",
            "option-string=scenecut=0",
            "!",
            "video/x-h264,profile=main",
            "!",
            "mp4mux",
            "!",
            "filesink",
        ])
        .arg(format!("location={}", partial.display()))
        .status()
        .context("failed to run gst-launch-1.0")?;
    ensure!(status.success(), "encoding the 720p clip failed");
    std::fs::rename(&partial, &out)?;
    Ok(out)
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

//! `make bench` for the `models` crate: the same model on the same 1280x720 frames through
//! (a) bare `session.run` on a prepared tensor, (b) the full path (frame buffer -> pre-process ->
//! run -> decode -> NMS) and (c) Python ONNX Runtime when it is importable, at 1 and 2 intra-op
//! threads (spinning off); medians in ms and the ratio b/a; plus pre-processing alone.
//!
//! Frames: eight frames around t = 5 s of `sample.mp4`, decoded and scaled to 1280x720 RGB by
//! `gst-launch-1.0` into the cache at start; if GStreamer fails, the test photos stretched to
//! 1280x720. Python: `$GRIDSENSE_CACHE/pyenv/bin/python` if present, else `python3`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark tool: a panic is its failure report

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use models::manifest::ModelManifest;
use models::preprocess::TensorData;
use models::{Detector, Preprocessor, RgbView, Runtime, SessionConfig};
use ort::session::Session;
use ort::value::TensorRef;

const WIDTH: u32 = 1280;
const HEIGHT: u32 = 720;

struct Frame {
    data: Vec<u8>,
}

/// A prepared input tensor, owned.
enum Tensor {
    U8(Vec<u8>),
    F32(Vec<f32>),
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let cache = cache_dir();
    let runtime = Runtime::load(&library_path(&cache)).expect("onnx runtime (run `make setup`)");
    let (frames, source) = match video_frames(&cache) {
        Some(f) => (f, "8 frames of sample.mp4 at 1280x720"),
        None => (photo_frames(&cache), "4 test photos stretched to 1280x720"),
    };
    println!(
        "models benchmark: {source}; library {}",
        runtime.library().display()
    );
    println!();

    let coco = models::zoo::resolve("coco-ssd").unwrap();
    let pre_ms = preprocess_median(&coco, &frames);
    println!(
        "pre-processing alone, 1280x720 -> {}x{} (stretch, uint8 NHWC): median {pre_ms:.3} ms",
        coco.input.width, coco.input.height
    );
    let python = python_with_onnxruntime(&cache);
    if python.is_none() {
        println!(
            "python onnxruntime: not importable, column (c) skipped (pip install onnxruntime==1.32.0 numpy)"
        );
    }
    println!();
    println!(
        "| model    | threads | (a) session.run ms | (b) full path ms | b/a  | (c) python ort ms |"
    );
    println!(
        "|----------|---------|--------------------|------------------|------|-------------------|"
    );
    let mut models = vec![(coco, 120)];
    let yolo_path = cache.join("models/yolov12n/yolov12n.onnx");
    if yolo_path.is_file() {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/yolov12n.toml"),
        )
        .unwrap();
        let m = ModelManifest::from_toml(
            &text,
            Path::new("yolov12n.toml"),
            cache.join("models/yolov12n"),
        )
        .unwrap();
        models.push((m, 30));
    }
    for (manifest, iterations) in &models {
        for threads in [1usize, 2] {
            let row = measure(
                &runtime,
                manifest,
                &frames,
                threads,
                *iterations,
                python.as_deref(),
                &cache,
            );
            println!(
                "| {:<8} | {threads:>7} | {:>18.2} | {:>16.2} | {:>4.2} | {:>17} |",
                manifest.name,
                row.bare,
                row.full,
                row.full / row.bare,
                row.python
                    .map_or("skipped".to_owned(), |p| format!("{p:.2}")),
            );
        }
    }
}

struct Row {
    bare: f64,
    full: f64,
    python: Option<f64>,
}

fn measure(
    runtime: &Runtime,
    manifest: &ModelManifest,
    frames: &[Frame],
    threads: usize,
    iterations: usize,
    python: Option<&Path>,
    cache: &Path,
) -> Row {
    let config = SessionConfig {
        intra_threads: std::num::NonZeroUsize::new(threads).unwrap(),
        ..SessionConfig::default()
    };
    let mut detector = Detector::from_manifest(runtime, manifest.clone(), &config).unwrap();
    let mut session = Session::builder(runtime.environment())
        .unwrap()
        .with_intra_threads(threads)
        .unwrap()
        .with_intra_op_spinning(false)
        .unwrap()
        .with_inter_op_spinning(false)
        .unwrap()
        .commit_from_file(manifest.model_path())
        .unwrap();
    let mut pre = Preprocessor::new(&manifest.input);
    let mut shape = [0usize; 4];
    let tensors: Vec<Tensor> = frames
        .iter()
        .map(|f| {
            let p = pre
                .prepare(RgbView::new(WIDTH, HEIGHT, &f.data).unwrap())
                .unwrap();
            shape = p.shape;
            match p.data {
                TensorData::U8(d) => Tensor::U8(d.to_vec()),
                TensorData::F32(d) => Tensor::F32(d.to_vec()),
            }
        })
        .collect();
    let input = manifest.input.name.as_str();
    let mut bare_run = |t: &Tensor| {
        let outputs = match t {
            Tensor::U8(d) => session
                .run(ort::inputs![input => TensorRef::from_array_view((shape, &d[..])).unwrap()]),
            Tensor::F32(d) => session
                .run(ort::inputs![input => TensorRef::from_array_view((shape, &d[..])).unwrap()]),
        };
        drop(outputs.unwrap());
    };
    // Warm up both paths, then alternate them so that any drift in machine load hits both alike.
    for (f, t) in frames.iter().zip(&tensors).take(3) {
        bare_run(t);
        detector
            .detect(RgbView::new(WIDTH, HEIGHT, &f.data).unwrap())
            .unwrap();
    }
    let (mut bare, mut full) = (Vec::new(), Vec::new());
    for i in 0..iterations {
        let k = i % frames.len();
        let start = Instant::now();
        bare_run(&tensors[k]);
        bare.push(ms(start));
        let start = Instant::now();
        let found = detector
            .detect(RgbView::new(WIDTH, HEIGHT, &frames[k].data).unwrap())
            .unwrap();
        full.push(ms(start));
        std::hint::black_box(found);
    }
    let python = python
        .and_then(|py| python_median(py, cache, manifest, &tensors, shape, threads, iterations));
    Row {
        bare: median(bare),
        full: median(full),
        python,
    }
}

fn preprocess_median(manifest: &ModelManifest, frames: &[Frame]) -> f64 {
    let mut pre = Preprocessor::new(&manifest.input);
    let mut times = Vec::new();
    for i in 0..400 {
        let f = &frames[i % frames.len()];
        let start = Instant::now();
        let p = pre
            .prepare(RgbView::new(WIDTH, HEIGHT, &f.data).unwrap())
            .unwrap();
        std::hint::black_box(&p.data);
        if i >= 20 {
            times.push(ms(start));
        }
    }
    median(times)
}

/// Runs the same prepared tensors through Python ONNX Runtime; `None` (with a note) on failure.
fn python_median(
    python: &Path,
    cache: &Path,
    manifest: &ModelManifest,
    tensors: &[Tensor],
    shape: [usize; 4],
    threads: usize,
    iterations: usize,
) -> Option<f64> {
    let dir = cache.join("scratch/models-bench");
    std::fs::create_dir_all(&dir).ok()?;
    let (dtype, mut bytes) = match &tensors[0] {
        Tensor::U8(_) => ("uint8", Vec::new()),
        Tensor::F32(_) => ("float32", Vec::new()),
    };
    for t in tensors {
        match t {
            Tensor::U8(d) => bytes.extend_from_slice(d),
            Tensor::F32(d) => bytes.extend(d.iter().flat_map(|v| v.to_le_bytes())),
        }
    }
    let file = dir.join("tensors.bin");
    std::fs::write(&file, &bytes).ok()?;
    let script = r#"
import sys, time, statistics
import numpy as np, onnxruntime as ort
model, name, data, dtype, shape, threads, n = sys.argv[1:8]
shape = [int(s) for s in shape.split(",")]
x = np.fromfile(data, dtype=dtype).reshape([-1] + shape[1:])
o = ort.SessionOptions()
o.intra_op_num_threads = int(threads)
o.add_session_config_entry("session.intra_op.allow_spinning", "0")
o.add_session_config_entry("session.inter_op.allow_spinning", "0")
s = ort.InferenceSession(model, o, providers=["CPUExecutionProvider"])
for i in range(3):
    s.run(None, {name: x[i % len(x)][None]})
t = []
for i in range(int(n)):
    a = time.perf_counter(); s.run(None, {name: x[i % len(x)][None]}); t.append((time.perf_counter() - a) * 1000)
print(statistics.median(t))
"#;
    let shape = shape.map(|d| d.to_string()).join(",");
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(manifest.model_path())
        .arg(&manifest.input.name)
        .arg(&file)
        .arg(dtype)
        .arg(shape)
        .arg(threads.to_string())
        .arg(iterations.to_string())
        .output()
        .ok()?;
    let _ = std::fs::remove_file(&file);
    if !out.status.success() {
        eprintln!(
            "python onnxruntime failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn python_with_onnxruntime(cache: &Path) -> Option<PathBuf> {
    let venv = cache.join("pyenv/bin/python");
    let candidates = [venv, PathBuf::from("python3")];
    candidates.into_iter().find(|py| {
        Command::new(py)
            .args(["-c", "import onnxruntime, numpy"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Eight 1280x720 RGB frames around t = 5 s of `sample.mp4`, decoded by GStreamer.
fn video_frames(cache: &Path) -> Option<Vec<Frame>> {
    let video = cache.join("media/sample.mp4");
    let dir = cache.join("scratch/models-bench-frames");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).ok()?;
    let status = Command::new("gst-launch-1.0")
        .arg("-q")
        .arg("filesrc")
        .arg(format!("location={}", video.display()))
        .args([
            "!",
            "decodebin",
            "!",
            "videoconvert",
            "!",
            "videoscale",
            "!",
        ])
        .arg(format!(
            "video/x-raw,format=RGB,width={WIDTH},height={HEIGHT}"
        ))
        .args(["!", "identity", "eos-after=158", "!", "multifilesink"])
        .arg(format!("location={}/f%03d.rgb", dir.display()))
        .arg("max-files=8")
        .status()
        .ok()?;
    if !status.success() {
        return None;
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    let frames: Vec<Frame> = files
        .iter()
        .filter_map(|f| std::fs::read(f).ok())
        .filter(|d| d.len() == (WIDTH * HEIGHT * 3) as usize)
        .map(|data| Frame { data })
        .collect();
    (!frames.is_empty()).then_some(frames)
}

fn photo_frames(cache: &Path) -> Vec<Frame> {
    let mut resizer = Resizer::new();
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    [
        "astronaut.png",
        "motorcycle_left.png",
        "coffee.png",
        "chelsea.png",
    ]
    .iter()
    .map(|name| {
        let img = models::image_file::read_rgb(&cache.join("media").join(name)).unwrap();
        let src = ImageRef::new(img.width(), img.height(), img.as_raw(), PixelType::U8x3).unwrap();
        let mut dst = Image::new(WIDTH, HEIGHT, PixelType::U8x3);
        resizer.resize(&src, &mut dst, &options).unwrap();
        Frame {
            data: dst.into_vec(),
        }
    })
    .collect()
}

fn cache_dir() -> PathBuf {
    std::env::var_os("GRIDSENSE_CACHE")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/gridsense"))
}

fn library_path(cache: &Path) -> PathBuf {
    std::env::var_os("ORT_DYLIB_PATH")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| cache.join("onnxruntime/libonnxruntime.so.1.32.0"))
}

fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

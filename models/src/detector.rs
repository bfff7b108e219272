//! The detector: one model's ONNX Runtime session with its manifest, pre-processor and decoder.
//! Frame in, [`Detection`]s out.
//!
//! [`Detector::from_manifest`] loads the model, registers the execution provider (falling back to
//! CPU with one log line saying which runs), and checks the manifest against the model's real
//! inputs and outputs, so a misconfiguration fails at load and not on the first frame.
//! [`Detector::detect`] is blocking (callers run it on a blocking thread). This module must not
//! decode image files, read cameras or log per frame above `trace`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ort::session::builder::SessionBuilder;
use ort::session::{Session, SessionOutputs};
use ort::value::{TensorElementType, TensorRef, ValueType};

use crate::decode::{self, ClassRule, Detection, RawOutput, ShapeError};
use crate::labels::{COCO91, coco80, parse_ultralytics_names};
use crate::manifest::{InputType, Labels, Layout, ModelManifest, NamedLabels, OutputSpec};
use crate::preprocess::{PreprocessError, Preprocessor, RgbView, TensorData};
use crate::runtime::{ExecutionProviderKind, Runtime, SessionConfig};

/// A loaded model ready to detect.
#[derive(Debug)]
pub struct Detector {
    manifest: ModelManifest,
    session: Session,
    pre: Preprocessor,
    /// Indexed by the decoder's class index; `None` = no label or not allowed.
    classes: Vec<Option<ClassRule>>,
    execution_provider: ExecutionProviderKind,
    times: DetectTimes,
}

/// Time spent in each step of [`Detector::detect`] since the detector was built (wall time on
/// the calling thread), for benchmarks and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DetectTimes {
    /// Frames that went through all three steps.
    pub frames: u64,
    /// Pre-processing: resize, layout and normalisation into the input tensor.
    pub prepare: Duration,
    /// ONNX Runtime's inference.
    pub infer: Duration,
    /// Output decoding and NMS.
    pub decode: Duration,
}

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// ONNX Runtime refused the model file (missing, corrupt, unsupported operator).
    #[error("failed to load model `{path}`")]
    Model {
        /// The `.onnx` file.
        path: PathBuf,
        /// ONNX Runtime's error.
        #[source]
        source: ort::Error,
    },
    /// Creating or configuring the session failed.
    #[error("failed to configure the session for model `{path}`")]
    Session {
        /// The `.onnx` file.
        path: PathBuf,
        /// ONNX Runtime's error.
        #[source]
        source: ort::Error,
    },
    /// The manifest disagrees with the model.
    #[error("the manifest does not match model `{path}`: {mismatch}")]
    Mismatch {
        /// The `.onnx` file.
        path: PathBuf,
        /// What disagrees.
        mismatch: Mismatch,
    },
}

/// How a manifest disagrees with its model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Mismatch {
    /// The model has no input of the manifest's name.
    #[error("the model has no input `{name}` (inputs: {available:?})")]
    NoSuchInput {
        /// Name in the manifest.
        name: String,
        /// The model's inputs.
        available: Vec<String>,
    },
    /// The model has no output of the manifest's name.
    #[error("the model has no output `{name}` (outputs: {available:?})")]
    NoSuchOutput {
        /// Name in the manifest.
        name: String,
        /// The model's outputs.
        available: Vec<String>,
    },
    /// The input element type differs.
    #[error("input `{name}` is {found}, the manifest says {expected}")]
    InputType {
        /// Input name.
        name: String,
        /// From the manifest.
        expected: String,
        /// From the model.
        found: String,
    },
    /// The input shape differs (size, layout or rank); -1 is a free dimension.
    #[error("input `{name}` has shape {found:?}, the manifest implies {expected:?}")]
    InputShape {
        /// Input name.
        name: String,
        /// From the manifest's layout and size.
        expected: Vec<i64>,
        /// From the model.
        found: Vec<i64>,
    },
    /// An output's shape cannot be read by the manifest's decoder.
    #[error("output `{name}` has shape {found:?}, the `{decoder}` decoder expects {expected}")]
    OutputShape {
        /// Output name.
        name: String,
        /// The decoder.
        decoder: &'static str,
        /// What it expects.
        expected: String,
        /// From the model.
        found: Vec<i64>,
    },
    /// The number of labels differs from the model's class count.
    #[error("the manifest has {labels} labels, the model has {classes} classes")]
    LabelCount {
        /// Labels in the manifest.
        labels: usize,
        /// Classes in the model.
        classes: usize,
    },
    /// `labels = "onnx-metadata"` but the model has no usable `names` metadata.
    #[error("the model has no usable `names` metadata for `labels = \"onnx-metadata\"`")]
    NoLabelMetadata,
    /// `thresholds.allow` or `thresholds.per_class` names a label the model does not have.
    #[error("`thresholds.{key}` names `{label}`, which is not a label of this model")]
    UnknownLabel {
        /// `allow` or `per_class`.
        key: &'static str,
        /// The label.
        label: String,
    },
}

/// Why one frame could not be run.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// The frame buffer is malformed.
    #[error("failed to prepare frame")]
    Preprocess(#[from] PreprocessError),
    /// ONNX Runtime failed while running the model.
    #[error("inference failed for model `{model}`")]
    Run {
        /// `name@version`.
        model: String,
        /// ONNX Runtime's error.
        #[source]
        source: ort::Error,
    },
    /// An output had a shape the decoder cannot read.
    #[error("unexpected output of model `{model}`")]
    Output {
        /// `name@version`.
        model: String,
        /// The shape problem.
        #[source]
        source: ShapeError,
    },
}

impl Detector {
    /// Loads the manifest's model into `runtime` with `config` and checks that they agree.
    ///
    /// # Errors
    /// [`LoadError::Model`] for a missing or corrupt `.onnx`, [`LoadError::Session`] when ONNX
    /// Runtime refuses an option, [`LoadError::Mismatch`] when the manifest disagrees with the model.
    pub fn from_manifest(
        runtime: &Runtime,
        manifest: ModelManifest,
        config: &SessionConfig,
    ) -> Result<Self, LoadError> {
        let path = manifest.model_path();
        let session_err = |source: ort::Error| LoadError::Session {
            path: path.clone(),
            source,
        };
        let mut builder = Session::builder(runtime.environment())
            .and_then(|b| {
                b.with_intra_threads(config.intra_threads.get())
                    .map_err(strip)
            })
            .and_then(|b| b.with_intra_op_spinning(config.spinning).map_err(strip))
            .and_then(|b| b.with_inter_op_spinning(config.spinning).map_err(strip))
            .map_err(session_err)?;
        let execution_provider =
            register_execution_provider(&mut builder, config.execution_provider);
        let session = builder
            .commit_from_file(&path)
            .map_err(|source| LoadError::Model {
                path: path.clone(),
                source,
            })?;
        tracing::info!(
            model = %manifest.id(),
            execution_provider = %execution_provider,
            intra_threads = config.intra_threads.get(),
            "model loaded"
        );
        let mismatch = |mismatch| LoadError::Mismatch {
            path: path.clone(),
            mismatch,
        };
        check_input(&session, &manifest).map_err(mismatch)?;
        let model_classes = check_outputs(&session, &manifest).map_err(mismatch)?;
        let labels = resolve_labels(&session, &manifest).map_err(mismatch)?;
        if let (
            Some(classes),
            Labels::List(_) | Labels::Named(NamedLabels::OnnxMetadata | NamedLabels::Coco80),
        ) = (model_classes, &manifest.labels)
            && classes != labels.len()
        {
            return Err(mismatch(Mismatch::LabelCount {
                labels: labels.len(),
                classes,
            }));
        }
        let classes = class_rules(&manifest, labels).map_err(mismatch)?;
        Ok(Self {
            pre: Preprocessor::new(&manifest.input),
            manifest,
            session,
            classes,
            execution_provider,
            times: DetectTimes::default(),
        })
    }

    /// Runs the model on one frame: pre-process, inference, decode, NMS. Boxes are in the frame's
    /// pixels, best first.
    ///
    /// # Errors
    /// [`DetectError::Preprocess`], [`DetectError::Run`] or [`DetectError::Output`].
    pub fn detect(&mut self, frame: RgbView<'_>) -> Result<Vec<Detection>, DetectError> {
        let started = Instant::now();
        let prepared = self.pre.prepare(frame)?;
        let prepared_at = Instant::now();
        let transform = prepared.transform;
        let input = self.manifest.input.name.as_str();
        let run_err = |source| DetectError::Run {
            model: self.manifest.id(),
            source,
        };
        let outputs = match prepared.data {
            TensorData::U8(data) => {
                let tensor = TensorRef::from_array_view((prepared.shape, data)).map_err(run_err)?;
                self.session.run(ort::inputs![input => tensor])
            }
            TensorData::F32(data) => {
                let tensor = TensorRef::from_array_view((prepared.shape, data)).map_err(run_err)?;
                self.session.run(ort::inputs![input => tensor])
            }
        }
        .map_err(|source| DetectError::Run {
            model: self.manifest.id(),
            source,
        })?;
        let inferred_at = Instant::now();
        let model_id = self.manifest.id();
        let out_err = |source| DetectError::Output {
            model: model_id.clone(),
            source,
        };
        let candidates = match &self.manifest.output {
            OutputSpec::SsdTf { scores, boxes } => {
                let offset =
                    usize::from(self.manifest.labels == Labels::Named(NamedLabels::Coco91));
                let size = (
                    self.manifest.input.width.get() as f32,
                    self.manifest.input.height.get() as f32,
                );
                decode::ssd_tf(
                    raw(&outputs, scores, &model_id)?,
                    raw(&outputs, boxes, &model_id)?,
                    offset,
                    &self.classes,
                    size,
                    &transform,
                )
                .map_err(out_err)?
            }
            OutputSpec::YoloUltralytics { output } => decode::yolo_ultralytics(
                raw(&outputs, output, &model_id)?,
                &self.classes,
                &transform,
            )
            .map_err(out_err)?,
            OutputSpec::Yolov5 { output } => {
                decode::yolov5(raw(&outputs, output, &model_id)?, &self.classes, &transform)
                    .map_err(out_err)?
            }
        };
        let t = &self.manifest.thresholds;
        let kept = decode::nms(candidates, t.iou, t.max_detections);
        tracing::trace!(model = %model_id, count = kept.len(), "frame detected");
        let done = Instant::now();
        self.times.frames += 1;
        self.times.prepare += prepared_at - started;
        self.times.infer += inferred_at - prepared_at;
        self.times.decode += done - inferred_at;
        Ok(kept
            .into_iter()
            .map(|c| Detection {
                class: c.class,
                label: self.classes[c.class]
                    .as_ref()
                    .map(|r| r.label.clone())
                    .unwrap_or_default(),
                score: c.score,
                bbox: c.bbox,
            })
            .collect())
    }

    /// Time spent per step of [`Detector::detect`] so far.
    pub fn times(&self) -> DetectTimes {
        self.times
    }

    /// The manifest the detector was built from.
    pub fn manifest(&self) -> &ModelManifest {
        &self.manifest
    }

    /// The execution provider that actually runs the model.
    pub fn execution_provider(&self) -> ExecutionProviderKind {
        self.execution_provider
    }

    /// Labels the detector can report (after the allow-list).
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.classes.iter().flatten().map(|r| r.label.as_str())
    }
}

/// One output as a float slice with its shape.
fn raw<'a>(
    outputs: &'a SessionOutputs<'_>,
    name: &'a str,
    model: &str,
) -> Result<RawOutput<'a>, DetectError> {
    let value = outputs.get(name).ok_or_else(|| DetectError::Output {
        model: model.to_owned(),
        source: ShapeError {
            output: name.to_owned(),
            expected: "an output of this name".into(),
            found: Vec::new(),
        },
    })?;
    let (shape, data) = value
        .try_extract_tensor::<f32>()
        .map_err(|source| DetectError::Run {
            model: model.to_owned(),
            source,
        })?;
    Ok(RawOutput { name, shape, data })
}

/// Registers the requested provider; on any failure logs once and stays on CPU.
fn register_execution_provider(
    builder: &mut SessionBuilder,
    kind: ExecutionProviderKind,
) -> ExecutionProviderKind {
    let result = match kind {
        ExecutionProviderKind::Cpu => return ExecutionProviderKind::Cpu,
        ExecutionProviderKind::Cuda => register(builder, ort::ep::CUDA::default()),
        ExecutionProviderKind::Tensorrt => register(builder, ort::ep::TensorRT::default()),
        ExecutionProviderKind::Openvino => register(builder, ort::ep::OpenVINO::default()),
    };
    match result {
        Ok(()) => kind,
        Err(reason) => {
            tracing::warn!(requested = %kind, error = %reason, "execution provider unavailable, falling back to cpu");
            ExecutionProviderKind::Cpu
        }
    }
}

fn register<E: ort::ep::ExecutionProvider>(
    builder: &mut SessionBuilder,
    ep: E,
) -> Result<(), String> {
    match E::is_available() {
        Ok(true) => ep.register(builder).map_err(|e| e.to_string()),
        Ok(false) => Err("not built into this onnx runtime library".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Drops the recovery payload of a builder error.
fn strip<R>(e: ort::Error<R>) -> ort::Error {
    ort::Error::new_with_code(e.code(), e.message())
}

fn tensor_info(ty: &ValueType) -> Option<(TensorElementType, Vec<i64>)> {
    match ty {
        ValueType::Tensor { ty, shape, .. } => Some((*ty, shape.to_vec())),
        _ => None,
    }
}

fn check_input(session: &Session, manifest: &ModelManifest) -> Result<(), Mismatch> {
    let spec = &manifest.input;
    let Some(input) = session.inputs().iter().find(|i| i.name() == spec.name) else {
        return Err(Mismatch::NoSuchInput {
            name: spec.name.clone(),
            available: session
                .inputs()
                .iter()
                .map(|i| i.name().to_owned())
                .collect(),
        });
    };
    let (ty, shape) =
        tensor_info(input.dtype()).unwrap_or((TensorElementType::Undefined, Vec::new()));
    let expected_ty = match spec.dtype {
        InputType::Uint8 => TensorElementType::Uint8,
        InputType::Float32 => TensorElementType::Float32,
    };
    if ty != expected_ty {
        return Err(Mismatch::InputType {
            name: spec.name.clone(),
            expected: format!("{expected_ty:?}"),
            found: format!("{ty:?}"),
        });
    }
    let (w, h) = (i64::from(spec.width.get()), i64::from(spec.height.get()));
    let expected = match spec.layout {
        Layout::Nhwc => vec![1, h, w, 3],
        Layout::Nchw => vec![1, 3, h, w],
    };
    if !dims_agree(&shape, &expected) {
        return Err(Mismatch::InputShape {
            name: spec.name.clone(),
            expected,
            found: shape,
        });
    }
    Ok(())
}

/// Checks output names and ranks; returns the model's class count when the shape fixes it.
fn check_outputs(session: &Session, manifest: &ModelManifest) -> Result<Option<usize>, Mismatch> {
    let find = |name: &str| -> Result<Vec<i64>, Mismatch> {
        session
            .outputs()
            .iter()
            .find(|o| o.name() == name)
            .and_then(|o| tensor_info(o.dtype()))
            .map(|(_, shape)| shape)
            .ok_or_else(|| Mismatch::NoSuchOutput {
                name: name.to_owned(),
                available: session
                    .outputs()
                    .iter()
                    .map(|o| o.name().to_owned())
                    .collect(),
            })
    };
    let bad = |name: &str, decoder, expected: &str, found: Vec<i64>| Mismatch::OutputShape {
        name: name.to_owned(),
        decoder,
        expected: expected.to_owned(),
        found,
    };
    let fixed = |d: i64| usize::try_from(d).ok();
    match &manifest.output {
        OutputSpec::SsdTf { scores, boxes } => {
            let s = find(scores)?;
            if s.len() != 3 {
                return Err(bad(scores, "ssd-tf", "[1, N, C]", s));
            }
            let b = find(boxes)?;
            if b.len() != 4 || !dims_agree(&b[2..], &[1, 4]) {
                return Err(bad(boxes, "ssd-tf", "[1, N, 1, 4]", b));
            }
            Ok(fixed(s[2]))
        }
        OutputSpec::YoloUltralytics { output } => {
            let o = find(output)?;
            if o.len() != 3 || (o[1] >= 0 && o[1] <= 4) {
                return Err(bad(output, "yolo-ultralytics", "[1, 4+C, N]", o));
            }
            Ok(fixed(o[1]).map(|rows| rows - 4))
        }
        OutputSpec::Yolov5 { output } => {
            let o = find(output)?;
            if o.len() != 3 || (o[2] >= 0 && o[2] <= 5) {
                return Err(bad(output, "yolov5", "[1, N, 5+C]", o));
            }
            Ok(fixed(o[2]).map(|cols| cols - 5))
        }
    }
}

/// Label table indexed by class index (`None` for unused ids).
fn resolve_labels(
    session: &Session,
    manifest: &ModelManifest,
) -> Result<Vec<Option<String>>, Mismatch> {
    Ok(match &manifest.labels {
        Labels::List(names) => names.iter().cloned().map(Some).collect(),
        Labels::Named(NamedLabels::Coco91) => COCO91.iter().map(|n| n.map(str::to_owned)).collect(),
        Labels::Named(NamedLabels::Coco80) => coco80().into_iter().map(Some).collect(),
        Labels::Named(NamedLabels::OnnxMetadata) => session
            .metadata()
            .ok()
            .and_then(|m| m.custom("names"))
            .and_then(|text| parse_ultralytics_names(&text))
            .ok_or(Mismatch::NoLabelMetadata)?
            .into_iter()
            .map(Some)
            .collect(),
    })
}

fn class_rules(
    manifest: &ModelManifest,
    labels: Vec<Option<String>>,
) -> Result<Vec<Option<ClassRule>>, Mismatch> {
    let t = &manifest.thresholds;
    let known = |label: &String| labels.iter().flatten().any(|l| l == label);
    if let Some(label) = t.per_class.keys().find(|l| !known(l)) {
        return Err(Mismatch::UnknownLabel {
            key: "per_class",
            label: label.clone(),
        });
    }
    if let Some(label) = t.allow.iter().flatten().find(|l| !known(l)) {
        return Err(Mismatch::UnknownLabel {
            key: "allow",
            label: label.clone(),
        });
    }
    Ok(labels
        .into_iter()
        .map(|label| {
            let label = label?;
            if t.allow
                .as_ref()
                .is_some_and(|allow| !allow.contains(&label))
            {
                return None;
            }
            let min_score = t.per_class.get(&label).copied().unwrap_or(t.score);
            Some(ClassRule { label, min_score })
        })
        .collect())
}

/// Same rank, and every dimension fixed in both is equal (-1 or symbolic is free).
fn dims_agree(found: &[i64], expected: &[i64]) -> bool {
    found.len() == expected.len()
        && found
            .iter()
            .zip(expected)
            .all(|(&f, &e)| f < 0 || e < 0 || f == e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_dimensions_agree_with_any_size() {
        assert!(dims_agree(&[-1, -1, -1, 3], &[1, 300, 300, 3]));
        assert!(!dims_agree(&[1, 3, 640, 640], &[1, 3, 320, 320]));
        assert!(!dims_agree(&[-1, -1, -1, 3], &[1, 3, 300, 300]));
        assert!(!dims_agree(&[1, 3, 640], &[1, 3, 640, 640]));
    }
}

//! `model inspect`: what an `.onnx` file declares (inputs, outputs, metadata) and, for Ultralytics
//! exports, a suggested manifest so that a user's own trained model works by configuration.
//!
//! Main types: [`ModelInfo`], [`TensorInfo`]. This module must not run inference.

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use ort::session::Session;
use ort::value::ValueType;

use crate::detector::LoadError;
use crate::labels::parse_ultralytics_names;
use crate::manifest::{
    ColorOrder, InputSpec, InputType, Labels, Layout, ModelManifest, NamedLabels, OutputSpec,
    Placement, ResizeMode, Thresholds,
};
use crate::runtime::Runtime;

/// What a model file declares.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// The `.onnx` file.
    pub path: PathBuf,
    /// Inputs in order.
    pub inputs: Vec<TensorInfo>,
    /// Outputs in order.
    pub outputs: Vec<TensorInfo>,
    /// Producer name (e.g. `pytorch`, `tf2onnx`).
    pub producer: Option<String>,
    /// Graph name.
    pub graph_name: Option<String>,
    /// Model description.
    pub description: Option<String>,
    /// Model version number.
    pub version: Option<i64>,
    /// Custom metadata (Ultralytics: `names`, `imgsz`, `stride`, `license`, ...).
    pub custom: BTreeMap<String, String>,
}

/// One input or output.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// Name.
    pub name: String,
    /// Element type, e.g. `Float32`, or the kind of a non-tensor value.
    pub element_type: String,
    /// Shape; -1 for free dimensions.
    pub shape: Vec<i64>,
}

/// Reads the declarations of `path` (loads the model, runs nothing).
///
/// # Errors
/// [`LoadError::Model`] when ONNX Runtime refuses the file, [`LoadError::Session`] when the
/// session cannot be created.
pub fn inspect(runtime: &Runtime, path: &Path) -> Result<ModelInfo, LoadError> {
    let session = Session::builder(runtime.environment())
        .map_err(|source| LoadError::Session {
            path: path.to_owned(),
            source,
        })?
        .commit_from_file(path)
        .map_err(|source| LoadError::Model {
            path: path.to_owned(),
            source,
        })?;
    let tensor = |name: &str, ty: &ValueType| match ty {
        ValueType::Tensor { ty, shape, .. } => TensorInfo {
            name: name.to_owned(),
            element_type: format!("{ty:?}"),
            shape: shape.to_vec(),
        },
        other => TensorInfo {
            name: name.to_owned(),
            element_type: format!("{other:?}"),
            shape: Vec::new(),
        },
    };
    let mut info = ModelInfo {
        path: path.to_owned(),
        inputs: session
            .inputs()
            .iter()
            .map(|i| tensor(i.name(), i.dtype()))
            .collect(),
        outputs: session
            .outputs()
            .iter()
            .map(|o| tensor(o.name(), o.dtype()))
            .collect(),
        producer: None,
        graph_name: None,
        description: None,
        version: None,
        custom: BTreeMap::new(),
    };
    if let Ok(meta) = session.metadata() {
        info.producer = meta.producer().filter(|s| !s.is_empty());
        info.graph_name = meta.name().filter(|s| !s.is_empty());
        info.description = meta.description().filter(|s| !s.is_empty());
        // ONNX stores an unset model version as i64::MAX.
        info.version = meta.version().filter(|v| *v != i64::MAX);
        for key in meta.custom_keys().unwrap_or_default() {
            if let Some(value) = meta.custom(&key) {
                info.custom.insert(key, value);
            }
        }
    }
    Ok(info)
}

impl ModelInfo {
    /// A manifest for an Ultralytics detection export (YOLOv5/8/11/12: `names` metadata, one
    /// float NCHW input of fixed size, one `[1,4+C,N]` or `[1,N,5+C]` output), with the model path
    /// relative to the file's directory. `None` for other models.
    pub fn suggested_manifest(&self) -> Option<ModelManifest> {
        let names = parse_ultralytics_names(self.custom.get("names")?)?;
        let classes = i64::try_from(names.len()).ok()?;
        let [input] = self.inputs.as_slice() else {
            return None;
        };
        let [output] = self.outputs.as_slice() else {
            return None;
        };
        if input.element_type != "Float32" {
            return None;
        }
        let (height, width) = match input.shape.as_slice() {
            [_, 3, h, w] => (u32::try_from(*h).ok()?, u32::try_from(*w).ok()?),
            _ => return None,
        };
        let decoder = match output.shape.as_slice() {
            [_, rows, _] if *rows == 4 + classes => OutputSpec::YoloUltralytics {
                output: output.name.clone(),
            },
            [_, _, cols] if *cols == 5 + classes => OutputSpec::Yolov5 {
                output: output.name.clone(),
            },
            _ => return None,
        };
        let stem = self.path.file_stem()?.to_string_lossy().into_owned();
        Some(ModelManifest {
            name: stem,
            version: self
                .custom
                .get("version")
                .cloned()
                .unwrap_or_else(|| "1".into()),
            model: PathBuf::from(self.path.file_name()?),
            license: self.custom.get("license").cloned(),
            input: InputSpec {
                name: input.name.clone(),
                width: NonZeroU32::new(width)?,
                height: NonZeroU32::new(height)?,
                layout: Layout::Nchw,
                dtype: InputType::Float32,
                color: ColorOrder::Rgb,
                resize: ResizeMode::Letterbox {
                    pad: 114,
                    placement: Placement::Center,
                },
                normalize: None,
            },
            output: decoder,
            labels: Labels::Named(NamedLabels::OnnxMetadata),
            thresholds: Thresholds::default(),
            base_dir: self
                .path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        })
    }
}

impl fmt::Display for ModelInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "model: {}", self.path.display())?;
        writeln!(f, "inputs:")?;
        for t in &self.inputs {
            writeln!(f, "  {}: {} {:?}", t.name, t.element_type, t.shape)?;
        }
        writeln!(f, "outputs:")?;
        for t in &self.outputs {
            writeln!(f, "  {}: {} {:?}", t.name, t.element_type, t.shape)?;
        }
        writeln!(f, "metadata:")?;
        let fields = [
            ("producer", &self.producer),
            ("graph", &self.graph_name),
            ("description", &self.description),
        ];
        for (key, value) in fields {
            if let Some(value) = value {
                writeln!(f, "  {key}: {value}")?;
            }
        }
        if let Some(version) = self.version {
            writeln!(f, "  version: {version}")?;
        }
        for (key, value) in &self.custom {
            writeln!(f, "  {key}: {value}")?;
        }
        Ok(())
    }
}

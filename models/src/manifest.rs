//! Model manifests: the TOML file beside an `.onnx` that says how to feed the model and how to read
//! its outputs (input name, size, layout, element type, colour order, normalisation, resize mode,
//! output decoder, class labels, score and NMS thresholds).
//!
//! Main types: [`ModelManifest`], [`InputSpec`], [`OutputSpec`], [`Labels`], [`Thresholds`].
//! Parsing checks what can be checked without the model; the session checks the manifest against
//! the model's real inputs and outputs at load. This module must not load models or run inference.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A parsed model manifest.
///
/// ```toml
/// name = "coco-ssd"
/// version = "1"
/// model = "model.onnx"            # relative to the manifest's directory
///
/// [input]
/// name = "image_tensor:0"
/// width = 300
/// height = 300
/// layout = "nhwc"                 # or "nchw"
/// dtype = "uint8"                 # or "float32"
/// color = "rgb"                   # or "bgr"
/// resize = { mode = "stretch" }   # or { mode = "letterbox", pad = 114, placement = "center" }
///
/// [output]
/// decoder = "ssd-tf"              # or "yolo-ultralytics" (output = "..."), "yolov5" (output = "...")
/// scores = "Postprocessor/Slice:0"
/// boxes = "Postprocessor/ExpandDims_1:0"
///
/// labels = "coco91"               # (top level) or "coco80", "onnx-metadata", or a list of names
///
/// [thresholds]
/// score = 0.4
/// iou = 0.5
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelManifest {
    /// Short name of the model, e.g. `coco-ssd`.
    pub name: String,
    /// Version of the model (free text); logs show `name@version`.
    pub version: String,
    /// The `.onnx` file, relative to the manifest's directory unless absolute.
    pub model: PathBuf,
    /// Licence of the weights, informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    /// How to feed the model.
    pub input: InputSpec,
    /// How to read the model's outputs.
    pub output: OutputSpec,
    /// Class labels, by class index of the decoder.
    pub labels: Labels,
    /// Score and NMS thresholds, allow-list.
    #[serde(default)]
    pub thresholds: Thresholds,
    /// Directory that relative paths are resolved against (the manifest's own directory).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// The model's image input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Name of the input tensor.
    pub name: String,
    /// Width the model is fed at, in pixels.
    pub width: NonZeroU32,
    /// Height the model is fed at, in pixels.
    pub height: NonZeroU32,
    /// Tensor layout.
    pub layout: Layout,
    /// Element type of the tensor.
    pub dtype: InputType,
    /// Channel order.
    #[serde(default)]
    pub color: ColorOrder,
    /// How a frame of another size is brought to `width` x `height`.
    #[serde(default)]
    pub resize: ResizeMode,
    /// Normalisation of float inputs; default `scale = 1/255`, mean 0, std 1. Not allowed for
    /// `uint8` inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<Normalize>,
}

/// Tensor layout of the image input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// `[1, height, width, 3]`.
    Nhwc,
    /// `[1, 3, height, width]`.
    Nchw,
}

/// Element type of the image input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    /// Raw 0..=255 pixel values.
    Uint8,
    /// Normalised floats (see [`Normalize`]).
    Float32,
}

/// Channel order of the image input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColorOrder {
    /// Red, green, blue (the default).
    #[default]
    Rgb,
    /// Blue, green, red.
    Bgr,
}

/// How a frame is resized to the model size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase", deny_unknown_fields)]
pub enum ResizeMode {
    /// Scale each axis independently to fill the input (the default).
    #[default]
    Stretch,
    /// Keep the aspect ratio and pad the rest with `pad`.
    Letterbox {
        /// Value of the padding pixels in every channel (Ultralytics uses 114).
        #[serde(default = "default_pad")]
        pad: u8,
        /// Where the scaled image sits.
        #[serde(default)]
        placement: Placement,
    },
}

/// Placement of the scaled image in a letterboxed input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// Centred, the odd pixel of padding going right/bottom (the default, as Ultralytics).
    #[default]
    Center,
    /// In the top-left corner, all padding right/bottom.
    TopLeft,
}

/// Float normalisation: `value = (pixel * scale - mean[c]) / std[c]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalize {
    /// Multiplier applied first; default `1/255`.
    #[serde(default = "default_scale")]
    pub scale: f32,
    /// Per-channel mean (in input channel order) subtracted after scaling; default 0.
    #[serde(default)]
    pub mean: [f32; 3],
    /// Per-channel divisor; default 1.
    #[serde(default = "default_std")]
    pub std: [f32; 3],
}

/// Output decoder and the output tensors it reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decoder", rename_all = "kebab-case", deny_unknown_fields)]
pub enum OutputSpec {
    /// TF Object Detection API exports: scores `[1,N,C]` (sigmoid applied, column k = label k of
    /// the label list shifted by one for `coco91`), boxes `[1,N,1,4]` normalised
    /// (ymin, xmin, ymax, xmax). Every (anchor, class) pair is a candidate.
    SsdTf {
        /// Name of the scores output.
        scores: String,
        /// Name of the boxes output.
        boxes: String,
    },
    /// Ultralytics YOLOv8/11/12 exports: `[1,4+C,N]`, (cx, cy, w, h) in input pixels then C class
    /// scores; the best class of each anchor is its candidate.
    YoloUltralytics {
        /// Name of the output.
        output: String,
    },
    /// YOLOv5 exports: `[1,N,5+C]`, (cx, cy, w, h) in input pixels, objectness, C class scores;
    /// score = objectness x best class score.
    Yolov5 {
        /// Name of the output.
        output: String,
    },
}

/// Class labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Labels {
    /// Explicit names, by class index.
    List(Vec<String>),
    /// A built-in or model-provided list.
    Named(NamedLabels),
}

/// Label lists the manifest can name instead of listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NamedLabels {
    /// The 91-id COCO space (index = COCO category id; ten ids unused).
    Coco91,
    /// The 80 COCO names in YOLO order.
    Coco80,
    /// The `names` metadata of an Ultralytics export.
    OnnxMetadata,
}

/// Score and NMS thresholds and the class allow-list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Minimum score of a detection; default 0.4.
    #[serde(default = "default_score")]
    pub score: f32,
    /// IoU above which a lower-scored box of the same class is suppressed; default 0.5.
    #[serde(default = "default_iou")]
    pub iou: f32,
    /// Most detections kept per image, best first; default 100.
    #[serde(default = "default_max_detections")]
    pub max_detections: usize,
    /// Per-label minimum scores overriding `score`; default none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub per_class: BTreeMap<String, f32>,
    /// Only these labels are reported when set; default all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
}

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The manifest file could not be read.
    #[error("failed to read model manifest `{path}`")]
    Read {
        /// The manifest file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The manifest is not valid TOML for a manifest.
    #[error("invalid model manifest `{path}`")]
    Parse {
        /// The manifest file.
        path: PathBuf,
        /// The TOML error (names the key).
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid model manifest `{path}`: {key}: {problem}")]
    Invalid {
        /// The manifest file.
        path: PathBuf,
        /// The offending key.
        key: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// `--model NAME` named no model of the zoo.
    #[error("unknown model `{name}`: not in the zoo (known: {known}) and not a manifest file")]
    UnknownModel {
        /// The name asked for.
        name: String,
        /// Names the zoo has.
        known: String,
    },
}

impl ModelManifest {
    /// Reads and checks the manifest at `path`; relative paths in it resolve against its directory.
    ///
    /// # Errors
    /// [`ManifestError::Read`], [`ManifestError::Parse`] or [`ManifestError::Invalid`].
    pub fn from_path(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::from_toml(&text, path, base_dir)
    }

    /// Parses manifest text; `origin` names it in errors and `base_dir` resolves relative paths.
    ///
    /// # Errors
    /// [`ManifestError::Parse`] or [`ManifestError::Invalid`].
    pub fn from_toml(text: &str, origin: &Path, base_dir: PathBuf) -> Result<Self, ManifestError> {
        let mut manifest: ModelManifest =
            toml::from_str(text).map_err(|source| ManifestError::Parse {
                path: origin.to_owned(),
                source: Box::new(source),
            })?;
        manifest.base_dir = base_dir;
        manifest.check(origin)?;
        Ok(manifest)
    }

    /// The `.onnx` file this manifest describes.
    pub fn model_path(&self) -> PathBuf {
        self.base_dir.join(&self.model)
    }

    /// `name@version`, as logs show it.
    pub fn id(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// Renders the manifest as TOML (for `model inspect`'s suggestion).
    ///
    /// # Errors
    /// A `toml` serialisation error (none is expected for a valid manifest).
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }

    fn check(&self, origin: &Path) -> Result<(), ManifestError> {
        let invalid = |key: &'static str, problem: String| ManifestError::Invalid {
            path: origin.to_owned(),
            key,
            problem,
        };
        let t = &self.thresholds;
        if !(0.0..=1.0).contains(&t.score) {
            return Err(invalid(
                "thresholds.score",
                format!("{} is not in 0..=1", t.score),
            ));
        }
        if !(0.0..=1.0).contains(&t.iou) {
            return Err(invalid(
                "thresholds.iou",
                format!("{} is not in 0..=1", t.iou),
            ));
        }
        if let Some((label, score)) = t.per_class.iter().find(|(_, s)| !(0.0..=1.0).contains(*s)) {
            return Err(invalid(
                "thresholds.per_class",
                format!("`{label}` = {score} is not in 0..=1"),
            ));
        }
        if self.input.dtype == InputType::Uint8 && self.input.normalize.is_some() {
            return Err(invalid(
                "input.normalize",
                "a uint8 input takes raw pixels; normalisation needs dtype = \"float32\"".into(),
            ));
        }
        if let Some(n) = &self.input.normalize
            && n.std.iter().any(|s| *s == 0.0 || !s.is_finite())
        {
            return Err(invalid(
                "input.normalize.std",
                "must be finite and non-zero".into(),
            ));
        }
        if let Labels::List(names) = &self.labels
            && names.is_empty()
        {
            return Err(invalid("labels", "the label list is empty".into()));
        }
        Ok(())
    }
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            score: default_score(),
            iou: default_iou(),
            max_detections: default_max_detections(),
            per_class: BTreeMap::new(),
            allow: None,
        }
    }
}

impl Default for Normalize {
    fn default() -> Self {
        Self {
            scale: default_scale(),
            mean: [0.0; 3],
            std: default_std(),
        }
    }
}

fn default_pad() -> u8 {
    114
}

fn default_scale() -> f32 {
    1.0 / 255.0
}

fn default_std() -> [f32; 3] {
    [1.0; 3]
}

fn default_score() -> f32 {
    0.4
}

fn default_iou() -> f32 {
    0.5
}

fn default_max_detections() -> usize {
    100
}

#[cfg(test)]
mod tests {
    use super::*;

    const YOLO: &str = r#"
        name = "mine"
        version = "3"
        model = "best.onnx"
        labels = ["helmet", "no-helmet"]
        [input]
        name = "images"
        width = 640
        height = 640
        layout = "nchw"
        dtype = "float32"
        resize = { mode = "letterbox" }
        [output]
        decoder = "yolo-ultralytics"
        output = "output0"
        [thresholds]
        per_class = { helmet = 0.6 }
    "#;

    fn parse(text: &str) -> Result<ModelManifest, ManifestError> {
        ModelManifest::from_toml(text, Path::new("m.toml"), PathBuf::from("/zoo/mine"))
    }

    #[test]
    fn a_yolo_manifest_parses_with_documented_defaults() {
        let m = parse(YOLO).unwrap();
        assert_eq!(m.model_path(), PathBuf::from("/zoo/mine/best.onnx"));
        assert_eq!(
            m.input.resize,
            ResizeMode::Letterbox {
                pad: 114,
                placement: Placement::Center
            }
        );
        assert_eq!(m.input.color, ColorOrder::Rgb);
        assert_eq!(m.thresholds.score, 0.4);
        assert_eq!(m.thresholds.iou, 0.5);
        assert_eq!(m.thresholds.per_class["helmet"], 0.6);
        assert_eq!(
            m.labels,
            Labels::List(vec!["helmet".into(), "no-helmet".into()])
        );
        assert_eq!(m.id(), "mine@3");
    }

    #[test]
    fn the_shipped_coco_ssd_manifest_parses() {
        let m = parse(include_str!("../zoo/coco-ssd/manifest.toml")).unwrap();
        assert_eq!(m.name, "coco-ssd");
        assert_eq!(m.labels, Labels::Named(NamedLabels::Coco91));
        assert!(matches!(m.output, OutputSpec::SsdTf { .. }));
    }

    #[test]
    fn an_unknown_key_is_refused_naming_it() {
        let err = parse(&YOLO.replace("layout", "layot")).unwrap_err();
        assert!(matches!(err, ManifestError::Parse { .. }));
    }

    #[test]
    fn out_of_range_thresholds_are_refused() {
        let err = parse(&YOLO.replace("helmet = 0.6", "helmet = 1.6")).unwrap_err();
        assert!(matches!(
            err,
            ManifestError::Invalid {
                key: "thresholds.per_class",
                ..
            }
        ));
    }

    #[test]
    fn normalisation_of_a_uint8_input_is_refused() {
        let text = YOLO
            .replace("\"float32\"", "\"uint8\"")
            .replace("[output]", "normalize = { scale = 1.0 }\n[output]");
        let err = parse(&text).unwrap_err();
        assert!(matches!(
            err,
            ManifestError::Invalid {
                key: "input.normalize",
                ..
            }
        ));
    }

    #[test]
    fn a_manifest_round_trips_through_toml() {
        let m = parse(YOLO).unwrap();
        let again = parse(&m.to_toml().unwrap()).unwrap();
        assert_eq!(m, again);
    }
}

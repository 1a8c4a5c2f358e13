//! `model.toml`: what an ONNX image model expects and what its outputs mean. The
//! fields and their semantics are documented in `models/README.md`.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Input tensor layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// `[1, C, H, W]`.
    Nchw,
    /// `[1, H, W, C]`.
    Nhwc,
}

/// The model's channel order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Color {
    /// Red, green, blue.
    Rgb,
    /// Blue, green, red.
    Bgr,
}

/// How a frame is fitted to the input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resize {
    /// Resize to the input size, ignoring the aspect ratio.
    Stretch,
    /// Resize to `resize_to`, then crop the centre.
    ResizeThenCenterCrop,
    /// Fit inside, keeping the aspect ratio, and pad with `pad_value`.
    Letterbox,
}

/// What the output holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// Single-label class scores.
    Softmax,
    /// Independent multi-label scores.
    Sigmoid,
    /// YOLO-style detection rows.
    Yolo,
}

/// The `[input]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// ONNX input name.
    pub name: String,
    /// `[1, C, H, W]` or `[1, H, W, C]`.
    pub shape: [usize; 4],
    /// Only `"f32"`.
    #[serde(default = "f32_name")]
    pub dtype: String,
    /// Layout.
    pub layout: Layout,
    /// Channel order.
    pub color: Color,
    /// Fitting.
    pub resize: Resize,
    /// Intermediate size for `resize_then_center_crop`, `[width, height]`.
    pub resize_to: Option<[u32; 2]>,
    /// Padding value for `letterbox`.
    #[serde(default)]
    pub pad_value: u8,
    /// Only `"bilinear"` (Pillow's).
    #[serde(default = "bilinear")]
    pub filter: String,
    /// Multiplies 0..255 values.
    #[serde(default = "one")]
    pub scale: f32,
    /// Per-channel mean, model channel order.
    #[serde(default)]
    pub mean: [f32; 3],
    /// Per-channel std, model channel order.
    #[serde(default = "ones")]
    pub std: [f32; 3],
}

fn f32_name() -> String {
    "f32".into()
}
fn bilinear() -> String {
    "bilinear".into()
}
fn one() -> f32 {
    1.0
}
fn ones() -> [f32; 3] {
    [1.0; 3]
}

/// The `[output]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Output {
    /// ONNX output name.
    pub name: String,
    /// Expected shape.
    pub shape: Vec<usize>,
    /// Kind.
    pub kind: OutputKind,
    /// Whether the runtime applies the activation.
    #[serde(default)]
    pub logits: bool,
    /// Labels in model order.
    pub labels: Vec<String>,
    /// Only `"cxcywh"` (yolo).
    pub box_format: Option<String>,
    /// Yolo: minimum score.
    #[serde(default = "score_threshold")]
    pub score_threshold: f32,
    /// Yolo: NMS IoU.
    #[serde(default = "iou_threshold")]
    pub iou_threshold: f32,
    /// Yolo: detections kept.
    #[serde(default = "max_detections")]
    pub max_detections: usize,
}

fn score_threshold() -> f32 {
    0.25
}
fn iou_threshold() -> f32 {
    0.45
}
fn max_detections() -> usize {
    100
}

/// A label's policy category and the score at which it is flagged.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Category {
    /// Policy category (sexual, graphic_violence, weapon, extremist_symbol, ...).
    pub category: String,
    /// Flag threshold.
    pub threshold: f32,
}

/// A whole manifest.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Model name.
    pub name: String,
    /// Human-readable version.
    pub version: Option<String>,
    /// Informational.
    pub description: Option<String>,
    /// Informational.
    pub license: Option<String>,
    /// Informational.
    pub source: Option<String>,
    /// ONNX file, relative to the manifest.
    pub file: String,
    /// sha256 of the file, lowercase hex.
    pub sha256: String,
    /// Input.
    pub input: Input,
    /// Output.
    pub output: Output,
    /// Label -> category.
    #[serde(default)]
    pub categories: BTreeMap<String, Category>,
}

impl Manifest {
    /// Input width and height.
    pub fn input_size(&self) -> (u32, u32) {
        let s = self.input.shape;
        match self.input.layout {
            Layout::Nchw => (s[3] as u32, s[2] as u32),
            Layout::Nhwc => (s[2] as u32, s[1] as u32),
        }
    }

    /// Every consistency problem, as `field: message`.
    pub fn validate(&self) -> Vec<String> {
        let mut issues = Vec::new();
        let s = self.input.shape;
        let channels = match self.input.layout {
            Layout::Nchw => s[1],
            Layout::Nhwc => s[3],
        };
        if s[0] != 1 {
            issues.push(format!("input.shape: batch must be 1, got {}", s[0]));
        }
        if channels != 3 {
            issues.push(format!("input.shape: 3 channels expected, got {channels}"));
        }
        if s.contains(&0) {
            issues.push("input.shape: dimensions must be positive".into());
        }
        if self.input.dtype != "f32" {
            issues.push(format!(
                "input.dtype: only \"f32\" is supported, got {:?}",
                self.input.dtype
            ));
        }
        if self.input.filter != "bilinear" {
            issues.push(format!(
                "input.filter: only \"bilinear\" is supported, got {:?}",
                self.input.filter
            ));
        }
        if !(self.input.scale > 0.0 && self.input.scale.is_finite()) {
            issues.push(format!(
                "input.scale: must be positive, got {}",
                self.input.scale
            ));
        }
        if !self.input.std.iter().all(|v| v.is_finite() && *v > 0.0) {
            issues.push("input.std: every value must be positive".into());
        }
        let (w, h) = self.input_size();
        match (self.input.resize, self.input.resize_to) {
            (Resize::ResizeThenCenterCrop, None) => {
                issues.push("input.resize_to: required for resize_then_center_crop".into())
            }
            (Resize::ResizeThenCenterCrop, Some([rw, rh])) if rw < w || rh < h => issues.push(
                format!("input.resize_to: {rw}x{rh} is smaller than the input {w}x{h}"),
            ),
            (Resize::Stretch | Resize::Letterbox, Some(_)) => {
                issues.push("input.resize_to: only for resize_then_center_crop".into())
            }
            _ => {}
        }
        let labels = &self.output.labels;
        if labels.is_empty() || labels.iter().any(String::is_empty) {
            issues.push("output.labels: need at least one non-empty label".into());
        }
        for (i, l) in labels.iter().enumerate() {
            if labels[..i].contains(l) {
                issues.push(format!("output.labels: duplicate {l:?}"));
            }
        }
        let n = labels.len();
        match self.output.kind {
            OutputKind::Softmax | OutputKind::Sigmoid if self.output.shape != [1, n] => issues
                .push(format!(
                    "output.shape: {:?} does not fit {n} labels (expected [1, {n}])",
                    self.output.shape
                )),
            OutputKind::Yolo => {
                if self.output.shape.len() != 3
                    || self.output.shape[0] != 1
                    || self.output.shape[2] != 5 + n
                {
                    issues.push(format!("output.shape: expected [1, N, {}] for yolo", 5 + n));
                }
                if self.output.box_format.as_deref().unwrap_or("cxcywh") != "cxcywh" {
                    issues.push("output.box_format: only \"cxcywh\" is supported".into());
                }
            }
            _ => {}
        }
        for label in self.categories.keys() {
            if !labels.contains(label) {
                issues.push(format!("categories.{label}: not an output label"));
            }
        }
        issues
    }
}

//! Frame classifiers: any ONNX image model an operator drops into `models/<name>/` with a
//! `model.toml` manifest, run with tract.
//!
//! This crate is the only one that links tract. It owns the model contract (the
//! manifest, checked against the model's real input and output when it loads, so a bad
//! model fails at load time, never at frame time), preprocessing exactly as the manifest
//! says (bit-identical to the Python reference), inference on a plan optimised once and
//! shared by every thread, and post-processing (softmax, sigmoid, YOLO-style detections
//! with NMS) into label scores and policy categories.

#![forbid(unsafe_code)]

pub mod manifest;
mod postprocess;
pub mod preprocess;
mod set;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

pub use manifest::Manifest;
pub use postprocess::{CategoryScore, Detection};
pub use preprocess::{Placement, RgbImage};
pub use set::{ClassifierSet, SetResult};
use tract_linalg::multithread::{Executor, multithread_tract_scope};

/// Why a model cannot be used. Each variant is a distinct, testable cause.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The manifest cannot be read or parsed.
    #[error("{path}: {message}")]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The manifest parsed but is inconsistent.
    #[error("{path}: {}", .issues.join("; "))]
    Invalid {
        /// The manifest.
        path: PathBuf,
        /// Every problem.
        issues: Vec<String>,
    },
    /// The ONNX file is missing.
    #[error("{path}: model file not found")]
    FileMissing {
        /// The file.
        path: PathBuf,
    },
    /// The file's sha256 differs from the manifest's.
    #[error("{path}: sha256 is {actual}, the manifest says {expected}")]
    Checksum {
        /// The file.
        path: PathBuf,
        /// Manifest value.
        expected: String,
        /// Actual value.
        actual: String,
    },
    /// The manifest's input name is not an input of the model.
    #[error("input.name: {name:?} is not a model input ({available:?})")]
    InputName {
        /// Manifest name.
        name: String,
        /// The model's inputs.
        available: Vec<String>,
    },
    /// The manifest's output name is not an output of the model.
    #[error("output.name: {name:?} is not a model output ({available:?})")]
    OutputName {
        /// Manifest name.
        name: String,
        /// The model's outputs.
        available: Vec<String>,
    },
    /// The model's input or output shape or type disagrees with the manifest.
    #[error("{field}: manifest {manifest}, model {model}")]
    Shape {
        /// `input.shape` or `output.shape`.
        field: &'static str,
        /// The manifest's.
        manifest: String,
        /// The model's.
        model: String,
    },
    /// tract cannot load or run the graph (an unsupported operator, say).
    #[error("the model cannot be run: {0}")]
    Unsupported(String),
}

/// The outcome of classifying one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Classification {
    /// Model name.
    pub model: String,
    /// Model version: the manifest's, else the sha256 prefix.
    pub model_version: String,
    /// Score per label, in model order.
    pub scores: Vec<(String, f32)>,
    /// Labels mapped to policy categories.
    pub categories: Vec<CategoryScore>,
    /// Detections (YOLO models), in source-image pixels.
    pub detections: Vec<Detection>,
}

/// A loaded model, ready to classify frames from any thread.
#[derive(Debug, Clone)]
pub struct Classifier {
    manifest: Arc<Manifest>,
    plan: Arc<TypedRunnableModel>,
    /// A plan for several frames at once and its batch size, built by
    /// [`Classifier::set_batch`] (off by default: with tract 0.23 on the development
    /// machine batches are no faster per frame than single frames; `benches/classify.rs`
    /// measures batches of 1, 4 and 8).
    batch_plan: Option<(usize, Arc<TypedRunnableModel>)>,
    /// Whether the model's batch dimension is symbolic (batches are possible).
    symbolic_batch: bool,
    /// The ONNX file and the input's index, to build the batch plan on demand.
    file: PathBuf,
    input_ix: usize,
    version: String,
    /// tract's executor for one run: single-threaded, or a pool splitting each matrix
    /// product across threads (see [`Classifier::set_threads`]).
    executor: Executor,
}

/// The largest batch [`Classifier::set_batch`] accepts.
pub const MAX_BATCH: usize = 64;

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Fixes the input to the manifest's shape with batch `batch`, selects the manifest's
/// output and optimises the graph.
fn optimize(
    mut model: InferenceModel,
    input_ix: usize,
    manifest: &Manifest,
    batch: usize,
) -> TractResult<TypedModel> {
    let mut shape: TVec<usize> = manifest.input.shape.iter().copied().collect();
    shape[0] = batch;
    model.set_input_fact(input_ix, InferenceFact::dt_shape(f32::datum_type(), shape))?;
    model.select_outputs_by_name([manifest.output.name.as_str()])?;
    model.into_optimized()
}

fn concrete_dims(fact: &InferenceFact) -> Vec<Option<i64>> {
    fact.shape
        .dims()
        .map(|d| d.concretize().and_then(|d| d.to_i64().ok()))
        .collect()
}

impl Classifier {
    /// Loads `dir/model.toml` and its model, checking everything the manifest claims.
    pub fn load(dir: &Path) -> Result<Classifier, ModelError> {
        let manifest_path = dir.join("model.toml");
        let text = std::fs::read_to_string(&manifest_path).map_err(|e| ModelError::Manifest {
            path: manifest_path.clone(),
            message: e.to_string(),
        })?;
        let manifest: Manifest = toml::from_str(&text).map_err(|e| ModelError::Manifest {
            path: manifest_path.clone(),
            message: e.to_string(),
        })?;
        let issues = manifest.validate();
        if !issues.is_empty() {
            return Err(ModelError::Invalid {
                path: manifest_path,
                issues,
            });
        }
        let file = dir.join(&manifest.file);
        let bytes =
            std::fs::read(&file).map_err(|_| ModelError::FileMissing { path: file.clone() })?;
        let actual = sha256_hex(&bytes);
        if actual != manifest.sha256.to_ascii_lowercase() {
            return Err(ModelError::Checksum {
                path: file,
                expected: manifest.sha256.clone(),
                actual,
            });
        }
        let unsupported = |e: TractError| ModelError::Unsupported(format!("{e:#}"));
        let model = tract_onnx::onnx()
            .model_for_read(&mut &bytes[..])
            .map_err(unsupported)?;

        let inputs: Vec<String> = model
            .input_outlets()
            .map_err(unsupported)?
            .iter()
            .map(|o| model.node(o.node).name.clone())
            .collect();
        let Some(input_ix) = inputs.iter().position(|n| *n == manifest.input.name) else {
            return Err(ModelError::InputName {
                name: manifest.input.name.clone(),
                available: inputs,
            });
        };
        let outputs: Vec<String> = model
            .output_outlets()
            .map_err(unsupported)?
            .iter()
            .map(|o| {
                model
                    .outlet_label(*o)
                    .unwrap_or(&model.node(o.node).name)
                    .to_owned()
            })
            .collect();
        if !outputs.contains(&manifest.output.name) {
            return Err(ModelError::OutputName {
                name: manifest.output.name.clone(),
                available: outputs,
            });
        }
        // Declared input shape: fixed dimensions must agree; symbolic ones take the
        // manifest's value.
        let declared = concrete_dims(model.input_fact(input_ix).map_err(unsupported)?);
        let wanted: Vec<i64> = manifest.input.shape.iter().map(|&d| d as i64).collect();
        let compatible = declared.is_empty()
            || (declared.len() == wanted.len()
                && declared
                    .iter()
                    .zip(&wanted)
                    .all(|(d, w)| d.is_none_or(|d| d == *w)));
        if !compatible {
            let show = |v: &[Option<i64>]| {
                format!(
                    "{:?}",
                    v.iter()
                        .map(|d| d.map_or("?".into(), |d| d.to_string()))
                        .collect::<Vec<_>>()
                )
            };
            return Err(ModelError::Shape {
                field: "input.shape",
                manifest: format!("{:?}", manifest.input.shape),
                model: show(&declared),
            });
        }
        let typed = optimize(model, input_ix, &manifest, 1).map_err(unsupported)?;
        let out_fact = typed.output_fact(0).map_err(unsupported)?;
        let out_shape: Option<Vec<usize>> = out_fact.shape.as_concrete().map(<[usize]>::to_vec);
        if out_fact.datum_type != f32::datum_type()
            || out_shape.as_deref() != Some(&manifest.output.shape[..])
        {
            return Err(ModelError::Shape {
                field: "output.shape",
                manifest: format!("{:?} f32", manifest.output.shape),
                model: format!("{:?} {:?}", out_fact.shape, out_fact.datum_type),
            });
        }
        let plan = typed.into_runnable().map_err(unsupported)?;
        let version = manifest
            .version
            .clone()
            .unwrap_or_else(|| actual[..12].to_owned());
        Ok(Classifier {
            manifest: Arc::new(manifest),
            plan,
            batch_plan: None,
            symbolic_batch: declared.first().is_some_and(Option::is_none),
            file,
            input_ix,
            version,
            executor: Executor::SingleThread,
        })
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The model version reported with scores.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Threads for one inference (intra-op parallelism, a private pool of `n` threads;
    /// 1 = run on the caller's thread). With two cores, 2 threads cut open_nsfw's
    /// latency from 44 to 32 ms per frame, while two frames classified side by side on
    /// one thread each give more frames per second: use threads for latency when few
    /// streams are live, and one thread per frame for throughput.
    pub fn set_threads(&mut self, n: usize) {
        self.executor = if n <= 1 {
            Executor::SingleThread
        } else {
            Executor::multithread_with_name(n, "firebreak-classify")
        };
    }

    fn run_plan(&self, plan: &Arc<TypedRunnableModel>, input: Tensor) -> TractResult<TVec<TValue>> {
        multithread_tract_scope(self.executor.clone(), || plan.run(tvec!(input.into())))
    }

    /// The input tensor for a frame (exposed for tests and reference comparisons).
    pub fn preprocess(&self, frame: &RgbImage<'_>) -> (Vec<f32>, Placement) {
        preprocess::to_tensor(&self.manifest, frame)
    }

    /// Runs the model on an input tensor (already preprocessed), returning the raw
    /// output values.
    pub fn run_tensor(&self, tensor: Vec<f32>) -> Result<Vec<f32>, ModelError> {
        let shape = self.manifest.input.shape;
        let input = Tensor::from_shape(&shape, &tensor)
            .map_err(|e| ModelError::Unsupported(format!("{e:#}")))?;
        let out = self
            .run_plan(&self.plan, input)
            .map_err(|e| ModelError::Unsupported(format!("{e:#}")))?;
        let view = out[0]
            .to_plain_array_view::<f32>()
            .map_err(|e| ModelError::Unsupported(format!("{e:#}")))?;
        Ok(view.iter().copied().collect())
    }

    /// Whether the model can run several frames in one batch.
    pub fn batches(&self) -> bool {
        self.symbolic_batch
    }

    /// Runs [`Classifier::classify_many`] in batches of `size` frames (building the
    /// batch plan from the model file); 0 or 1 turns batches off, as does a model with a
    /// fixed batch dimension. Measure before turning it on: see `batch_plan`.
    pub fn set_batch(&mut self, size: usize) -> Result<(), ModelError> {
        if size <= 1 || !self.symbolic_batch {
            self.batch_plan = None;
            return Ok(());
        }
        if size > MAX_BATCH {
            return Err(ModelError::Unsupported(format!(
                "batch of {size} frames: at most {MAX_BATCH}"
            )));
        }
        let unsupported = |e: TractError| ModelError::Unsupported(format!("{e:#}"));
        let bytes = std::fs::read(&self.file).map_err(|_| ModelError::FileMissing {
            path: self.file.clone(),
        })?;
        let actual = sha256_hex(&bytes);
        if actual != self.manifest.sha256.to_ascii_lowercase() {
            let (path, expected) = (self.file.clone(), self.manifest.sha256.clone());
            return Err(ModelError::Checksum {
                path,
                expected,
                actual,
            });
        }
        let model = tract_onnx::onnx()
            .model_for_read(&mut &bytes[..])
            .map_err(unsupported)?;
        let typed = optimize(model, self.input_ix, &self.manifest, size).map_err(unsupported)?;
        self.batch_plan = Some((size, typed.into_runnable().map_err(unsupported)?));
        Ok(())
    }

    /// The batch size [`Classifier::classify_many`] runs (1: one frame at a time).
    pub fn batch(&self) -> usize {
        self.batch_plan.as_ref().map_or(1, |(size, _)| *size)
    }

    /// Classifies several waiting frames: full groups of [`Classifier::batch`] frames run
    /// as one batch when batches are on, the rest one by one. Results are in frame order.
    pub fn classify_many(
        &self,
        frames: &[RgbImage<'_>],
    ) -> Result<Vec<Classification>, ModelError> {
        let err = |e: TractError| ModelError::Unsupported(format!("{e:#}"));
        let mut out = Vec::with_capacity(frames.len());
        let batch = self.batch();
        for group in frames.chunks(batch) {
            let Some((_, plan)) = self.batch_plan.as_ref().filter(|_| group.len() == batch) else {
                for f in group {
                    out.push(self.classify(f)?);
                }
                continue;
            };
            let prepared: Vec<(Vec<f32>, Placement)> =
                group.iter().map(|f| self.preprocess(f)).collect();
            let mut shape = self.manifest.input.shape;
            shape[0] = batch;
            let data: Vec<f32> = prepared
                .iter()
                .flat_map(|(t, _)| t.iter().copied())
                .collect();
            let input = Tensor::from_shape(&shape, &data).map_err(err)?;
            let result = self.run_plan(plan, input).map_err(err)?;
            let values: Vec<f32> = result[0]
                .to_plain_array_view::<f32>()
                .map_err(err)?
                .iter()
                .copied()
                .collect();
            let per = values.len() / batch;
            for ((f, (_, placement)), raw) in group.iter().zip(&prepared).zip(values.chunks(per)) {
                out.push(self.postprocess(raw, *placement, (f.width, f.height)));
            }
        }
        Ok(out)
    }

    /// Classifies one frame.
    pub fn classify(&self, frame: &RgbImage<'_>) -> Result<Classification, ModelError> {
        let (tensor, placement) = self.preprocess(frame);
        let raw = self.run_tensor(tensor)?;
        Ok(self.postprocess(&raw, placement, (frame.width, frame.height)))
    }

    /// Turns raw output values into a classification.
    pub fn postprocess(
        &self,
        raw: &[f32],
        placement: Placement,
        source: (u32, u32),
    ) -> Classification {
        let (scores, detections) = postprocess::scores(&self.manifest, raw, placement, source);
        let categories = postprocess::categories(&self.manifest, &scores);
        Classification {
            model: self.manifest.name.clone(),
            model_version: self.version.clone(),
            scores,
            categories,
            detections,
        }
    }
}

//! Several models on the same frames, with the frame resized once per input geometry.
//!
//! The resize from a 720p frame is the costly part of preprocessing (4 ms of open_nsfw's
//! 49 ms); models that agree on input size and resize policy share one resized image,
//! and only the cheap per-model step (colour order, normalisation, layout) runs per
//! model.

use std::collections::HashMap;

use crate::preprocess::{self, GeometryKey};
use crate::{Classification, Classifier, ModelError, RgbImage};

/// One model's outcome for a frame.
#[derive(Debug)]
pub struct SetResult {
    /// The model's name.
    pub model: String,
    /// Its classification, or why it failed on this frame.
    pub result: Result<Classification, ModelError>,
}

/// Loaded models grouped by input geometry.
#[derive(Debug, Clone, Default)]
pub struct ClassifierSet {
    models: Vec<Classifier>,
    /// Model indices per geometry, in first-seen order.
    groups: Vec<(GeometryKey, Vec<usize>)>,
}

impl ClassifierSet {
    /// Groups `models` by input geometry.
    pub fn new(models: Vec<Classifier>) -> ClassifierSet {
        let mut index: HashMap<GeometryKey, usize> = HashMap::new();
        let mut groups: Vec<(GeometryKey, Vec<usize>)> = Vec::new();
        for (i, m) in models.iter().enumerate() {
            let key = GeometryKey::of(m.manifest());
            let g = *index.entry(key).or_insert_with(|| {
                groups.push((key, Vec::new()));
                groups.len() - 1
            });
            groups[g].1.push(i);
        }
        ClassifierSet { models, groups }
    }

    /// The models, in the order given.
    pub fn models(&self) -> &[Classifier] {
        &self.models
    }

    /// How many resizes one frame costs (distinct input geometries).
    pub fn geometries(&self) -> usize {
        self.groups.len()
    }

    /// Whether there are no models.
    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// Runs every model on `frame`; results are in model order. One model failing does
    /// not stop the others.
    pub fn classify(&self, frame: &RgbImage<'_>) -> Vec<SetResult> {
        let mut out: Vec<Option<SetResult>> = (0..self.models.len()).map(|_| None).collect();
        for (_, members) in &self.groups {
            let first = self.models[members[0]].manifest();
            let (pixels, placement) = preprocess::geometry(first, frame);
            for &i in members {
                let model = &self.models[i];
                let tensor = preprocess::normalise(model.manifest(), &pixels);
                let result = model
                    .run_tensor(tensor)
                    .map(|raw| model.postprocess(&raw, placement, (frame.width, frame.height)));
                out[i] = Some(SetResult {
                    model: model.manifest().name.clone(),
                    result,
                });
            }
        }
        out.into_iter()
            .map(|r| r.expect("every model is in a group"))
            .collect()
    }
}

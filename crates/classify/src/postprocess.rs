//! Raw outputs to label scores, detections and policy categories (`models/README.md`,
//! "Post-processing").

use crate::manifest::{Manifest, OutputKind};
use crate::preprocess::Placement;

/// A label's score under its policy category.
#[derive(Debug, Clone, PartialEq)]
pub struct CategoryScore {
    /// The model label.
    pub label: String,
    /// The policy category.
    pub category: String,
    /// The score.
    pub score: f32,
    /// The manifest's threshold.
    pub threshold: f32,
    /// `score >= threshold`.
    pub flagged: bool,
}

/// One detection after threshold and NMS.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// Output row.
    pub row: usize,
    /// Label.
    pub label: String,
    /// objectness x class score.
    pub score: f32,
    /// Box in model-input pixels, `[x1, y1, x2, y2]`.
    pub box_input: [f32; 4],
    /// Box in source-image pixels, clamped to the image.
    pub box_source: [f32; 4],
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn softmax(v: &[f32]) -> Vec<f32> {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = v.iter().map(|x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let ix = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let iy = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = ix * iy;
    let area = |r: &[f32; 4]| (r[2] - r[0]) * (r[3] - r[1]);
    let union = area(a) + area(b) - inter;
    if union <= 0.0 { 0.0 } else { inter / union }
}

/// Label scores (and detections for YOLO models).
pub fn scores(
    m: &Manifest,
    raw: &[f32],
    placement: Placement,
    source: (u32, u32),
) -> (Vec<(String, f32)>, Vec<Detection>) {
    let labels = &m.output.labels;
    match m.output.kind {
        OutputKind::Softmax => {
            let v = if m.output.logits {
                softmax(raw)
            } else {
                raw.to_vec()
            };
            (labels.iter().cloned().zip(v).collect(), Vec::new())
        }
        OutputKind::Sigmoid => {
            let v: Vec<f32> = if m.output.logits {
                raw.iter().map(|x| sigmoid(*x)).collect()
            } else {
                raw.to_vec()
            };
            (labels.iter().cloned().zip(v).collect(), Vec::new())
        }
        OutputKind::Yolo => {
            let width = 5 + labels.len();
            let mut candidates: Vec<Detection> = Vec::new();
            for (row, r) in raw.chunks_exact(width).enumerate() {
                let act = |x: f32| if m.output.logits { sigmoid(x) } else { x };
                let obj = act(r[4]);
                let mut best = 0;
                for k in 1..labels.len() {
                    if act(r[5 + k]) > act(r[5 + best]) {
                        best = k;
                    }
                }
                let score = obj * act(r[5 + best]);
                if score < m.output.score_threshold {
                    continue;
                }
                let (cx, cy, w, h) = (r[0], r[1], r[2], r[3]);
                let b = [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0];
                let (sw, sh) = (placement.scaled.0 as f32, placement.scaled.1 as f32);
                let (ox, oy) = (placement.offset.0 as f32, placement.offset.1 as f32);
                let (fw, fh) = (source.0 as f32, source.1 as f32);
                let to_src = |v: f32, off: f32, scaled: f32, full: f32| {
                    ((v - off) * full / scaled).clamp(0.0, full)
                };
                let box_source = [
                    to_src(b[0], ox, sw, fw),
                    to_src(b[1], oy, sh, fh),
                    to_src(b[2], ox, sw, fw),
                    to_src(b[3], oy, sh, fh),
                ];
                candidates.push(Detection {
                    row,
                    label: labels[best].clone(),
                    score,
                    box_input: b,
                    box_source,
                });
            }
            // Score descending, ties by row (a stable sort keeps row order).
            candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
            let mut kept: Vec<Detection> = Vec::new();
            for c in candidates {
                if kept.len() >= m.output.max_detections {
                    break;
                }
                let suppressed = kept.iter().any(|k| {
                    k.label == c.label && iou(&k.box_input, &c.box_input) > m.output.iou_threshold
                });
                if !suppressed {
                    kept.push(c);
                }
            }
            let scores = labels
                .iter()
                .map(|l| {
                    let best = kept
                        .iter()
                        .filter(|d| &d.label == l)
                        .map(|d| d.score)
                        .fold(0.0, f32::max);
                    (l.clone(), best)
                })
                .collect();
            (scores, kept)
        }
    }
}

/// The labels the manifest maps to policy categories.
pub fn categories(m: &Manifest, scores: &[(String, f32)]) -> Vec<CategoryScore> {
    scores
        .iter()
        .filter_map(|(label, score)| {
            let c = m.categories.get(label)?;
            Some(CategoryScore {
                label: label.clone(),
                category: c.category.clone(),
                score: *score,
                threshold: c.threshold,
                flagged: *score >= c.threshold,
            })
        })
        .collect()
}

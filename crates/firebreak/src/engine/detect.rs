//! Per-frame detection: one sampled frame in, the policy's [`FrameSignals`] out.
//!
//! ```text
//! SampledFrame ─▶ PDQ hash ─▶ Matcher (banks) ─┬▶ FrameSignals
//!                         └─▶ VpdqWindow ──────┤
//!        └─▶ ClassifierSet (every Nth frame) ──┘
//! ```
//!
//! Blocking CPU work (hashing, index lookups, ONNX inference): it runs on the stream's
//! consumer thread, never on the async runtime.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use firebreak_classify::{ClassifierSet, RgbImage};
use firebreak_hashing::views::{ViewHash, hash_views};
use firebreak_hashing::{PdqHash, PdqHasher};
use firebreak_matching::matcher::Matcher;
use firebreak_matching::window::{VpdqWindow, WindowConfig};
use firebreak_media::ingest::SampledFrame;
use firebreak_policy::policy::{
    ClassifierScore, FrameSignals, HashMatch, Policy, StreamState, VideoMatch,
};
use serde::Serialize;

use crate::metrics::{Metrics, Stage};

/// A model run on sampled frames beside the ONNX [`ClassifierSet`], on the stream's
/// consumer thread under its detection lock, like the ONNX models. None comes from the
/// config; tests inject one (for example a model that holds a frame until released).
pub trait FrameModel: Send + Sync + std::fmt::Debug {
    /// The model's scores for `frame`.
    fn classify(&self, frame: &SampledFrame) -> Vec<ClassifierScore>;
}

/// The loaded detectors; replaced whole on reload.
#[derive(Debug)]
pub struct Detectors {
    /// Banks, indexed.
    pub matcher: Matcher,
    /// Models.
    pub classifiers: ClassifierSet,
    /// Models beside the ONNX ones (see [`FrameModel`]).
    pub frame_models: Vec<Arc<dyn FrameModel>>,
    /// Bank name → (entries, negative), for reports.
    pub banks: Vec<(String, usize, bool)>,
    /// Which views of each frame are matched, per bank (`[detectors.views]`).
    pub views: super::views::QueryViews,
}

impl Detectors {
    /// Whether frames must come in RGB: some model classifies them. PDQ alone takes
    /// the decoded Y' plane.
    pub fn wants_rgb(&self) -> bool {
        !(self.classifiers.is_empty() && self.frame_models.is_empty())
    }
}

/// One point of a stream's risk timeline.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Point {
    /// Wall time, Unix milliseconds.
    pub wall_ms: u64,
    /// Media time, seconds.
    pub media_time: f64,
    /// Tier index (0 = none; an index into the timeline's `tiers`).
    pub tier_index: usize,
    /// The strongest signal in [0, 1].
    pub score: f64,
}

/// Points kept per stream (20 minutes at 2 samples/s).
const TIMELINE: usize = 2400;

/// One stream's detection and policy state.
#[derive(Debug)]
pub(crate) struct StreamDetect {
    pub(crate) state: StreamState,
    /// The policy `state` is adapted to (a swapped policy is adopted lazily, at the
    /// stream's next frame, event or tick).
    policy: Arc<Policy>,
    window: VpdqWindow,
    hasher: PdqHasher,
    frames: u64,
    /// The last frame's PDQ hash and quality (for the signal log).
    pub(crate) last_pdq: Option<([u8; 32], u8)>,
}

impl StreamDetect {
    /// A stream with no history.
    pub(crate) fn new(
        id: &str,
        policy: &Arc<Policy>,
        video_window_secs: f64,
        video_window_max_frames: usize,
    ) -> StreamDetect {
        StreamDetect {
            state: StreamState::new(id, policy),
            policy: policy.clone(),
            window: VpdqWindow::new(WindowConfig {
                window_secs: video_window_secs,
                // Every percentage is reported; the policy's rule applies the enter
                // and exit levels.
                enter_percent: 100.0,
                exit_percent: 100.0,
                max_frames: video_window_max_frames,
                ..WindowConfig::default()
            }),
            hasher: PdqHasher::live(),
            frames: 0,
            last_pdq: None,
        }
    }

    /// Frees what an ended stream no longer needs: the hasher's image-sized scratch
    /// buffers (megabytes at 720p) and the live window's frames. The policy state
    /// stays (the stream's summary, until it is forgotten).
    pub(crate) fn release(&mut self) {
        self.hasher = PdqHasher::live();
        self.window = VpdqWindow::new(*self.window.config());
    }

    /// Adopts `policy` if the state is adapted to another one (rule state carried
    /// over by name, see `StreamState::adopt`).
    /// The version of the policy the state is adapted to.
    pub(crate) fn policy_version(&self) -> &str {
        self.policy.version()
    }

    pub(crate) fn adapt(&mut self, policy: &Arc<Policy>) {
        if !Arc::ptr_eq(&self.policy, policy) {
            self.state.adopt(&self.policy, policy);
            self.policy = policy.clone();
        }
    }

    /// Hashes and matches the frame (of a stream of `tenant`: entries scoped to another
    /// tenant do not match), pushes it through the live window and, every
    /// `classify_every`th frame, classifies it. `None` when the frame cannot be hashed
    /// (counted as dropped).
    pub(crate) fn signals(
        &mut self,
        detectors: &Detectors,
        frame: &SampledFrame,
        tenant: &str,
        classify_every: u32,
        m: &Metrics,
    ) -> Option<FrameSignals> {
        let t = Instant::now();
        let Ok(view) = frame.image() else {
            m.bad_frame();
            return None;
        };
        let views = hash_views(&mut self.hasher, &view, &detectors.views.spec);
        // The whole frame as it is: the frame's PDQ hash, for the live vPDQ window.
        let hash = PdqHash {
            hash: views[0].hash,
            quality: views[0].quality,
        };
        self.last_pdq = Some((hash.hash.to_bytes(), hash.quality));
        m.stage(Stage::Hash).observe(t.elapsed().as_secs_f64());

        let t = Instant::now();
        let mut signals = FrameSignals {
            media_time: frame.pts,
            wall_ms: frame.wall_ms,
            ..FrameSignals::default()
        };
        let matcher = &detectors.matcher;
        for hit in match_views(matcher, &detectors.views, &views, Some(tenant)) {
            m.matches.with_label_values(&[&hit.bank]).inc();
            signals.hash_matches.push(hit);
        }
        self.window.push(frame.pts, hash.hash, hash.quality, |h| {
            let mut v: Vec<u32> = matcher
                .frame_video_hits_for(h, Some(tenant))
                .into_iter()
                .map(|(v, _)| v)
                .collect();
            v.dedup();
            v
        });
        for (video, percent) in self.window.percentages() {
            if percent > 0.0 {
                let entry = matcher.video_entry(video);
                signals.video_matches.push(VideoMatch {
                    bank: entry.bank.to_string(),
                    entry_id: entry.id.to_string(),
                    percent,
                });
            }
        }
        m.stage(Stage::Match).observe(t.elapsed().as_secs_f64());

        if detectors.wants_rgb() && self.frames.is_multiple_of(u64::from(classify_every)) {
            let t = Instant::now();
            classify(&detectors.classifiers, frame, &mut signals);
            for model in &detectors.frame_models {
                signals.scores.extend(model.classify(frame));
            }
            m.stage(Stage::Classify).observe(t.elapsed().as_secs_f64());
        }
        self.frames += 1;
        Some(signals)
    }
}

/// Matches every view of a frame, keeping per bank entry the closest view that the
/// entry's bank allows (the whole frame first on ties). Views below the policy's
/// quality are matched too; the policy's rules filter by quality. With a `tenant`,
/// entries scoped to another tenant are left out. A frame whose whole view
/// (`hashes[0]`) is within the negative distance of a negative entry is known benign:
/// none of its views match (a sub-view must not get round a rejection).
pub fn match_views(
    matcher: &Matcher,
    views: &super::views::QueryViews,
    hashes: &[ViewHash],
    tenant: Option<&str>,
) -> Vec<HashMatch> {
    let mut out: Vec<HashMatch> = Vec::new();
    for v in hashes {
        let result = matcher.match_pdq_for(&v.hash, tenant);
        for hit in &result.matches {
            if !views.config.allows(&hit.entry.bank, v) {
                continue;
            }
            let same = out
                .iter_mut()
                .find(|m| *m.bank == *hit.entry.bank && *m.entry_id == *hit.entry.id);
            match same {
                Some(m) if m.distance <= hit.distance => {}
                Some(m) => {
                    m.distance = hit.distance;
                    m.quality = v.quality;
                    m.view = super::views::label(v, &hit.entry.id);
                }
                None => out.push(HashMatch {
                    bank: hit.entry.bank.to_string(),
                    entry_id: hit.entry.id.to_string(),
                    distance: hit.distance,
                    quality: v.quality,
                    view: super::views::label(v, &hit.entry.id),
                }),
            }
        }
    }
    if !out.is_empty()
        && hashes.len() > 1
        && !matcher
            .negative_hits_for(&hashes[0].hash, tenant)
            .is_empty()
    {
        out.clear();
    }
    out
}

/// A stream's risk timeline, bounded; kept beside (not under) the detection lock so
/// readers never wait for hashing or inference.
#[derive(Debug, Default)]
pub(crate) struct Timeline {
    points: VecDeque<Point>,
}

impl Timeline {
    /// Adds a point (the oldest goes when it is full).
    pub(crate) fn push(&mut self, point: Point) {
        if self.points.len() == TIMELINE {
            self.points.pop_front();
        }
        self.points.push_back(point);
    }

    /// The points, oldest first.
    pub(crate) fn points(&self) -> Vec<Point> {
        self.points.iter().copied().collect()
    }
}

fn classify(classifiers: &ClassifierSet, frame: &SampledFrame, signals: &mut FrameSignals) {
    if classifiers.is_empty() {
        return;
    }
    let rgb = frame.rgb();
    let image = RgbImage {
        width: frame.width,
        height: frame.height,
        data: &rgb,
    };
    for r in classifiers.classify(&image) {
        match r.result {
            Ok(c) => signals
                .scores
                .extend(c.categories.iter().map(|cat| ClassifierScore {
                    category: cat.category.clone(),
                    score: f64::from(cat.score),
                    model: c.model.clone(),
                    model_version: c.model_version.clone(),
                })),
            Err(e) => {
                tracing::warn!(model = %r.model, error = %e, "classifier failed on a frame")
            }
        }
    }
}

/// The strongest signal of a frame in [0, 1]: 1 for a bank match, a live video
/// match's fraction, a classifier's score.
pub fn score(signals: &FrameSignals) -> f64 {
    signals
        .hash_matches
        .iter()
        .map(|_| 1.0)
        .chain(signals.video_matches.iter().map(|v| v.percent / 100.0))
        .chain(signals.scores.iter().map(|c| c.score))
        .fold(0.0f64, f64::max)
}

//! Synthetic labelled signal logs, deterministic for a seed: for speed measurements
//! (`firebreak signals generate`, hidden) and tests.
//!
//! Each stream sends `fps` frames a second for `hours`, scored by one model
//! (`synth`/`v1`) for `graphic_violence` and `weapon`. Background scores are uniform
//! in [0, 0.5) with rare benign spikes (0.60..0.78 for three frames); crisis episodes
//! (about one per stream every four hours, 60 to 300 s long) score `graphic_violence`
//! in [0.82, 1.0), and every third episode also matches bank `crisis` at a distance
//! below 32. The labels mark each stream's whole span benign and each episode crisis.
//! The engine's tick is recorded every second. A frame's PDQ hash is random.

use std::path::Path;

use firebreak_policy::policy::{ClassifierScore, FrameSignals, HashMatch};

use super::labels::{Label, Verdict};
use super::log::SegmentWriter;
use super::record::{FrameRecord, SignalRecord};

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct SynthSpec {
    /// Streams.
    pub streams: usize,
    /// Hours of each.
    pub hours: f64,
    /// Frames a second.
    pub fps: f64,
    /// Seed.
    pub seed: u64,
    /// Wall time of the first frame (Unix ms).
    pub start_ms: u64,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Crisis episodes of one stream: (first frame, frames, matched).
fn episodes(rng: &mut Rng, frames: u64, fps: f64) -> Vec<(u64, u64, bool)> {
    let every = (4.0 * 3600.0 * fps) as u64;
    let mut out = Vec::new();
    let mut at = (rng.unit() * every as f64) as u64;
    let mut n = 0;
    while at < frames {
        let len = ((60.0 + rng.unit() * 240.0) * fps) as u64;
        out.push((at, len.min(frames - at), n % 3 == 0));
        n += 1;
        at += len + every / 2 + (rng.unit() * every as f64) as u64;
    }
    out
}

/// Writes the log into `dir` (after any segments there) and its labels; returns the
/// frames written.
pub fn generate(dir: &Path, spec: SynthSpec) -> anyhow::Result<u64> {
    let mut writer = SegmentWriter::new(dir, 64 << 20)?;
    let frames = (spec.hours * 3600.0 * spec.fps) as u64;
    let period_ms = 1000.0 / spec.fps;
    let ids: Vec<String> = (0..spec.streams).map(|i| format!("synth-{i:04}")).collect();
    let mut rngs: Vec<Rng> = (0..spec.streams)
        .map(|i| Rng(spec.seed ^ (i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d)))
        .collect();
    let plans: Vec<Vec<(u64, u64, bool)>> = rngs
        .iter_mut()
        .map(|r| episodes(r, frames, spec.fps))
        .collect();
    let mut labels = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let wall = |f: u64| spec.start_ms + (f as f64 * period_ms) as u64 + i as u64;
        labels.push(Label {
            stream: id.clone(),
            tenant: "synth".into(),
            start_ms: wall(0),
            end_ms: wall(frames),
            verdict: Verdict::Benign,
            by: "synth".into(),
            note: String::new(),
        });
        for &(at, len, _) in &plans[i] {
            labels.push(Label {
                stream: id.clone(),
                tenant: "synth".into(),
                start_ms: wall(at),
                end_ms: wall(at + len),
                verdict: Verdict::Crisis,
                by: "synth".into(),
                note: String::new(),
            });
        }
    }
    let mut spikes = vec![0u32; spec.streams];
    let mut next_tick = spec.start_ms;
    for f in 0..frames {
        let base = spec.start_ms + (f as f64 * period_ms) as u64;
        while next_tick <= base {
            writer.push(&SignalRecord::Tick { wall_ms: next_tick })?;
            next_tick += 1000;
        }
        for (i, id) in ids.iter().enumerate() {
            let rng = &mut rngs[i];
            let episode = plans[i].iter().find(|(a, l, _)| (*a..a + l).contains(&f));
            let mut violence = rng.unit() * 0.5;
            if spikes[i] > 0 {
                spikes[i] -= 1;
                violence = 0.6 + rng.unit() * 0.18;
            } else if rng.unit() < 0.0005 {
                spikes[i] = 3;
            }
            if episode.is_some() {
                violence = 0.82 + rng.unit() * 0.18;
            }
            let mut hash = [0u8; 32];
            for c in hash.chunks_mut(8) {
                c.copy_from_slice(&rng.next().to_le_bytes());
            }
            let hash_matches = match episode {
                Some((_, _, true)) => vec![HashMatch {
                    bank: "crisis".into(),
                    entry_id: format!("entry-{}", rng.next() % 5),
                    distance: (rng.next() % 32) as u32,
                    quality: 100,
                    view: None,
                }],
                _ => Vec::new(),
            };
            let score = |category: &str, score: f64| ClassifierScore {
                category: category.into(),
                score,
                model: "synth".into(),
                model_version: "v1".into(),
            };
            let weapon = rng.unit() * 0.5;
            writer.push(&SignalRecord::Frame(FrameRecord {
                stream: id.clone(),
                tenant: "synth".into(),
                pdq: Some((hash, 100)),
                signals: FrameSignals {
                    media_time: f as f64 / spec.fps,
                    wall_ms: base + i as u64,
                    hash_matches,
                    video_matches: Vec::new(),
                    scores: vec![score("graphic_violence", violence), score("weapon", weapon)],
                },
            }))?;
        }
    }
    writer.finish()?;
    super::labels::append(dir, &labels)?;
    Ok(frames * spec.streams as u64)
}

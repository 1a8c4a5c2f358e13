//! Replay: one or more policies driven by a signal log, exactly as the engine drives
//! the live one — frames, stalls, ends and the engine's ticks in the order they were
//! recorded, each at its recorded wall time — so the same policy gives the same
//! decisions, ids included.
//!
//! Every policy sees every record in one pass (a sweep of 20 settings decodes the log
//! once). Streams are independent, so they are partitioned between threads (rayon):
//! each thread scans the segments, skips other threads' streams by the record's
//! length prefix and stream index, and feeds its own; ticks go to each thread's
//! streams that are not idle (a tick on an idle state is a no-op,
//! [`StreamState::is_idle`]). Results are merged by stream id, so the output does not
//! depend on the number of threads.
//!
//! Re-matching ([`Rematch`]): with other banks or another match distance, each frame's
//! recorded PDQ hash goes through a [`Matcher`] and a fresh live window per stream,
//! as in `engine::detect`; classifier scores stay as recorded.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use firebreak_hashing::Hash256;
use firebreak_matching::matcher::Matcher;
use firebreak_matching::window::{VpdqWindow, WindowConfig};
use firebreak_policy::policy::{
    Decision, FrameSignals, HashMatch, Policy, StreamEvent, StreamState, VideoMatch,
};
use rayon::prelude::*;

use super::log::{ReadStats, for_each_block, segments};
use super::record::{EventKind, SignalRecord};

/// How recorded matches are re-derived.
#[derive(Debug)]
pub enum Rematch {
    /// Keep only recorded hash matches at or below this distance (no banks needed;
    /// the recorded candidates go up to the matcher's query distance, 31).
    Narrow(u32),
    /// Re-match each recorded hash against these banks (at the matcher's distance) and
    /// rebuild the live video window (`window_secs` of media).
    Banks {
        /// The matcher.
        matcher: Box<Matcher>,
        /// Live window length.
        window_secs: f64,
    },
}

/// What to replay.
#[derive(Debug, Default)]
pub struct ReplayOptions {
    /// Only this tenant's streams.
    pub tenant: Option<String>,
    /// Only records at or after this wall time.
    pub from_ms: Option<u64>,
    /// Only records before this wall time.
    pub to_ms: Option<u64>,
    /// Re-derive matches.
    pub rematch: Option<Rematch>,
    /// Threads (0: rayon's default, one per core).
    pub threads: usize,
}

/// A stream seen in the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamInfo {
    /// Its tenant (the last seen).
    pub tenant: String,
    /// Wall time of its first and last frame.
    pub first_ms: u64,
    /// See `first_ms`.
    pub last_ms: u64,
    /// Frames.
    pub frames: u64,
    /// Sum of its runs' spans (first to last frame of each run, ms).
    pub span_ms: u64,
}

/// A replay's result.
#[derive(Debug, Default)]
pub struct Replay {
    /// What reading found (corrupt blocks, torn tails...).
    pub stats: ReadStats,
    /// Records that could not be decoded.
    pub bad_records: u64,
    /// Frames replayed.
    pub frames: u64,
    /// Streams, by id.
    pub streams: BTreeMap<String, StreamInfo>,
    /// Per policy (in the order given): its decisions, by stream id, each stream's in
    /// order.
    pub decisions: Vec<Vec<Decision>>,
}

impl Replay {
    /// Stream-hours observed (the sum of each stream's first-to-last-frame spans).
    pub fn stream_hours(&self) -> f64 {
        self.streams.values().map(|s| s.span_ms).sum::<u64>() as f64 / 3_600_000.0
    }
}

struct Run {
    tenant: String,
    states: Vec<StreamState>,
    ended: bool,
    window: Option<VpdqWindow>,
    decisions: Vec<Vec<Decision>>,
    info: StreamInfo,
    run_first_ms: Option<u64>,
}

impl Run {
    fn new(id: &str, tenant: &str, policies: &[Arc<Policy>], rematch: Option<&Rematch>) -> Run {
        Run {
            tenant: tenant.to_owned(),
            states: policies.iter().map(|p| StreamState::new(id, p)).collect(),
            ended: false,
            window: window(rematch),
            decisions: vec![Vec::new(); policies.len()],
            info: StreamInfo {
                tenant: tenant.to_owned(),
                ..StreamInfo::default()
            },
            run_first_ms: None,
        }
    }

    /// A fresh start for a reused id (the engine's new slot), keeping decisions.
    fn restart(
        &mut self,
        id: &str,
        tenant: &str,
        policies: &[Arc<Policy>],
        rematch: Option<&Rematch>,
    ) {
        self.close_span();
        self.tenant = tenant.to_owned();
        self.info.tenant = tenant.to_owned();
        self.states = policies.iter().map(|p| StreamState::new(id, p)).collect();
        self.window = window(rematch);
        self.ended = false;
    }

    fn close_span(&mut self) {
        if let Some(first) = self.run_first_ms.take() {
            self.info.span_ms += self.info.last_ms.saturating_sub(first);
        }
    }
}

fn window(rematch: Option<&Rematch>) -> Option<VpdqWindow> {
    match rematch {
        Some(Rematch::Banks { window_secs, .. }) => Some(VpdqWindow::new(WindowConfig {
            window_secs: *window_secs,
            enter_percent: 100.0,
            exit_percent: 100.0,
            ..WindowConfig::default()
        })),
        _ => None,
    }
}

/// FNV-1a: a stream's thread, stable across runs.
fn partition(id: &str, parts: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % parts as u64) as usize
}

/// Replays `policies` over the log in `dir`.
pub fn replay(
    dir: &Path,
    policies: &[Arc<Policy>],
    opts: &ReplayOptions,
) -> anyhow::Result<Replay> {
    let files = segments(dir)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads)
        .build()?;
    let parts = pool.current_num_threads().max(1);
    let results: Vec<anyhow::Result<Worker<'_>>> = pool.install(|| {
        (0..parts)
            .into_par_iter()
            .map(|part| {
                let mut w = Worker {
                    part,
                    parts,
                    policies,
                    opts,
                    runs: HashMap::new(),
                    stats: ReadStats::default(),
                    bad: 0,
                    frames: 0,
                };
                for f in &files {
                    let bytes = std::fs::read(f)?;
                    w.segment(&bytes);
                }
                Ok(w)
            })
            .collect()
    });
    let mut out = Replay {
        decisions: vec![Vec::new(); policies.len()],
        ..Replay::default()
    };
    let mut runs: Vec<(String, Run)> = Vec::new();
    for w in results {
        let w = w?;
        if w.part == 0 {
            out.stats = w.stats;
        }
        out.bad_records += w.bad;
        out.frames += w.frames;
        runs.extend(w.runs);
    }
    runs.sort_by(|a, b| a.0.cmp(&b.0));
    for (id, mut run) in runs {
        run.close_span();
        for (i, d) in run.decisions.into_iter().enumerate() {
            out.decisions[i].extend(d);
        }
        if run.info.frames > 0 {
            out.streams.insert(id, run.info);
        }
    }
    Ok(out)
}

struct Worker<'a> {
    part: usize,
    parts: usize,
    policies: &'a [Arc<Policy>],
    opts: &'a ReplayOptions,
    runs: HashMap<String, Run>,
    stats: ReadStats,
    bad: u64,
    frames: u64,
}

impl Worker<'_> {
    fn segment(&mut self, bytes: &[u8]) {
        let mut stats = std::mem::take(&mut self.stats);
        let mut bad = 0;
        let parts = self.parts;
        let part = self.part;
        for_each_block(bytes, &mut stats, |block| {
            // Which of the block's strings are streams of this thread.
            let mine: Vec<bool> = block
                .strings
                .iter()
                .map(|s| partition(s, parts) == part)
                .collect();
            for raw in block.records() {
                let Ok(raw) = raw else {
                    bad += u64::from(part == 0);
                    break;
                };
                match raw.stream {
                    Some(s) if !mine.get(s as usize).copied().unwrap_or(part == 0) => continue,
                    _ => {}
                }
                match block.decode(raw) {
                    Ok(Some(r)) => self.apply(r),
                    Ok(None) => {}
                    Err(_) => bad += 1,
                }
            }
        });
        self.stats = stats;
        self.bad += bad;
    }

    fn in_range(&self, wall_ms: u64) -> bool {
        self.opts.from_ms.is_none_or(|f| wall_ms >= f)
            && self.opts.to_ms.is_none_or(|t| wall_ms < t)
    }

    fn wanted(&self, tenant: &str) -> bool {
        self.opts.tenant.as_deref().is_none_or(|t| t == tenant)
    }

    fn run(&mut self, id: &str, tenant: &str) -> &mut Run {
        let (policies, rematch) = (self.policies, self.opts.rematch.as_ref());
        let run = self
            .runs
            .entry(id.to_owned())
            .or_insert_with(|| Run::new(id, tenant, policies, rematch));
        if run.tenant != tenant {
            run.restart(id, tenant, policies, rematch);
        }
        run
    }

    fn apply(&mut self, record: SignalRecord) {
        match record {
            SignalRecord::Tick { wall_ms } => {
                if !self.in_range(wall_ms) {
                    return;
                }
                for run in self.runs.values_mut() {
                    for (i, state) in run.states.iter_mut().enumerate() {
                        if !state.is_idle() {
                            run.decisions[i].extend(state.tick(&self.policies[i], wall_ms));
                        }
                    }
                }
            }
            SignalRecord::Event(e) => {
                if !self.in_range(e.wall_ms) || !self.wanted(&e.tenant) {
                    return;
                }
                let policies = self.policies;
                let run = self.run(&e.stream, &e.tenant);
                let event = match e.kind {
                    EventKind::Stalled => StreamEvent::Stalled,
                    EventKind::Ended => {
                        run.ended = true;
                        run.close_span();
                        if let Some(w) = &mut run.window {
                            *w = VpdqWindow::new(*w.config());
                        }
                        StreamEvent::Ended
                    }
                };
                for (i, state) in run.states.iter_mut().enumerate() {
                    run.decisions[i].extend(state.on_event(&policies[i], event, e.wall_ms));
                }
            }
            SignalRecord::Frame(mut f) => {
                if !self.in_range(f.signals.wall_ms) || !self.wanted(&f.tenant) {
                    return;
                }
                self.frames += 1;
                let (policies, rematch) = (self.policies, self.opts.rematch.as_ref());
                let run = self.run(&f.stream, &f.tenant);
                if run.ended {
                    run.restart(&f.stream, &f.tenant, policies, rematch);
                }
                let wall = f.signals.wall_ms;
                if run.run_first_ms.is_none() {
                    run.run_first_ms = Some(wall);
                }
                if run.info.frames == 0 {
                    run.info.first_ms = wall;
                }
                run.info.last_ms = wall;
                run.info.frames += 1;
                rematch_frame(rematch, run.window.as_mut(), f.pdq, &mut f.signals);
                for (i, state) in run.states.iter_mut().enumerate() {
                    run.decisions[i].extend(state.on_frame(&policies[i], &f.signals));
                }
            }
        }
    }
}

fn rematch_frame(
    rematch: Option<&Rematch>,
    window: Option<&mut VpdqWindow>,
    pdq: Option<([u8; 32], u8)>,
    signals: &mut FrameSignals,
) {
    match rematch {
        None => {}
        Some(Rematch::Narrow(d)) => signals.hash_matches.retain(|m| m.distance <= *d),
        Some(Rematch::Banks { matcher, .. }) => {
            signals.hash_matches.clear();
            signals.video_matches.clear();
            let Some((bytes, quality)) = pdq else { return };
            let hash = Hash256::from_bytes(&bytes);
            for hit in matcher.match_pdq(&hash).matches {
                signals.hash_matches.push(HashMatch {
                    bank: hit.entry.bank.to_string(),
                    entry_id: hit.entry.id.to_string(),
                    distance: hit.distance,
                    quality,
                    // Re-matching uses the whole frame's hash only.
                    view: None,
                });
            }
            if let Some(window) = window {
                window.push(signals.media_time, hash, quality, |h| {
                    let mut v: Vec<u32> = matcher
                        .frame_video_hits(h)
                        .into_iter()
                        .map(|(v, _)| v)
                        .collect();
                    v.dedup();
                    v
                });
                for (video, percent) in window.percentages() {
                    if percent > 0.0 {
                        let entry = matcher.video_entry(video);
                        signals.video_matches.push(VideoMatch {
                            bank: entry.bank.to_string(),
                            entry_id: entry.id.to_string(),
                            percent,
                        });
                    }
                }
            }
        }
    }
}

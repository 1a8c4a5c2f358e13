//! Live vPDQ windows: for one stream, the vPDQ query-match percentage of its last few
//! seconds against every banked video, kept up to date frame by frame.
//!
//! The window holds the stream's sampled frame hashes from the last `window_secs` of
//! media time. Its unique good frames (quality at least the vPDQ threshold, exact
//! duplicates counted once) are the query side of a vPDQ comparison; a banked video's
//! percentage is the share of them within the vPDQ distance of one of its frames.
//!
//! Each unique hash is looked up in the index once, when it enters the window, and its
//! set of matched videos is kept with it; when its last copy leaves, those videos'
//! counts go down again. So a frame costs one index query plus work proportional to the
//! videos it matched, never a recomputation of the window. The percentages are exactly
//! what [`firebreak_hashing::vpdq::compare`] would give for the window's frames, with one stated
//! difference: quality filtering happens before deduplication (vPDQ's reference dedupes
//! first, which differs only when identical hashes carry different qualities).
//!
//! A video *enters* when its percentage reaches `enter_percent` with at least
//! `min_frames` unique frames in the window, and *leaves* when it falls below
//! `exit_percent`; each crossing is one event. Time is passed in (media seconds).

use std::collections::{HashMap, VecDeque};

use firebreak_hashing::Hash256;

/// Window settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowConfig {
    /// Media seconds of history.
    pub window_secs: f64,
    /// Frames below this quality are ignored.
    pub min_quality: u8,
    /// Percentage at which a video enters.
    pub enter_percent: f64,
    /// Percentage below which an entered video leaves (at most `enter_percent`).
    pub exit_percent: f64,
    /// Unique good frames needed before anything can enter.
    pub min_frames: usize,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            window_secs: 10.0,
            min_quality: firebreak_hashing::vpdq::QUALITY_THRESHOLD,
            enter_percent: 50.0,
            exit_percent: 25.0,
            min_frames: 4,
        }
    }
}

/// A crossing of a video's percentage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WindowEvent {
    /// The video's percentage reached the enter level.
    Entered {
        /// The banked video (the lookup's id).
        video: u32,
        /// Its percentage now.
        percent: f64,
        /// Media time of the frame that caused it.
        at: f64,
    },
    /// The video's percentage fell below the exit level.
    Left {
        /// The banked video.
        video: u32,
        /// Its percentage now.
        percent: f64,
        /// Media time of the frame that caused it.
        at: f64,
    },
}

#[derive(Debug)]
struct Unique {
    copies: u32,
    videos: Box<[u32]>,
}

/// One stream's rolling window.
#[derive(Debug)]
pub struct VpdqWindow {
    config: WindowConfig,
    frames: VecDeque<(f64, Hash256)>,
    unique: HashMap<Hash256, Unique>,
    counts: HashMap<u32, usize>,
    entered: Vec<u32>,
}

impl VpdqWindow {
    /// An empty window.
    pub fn new(config: WindowConfig) -> Self {
        VpdqWindow {
            config,
            frames: VecDeque::new(),
            unique: HashMap::new(),
            counts: HashMap::new(),
            entered: Vec::new(),
        }
    }

    /// Adds a sampled frame at media time `at` (non-decreasing). `lookup` returns the
    /// banked videos with a frame within the vPDQ distance of a hash; it is called only
    /// for hashes not already in the window.
    pub fn push(
        &mut self,
        at: f64,
        hash: Hash256,
        quality: u8,
        lookup: impl FnOnce(&Hash256) -> Vec<u32>,
    ) -> Vec<WindowEvent> {
        self.expire(at);
        if quality >= self.config.min_quality {
            self.frames.push_back((at, hash));
            match self.unique.get_mut(&hash) {
                Some(u) => u.copies += 1,
                None => {
                    let mut videos = lookup(&hash);
                    videos.sort_unstable();
                    videos.dedup();
                    for v in &videos {
                        *self.counts.entry(*v).or_default() += 1;
                    }
                    self.unique.insert(
                        hash,
                        Unique {
                            copies: 1,
                            videos: videos.into(),
                        },
                    );
                }
            }
        }
        self.crossings(at)
    }

    /// Moves the window to media time `at` without a new frame (a stalled stream still
    /// ages out). Returns the crossings this causes.
    pub fn advance(&mut self, at: f64) -> Vec<WindowEvent> {
        self.expire(at);
        self.crossings(at)
    }

    fn expire(&mut self, now: f64) {
        while let Some(&(t, hash)) = self.frames.front() {
            if t > now - self.config.window_secs {
                break;
            }
            self.frames.pop_front();
            let u = self
                .unique
                .get_mut(&hash)
                .expect("every window frame has its unique entry");
            u.copies -= 1;
            if u.copies == 0 {
                let u = self.unique.remove(&hash).expect("present");
                for v in u.videos.iter() {
                    let c = self.counts.get_mut(v).expect("counted on entry");
                    *c -= 1;
                    if *c == 0 {
                        self.counts.remove(v);
                    }
                }
            }
        }
    }

    fn crossings(&mut self, at: f64) -> Vec<WindowEvent> {
        let mut events = Vec::new();
        let enough = self.unique.len() >= self.config.min_frames;
        let mut candidates: Vec<u32> = self.counts.keys().copied().collect();
        candidates.sort_unstable();
        for video in candidates {
            let percent = self.percent(video);
            if enough && percent >= self.config.enter_percent && !self.entered.contains(&video) {
                self.entered.push(video);
                events.push(WindowEvent::Entered { video, percent, at });
            }
        }
        let exit = self.config.exit_percent.min(self.config.enter_percent);
        let mut still = Vec::with_capacity(self.entered.len());
        for &video in &self.entered {
            let percent = self.percent(video);
            if percent < exit {
                events.push(WindowEvent::Left { video, percent, at });
            } else {
                still.push(video);
            }
        }
        self.entered = still;
        events
    }

    /// The current query-match percentage of `video` (0 when nothing matches).
    pub fn percent(&self, video: u32) -> f64 {
        match self.counts.get(&video) {
            Some(&n) if !self.unique.is_empty() => n as f64 * 100.0 / self.unique.len() as f64,
            _ => 0.0,
        }
    }

    /// Every video with a non-zero percentage, ascending by id.
    pub fn percentages(&self) -> Vec<(u32, f64)> {
        let mut out: Vec<(u32, f64)> = self.counts.keys().map(|&v| (v, self.percent(v))).collect();
        out.sort_by_key(|(v, _)| *v);
        out
    }

    /// Unique good frames in the window.
    pub fn unique_frames(&self) -> usize {
        self.unique.len()
    }

    /// The videos currently entered.
    pub fn entered(&self) -> &[u32] {
        &self.entered
    }
}

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
//!
//! Whatever the timestamps (a stream whose media time is stuck would otherwise keep
//! every frame), the window holds at most `max_frames` frames: beyond that the oldest
//! leaves as if it had aged out.

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
    /// Frames held at most, whatever their times (at least 1).
    pub max_frames: usize,
}

/// The default frame cap: 10 s of every frame at 60 fps with room to spare.
pub const DEFAULT_MAX_FRAMES: usize = 1024;

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            window_secs: 10.0,
            min_quality: firebreak_hashing::vpdq::QUALITY_THRESHOLD,
            enter_percent: 50.0,
            exit_percent: 25.0,
            min_frames: 4,
            max_frames: DEFAULT_MAX_FRAMES,
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

    /// Its configuration.
    pub fn config(&self) -> &WindowConfig {
        &self.config
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
            while self.frames.len() >= self.config.max_frames.max(1) {
                self.pop_oldest();
            }
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
        while let Some(&(t, _)) = self.frames.front() {
            if t > now - self.config.window_secs {
                break;
            }
            self.pop_oldest();
        }
    }

    /// Removes the oldest frame; its unique hash's matches leave with its last copy.
    fn pop_oldest(&mut self) {
        let Some((_, hash)) = self.frames.pop_front() else {
            return;
        };
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

    /// Good frames in the window, duplicates included (at most `max_frames`).
    pub fn frames(&self) -> usize {
        self.frames.len()
    }

    /// The videos currently entered.
    pub fn entered(&self) -> &[u32] {
        &self.entered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(n: u64) -> Hash256 {
        Hash256::from_limbs([n, n.rotate_left(17), !n, n ^ 0x5555])
    }

    /// A stream stuck on one media time never ages out; the cap of 5 still holds the
    /// window to the 5 newest frames, and the matches of evicted frames leave with them.
    #[test]
    fn the_frame_cap_holds_whatever_the_timestamps() {
        let mut w = VpdqWindow::new(WindowConfig {
            max_frames: 5,
            min_frames: 1,
            ..WindowConfig::default()
        });
        // 5 frames matching video 7, all at media time 0.
        for n in 0..5 {
            w.push(0.0, hash(n), 100, |_| vec![7]);
        }
        assert_eq!((w.frames(), w.unique_frames()), (5, 5));
        assert_eq!(w.percent(7), 100.0);
        // 3 non-matching frames, still at time 0: 3 of the 5 matching ones leave.
        for n in 100..103 {
            w.push(0.0, hash(n), 100, |_| vec![]);
        }
        assert_eq!((w.frames(), w.unique_frames()), (5, 5));
        assert_eq!(w.percent(7), 40.0);
        // 997 more: the window stays at 5, the last 5 non-matching.
        let mut last = Vec::new();
        for n in 200..1197 {
            last = w.push(0.0, hash(n), 100, |_| vec![]);
        }
        assert_eq!((w.frames(), w.unique_frames()), (5, 5));
        assert_eq!(w.percent(7), 0.0);
        assert!(w.entered().is_empty(), "{last:?}");
    }

    /// Copies of one hash count against the cap too: 9 copies under a cap of 4 leave 4
    /// frames and 1 unique hash.
    #[test]
    fn duplicates_count_against_the_cap() {
        let mut w = VpdqWindow::new(WindowConfig {
            max_frames: 4,
            ..WindowConfig::default()
        });
        for _ in 0..9 {
            w.push(1.0, hash(1), 100, |_| vec![3]);
        }
        assert_eq!((w.frames(), w.unique_frames()), (4, 1));
        assert_eq!(w.percent(3), 100.0);
    }

    #[test]
    fn the_default_cap_is_1024_frames() {
        let mut w = VpdqWindow::new(WindowConfig::default());
        for n in 0..1500 {
            w.push(0.0, hash(n), 100, |_| vec![]);
        }
        assert_eq!(w.frames(), 1024);
    }
}

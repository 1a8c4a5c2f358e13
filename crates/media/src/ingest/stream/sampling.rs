//! Which decoded frames become samples, on what media time, and when a stream that
//! falls behind degrades. Pure: media time and drops are passed in, no FFmpeg types.
//!
//! - [`Timeline`] maps each frame's stream timestamp onto the stream's media time,
//!   which only moves forward: across demuxer sessions (reconnects, discontinuities) a
//!   session starts one frame step after the last frame, and a timestamp *jump* inside a
//!   session (far ahead, backwards, stuck on one value, missing) is treated the same
//!   way: the frame continues one step after the last one and the jump is reported once,
//!   so sampling and the live window carry on instead of stopping or emptying.
//! - [`Sampler`] picks frames (every frame, N per second of media time, keyframes) and
//!   degrades to keyframes only after `degrade_after` queue drops.

use super::Sampling;

/// A timestamp that was not usable as it came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PtsJump {
    /// Further ahead of the previous frame than the configured maximum step.
    Forward,
    /// Behind the previous frame.
    Backward,
    /// The same as the previous frame's (a run of them is one jump).
    Stuck,
    /// No timestamp at all (a run of them is one jump).
    Missing,
}

/// The frame step assumed until one is measured (30 fps).
const DEFAULT_STEP: f64 = 1.0 / 30.0;
/// Measured steps above this are gaps, not the frame rate.
const MAX_STEP: f64 = 1.0;

/// Media time of one stream. See the module documentation.
#[derive(Debug, Clone)]
pub struct Timeline {
    /// Forward steps larger than this (seconds) are jumps.
    max_step: f64,
    /// Media time of the last frame, if any.
    last: Option<f64>,
    /// Stream time of the last frame whose timestamp was used, in this session.
    last_raw: Option<f64>,
    /// Media time = stream time + shift.
    shift: f64,
    /// The frame step: the last measured one (at most a second).
    step: f64,
    /// Inside a run of stuck or missing timestamps (reported once).
    synthesizing: bool,
}

impl Timeline {
    /// A stream with no frame yet, whose forward steps beyond `max_step` seconds are
    /// jumps.
    pub fn new(max_step: f64) -> Self {
        Timeline {
            max_step,
            last: None,
            last_raw: None,
            shift: 0.0,
            step: DEFAULT_STEP,
            synthesizing: false,
        }
    }

    /// One step after the last frame (0 before any).
    fn next(&self) -> f64 {
        self.last.map_or(0.0, |l| l + self.step)
    }

    /// A new demuxer session (a reconnect or a discontinuity): its stream time 0 is one
    /// step after the last frame.
    pub fn restart(&mut self) {
        self.shift = self.next();
        self.last_raw = None;
        self.synthesizing = false;
    }

    /// The media time a frame of stream time `raw` will most likely be placed at, before
    /// it is decoded: `None` unless timestamps run normally (the session has had one,
    /// none is being synthesized) and `raw` is within `max_step` of the last one
    /// (packets come in decode order, so a frame may precede the last one a little).
    pub fn predict(&self, raw: f64) -> Option<f64> {
        let last = self.last_raw?;
        (raw.is_finite() && !self.synthesizing && (raw - last).abs() <= self.max_step)
            .then_some(self.shift + raw)
    }

    /// Places a frame whose stream time (seconds from its session's start) is `raw`
    /// (`None`: no timestamp). Returns its media time, and the jump when the timestamp
    /// was not used as it came.
    pub fn place(&mut self, raw: Option<f64>) -> (f64, Option<PtsJump>) {
        let raw = raw.filter(|r| r.is_finite());
        let (t, jump) = match (raw, self.last_raw) {
            (None, _) => {
                let jump = (!self.synthesizing).then_some(PtsJump::Missing);
                self.synthesizing = true;
                (self.next(), jump)
            }
            (Some(r), Some(p)) if r == p => {
                let jump = (!self.synthesizing).then_some(PtsJump::Stuck);
                self.synthesizing = true;
                (self.next(), jump)
            }
            (Some(r), Some(p)) if !self.synthesizing && (r < p || r - p > self.max_step) => {
                let jump = if r < p {
                    PtsJump::Backward
                } else {
                    PtsJump::Forward
                };
                self.shift = self.next() - r;
                self.last_raw = Some(r);
                (self.next(), Some(jump))
            }
            (Some(r), prev) => {
                // A normal step, a session's first timestamp, or the end of a run of
                // stuck or missing ones: used as it is when it moves forward by at most
                // the maximum step, otherwise placed one step on without a new report.
                let t = self.shift + r;
                let t = match self.last {
                    Some(last) if t <= last || t - last > self.max_step => {
                        self.shift = self.next() - r;
                        self.next()
                    }
                    _ => t,
                };
                if let (Some(p), false) = (prev, self.synthesizing)
                    && r - p <= MAX_STEP
                {
                    self.step = r - p;
                }
                self.synthesizing = false;
                self.last_raw = Some(r);
                (t, None)
            }
        };
        self.last = Some(t);
        (t, jump)
    }
}

/// Frame selection and degradation of one stream.
#[derive(Debug, Clone)]
pub struct Sampler {
    mode: Sampling,
    /// Media time from which the next frame is sampled (per-second mode).
    next: f64,
    degrade_after: u64,
    drops: u64,
    degraded: bool,
}

impl Sampler {
    /// Samples in `mode`; `degrade_after` queue drops switch to keyframes only.
    pub fn new(mode: Sampling, degrade_after: u64) -> Self {
        Sampler {
            mode,
            next: 0.0,
            degrade_after,
            drops: 0,
            degraded: false,
        }
    }

    /// Whether the decoder may skip every frame but keyframes (keyframes mode, or
    /// degraded).
    pub fn keyframes_only(&self) -> bool {
        self.mode == Sampling::Keyframes || self.degraded
    }

    /// Whether the frame at media time `t` is sampled. Media times never decrease
    /// ([`Timeline`]).
    pub fn take(&mut self, t: f64) -> bool {
        match self.mode {
            Sampling::Every | Sampling::Keyframes => true,
            // Degraded: only keyframes are decoded, each is sampled.
            Sampling::PerSecond(_) if self.degraded => true,
            Sampling::PerSecond(rate) => {
                if t + 1e-6 >= self.next {
                    self.next = ((t * rate + 1e-6).floor() + 1.0) / rate;
                    true
                } else {
                    false
                }
            }
        }
    }

    /// Whether a frame at media time `t` will certainly not be sampled (per-second
    /// mode: it comes before the next sampling time), so a decoder need not produce it
    /// if no other frame refers to it.
    pub fn skips(&self, t: f64) -> bool {
        matches!(self.mode, Sampling::PerSecond(_)) && !self.degraded && t + 1e-3 < self.next
    }

    /// A sampled frame was dropped because the queue was full. True when this drop
    /// degrades the stream to keyframes only (once: it never un-degrades).
    pub fn dropped(&mut self) -> bool {
        self.drops += 1;
        if !self.degraded && self.drops >= self.degrade_after {
            self.degraded = true;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn times(t: &mut Timeline, raws: &[Option<f64>]) -> Vec<(f64, Option<PtsJump>)> {
        raws.iter()
            .map(|&r| {
                let (m, j) = t.place(r);
                ((m * 1e6).round() / 1e6, j)
            })
            .collect()
    }

    #[test]
    fn frames_before_the_next_sampling_time_are_skippable() {
        let mut s = Sampler::new(Sampling::PerSecond(2.0), 3);
        // Nothing sampled yet: the next sampling time is 0, nothing is skipped.
        assert!(!s.skips(0.0));
        assert!(s.take(0.0));
        // Next at 0.5: a frame at 0.46 is skipped, 0.4995 (within 1 ms) and 0.5 are not.
        assert!(s.skips(0.46));
        assert!(!s.skips(0.4995));
        assert!(!s.skips(0.5));
        // Every frame is sampled in the other modes, and once degraded.
        assert!(!Sampler::new(Sampling::Every, 3).skips(0.0));
        assert!(!Sampler::new(Sampling::Keyframes, 3).skips(0.0));
        for _ in 0..3 {
            s.dropped();
        }
        assert!(!s.skips(0.46));
    }

    #[test]
    fn a_frame_is_predicted_only_while_timestamps_run_normally() {
        let mut t = Timeline::new(60.0);
        // No frame in the session yet.
        assert_eq!(t.predict(0.0), None);
        t.place(Some(0.0));
        t.place(Some(0.04));
        // Ahead and (decode order) a little behind: where `place` would put them.
        assert_eq!(t.predict(0.12), Some(0.12));
        assert_eq!(t.predict(0.02), Some(0.02));
        assert_eq!(t.predict(f64::NAN), None);
        // Beyond the maximum step: a jump, not predicted.
        assert_eq!(t.predict(61.0), None);
        // A new session continues one step after the last frame; predicted once it
        // has a timestamp of its own.
        t.restart();
        assert_eq!(t.predict(0.0), None);
        let (m, _) = t.place(Some(0.0));
        assert!((m - 0.08).abs() < 1e-9, "{m}");
        assert!((t.predict(0.04).unwrap() - 0.12).abs() < 1e-9);
        // While timestamps are missing: nothing is predicted.
        t.place(None);
        assert_eq!(t.predict(0.08), None);
    }

    #[test]
    fn per_second_sampling_picks_the_first_frame_of_each_interval() {
        // 25 fps for 2 s at 2 samples/s: intervals start at 0, 0.5, 1.0, 1.5; the first
        // frames at or after them are frames 0, 13 (0.52; 0.48 is before), 25 and 38
        // (1.52).
        let mut s = Sampler::new(Sampling::PerSecond(2.0), 10);
        let taken: Vec<u32> = (0..50).filter(|&k| s.take(f64::from(k) / 25.0)).collect();
        assert_eq!(taken, vec![0, 13, 25, 38]);
        assert!(!s.keyframes_only());
    }

    #[test]
    fn every_and_keyframes_take_every_decoded_frame() {
        let mut every = Sampler::new(Sampling::Every, 10);
        let mut keys = Sampler::new(Sampling::Keyframes, 10);
        assert!((0..10).all(|k| every.take(f64::from(k) * 0.01)));
        assert!((0..10).all(|k| keys.take(f64::from(k) * 0.01)));
        assert!(!every.keyframes_only());
        assert!(keys.keyframes_only());
    }

    #[test]
    fn drops_degrade_once_after_the_threshold_then_every_keyframe_is_sampled() {
        let mut s = Sampler::new(Sampling::PerSecond(1.0), 3);
        assert!(s.take(0.0));
        assert!(!s.take(0.5));
        assert_eq!(
            (0..5).map(|_| s.dropped()).collect::<Vec<_>>(),
            vec![false, false, true, false, false]
        );
        assert!(s.keyframes_only());
        // Only keyframes reach the sampler now: each is taken, however close.
        assert!(s.take(0.6) && s.take(0.7));
    }

    #[test]
    fn steady_timestamps_pass_through_and_sessions_continue_one_step_on() {
        let mut t = Timeline::new(60.0);
        assert_eq!(
            times(&mut t, &[Some(0.0), Some(0.04), Some(0.08)]),
            vec![(0.0, None), (0.04, None), (0.08, None)]
        );
        // A reconnect: the new session's stream time 0 lands one step (0.04) on.
        t.restart();
        assert_eq!(
            times(&mut t, &[Some(0.0), Some(0.04)]),
            vec![(0.12, None), (0.16, None)]
        );
    }

    #[test]
    fn a_far_forward_jump_continues_one_step_on_and_is_reported_once() {
        let mut t = Timeline::new(60.0);
        let got = times(
            &mut t,
            &[Some(1.0), Some(1.04), Some(1001.04), Some(1001.08)],
        );
        assert_eq!(
            got,
            vec![
                (1.0, None),
                (1.04, None),
                (1.08, Some(PtsJump::Forward)),
                (1.12, None)
            ]
        );
        // A real gap below the maximum step is kept.
        let mut t = Timeline::new(60.0);
        let got = times(&mut t, &[Some(0.0), Some(30.0)]);
        assert_eq!(got, vec![(0.0, None), (30.0, None)]);
    }

    #[test]
    fn a_backward_jump_continues_one_step_on() {
        let mut t = Timeline::new(60.0);
        let got = times(&mut t, &[Some(10.0), Some(10.5), Some(2.0), Some(2.5)]);
        // The step measured is 0.5 s.
        assert_eq!(
            got,
            vec![
                (10.0, None),
                (10.5, None),
                (11.0, Some(PtsJump::Backward)),
                (11.5, None)
            ]
        );
    }

    #[test]
    fn stuck_and_missing_timestamps_advance_one_step_per_frame_reported_once_per_run() {
        let mut t = Timeline::new(60.0);
        let got = times(
            &mut t,
            &[
                Some(0.0),
                Some(0.1),
                Some(0.1),
                Some(0.1),
                Some(0.4),
                None,
                None,
                Some(0.8),
            ],
        );
        assert_eq!(
            got,
            vec![
                (0.0, None),
                (0.1, None),
                (0.2, Some(PtsJump::Stuck)),
                (0.3, None),
                // The run ends where the timestamps resume: 0.4 is ahead of 0.3.
                (0.4, None),
                (0.5, Some(PtsJump::Missing)),
                (0.6, None),
                (0.8, None),
            ]
        );
        // A stream with no timestamp at all runs at the default 30 fps.
        let mut t = Timeline::new(60.0);
        let got = times(&mut t, &[None, None, None]);
        assert_eq!(
            got,
            vec![
                (0.0, Some(PtsJump::Missing)),
                (0.033333, None),
                (0.066667, None)
            ]
        );
    }

    #[test]
    fn media_time_never_decreases_whatever_the_timestamps() {
        let mut t = Timeline::new(5.0);
        let raws = [
            Some(3.0),
            Some(-7.0),
            None,
            Some(f64::NAN),
            Some(1e12),
            Some(1e12),
            Some(0.0),
            Some(0.01),
        ];
        let got = times(&mut t, &raws);
        assert!(got.windows(2).all(|w| w[1].0 > w[0].0), "{got:?}");
        assert!(got.last().unwrap().0 < 10.0, "{got:?}");
    }
}

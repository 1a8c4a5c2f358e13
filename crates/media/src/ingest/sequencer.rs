//! Ordering pushed segments: explicit sequence numbers, a small reorder window,
//! duplicates dropped, gaps recorded. Pure logic, no I/O.
//!
//! A segment with the next expected number is released at once, together with any
//! held segments that follow it. A segment ahead of that is held, up to `window`
//! numbers ahead; when one arrives further ahead, the missing numbers are given up as a
//! gap and the held segments are released. A segment at or below the last released
//! number is a duplicate (or, if its number was given up, late): dropped and counted.
//!
//! Work per segment is bounded whatever the number: a jump of any size is one gap (the
//! numbers given up are counted, not enumerated), and numbers above [`MAX_SEQUENCE`]
//! are refused, so no arithmetic on them can overflow.

use std::collections::{BTreeMap, BTreeSet};

/// The largest sequence number accepted (2^53 - 1: also exact in JSON numbers).
pub const MAX_SEQUENCE: u64 = (1 << 53) - 1;

/// How many given-up numbers are remembered, to tell a late segment from a duplicate.
const GIVEN_UP_KEPT: u64 = 4096;

/// Counters, each case counted, never silent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SequencerStats {
    /// Segments offered.
    pub received: u64,
    /// Segments released in order.
    pub released: u64,
    /// Segments dropped because that number was already received.
    pub duplicates: u64,
    /// Segments dropped because their number had been given up as a gap.
    pub late: u64,
    /// Segment numbers given up (never received in time).
    pub missing: u64,
    /// Segments that arrived ahead of a missing one and were held.
    pub reordered: u64,
}

/// What happened to one offered segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intake<T> {
    /// Released now, in order, with any held segments it unblocked; `gap_before`
    /// counts numbers given up just before the first of them.
    Released {
        /// `(sequence, segment)` in order.
        segments: Vec<(u64, T)>,
        /// Numbers skipped before `segments[0]`.
        gap_before: u64,
    },
    /// Held until the missing numbers before it arrive (or are given up).
    Held,
    /// Already received: dropped.
    Duplicate,
    /// Its number was given up as a gap earlier: dropped.
    Late,
    /// Above [`MAX_SEQUENCE`]: refused (not counted as received).
    OutOfRange,
}

/// Orders one stream's segments.
#[derive(Debug)]
pub struct Sequencer<T> {
    next: Option<u64>,
    window: u64,
    held: BTreeMap<u64, T>,
    given_up: BTreeSet<u64>,
    stats: SequencerStats,
}

impl<T> Sequencer<T> {
    /// A sequencer expecting segment 0 first, holding segments up to `window` numbers
    /// ahead of the next expected.
    pub fn new(window: u64) -> Self {
        Self::starting_at(0, window)
    }

    /// A sequencer expecting segment `first` first (a stream resumed mid-way).
    pub fn starting_at(first: u64, window: u64) -> Self {
        Sequencer {
            next: Some(first),
            window: window.max(1),
            held: BTreeMap::new(),
            given_up: BTreeSet::new(),
            stats: SequencerStats::default(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> SequencerStats {
        self.stats
    }

    /// The sequence number expected next (`None` once finished).
    pub fn next_expected(&self) -> Option<u64> {
        self.next
    }

    /// Segments currently held.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Offers segment `seq`.
    pub fn push(&mut self, seq: u64, segment: T) -> Intake<T> {
        if seq > MAX_SEQUENCE {
            return Intake::OutOfRange;
        }
        self.stats.received += 1;
        let next = *self.next.get_or_insert(seq);
        if seq < next {
            if self.given_up.remove(&seq) {
                self.stats.late += 1;
                return Intake::Late;
            }
            self.stats.duplicates += 1;
            return Intake::Duplicate;
        }
        if self.held.contains_key(&seq) {
            self.stats.duplicates += 1;
            return Intake::Duplicate;
        }
        if seq > next {
            self.stats.reordered += 1;
            self.held.insert(seq, segment);
            if seq - next < self.window {
                return Intake::Held;
            }
            // Too far ahead: give up missing numbers, releasing held runs from the
            // smallest, until the new segment is within the window. Everything still
            // held then lies inside the window, so at most `window` segments are held.
            let mut segments = Vec::new();
            let mut gap_before = None;
            while self.held.contains_key(&seq) && seq - self.next.expect("started") >= self.window {
                let first = *self.held.keys().next().expect("seq is held");
                let gap = first - self.next.expect("started");
                if let Intake::Released {
                    segments: run,
                    gap_before: g,
                } = self.release_from(first, gap)
                {
                    gap_before.get_or_insert(g);
                    segments.extend(run);
                }
            }
            return Intake::Released {
                segments,
                gap_before: gap_before.unwrap_or(0),
            };
        }
        self.held.insert(seq, segment);
        self.release_from(seq, 0)
    }

    fn release_from(&mut self, first: u64, gap_before: u64) -> Intake<T> {
        let next = self.next.expect("set on first push");
        // Remember a bounded number of given-up numbers to tell late from duplicate:
        // only the last ones of a gap, so a jump of any size costs the same.
        for missing in next.max(first.saturating_sub(GIVEN_UP_KEPT))..first {
            self.given_up.insert(missing);
        }
        while self.given_up.len() as u64 > GIVEN_UP_KEPT {
            let oldest = *self.given_up.iter().next().expect("non-empty");
            self.given_up.remove(&oldest);
        }
        self.stats.missing += gap_before;
        let mut segments = Vec::new();
        let mut at = first;
        while let Some(s) = self.held.remove(&at) {
            segments.push((at, s));
            at += 1;
        }
        self.next = Some(at);
        self.stats.released += segments.len() as u64;
        Intake::Released {
            segments,
            gap_before,
        }
    }

    /// End of stream: releases everything held, in order, giving up what is missing.
    /// Returns `(sequence, segment, gap before it)`.
    pub fn finish(&mut self) -> Vec<(u64, T, u64)> {
        let mut out = Vec::new();
        while let Some(&first) = self.held.keys().next() {
            let next = self.next.expect("held implies started");
            if let Intake::Released {
                segments,
                gap_before,
            } = self.release_from(first, first - next)
            {
                for (i, (seq, s)) in segments.into_iter().enumerate() {
                    out.push((seq, s, if i == 0 { gap_before } else { 0 }));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn released(i: Intake<&'static str>) -> (Vec<u64>, u64) {
        match i {
            Intake::Released {
                segments,
                gap_before,
            } => (segments.into_iter().map(|(s, _)| s).collect(), gap_before),
            other => panic!("expected release, got {other:?}"),
        }
    }

    #[test]
    fn in_order_reordered_duplicate_gap_and_late() {
        let mut s = Sequencer::starting_at(10, 3);
        assert_eq!(released(s.push(10, "a")), (vec![10], 0));
        assert_eq!(s.push(12, "c"), Intake::Held);
        assert_eq!(released(s.push(11, "b")), (vec![11, 12], 0));
        assert_eq!(s.push(11, "b"), Intake::Duplicate);
        assert_eq!(s.push(14, "e"), Intake::Held);
        assert_eq!(s.push(14, "e"), Intake::Duplicate);
        // 16 is 3 ahead of the expected 13: give up 13.
        assert_eq!(released(s.push(16, "g")), (vec![14], 1));
        assert_eq!(s.push(13, "d"), Intake::Late);
        assert_eq!(released(s.push(15, "f")), (vec![15, 16], 0));
        let st = s.stats();
        assert_eq!(
            (
                st.received,
                st.released,
                st.duplicates,
                st.late,
                st.missing,
                st.reordered
            ),
            (9, 6, 2, 1, 1, 3)
        );
    }

    #[test]
    fn a_jump_to_the_largest_number_is_one_gap() {
        let mut s = Sequencer::new(4);
        assert_eq!(released(s.push(0, "a")), (vec![0], 0));
        // Far ahead: one gap of MAX_SEQUENCE - 1 numbers, released at once.
        assert_eq!(
            released(s.push(MAX_SEQUENCE, "z")),
            (vec![MAX_SEQUENCE], MAX_SEQUENCE - 1)
        );
        assert_eq!(s.stats().missing, MAX_SEQUENCE - 1);
        // The last numbers of the gap are remembered as late, older ones as duplicates.
        assert_eq!(s.push(MAX_SEQUENCE - 1, "y"), Intake::Late);
        assert_eq!(s.push(1, "b"), Intake::Duplicate);
        assert_eq!(s.push(MAX_SEQUENCE, "z"), Intake::Duplicate);
        assert_eq!(s.push(MAX_SEQUENCE + 1, "!"), Intake::OutOfRange);
        assert_eq!(s.push(u64::MAX, "!"), Intake::OutOfRange);
        assert_eq!(s.stats().received, 5);
    }

    /// The attack from the security review: a segment just ahead of the expected one,
    /// then one far ahead, repeated. Every far segment used to stay held for good.
    #[test]
    fn far_segments_are_never_held_beyond_the_window() {
        let window = 4;
        let mut s = Sequencer::new(window);
        assert_eq!(released(s.push(0, "a")), (vec![0], 0));
        let mut next = 1;
        for k in 0..100u64 {
            assert_eq!(s.push(next + 1, "near"), Intake::Held);
            let far = (1 << 40) + k * 1000;
            let (run, gap) = released(s.push(far, "far"));
            // The near one is released after its gap of one; the far one too, after
            // the numbers up to it were given up.
            assert_eq!(run, vec![next + 1, far]);
            assert_eq!(gap, 1);
            assert!(s.held() < window as usize, "{} held", s.held());
            next = far + 1;
        }
        assert_eq!(s.held(), 0);
    }

    #[test]
    fn finish_releases_held_with_gaps() {
        let mut s = Sequencer::new(10);
        s.push(0, "a");
        s.push(2, "c");
        s.push(5, "f");
        let out: Vec<(u64, u64)> = s.finish().into_iter().map(|(q, _, g)| (q, g)).collect();
        assert_eq!(out, vec![(2, 1), (5, 2)]);
        assert_eq!(s.stats().missing, 3);
    }
}

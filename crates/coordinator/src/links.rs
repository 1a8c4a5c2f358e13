//! Content links between live streams: two streams are linked when at least
//! `min_frames` recent frames of one are within `max_distance` of recent frames of the
//! other, and the matching frames of one of them span at least `min_span_ms` of its
//! media time: the same programme, not just the same few seconds of a platform's bumper
//! or a shared ident at the start of every stream. A link needs no bank entry, so the same unknown content live on several streams
//! shows up as a connected group of links before anyone has confirmed anything.
//!
//! Only frames of at least `min_quality` take part (PDQ's quality is low on flat, black
//! and nearly uniform frames, the frames every stream shares), and frames near a
//! suppressed hash (a responder rejected that collision) are ignored.
//!
//! Cost: each frame is compared with every other stream's recent frames (a popcount per
//! pair: about 2 ns), so a coordinator watching 1,000 streams at 2 frames/s with a 60 s
//! window compares each frame with 120,000 hashes (~0.25 ms).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use firebreak_hashing::Hash256;

use crate::{FrameSignal, StreamKey};

/// What makes two streams linked.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// Largest Hamming distance between two frames that count as the same content.
    pub max_distance: u32,
    /// Frames below this PDQ quality neither link nor are linked.
    pub min_quality: u8,
    /// How long a frame stays recent, ms of wall time.
    pub window_ms: u64,
    /// Matching frames within the window that make a link.
    pub min_frames: usize,
    /// Recent frames kept per stream (the oldest go first).
    pub max_frames_per_stream: usize,
    /// Frames within this distance of a suppressed hash are ignored.
    pub suppress_distance: u32,
    /// Media time (ms) the matching frames of one stream of a pair must span: shared
    /// bumpers, idents and intros are shorter.
    pub min_span_ms: u64,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            max_distance: 31,
            min_quality: 50,
            window_ms: 60_000,
            min_frames: 3,
            max_frames_per_stream: 240,
            suppress_distance: 31,
            min_span_ms: 8_000,
        }
    }
}

/// A link between two streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The smaller key.
    pub a: StreamKey,
    /// The larger key.
    pub b: StreamKey,
    /// Matching frames within the window.
    pub frames: usize,
    /// The closest pair of frames seen.
    pub best_distance: u32,
    /// Wall time of the first matching frame.
    pub first_ms: u64,
    /// Wall time of the latest matching frame.
    pub last_ms: u64,
}

impl Link {
    /// The other end of the link from `s`.
    pub fn other(&self, s: &StreamKey) -> &StreamKey {
        if &self.a == s { &self.b } else { &self.a }
    }
}

#[derive(Debug, Clone, Copy)]
struct Recent {
    wall_ms: u64,
    media_ms: u64,
    hash: Hash256,
}

#[derive(Debug, Default)]
struct Pair {
    /// The frame pairs that matched, oldest first: (wall ms, media ms of the pair's
    /// first stream's frame, media ms of its second's).
    matches: VecDeque<(u64, u64, u64)>,
    best_distance: u32,
    first_ms: u64,
    linked: bool,
}

/// Recent frames of every stream and the links between them.
#[derive(Debug, Default)]
pub struct ContentLinks {
    config: LinkConfig,
    recent: HashMap<StreamKey, VecDeque<Recent>>,
    pairs: BTreeMap<(StreamKey, StreamKey), Pair>,
    suppressed: Vec<Hash256>,
}

impl ContentLinks {
    /// An empty set of streams.
    pub fn new(config: LinkConfig) -> ContentLinks {
        ContentLinks {
            config,
            ..ContentLinks::default()
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LinkConfig {
        &self.config
    }

    /// Takes a frame; returns the links it completed (pairs that just reached
    /// `min_frames`). Frames arrive in wall order per stream; streams may interleave.
    pub fn observe(&mut self, f: &FrameSignal) -> Vec<Link> {
        self.expire(f.wall_ms);
        if f.quality < self.config.min_quality || self.is_suppressed(&f.hash) {
            return Vec::new();
        }
        let mut formed = Vec::new();
        // The closest of each other stream's recent frames: (stream, distance, its
        // media time).
        let mut hits: Vec<(StreamKey, u32, u64)> = Vec::new();
        for (other, frames) in &self.recent {
            if other == &f.stream {
                continue;
            }
            // On a tie (a static shot), the most recent frame.
            let best = frames
                .iter()
                .rev()
                .map(|r| (r.hash.distance(&f.hash), r.media_ms))
                .min_by_key(|(d, _)| *d);
            if let Some((d, media)) = best.filter(|(d, _)| *d <= self.config.max_distance) {
                hits.push((other.clone(), d, media));
            }
        }
        for (other, d, other_media) in hits {
            let key = ordered(&f.stream, &other);
            let pair = self.pairs.entry(key.clone()).or_insert_with(|| Pair {
                best_distance: d,
                first_ms: f.wall_ms,
                ..Pair::default()
            });
            let (first, second) = if key.0 == f.stream {
                (f.media_ms, other_media)
            } else {
                (other_media, f.media_ms)
            };
            pair.matches.push_back((f.wall_ms, first, second));
            pair.best_distance = pair.best_distance.min(d);
            if !pair.linked
                && pair.matches.len() >= self.config.min_frames
                && span(pair) >= self.config.min_span_ms
            {
                pair.linked = true;
                formed.push(link(&key, pair));
            }
        }
        let frames = self.recent.entry(f.stream.clone()).or_default();
        frames.push_back(Recent {
            wall_ms: f.wall_ms,
            media_ms: f.media_ms,
            hash: f.hash,
        });
        while frames.len() > self.config.max_frames_per_stream {
            frames.pop_front();
        }
        formed
    }

    /// Forgets frames and matches older than the window before `now_ms`; a pair whose
    /// matches fell below `min_frames` is no longer linked.
    pub fn expire(&mut self, now_ms: u64) {
        let horizon = now_ms.saturating_sub(self.config.window_ms);
        self.recent.retain(|_, frames| {
            while frames.front().is_some_and(|r| r.wall_ms < horizon) {
                frames.pop_front();
            }
            !frames.is_empty()
        });
        let min = self.config.min_frames;
        self.pairs.retain(|_, p| {
            while p.matches.front().is_some_and(|(t, _, _)| *t < horizon) {
                p.matches.pop_front();
            }
            if p.matches.len() < min {
                p.linked = false;
            }
            !p.matches.is_empty()
        });
    }

    /// The current links of `stream`.
    pub fn links_of(&self, stream: &StreamKey) -> Vec<Link> {
        self.pairs
            .iter()
            .filter(|((a, b), p)| p.linked && (a == stream || b == stream))
            .map(|(k, p)| link(k, p))
            .collect()
    }

    /// Every current link.
    pub fn links(&self) -> Vec<Link> {
        self.pairs
            .iter()
            .filter(|(_, p)| p.linked)
            .map(|(k, p)| link(k, p))
            .collect()
    }

    /// The streams connected to `stream` through current links (itself included).
    pub fn group_of(&self, stream: &StreamKey) -> BTreeSet<StreamKey> {
        let mut seen = BTreeSet::from([stream.clone()]);
        let mut todo = vec![stream.clone()];
        while let Some(s) = todo.pop() {
            for l in self.links_of(&s) {
                let o = l.other(&s).clone();
                if seen.insert(o.clone()) {
                    todo.push(o);
                }
            }
        }
        seen
    }

    /// The streams, other than those in `except`, with a recent frame within
    /// `max_distance` of `hash`.
    pub fn streams_with(
        &self,
        hash: &Hash256,
        max_distance: u32,
        except: &BTreeSet<StreamKey>,
    ) -> BTreeSet<StreamKey> {
        self.recent
            .iter()
            .filter(|(s, frames)| {
                !except.contains(*s) && frames.iter().any(|r| r.hash.distance(hash) <= max_distance)
            })
            .map(|(s, _)| s.clone())
            .collect()
    }

    /// Ignores frames near these hashes from now on (a rejected collision); links that
    /// rested on them expire with the window.
    pub fn suppress(&mut self, hashes: impl IntoIterator<Item = Hash256>) {
        self.suppressed.extend(hashes);
    }

    /// Whether a hash is near a suppressed one.
    pub fn is_suppressed(&self, hash: &Hash256) -> bool {
        self.suppressed
            .iter()
            .any(|s| s.distance(hash) <= self.config.suppress_distance)
    }

    /// Drops a stream that ended, with its links.
    pub fn forget(&mut self, stream: &StreamKey) {
        self.recent.remove(stream);
        self.pairs.retain(|(a, b), _| a != stream && b != stream);
    }

    /// Streams with recent frames.
    pub fn streams(&self) -> usize {
        self.recent.len()
    }
}

fn ordered(a: &StreamKey, b: &StreamKey) -> (StreamKey, StreamKey) {
    if a <= b {
        (a.clone(), b.clone())
    } else {
        (b.clone(), a.clone())
    }
}

/// The media time the matching frames span: the smaller of the two streams' spans
/// (a bumper matched repeatedly by one stream's frames spans little on the other's).
fn span(p: &Pair) -> u64 {
    let range = |media: &mut dyn Iterator<Item = u64>| {
        let (lo, hi) = media.fold((u64::MAX, 0), |(lo, hi), m| (lo.min(m), hi.max(m)));
        hi.saturating_sub(lo)
    };
    let a = range(&mut p.matches.iter().map(|m| m.1));
    let b = range(&mut p.matches.iter().map(|m| m.2));
    a.min(b)
}

fn link((a, b): &(StreamKey, StreamKey), p: &Pair) -> Link {
    Link {
        a: a.clone(),
        b: b.clone(),
        frames: p.matches.len(),
        best_distance: p.best_distance,
        first_ms: p.first_ms,
        last_ms: p.matches.back().map_or(p.first_ms, |m| m.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The links of these tests: three matching frames, whatever media time they span.
    fn no_span() -> LinkConfig {
        LinkConfig {
            min_span_ms: 0,
            ..LinkConfig::default()
        }
    }

    /// A hash with the first `ones` bits set among bits `base..base + 256` (mod 256).
    fn h(base: usize, ones: usize) -> Hash256 {
        let mut x = Hash256::default();
        for k in 0..ones {
            x.set_bit((base + k) % 256);
        }
        x
    }

    fn f(stream: &str, wall_ms: u64, hash: Hash256) -> FrameSignal {
        FrameSignal {
            stream: StreamKey::new("t", stream),
            wall_ms,
            media_ms: wall_ms,
            hash,
            quality: 100,
        }
    }

    /// Two streams opening with the same 3 s bumper are not linked by it; the same
    /// programme matching over 8 s of media time links them (default settings).
    #[test]
    fn a_shared_bumper_does_not_link_but_a_shared_programme_does() {
        let mut l = ContentLinks::new(LinkConfig::default());
        let bumper = h(0, 128);
        let programme = h(64, 128);
        assert!(bumper.distance(&programme) > 31);
        let frame = |stream: &str, wall_ms: u64, media_ms: u64, hash| FrameSignal {
            stream: StreamKey::new("t", stream),
            wall_ms,
            media_ms,
            hash,
            quality: 100,
        };
        // a and b start 10 s apart with 6 bumper frames (3 s at 2/s), then their own
        // content: no link.
        let mut formed = Vec::new();
        for (s, start, own) in [("a", 0u64, h(128, 100)), ("b", 10_000, h(200, 90))] {
            for i in 0..40u64 {
                let hash = if i < 6 { bumper } else { own };
                formed.extend(l.observe(&frame(s, start + 500 * i, 500 * i, hash)));
            }
        }
        assert!(formed.is_empty(), "{formed:?}");
        assert!(l.links().is_empty());
        // c and d carry the same programme live: linked once the matching frames span
        // 8 s of both streams' media time (the 17th frame of each), not before.
        let mut at = None;
        for i in 0..40u64 {
            let mut formed = l.observe(&frame("c", 40_000 + 500 * i, 500 * i, programme));
            formed.extend(l.observe(&frame("d", 40_001 + 500 * i, 500 * i, programme)));
            if !formed.is_empty() {
                at = Some(i);
                break;
            }
        }
        assert_eq!(at, Some(16));
    }

    #[test]
    fn three_matching_frames_link_two_streams_once() {
        let mut l = ContentLinks::new(no_span());
        let content = h(0, 128);
        // Stream a shows the content; b shows it with 20 bits flipped.
        let near = {
            let mut x = content;
            for k in 200..220 {
                x.set_bit(k);
            }
            x
        };
        assert_eq!(content.distance(&near), 20);
        for i in 0..3 {
            assert!(l.observe(&f("a", 1000 * i, content)).is_empty());
        }
        assert!(l.observe(&f("b", 3000, near)).is_empty());
        assert!(l.observe(&f("b", 3500, near)).is_empty());
        let formed = l.observe(&f("b", 4000, near));
        assert_eq!(formed.len(), 1);
        let link = &formed[0];
        assert_eq!((link.a.stream.as_str(), link.b.stream.as_str()), ("a", "b"));
        assert_eq!((link.frames, link.best_distance), (3, 20));
        assert_eq!((link.first_ms, link.last_ms), (3000, 4000));
        // A fourth frame extends the link but does not form it again.
        assert!(l.observe(&f("b", 4500, near)).is_empty());
        assert_eq!(l.links_of(&StreamKey::new("t", "a"))[0].frames, 4);
    }

    #[test]
    fn distance_32_does_not_link_and_31_does() {
        for (flipped, linked) in [(31, true), (32, false)] {
            let mut l = ContentLinks::new(no_span());
            let a = h(0, 128);
            let mut b = a;
            for k in 128..128 + flipped {
                b.set_bit(k);
            }
            assert_eq!(a.distance(&b), flipped as u32);
            l.observe(&f("a", 0, a));
            let mut formed = Vec::new();
            for i in 1..=3 {
                formed.extend(l.observe(&f("b", i, b)));
            }
            assert_eq!(!formed.is_empty(), linked, "distance {flipped}");
        }
    }

    #[test]
    fn low_quality_frames_never_link() {
        let mut l = ContentLinks::new(no_span());
        let black = Hash256::default();
        for i in 0..10 {
            let mut a = f("a", i, black);
            a.quality = 0;
            let mut b = f("b", i, black);
            b.quality = 49;
            assert!(l.observe(&a).is_empty());
            assert!(l.observe(&b).is_empty());
        }
        assert!(l.links().is_empty());
    }

    #[test]
    fn links_expire_with_the_window_and_groups_are_transitive() {
        let cfg = LinkConfig {
            window_ms: 10_000,
            ..no_span()
        };
        let mut l = ContentLinks::new(cfg);
        let c = h(7, 100);
        for (i, s) in ["a", "b", "c"].iter().enumerate() {
            for k in 0..3 {
                l.observe(&f(s, 1000 * (3 * i as u64 + k), c));
            }
        }
        let group = l.group_of(&StreamKey::new("t", "a"));
        assert_eq!(group.len(), 3);
        assert_eq!(l.links().len(), 3);
        // 20 s later, nothing recent is left: a new frame links to nothing.
        assert!(l.observe(&f("d", 30_000, c)).is_empty());
        assert!(l.links().is_empty());
        assert_eq!(l.streams(), 1);
    }

    #[test]
    fn suppressed_hashes_are_ignored() {
        let mut l = ContentLinks::new(no_span());
        let c = h(3, 90);
        l.suppress([c]);
        for i in 0..5 {
            l.observe(&f("a", i, c));
            l.observe(&f("b", i, c));
        }
        assert!(l.links().is_empty());
        assert_eq!(l.streams(), 0);
    }

    #[test]
    fn streams_with_counts_other_streams_only() {
        let mut l = ContentLinks::new(no_span());
        let logo = h(11, 120);
        for s in ["a", "b", "c"] {
            l.observe(&f(s, 0, logo));
        }
        let except = BTreeSet::from([StreamKey::new("t", "a")]);
        let found = l.streams_with(&logo, 31, &except);
        assert_eq!(
            found,
            BTreeSet::from([StreamKey::new("t", "b"), StreamKey::new("t", "c")])
        );
        l.forget(&StreamKey::new("t", "b"));
        assert_eq!(l.streams_with(&logo, 31, &except).len(), 1);
    }
}

//! Which frame hashes a confirmation publishes.
//!
//! Confirming an incident turns its streams' sampled frames over the incident's media
//! range into entries of a crisis bank that every worker applies live. A careless
//! confirmation would make every stream with the same intro, black frame, station logo
//! or overlay a "crisis", so the candidates pass guards first, in this order:
//!
//! 1. quality: frames below `min_quality` (flat, black, nearly uniform) are dropped;
//! 2. negative banks: frames near a known-benign hash are dropped;
//! 3. common: frames that also occur (within `match_distance`) on `common_streams` or
//!    more streams outside the incident in the recent signals are dropped: shared
//!    intros, overlays and logos;
//! 4. duplicates: frames within `dedupe_distance` of one already kept are dropped (a
//!    static shot yields one entry, not a hundred);
//! 5. the cap: at most `max_entries`, spread evenly over media time.
//!
//! Besides the frame entries, each stream of the incident gives one vPDQ video entry:
//! its frames that passed guards 1-3, in media order (duplicates kept: vPDQ counts
//! matching unique frames itself), at most `max_video_frames` spread over media time,
//! and only with at least `min_video_frames`. A live window matching most of it
//! escalates on the policy's `video_match` rules.
//!
//! The result is a preview (what would be published, and how many frames each guard
//! dropped) that the responder sees before publishing. Entry ids are deterministic, so a
//! standby coordinator that repeats a confirmation writes the same keys.

use std::collections::BTreeMap;

use firebreak_hashing::Hash256;
use serde::Serialize;

use crate::StreamKey;

/// The guards' settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Guards {
    /// Lowest PDQ quality published.
    pub min_quality: u8,
    /// Distance at which a frame counts as occurring elsewhere (or in a negative bank).
    pub match_distance: u32,
    /// Outside streams carrying a frame that make it common.
    pub common_streams: usize,
    /// Frames this close to a kept one are duplicates.
    pub dedupe_distance: u32,
    /// Most entries one confirmation publishes.
    pub max_entries: usize,
    /// Most frames of one stream's video entry.
    pub max_video_frames: usize,
    /// Fewest frames a stream needs for a video entry.
    pub min_video_frames: usize,
}

impl Default for Guards {
    fn default() -> Self {
        Guards {
            min_quality: 50,
            match_distance: 31,
            common_streams: 2,
            dedupe_distance: 16,
            max_entries: 256,
            max_video_frames: 600,
            min_video_frames: 4,
        }
    }
}

/// A sampled frame of one of the incident's streams.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    /// The stream.
    pub stream: StreamKey,
    /// Media time, ms.
    pub media_ms: u64,
    /// PDQ hash (hex in JSON).
    #[serde(serialize_with = "crate::hash_hex")]
    pub hash: Hash256,
    /// PDQ quality.
    pub quality: u8,
}

/// Why a candidate was not published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dropped {
    /// Below `min_quality`.
    LowQuality,
    /// Near a negative-bank hash.
    Negative,
    /// Seen on `common_streams` or more outside streams.
    Common,
    /// Near a frame already kept.
    Duplicate,
    /// Beyond `max_entries`.
    Capped,
}

/// One stream's frames as a vPDQ video entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Video {
    /// The stream.
    pub stream: StreamKey,
    /// Its frames, in media order.
    pub frames: Vec<Candidate>,
}

/// What a confirmation would publish.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Preview {
    /// The frames to publish, in media order per stream.
    pub entries: Vec<Candidate>,
    /// Frames each guard dropped.
    pub dropped: BTreeMap<Dropped, usize>,
    /// A video entry per stream with enough frames.
    pub videos: Vec<Video>,
}

/// `n` evenly spaced indexes of `0..len` (first and last included).
fn spread(len: usize, n: usize) -> Vec<usize> {
    (0..n)
        .map(|i| if n == 1 { 0 } else { i * (len - 1) / (n - 1) })
        .collect()
}

/// Applies the guards. `outside_streams(hash)` counts the streams outside the incident
/// whose recent frames are within `match_distance` of `hash`;
/// `negative(hash)` tells whether it is near a negative-bank entry.
pub fn select(
    candidates: &[Candidate],
    guards: &Guards,
    mut outside_streams: impl FnMut(&Hash256) -> usize,
    mut negative: impl FnMut(&Hash256) -> bool,
) -> Preview {
    let mut dropped = BTreeMap::new();
    let mut drop = |why| *dropped.entry(why).or_insert(0) += 1;
    let mut ordered: Vec<&Candidate> = candidates.iter().collect();
    ordered.sort_by(|a, b| (&a.stream, a.media_ms).cmp(&(&b.stream, b.media_ms)));
    let mut kept: Vec<Candidate> = Vec::new();
    let mut videos: Vec<Video> = Vec::new();
    for c in ordered {
        if c.quality < guards.min_quality {
            drop(Dropped::LowQuality);
        } else if negative(&c.hash) {
            drop(Dropped::Negative);
        } else if outside_streams(&c.hash) >= guards.common_streams {
            drop(Dropped::Common);
        } else {
            // Through guards 1-3: part of the stream's video.
            match videos.last_mut() {
                Some(v) if v.stream == c.stream => v.frames.push(c.clone()),
                _ => videos.push(Video {
                    stream: c.stream.clone(),
                    frames: vec![c.clone()],
                }),
            }
            if kept
                .iter()
                .any(|k| k.hash.distance(&c.hash) <= guards.dedupe_distance)
            {
                drop(Dropped::Duplicate);
            } else {
                kept.push(c.clone());
            }
        }
    }
    if kept.len() > guards.max_entries {
        let n = kept.len();
        let m = guards.max_entries;
        for _ in 0..n - m {
            drop(Dropped::Capped);
        }
        kept = spread(n, m).into_iter().map(|i| kept[i].clone()).collect();
    }
    videos.retain(|v| v.frames.len() >= guards.min_video_frames.max(1));
    for v in &mut videos {
        if v.frames.len() > guards.max_video_frames {
            let picks = spread(v.frames.len(), guards.max_video_frames);
            v.frames = picks.into_iter().map(|i| v.frames[i].clone()).collect();
        }
    }
    Preview {
        entries: kept,
        dropped,
        videos,
    }
}

/// The bank entry id of a published frame: the incident and the hash, so the same
/// confirmation always writes the same keys.
pub fn entry_id(incident: &str, hash: &Hash256) -> String {
    format!("{incident}:{}", &hash.to_hex()[..16])
}

/// The bank entry id of a stream's video entry: the incident and the stream's position
/// among the incident's streams in key order (`video-0`, `video-1`, ...), so the same
/// confirmation always writes the same keys, and no stream name reaches a bank key.
pub fn video_entry_id(incident: &str, index: usize) -> String {
    format!("{incident}:video-{index}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(seed: u64) -> Hash256 {
        // A splitmix64 stream of bits: unrelated seeds are ~128 bits apart.
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
        let mut h = Hash256::default();
        for k in 0..256 {
            if k % 64 == 0 {
                x ^= x >> 30;
                x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
                x ^= x >> 27;
                x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
                x ^= x >> 31;
            }
            if x >> (k % 64) & 1 == 1 {
                h.set_bit(k);
            }
        }
        h
    }

    fn cand(stream: &str, media_ms: u64, hash: Hash256, quality: u8) -> Candidate {
        Candidate {
            stream: StreamKey::new("t", stream),
            media_ms,
            hash,
            quality,
        }
    }

    #[test]
    fn each_guard_drops_what_it_should() {
        let logo = hash(1);
        let benign = hash(2);
        let a = hash(3);
        let b = hash(4);
        let mut a_near = a;
        for k in 0..10 {
            if !a_near.bit(k) {
                a_near.set_bit(k);
            }
        }
        assert!(a.distance(&a_near) <= 10);
        assert!(a.distance(&b) > 60, "unrelated hashes are far apart");
        let c = vec![
            cand("s", 0, Hash256::default(), 0), // black lead-in
            cand("s", 500, logo, 90),            // the station logo, on other streams too
            cand("s", 1000, benign, 90),         // in a negative bank
            cand("s", 1500, a, 90),
            cand("s", 2000, a_near, 95), // same shot
            cand("s", 2500, b, 80),
        ];
        let p = select(
            &c,
            &Guards::default(),
            |h| if *h == logo { 3 } else { 0 },
            |h| *h == benign,
        );
        let kept: Vec<u64> = p.entries.iter().map(|e| e.media_ms).collect();
        assert_eq!(kept, vec![1500, 2500]);
        let want = BTreeMap::from([
            (Dropped::LowQuality, 1),
            (Dropped::Negative, 1),
            (Dropped::Common, 1),
            (Dropped::Duplicate, 1),
        ]);
        assert_eq!(p.dropped, want);
    }

    #[test]
    fn one_outside_stream_is_not_common_but_two_are() {
        let x = hash(9);
        let c = [cand("s", 0, x, 90)];
        assert_eq!(
            select(&c, &Guards::default(), |_| 1, |_| false)
                .entries
                .len(),
            1
        );
        assert_eq!(
            select(&c, &Guards::default(), |_| 2, |_| false)
                .entries
                .len(),
            0
        );
    }

    #[test]
    fn the_cap_spreads_picks_over_media_time() {
        let c: Vec<Candidate> = (0..10)
            .map(|i| cand("s", i * 1000, hash(100 + i), 90))
            .collect();
        let g = Guards {
            max_entries: 4,
            ..Guards::default()
        };
        let p = select(&c, &g, |_| 0, |_| false);
        let kept: Vec<u64> = p.entries.iter().map(|e| e.media_ms).collect();
        // Picks at indices 0, 3, 6, 9 of the ten.
        assert_eq!(kept, vec![0, 3000, 6000, 9000]);
        assert_eq!(p.dropped.get(&Dropped::Capped), Some(&6));
    }

    #[test]
    fn each_stream_gives_a_video_of_its_guarded_frames() {
        let logo = hash(1);
        let mut c: Vec<Candidate> = Vec::new();
        // Stream a: a logo frame (common), then 6 content frames, two of them the same
        // shot (kept: vPDQ dedupes itself); stream b: 3 content frames (too few).
        c.push(cand("a", 0, logo, 90));
        for i in 0..6u64 {
            c.push(cand("a", 1000 + i * 500, hash(20 + i / 2 * 2), 90));
        }
        c.push(cand("a", 9000, Hash256::default(), 0)); // black: low quality
        for i in 0..3u64 {
            c.push(cand("b", i * 500, hash(40 + i), 90));
        }
        let p = select(
            &c,
            &Guards::default(),
            |h| if *h == logo { 5 } else { 0 },
            |_| false,
        );
        assert_eq!(p.videos.len(), 1);
        assert_eq!(p.videos[0].stream, StreamKey::new("t", "a"));
        let ms: Vec<u64> = p.videos[0].frames.iter().map(|f| f.media_ms).collect();
        assert_eq!(ms, vec![1000, 1500, 2000, 2500, 3000, 3500]);
        // Capped: spread over media time.
        let g = Guards {
            max_video_frames: 3,
            ..Guards::default()
        };
        let p = select(&c, &g, |h| if *h == logo { 5 } else { 0 }, |_| false);
        let ms: Vec<u64> = p.videos[0].frames.iter().map(|f| f.media_ms).collect();
        assert_eq!(ms, vec![1000, 2000, 3500]);
        assert_eq!(video_entry_id("inc-e1", 0), "inc-e1:video-0");
    }

    #[test]
    fn entry_ids_are_deterministic() {
        let h = hash(5);
        assert_eq!(entry_id("inc-e1", &h), entry_id("inc-e1", &h));
        assert_ne!(entry_id("inc-e1", &h), entry_id("inc-e2", &h));
        assert_eq!(
            entry_id("inc-e1", &h),
            format!("inc-e1:{}", &h.to_hex()[..16])
        );
    }
}

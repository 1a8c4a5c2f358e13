//! Matching queries against loaded banks: PDQ frames (through the exact index), whole
//! videos (vPDQ), and file digests (MD5, SHA-256), with negative banks applied after
//! lookup.
//!
//! Negative banks: a PDQ query within `negative_distance` of any negative entry (PDQ, or
//! a frame of a negative video) is a known-benign collision, so its positive matches are
//! reported as suppressed instead of matched. For video queries the same rule applies
//! per frame: a suppressed frame does not count towards any video's match percentage.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::bank::Bank;
use crate::index::LiveIndex;
use crate::lists::Signal;
use firebreak_hashing::Hash256;
use firebreak_hashing::vpdq::{self, VpdqFeature};

/// Thresholds for matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatchConfig {
    /// PDQ match distance (inclusive).
    pub pdq_distance: u32,
    /// Distance within which a negative entry suppresses a query.
    pub negative_distance: u32,
    /// vPDQ: frames below this quality are ignored on both sides.
    pub vpdq_quality: u8,
    /// vPDQ: frame match distance (inclusive).
    pub vpdq_distance: u32,
}

impl Default for MatchConfig {
    fn default() -> Self {
        MatchConfig {
            pdq_distance: vpdq::DISTANCE_THRESHOLD,
            negative_distance: vpdq::DISTANCE_THRESHOLD,
            vpdq_quality: vpdq::QUALITY_THRESHOLD,
            vpdq_distance: vpdq::DISTANCE_THRESHOLD,
        }
    }
}

/// Which entry a hit refers to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EntryRef {
    /// Bank name.
    pub bank: Arc<str>,
    /// Entry id.
    pub id: Arc<str>,
    /// Entry labels.
    pub labels: Arc<[String]>,
}

/// A PDQ hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PdqHit {
    /// The entry.
    pub entry: EntryRef,
    /// Hamming distance from the query.
    pub distance: u32,
}

/// The outcome of one PDQ query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PdqResult {
    /// Positive matches (empty when suppressed).
    pub matches: Vec<PdqHit>,
    /// Positive matches suppressed by a negative entry.
    pub suppressed: Vec<PdqHit>,
    /// The negative entries the query matched.
    pub negative: Vec<PdqHit>,
}

/// A banked video matched by a query video.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoHit {
    /// The entry.
    pub entry: EntryRef,
    /// Percentage of the query's unique good frames that match a frame of the entry.
    pub query_match_percent: f64,
    /// Percentage of the entry's unique good frames matched by a query frame.
    pub compared_match_percent: f64,
}

/// A digest (MD5 / SHA-256) hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestHit {
    /// The entry.
    pub entry: EntryRef,
    /// `"video_md5"` or `"sha256"`.
    pub kind: &'static str,
}

/// A banked video's frames after vPDQ preparation.
#[derive(Debug, Clone)]
struct Video {
    entry: EntryRef,
    /// Unique good frames (the denominator of the compared percentage).
    frames: usize,
}

/// Everything loaded from the banks, ready to match.
#[derive(Debug)]
pub struct Matcher {
    config: MatchConfig,
    pdq_refs: Vec<EntryRef>,
    pdq: LiveIndex,
    negative_refs: Vec<EntryRef>,
    negative: LiveIndex,
    videos: Vec<Video>,
    /// Key = video index << 32 | unique frame index.
    frames: LiveIndex,
    md5: HashMap<[u8; 16], Vec<EntryRef>>,
    sha256: HashMap<[u8; 32], Vec<EntryRef>>,
}

impl Matcher {
    /// Loads banks, building the indexes on up to `threads` threads.
    pub fn new<'a>(
        banks: impl IntoIterator<Item = &'a Bank>,
        config: MatchConfig,
        threads: usize,
    ) -> Self {
        let mut pdq_refs = Vec::new();
        let mut pdq = Vec::new();
        let mut negative_refs = Vec::new();
        let mut negative = Vec::new();
        let mut videos = Vec::new();
        let mut frames = Vec::new();
        let mut md5: HashMap<[u8; 16], Vec<EntryRef>> = HashMap::new();
        let mut sha256: HashMap<[u8; 32], Vec<EntryRef>> = HashMap::new();
        for bank in banks {
            let bank_name: Arc<str> = Arc::from(bank.name.as_str());
            for e in bank.entries() {
                let entry = EntryRef {
                    bank: bank_name.clone(),
                    id: Arc::from(e.id.as_str()),
                    labels: Arc::from(e.labels.clone()),
                };
                match &e.signal {
                    Signal::Pdq { hash, .. } if bank.negative => {
                        negative.push((*hash, negative_refs.len() as u64));
                        negative_refs.push(entry);
                    }
                    Signal::Pdq { hash, .. } => {
                        pdq.push((*hash, pdq_refs.len() as u64));
                        pdq_refs.push(entry);
                    }
                    Signal::Vpdq(features) if bank.negative => {
                        for h in vpdq::prepare(features, config.vpdq_quality) {
                            negative.push((h, negative_refs.len() as u64));
                        }
                        negative_refs.push(entry);
                    }
                    Signal::Vpdq(features) => {
                        let unique = vpdq::prepare(features, config.vpdq_quality);
                        let video = videos.len() as u64;
                        for (i, h) in unique.iter().enumerate() {
                            frames.push((*h, video << 32 | i as u64));
                        }
                        videos.push(Video {
                            entry,
                            frames: unique.len(),
                        });
                    }
                    Signal::Md5(d) => md5.entry(*d).or_default().push(entry),
                    Signal::Sha256(d) => sha256.entry(*d).or_default().push(entry),
                }
            }
        }
        Matcher {
            config,
            pdq_refs,
            pdq: LiveIndex::new(pdq, threads),
            negative_refs,
            negative: LiveIndex::new(negative, threads),
            videos,
            frames: LiveIndex::new(frames, threads),
            md5,
            sha256,
        }
    }

    /// The thresholds in use.
    pub fn config(&self) -> MatchConfig {
        self.config
    }

    /// Counts of loaded PDQ hashes, negative hashes, videos, video frames and digests.
    pub fn sizes(&self) -> MatcherSizes {
        MatcherSizes {
            pdq: self.pdq.len(),
            negative: self.negative.len(),
            videos: self.videos.len(),
            video_frames: self.frames.len(),
            digests: self.md5.len() + self.sha256.len(),
        }
    }

    /// Adds one PDQ entry to a positive bank at run time; it matches once this returns.
    pub fn add_pdq(&mut self, bank: &str, id: &str, hash: Hash256, labels: Vec<String>) {
        let key = self.pdq_refs.len() as u64;
        self.pdq_refs.push(EntryRef {
            bank: Arc::from(bank),
            id: Arc::from(id),
            labels: Arc::from(labels),
        });
        self.pdq.add(&[(hash, key)]);
    }

    fn is_negative(&self, hash: &Hash256) -> Vec<PdqHit> {
        self.negative
            .query(hash, self.config.negative_distance)
            .into_iter()
            .map(|h| PdqHit {
                entry: self.negative_refs[h.key as usize].clone(),
                distance: h.distance,
            })
            .collect()
    }

    /// Matches one PDQ hash.
    pub fn match_pdq(&self, hash: &Hash256) -> PdqResult {
        let mut matches: Vec<PdqHit> = self
            .pdq
            .query(hash, self.config.pdq_distance)
            .into_iter()
            .map(|h| PdqHit {
                entry: self.pdq_refs[h.key as usize].clone(),
                distance: h.distance,
            })
            .collect();
        matches.sort_by(|a, b| {
            a.distance
                .cmp(&b.distance)
                .then_with(|| a.entry.id.cmp(&b.entry.id))
        });
        let negative = if matches.is_empty() {
            Vec::new()
        } else {
            self.is_negative(hash)
        };
        if negative.is_empty() {
            PdqResult {
                matches,
                ..PdqResult::default()
            }
        } else {
            PdqResult {
                matches: Vec::new(),
                suppressed: matches,
                negative,
            }
        }
    }

    /// For one frame hash, the banked videos (indexes) with a frame within the vPDQ
    /// distance, each with the matched unique-frame indexes. Empty when the frame is
    /// suppressed by a negative entry.
    pub fn frame_video_hits(&self, hash: &Hash256) -> Vec<(u32, u32)> {
        let mut hits: Vec<(u32, u32)> = self
            .frames
            .query(hash, self.config.vpdq_distance)
            .into_iter()
            .map(|h| ((h.key >> 32) as u32, h.key as u32))
            .collect();
        if !hits.is_empty() && !self.is_negative(hash).is_empty() {
            hits.clear();
        }
        hits.sort_unstable();
        hits
    }

    /// The entry of video `index` (from [`Matcher::frame_video_hits`]).
    pub fn video_entry(&self, index: u32) -> &EntryRef {
        &self.videos[index as usize].entry
    }

    /// Matches a whole video against every banked video, with vPDQ's rules (dedupe,
    /// quality filter, distance): the same percentages as [`vpdq::compare`] against
    /// each banked video, for every video with at least one matching frame.
    pub fn match_video(&self, features: &[VpdqFeature]) -> Vec<VideoHit> {
        let query = vpdq::prepare(features, self.config.vpdq_quality);
        if query.is_empty() {
            return Vec::new();
        }
        let mut query_matched: HashMap<u32, usize> = HashMap::new();
        let mut compared_matched: HashMap<u32, HashSet<u32>> = HashMap::new();
        for h in &query {
            let hits = self.frame_video_hits(h);
            let mut last = None;
            for (video, frame) in hits {
                if last != Some(video) {
                    *query_matched.entry(video).or_default() += 1;
                    last = Some(video);
                }
                compared_matched.entry(video).or_default().insert(frame);
            }
        }
        let mut out: Vec<VideoHit> = query_matched
            .into_iter()
            .map(|(video, n)| {
                let v = &self.videos[video as usize];
                VideoHit {
                    entry: v.entry.clone(),
                    query_match_percent: n as f64 * 100.0 / query.len() as f64,
                    compared_match_percent: compared_matched[&video].len() as f64 * 100.0
                        / v.frames as f64,
                }
            })
            .collect();
        out.sort_by(|a, b| {
            b.query_match_percent
                .total_cmp(&a.query_match_percent)
                .then_with(|| a.entry.id.cmp(&b.entry.id))
        });
        out
    }

    /// Exact digest matches.
    pub fn match_digests(
        &self,
        md5: Option<&[u8; 16]>,
        sha256: Option<&[u8; 32]>,
    ) -> Vec<DigestHit> {
        let mut out = Vec::new();
        if let Some(list) = md5.and_then(|d| self.md5.get(d)) {
            out.extend(list.iter().map(|e| DigestHit {
                entry: e.clone(),
                kind: "video_md5",
            }));
        }
        if let Some(list) = sha256.and_then(|d| self.sha256.get(d)) {
            out.extend(list.iter().map(|e| DigestHit {
                entry: e.clone(),
                kind: "sha256",
            }));
        }
        out
    }
}

/// What a [`Matcher`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatcherSizes {
    /// Positive PDQ hashes.
    pub pdq: usize,
    /// Negative hashes (PDQ and negative video frames).
    pub negative: usize,
    /// Positive videos.
    pub videos: usize,
    /// Their unique good frames.
    pub video_frames: usize,
    /// Distinct digests.
    pub digests: usize,
}

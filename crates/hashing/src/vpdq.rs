//! vPDQ: video as a sequence of per-frame PDQ hashes, its text format, and the
//! video-to-video comparison python-threatexchange uses.
//!
//! Decoding is not here (it needs FFmpeg, see `firebreak-media`); this module is the
//! pure part: the feature type, `frameNumber,quality,pdqHashHex,timestampSeconds` text,
//! and match percentages.

use std::collections::HashSet;
use std::fmt;

use crate::hash::{Hash256, ParseHashError, PdqHash};

/// One hashed video frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VpdqFeature {
    /// The frame's PDQ hash and quality.
    pub pdq: PdqHash,
    /// Index of the frame among the frames the decoder produced, from 0.
    pub frame_number: u64,
    /// Media time in seconds, `frame_number / fps` in f32 as the reference computes it.
    pub timestamp: f64,
}

impl VpdqFeature {
    /// The timestamp the reference writes for `frame_number` at `fps`: `(float)n / (float)fps`.
    pub fn reference_timestamp(frame_number: u64, fps: f64) -> f64 {
        (frame_number as f32 / fps as f32) as f64
    }
}

impl fmt::Display for VpdqFeature {
    /// `frameNumber,quality,pdqHashHex,timestampSeconds` with three decimals, as `vpdqio.cpp`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{},{},{},{:.3}",
            self.frame_number, self.pdq.quality, self.pdq.hash, self.timestamp
        )
    }
}

/// Why a line of vPDQ text is not a feature.
#[derive(Debug, Clone, PartialEq)]
pub enum ParseVpdqError {
    /// Not four comma-separated fields.
    Fields {
        /// 1-based line number.
        line: usize,
        /// Number of fields found.
        found: usize,
    },
    /// The frame number is not a non-negative integer.
    FrameNumber {
        /// 1-based line number.
        line: usize,
        /// The field's text.
        text: String,
    },
    /// The quality is not an integer from 0 to 100.
    Quality {
        /// 1-based line number.
        line: usize,
        /// The field's text.
        text: String,
    },
    /// The hash field is not 64 hex digits.
    Hash {
        /// 1-based line number.
        line: usize,
        /// What is wrong with the hash.
        source: ParseHashError,
    },
    /// The timestamp is not a finite non-negative number.
    Timestamp {
        /// 1-based line number.
        line: usize,
        /// The field's text.
        text: String,
    },
}

impl fmt::Display for ParseVpdqError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseVpdqError::Fields { line, found } => write!(
                f,
                "line {line}: expected 4 comma-separated fields (frame,quality,hash,seconds), found {found}"
            ),
            ParseVpdqError::FrameNumber { line, text } => {
                write!(
                    f,
                    "line {line}: frame number {text:?} is not a non-negative integer"
                )
            }
            ParseVpdqError::Quality { line, text } => {
                write!(
                    f,
                    "line {line}: quality {text:?} is not an integer from 0 to 100"
                )
            }
            ParseVpdqError::Hash { line, source } => write!(f, "line {line}: {source}"),
            ParseVpdqError::Timestamp { line, text } => write!(
                f,
                "line {line}: timestamp {text:?} is not a non-negative number of seconds"
            ),
        }
    }
}

impl std::error::Error for ParseVpdqError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ParseVpdqError::Hash { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Parses one line (`line_no` is 1-based, for the error).
pub fn parse_line(text: &str, line_no: usize) -> Result<VpdqFeature, ParseVpdqError> {
    let fields: Vec<&str> = text.trim().split(',').collect();
    if fields.len() != 4 {
        return Err(ParseVpdqError::Fields {
            line: line_no,
            found: fields.len(),
        });
    }
    let frame_number = fields[0]
        .parse::<u64>()
        .map_err(|_| ParseVpdqError::FrameNumber {
            line: line_no,
            text: fields[0].to_owned(),
        })?;
    let quality = fields[1]
        .parse::<u8>()
        .ok()
        .filter(|q| *q <= 100)
        .ok_or_else(|| ParseVpdqError::Quality {
            line: line_no,
            text: fields[1].to_owned(),
        })?;
    let hash = Hash256::from_hex(fields[2]).map_err(|source| ParseVpdqError::Hash {
        line: line_no,
        source,
    })?;
    let timestamp = fields[3]
        .parse::<f64>()
        .ok()
        .filter(|t| t.is_finite() && *t >= 0.0)
        .ok_or_else(|| ParseVpdqError::Timestamp {
            line: line_no,
            text: fields[3].to_owned(),
        })?;
    Ok(VpdqFeature {
        pdq: PdqHash { hash, quality },
        frame_number,
        timestamp,
    })
}

/// Parses vPDQ text: one feature per line, blank lines ignored. Fails on the first bad line.
pub fn parse(text: &str) -> Result<Vec<VpdqFeature>, ParseVpdqError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| parse_line(l, i + 1))
        .collect()
}

/// Writes features in the reference text format, one line each, `\n`-terminated.
pub fn to_text(features: &[VpdqFeature]) -> String {
    let mut out = String::with_capacity(features.len() * 84);
    for f in features {
        use fmt::Write;
        let _ = writeln!(out, "{f}");
    }
    out
}

/// Frames below this quality are left out of comparisons (python-threatexchange's
/// `VPDQ_QUALITY_THRESHOLD`).
pub const QUALITY_THRESHOLD: u8 = 50;
/// Two frames match when their hashes differ in at most this many bits
/// (`VPDQ_DISTANCE_THRESHOLD`, compared with `<=`).
pub const DISTANCE_THRESHOLD: u32 = 31;
/// python-threatexchange calls two videos a match when the query-match percentage is at
/// least this (`VPDQ_QUERY_MATCH_THRESHOLD_PERCENT`).
pub const QUERY_MATCH_THRESHOLD_PERCENT: f64 = 80.0;

/// The result of comparing a query video with a compared (for example, banked) video.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VideoMatch {
    /// Percentage of the query's distinct, good-quality frame hashes that are within the
    /// distance threshold of some frame of the compared video.
    pub query_match_percent: f64,
    /// The same, from the compared video's side.
    pub compared_match_percent: f64,
}

impl VideoMatch {
    /// Whether python-threatexchange would report this as a match.
    pub fn is_match(&self) -> bool {
        self.query_match_percent >= QUERY_MATCH_THRESHOLD_PERCENT
    }
}

/// The distinct hashes of `features` that pass the quality filter, in first-seen order.
///
/// As python-threatexchange's brute matcher: de-duplicate on the hash first (keeping the
/// first occurrence), then drop frames with quality below `min_quality`.
pub fn prepare(features: &[VpdqFeature], min_quality: u8) -> Vec<Hash256> {
    let mut seen = HashSet::with_capacity(features.len());
    features
        .iter()
        .filter(|f| seen.insert(f.pdq.hash))
        .filter(|f| f.pdq.quality >= min_quality)
        .map(|f| f.pdq.hash)
        .collect()
}

/// Compares two videos as python-threatexchange's `match_VPDQ_hash_brute` does (quality
/// filter `min_quality`, match when distance `<= max_distance`).
///
/// Returns `None` when either video has no frame left after filtering (the reference
/// divides by zero there; a video without usable frames matches nothing).
pub fn compare(
    query: &[VpdqFeature],
    compared: &[VpdqFeature],
    min_quality: u8,
    max_distance: u32,
) -> Option<VideoMatch> {
    let q = prepare(query, min_quality);
    let c = prepare(compared, min_quality);
    if q.is_empty() || c.is_empty() {
        return None;
    }
    let matched = |a: &[Hash256], b: &[Hash256]| {
        a.iter()
            .filter(|x| b.iter().any(|y| x.distance(y) <= max_distance))
            .count()
    };
    Some(VideoMatch {
        query_match_percent: matched(&q, &c) as f64 * 100.0 / q.len() as f64,
        compared_match_percent: matched(&c, &q) as f64 * 100.0 / c.len() as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feat(n: u64, q: u8, hash: Hash256) -> VpdqFeature {
        VpdqFeature {
            pdq: PdqHash { hash, quality: q },
            frame_number: n,
            timestamp: n as f64 / 30.0,
        }
    }

    fn flip(h: Hash256, bits: usize) -> Hash256 {
        let mut l = h.limbs();
        for b in 0..bits {
            l[b / 64] ^= 1 << (b % 64);
        }
        Hash256::from_limbs(l)
    }

    #[test]
    fn text_round_trips_in_reference_format() {
        let line = "30,68,c8feb0fc73110f830fc6307cf039e7030fc61b9cf8717cf80fce00070003fffe,1.000";
        let f = parse_line(line, 1).unwrap();
        assert_eq!(f.frame_number, 30);
        assert_eq!(f.pdq.quality, 68);
        assert_eq!(f.to_string(), line);
        assert_eq!(to_text(&[f]), format!("{line}\n"));
    }

    #[test]
    fn bad_lines_name_line_and_field() {
        let h = "0".repeat(64);
        assert!(matches!(
            parse_line("1,2,3", 7),
            Err(ParseVpdqError::Fields { line: 7, found: 3 })
        ));
        assert!(matches!(
            parse_line(&format!("x,50,{h},0.0"), 2),
            Err(ParseVpdqError::FrameNumber { line: 2, .. })
        ));
        assert!(matches!(
            parse_line(&format!("1,101,{h},0.0"), 3),
            Err(ParseVpdqError::Quality { line: 3, .. })
        ));
        assert!(matches!(
            parse_line("1,50,abc,0.0", 4),
            Err(ParseVpdqError::Hash { line: 4, .. })
        ));
        assert!(matches!(
            parse_line(&format!("1,50,{h},-1"), 5),
            Err(ParseVpdqError::Timestamp { line: 5, .. })
        ));
        let err = parse(&format!("0,50,{h},0.0\n\n1,50,{h},oops\n")).unwrap_err();
        assert!(matches!(err, ParseVpdqError::Timestamp { line: 3, .. }));
    }

    #[test]
    fn reference_timestamp_is_f32_division() {
        // 1/30 in f32 is 0.0333333351..., printed as 0.033.
        assert_eq!(
            VpdqFeature::reference_timestamp(1, 30.0),
            (1.0f32 / 30.0f32) as f64
        );
        let f = feat(2, 100, Hash256::ZERO);
        let f = VpdqFeature {
            timestamp: VpdqFeature::reference_timestamp(2, 30.0),
            ..f
        };
        assert!(f.to_string().ends_with(",0.067"));
    }

    #[test]
    fn compare_dedupes_then_filters_quality_and_uses_inclusive_distance() {
        let a = Hash256::from_limbs([0x1234, 0xffff_0000, 7, 1 << 40]);
        let b = flip(a, 31); // exactly at the threshold: a match
        let c = flip(a, 32); // one bit over: not a match
        let far = Hash256::from_limbs([!0, !0, !0, !0]);
        let query = [
            feat(0, 100, a),
            feat(1, 100, a),
            feat(2, 100, far),
            feat(3, 10, c),
        ];
        let compared = [feat(0, 90, b)];
        let m = compare(&query, &compared, 50, 31).unwrap();
        // Query: {a, far} after dedupe and quality filter; a matches b.
        assert_eq!(m.query_match_percent, 50.0);
        assert_eq!(m.compared_match_percent, 100.0);
        assert!(!m.is_match());
        let m = compare(&[feat(0, 100, c)], &[feat(0, 100, a)], 50, 31).unwrap();
        assert_eq!(m.query_match_percent, 0.0);
        // A low-quality first occurrence removes the hash, as in python-threatexchange.
        let q2 = [feat(0, 10, a), feat(1, 100, a), feat(2, 100, b)];
        assert_eq!(prepare(&q2, 50), vec![b]);
        // Nothing usable left: no verdict rather than a division by zero.
        assert_eq!(compare(&[feat(0, 10, a)], &compared, 50, 31), None);
    }
}

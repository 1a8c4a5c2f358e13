//! vPDQ: video as a sequence of per-frame PDQ hashes, its text format, and the
//! video-to-video comparison python-threatexchange uses.
//!
//! Decoding is not here (it needs FFmpeg, see `firebreak-media`); this module is the
//! pure part: the feature type, `frameNumber,quality,pdqHashHex,timestampSeconds` text,
//! and match percentages.

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
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseVpdqError {
    /// Not four comma-separated fields.
    #[error(
        "line {line}: expected 4 comma-separated fields (frame,quality,hash,seconds), found {found}"
    )]
    Fields {
        /// 1-based line number.
        line: usize,
        /// Number of fields found.
        found: usize,
    },
    /// The frame number is not a non-negative integer.
    #[error("line {line}: frame number {text:?} is not a non-negative integer")]
    FrameNumber {
        /// 1-based line number.
        line: usize,
        /// The field's text.
        text: String,
    },
    /// The quality is not an integer from 0 to 100.
    #[error("line {line}: quality {text:?} is not an integer from 0 to 100")]
    Quality {
        /// 1-based line number.
        line: usize,
        /// The field's text.
        text: String,
    },
    /// The hash field is not 64 hex digits.
    #[error("line {line}: {source}")]
    Hash {
        /// 1-based line number.
        line: usize,
        /// What is wrong with the hash.
        source: ParseHashError,
    },
    /// The timestamp is not a finite non-negative number.
    #[error("line {line}: timestamp {text:?} is not a non-negative number of seconds")]
    Timestamp {
        /// 1-based line number.
        line: usize,
        /// The field's text.
        text: String,
    },
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

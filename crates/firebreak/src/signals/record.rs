//! The signal record (format version 1) and its binary encoding: the unit the local
//! signal log stores and fleet mode publishes to `firebreak.signals`.
//!
//! A record is one of: a sampled frame's signals ([`FrameRecord`]), a stream lifecycle
//! event ([`EventRecord`]) or one of the engine's once-a-second policy ticks
//! ([`SignalRecord::Tick`]). Ticks and events are recorded because the policy's state
//! changes on them too (holds expire, cool-downs end): replaying frames alone would
//! not give the live decisions back.
//!
//! # Encoding
//!
//! Records travel in **blocks**: `[u32 LE payload length][u32 LE crc32 of payload]
//! [payload]`, the payload being a string table (`varint count`, then `varint length,
//! UTF-8 bytes` each) followed by `varint count` records, each `varint length, tag,
//! body`. Strings (stream ids, tenants, banks, entry ids, categories, models) are
//! written once per block and referred to by index, so a frame record without matches
//! costs about 60 bytes plus 20 per classifier score, most of it the PDQ hash. Numbers
//! are LEB128 varints except media times and scores (`f64` LE: replay must compare the
//! exact values the policy saw). Each record is length-prefixed, so a reader can skip
//! records of streams it does not replay without decoding them (the parallel replay
//! partitions streams between threads that way), and a newer record tag is skipped by
//! older readers. The CRC localises a torn write to its block: a reader counts a
//! corrupt or truncated block and stops at it instead of trusting lengths beyond it.
//!
//! Why length-prefixed records and not columnar blocks: records arrive interleaved
//! from every stream's consumer thread and are appended as they come; replay reads
//! every field of every record in order. Columns would only pay off for scans of a few
//! fields, and they need a whole block buffered before anything is written. The block
//! string table already removes the repetition columns would have compressed.
//!
//! A Kafka message (fleet mode) is one block ([`encode_block`]) with one or more
//! records; a local log segment is a [`FILE_MAGIC`] header followed by blocks.

use std::collections::HashMap;

use firebreak_policy::policy::{ClassifierScore, FrameSignals, HashMatch, VideoMatch};

/// The first bytes of a local signal log segment: `FBSIG`, the format version, two
/// reserved bytes.
pub const FILE_MAGIC: [u8; 8] = *b"FBSIG\x01\0\0";

/// The format version of records written by this build.
pub const FORMAT_VERSION: u8 = 1;

const TAG_FRAME: u8 = 1;
const TAG_EVENT: u8 = 2;
const TAG_TICK: u8 = 3;

/// Largest block payload accepted on read (a block is cut well below this on write).
pub const MAX_BLOCK: usize = 64 << 20;

/// One sampled frame's signals, as the policy saw them, and the frame's PDQ hash, so
/// that replay with other banks or another match distance can re-match.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameRecord {
    /// The stream.
    pub stream: String,
    /// The tenant it belongs to.
    pub tenant: String,
    /// The frame's PDQ hash and its quality (absent for signals without a frame hash).
    pub pdq: Option<([u8; 32], u8)>,
    /// Media time, wall time, matches (every candidate the matcher returned, up to its
    /// query distance of 31, wider than most rules' `max_distance`), live-window
    /// percentages and classifier scores per category and model.
    pub signals: FrameSignals,
}

/// A stream lifecycle event the engine handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The stream stalled (the policy re-evaluates).
    Stalled,
    /// The stream ended (an open incident closes; a later frame starts afresh).
    Ended,
}

/// An event record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// The stream.
    pub stream: String,
    /// The tenant it belongs to.
    pub tenant: String,
    /// What happened.
    pub kind: EventKind,
    /// When (wall ms).
    pub wall_ms: u64,
}

/// One record of the signal log.
#[derive(Debug, Clone, PartialEq)]
pub enum SignalRecord {
    /// A sampled frame.
    Frame(FrameRecord),
    /// A stream event.
    Event(EventRecord),
    /// The engine's policy tick at this wall time (applies to every stream).
    Tick {
        /// Wall ms.
        wall_ms: u64,
    },
}

impl SignalRecord {
    /// The record's tenant (ticks have none).
    pub fn tenant(&self) -> Option<&str> {
        match self {
            SignalRecord::Frame(f) => Some(&f.tenant),
            SignalRecord::Event(e) => Some(&e.tenant),
            SignalRecord::Tick { .. } => None,
        }
    }
}

/// Builds one block from records (see the module doc).
#[derive(Debug, Default)]
pub struct BlockEncoder {
    strings: HashMap<String, u32>,
    table: Vec<u8>,
    records: Vec<u8>,
    count: u64,
    scratch: Vec<u8>,
}

impl BlockEncoder {
    /// An empty block.
    pub fn new() -> BlockEncoder {
        BlockEncoder::default()
    }

    /// Records so far.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// No records yet.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The block's size so far (bytes, before its header).
    pub fn bytes(&self) -> usize {
        self.table.len() + self.records.len() + 20
    }

    fn string(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = self.strings.len() as u32;
        varint(&mut self.table, s.len() as u64);
        self.table.extend_from_slice(s.as_bytes());
        self.strings.insert(s.to_owned(), i);
        i
    }

    /// Appends a record.
    pub fn push(&mut self, record: &SignalRecord) {
        let mut body = std::mem::take(&mut self.scratch);
        body.clear();
        match record {
            SignalRecord::Frame(f) => {
                body.push(TAG_FRAME);
                let s = self.string(&f.stream);
                varint(&mut body, s.into());
                let t = self.string(&f.tenant);
                varint(&mut body, t.into());
                let sig = &f.signals;
                body.extend_from_slice(&sig.media_time.to_le_bytes());
                varint(&mut body, sig.wall_ms);
                match &f.pdq {
                    Some((hash, quality)) => {
                        body.push(1);
                        body.extend_from_slice(hash);
                        body.push(*quality);
                    }
                    None => body.push(0),
                }
                varint(&mut body, sig.hash_matches.len() as u64);
                for m in &sig.hash_matches {
                    let b = self.string(&m.bank);
                    let e = self.string(&m.entry_id);
                    varint(&mut body, b.into());
                    varint(&mut body, e.into());
                    varint(&mut body, m.distance.into());
                    body.push(m.quality);
                }
                varint(&mut body, sig.video_matches.len() as u64);
                for m in &sig.video_matches {
                    let b = self.string(&m.bank);
                    let e = self.string(&m.entry_id);
                    varint(&mut body, b.into());
                    varint(&mut body, e.into());
                    body.extend_from_slice(&m.percent.to_le_bytes());
                }
                varint(&mut body, sig.scores.len() as u64);
                for c in &sig.scores {
                    let a = self.string(&c.category);
                    let m = self.string(&c.model);
                    let v = self.string(&c.model_version);
                    varint(&mut body, a.into());
                    varint(&mut body, m.into());
                    varint(&mut body, v.into());
                    body.extend_from_slice(&c.score.to_le_bytes());
                }
            }
            SignalRecord::Event(e) => {
                body.push(TAG_EVENT);
                let s = self.string(&e.stream);
                varint(&mut body, s.into());
                let t = self.string(&e.tenant);
                varint(&mut body, t.into());
                body.push(match e.kind {
                    EventKind::Stalled => 1,
                    EventKind::Ended => 2,
                });
                varint(&mut body, e.wall_ms);
            }
            SignalRecord::Tick { wall_ms } => {
                body.push(TAG_TICK);
                varint(&mut body, *wall_ms);
            }
        }
        varint(&mut self.records, body.len() as u64);
        self.records.extend_from_slice(&body);
        self.count += 1;
        self.scratch = body;
    }

    /// The finished block (header included); the encoder is empty again.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut payload = Vec::with_capacity(self.table.len() + self.records.len() + 20);
        varint(&mut payload, self.strings.len() as u64);
        payload.extend_from_slice(&self.table);
        varint(&mut payload, self.count);
        payload.extend_from_slice(&self.records);
        let mut out = Vec::with_capacity(payload.len() + 8);
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        out.extend_from_slice(&payload);
        self.strings.clear();
        self.table.clear();
        self.records.clear();
        self.count = 0;
        out
    }
}

/// Encodes records as one block.
pub fn encode_block(records: &[SignalRecord]) -> Vec<u8> {
    let mut e = BlockEncoder::new();
    for r in records {
        e.push(r);
    }
    e.finish()
}

/// Why bytes are not a block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// The bytes end inside the block (a torn append).
    #[error("truncated block")]
    Truncated,
    /// The payload's checksum or structure is wrong.
    #[error("corrupt block: {0}")]
    Corrupt(&'static str),
}

/// The next block of `bytes`: its payload and the bytes after it.
pub fn split_block(bytes: &[u8]) -> Result<(&[u8], &[u8]), BlockError> {
    if bytes.len() < 8 {
        return Err(BlockError::Truncated);
    }
    let len = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if len > MAX_BLOCK {
        return Err(BlockError::Corrupt("block length out of range"));
    }
    if bytes.len() < 8 + len {
        return Err(BlockError::Truncated);
    }
    let payload = &bytes[8..8 + len];
    if crc32fast::hash(payload) != crc {
        return Err(BlockError::Corrupt("checksum mismatch"));
    }
    Ok((payload, &bytes[8 + len..]))
}

/// A block's payload, parsed lazily: the string table and the raw records.
#[derive(Debug)]
pub struct Block<'a> {
    /// The string table.
    pub strings: Vec<&'a str>,
    records: &'a [u8],
    count: u64,
}

/// A record's raw form: its tag, its stream (string index; none for ticks) and body.
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'a> {
    tag: u8,
    /// The stream's index in the block's string table (frames and events).
    pub stream: Option<u32>,
    body: &'a [u8],
}

impl<'a> Block<'a> {
    /// Parses a payload's string table.
    pub fn parse(payload: &'a [u8]) -> Result<Block<'a>, BlockError> {
        let mut r = Reader(payload);
        let n = r.varint()?;
        let mut strings = Vec::with_capacity(n.min(1 << 16) as usize);
        for _ in 0..n {
            let len = r.varint()? as usize;
            let bytes = r.take(len)?;
            strings.push(std::str::from_utf8(bytes).map_err(|_| BlockError::Corrupt("string"))?);
        }
        let count = r.varint()?;
        Ok(Block {
            strings,
            records: r.0,
            count,
        })
    }

    /// Number of records.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// No records.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The raw records, in order.
    pub fn records(&self) -> impl Iterator<Item = Result<RawRecord<'a>, BlockError>> + '_ {
        let mut r = Reader(self.records);
        let mut left = self.count;
        std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            left -= 1;
            let next = (|| {
                let len = r.varint()? as usize;
                let body = r.take(len)?;
                let mut b = Reader(body);
                let tag = b.u8()?;
                let stream = match tag {
                    TAG_FRAME | TAG_EVENT => Some(b.varint()? as u32),
                    _ => None,
                };
                Ok(RawRecord {
                    tag,
                    stream,
                    body: b.0,
                })
            })();
            if next.is_err() {
                left = 0;
            }
            Some(next)
        })
    }

    fn str(&self, i: u64) -> Result<&'a str, BlockError> {
        self.strings
            .get(i as usize)
            .copied()
            .ok_or(BlockError::Corrupt("string index"))
    }

    /// Decodes a raw record; `Ok(None)` for a tag this build does not know.
    pub fn decode(&self, raw: RawRecord<'a>) -> Result<Option<SignalRecord>, BlockError> {
        let mut r = Reader(raw.body);
        let stream = || -> Result<String, BlockError> {
            Ok(self
                .str(u64::from(raw.stream.unwrap_or(u32::MAX)))?
                .to_owned())
        };
        Ok(Some(match raw.tag {
            TAG_FRAME => {
                let stream = stream()?;
                let tenant = self.str(r.varint()?)?.to_owned();
                let media_time = r.f64()?;
                let wall_ms = r.varint()?;
                let pdq = match r.u8()? {
                    0 => None,
                    _ => {
                        let hash: [u8; 32] = r.take(32)?.try_into().expect("32 bytes");
                        Some((hash, r.u8()?))
                    }
                };
                let n = r.varint()?;
                let mut hash_matches = Vec::with_capacity(n.min(64) as usize);
                for _ in 0..n {
                    hash_matches.push(HashMatch {
                        bank: self.str(r.varint()?)?.to_owned(),
                        entry_id: self.str(r.varint()?)?.to_owned(),
                        distance: r.varint()? as u32,
                        quality: r.u8()?,
                        // Format 1 does not record which view matched.
                        view: None,
                    });
                }
                let n = r.varint()?;
                let mut video_matches = Vec::with_capacity(n.min(64) as usize);
                for _ in 0..n {
                    video_matches.push(VideoMatch {
                        bank: self.str(r.varint()?)?.to_owned(),
                        entry_id: self.str(r.varint()?)?.to_owned(),
                        percent: r.f64()?,
                    });
                }
                let n = r.varint()?;
                let mut scores = Vec::with_capacity(n.min(64) as usize);
                for _ in 0..n {
                    scores.push(ClassifierScore {
                        category: self.str(r.varint()?)?.to_owned(),
                        model: self.str(r.varint()?)?.to_owned(),
                        model_version: self.str(r.varint()?)?.to_owned(),
                        score: r.f64()?,
                    });
                }
                SignalRecord::Frame(FrameRecord {
                    stream,
                    tenant,
                    pdq,
                    signals: FrameSignals {
                        media_time,
                        wall_ms,
                        hash_matches,
                        video_matches,
                        scores,
                    },
                })
            }
            TAG_EVENT => {
                let stream = stream()?;
                let tenant = self.str(r.varint()?)?.to_owned();
                let kind = match r.u8()? {
                    1 => EventKind::Stalled,
                    2 => EventKind::Ended,
                    _ => return Ok(None),
                };
                SignalRecord::Event(EventRecord {
                    stream,
                    tenant,
                    kind,
                    wall_ms: r.varint()?,
                })
            }
            TAG_TICK => SignalRecord::Tick {
                wall_ms: r.varint()?,
            },
            _ => return Ok(None),
        }))
    }

    /// The tenant of a frame or event record (without decoding the rest).
    pub fn tenant_of(&self, raw: RawRecord<'a>) -> Result<Option<&'a str>, BlockError> {
        match raw.tag {
            TAG_FRAME | TAG_EVENT => Ok(Some(self.str(Reader(raw.body).varint()?)?)),
            _ => Ok(None),
        }
    }
}

/// Decodes every record of one block (header included): what a fleet consumer of
/// `firebreak.signals` calls per message.
pub fn decode_block(bytes: &[u8]) -> Result<Vec<SignalRecord>, BlockError> {
    let (payload, _) = split_block(bytes)?;
    let block = Block::parse(payload)?;
    let mut out = Vec::new();
    for raw in block.records() {
        if let Some(r) = block.decode(raw?)? {
            out.push(r);
        }
    }
    Ok(out)
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BlockError> {
        if self.0.len() < n {
            return Err(BlockError::Corrupt("record overruns its block"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, BlockError> {
        Ok(self.take(1)?[0])
    }

    fn f64(&mut self) -> Result<f64, BlockError> {
        Ok(f64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn varint(&mut self) -> Result<u64, BlockError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(BlockError::Corrupt("varint too long"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(stream: &str, wall_ms: u64) -> SignalRecord {
        SignalRecord::Frame(FrameRecord {
            stream: stream.into(),
            tenant: "t".into(),
            pdq: Some(([7; 32], 90)),
            signals: FrameSignals {
                media_time: 1.5,
                wall_ms,
                hash_matches: vec![HashMatch {
                    bank: "crisis".into(),
                    entry_id: "e1".into(),
                    distance: 12,
                    quality: 90,
                    view: None,
                }],
                video_matches: vec![VideoMatch {
                    bank: "crisis".into(),
                    entry_id: "clip".into(),
                    percent: 37.5,
                }],
                scores: vec![ClassifierScore {
                    category: "weapon".into(),
                    score: 0.1 + 0.2,
                    model: "m".into(),
                    model_version: "v1".into(),
                }],
            },
        })
    }

    #[test]
    fn records_round_trip_exactly() {
        let records = vec![
            frame("a", 1_700_000_000_123),
            SignalRecord::Tick { wall_ms: 5 },
            SignalRecord::Event(EventRecord {
                stream: "a".into(),
                tenant: "t".into(),
                kind: EventKind::Ended,
                wall_ms: 9,
            }),
            frame("b", u64::MAX),
        ];
        assert_eq!(decode_block(&encode_block(&records)).unwrap(), records);
    }

    #[test]
    fn a_flipped_bit_or_a_cut_block_is_detected() {
        let mut block = encode_block(&[frame("a", 1)]);
        assert_eq!(
            split_block(&block[..block.len() - 1]).unwrap_err(),
            BlockError::Truncated
        );
        let last = block.len() - 3;
        block[last] ^= 1;
        assert!(matches!(split_block(&block), Err(BlockError::Corrupt(_))));
    }
}

//! Banks: named collections of hash-list entries, the import policy that keeps bad
//! hashes out of them, and the compact binary snapshot they are stored in.
//!
//! A bank is either positive (its entries are what we look for) or negative (known
//! benign content whose hashes collide with positive entries; a query matching a
//! negative entry has its positive matches suppressed, see [`crate::matcher`]).
//!
//! Snapshot format (little-endian), so that start-up does not re-parse text:
//!
//! ```text
//! magic "FBBANK02" | name: str | flags: u8 (1 = negative)
//!   | position: topic: str (empty = none) | u32 n | n x (partition i32 | next offset i64)
//!   | count: u64
//! count x entry: kind u8 (0 pdq, 1 vpdq, 2 md5, 3 sha256) | id: str
//!                | labels: u16 n, n x str | payload
//!   pdq:    32 hash bytes (hex order) | quality u8 (255 = unknown)
//!   vpdq:   u32 n, n x (u64 frame | f64 timestamp | 32 hash bytes | quality u8)
//!   md5:    16 bytes;  sha256: 32 bytes
//! crc32 (IEEE) of everything before it: u32
//! str = u32 byte length + UTF-8
//! ```
//!
//! `FBBANK01` (written before fleet banks) is the same without the position; it is
//! still read (as a bank with no position), and every save writes `FBBANK02`.
//!
//! The position is where the bank stands on the shared bank topic: for each partition,
//! the offset of the next record the bank has not applied. A worker starting from the
//! snapshot reads the topic from there.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};

use crate::lists::{LineError, Reason, Record, Signal};
use firebreak_hashing::vpdq::{QUALITY_THRESHOLD, VpdqFeature};
use firebreak_hashing::{Hash256, PdqHash};

/// One bank entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Entry id, unique in its bank.
    pub id: String,
    /// The hash.
    pub signal: Signal,
    /// Labels.
    pub labels: Vec<String>,
}

/// What an import accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportPolicy {
    /// PDQ hashes (and vPDQ frames) below this quality are rejected (frames dropped).
    /// Hashes whose list carries no quality cannot be checked and are accepted.
    pub min_quality: u8,
}

impl Default for ImportPolicy {
    fn default() -> Self {
        ImportPolicy {
            min_quality: QUALITY_THRESHOLD,
        }
    }
}

/// The outcome of one import.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// New entries.
    pub added: usize,
    /// Entries replaced by a record with the same id.
    pub updated: usize,
    /// Entries deleted by a delete record.
    pub deleted: usize,
    /// Rejected lines by reason.
    pub rejected: BTreeMap<Reason, usize>,
    /// Rejected lines (all of them, in file order).
    pub errors: Vec<LineError>,
}

impl ImportReport {
    /// Lines rejected for any reason.
    pub fn rejected_total(&self) -> usize {
        self.rejected.values().sum()
    }

    fn reject(&mut self, e: LineError) {
        *self.rejected.entry(e.reason).or_default() += 1;
        self.errors.push(e);
    }
}

/// Where a bank stands on a shared topic: per partition, the next offset to apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicPosition {
    /// The topic.
    pub topic: String,
    /// Partition → offset of the first record not yet applied.
    pub offsets: BTreeMap<i32, i64>,
}

/// A named collection of entries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bank {
    /// Bank name.
    pub name: String,
    /// Whether this is a negative (suppression) bank.
    pub negative: bool,
    /// Where the bank stands on the shared bank topic, if it follows one.
    pub position: Option<TopicPosition>,
    entries: Vec<Entry>,
    /// Entry index by id (foldhash: SipHash was 17 % of loading a 10M-entry bank;
    /// foldhash is seeded per process, so ids chosen to collide cannot be precomputed).
    by_id: HashMap<String, usize, foldhash::fast::RandomState>,
}

/// Why a snapshot could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Reading failed.
    #[error("reading bank snapshot: {0}")]
    Io(#[from] io::Error),
    /// Not a snapshot, or a snapshot from an incompatible version.
    #[error("not a Firebreak bank snapshot (bad magic)")]
    Magic,
    /// The checksum does not match: the file is truncated or corrupt.
    #[error("bank snapshot is corrupt: checksum mismatch")]
    Checksum,
    /// Structurally invalid content.
    #[error("bank snapshot is corrupt: {0}")]
    Invalid(String),
}

const MAGIC: &[u8; 8] = b"FBBANK02";
const MAGIC_V1: &[u8; 8] = b"FBBANK01";

impl Bank {
    /// An empty bank.
    pub fn new(name: impl Into<String>, negative: bool) -> Self {
        Bank {
            name: name.into(),
            negative,
            ..Bank::default()
        }
    }

    /// The entries, in insertion order (deletions move the last entry into the gap).
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the bank is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry with this id.
    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.by_id.get(id).map(|&i| &self.entries[i])
    }

    /// Applies parsed records (and the parse's own errors) under `policy`.
    pub fn import(
        &mut self,
        records: Vec<Record>,
        parse_errors: Vec<LineError>,
        policy: ImportPolicy,
    ) -> ImportReport {
        let mut report = ImportReport::default();
        let mut all: Vec<Result<Record, LineError>> = records
            .into_iter()
            .map(Ok)
            .chain(parse_errors.into_iter().map(Err))
            .collect();
        all.sort_by_key(|r| match r {
            Ok(r) => r.line,
            Err(e) => e.line,
        });
        for item in all {
            let record = match item {
                Ok(r) => r,
                Err(e) => {
                    report.reject(e);
                    continue;
                }
            };
            let id = record
                .id
                .clone()
                .unwrap_or_else(|| record.signal.content_id());
            if record.delete {
                if self.remove(&id) {
                    report.deleted += 1;
                } else {
                    report.reject(LineError {
                        line: record.line,
                        reason: Reason::UnknownDelete,
                        detail: format!("no entry {id:?} to delete"),
                    });
                }
                continue;
            }
            let signal = match check(record.signal, policy) {
                Ok(s) => s,
                Err((reason, detail)) => {
                    report.reject(LineError {
                        line: record.line,
                        reason,
                        detail,
                    });
                    continue;
                }
            };
            let entry = Entry {
                id: id.clone(),
                signal,
                labels: record.labels,
            };
            match self.by_id.get(&id) {
                Some(&i) => {
                    self.entries[i] = entry;
                    report.updated += 1;
                }
                None => {
                    self.by_id.insert(id, self.entries.len());
                    self.entries.push(entry);
                    report.added += 1;
                }
            }
        }
        report
    }

    /// Removes an entry by id; false if there is none.
    pub fn remove(&mut self, id: &str) -> bool {
        let Some(i) = self.by_id.remove(id) else {
            return false;
        };
        self.entries.swap_remove(i);
        if let Some(moved) = self.entries.get(i) {
            self.by_id.insert(moved.id.clone(), i);
        }
        true
    }

    /// Writes the binary snapshot.
    pub fn write_snapshot(&self, out: &mut impl Write) -> io::Result<()> {
        let mut w = CrcWriter {
            inner: out,
            crc: crc32fast::Hasher::new(),
        };
        w.put(MAGIC)?;
        w.put_str(&self.name)?;
        w.put(&[u8::from(self.negative)])?;
        let none = TopicPosition::default();
        let position = self.position.as_ref().unwrap_or(&none);
        w.put_str(&position.topic)?;
        w.put(&(position.offsets.len() as u32).to_le_bytes())?;
        for (partition, offset) in &position.offsets {
            w.put(&partition.to_le_bytes())?;
            w.put(&offset.to_le_bytes())?;
        }
        w.put(&(self.entries.len() as u64).to_le_bytes())?;
        for e in &self.entries {
            let kind: u8 = match e.signal {
                Signal::Pdq { .. } => 0,
                Signal::Vpdq(_) => 1,
                Signal::Md5(_) => 2,
                Signal::Sha256(_) => 3,
            };
            w.put(&[kind])?;
            w.put_str(&e.id)?;
            let n = u16::try_from(e.labels.len())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "over 65535 labels"))?;
            w.put(&n.to_le_bytes())?;
            for l in &e.labels {
                w.put_str(l)?;
            }
            match &e.signal {
                Signal::Pdq { hash, quality } => {
                    w.put(&hash.to_bytes())?;
                    w.put(&[quality.unwrap_or(255)])?;
                }
                Signal::Vpdq(frames) => {
                    w.put(&(frames.len() as u32).to_le_bytes())?;
                    for f in frames {
                        w.put(&f.frame_number.to_le_bytes())?;
                        w.put(&f.timestamp.to_le_bytes())?;
                        w.put(&f.pdq.hash.to_bytes())?;
                        w.put(&[f.pdq.quality])?;
                    }
                }
                Signal::Md5(d) => w.put(d)?,
                Signal::Sha256(d) => w.put(d)?,
            }
        }
        let crc = w.crc.clone().finalize();
        w.inner.write_all(&crc.to_le_bytes())
    }

    /// Reads a snapshot written by [`Bank::write_snapshot`], checking its checksum.
    pub fn read_snapshot(input: &mut impl Read) -> Result<Bank, SnapshotError> {
        let mut bytes = Vec::new();
        input.read_to_end(&mut bytes)?;
        if bytes.len() < MAGIC.len() + 4 || (&bytes[..8] != MAGIC && &bytes[..8] != MAGIC_V1) {
            return Err(SnapshotError::Magic);
        }
        let v2 = &bytes[..8] == MAGIC;
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32fast::hash(body).to_le_bytes() != crc {
            return Err(SnapshotError::Checksum);
        }
        let mut r = Cursor { bytes: body, at: 8 };
        let name = r.str()?;
        let negative = r.take::<1>()?[0] != 0;
        let mut position = None;
        if v2 {
            let topic = r.str()?;
            let n = u32::from_le_bytes(r.take()?);
            let mut offsets = BTreeMap::new();
            for _ in 0..n {
                let partition = i32::from_le_bytes(r.take()?);
                let offset = i64::from_le_bytes(r.take()?);
                offsets.insert(partition, offset);
            }
            if !topic.is_empty() {
                position = Some(TopicPosition { topic, offsets });
            }
        }
        let count = u64::from_le_bytes(r.take()?);
        let mut bank = Bank::new(name, negative);
        bank.position = position;
        // Each entry takes at least 7 bytes: do not trust a corrupt count with memory.
        let plausible = (body.len() / 7) as u64;
        bank.entries.reserve(count.min(plausible) as usize);
        bank.by_id.reserve(count.min(plausible) as usize);
        for _ in 0..count {
            let kind = r.take::<1>()?[0];
            let id = r.str()?;
            let n = u16::from_le_bytes(r.take()?);
            let labels = (0..n).map(|_| r.str()).collect::<Result<Vec<_>, _>>()?;
            let signal = match kind {
                0 => {
                    let hash = Hash256::from_bytes(&r.take()?);
                    let q = r.take::<1>()?[0];
                    Signal::Pdq {
                        hash,
                        quality: (q != 255).then_some(q),
                    }
                }
                1 => {
                    let n = u32::from_le_bytes(r.take()?);
                    let mut frames = Vec::with_capacity((n as usize).min(body.len() / 49));
                    for _ in 0..n {
                        let frame_number = u64::from_le_bytes(r.take()?);
                        let timestamp = f64::from_le_bytes(r.take()?);
                        let hash = Hash256::from_bytes(&r.take()?);
                        let quality = r.take::<1>()?[0];
                        frames.push(VpdqFeature {
                            pdq: PdqHash { hash, quality },
                            frame_number,
                            timestamp,
                        });
                    }
                    Signal::Vpdq(frames)
                }
                2 => Signal::Md5(r.take()?),
                3 => Signal::Sha256(r.take()?),
                k => return Err(SnapshotError::Invalid(format!("unknown entry kind {k}"))),
            };
            if bank.by_id.insert(id.clone(), bank.entries.len()).is_some() {
                return Err(SnapshotError::Invalid(format!("duplicate entry id {id:?}")));
            }
            bank.entries.push(Entry { id, signal, labels });
        }
        if r.at != body.len() {
            return Err(SnapshotError::Invalid("trailing bytes".into()));
        }
        Ok(bank)
    }
}

/// Applies the hygiene rules to one signal.
fn check(signal: Signal, policy: ImportPolicy) -> Result<Signal, (Reason, String)> {
    match signal {
        Signal::Pdq { hash, quality } => {
            if hash.is_zero() {
                return Err((
                    Reason::ZeroHash,
                    "the all-zero hash matches every blank image".into(),
                ));
            }
            match quality {
                Some(0) => Err((Reason::ZeroQuality, "quality 0".into())),
                Some(q) if q < policy.min_quality => Err((
                    Reason::LowQuality,
                    format!("quality {q} < {}", policy.min_quality),
                )),
                _ => Ok(Signal::Pdq { hash, quality }),
            }
        }
        Signal::Vpdq(frames) => {
            let kept: Vec<VpdqFeature> = frames
                .into_iter()
                .filter(|f| !f.pdq.hash.is_zero() && f.pdq.quality >= policy.min_quality.max(1))
                .collect();
            if kept.is_empty() {
                Err((
                    Reason::EmptyVideo,
                    "no frame passes the quality and zero-hash checks".into(),
                ))
            } else {
                Ok(Signal::Vpdq(kept))
            }
        }
        Signal::Md5(d) if d == [0; 16] => Err((Reason::ZeroHash, "all-zero digest".into())),
        Signal::Sha256(d) if d == [0; 32] => Err((Reason::ZeroHash, "all-zero digest".into())),
        other => Ok(other),
    }
}

struct CrcWriter<'a, W: Write> {
    inner: &'a mut W,
    crc: crc32fast::Hasher,
}

impl<W: Write> CrcWriter<'_, W> {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.crc.update(bytes);
        self.inner.write_all(bytes)
    }
    fn put_str(&mut self, s: &str) -> io::Result<()> {
        self.put(&(s.len() as u32).to_le_bytes())?;
        self.put(s.as_bytes())
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let end = self.at.checked_add(N).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| SnapshotError::Invalid("truncated".into()))?;
        let out = self.bytes[self.at..end].try_into().expect("N bytes");
        self.at = end;
        Ok(out)
    }
    fn str(&mut self) -> Result<String, SnapshotError> {
        let n = u32::from_le_bytes(self.take()?) as usize;
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| SnapshotError::Invalid("truncated string".into()))?;
        let s = std::str::from_utf8(&self.bytes[self.at..end])
            .map_err(|_| SnapshotError::Invalid("string is not UTF-8".into()))?;
        self.at = end;
        Ok(s.to_owned())
    }
}

//! Hash-list formats: parsing with per-line errors, and export.
//!
//! | format | shape | source |
//! |---|---|---|
//! | [`Format::LocalFile`] | `<signal_type> <signal>` per line (`pdq`, `vpdq`, `video_md5`) | python-threatexchange `LocalFileSignalExchangeAPI` |
//! | [`Format::ThreatUpdates`] | JSON records `id, indicator, type, should_delete, tags` | ThreatExchange `threat_updates` API |
//! | [`Format::Tcap`] | JSON records `hash_digest, algorithm, ideology, deleted` | Tech Against Terrorism TCAP hash list |
//! | [`Format::Csv`] | `hash,quality,id,labels` (labels `;`-separated, header optional) | Firebreak |
//! | [`Format::Vpdq`] | one video: `frame,quality,hash,timestamp` per line | vPDQ reference CLI |
//!
//! JSON formats accept a JSON array, an object with a `data` array (the API's paging
//! envelope), or one object per line (JSONL). For JSONL an error names the line; for
//! an array it names the record (1-based). The `vpdq` signal of the local-file format is
//! python-threatexchange's compact serialisation: a JSON list of `"hash,quality,timestamp"`
//! strings.
//!
//! Parsing only checks syntax. Hygiene (all-zero hashes, low quality) is the import
//! policy's job, in [`crate::bank`], so that both are counted in one report.

use std::fmt;

use serde_json::Value;

use firebreak_hashing::vpdq::{self, VpdqFeature};
use firebreak_hashing::{Hash256, PdqHash};

/// A hash-list format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// python-threatexchange local file.
    LocalFile,
    /// ThreatExchange `threat_updates` records.
    ThreatUpdates,
    /// Tech Against Terrorism TCAP records.
    Tcap,
    /// Plain CSV.
    Csv,
    /// One video's vPDQ features.
    Vpdq,
}

impl Format {
    /// All formats with their command-line names.
    pub const ALL: [(Format, &'static str); 5] = [
        (Format::LocalFile, "local-file"),
        (Format::ThreatUpdates, "te-json"),
        (Format::Tcap, "tcap"),
        (Format::Csv, "csv"),
        (Format::Vpdq, "vpdq"),
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(f, _)| *f == self)
            .map_or("?", |(_, n)| n)
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(f, _)| *f)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|(_, n)| *n).collect();
                format!(
                    "unknown format {s:?} (expected one of: {})",
                    names.join(", ")
                )
            })
    }
}

/// A hash a list can carry.
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    /// A PDQ hash; quality when the format carries it.
    Pdq {
        /// The hash.
        hash: Hash256,
        /// Quality 0..=100, if known.
        quality: Option<u8>,
    },
    /// A video: its vPDQ frame features.
    Vpdq(Vec<VpdqFeature>),
    /// MD5 of a whole file.
    Md5([u8; 16]),
    /// SHA-256 of a whole file.
    Sha256([u8; 32]),
}

impl Signal {
    /// The signal type's name (python-threatexchange's names where it has one).
    pub fn kind(&self) -> &'static str {
        match self {
            Signal::Pdq { .. } => "pdq",
            Signal::Vpdq(_) => "vpdq",
            Signal::Md5(_) => "video_md5",
            Signal::Sha256(_) => "sha256",
        }
    }

    /// A stable identifier derived from the content, for lists without entry ids.
    pub fn content_id(&self) -> String {
        match self {
            Signal::Pdq { hash, .. } => format!("pdq:{hash}"),
            Signal::Vpdq(frames) => match frames.first() {
                Some(f) => format!("vpdq:{}:{}", f.pdq.hash, frames.len()),
                None => "vpdq:empty".to_owned(),
            },
            Signal::Md5(d) => format!("md5:{}", hex(d)),
            Signal::Sha256(d) => format!("sha256:{}", hex(d)),
        }
    }

    /// The signal as text (hex, or the compact vPDQ JSON list).
    pub fn to_text(&self) -> String {
        match self {
            Signal::Pdq { hash, .. } => hash.to_hex(),
            Signal::Vpdq(frames) => {
                let items: Vec<Value> = frames
                    .iter()
                    .map(|f| {
                        Value::String(format!(
                            "{},{},{:.3}",
                            f.pdq.hash, f.pdq.quality, f.timestamp
                        ))
                    })
                    .collect();
                Value::Array(items).to_string()
            }
            Signal::Md5(d) => hex(d),
            Signal::Sha256(d) => hex(d),
        }
    }
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses exactly `N` bytes of hex.
pub fn parse_digest<const N: usize>(text: &str) -> Result<[u8; N], String> {
    let text = text.trim();
    if text.len() != 2 * N || !text.is_ascii() {
        return Err(format!("expected {} hex digits, got {:?}", 2 * N, text));
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
            .map_err(|_| format!("not hex: {text:?}"))?;
    }
    Ok(out)
}

/// One parsed list record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Line (or, in a JSON array, record number), 1-based.
    pub line: usize,
    /// The entry id, if the format carries one.
    pub id: Option<String>,
    /// The hash.
    pub signal: Signal,
    /// Labels (tags, ideology, ...).
    pub labels: Vec<String>,
    /// The record deletes the entry instead of adding it.
    pub delete: bool,
}

/// Why a line was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// Not valid syntax for the format (bad JSON, wrong field count...).
    Syntax,
    /// A required field is missing.
    MissingField,
    /// A hash that does not parse.
    BadHash,
    /// A quality outside 0..=100 or not a number.
    BadQuality,
    /// A signal type or algorithm Firebreak does not match on.
    UnsupportedType,
    /// The all-zero PDQ hash (what hashers return for blank images).
    ZeroHash,
    /// Quality 0.
    ZeroQuality,
    /// Quality below the import minimum.
    LowQuality,
    /// A video with no frames left.
    EmptyVideo,
    /// A delete for an id the bank does not hold.
    UnknownDelete,
}

impl Reason {
    /// A short machine-readable name.
    pub fn name(self) -> &'static str {
        match self {
            Reason::Syntax => "syntax",
            Reason::MissingField => "missing_field",
            Reason::BadHash => "bad_hash",
            Reason::BadQuality => "bad_quality",
            Reason::UnsupportedType => "unsupported_type",
            Reason::ZeroHash => "zero_hash",
            Reason::ZeroQuality => "zero_quality",
            Reason::LowQuality => "low_quality",
            Reason::EmptyVideo => "empty_video",
            Reason::UnknownDelete => "unknown_delete",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A rejected line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// Line (or JSON array record), 1-based.
    pub line: usize,
    /// The category.
    pub reason: Reason,
    /// What exactly was wrong.
    pub detail: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}: {}", self.line, self.reason, self.detail)
    }
}

fn err(line: usize, reason: Reason, detail: impl Into<String>) -> LineError {
    LineError {
        line,
        reason,
        detail: detail.into(),
    }
}

/// Everything a parse produced: good records and rejected lines, in file order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    /// Accepted records.
    pub records: Vec<Record>,
    /// Rejected lines.
    pub errors: Vec<LineError>,
}

/// Parses a list. `default_id` names the entry of a single-video vPDQ file.
pub fn parse(format: Format, text: &str, default_id: Option<&str>) -> Parsed {
    match format {
        Format::LocalFile => parse_local_file(text),
        Format::ThreatUpdates => parse_json(text, threat_update),
        Format::Tcap => parse_json(text, tcap),
        Format::Csv => parse_csv(text),
        Format::Vpdq => parse_vpdq_file(text, default_id),
    }
}

fn pdq_from_text(text: &str, line: usize) -> Result<Signal, LineError> {
    Hash256::from_hex(text.trim())
        .map(|hash| Signal::Pdq {
            hash,
            quality: None,
        })
        .map_err(|e| err(line, Reason::BadHash, e.to_string()))
}

fn parse_compact_vpdq(text: &str, line: usize) -> Result<Signal, LineError> {
    let items: Vec<String> = serde_json::from_str(text).map_err(|e| {
        err(
            line,
            Reason::Syntax,
            format!("vpdq signal is not a JSON list of strings: {e}"),
        )
    })?;
    let mut frames = Vec::with_capacity(items.len());
    for (n, item) in items.iter().enumerate() {
        let parts: Vec<&str> = item.split(',').collect();
        let [hash, quality, timestamp] = parts[..] else {
            return Err(err(
                line,
                Reason::Syntax,
                format!("frame {n}: expected \"hash,quality,timestamp\", got {item:?}"),
            ));
        };
        let hash = Hash256::from_hex(hash)
            .map_err(|e| err(line, Reason::BadHash, format!("frame {n}: {e}")))?;
        let quality = parse_quality(quality)
            .map_err(|d| err(line, Reason::BadQuality, format!("frame {n}: {d}")))?;
        let timestamp: f64 = timestamp.trim().parse().map_err(|_| {
            err(
                line,
                Reason::Syntax,
                format!("frame {n}: bad timestamp {timestamp:?}"),
            )
        })?;
        frames.push(VpdqFeature {
            pdq: PdqHash { hash, quality },
            frame_number: n as u64,
            timestamp,
        });
    }
    Ok(Signal::Vpdq(frames))
}

fn parse_quality(text: &str) -> Result<u8, String> {
    match text.trim().parse::<u8>() {
        Ok(q) if q <= 100 => Ok(q),
        _ => Err(format!("quality must be 0..=100, got {text:?}")),
    }
}

fn parse_local_file(text: &str) -> Parsed {
    let mut out = Parsed::default();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let Some((kind, signal)) = trimmed.split_once(' ') else {
            out.errors.push(err(
                line,
                Reason::Syntax,
                "expected \"<signal_type> <signal>\"",
            ));
            continue;
        };
        let signal = signal.trim();
        let parsed = match kind {
            "pdq" => pdq_from_text(signal, line),
            "vpdq" => parse_compact_vpdq(signal, line),
            "video_md5" | "md5" => parse_digest::<16>(signal)
                .map(Signal::Md5)
                .map_err(|d| err(line, Reason::BadHash, d)),
            "sha256" => parse_digest::<32>(signal)
                .map(Signal::Sha256)
                .map_err(|d| err(line, Reason::BadHash, d)),
            other => Err(err(
                line,
                Reason::UnsupportedType,
                format!("signal type {other:?}"),
            )),
        };
        match parsed {
            Ok(signal) => out.records.push(Record {
                line,
                id: None,
                signal,
                labels: Vec::new(),
                delete: false,
            }),
            Err(e) => out.errors.push(e),
        }
    }
    out
}

/// Splits a JSON document into records: array, `{"data": [...]}`, or JSONL.
fn parse_json(text: &str, record: fn(&Value, usize) -> Result<Record, LineError>) -> Parsed {
    let mut out = Parsed::default();
    let trimmed = text.trim_start();
    let whole: Option<Value> = if trimmed.starts_with('[') || trimmed.starts_with('{') {
        serde_json::from_str(text).ok()
    } else {
        None
    };
    let items: Vec<(usize, Result<Value, LineError>)> = match whole {
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| (i + 1, Ok(v)))
            .collect(),
        Some(Value::Object(mut obj)) if obj.get("data").is_some_and(Value::is_array) => {
            let Some(Value::Array(items)) = obj.remove("data") else {
                unreachable!()
            };
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| (i + 1, Ok(v)))
                .collect()
        }
        _ => text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                let v = serde_json::from_str::<Value>(l)
                    .map_err(|e| err(i + 1, Reason::Syntax, format!("not JSON: {e}")));
                (i + 1, v)
            })
            .collect(),
    };
    for (line, item) in items {
        match item.and_then(|v| {
            if v.is_object() {
                record(&v, line)
            } else {
                Err(err(line, Reason::Syntax, "a record must be a JSON object"))
            }
        }) {
            Ok(r) => out.records.push(r),
            Err(e) => out.errors.push(e),
        }
    }
    out
}

fn str_field<'a>(v: &'a Value, name: &str, line: usize) -> Result<&'a str, LineError> {
    match v.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(err(
            line,
            Reason::Syntax,
            format!("{name} must be a string, got {other}"),
        )),
        None => Err(err(
            line,
            Reason::MissingField,
            format!("no {name:?} field"),
        )),
    }
}

fn bool_field(v: &Value, name: &str, line: usize) -> Result<bool, LineError> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s == "true" || s == "false" => Ok(s == "true"),
        Some(other) => Err(err(
            line,
            Reason::Syntax,
            format!("{name} must be a boolean, got {other}"),
        )),
    }
}

fn id_field(v: &Value, name: &str) -> Option<String> {
    match v.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

fn threat_update(v: &Value, line: usize) -> Result<Record, LineError> {
    let kind = str_field(v, "type", line)?;
    let indicator = str_field(v, "indicator", line)?;
    let signal = match kind {
        "HASH_PDQ" => pdq_from_text(indicator, line)?,
        "HASH_VIDEO_MD5" | "HASH_MD5" => {
            Signal::Md5(parse_digest(indicator).map_err(|d| err(line, Reason::BadHash, d))?)
        }
        "HASH_SHA256" => {
            Signal::Sha256(parse_digest(indicator).map_err(|d| err(line, Reason::BadHash, d))?)
        }
        other => {
            return Err(err(
                line,
                Reason::UnsupportedType,
                format!("type {other:?}"),
            ));
        }
    };
    let labels = match v.get("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(tags)) => tags
            .iter()
            .map(|t| match t {
                Value::String(s) => Ok(s.clone()),
                other => Err(err(
                    line,
                    Reason::Syntax,
                    format!("tag must be a string, got {other}"),
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(err(
                line,
                Reason::Syntax,
                format!("tags must be a list, got {other}"),
            ));
        }
    };
    Ok(Record {
        line,
        id: Some(
            id_field(v, "id").ok_or_else(|| err(line, Reason::MissingField, "no \"id\" field"))?,
        ),
        signal,
        labels,
        delete: bool_field(v, "should_delete", line)?,
    })
}

fn tcap(v: &Value, line: usize) -> Result<Record, LineError> {
    let digest = str_field(v, "hash_digest", line)?;
    let algorithm = str_field(v, "algorithm", line)?;
    let signal = match algorithm
        .to_ascii_lowercase()
        .replace(['-', '_'], "")
        .as_str()
    {
        "pdq" => pdq_from_text(digest, line)?,
        "md5" => Signal::Md5(parse_digest(digest).map_err(|d| err(line, Reason::BadHash, d))?),
        "sha256" => {
            Signal::Sha256(parse_digest(digest).map_err(|d| err(line, Reason::BadHash, d))?)
        }
        _ => {
            return Err(err(
                line,
                Reason::UnsupportedType,
                format!("algorithm {algorithm:?}"),
            ));
        }
    };
    let mut labels = Vec::new();
    if let Some(Value::String(ideology)) = v.get("ideology") {
        labels.push(format!("ideology:{ideology}"));
    }
    Ok(Record {
        line,
        id: id_field(v, "id"),
        signal,
        labels,
        delete: bool_field(v, "deleted", line)?,
    })
}

fn parse_csv(text: &str) -> Parsed {
    let mut out = Parsed::default();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_reader(text.as_bytes());
    for (i, row) in reader.records().enumerate() {
        let row = match row {
            Ok(row) => row,
            Err(e) => {
                let line = e.position().map_or(i + 1, |p| p.line() as usize);
                out.errors.push(err(line, Reason::Syntax, e.to_string()));
                continue;
            }
        };
        let line = row.position().map_or(i + 1, |p| p.line() as usize);
        let first = row.get(0).unwrap_or("");
        if i == 0 && first.eq_ignore_ascii_case("hash") {
            continue;
        }
        if row.len() > 4 {
            out.errors.push(err(
                line,
                Reason::Syntax,
                format!("expected at most 4 fields, got {}", row.len()),
            ));
            continue;
        }
        let hash = match Hash256::from_hex(first) {
            Ok(h) => h,
            Err(e) => {
                out.errors.push(err(line, Reason::BadHash, e.to_string()));
                continue;
            }
        };
        let quality = match row.get(1).filter(|q| !q.is_empty()) {
            None => None,
            Some(q) => match parse_quality(q) {
                Ok(q) => Some(q),
                Err(d) => {
                    out.errors.push(err(line, Reason::BadQuality, d));
                    continue;
                }
            },
        };
        let id = row.get(2).filter(|s| !s.is_empty()).map(str::to_owned);
        let labels = row
            .get(3)
            .map(|l| {
                l.split(';')
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        out.records.push(Record {
            line,
            id,
            signal: Signal::Pdq { hash, quality },
            labels,
            delete: false,
        });
    }
    out
}

fn parse_vpdq_file(text: &str, default_id: Option<&str>) -> Parsed {
    let mut out = Parsed::default();
    let mut frames = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        match vpdq::parse_line(raw, i + 1) {
            Ok(f) => frames.push(f),
            Err(e) => out.errors.push(err(i + 1, Reason::Syntax, e.to_string())),
        }
    }
    if frames.is_empty() {
        out.errors
            .push(err(1, Reason::EmptyVideo, "no valid frame lines"));
    } else {
        out.records.push(Record {
            line: 1,
            id: default_id.map(str::to_owned),
            signal: Signal::Vpdq(frames),
            labels: Vec::new(),
            delete: false,
        });
    }
    out
}

/// An entry to export.
#[derive(Debug, Clone, Copy)]
pub struct ExportEntry<'a> {
    /// Entry id.
    pub id: &'a str,
    /// The hash.
    pub signal: &'a Signal,
    /// Labels.
    pub labels: &'a [String],
}

/// Writes entries in `format`. Entries the format cannot carry (a video in CSV, say)
/// are skipped and counted in the second value.
pub fn export<'a>(
    format: Format,
    entries: impl IntoIterator<Item = ExportEntry<'a>>,
) -> (String, usize) {
    let mut text = String::new();
    let mut skipped = 0;
    for e in entries {
        let line = match (format, e.signal) {
            (Format::LocalFile, s) => Some(format!("{} {}", s.kind(), s.to_text())),
            (Format::Csv, Signal::Pdq { hash, quality }) => {
                let q = quality.map(|q| q.to_string()).unwrap_or_default();
                let mut w = csv::WriterBuilder::new()
                    .has_headers(false)
                    .from_writer(Vec::new());
                let ok = w
                    .write_record([hash.to_hex(), q, e.id.to_owned(), e.labels.join(";")])
                    .is_ok();
                let bytes = w.into_inner().unwrap_or_default();
                ok.then(|| String::from_utf8_lossy(&bytes).trim_end().to_owned())
            }
            (
                Format::ThreatUpdates,
                s @ (Signal::Pdq { .. } | Signal::Md5(_) | Signal::Sha256(_)),
            ) => {
                let kind = match s {
                    Signal::Pdq { .. } => "HASH_PDQ",
                    Signal::Md5(_) => "HASH_VIDEO_MD5",
                    _ => "HASH_SHA256",
                };
                Some(
                    serde_json::json!({"id": e.id, "indicator": s.to_text(), "type": kind,
                        "should_delete": false, "tags": e.labels})
                    .to_string(),
                )
            }
            (Format::Tcap, s @ (Signal::Pdq { .. } | Signal::Md5(_) | Signal::Sha256(_))) => {
                let algorithm = match s {
                    Signal::Pdq { .. } => "PDQ",
                    Signal::Md5(_) => "MD5",
                    _ => "SHA256",
                };
                let ideology = e.labels.iter().find_map(|l| l.strip_prefix("ideology:"));
                Some(
                    serde_json::json!({"id": e.id, "hash_digest": s.to_text(),
                        "algorithm": algorithm, "ideology": ideology, "deleted": false})
                    .to_string(),
                )
            }
            (Format::Vpdq, Signal::Vpdq(frames)) => {
                Some(vpdq::to_text(frames).trim_end().to_owned())
            }
            _ => None,
        };
        match line {
            Some(l) => {
                text.push_str(&l);
                text.push('\n');
            }
            None => skipped += 1,
        }
    }
    (text, skipped)
}

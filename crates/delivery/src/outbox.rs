//! The durable outbox: every escalation event is written here, and synced to disk,
//! before anyone tries to deliver it, so a broker outage or a crash loses nothing that
//! was accepted.
//!
//! Layout: a directory of segment files `seg-<first seq, 20 digits>.log` and one
//! `acked` file. A record is `length u32 LE | crc32 u32 LE | payload`, the payload being
//! `seq u64 LE | key length u32 LE | key | event bytes`. Sequence numbers count up from 1
//! across segments. `acked` holds the highest sequence number delivered (everything at
//! or below it is delivered; delivery is in order).
//!
//! **Fsync policy.** [`Outbox::append`] writes and `fdatasync`s the segment before it
//! returns, so an accepted event survives a process crash and a power loss. Acks are
//! written to a temporary file, synced and renamed over `acked`; after a crash an ack
//! may be lost (the last few events are then delivered again, and consumers drop them by
//! event id), but never an event. A segment is deleted once every record in it is acked.
//!
//! **Recovery.** On open, segments are read in order; a torn record at the end of the
//! last segment (a crash mid-write: short or failing its checksum) is cut off, because it
//! was never acknowledged to the caller. Damage anywhere else is reported as
//! [`OutboxError::Corrupt`] rather than silently skipped.
//!
//! **Bound.** When the undelivered bytes would exceed `max_bytes`, `append` fails with
//! [`OutboxError::Full`]: the caller must raise an alarm (the broker has been away long
//! enough to fill the disk budget), and nothing already accepted is dropped.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// One stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Sequence number (1, 2, ...).
    pub seq: u64,
    /// Partitioning key (the stream id).
    pub key: String,
    /// The event (CloudEvents JSON).
    pub payload: Vec<u8>,
}

impl Record {
    fn encoded_len(&self) -> u64 {
        (8 + 8 + 4 + self.key.len() + self.payload.len()) as u64
    }
}

/// Outbox limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxConfig {
    /// Undelivered bytes on disk at most.
    pub max_bytes: u64,
    /// Roll to a new segment beyond this size.
    pub segment_bytes: u64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            max_bytes: 256 << 20,
            segment_bytes: 8 << 20,
        }
    }
}

/// Outbox failures.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// Disk I/O failed.
    #[error("outbox I/O at {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The undelivered events fill the disk budget: alarm.
    #[error(
        "outbox full: {pending_bytes} undelivered bytes, limit {max_bytes}; the event was not accepted"
    )]
    Full {
        /// Bytes waiting.
        pending_bytes: u64,
        /// The limit.
        max_bytes: u64,
    },
    /// A record in the middle of the log is damaged.
    #[error("outbox corrupt: {path} at byte {offset}: {reason}")]
    Corrupt {
        /// The segment.
        path: PathBuf,
        /// Byte offset of the damaged record.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> OutboxError + '_ {
    move |source| OutboxError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What [`Outbox::open`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Undelivered events found.
    pub pending: usize,
    /// Bytes of a torn final record that were cut off.
    pub truncated_bytes: u64,
    /// The highest delivered sequence number.
    pub acked: u64,
}

/// The outbox. Not shared between processes; one writer.
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    config: OutboxConfig,
    /// (first seq, path, bytes, last seq) per segment, oldest first.
    segments: Vec<Segment>,
    current: Option<File>,
    next_seq: u64,
    acked: u64,
    pending: VecDeque<Record>,
    pending_bytes: u64,
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    bytes: u64,
    last_seq: u64,
}

impl Outbox {
    /// Opens (or creates) the outbox in `dir`, recovering what a crash left.
    pub fn open(dir: &Path, config: OutboxConfig) -> Result<(Outbox, Recovery), OutboxError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let acked_path = dir.join("acked");
        let acked = match fs::read(&acked_path) {
            Ok(b) if b.len() == 8 => u64::from_le_bytes(b.try_into().expect("8 bytes")),
            Ok(_) => {
                return Err(OutboxError::Corrupt {
                    path: acked_path,
                    offset: 0,
                    reason: "ack file is not 8 bytes".into(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io_err(&acked_path)(e)),
        };
        let mut paths: Vec<PathBuf> = fs::read_dir(dir)
            .map_err(io_err(dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("seg-") && n.ends_with(".log"))
            })
            .collect();
        paths.sort();
        let mut outbox = Outbox {
            dir: dir.to_owned(),
            config,
            segments: Vec::new(),
            current: None,
            next_seq: acked + 1,
            acked,
            pending: VecDeque::new(),
            pending_bytes: 0,
        };
        let mut recovery = Recovery {
            acked,
            ..Recovery::default()
        };
        let count = paths.len();
        for (i, path) in paths.into_iter().enumerate() {
            let last = i + 1 == count;
            let mut bytes = Vec::new();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(io_err(&path))?;
            let mut at = 0usize;
            let mut last_seq = 0;
            let mut prev: Option<u64> = outbox
                .segments
                .last()
                .map(|s| s.last_seq)
                .filter(|&s| s != 0);
            while at < bytes.len() {
                match decode(&bytes[at..]) {
                    Ok((record, used)) => {
                        if prev.is_some_and(|p| record.seq != p + 1) {
                            return Err(OutboxError::Corrupt {
                                path: path.clone(),
                                offset: at as u64,
                                reason: format!("sequence {} out of order", record.seq),
                            });
                        }
                        last_seq = record.seq;
                        prev = Some(record.seq);
                        outbox.next_seq = outbox.next_seq.max(record.seq + 1);
                        if record.seq > acked {
                            outbox.pending_bytes += record.encoded_len();
                            outbox.pending.push_back(record);
                        }
                        at += used;
                    }
                    Err(reason) if last && torn_tail(&bytes[at..]) => {
                        // A torn tail: the write never completed, so it was never
                        // acknowledged to the caller. Cut it off.
                        tracing::warn!(path = %path.display(), offset = at, reason, "outbox: cutting off a torn final record");
                        recovery.truncated_bytes = (bytes.len() - at) as u64;
                        let f = OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .map_err(io_err(&path))?;
                        f.set_len(at as u64).map_err(io_err(&path))?;
                        f.sync_all().map_err(io_err(&path))?;
                        break;
                    }
                    Err(reason) => {
                        return Err(OutboxError::Corrupt {
                            path,
                            offset: at as u64,
                            reason,
                        });
                    }
                }
            }
            let seg = Segment {
                path,
                bytes: at as u64,
                last_seq,
            };
            if seg.last_seq != 0 && seg.last_seq <= acked && !last {
                fs::remove_file(&seg.path).map_err(io_err(&seg.path))?;
            } else {
                outbox.segments.push(seg);
            }
        }
        recovery.pending = outbox.pending.len();
        Ok((outbox, recovery))
    }

    /// Undelivered events, oldest first.
    pub fn pending(&self) -> impl Iterator<Item = &Record> {
        self.pending.iter()
    }

    /// Number of undelivered events.
    pub fn depth(&self) -> usize {
        self.pending.len()
    }

    /// Bytes of undelivered events.
    pub fn pending_bytes(&self) -> u64 {
        self.pending_bytes
    }

    /// The highest delivered sequence number.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Stores an event durably (synced before returning) and returns its sequence number.
    pub fn append(&mut self, key: &str, payload: &[u8]) -> Result<u64, OutboxError> {
        let record = Record {
            seq: self.next_seq,
            key: key.to_owned(),
            payload: payload.to_vec(),
        };
        let len = record.encoded_len();
        if self.pending_bytes + len > self.config.max_bytes {
            return Err(OutboxError::Full {
                pending_bytes: self.pending_bytes,
                max_bytes: self.config.max_bytes,
            });
        }
        let roll = self
            .segments
            .last()
            .is_none_or(|s| s.bytes >= self.config.segment_bytes);
        if roll || self.current.is_none() {
            if roll {
                let path = self.dir.join(format!("seg-{:020}.log", record.seq));
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                // Make the new file's directory entry durable.
                File::open(&self.dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io_err(&self.dir))?;
                self.segments.push(Segment {
                    path,
                    bytes: 0,
                    last_seq: 0,
                });
                self.current = Some(file);
            } else {
                let path = &self.segments.last().expect("a segment").path;
                let file = OpenOptions::new()
                    .append(true)
                    .open(path)
                    .map_err(io_err(path))?;
                self.current = Some(file);
            }
        }
        let seg = self.segments.last_mut().expect("a segment");
        let file = self.current.as_mut().expect("open");
        let bytes = encode(&record);
        file.write_all(&bytes)
            .and_then(|()| file.sync_data())
            .map_err(io_err(&seg.path))?;
        seg.bytes += bytes.len() as u64;
        seg.last_seq = record.seq;
        self.next_seq += 1;
        self.pending_bytes += len;
        self.pending.push_back(record);
        Ok(self.next_seq - 1)
    }

    /// Marks everything up to `seq` delivered, persists that, and deletes segments that
    /// hold only delivered events.
    pub fn ack(&mut self, seq: u64) -> Result<(), OutboxError> {
        if seq <= self.acked {
            return Ok(());
        }
        while self.pending.front().is_some_and(|r| r.seq <= seq) {
            let r = self.pending.pop_front().expect("front");
            self.pending_bytes -= r.encoded_len();
        }
        self.acked = seq;
        let tmp = self.dir.join("acked.tmp");
        let path = self.dir.join("acked");
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(&seq.to_le_bytes())
            .and_then(|()| f.sync_all())
            .map_err(io_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        // Keep the newest segment (it is being appended to).
        while self.segments.len() > 1 && self.segments[0].last_seq <= seq {
            let seg = self.segments.remove(0);
            fs::remove_file(&seg.path).map_err(io_err(&seg.path))?;
        }
        Ok(())
    }
}

/// Whether damaged bytes at the end of the last segment look like an interrupted final
/// write: the record runs past the end of the file, or it is the very last record. A
/// damaged record with further records after it is corruption, not a torn write.
fn torn_tail(rest: &[u8]) -> bool {
    if rest.len() < 8 {
        return true;
    }
    let len = u32::from_le_bytes(rest[..4].try_into().expect("4")) as usize;
    8 + len >= rest.len()
}

fn encode(r: &Record) -> Vec<u8> {
    let mut payload = Vec::with_capacity(12 + r.key.len() + r.payload.len());
    payload.extend_from_slice(&r.seq.to_le_bytes());
    payload.extend_from_slice(&(r.key.len() as u32).to_le_bytes());
    payload.extend_from_slice(r.key.as_bytes());
    payload.extend_from_slice(&r.payload);
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

fn decode(bytes: &[u8]) -> Result<(Record, usize), String> {
    if bytes.len() < 8 {
        return Err("short header".into());
    }
    let len = u32::from_le_bytes(bytes[..4].try_into().expect("4")) as usize;
    let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4"));
    let body = bytes.get(8..8 + len).ok_or("short record")?;
    if crc32fast::hash(body) != crc {
        return Err("checksum mismatch".into());
    }
    if body.len() < 12 {
        return Err("record too short".into());
    }
    let seq = u64::from_le_bytes(body[..8].try_into().expect("8"));
    let key_len = u32::from_le_bytes(body[8..12].try_into().expect("4")) as usize;
    let key = body.get(12..12 + key_len).ok_or("key overruns record")?;
    let key = String::from_utf8(key.to_vec()).map_err(|_| "key is not UTF-8")?;
    Ok((
        Record {
            seq,
            key,
            payload: body[12 + key_len..].to_vec(),
        },
        8 + len,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path, config: OutboxConfig) -> (Outbox, Recovery) {
        Outbox::open(dir, config).unwrap()
    }

    #[test]
    fn survives_reopen_and_acks_delete_segments() {
        let dir = tempfile::tempdir().unwrap();
        let config = OutboxConfig {
            max_bytes: 1 << 20,
            segment_bytes: 200,
        };
        let (mut o, r) = open(dir.path(), config);
        assert_eq!(r, Recovery::default());
        for i in 0..20 {
            assert_eq!(
                o.append("s1", format!("event {i}").as_bytes()).unwrap(),
                i + 1
            );
        }
        let segments = || {
            fs::read_dir(dir.path())
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with("seg-")
                })
                .count()
        };
        let before = segments();
        assert!(before > 2, "{before} segments");
        o.ack(12).unwrap();
        assert!(segments() < before);
        drop(o);
        let (o, r) = open(dir.path(), config);
        assert_eq!((r.pending, r.acked, r.truncated_bytes), (8, 12, 0));
        let seqs: Vec<u64> = o.pending().map(|r| r.seq).collect();
        assert_eq!(seqs, (13..=20).collect::<Vec<_>>());
        assert_eq!(o.pending().next().unwrap().payload, b"event 12");
    }

    #[test]
    fn torn_tail_is_cut_and_middle_damage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let config = OutboxConfig::default();
        let (mut o, _) = open(dir.path(), config);
        for i in 0..3 {
            o.append("k", format!("e{i}").as_bytes()).unwrap();
        }
        drop(o);
        let seg = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().contains("seg-"))
            .unwrap();
        let full = fs::read(&seg).unwrap();
        // A crash mid-write: half of a fourth record.
        let mut torn = full.clone();
        torn.extend_from_slice(
            &encode(&Record {
                seq: 4,
                key: "k".into(),
                payload: b"e3".to_vec(),
            })[..9],
        );
        fs::write(&seg, &torn).unwrap();
        let (mut o, r) = open(dir.path(), config);
        assert_eq!((r.pending, r.truncated_bytes), (3, 9));
        assert_eq!(o.append("k", b"e3").unwrap(), 4);
        drop(o);
        // Damage in the first record, with good records after it.
        let mut bad = fs::read(&seg).unwrap();
        bad[10] ^= 0xFF;
        fs::write(&seg, &bad).unwrap();
        let err = Outbox::open(dir.path(), config).unwrap_err();
        assert!(
            matches!(err, OutboxError::Corrupt { offset: 0, .. }),
            "{err}"
        );
    }

    #[test]
    fn full_outbox_refuses_and_keeps_what_it_has() {
        let dir = tempfile::tempdir().unwrap();
        let config = OutboxConfig {
            max_bytes: 100,
            segment_bytes: 1 << 20,
        };
        let (mut o, _) = open(dir.path(), config);
        o.append("k", &[1; 40]).unwrap();
        let err = o.append("k", &[2; 60]).unwrap_err();
        assert!(matches!(err, OutboxError::Full { .. }), "{err}");
        assert_eq!(o.depth(), 1);
        o.ack(1).unwrap();
        o.append("k", &[2; 60]).unwrap();
        assert_eq!(o.depth(), 1);
    }
}

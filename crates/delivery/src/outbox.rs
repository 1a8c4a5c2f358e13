//! The durable outbox: every escalation event is written here, and synced to disk,
//! before anyone tries to deliver it, so a broker outage or a crash loses nothing that
//! was accepted.
//!
//! Layout: a directory of segment files `seg-<first seq, 20 digits>.log` and one
//! `acked` file. A segment starts with an 8-byte header, `FBOX` and the format version
//! (u32 LE, [`SEGMENT_VERSION`]), then its records; a segment without the header is
//! version 1 (written before the header existed; its first bytes are a record length,
//! which never spells `FBOX`, a 1.4 GB record) and is read as before. A record is `length u32 LE | crc32 u32 LE | payload`, the payload being
//! `seq u64 LE | key length u32 LE | key | event bytes`. Sequence numbers count up from 1
//! across segments. `acked` holds the highest sequence number delivered (everything at
//! or below it is delivered; delivery is in order).
//!
//! **Fsync policy.** [`Outbox::append`] writes and `fdatasync`s the segment before it
//! returns, so an accepted event survives a process crash and a power loss; a write
//! or sync that fails is cut off the segment again. Syncs go through a [`Syncer`]
//! (the operating system's by default). Acks are
//! written to a temporary file, synced and renamed over `acked`; after a crash an ack
//! may be lost (the last few events are then delivered again, and consumers drop them by
//! event id), but never an event. A segment is deleted once every record in it is acked.
//!
//! **Recovery.** On open, segments are read in order; a torn record at the end of the
//! last segment (a crash mid-write: short or failing its checksum) is cut off, because it
//! was never acknowledged to the caller. Damage anywhere else is reported as
//! [`OutboxError::Corrupt`] rather than silently skipped.
//!
//! **Bound.** When the undelivered bytes would exceed `max_bytes` (or the undelivered
//! events `max_records`), `append` fails with [`OutboxError::Full`]: the caller must
//! raise an alarm (the broker has been away long enough to fill the disk budget), and
//! nothing already accepted is dropped. Above three quarters of either limit (the
//! high-water mark, [`Outbox::pressure`]) the daemon refuses new work (pushed segments
//! answered 503), so the last quarter takes the decisions of media already taken.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The segment format version this build writes (see the module doc).
pub const SEGMENT_VERSION: u32 = 2;

/// The segment header's magic.
const SEGMENT_MAGIC: &[u8; 4] = b"FBOX";

fn segment_header() -> [u8; 8] {
    let mut h = [0u8; 8];
    h[..4].copy_from_slice(SEGMENT_MAGIC);
    h[4..].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    h
}

/// How the outbox makes its writes durable. [`FileSync`] (the default) calls the
/// file's own `fdatasync`/`fsync`; tests inject one that holds a sync open.
pub trait Syncer: Send + Sync + std::fmt::Debug {
    /// Makes `file`'s data durable (`fdatasync`): after each appended record.
    fn sync_data(&self, file: &File) -> io::Result<()> {
        file.sync_data()
    }

    /// Makes `file`'s data and metadata durable (`fsync`): the directory after a new
    /// segment, the ack file, a truncated segment.
    fn sync_all(&self, file: &File) -> io::Result<()> {
        file.sync_all()
    }
}

/// The default [`Syncer`]: the operating system's `fdatasync` and `fsync`.
#[derive(Debug, Default, Clone, Copy)]
pub struct FileSync;

impl Syncer for FileSync {}

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
    /// Undelivered events at most.
    pub max_records: usize,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            max_bytes: 256 << 20,
            segment_bytes: 8 << 20,
            max_records: 1_000_000,
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

/// The outbox. Not shared between processes; shared between threads by reference.
///
/// Appends queue behind one another: each holds the write side across its write and
/// fsync. Readers never wait for the disk: [`Outbox::depth`] is an atomic published
/// after every change, and [`Outbox::pending`] copies records from a queue whose lock
/// is never held across I/O. An ack writes its file under a lock of its own.
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    config: OutboxConfig,
    sync: Arc<dyn Syncer>,
    /// The write side: held across a record's write and fsync.
    log: Mutex<Log>,
    /// Segments on disk, oldest first; the last one is appended to. A short lock.
    segments: Mutex<Vec<Segment>>,
    /// Undelivered records. A short lock, never held across I/O.
    queue: Mutex<Queue>,
    /// The sequence number in the ack file, locked across writing it.
    acked_on_disk: Mutex<u64>,
    /// The queue's length, published after every change.
    depth: AtomicUsize,
}

#[derive(Debug)]
struct Log {
    /// The segment being appended to (its file opened on first use).
    tail: Option<Tail>,
    next_seq: u64,
}

#[derive(Debug)]
struct Tail {
    path: PathBuf,
    /// Bytes of whole, synced records.
    bytes: u64,
    file: Option<File>,
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    /// The last record's sequence number (0 while empty).
    last_seq: u64,
}

#[derive(Debug, Default)]
struct Queue {
    records: VecDeque<Record>,
    bytes: u64,
    acked: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Outbox {
    /// Opens (or creates) the outbox in `dir`, recovering what a crash left.
    pub fn open(dir: &Path, config: OutboxConfig) -> Result<(Outbox, Recovery), OutboxError> {
        Outbox::open_with(dir, config, Arc::new(FileSync))
    }

    /// [`Outbox::open`] with every sync through `sync`.
    pub fn open_with(
        dir: &Path,
        config: OutboxConfig,
        sync: Arc<dyn Syncer>,
    ) -> Result<(Outbox, Recovery), OutboxError> {
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
        let mut segments: Vec<Segment> = Vec::new();
        let mut tail: Option<Tail> = None;
        let mut next_seq = acked + 1;
        let mut queue = Queue {
            acked,
            ..Queue::default()
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
            // Version 2 and later start with a header; version 1 segments do not.
            let mut at = 0usize;
            if bytes.len() >= 8 && &bytes[..4] == SEGMENT_MAGIC {
                let version = u32::from_le_bytes(bytes[4..8].try_into().expect("4"));
                if version != SEGMENT_VERSION {
                    return Err(OutboxError::Corrupt {
                        path,
                        offset: 4,
                        reason: format!(
                            "segment format version {version}; this build reads 1 and {SEGMENT_VERSION}"
                        ),
                    });
                }
                at = 8;
            }
            let mut last_seq = 0;
            let mut prev: Option<u64> = segments.last().map(|s| s.last_seq).filter(|&s| s != 0);
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
                        next_seq = next_seq.max(record.seq + 1);
                        if record.seq > acked {
                            queue.bytes += record.encoded_len();
                            queue.records.push_back(record);
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
                        sync.sync_all(&f).map_err(io_err(&path))?;
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
            if last_seq != 0 && last_seq <= acked && !last {
                fs::remove_file(&path).map_err(io_err(&path))?;
                continue;
            }
            if last {
                tail = Some(Tail {
                    path: path.clone(),
                    bytes: at as u64,
                    file: None,
                });
            }
            segments.push(Segment { path, last_seq });
        }
        recovery.pending = queue.records.len();
        let depth = AtomicUsize::new(queue.records.len());
        let outbox = Outbox {
            dir: dir.to_owned(),
            config,
            sync,
            log: Mutex::new(Log { tail, next_seq }),
            segments: Mutex::new(segments),
            queue: Mutex::new(queue),
            acked_on_disk: Mutex::new(acked),
            depth,
        };
        Ok((outbox, recovery))
    }

    /// The first `max` undelivered events, oldest first (copies: the outbox stays
    /// free for writers).
    pub fn pending(&self, max: usize) -> Vec<Record> {
        lock(&self.queue)
            .records
            .iter()
            .take(max)
            .cloned()
            .collect()
    }

    /// Number of undelivered events. Never waits for a write.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Acquire)
    }

    /// Bytes of undelivered events.
    pub fn pending_bytes(&self) -> u64 {
        lock(&self.queue).bytes
    }

    /// Why new work should be refused: the undelivered events are above three
    /// quarters of `max_bytes` or `max_records` (the rest is kept for the decisions of
    /// media already taken). `None` below the mark. A short lock, never held across I/O.
    pub fn pressure(&self) -> Option<String> {
        let (bytes, records) = {
            let q = lock(&self.queue);
            (q.bytes, q.records.len())
        };
        let (max_bytes, max_records) = (self.config.max_bytes, self.config.max_records);
        if bytes.saturating_mul(4) >= max_bytes.saturating_mul(3) {
            Some(format!(
                "outbox above its high-water mark: {bytes} undelivered bytes of {max_bytes}"
            ))
        } else if records.saturating_mul(4) >= max_records.saturating_mul(3) {
            Some(format!(
                "outbox above its high-water mark: {records} undelivered events of {max_records}"
            ))
        } else {
            None
        }
    }

    /// The highest delivered sequence number.
    pub fn acked(&self) -> u64 {
        lock(&self.queue).acked
    }

    /// Stores an event durably (synced before returning) and returns its sequence number.
    pub fn append(&self, key: &str, payload: &[u8]) -> Result<u64, OutboxError> {
        self.append_then(key, payload, |_| {})
    }

    /// [`Outbox::append`], calling `durable` with the sequence number once the record
    /// is on disk and before any reader can see it.
    pub fn append_then(
        &self,
        key: &str,
        payload: &[u8],
        durable: impl FnOnce(u64),
    ) -> Result<u64, OutboxError> {
        let mut log = lock(&self.log);
        let record = Record {
            seq: log.next_seq,
            key: key.to_owned(),
            payload: payload.to_vec(),
        };
        let len = record.encoded_len();
        // Acks only lower this while the log is held: the check is on the safe side.
        let (pending_bytes, pending) = {
            let q = lock(&self.queue);
            (q.bytes, q.records.len())
        };
        if pending_bytes + len > self.config.max_bytes || pending >= self.config.max_records {
            return Err(OutboxError::Full {
                pending_bytes,
                max_bytes: self.config.max_bytes,
            });
        }
        if log
            .tail
            .as_ref()
            .is_none_or(|t| t.bytes >= self.config.segment_bytes)
        {
            let path = self.dir.join(format!("seg-{:020}.log", record.seq));
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io_err(&path))?;
            // Make the new file's directory entry durable.
            File::open(&self.dir)
                .and_then(|d| self.sync.sync_all(&d))
                .map_err(io_err(&self.dir))?;
            lock(&self.segments).push(Segment {
                path: path.clone(),
                last_seq: 0,
            });
            log.tail = Some(Tail {
                path,
                bytes: 0,
                file: Some(file),
            });
        }
        let tail = log.tail.as_mut().expect("a segment");
        if tail.file.is_none() {
            let file = OpenOptions::new()
                .append(true)
                .open(&tail.path)
                .map_err(io_err(&tail.path))?;
            tail.file = Some(file);
        }
        let file = tail.file.as_mut().expect("open");
        let mut bytes = encode(&record);
        if tail.bytes == 0 {
            // A new segment: its header goes with its first record.
            bytes.splice(0..0, segment_header());
        }
        if let Err(e) = file
            .write_all(&bytes)
            .and_then(|()| self.sync.sync_data(file))
        {
            // Whatever part of the record reached the file is cut off again, so the
            // next record does not follow garbage; the file is reopened next time.
            let _ = file.set_len(tail.bytes);
            tail.file = None;
            return Err(io_err(&tail.path)(e));
        }
        tail.bytes += bytes.len() as u64;
        let seq = record.seq;
        if let Some(s) = lock(&self.segments).last_mut() {
            s.last_seq = seq;
        }
        log.next_seq += 1;
        durable(seq);
        let mut queue = lock(&self.queue);
        queue.bytes += len;
        queue.records.push_back(record);
        self.depth.store(queue.records.len(), Ordering::Release);
        Ok(seq)
    }

    /// Marks everything up to `seq` delivered, persists that, and deletes segments that
    /// hold only delivered events. Does not wait for appends.
    pub fn ack(&self, seq: u64) -> Result<(), OutboxError> {
        {
            let mut queue = lock(&self.queue);
            if seq <= queue.acked {
                return Ok(());
            }
            while queue.records.front().is_some_and(|r| r.seq <= seq) {
                let r = queue.records.pop_front().expect("front");
                queue.bytes -= r.encoded_len();
            }
            queue.acked = seq;
            self.depth.store(queue.records.len(), Ordering::Release);
        }
        {
            let mut on_disk = lock(&self.acked_on_disk);
            if seq > *on_disk {
                let tmp = self.dir.join("acked.tmp");
                let path = self.dir.join("acked");
                let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
                f.write_all(&seq.to_le_bytes())
                    .and_then(|()| self.sync.sync_all(&f))
                    .map_err(io_err(&tmp))?;
                fs::rename(&tmp, &path).map_err(io_err(&path))?;
                *on_disk = seq;
            }
        }
        // Keep the newest segment (it is being appended to).
        let done: Vec<Segment> = {
            let mut segments = lock(&self.segments);
            let mut done = Vec::new();
            while segments.len() > 1 && segments[0].last_seq <= seq {
                done.push(segments.remove(0));
            }
            done
        };
        for seg in done {
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
            ..OutboxConfig::default()
        };
        let (o, r) = open(dir.path(), config);
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
        let seqs: Vec<u64> = o.pending(usize::MAX).iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (13..=20).collect::<Vec<_>>());
        assert_eq!(o.pending(1)[0].payload, b"event 12");
    }

    #[test]
    fn torn_tail_is_cut_and_middle_damage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let config = OutboxConfig::default();
        let (o, _) = open(dir.path(), config);
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
        let (o, r) = open(dir.path(), config);
        assert_eq!((r.pending, r.truncated_bytes), (3, 9));
        assert_eq!(o.append("k", b"e3").unwrap(), 4);
        drop(o);
        // Damage in the first record (after the 8-byte segment header), with good
        // records after it.
        let mut bad = fs::read(&seg).unwrap();
        bad[8 + 10] ^= 0xFF;
        fs::write(&seg, &bad).unwrap();
        let err = Outbox::open(dir.path(), config).unwrap_err();
        assert!(
            matches!(err, OutboxError::Corrupt { offset: 8, .. }),
            "{err}"
        );
    }

    #[test]
    fn full_outbox_refuses_and_keeps_what_it_has() {
        let dir = tempfile::tempdir().unwrap();
        let config = OutboxConfig {
            max_bytes: 100,
            segment_bytes: 1 << 20,
            ..OutboxConfig::default()
        };
        let (o, _) = open(dir.path(), config);
        o.append("k", &[1; 40]).unwrap();
        let err = o.append("k", &[2; 60]).unwrap_err();
        assert!(matches!(err, OutboxError::Full { .. }), "{err}");
        assert_eq!(o.depth(), 1);
        o.ack(1).unwrap();
        o.append("k", &[2; 60]).unwrap();
        assert_eq!(o.depth(), 1);
    }

    /// Above three quarters of either limit the outbox reports pressure; at the record
    /// limit it refuses; an ack brings it back under the mark.
    #[test]
    fn pressure_above_the_high_water_mark_and_the_record_limit() {
        let dir = tempfile::tempdir().unwrap();
        let config = OutboxConfig {
            max_records: 4,
            ..OutboxConfig::default()
        };
        let (o, _) = open(dir.path(), config);
        o.append("k", b"1").unwrap();
        o.append("k", b"2").unwrap();
        assert_eq!(o.pressure(), None, "2 of 4 is under three quarters");
        o.append("k", b"3").unwrap();
        assert!(o.pressure().unwrap().contains("3 undelivered events of 4"));
        o.append("k", b"4").unwrap();
        assert!(matches!(
            o.append("k", b"5").unwrap_err(),
            OutboxError::Full { .. }
        ));
        o.ack(2).unwrap();
        assert_eq!(o.pressure(), None);
        // Bytes: each record of a 1-byte key and 100-byte event takes 121 bytes.
        let dir = tempfile::tempdir().unwrap();
        let (o, _) = open(
            dir.path(),
            OutboxConfig {
                max_bytes: 400,
                ..OutboxConfig::default()
            },
        );
        o.append("k", &[0; 100]).unwrap();
        o.append("k", &[0; 100]).unwrap();
        assert_eq!(o.pressure(), None, "242 of 400 bytes");
        o.append("k", &[0; 100]).unwrap();
        assert!(
            o.pressure()
                .unwrap()
                .contains("363 undelivered bytes of 400")
        );
    }

    /// Fails the next `sync_data` once armed.
    #[derive(Debug, Default)]
    struct FailOnce(std::sync::atomic::AtomicBool);

    impl Syncer for FailOnce {
        fn sync_data(&self, file: &File) -> io::Result<()> {
            if self.0.swap(false, Ordering::AcqRel) {
                return Err(io::Error::other("injected sync failure"));
            }
            file.sync_data()
        }
    }

    /// A record whose sync failed was never accepted: it is cut off the segment, so
    /// the next record takes its sequence number and a reopen finds no damage.
    #[test]
    fn a_failed_sync_is_cut_off_and_the_next_append_follows_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = OutboxConfig::default();
        let sync = Arc::new(FailOnce::default());
        let (o, _) = Outbox::open_with(dir.path(), config, sync.clone()).unwrap();
        assert_eq!(o.append("k", b"a").unwrap(), 1);
        sync.0.store(true, Ordering::Release);
        let err = o.append("k", b"b").unwrap_err();
        assert!(matches!(err, OutboxError::Io { .. }), "{err}");
        assert_eq!(o.depth(), 1);
        assert_eq!(o.append("k", b"c").unwrap(), 2);
        drop(o);
        let (o, r) = open(dir.path(), config);
        assert_eq!((r.pending, r.truncated_bytes), (2, 0));
        let got: Vec<(u64, Vec<u8>)> = o
            .pending(usize::MAX)
            .into_iter()
            .map(|r| (r.seq, r.payload))
            .collect();
        assert_eq!(got, [(1, b"a".to_vec()), (2, b"c".to_vec())]);
    }

    /// Holds every `sync_data` until released, and says when one is waiting.
    #[derive(Debug, Default)]
    struct Held {
        state: Mutex<(bool, bool)>,
        changed: std::sync::Condvar,
    }

    impl Syncer for Held {
        fn sync_data(&self, file: &File) -> io::Result<()> {
            let mut s = self.state.lock().unwrap();
            s.1 = true;
            self.changed.notify_all();
            while !s.0 {
                s = self.changed.wait(s).unwrap();
            }
            file.sync_data()
        }
    }

    /// The depth, the records to deliver and an ack are all answered while an append
    /// is held inside its fsync. A generous deadline, not a timing assertion: before
    /// the outbox had its own locks, these waited for the append.
    #[test]
    fn readers_and_acks_do_not_wait_for_an_append_in_its_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let (o, _) = open(dir.path(), OutboxConfig::default());
        o.append("k", b"first").unwrap();
        o.append("k", b"second").unwrap();
        drop(o);
        let held = Arc::new(Held::default());
        let (o, _) = Outbox::open_with(dir.path(), OutboxConfig::default(), held.clone()).unwrap();
        let o = Arc::new(o);
        let writer = {
            let o = o.clone();
            std::thread::spawn(move || o.append("k", b"third"))
        };
        {
            let s = held.state.lock().unwrap();
            let (s, _) = held
                .changed
                .wait_timeout_while(s, std::time::Duration::from_secs(10), |s| !s.1)
                .unwrap();
            assert!(s.1, "the append never reached its fsync");
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = o.clone();
        std::thread::spawn(move || {
            let depth = reader.depth();
            let seqs: Vec<u64> = reader.pending(10).iter().map(|r| r.seq).collect();
            let acked = reader.ack(1).map(|()| reader.depth());
            let _ = tx.send((depth, seqs, acked.ok()));
        });
        let answer = rx.recv_timeout(std::time::Duration::from_secs(10));
        held.state.lock().unwrap().0 = true;
        held.changed.notify_all();
        // Two records accepted, the third not yet (its fsync has not returned).
        assert_eq!(answer, Ok((2, vec![1, 2], Some(1))));
        assert_eq!(writer.join().unwrap().unwrap(), 3);
        assert_eq!(
            o.pending(10).iter().map(|r| r.seq).collect::<Vec<_>>(),
            [2, 3]
        );
    }
}

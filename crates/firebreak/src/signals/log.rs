//! The local signal log (single-process mode): segments of [`record`](super::record)
//! blocks in a directory, rotated and bounded in size and age.
//!
//! Writing: [`SignalLog::record`] hands the record to the log's own thread through a
//! bounded queue (a full queue drops the record and counts it: recording never slows
//! detection down). That thread gathers records into a block and appends the block
//! when it reaches [`BLOCK_BYTES`] or when `flush_ms` has passed, so a frame costs an
//! encode and a share of one `write` and no fsync; a segment is synced once, when it is
//! closed. Segments are never appended to after a restart: each run starts a new one,
//! so a torn tail stays where it was written and readers count it ([`ReadStats`]).
//!
//! Bounds: a segment is closed at `segment_bytes`; after each rotation the oldest
//! segments go while the directory holds more than `max_bytes`, and segments last
//! written more than `retention_hours` ago go too.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;

use super::SignalSink;
use super::record::{Block, BlockEncoder, BlockError, FILE_MAGIC, SignalRecord, split_block};
use crate::metrics::SignalSinkKind;

/// A block is appended once it reaches this many bytes.
pub const BLOCK_BYTES: usize = 256 << 10;

/// A block is cut at [`BLOCK_BYTES`] or a quarter of a segment, whichever is smaller,
/// so a segment never exceeds its size by more than a record.
fn block_bytes(segment_bytes: u64) -> usize {
    BLOCK_BYTES.min((segment_bytes / 4) as usize)
}

/// `[signals]`: the local signal log.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SignalLogConfig {
    /// Record every sampled frame's signals (default true).
    pub enabled: bool,
    /// Where (default: `signals/` in the data directory).
    pub dir: Option<PathBuf>,
    /// A segment is closed at this size (bytes, default 64 MiB).
    pub segment_bytes: u64,
    /// The oldest segments go while the log is larger (bytes, default 2 GiB).
    pub max_bytes: u64,
    /// Segments last written longer ago go (hours, default 168: a week).
    pub retention_hours: f64,
    /// Buffered records are appended at least this often (ms, default 1000).
    pub flush_ms: u64,
    /// Records waiting for the log's thread at most (beyond: dropped and counted).
    pub queue: usize,
    /// Shadow policy files: evaluated live on the same signals, their decisions
    /// written to `shadow.jsonl` here and shown as "would have escalated", never
    /// delivered.
    pub shadow: Vec<PathBuf>,
}

impl Default for SignalLogConfig {
    fn default() -> Self {
        SignalLogConfig {
            enabled: true,
            dir: None,
            segment_bytes: 64 << 20,
            max_bytes: 2 << 30,
            retention_hours: 168.0,
            flush_ms: 1000,
            queue: 1 << 16,
            shadow: Vec::new(),
        }
    }
}

impl SignalLogConfig {
    /// Every problem, with its path under `[signals]`.
    pub fn validate(&self) -> Vec<firebreak_policy::Issue> {
        let mut out = Vec::new();
        let mut push =
            |p: &str, m: String| out.push(firebreak_policy::Issue::new(format!("signals.{p}"), m));
        if self.segment_bytes < 1 << 16 {
            push("segment_bytes", "must be at least 65536".into());
        }
        if self.max_bytes < self.segment_bytes {
            push("max_bytes", "must be at least segment_bytes".into());
        }
        if !(self.retention_hours.is_finite() && self.retention_hours > 0.0) {
            push("retention_hours", "must be a positive number".into());
        }
        if self.flush_ms == 0 || self.flush_ms > 60_000 {
            push("flush_ms", "must be within 1..=60000".into());
        }
        if self.queue == 0 {
            push("queue", "must be at least 1".into());
        }
        out
    }
}

enum Msg {
    Record(SignalRecord),
    Flush(SyncSender<()>),
}

/// The local signal log's writer (see the module doc).
#[derive(Debug)]
pub struct SignalLog {
    tx: Mutex<Option<SyncSender<Msg>>>,
    dropped: prometheus::IntCounter,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    dir: PathBuf,
}

impl SignalLog {
    /// Opens `dir` (created if needed) and starts the writer thread. Records the queue
    /// cannot hold are counted in `dropped`.
    pub fn open(
        dir: &Path,
        config: &SignalLogConfig,
        dropped: prometheus::IntCounter,
    ) -> std::io::Result<Arc<SignalLog>> {
        std::fs::create_dir_all(dir)?;
        let next = segments(dir)?
            .last()
            .and_then(|p| segment_number(p))
            .map_or(1, |n| n + 1);
        let (tx, rx) = sync_channel(config.queue);
        let mut writer = Writer {
            dir: dir.to_owned(),
            config: config.clone(),
            next,
            file: None,
            written: 0,
            encoder: BlockEncoder::new(),
        };
        writer.enforce_bounds();
        let thread = std::thread::Builder::new()
            .name("signal-log".into())
            .spawn(move || writer.run(rx))?;
        Ok(Arc::new(SignalLog {
            tx: Mutex::new(Some(tx)),
            dropped,
            thread: Mutex::new(Some(thread)),
            dir: dir.to_owned(),
        }))
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }

    fn sender(&self) -> Option<SyncSender<Msg>> {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stops the writer after appending everything queued (idempotent).
    pub fn close(&self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl Drop for SignalLog {
    fn drop(&mut self) {
        self.close();
    }
}

impl SignalSink for SignalLog {
    fn record(&self, record: SignalRecord) {
        let Some(tx) = self.sender() else { return };
        match tx.try_send(Msg::Record(record)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                crate::metrics::count_signal_drop(&self.dropped, SignalSinkKind::Log, 10_000);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    fn flush(&self) {
        let Some(tx) = self.sender() else { return };
        let (done, wait) = sync_channel(1);
        if tx.send(Msg::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }
}

struct Writer {
    dir: PathBuf,
    config: SignalLogConfig,
    next: u64,
    file: Option<File>,
    written: u64,
    encoder: BlockEncoder,
}

impl Writer {
    fn run(mut self, rx: Receiver<Msg>) {
        let every = Duration::from_millis(self.config.flush_ms);
        let mut last = Instant::now();
        loop {
            let wait = every.saturating_sub(last.elapsed());
            match rx.recv_timeout(wait) {
                Ok(Msg::Record(r)) => {
                    self.encoder.push(&r);
                    if self.encoder.bytes() >= block_bytes(self.config.segment_bytes) {
                        self.append();
                        last = Instant::now();
                    }
                }
                Ok(Msg::Flush(done)) => {
                    self.append();
                    last = Instant::now();
                    let _ = done.send(());
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.append();
                    last = Instant::now();
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.append();
                    if let Some(f) = self.file.take() {
                        let _ = f.sync_data();
                    }
                    return;
                }
            }
        }
    }

    fn append(&mut self) {
        if self.encoder.is_empty() {
            return;
        }
        let block = self.encoder.finish();
        if let Err(e) = self.write(&block) {
            tracing::error!(error = %e, dir = %self.dir.display(), "signal log: block not written");
            self.file = None;
        }
    }

    fn write(&mut self, block: &[u8]) -> std::io::Result<()> {
        if self
            .file
            .as_ref()
            .is_some_and(|_| self.written + block.len() as u64 > self.config.segment_bytes)
        {
            if let Some(f) = self.file.take() {
                f.sync_data()?;
            }
            self.enforce_bounds();
        }
        if self.file.is_none() {
            let path = self.dir.join(segment_name(self.next));
            self.next += 1;
            let mut f = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)?;
            f.write_all(&FILE_MAGIC)?;
            self.written = FILE_MAGIC.len() as u64;
            self.file = Some(f);
        }
        let f = self.file.as_mut().expect("opened above");
        f.write_all(block)?;
        self.written += block.len() as u64;
        Ok(())
    }

    /// Deletes closed segments beyond the size bound (oldest first) and the age bound.
    fn enforce_bounds(&mut self) {
        let Ok(list) = segments(&self.dir) else {
            return;
        };
        let now = SystemTime::now();
        let max_age = Duration::from_secs_f64(self.config.retention_hours * 3600.0);
        let mut sizes: Vec<(PathBuf, u64, bool)> = list
            .into_iter()
            .filter_map(|p| {
                let meta = std::fs::metadata(&p).ok()?;
                let old = meta
                    .modified()
                    .ok()
                    .and_then(|m| now.duration_since(m).ok())
                    .is_some_and(|age| age > max_age);
                Some((p, meta.len(), old))
            })
            .collect();
        // The segment being written is not in the list yet (it is opened after this).
        let mut total: u64 = sizes.iter().map(|s| s.1).sum();
        // Room for the next segment.
        let limit = self
            .config
            .max_bytes
            .saturating_sub(self.config.segment_bytes);
        for (path, size, old) in sizes.drain(..) {
            if (total > limit || old) && std::fs::remove_file(&path).is_ok() {
                total -= size;
            }
        }
    }
}

/// The name of segment `n`.
fn segment_name(n: u64) -> String {
    format!("signals-{n:010}.fbsig")
}

fn segment_number(path: &Path) -> Option<u64> {
    path.file_name()?
        .to_str()?
        .strip_prefix("signals-")?
        .strip_suffix(".fbsig")?
        .parse()
        .ok()
}

/// The log's segments, oldest first.
pub fn segments(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out: Vec<(u64, PathBuf)> = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if let Some(n) = segment_number(&p) {
            out.push((n, p));
        }
    }
    out.sort();
    Ok(out.into_iter().map(|(_, p)| p).collect())
}

/// What reading a log found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Segments read.
    pub segments: u64,
    /// Blocks read.
    pub blocks: u64,
    /// Records read (of every tenant).
    pub records: u64,
    /// Blocks with a bad checksum or structure (the rest of their segment is skipped).
    pub corrupt: u64,
    /// Segments ending inside a block (a torn append).
    pub truncated: u64,
    /// Segments without the signal log's header.
    pub foreign: u64,
}

impl ReadStats {
    /// Problems met.
    pub fn errors(&self) -> u64 {
        self.corrupt + self.truncated + self.foreign
    }
}

/// Calls `f` with each good block of a segment's bytes, counting what it finds.
pub fn for_each_block<'a>(bytes: &'a [u8], stats: &mut ReadStats, mut f: impl FnMut(&Block<'a>)) {
    stats.segments += 1;
    let Some(mut rest) = bytes.strip_prefix(&FILE_MAGIC[..]) else {
        stats.foreign += 1;
        return;
    };
    while !rest.is_empty() {
        match split_block(rest).and_then(|(payload, after)| Ok((Block::parse(payload)?, after))) {
            Ok((block, after)) => {
                stats.blocks += 1;
                stats.records += block.len();
                f(&block);
                rest = after;
            }
            Err(BlockError::Truncated) => {
                stats.truncated += 1;
                return;
            }
            Err(BlockError::Corrupt(_)) => {
                stats.corrupt += 1;
                return;
            }
        }
    }
}

/// Every record of the log in `dir` (for tools and tests; replay streams instead).
pub fn read_all(dir: &Path) -> std::io::Result<(Vec<SignalRecord>, ReadStats)> {
    let mut stats = ReadStats::default();
    let mut out = Vec::new();
    for path in segments(dir)? {
        let bytes = std::fs::read(&path)?;
        let mut bad = 0;
        for_each_block(&bytes, &mut stats, |block| {
            for raw in block.records() {
                match raw.and_then(|r| block.decode(r)) {
                    Ok(Some(r)) => out.push(r),
                    Ok(None) => {}
                    Err(_) => bad += 1,
                }
            }
        });
        stats.corrupt += bad;
    }
    Ok((out, stats))
}

/// Erases `tenant`'s records from the closed segments of `dir` (each segment rewritten
/// without them, then renamed over the original). Returns the records erased. Run it
/// with the daemon stopped, or accept that the segment being written keeps its
/// records until the next erase.
pub fn erase_tenant(dir: &Path, tenant: &str) -> std::io::Result<u64> {
    let mut erased = 0;
    for path in segments(dir)? {
        let bytes = std::fs::read(&path)?;
        let mut stats = ReadStats::default();
        let mut out = FILE_MAGIC.to_vec();
        let mut encoder = BlockEncoder::new();
        let mut here = 0;
        for_each_block(&bytes, &mut stats, |block| {
            for raw in block.records().flatten() {
                if block.tenant_of(raw).ok().flatten() == Some(tenant) {
                    here += 1;
                    continue;
                }
                if let Ok(Some(r)) = block.decode(raw) {
                    encoder.push(&r);
                }
            }
            if !encoder.is_empty() {
                out.extend_from_slice(&encoder.finish());
            }
        });
        if here > 0 {
            let tmp = path.with_extension("erasing");
            let mut f = File::create(&tmp)?;
            f.write_all(&out)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            erased += here;
        }
    }
    Ok(erased)
}

/// Writes records to a new segment synchronously (the synthetic-log generator, tests).
#[derive(Debug)]
pub struct SegmentWriter {
    dir: PathBuf,
    segment_bytes: u64,
    next: u64,
    file: Option<std::io::BufWriter<File>>,
    written: u64,
    encoder: BlockEncoder,
}

impl SegmentWriter {
    /// Starts writing in `dir` (after its existing segments).
    pub fn new(dir: &Path, segment_bytes: u64) -> std::io::Result<SegmentWriter> {
        std::fs::create_dir_all(dir)?;
        let next = segments(dir)?
            .last()
            .and_then(|p| segment_number(p))
            .map_or(1, |n| n + 1);
        Ok(SegmentWriter {
            dir: dir.to_owned(),
            segment_bytes,
            next,
            file: None,
            written: 0,
            encoder: BlockEncoder::new(),
        })
    }

    /// Appends a record.
    pub fn push(&mut self, record: &SignalRecord) -> std::io::Result<()> {
        self.encoder.push(record);
        if self.encoder.bytes() >= block_bytes(self.segment_bytes) {
            self.block()?;
        }
        Ok(())
    }

    fn block(&mut self) -> std::io::Result<()> {
        if self.encoder.is_empty() {
            return Ok(());
        }
        let block = self.encoder.finish();
        if self.written + block.len() as u64 > self.segment_bytes
            && let Some(mut f) = self.file.take()
        {
            f.flush()?;
        }
        if self.file.is_none() {
            let path = self.dir.join(segment_name(self.next));
            self.next += 1;
            let mut f = std::io::BufWriter::with_capacity(1 << 20, File::create(path)?);
            f.write_all(&FILE_MAGIC)?;
            self.written = FILE_MAGIC.len() as u64;
            self.file = Some(f);
        }
        let f = self.file.as_mut().expect("opened above");
        f.write_all(&block)?;
        self.written += block.len() as u64;
        Ok(())
    }

    /// Writes what is buffered and closes the segment.
    pub fn finish(mut self) -> std::io::Result<()> {
        self.block()?;
        if let Some(mut f) = self.file.take() {
            f.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With the writer stalled (a stuck disk), records beyond the queue are counted in
    /// the metric the log was given; once it resumes, the records read back plus the
    /// drops counted equal the records offered.
    #[test]
    fn records_a_stalled_writer_cannot_take_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let config = SignalLogConfig {
            queue: 16,
            ..SignalLogConfig::default()
        };
        let dropped = prometheus::IntCounter::new("dropped", "dropped").unwrap();
        let log = SignalLog::open(dir.path(), &config, dropped.clone()).unwrap();
        // Stall the writer: it blocks handing this flush's answer over until it is read.
        let (hold, release) = sync_channel(0);
        log.sender().unwrap().send(Msg::Flush(hold)).unwrap();

        let offered = 40u64;
        for wall_ms in 0..offered {
            log.record(SignalRecord::Tick { wall_ms });
        }
        // The queue holds 16 records, one fewer if the writer had not yet taken the
        // flush that stalls it.
        assert!((24..=25).contains(&dropped.get()), "{}", dropped.get());
        assert_eq!(log.dropped(), dropped.get());

        release.recv().unwrap();
        log.flush();
        let (records, _) = read_all(dir.path()).unwrap();
        assert_eq!(records.len() as u64 + dropped.get(), offered);
    }
}

//! One live stream: a dedicated decode thread that opens the source, decodes, samples
//! frames, converts each sampled frame once to RGB (capped in size) and hands it over a
//! [`LatestQueue`], plus the stream's lifecycle, watchdog and counters.
//!
//! - Sources: a file (replay), a URL that FFmpeg's protocols read (`rtmp://`, `srt://`,
//!   `http(s)://`, ...), or pushed segments ([`super::feed`]).
//! - Sampling: every frame, N per second of media time, or keyframes only (the decoder
//!   is told to skip every other frame, so they are not decoded at all).
//! - Backpressure: the queue never blocks the decoder; when the detectors fall behind
//!   the oldest waiting frame is dropped (`queue_full`), and after `degrade_after`
//!   drops the stream degrades to keyframes only (`degraded`, counted once per switch).
//! - Lifecycle: starting -> live (first frame) -> stalled (no frame for
//!   `stall_after`) -> live again, or ended (end of input) or failed (cannot be
//!   opened, no video, unsupported codec, resolution above the maximum, or URL
//!   reconnects exhausted). URL sources reconnect with capped exponential backoff.
//! - Cancellation: [`LiveStream::stop`] sets a flag that FFmpeg's interrupt callback
//!   polls, so a blocked open or read returns promptly.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ff::format::Pixel;
use ff::software::scaling::{Context as Scaler, Flags};
use ffmpeg_next as ff;

use super::feed::SegmentReader;
use super::queue::LatestQueue;

/// Where a stream's bytes come from.
#[derive(Debug)]
pub enum Source {
    /// A media file, decoded once (replay).
    File(PathBuf),
    /// A URL read by FFmpeg's protocols (`rtmp://`, `srt://`, `http(s)://`).
    Url(String),
    /// Pushed segments (the ingest hook).
    Segments(SegmentReader),
    /// An HLS playlist, polled by a thread of its own into the stream's segment feed.
    Hls(super::hls::HlsConfig),
}

/// A `protocol_whitelist` that names no FFmpeg protocol: nothing may be opened.
const NO_PROTOCOLS: &str = "none";

/// The FFmpeg protocols a source URL may use (its `protocol_whitelist`), by scheme; a
/// path without a scheme is a file. `None` for any other scheme (`gopher:`, `tcp:`,
/// `unix:`, `pipe:`, `concat:`, `subfile:`, `data:` ...): refused before FFmpeg sees it,
/// and FFmpeg refuses nested protocols outside the list.
pub fn protocol_whitelist(url: &str) -> Option<&'static str> {
    let scheme = match url.split_once("://") {
        Some((scheme, _)) => scheme.to_ascii_lowercase(),
        // `concat:a|b`, `subfile:...` have no `//`: a path, opened with `file` only.
        None => return Some("file"),
    };
    match scheme.as_str() {
        "file" => Some("file"),
        "http" => Some("http,tcp"),
        "https" => Some("https,http,tls,tcp"),
        "rtmp" => Some("rtmp,tcp"),
        "rtmps" => Some("rtmps,tls,tcp"),
        "srt" => Some("srt"),
        "udp" => Some("udp"),
        _ => None,
    }
}

/// Which decoded frames are sampled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// Every decoded frame.
    Every,
    /// This many frames per second of media time.
    PerSecond(f64),
    /// Keyframes only; other frames are not decoded.
    Keyframes,
}

/// Stream settings.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// Stream id.
    pub id: String,
    /// Sampling mode.
    pub sampling: Sampling,
    /// Sampled frames are scaled down (keeping the aspect ratio) to fit this box.
    pub max_output: (u32, u32),
    /// Streams larger than this are refused (a bad or hostile input).
    pub max_input: (u32, u32),
    /// Frames waiting for the detectors, at most.
    pub queue_capacity: usize,
    /// Queue drops after which the stream degrades to keyframes only.
    pub degrade_after: u64,
    /// No frame for this long: stalled.
    pub stall_after: Duration,
    /// A blocked read is abandoned (and a URL reconnected) after this long.
    pub read_timeout: Duration,
    /// URL reconnects: first delay, cap, and attempts before failing.
    pub reconnect: (Duration, Duration, u32),
    /// Decoder threads (0: FFmpeg chooses).
    pub threads: usize,
}

impl StreamConfig {
    /// Defaults for stream `id`: one frame per second, 1280x720 output, 8K input limit.
    pub fn new(id: impl Into<String>) -> Self {
        StreamConfig {
            id: id.into(),
            sampling: Sampling::PerSecond(1.0),
            max_output: (1280, 720),
            max_input: (7680, 4320),
            queue_capacity: 8,
            degrade_after: 32,
            stall_after: Duration::from_secs(10),
            read_timeout: Duration::from_secs(15),
            reconnect: (Duration::from_millis(500), Duration::from_secs(30), 8),
            threads: 1,
        }
    }
}

/// A sampled frame, converted once and shared by every detector.
#[derive(Debug, Clone)]
pub struct SampledFrame {
    /// The stream.
    pub stream_id: Arc<str>,
    /// Position among the stream's sampled frames (0, 1, ...).
    pub index: u64,
    /// Media time (seconds), continuous across reconnects and discontinuities.
    pub pts: f64,
    /// Wall-clock time it was decoded (ms since the Unix epoch).
    pub wall_ms: u64,
    /// For segment sources (pushed segments, HLS): when the bytes this frame was
    /// decoded from were handed over (ms since the Unix epoch), the start of the
    /// end-to-end latency. `None` for other sources.
    pub arrival_ms: Option<u64>,
    /// Whether it was a keyframe.
    pub keyframe: bool,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// RGB24 pixels, `width * 3` bytes per row.
    pub rgb: Arc<[u8]>,
}

/// A stream's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamState {
    /// Opening, no frame yet.
    Starting,
    /// Frames are arriving.
    Live,
    /// No frame for `stall_after`.
    Stalled,
    /// The input ended.
    Ended,
    /// The stream cannot continue (see [`StreamStats::error`]).
    Failed,
}

impl StreamState {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            StreamState::Starting => "starting",
            StreamState::Live => "live",
            StreamState::Stalled => "stalled",
            StreamState::Ended => "ended",
            StreamState::Failed => "failed",
        }
    }
}

/// Counters of one stream (shared with its decode thread).
#[derive(Debug, Default)]
pub struct Counters {
    /// Frames decoded.
    pub decoded: AtomicU64,
    /// Frames sampled (converted and queued).
    pub sampled: AtomicU64,
    /// Sampled frames dropped because the queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Switches to keyframes-only because of sustained drops.
    pub degraded: AtomicU64,
    /// Packets the decoder rejected, and demuxer errors it recovered from.
    pub decode_errors: AtomicU64,
    /// Opens that failed (bad data, unreachable URL).
    pub open_errors: AtomicU64,
    /// URL reconnects.
    pub reconnects: AtomicU64,
    /// Demuxer restarts at discontinuities.
    pub discontinuities: AtomicU64,
    last_frame_ms: AtomicU64,
    /// Lag behind the live edge at the last sampled frame, ms (+1; 0 = unknown).
    lag_ms_plus_one: AtomicU64,
    state: AtomicU8,
}

/// A snapshot of a stream's counters and state.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamStats {
    /// Lifecycle state.
    pub state: StreamState,
    /// Frames decoded.
    pub decoded: u64,
    /// Frames sampled.
    pub sampled: u64,
    /// Frames dropped by reason: `queue_full`.
    pub dropped_queue_full: u64,
    /// Degradations to keyframes only.
    pub degraded: u64,
    /// Decode errors.
    pub decode_errors: u64,
    /// Failed opens.
    pub open_errors: u64,
    /// Reconnects.
    pub reconnects: u64,
    /// Discontinuities.
    pub discontinuities: u64,
    /// Milliseconds since the last sampled frame was decoded (lag behind the live edge
    /// as far as the monitor can see it), if any.
    pub since_last_frame_ms: Option<u64>,
    /// For pushed and HLS segments: how long the bytes of the last sampled frame had
    /// waited since they were handed over (lag behind the live edge), ms.
    pub lag_ms: Option<u64>,
    /// The last error, if any.
    pub error: Option<String>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

const STATES: [StreamState; 5] = [
    StreamState::Starting,
    StreamState::Live,
    StreamState::Stalled,
    StreamState::Ended,
    StreamState::Failed,
];

/// A running stream.
#[derive(Debug)]
pub struct LiveStream {
    config: StreamConfig,
    counters: Arc<Counters>,
    error: Arc<Mutex<Option<String>>>,
    frames: Arc<LatestQueue<SampledFrame>>,
    cancel: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    hls: Option<(Arc<super::hls::HlsCounters>, JoinHandle<Option<String>>)>,
}

impl LiveStream {
    /// Starts decoding `source` on a new thread.
    pub fn start(config: StreamConfig, source: Source) -> LiveStream {
        crate::init();
        let counters = Arc::new(Counters::default());
        let error = Arc::new(Mutex::new(None));
        let frames = Arc::new(LatestQueue::new(config.queue_capacity));
        let cancel = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            config: config.clone(),
            counters: counters.clone(),
            error: error.clone(),
            frames: frames.clone(),
            cancel: cancel.clone(),
            id: Arc::from(config.id.as_str()),
            arrival: None,
        };
        let (source, hls) = match source {
            Source::Hls(hls_config) => {
                let (feed, reader) = super::feed::segment_channel(4);
                let hls_counters = Arc::new(super::hls::HlsCounters::default());
                let poller =
                    super::hls::spawn(hls_config, feed, cancel.clone(), hls_counters.clone());
                (Source::Segments(reader), Some((hls_counters, poller)))
            }
            other => (other, None),
        };
        let mut worker = worker;
        if let Source::Segments(reader) = &source {
            worker.arrival = Some(reader.arrival_clock());
        }
        let thread = std::thread::Builder::new()
            .name(format!("decode-{}", config.id))
            .spawn(move || worker.run(source))
            .expect("spawn decode thread");
        LiveStream {
            config,
            counters,
            error,
            frames,
            cancel,
            thread: Some(thread),
            hls,
        }
    }

    /// The stream id.
    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// Sampled frames, oldest first.
    pub fn frames(&self) -> &Arc<LatestQueue<SampledFrame>> {
        &self.frames
    }

    /// Counters and state now (a live stream with no frame for `stall_after` is
    /// reported stalled).
    pub fn stats(&self) -> StreamStats {
        let c = &self.counters;
        let mut state = STATES[c.state.load(Ordering::Acquire) as usize];
        let last = c.last_frame_ms.load(Ordering::Acquire);
        let since = (last != 0).then(|| now_ms().saturating_sub(last));
        if state == StreamState::Live
            && since.is_some_and(|s| s > self.config.stall_after.as_millis() as u64)
        {
            state = StreamState::Stalled;
        }
        StreamStats {
            state,
            decoded: c.decoded.load(Ordering::Relaxed),
            sampled: c.sampled.load(Ordering::Relaxed),
            dropped_queue_full: c.dropped_queue_full.load(Ordering::Relaxed),
            degraded: c.degraded.load(Ordering::Relaxed),
            decode_errors: c.decode_errors.load(Ordering::Relaxed),
            open_errors: c.open_errors.load(Ordering::Relaxed),
            reconnects: c.reconnects.load(Ordering::Relaxed),
            discontinuities: c.discontinuities.load(Ordering::Relaxed),
            since_last_frame_ms: since,
            lag_ms: c.lag_ms_plus_one.load(Ordering::Relaxed).checked_sub(1),
            error: self
                .error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .or_else(|| {
                    let (hls, _) = self.hls.as_ref()?;
                    hls.stopped
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone()
                }),
        }
    }

    /// The HLS poller's counters, for an HLS source.
    pub fn hls_counters(&self) -> Option<&super::hls::HlsCounters> {
        self.hls.as_ref().map(|(c, _)| &**c)
    }

    /// Whether the decode thread has finished (ended, failed or stopped).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Asks the stream to stop without waiting: a blocked read is interrupted, the
    /// decode thread ends soon after, and the frame queue is closed.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Release);
        self.frames.close();
    }

    /// Stops the stream: interrupts a blocked read and waits for the thread. Returns
    /// false if it did not finish within `timeout` (it is then left to finish alone).
    pub fn stop(mut self, timeout: Duration) -> bool {
        self.cancel.store(true, Ordering::Release);
        self.frames.close();
        let Some(thread) = self.thread.take() else {
            return true;
        };
        let deadline = Instant::now() + timeout;
        while !thread.is_finished() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        thread.join().is_ok()
    }

    /// Waits for the decode thread to finish by itself (end of input), up to `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.is_finished() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }
}

impl Drop for LiveStream {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Release);
        self.frames.close();
    }
}

struct Worker {
    config: StreamConfig,
    counters: Arc<Counters>,
    error: Arc<Mutex<Option<String>>>,
    frames: Arc<LatestQueue<SampledFrame>>,
    cancel: Arc<AtomicBool>,
    id: Arc<str>,
    /// For segment sources: when the bytes being read arrived.
    arrival: Option<Arc<AtomicU64>>,
}

/// How one demuxer session ended.
enum SessionEnd {
    /// End of input.
    Eof,
    /// Stopped by the caller.
    Cancelled,
    /// The read timed out or failed: reconnect (URL) or give up.
    Broken(String),
    /// Unrecoverable for this stream.
    Fatal(String),
}

/// Input format and size, output size: when any changes, a new scaler is made.
type ScalerKey = (Pixel, u32, u32, u32, u32);

/// Per-stream state that survives reconnects and discontinuities.
struct Continuity {
    /// Added to each session's timestamps so media time keeps increasing.
    offset: f64,
    /// Last sampled/decoded media time.
    last_pts: f64,
    /// The last frame-to-frame step, so a new session starts one frame later.
    step: f64,
    next_sample: f64,
    index: u64,
    degraded: bool,
    drops_since_switch: u64,
    scaler: Option<(Scaler, ScalerKey)>,
    rgb: ff::frame::Video,
}

impl Worker {
    fn set_state(&self, s: StreamState) {
        self.counters.state.store(
            STATES.iter().position(|x| *x == s).unwrap_or(0) as u8,
            Ordering::Release,
        );
    }

    /// The stream is over, failed: the reason is kept, and the frame queue closes so the
    /// consumer drains it and reports the end.
    fn fail(&self, why: String) {
        tracing::warn!(stream = %self.id, error = %why, "stream failed");
        *self.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
        self.set_state(StreamState::Failed);
        self.frames.close();
    }

    fn note_error(&self, why: String) {
        tracing::warn!(stream = %self.id, error = %why, "stream error");
        *self.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
    }

    fn run(self, source: Source) {
        let _span = tracing::info_span!("stream", id = %self.id).entered();
        let mut cont = Continuity {
            offset: 0.0,
            last_pts: 0.0,
            step: 1.0 / 30.0,
            next_sample: 0.0,
            index: 0,
            degraded: false,
            drops_since_switch: 0,
            scaler: None,
            rgb: ff::frame::Video::empty(),
        };
        match source {
            Source::File(path) => {
                let end = self.session_url(&path.to_string_lossy(), &mut cont);
                self.finish(end);
            }
            Source::Url(url) => {
                let (first, cap, attempts) = self.config.reconnect;
                let mut delay = first;
                let mut failures = 0;
                loop {
                    let frames_before = self.counters.decoded.load(Ordering::Relaxed);
                    let end = self.session_url(&url, &mut cont);
                    match end {
                        SessionEnd::Cancelled | SessionEnd::Fatal(_) => return self.finish(end),
                        SessionEnd::Eof | SessionEnd::Broken(_) => {
                            if let SessionEnd::Broken(why) = &end {
                                self.note_error(why.clone());
                            }
                            if self.counters.decoded.load(Ordering::Relaxed) > frames_before {
                                failures = 0;
                                delay = first;
                            }
                            failures += 1;
                            if failures > attempts {
                                return self
                                    .fail(format!("{url}: gave up after {attempts} reconnects"));
                            }
                            self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                            tracing::info!(stream = %self.id, delay_ms = delay.as_millis() as u64, "reconnecting");
                            if self.sleep_cancellable(delay) {
                                return self.finish(SessionEnd::Cancelled);
                            }
                            delay = (delay * 2).min(cap);
                            cont.offset = cont.last_pts + cont.step;
                        }
                    }
                }
            }
            Source::Hls(_) => unreachable!("LiveStream::start turns HLS into segments"),
            Source::Segments(reader) => {
                let reader = Arc::new(Mutex::new(reader));
                loop {
                    let end = self.session_segments(&reader, &mut cont);
                    let mut r = reader.lock().unwrap_or_else(|e| e.into_inner());
                    match end {
                        SessionEnd::Cancelled => return self.finish(end),
                        _ if r.finished() => {
                            let received = r.received();
                            drop(r);
                            // Bytes came, but not one frame: a misconfigured ingest (not
                            // video, an unsupported codec), which an operator must see.
                            if received > 0 && self.counters.decoded.load(Ordering::Relaxed) == 0 {
                                let last =
                                    self.error.lock().unwrap_or_else(|e| e.into_inner()).clone();
                                return self.fail(match last {
                                    Some(e) => format!(
                                        "no video frame could be decoded from {received} pushed bytes (last error: {e})"
                                    ),
                                    None => format!(
                                        "no video frame could be decoded from {received} pushed bytes"
                                    ),
                                });
                            }
                            return self.finish(SessionEnd::Eof);
                        }
                        SessionEnd::Fatal(why) => return self.fail(why),
                        SessionEnd::Eof | SessionEnd::Broken(_) => {
                            if let SessionEnd::Broken(why) = end {
                                self.note_error(why);
                                self.counters.open_errors.fetch_add(1, Ordering::Relaxed);
                            } else {
                                self.counters
                                    .discontinuities
                                    .fetch_add(1, Ordering::Relaxed);
                            }
                            r.resume();
                            cont.offset = cont.last_pts + cont.step;
                        }
                    }
                }
            }
        }
    }

    fn finish(&self, end: SessionEnd) {
        match end {
            SessionEnd::Eof | SessionEnd::Cancelled => self.set_state(StreamState::Ended),
            SessionEnd::Broken(why) | SessionEnd::Fatal(why) => self.fail(why),
        }
        self.frames.close();
    }

    /// Sleeps up to `d`; true if cancelled meanwhile.
    fn sleep_cancellable(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        while Instant::now() < deadline {
            if self.cancel.load(Ordering::Acquire) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10).min(deadline - Instant::now()));
        }
        self.cancel.load(Ordering::Acquire)
    }

    /// An interrupt closure: cancel, or no I/O progress for `read_timeout`.
    fn interrupt(&self, progress: Arc<AtomicU64>) -> impl FnMut() -> bool + Send + 'static {
        let cancel = self.cancel.clone();
        let timeout = self.config.read_timeout.as_millis() as u64;
        move || {
            cancel.load(Ordering::Acquire)
                || now_ms().saturating_sub(progress.load(Ordering::Acquire)) > timeout
        }
    }

    fn session_url(&self, url: &str, cont: &mut Continuity) -> SessionEnd {
        let progress = Arc::new(AtomicU64::new(now_ms()));
        let Some(protocols) = protocol_whitelist(url) else {
            self.counters.open_errors.fetch_add(1, Ordering::Relaxed);
            return SessionEnd::Fatal(format!("{url}: unsupported protocol"));
        };
        let mut opts = ff::Dictionary::new();
        opts.set("protocol_whitelist", protocols);
        // Network sources: give up a dead connection instead of waiting forever.
        opts.set(
            "rw_timeout",
            &(self.config.read_timeout.as_micros()).to_string(),
        );
        let input = ff::format::input_with_interrupt_and_dictionary(
            &url,
            self.interrupt(progress.clone()),
            opts,
        );
        match input {
            Ok(input) => self.decode(input, cont, &progress),
            Err(e) if self.cancel.load(Ordering::Acquire) => {
                let _ = e;
                SessionEnd::Cancelled
            }
            Err(e) => {
                self.counters.open_errors.fetch_add(1, Ordering::Relaxed);
                if url.contains("://") && !url.starts_with("file:") {
                    SessionEnd::Broken(format!("{url}: cannot open: {e}"))
                } else {
                    SessionEnd::Fatal(format!("{url}: cannot open: {e}"))
                }
            }
        }
    }

    fn session_segments(
        &self,
        reader: &Arc<Mutex<SegmentReader>>,
        cont: &mut Continuity,
    ) -> SessionEnd {
        let progress = Arc::new(AtomicU64::new(now_ms()));
        let shared = SharedReader(reader.clone());
        let io = match ff::format::context::StreamIo::from_read(shared) {
            Ok(io) => io,
            Err(e) => return SessionEnd::Fatal(format!("custom I/O: {e}")),
        };
        // Pushed segments wait for the platform, not a socket: only cancellation
        // interrupts them (the watchdog reports the stall).
        let cancel = self.cancel.clone();
        // The bytes come from the platform: no demuxer may open anything else (an
        // HLS or concat manifest pushed as a segment would otherwise name files or
        // URLs for FFmpeg to open).
        let mut opts = ff::Dictionary::new();
        opts.set("protocol_whitelist", NO_PROTOCOLS);
        match ff::format::input_from_stream_with_interrupt(io, None, Some(opts), move || {
            cancel.load(Ordering::Acquire)
        }) {
            Ok(input) => self.decode(input, cont, &progress),
            Err(_) if self.cancel.load(Ordering::Acquire) => SessionEnd::Cancelled,
            Err(e) => SessionEnd::Broken(format!("pushed segments: cannot open: {e}")),
        }
    }

    fn decode(
        &self,
        mut input: ff::format::context::Input,
        cont: &mut Continuity,
        progress: &AtomicU64,
    ) -> SessionEnd {
        let Some(stream) = input.streams().best(ff::media::Type::Video) else {
            return SessionEnd::Fatal("no video stream".into());
        };
        let index = stream.index();
        let time_base = f64::from(stream.time_base());
        let start = stream.start_time();
        let mut ctx = match ff::codec::context::Context::from_parameters(stream.parameters()) {
            Ok(c) => c,
            Err(e) => return SessionEnd::Fatal(format!("codec parameters: {e}")),
        };
        if ff::codec::decoder::find(ctx.id()).is_none() {
            return SessionEnd::Fatal(format!("unsupported codec {:?}", ctx.id()));
        }
        ctx.set_threading(ff::threading::Config {
            kind: ff::threading::Type::Frame,
            count: self.config.threads,
            ..Default::default()
        });
        let mut decoder = match ctx.decoder().video() {
            Ok(d) => d,
            Err(e) => return SessionEnd::Fatal(format!("unsupported codec: {e}")),
        };
        let (mw, mh) = self.config.max_input;
        if decoder.width() > mw || decoder.height() > mh {
            return SessionEnd::Fatal(format!(
                "resolution {}x{} above the maximum {mw}x{mh}",
                decoder.width(),
                decoder.height()
            ));
        }
        if self.config.sampling == Sampling::Keyframes || cont.degraded {
            decoder.skip_frame(ff::Discard::NonKey);
        }
        let base = cont.offset
            - if start != ff::ffi::AV_NOPTS_VALUE {
                start as f64 * time_base
            } else {
                0.0
            };
        let mut frame = ff::frame::Video::empty();
        let mut packet = ff::Packet::empty();
        let mut end = SessionEnd::Eof;
        loop {
            match packet.read(&mut input) {
                Ok(()) => {
                    progress.store(now_ms(), Ordering::Release);
                    if packet.stream() != index {
                        continue;
                    }
                    if decoder.send_packet(&packet).is_err() {
                        self.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                }
                Err(ff::Error::Eof) => break,
                Err(ff::Error::InvalidData) => {
                    self.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Err(ff::Error::Exit) => {
                    end = if self.cancel.load(Ordering::Acquire) {
                        SessionEnd::Cancelled
                    } else {
                        SessionEnd::Broken("read timed out".into())
                    };
                    break;
                }
                Err(e) => {
                    end = SessionEnd::Broken(format!("read: {e}"));
                    break;
                }
            }
            while decoder.receive_frame(&mut frame).is_ok() {
                if let Err(why) = self.on_frame(&frame, time_base, base, cont, &mut decoder) {
                    return SessionEnd::Fatal(why);
                }
            }
        }
        if matches!(end, SessionEnd::Eof) && decoder.send_eof().is_ok() {
            while decoder.receive_frame(&mut frame).is_ok() {
                if let Err(why) = self.on_frame(&frame, time_base, base, cont, &mut decoder) {
                    return SessionEnd::Fatal(why);
                }
            }
        }
        end
    }

    fn on_frame(
        &self,
        frame: &ff::frame::Video,
        time_base: f64,
        base: f64,
        cont: &mut Continuity,
        decoder: &mut ff::decoder::Video,
    ) -> Result<(), String> {
        self.counters.decoded.fetch_add(1, Ordering::Relaxed);
        let ts = frame.timestamp().or(frame.pts());
        let pts = match ts {
            Some(t) => base + t as f64 * time_base,
            None => cont.last_pts,
        };
        if pts > cont.last_pts {
            let step = pts - cont.last_pts;
            if step <= 1.0 {
                cont.step = step;
            }
            cont.last_pts = pts;
        }
        let sample = match self.config.sampling {
            Sampling::Every | Sampling::Keyframes => true,
            Sampling::PerSecond(_) if cont.degraded => true,
            Sampling::PerSecond(rate) => {
                if pts + 1e-6 >= cont.next_sample {
                    cont.next_sample = ((pts * rate + 1e-6).floor() + 1.0) / rate;
                    true
                } else {
                    false
                }
            }
        };
        if !sample {
            return Ok(());
        }
        let (fw, fh) = (frame.width(), frame.height());
        let (mw, mh) = self.config.max_input;
        if fw > mw || fh > mh {
            return Err(format!("resolution {fw}x{fh} above the maximum {mw}x{mh}"));
        }
        let (ow, oh) = fit(fw, fh, self.config.max_output);
        let key = (frame.format(), fw, fh, ow, oh);
        if cont.scaler.as_ref().map(|(_, k)| *k) != Some(key) {
            let scaler = Scaler::get(frame.format(), fw, fh, Pixel::RGB24, ow, oh, Flags::AREA)
                .map_err(|e| format!("pixel conversion: {e}"))?;
            cont.scaler = Some((scaler, key));
            // A new size needs a new output frame too.
            cont.rgb = ff::frame::Video::empty();
        }
        let (scaler, _) = cont.scaler.as_mut().expect("set above");
        if scaler.run(frame, &mut cont.rgb).is_err() {
            self.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let stride = cont.rgb.stride(0);
        let row = ow as usize * 3;
        let data = cont.rgb.data(0);
        let mut rgb = Vec::with_capacity(row * oh as usize);
        for y in 0..oh as usize {
            rgb.extend_from_slice(&data[y * stride..y * stride + row]);
        }
        let wall_ms = now_ms();
        let arrival_ms = self
            .arrival
            .as_ref()
            .map(|a| a.load(Ordering::Acquire))
            .filter(|&at| at != 0);
        let sampled = SampledFrame {
            arrival_ms,
            stream_id: self.id.clone(),
            index: cont.index,
            pts,
            wall_ms,
            keyframe: frame.is_key(),
            width: ow,
            height: oh,
            rgb: rgb.into(),
        };
        cont.index += 1;
        self.counters.sampled.fetch_add(1, Ordering::Relaxed);
        self.counters
            .last_frame_ms
            .store(wall_ms, Ordering::Release);
        if let Some(arrival) = &self.arrival {
            let at = arrival.load(Ordering::Acquire);
            if at != 0 {
                let lag = wall_ms.saturating_sub(at) + 1;
                self.counters.lag_ms_plus_one.store(lag, Ordering::Relaxed);
            }
        }
        self.set_state(StreamState::Live);
        if self.frames.push(sampled).is_some() {
            self.counters
                .dropped_queue_full
                .fetch_add(1, Ordering::Relaxed);
            cont.drops_since_switch += 1;
            if !cont.degraded && cont.drops_since_switch >= self.config.degrade_after {
                cont.degraded = true;
                self.counters.degraded.fetch_add(1, Ordering::Relaxed);
                decoder.skip_frame(ff::Discard::NonKey);
                tracing::warn!(stream = %self.id, "detectors behind: degrading to keyframes only");
            }
        }
        Ok(())
    }
}

/// Fits `w x h` into `max`, keeping the aspect ratio, never upscaling; even sizes.
fn fit(w: u32, h: u32, (mw, mh): (u32, u32)) -> (u32, u32) {
    if w <= mw && h <= mh {
        return (w, h);
    }
    let scale = (f64::from(mw) / f64::from(w)).min(f64::from(mh) / f64::from(h));
    let even = |v: f64| ((v.round() as u32) & !1).max(2);
    (even(f64::from(w) * scale), even(f64::from(h) * scale))
}

/// A [`SegmentReader`] shared across demuxer sessions (each session's custom I/O
/// owns one of these; the reader itself outlives them).
struct SharedReader(Arc<Mutex<SegmentReader>>);

impl std::io::Read for SharedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::fit;

    #[test]
    fn fit_keeps_aspect_and_never_upscales() {
        assert_eq!(fit(640, 360, (1280, 720)), (640, 360));
        assert_eq!(fit(1920, 1080, (1280, 720)), (1280, 720));
        assert_eq!(fit(1080, 1920, (1280, 720)), (404, 720));
    }
}

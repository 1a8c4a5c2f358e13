//! One live stream: a dedicated decode thread that opens the source, decodes, samples
//! frames, converts each sampled frame once to RGB (capped in size) and hands it over a
//! [`LatestQueue`], plus the stream's lifecycle, watchdog and counters.
//!
//! - Sources: a file (replay), a URL that FFmpeg's protocols read (`rtmp://`, `srt://`,
//!   `http(s)://`, ...), or pushed segments ([`super::feed`]).
//! - Sampling ([`sampling`], pure): every frame, N per second of media time, or
//!   keyframes only (the decoder is told to skip every other frame, so they are not
//!   decoded at all). Media time only moves forward: a new demuxer session and a
//!   timestamp jump (far ahead, backwards, stuck, missing) both continue one frame step
//!   after the last frame, counted as a discontinuity.
//! - Backpressure: the queue never blocks the decoder; when the detectors fall behind
//!   the oldest waiting frame is dropped (`queue_full`), and after `degrade_after`
//!   drops the stream degrades to keyframes only (`degraded`, counted once per switch).
//! - Lifecycle (`worker`): starting -> live (first frame) -> stalled (no frame for
//!   `stall_after`) -> live again, or ended (end of input) or failed (cannot be
//!   opened, no video, unsupported codec, resolution above the maximum, or URL
//!   reconnects exhausted). URL sources reconnect with capped exponential backoff
//!   ([`Backoff`]).
//! - Size cap: a video stream whose declared size exceeds `max_input` is refused before
//!   its decoder opens, and the decoder itself refuses frames of more than
//!   `max_input`'s pixels (FFmpeg's `max_pixels`), whatever the stream declares later.
//!   FFmpeg's probe, which decodes a few frames before the size is known, runs with the
//!   same cap (`open`), so no frame above it is ever allocated.
//! - The FFmpeg session (`session`): opening with a protocol whitelist, demuxing,
//!   decoding, and conversion through the crate's shared RGB converter.
//! - Cancellation: [`LiveStream::stop`] sets a flag that FFmpeg's interrupt callback
//!   polls, so a blocked open or read returns promptly.

mod backoff;
mod error;
mod open;
pub mod sampling;
mod session;
mod worker;

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use backoff::Backoff;
pub use error::StreamError;
pub use sampling::PtsJump;

use firebreak_hashing::{ImageError, ImageView, PixelFormat};

use super::feed::SegmentReader;
use super::queue::LatestQueue;
use worker::Worker;

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
    /// A pushed stream's decoder waits for the detectors (instead of dropping
    /// sampled frames) while it is less than this far behind the arrival of the
    /// bytes it decodes: a burst of segments is analysed in full, and a stream whose
    /// detectors cannot keep up sheds frames once it is this late.
    pub max_lag: Duration,
    /// Queue drops after which the stream degrades to keyframes only.
    pub degrade_after: u64,
    /// No frame for this long: stalled.
    pub stall_after: Duration,
    /// A blocked read is abandoned (and a URL reconnected) after this long.
    pub read_timeout: Duration,
    /// URL reconnects: first delay, cap, and attempts in a row before failing.
    pub reconnect: Backoff,
    /// A timestamp more than this far ahead of the previous frame's is a jump (see
    /// [`sampling`]); smaller forward gaps are kept as they are.
    pub max_pts_step: Duration,
    /// Decoder threads (0: FFmpeg chooses).
    pub threads: usize,
    /// Whether sampled frames are converted to RGB ([`Pixels::Rgb24`], for colour
    /// models) or kept as Y'CbCr ([`Pixels::Yuv420`], enough for PDQ and cheaper: no
    /// conversion, half the bytes). Read for every sampled frame, so the detectors'
    /// owner can change it when models are loaded or unloaded. Default: RGB.
    pub rgb: Arc<AtomicBool>,
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
            max_lag: Duration::from_secs(10),
            degrade_after: 32,
            stall_after: Duration::from_secs(10),
            read_timeout: Duration::from_secs(15),
            reconnect: Backoff::new(Duration::from_millis(500), Duration::from_secs(30), 8),
            max_pts_step: Duration::from_secs(60),
            threads: 1,
            rgb: Arc::new(AtomicBool::new(true)),
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
    /// decoded from were handed to this process (ms since the Unix epoch); the
    /// decoder's lag is measured from it. `None` for other sources.
    pub arrival_ms: Option<u64>,
    /// When those bytes were first accepted: by the hook of the worker that took the
    /// segment in fleet mode, else `arrival_ms`. The start of the end-to-end latency.
    pub origin_ms: Option<u64>,
    /// Whether it was a keyframe.
    pub keyframe: bool,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The pixels.
    pub pixels: Pixels,
}

/// A sampled frame's pixels: RGB when a detector needs colour (see
/// [`StreamConfig::rgb`]), else the decoded planes, from which PDQ takes luma without
/// any conversion.
#[derive(Debug, Clone)]
pub enum Pixels {
    /// Packed RGB24, `width * 3` bytes a row.
    Rgb24(Arc<[u8]>),
    /// Planar studio-range Y'CbCr 4:2:0, the planes one after another without row
    /// padding: Y' (`width` bytes a row, `height` rows), then Cb and Cr
    /// (`width.div_ceil(2)` bytes a row, `height.div_ceil(2)` rows each).
    Yuv420(Arc<[u8]>),
}

impl SampledFrame {
    /// The frame for PDQ: the RGB pixels, or the Y' plane (luma without conversion,
    /// see [`PixelFormat::StudioY8`]). An error if the buffer is too short for the
    /// frame's size.
    pub fn image(&self) -> Result<ImageView<'_>, ImageError> {
        let (w, h) = (self.width as usize, self.height as usize);
        match &self.pixels {
            Pixels::Rgb24(rgb) => ImageView::packed(rgb, w, h, PixelFormat::Rgb8),
            Pixels::Yuv420(yuv) => {
                ImageView::packed(&yuv[..(w * h).min(yuv.len())], w, h, PixelFormat::StudioY8)
            }
        }
    }

    /// Packed RGB24 (`width * 3` bytes a row): the frame's own, or converted from its
    /// planes with [`yuv420_to_rgb24`]. Empty if the planes are too short for the size.
    pub fn rgb(&self) -> Cow<'_, [u8]> {
        match &self.pixels {
            Pixels::Rgb24(rgb) => Cow::Borrowed(rgb),
            Pixels::Yuv420(yuv) => {
                Cow::Owned(yuv420_to_rgb24(yuv, self.width, self.height).unwrap_or_default())
            }
        }
    }
}

/// Packed RGB24 from packed studio-range Y'CbCr 4:2:0 (the layout of
/// [`Pixels::Yuv420`]) with BT.601's equations in 8-bit fixed point
/// (`R = (298 (Y'-16) + 409 (Cr-128) + 128) >> 8` and likewise, the common integer form
/// of ITU-R BT.601's studio-range matrix), each chroma sample covering its 2x2 block.
/// `None` if `yuv` is too short for `width x height`. For pictures people look at
/// (evidence thumbnails) and colour models on frames sampled without RGB: the
/// detectors' RGB otherwise comes from libswscale.
pub fn yuv420_to_rgb24(yuv: &[u8], width: u32, height: u32) -> Option<Vec<u8>> {
    let (w, h) = (width as usize, height as usize);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    if yuv.len() < w * h + 2 * cw * ch {
        return None;
    }
    let (luma, chroma) = yuv.split_at(w * h);
    let (cb, cr) = chroma.split_at(cw * ch);
    let clip = |v: i32| (v >> 8).clamp(0, 255) as u8;
    let mut out = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            let c = 298 * (i32::from(luma[y * w + x]) - 16) + 128;
            let i = (y / 2) * cw + x / 2;
            let (u, v) = (i32::from(cb[i]) - 128, i32::from(cr[i]) - 128);
            out.extend([
                clip(c + 409 * v),
                clip(c - 100 * u - 208 * v),
                clip(c + 516 * u),
            ]);
        }
    }
    Some(out)
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
    /// Demuxer restarts at discontinuities, and timestamp jumps.
    pub discontinuities: AtomicU64,
    /// Timestamp jumps (far ahead, backwards, stuck, missing), also counted in
    /// `discontinuities`.
    pub pts_jumps: AtomicU64,
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
    /// Discontinuities: demuxer restarts and timestamp jumps.
    pub discontinuities: u64,
    /// Timestamp jumps among the discontinuities.
    pub pts_jumps: u64,
    /// Milliseconds since the last sampled frame was decoded (lag behind the live edge
    /// as far as the monitor can see it), if any.
    pub since_last_frame_ms: Option<u64>,
    /// For pushed and HLS segments: how long the bytes of the last sampled frame had
    /// waited since they were handed over (lag behind the live edge), ms.
    pub lag_ms: Option<u64>,
    /// The last error, if any.
    pub error: Option<String>,
}

pub(crate) fn now_ms() -> u64 {
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
    error: Arc<Mutex<Option<StreamError>>>,
    frames: Arc<LatestQueue<SampledFrame>>,
    cancel: Arc<AtomicBool>,
    /// Joined as soon as it is seen finished ([`LiveStream::is_finished`]): a thread
    /// that exited keeps its stack until it is joined.
    thread: Mutex<Option<JoinHandle<()>>>,
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
        let mut worker = Worker {
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
            thread: Mutex::new(Some(thread)),
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
            pts_jumps: c.pts_jumps.load(Ordering::Relaxed),
            since_last_frame_ms: since,
            lag_ms: c.lag_ms_plus_one.load(Ordering::Relaxed).checked_sub(1),
            error: self
                .error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map(StreamError::to_string)
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
        let mut thread = self.thread.lock().unwrap_or_else(|e| e.into_inner());
        if thread.as_ref().is_some_and(JoinHandle::is_finished)
            && let Some(t) = thread.take()
        {
            // It has exited: joining returns at once and frees its stack.
            let _ = t.join();
        }
        thread.is_none()
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
        let Some(thread) = self
            .thread
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
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

//! The stream registry and its HTTP routes: platforms PUT each segment of a pushed
//! stream, in order or not, and Firebreak decodes them as one continuous stream; pulled
//! streams (HLS, RTMP/SRT/HTTP URLs, files) are registered and stopped through the API
//! or the config file.
//!
//! ```text
//! PUT    /v1/streams/{id}/segments/{seq}   body: segment bytes (MPEG-TS, or fMP4 with
//!                                          the init segment as segment 0)
//! POST   /v1/streams/{id}/end              no more segments
//! POST   /v1/streams                       register a pulled stream
//! DELETE /v1/streams/{id}                  stop a stream
//! GET    /v1/streams                       every stream with state, counters and tier
//! GET    /v1/streams/{id}                  one stream
//! ```
//!
//! A pushed stream is created by its first segment; sequence numbers start at 0.
//! Duplicates answer 200 with `"result": "duplicate"` (a retried PUT is harmless);
//! segments ahead of a missing one are held in a small reorder window; gaps are
//! counted. When the decoder is behind, a PUT waits (HTTP backpressure) rather than
//! dropping accepted bytes. Errors: 400 for an empty body, a bad id or a bad sequence
//! number, 413 for a body over the limit, 409 for a segment to a stream that has
//! ended, 503 over the stream limit.
//!
//! Each stream has a consumer thread that hands its sampled frames to the detectors
//! and reports the end of the stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Extension;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use firebreak_media::ingest::{
    FeedItem, Intake, LiveStream, MAX_SEQUENCE, SampledFrame, Sampling, SegmentFeed, Sequencer,
    Source, StreamConfig, StreamStats, segment_channel,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::clock::Clock;
use crate::config::{StreamSettings, StreamSource, StreamSpec, valid_stream_id};
use crate::http::auth::Caller;
use crate::http::{ErrorBody, error};
use crate::metrics::{DropCounts, StreamReading, StreamSnapshot};
use firebreak_media::ingest::guard::{NetPolicy, Refusal, system_resolve};
use firebreak_media::ingest::hls::HlsConfig;

/// Schemes of `url` sources registered through the API: those whose address can be
/// pinned (the URL is rewritten to the checked address). `rtmps` is not among them:
/// TLS needs the name, FFmpeg would resolve it again, and a name re-resolving to an
/// internal address would be reached; configure such streams in the config file.
pub const API_URL_SCHEMES: &[&str] = &["rtmp", "srt"];

/// Schemes of `hls` playlists registered through the API.
pub const API_HLS_SCHEMES: &[&str] = &["http", "https"];

/// Where sampled frames go (the detectors, in the daemon).
pub type FrameHandler = Arc<dyn Fn(SampledFrame) + Send + Sync>;
/// Called once when a stream's frames are exhausted (ended, failed or stopped).
pub type EndHandler = Arc<dyn Fn(&str) + Send + Sync>;
/// A stream's current tier (name, index), shown with the stream.
pub type Annotator = Arc<dyn Fn(&str) -> (String, usize) + Send + Sync>;

/// Told of every stream that starts: (stream id, owning tenant).
pub type StartHandler = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// Ingest settings.
#[derive(Clone)]
pub struct IngestConfig {
    /// Largest accepted segment, bytes.
    pub max_segment_bytes: usize,
    /// Reorder window, in segments.
    pub reorder_window: u64,
    /// At most this many streams at once.
    pub max_streams: usize,
    /// At most this many running streams per tenant.
    pub max_streams_per_tenant: usize,
    /// Default sampling.
    pub sampling: Sampling,
    /// Frames are scaled down to fit this.
    pub max_output: (u32, u32),
    /// Receives every sampled frame.
    pub on_frame: FrameHandler,
    /// Receives the end of every stream.
    pub on_end: EndHandler,
    /// The current tier of a stream, for its JSON.
    pub annotate: Option<Annotator>,
    /// Where streams registered through the API may connect.
    pub net: Arc<NetPolicy>,
    /// A pushed stream with no segment for this long is ended (as if its end had
    /// been posted), so idle streams cannot hold slots under `max_streams`.
    pub idle_timeout: Duration,
    /// Told of every stream that starts: (stream id, owning tenant).
    pub on_start: Option<StartHandler>,
    /// Wall time (idle pushed streams).
    pub clock: Arc<dyn Clock>,
    /// Told of every push refused because another request is feeding the stream.
    pub on_feeder_busy: Option<Arc<dyn Fn() + Send + Sync>>,
    /// A frame timestamp more than this ahead of the previous frame's is a jump.
    pub max_pts_step: Duration,
    /// A pushed stream's decoder waits for the detectors while less than this far
    /// behind the bytes' arrival.
    pub max_lag: Duration,
    /// Whether streams sample frames in RGB (the detectors have colour models) or as
    /// Y'CbCr; shared with the engine, which follows reloads.
    pub rgb: Arc<std::sync::atomic::AtomicBool>,
    /// Why pushed segments are refused now (the outbox above its high-water mark, a
    /// failing disk write), if they are: answered 503 with `Retry-After`, so no
    /// decision is dropped for want of room.
    pub refuse: Option<Arc<dyn Fn() -> Option<String> + Send + Sync>>,
}

impl std::fmt::Debug for IngestConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestConfig")
            .field("max_segment_bytes", &self.max_segment_bytes)
            .field("reorder_window", &self.reorder_window)
            .field("max_streams", &self.max_streams)
            .field("sampling", &self.sampling)
            .finish_non_exhaustive()
    }
}

struct Entry {
    /// `push`, `hls`, `url` or `file`.
    source: &'static str,
    /// The tenant that created it: only that tenant (and admins) see and touch it.
    owner: String,
    /// Registered through the API: its errors are not shown to callers (they could
    /// tell whether a port is open or a file exists), only logged.
    untrusted: bool,
    /// When a segment last arrived (ms since the Unix epoch; the start, before any).
    last_segment_ms: std::sync::atomic::AtomicU64,
    /// The thread handing the stream's frames to the detectors.
    consumer: Mutex<Option<std::thread::JoinHandle<()>>>,
    sequencer: Mutex<Sequencer<Vec<u8>>>,
    feed: Mutex<Option<SegmentFeed>>,
    /// Held by the one request feeding this stream (sequencing and handing segments to
    /// the decoder), so concurrent pushes cannot reach the decoder out of order.
    feeding: Arc<tokio::sync::Mutex<()>>,
    stream: LiveStream,
    /// Its place in the order streams were started here (0 first).
    born: u64,
}

/// Why a pushed segment cannot be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PushError {
    /// Over the stream limit, or intake stopped.
    Full,
    /// The id belongs to another tenant (answered as if it did not exist).
    Foreign,
    /// The tenant runs its quota of streams.
    Quota,
}

/// Why a stream cannot be registered.
#[derive(Debug)]
pub enum RegisterError {
    /// Invalid request, every problem.
    Invalid(Vec<String>),
    /// The id is taken.
    Exists,
    /// Over the stream limit.
    Full,
    /// A `file` source through the API (files are configured in the config only).
    FileForbidden,
    /// The source's scheme or address is not allowed (the detail is logged).
    Refused,
    /// The tenant runs its quota of streams.
    Quota,
}

/// The streams.
pub struct IngestState {
    config: IngestConfig,
    streams: Mutex<HashMap<String, Arc<Entry>>>,
    /// The drops of streams no longer in `streams` (updated under its lock).
    retired: Mutex<DropCounts>,
    accepting: std::sync::atomic::AtomicBool,
    /// The next stream's [`Entry::born`].
    births: std::sync::atomic::AtomicU64,
    /// Fleet mode: the routes produce to Kafka and show the fleet (`crate::fleet`).
    fleet: std::sync::OnceLock<Arc<crate::fleet::Fleet>>,
}

impl std::fmt::Debug for IngestState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestState")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl IngestState {
    /// No streams yet.
    pub fn new(config: IngestConfig) -> Arc<IngestState> {
        Arc::new(IngestState {
            config,
            streams: Mutex::new(HashMap::new()),
            retired: Mutex::new(DropCounts::default()),
            accepting: std::sync::atomic::AtomicBool::new(true),
            births: std::sync::atomic::AtomicU64::new(0),
            fleet: std::sync::OnceLock::new(),
        })
    }

    /// Switches the routes to fleet mode (once, before serving).
    pub fn set_fleet(&self, fleet: Arc<crate::fleet::Fleet>) {
        let _ = self.fleet.set(fleet);
    }

    /// The configured source policy (fleet mode checks API sources at the receiving
    /// worker too).
    pub fn net_policy(&self) -> &Arc<NetPolicy> {
        &self.config.net
    }

    /// Running streams a tenant may have (fleet-wide in fleet mode).
    pub fn max_streams_per_tenant(&self) -> usize {
        self.config.max_streams_per_tenant
    }

    /// The largest accepted segment, bytes.
    pub fn max_segment_bytes(&self) -> usize {
        self.config.max_segment_bytes
    }

    /// Fleet mode, at the owner: pushed stream `id` of `owner` running here, created
    /// (its sequencer expecting `first` first) if it is not. False if it cannot start
    /// (stream limit, quota, intake stopped, another tenant's).
    pub fn owned_pushed(&self, id: &str, owner: &str, first: u64) -> bool {
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = streams.get(id) {
            if s.owner == owner && !s.stream.is_finished() {
                return true;
            }
            if s.owner != owner {
                return false;
            }
        }
        if let Some(old) = streams.remove(id) {
            self.retire(&old);
        }
        if self.admit(&mut streams, owner).is_err() {
            return false;
        }
        let entry = self.start(id, owner, None, self.config.sampling, "push");
        *entry.sequencer.lock().unwrap_or_else(|e| e.into_inner()) =
            Sequencer::starting_at(first, self.config.reorder_window);
        streams.insert(id.to_owned(), Arc::new(entry));
        true
    }

    /// Fleet mode, at the owner: hands `bytes` straight to pushed stream `id`'s decoder,
    /// outside the sequencer (an fMP4 init section before a resumed stream's next
    /// segment). Blocking.
    pub fn feed_raw(&self, id: &str, bytes: Vec<u8>) -> bool {
        let Some(entry) = self.visible(id, None) else {
            return false;
        };
        let feed = entry.feed.lock().unwrap_or_else(|e| e.into_inner()).clone();
        feed.is_some_and(|f| f.send_blocking(FeedItem::Bytes(bytes)).is_ok())
    }

    /// Fleet mode, at the owner: offers segment `seq` of pushed stream `id` to its
    /// sequencer and hands what it releases to the decoder (blocking: waits while the
    /// decoder is behind). `accepted_ms` is when a hook accepted it: the start of the
    /// end-to-end latency of the decisions its frames lead to. `None` if the stream is
    /// not running here or has ended.
    pub fn offer_blocking(
        &self,
        id: &str,
        seq: u64,
        bytes: Vec<u8>,
        accepted_ms: u64,
    ) -> Option<SegmentOutcome> {
        let entry = self.visible(id, None)?;
        entry.last_segment_ms.store(
            self.config.clock.now_ms(),
            std::sync::atomic::Ordering::Release,
        );
        let feed = entry
            .feed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        let intake = entry
            .sequencer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(seq, bytes);
        Some(match intake {
            Intake::Released { segments, .. } => {
                for (_, b) in segments {
                    if feed
                        .send_blocking_since(FeedItem::Bytes(b), Some(accepted_ms))
                        .is_err()
                    {
                        break;
                    }
                }
                SegmentOutcome::Released
            }
            Intake::Held => SegmentOutcome::Held,
            Intake::Duplicate => SegmentOutcome::Duplicate,
            Intake::Late | Intake::OutOfRange => SegmentOutcome::Late,
        })
    }

    /// Fleet mode, at the owner: ends pushed stream `id` (its held segments go to the
    /// decoder). Blocking. `None` if unknown or ended before.
    pub fn end_owned(&self, id: &str) -> Option<usize> {
        let entry = self.visible(id, None)?;
        end_pushed(&entry)
    }

    /// Whether stream `id` runs here (not finished).
    pub fn is_running(&self, id: &str) -> bool {
        self.visible(id, None)
            .is_some_and(|e| !e.stream.is_finished())
    }

    /// Stream `id` as the API shows it here, with the number its sequencer expects
    /// next (pushed streams).
    pub fn local_view(&self, id: &str) -> Option<(StreamView, Option<u64>)> {
        let entry = self.visible(id, None)?;
        let next = entry
            .sequencer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .next_expected();
        Some((self.view(id, &entry), next))
    }

    /// Fleet mode: stops stream `id` because it moves to another worker (blocking).
    /// A pushed stream first decodes what it was given (5 s at most), a pulled one is
    /// cancelled; then it is forgotten. Returns its last view and the sequence number
    /// its sequencer expected next.
    pub fn hand_off(&self, id: &str) -> Option<(StreamView, Option<u64>)> {
        let entry = self.visible(id, None)?;
        if entry.source == "push" {
            // The held segments go to the decoder too (as the next segments would have
            // released them): the sequencer then expects the number after the highest
            // received, where the next owner starts.
            end_pushed(&entry);
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while !entry.stream.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let next = entry
            .sequencer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .next_expected();
        let last = self.remove(id, None)?;
        Some((last, next))
    }

    /// Starts a stream: pulled from `source`, or pushed (`None`: segments arrive
    /// through the entry's feed).
    fn start(
        &self,
        id: &str,
        owner: &str,
        source: Option<Source>,
        sampling: Sampling,
        kind: &'static str,
    ) -> Entry {
        // The engine learns the owner before any frame or event of the stream.
        if let Some(f) = &self.config.on_start {
            f(id, owner);
        }
        let mut config = StreamConfig::new(id);
        config.sampling = sampling;
        config.max_pts_step = self.config.max_pts_step;
        config.max_lag = self.config.max_lag;
        config.rgb = self.config.rgb.clone();
        config.max_output = self.config.max_output;
        let (feed, source) = match source {
            Some(pulled) => (None, pulled),
            None => {
                let (feed, reader) = segment_channel(8);
                (Some(feed), Source::Segments(reader))
            }
        };
        let stream = LiveStream::start(config, source);
        // Hand frames to the detectors from a thread of the stream's own.
        let frames = stream.frames().clone();
        let handler = self.config.on_frame.clone();
        let on_end = self.config.on_end.clone();
        let name = id.to_owned();
        let consumer = std::thread::Builder::new()
            .name(format!("frames-{id}"))
            .spawn(move || {
                // Every log line about this stream's frames carries its id.
                let span = tracing::info_span!("stream", stream = %name);
                let _entered = span.enter();
                let mut handled = 0u64;
                while !(frames.is_closed() && frames.is_empty()) {
                    if let Some(f) = frames.pop(Duration::from_millis(200)) {
                        handler(f);
                        handled += 1;
                    }
                }
                tracing::info!(frames = handled, "stream ended");
                on_end(&name);
            })
            .expect("spawn frame consumer");
        Entry {
            source: kind,
            owner: owner.to_owned(),
            untrusted: false,
            last_segment_ms: std::sync::atomic::AtomicU64::new(self.config.clock.now_ms()),
            sequencer: Mutex::new(Sequencer::new(self.config.reorder_window)),
            feed: Mutex::new(feed),
            feeding: Arc::new(tokio::sync::Mutex::new(())),
            stream,
            consumer: Mutex::new(Some(consumer)),
            born: self
                .births
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// The pushed stream `id` of `owner`, created if new.
    fn pushed(&self, id: &str, owner: &str) -> Result<Arc<Entry>, PushError> {
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = streams.get(id) {
            return if s.owner == owner {
                Ok(s.clone())
            } else {
                Err(PushError::Foreign)
            };
        }
        match self.admit(&mut streams, owner) {
            Err(RegisterError::Quota) => return Err(PushError::Quota),
            Err(_) => return Err(PushError::Full),
            Ok(()) => {}
        }
        let entry = Arc::new(self.start(id, owner, None, self.config.sampling, "push"));
        streams.insert(id.to_owned(), entry.clone());
        Ok(entry)
    }

    /// Whether a new stream of `owner` may start: room under the stream limit (after
    /// forgetting finished streams if needed), intake open, and the tenant below its
    /// quota of running streams.
    fn admit(
        &self,
        streams: &mut HashMap<String, Arc<Entry>>,
        owner: &str,
    ) -> Result<(), RegisterError> {
        if streams.len() >= self.config.max_streams {
            self.evict_finished(streams);
        }
        if streams.len() >= self.config.max_streams || !self.is_accepting() {
            return Err(RegisterError::Full);
        }
        let running = streams
            .values()
            .filter(|e| e.owner == owner && !e.stream.is_finished())
            .count();
        if running >= self.config.max_streams_per_tenant {
            return Err(RegisterError::Quota);
        }
        Ok(())
    }

    /// Stream `id` if `tenant` may see it (`None`: an admin, any stream).
    fn visible(&self, id: &str, tenant: Option<&str>) -> Option<Arc<Entry>> {
        let streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        streams
            .get(id)
            .filter(|e| tenant.is_none_or(|t| e.owner == t))
            .cloned()
    }

    /// Starts pulling a stream from the config file (trusted: any source FFmpeg's
    /// protocol whitelist allows, local files included).
    pub fn register(&self, spec: &StreamSettings, owner: &str) -> Result<(), RegisterError> {
        let (source, kind) = match &spec.source {
            StreamSource::Hls(url) => (Source::Hls(HlsConfig::new(url.clone())), "hls"),
            StreamSource::Url(url) => (Source::Url(url.clone()), "url"),
            StreamSource::File(file) => (Source::File(file.clone()), "file"),
        };
        self.start_pulled(spec, owner, source, kind, false)
            .map(|_| ())
    }

    /// Starts pulling a stream registered through the API (blocking: it resolves
    /// names). Only `url` sources of [`API_URL_SCHEMES`] and `hls` playlists of
    /// [`API_HLS_SCHEMES`] on addresses the source policy permits; the stream connects
    /// to the checked addresses only (see `firebreak_media::ingest::guard`).
    /// Returns the new stream.
    pub fn register_untrusted(
        &self,
        spec: &StreamSpec,
        owner: &str,
    ) -> Result<StreamView, RegisterError> {
        let spec = validate(spec)?;
        let refused = |r: Refusal| {
            tracing::warn!(stream = %spec.id, refusal = %r, "stream registration refused");
            RegisterError::Refused
        };
        let net = &self.config.net;
        let (source, kind) = match &spec.source {
            StreamSource::Hls(url) => {
                net.check(url, API_HLS_SCHEMES, &system_resolve)
                    .map_err(refused)?;
                let mut hls = HlsConfig::new(url.clone());
                hls.policy = Some(net.clone());
                // A caller's origin gets the same size limit as a pushed segment.
                hls.max_bytes = hls.max_bytes.min(self.config.max_segment_bytes as u64);
                (Source::Hls(hls), "hls")
            }
            StreamSource::Url(url) => {
                let mut checked = net
                    .check(url, API_URL_SCHEMES, &system_resolve)
                    .map_err(refused)?;
                // Connect to the address that was checked, so the name cannot re-resolve
                // elsewhere.
                let ip = checked.addrs[0].ip();
                if checked.url.set_ip_host(ip).is_err() {
                    return Err(refused(Refusal::Malformed));
                }
                (Source::Url(checked.url.to_string()), "url")
            }
            StreamSource::File(_) => return Err(RegisterError::FileForbidden),
        };
        let entry = self.start_pulled(&spec, owner, source, kind, true)?;
        Ok(self.view(&spec.id, &entry))
    }

    fn start_pulled(
        &self,
        spec: &StreamSettings,
        owner: &str,
        source: Source,
        kind: &'static str,
        untrusted: bool,
    ) -> Result<Arc<Entry>, RegisterError> {
        let sampling = spec.sampling.unwrap_or(self.config.sampling);
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        // A running stream's id is taken; so is a finished one's of another tenant
        // (until it is forgotten), so nobody takes over another tenant's stream.
        if streams
            .get(&spec.id)
            .is_some_and(|e| !e.stream.is_finished() || e.owner != owner)
        {
            return Err(RegisterError::Exists);
        }
        if let Some(old) = streams.remove(&spec.id) {
            self.retire(&old);
        }
        self.admit(&mut streams, owner)?;
        let mut entry = self.start(&spec.id, owner, Some(source), sampling, kind);
        entry.untrusted = untrusted;
        let entry = Arc::new(entry);
        streams.insert(spec.id.clone(), entry.clone());
        Ok(entry)
    }

    /// Stops a stream and forgets it once its threads have exited (blocking; 10 s at
    /// most), so a register/delete loop cannot pile up threads and the id is free only
    /// when nothing of the old stream runs. Returns its last state, or `None` if unknown
    /// (or not visible to `tenant`; `None` = an admin).
    pub fn remove(&self, id: &str, tenant: Option<&str>) -> Option<StreamView> {
        let entry = {
            let streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
            streams
                .get(id)
                .filter(|e| tenant.is_none_or(|t| e.owner == t))?
                .clone()
        };
        let last = self.view(id, &entry);
        entry.feed.lock().unwrap_or_else(|e| e.into_inner()).take();
        entry.stream.cancel();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let consumer = entry
            .consumer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        while std::time::Instant::now() < deadline
            && !(entry.stream.is_finished() && consumer.as_ref().is_none_or(|c| c.is_finished()))
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Some(c) = consumer.filter(|c| c.is_finished()) {
            let _ = c.join();
        }
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        if streams.get(id).is_some_and(|e| Arc::ptr_eq(e, &entry)) {
            streams.remove(id);
            self.retire(&entry);
        }
        Some(last)
    }

    /// Stops accepting new streams and segments (graceful shutdown).
    pub fn stop_intake(&self) {
        self.accepting
            .store(false, std::sync::atomic::Ordering::Release);
    }

    fn is_accepting(&self) -> bool {
        self.accepting.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Ends every stream: pushed streams get no more bytes (so they drain what they
    /// have), pulled ones are cancelled.
    pub fn end_all(&self) {
        let streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        for entry in streams.values() {
            let fed = entry.feed.lock().unwrap_or_else(|e| e.into_inner()).take();
            if fed.is_none() && entry.source != "push" {
                entry.stream.cancel();
            }
        }
    }

    /// Ends the pushed streams that received no segment for `idle_timeout` (blocking:
    /// the segments they still hold are handed to their decoders). Returns their ids.
    pub fn end_idle(&self) -> Vec<String> {
        let now = self.config.clock.now_ms();
        let limit = self.config.idle_timeout.as_millis() as u64;
        let idle: Vec<(String, Arc<Entry>)> = self
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, e)| {
                e.source == "push"
                    && now.saturating_sub(
                        e.last_segment_ms.load(std::sync::atomic::Ordering::Acquire),
                    ) > limit
            })
            .map(|(id, e)| (id.clone(), e.clone()))
            .collect();
        let mut ended = Vec::new();
        for (id, entry) in idle {
            if let Some(released) = end_pushed(&entry) {
                tracing::info!(stream = %id, released, idle_ms = limit, "idle pushed stream ended");
                ended.push(id);
            }
        }
        self.reap();
        ended
    }

    /// Joins the threads of streams that finished (a thread that exited keeps its
    /// stack until joined), so a finished stream's summary holds no thread.
    fn reap(&self) {
        let entries: Vec<Arc<Entry>> = self
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for e in entries {
            // Joins the decoder thread once it has exited.
            if !e.stream.is_finished() {
                continue;
            }
            let done = e
                .consumer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take_if(|c| c.is_finished());
            if let Some(c) = done {
                let _ = c.join();
            }
        }
    }

    /// Whether every stream's decoder has finished.
    pub fn all_finished(&self) -> bool {
        let streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        streams.values().all(|e| e.stream.is_finished())
    }

    /// Every stream's statistics.
    pub fn stats(&self) -> Vec<(String, StreamStats)> {
        let streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        streams
            .iter()
            .map(|(id, e)| (id.clone(), e.stream.stats()))
            .collect()
    }

    /// A stream as the API shows it.
    fn view(&self, id: &str, p: &Entry) -> StreamView {
        let st = p.stream.stats();
        let seq = p
            .sequencer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stats();
        let last_frame_ms = st
            .since_last_frame_ms
            .map(|since| self.config.clock.now_ms().saturating_sub(since));
        let hls = p.stream.hls_counters().map(|h| {
            use std::sync::atomic::Ordering::Relaxed;
            HlsCounters {
                reloads: h.reloads.load(Relaxed),
                reload_errors: h.reload_errors.load(Relaxed),
                segments: h.segments.load(Relaxed),
                segment_errors: h.segment_errors.load(Relaxed),
                missing: h.missing.load(Relaxed),
                discontinuities: h.discontinuities.load(Relaxed),
            }
        });
        let (tier, tier_index) = match &self.config.annotate {
            Some(a) => {
                let (name, index) = a(id);
                (Some(name), Some(index))
            }
            None => (None, None),
        };
        StreamView {
            id: id.to_owned(),
            tenant: p.owner.clone(),
            source: p.source.to_owned(),
            state: st.state.name().to_owned(),
            frames_sampled: st.sampled,
            last_frame_ms,
            frames: FrameCounters {
                decoded: st.decoded,
                sampled: st.sampled,
                dropped: DropCounters {
                    queue_full: st.dropped_queue_full,
                },
            },
            degraded: st.degraded,
            decode_errors: st.decode_errors,
            open_errors: st.open_errors,
            reconnects: st.reconnects,
            discontinuities: st.discontinuities,
            pts_jumps: st.pts_jumps,
            since_last_frame_ms: st.since_last_frame_ms,
            lag_ms: st.lag_ms,
            error: if p.untrusted {
                st.error
                    .as_ref()
                    .map(|_| "the source failed; details are in the operator log".to_owned())
            } else {
                st.error
            },
            segments: SegmentCounters {
                received: seq.received,
                released: seq.released,
                duplicates: seq.duplicates,
                late: seq.late,
                missing: seq.missing,
                reordered: seq.reordered,
            },
            hls,
            tier,
            tier_index,
            worker: None,
            consumed_segments: None,
        }
    }
}

/// The typed stream, or every problem with the spec.
fn validate(spec: &StreamSpec) -> Result<StreamSettings, RegisterError> {
    spec.validate("stream")
        .map_err(|issues| RegisterError::Invalid(issues.iter().map(ToString::to_string).collect()))
}

impl IngestState {
    /// Forgets one stream whose decoding has finished, to make room under the stream
    /// limit. Its final drop counts are retained for the metrics; its detection state
    /// stays in the engine, and its id can then be used again.
    fn evict_finished(&self, streams: &mut HashMap<String, Arc<Entry>>) {
        // One: the finished stream started first, so a stream that just ended stays
        // listed for its platform.
        let oldest = streams
            .iter()
            .filter(|(_, e)| e.stream.is_finished())
            .min_by_key(|(_, e)| e.born)
            .map(|(id, _)| id.clone());
        if let Some(id) = oldest
            && let Some(e) = streams.remove(&id)
        {
            tracing::info!(stream = %id, "forgetting a finished stream to make room");
            self.retire(&e);
        }
    }

    /// Keeps the drop counts of a stream just taken out of the map (call with the
    /// map's lock held, so a scrape sees the stream in exactly one place).
    fn retire(&self, entry: &Entry) {
        self.retired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add(&DropCounts::of(&entry.stream.stats()));
    }
}

impl crate::metrics::StreamSource for IngestState {
    fn stream_snapshot(&self) -> StreamSnapshot {
        let streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        StreamSnapshot {
            streams: streams
                .iter()
                .map(|(id, e)| StreamReading::new(id, &e.stream.stats()))
                .collect(),
            retired: *self.retired.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }
}

/// A stream with its state and counters (`GET /v1/streams`, `GET /v1/streams/{id}`,
/// the answer to a registration and to a `DELETE`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StreamView {
    /// Stream id.
    pub id: String,
    /// The tenant it belongs to.
    pub tenant: String,
    /// `push` for segments PUT to the daemon, else the kind of pulled source: `hls`,
    /// `url` or `file`.
    #[schema(example = "push")]
    pub source: String,
    /// `starting`, `live`, `stalled`, `ended` or `failed`.
    #[schema(example = "live")]
    pub state: String,
    /// Frames sampled (the same as `frames.sampled`; kept from the first version).
    pub frames_sampled: u64,
    /// Wall time at which the last sampled frame was decoded, Unix milliseconds
    /// (`null` before the first).
    #[schema(required = true)]
    pub last_frame_ms: Option<u64>,
    /// Frame counters.
    pub frames: FrameCounters,
    /// How many times the stream degraded to sampling keyframes only (a count, not a
    /// flag).
    pub degraded: u64,
    /// Decode errors.
    pub decode_errors: u64,
    /// Failed opens of the source.
    pub open_errors: u64,
    /// Reconnections of a pulled source.
    pub reconnects: u64,
    /// Timestamp discontinuities (reconnects, playlist discontinuities and PTS jumps).
    pub discontinuities: u64,
    /// Of those, jumps in the timestamps themselves (far ahead, backwards, stuck or
    /// missing): media time continued one frame on.
    pub pts_jumps: u64,
    /// Milliseconds since the last sampled frame was decoded (`null` before the first).
    #[schema(required = true)]
    pub since_last_frame_ms: Option<u64>,
    /// For pushed and HLS segments: how long the bytes of the last sampled frame had
    /// waited since they were handed over, milliseconds (`null` if not known).
    #[schema(required = true)]
    pub lag_ms: Option<u64>,
    /// The last error, if any (for streams registered through the API a generic
    /// message; the detail is in the operator log).
    #[schema(required = true)]
    pub error: Option<String>,
    /// The reorder window's counters (pushed streams; zero for pulled ones).
    pub segments: SegmentCounters,
    /// HLS sources only: the playlist poller's counters.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub hls: Option<HlsCounters>,
    /// The stream's current tier (`none` below the lowest).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, example = "none")]
    pub tier: Option<String>,
    /// Its index: 0 = none, then the policy's tiers in order.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub tier_index: Option<usize>,
    /// Fleet mode: the worker running the stream (as of its last published state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub worker: Option<String>,
    /// Fleet mode, pushed streams: the sequence numbers the owners consumed from the
    /// segments topic, as ranges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub consumed_segments: Option<Vec<SeqRange>>,
}

/// A range of sequence numbers, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SeqRange {
    /// The first.
    pub first: u64,
    /// The last.
    pub last: u64,
}

/// Fleet mode's answer to a push, a registration, an end or a stop: produced to Kafka
/// and acknowledged by the broker (acks=all); the owner of the stream acts on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FleetAccepted {
    /// The stream.
    pub stream: String,
    /// The segment's sequence number (pushes only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub sequence: Option<u64>,
    /// The topic it went to.
    pub topic: String,
    /// Its partition (the stream's).
    pub partition: i32,
    /// Its offset (of the last chunk for a chunked segment).
    pub offset: i64,
}

/// [`StreamView::frames`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FrameCounters {
    /// Frames decoded.
    pub decoded: u64,
    /// Frames sampled and handed to the detectors.
    pub sampled: u64,
    /// Sampled frames dropped, by reason.
    pub dropped: DropCounters,
}

/// [`FrameCounters::dropped`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DropCounters {
    /// Dropped because the detectors' queue was full.
    pub queue_full: u64,
}

/// [`StreamView::segments`]: a pushed stream's reorder window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SegmentCounters {
    /// Segments offered.
    pub received: u64,
    /// Segments handed to the decoder, in order.
    pub released: u64,
    /// Segments dropped because that number was already received (answered 200).
    pub duplicates: u64,
    /// Segments dropped because their number had been given up as a gap.
    pub late: u64,
    /// Sequence numbers given up (never received in time).
    pub missing: u64,
    /// Segments that arrived ahead of a missing one and were held.
    pub reordered: u64,
}

/// [`StreamView::hls`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HlsCounters {
    /// Playlist loads that succeeded.
    pub reloads: u64,
    /// Playlist loads that failed (fetch or parse).
    pub reload_errors: u64,
    /// Segments fed to the decoder.
    pub segments: u64,
    /// Segment fetches that failed (each retry counts).
    pub segment_errors: u64,
    /// Segments never fed (failed after retries, or slid out of the playlist unseen).
    pub missing: u64,
    /// Discontinuities fed.
    pub discontinuities: u64,
}

/// `GET /v1/streams`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct StreamList {
    /// The caller's tenant's streams (every tenant's for `admin`), by id.
    pub streams: Vec<StreamView>,
}

/// The body of `POST /v1/streams`: a pulled stream, flat (as a `[[streams]]` entry of
/// the config file). Exactly one of `hls` and `url`; `file` sources are refused here
/// (403: configure them in the config file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[schema(example = json!({"id": "cam-7", "hls": "https://cdn.example/live/cam-7.m3u8", "sampling": "2/s"}))]
pub struct StreamRegistration {
    /// Stream id: 1-128 of `A-Z a-z 0-9 - _ .`.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,128}$")]
    pub id: String,
    /// An HLS playlist URL (`http` or `https`).
    pub hls: Option<String>,
    /// An `rtmp://` or `srt://` URL (`rtmps` is config-only).
    pub url: Option<String>,
    /// A local file: refused through the API (403).
    pub file: Option<String>,
    /// `every`, `keyframes` or `N/s` (0 < N <= 120); default `[ingest] sampling`.
    #[schema(example = "2/s")]
    pub sampling: Option<String>,
    /// The credential's tenant, if given (any other answers 400).
    pub tenant: Option<String>,
}

impl From<StreamRegistration> for StreamSpec {
    fn from(r: StreamRegistration) -> StreamSpec {
        StreamSpec {
            id: r.id,
            hls: r.hls,
            url: r.url,
            file: r.file.map(Into::into),
            sampling: r.sampling,
            tenant: r.tenant,
        }
    }
}

/// 400 for a refused registration: `{"error": ...}`, with `issues` when fields of the
/// body have problems (every one, as text). Not the 422 shape of the policy routes;
/// kept from the first version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(example = json!({
    "error": "stream.id: \"\": 1-128 of A-Z a-z 0-9 - _ .; stream: give exactly one source: hls, url or file",
    "issues": ["stream.id: \"\": 1-128 of A-Z a-z 0-9 - _ .", "stream: give exactly one source: hls, url or file"],
}))]
pub struct RegistrationInvalid {
    /// What is wrong (with `issues`: every problem, joined with `; `).
    pub error: String,
    /// Each problem with the fields, when that is what is wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub issues: Option<Vec<String>>,
}

/// What became of a pushed segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SegmentOutcome {
    /// Handed to the decoder, with any held segments it unblocked.
    Released,
    /// Held in the reorder window until the segments before it arrive.
    Held,
    /// That number was received before: dropped (harmless: a retried PUT).
    Duplicate,
    /// Its number had been given up as a gap: dropped.
    Late,
}

/// `PUT /v1/streams/{id}/segments/{seq}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct SegmentResult {
    /// The stream.
    pub stream: String,
    /// The segment's sequence number.
    pub sequence: u64,
    /// What became of it.
    pub result: SegmentOutcome,
    /// Segments handed to the decoder by this request (0 unless `released`).
    pub released: usize,
    /// Sequence numbers given up just before the released segments (0 unless
    /// `released`).
    pub gap_before: u64,
}

/// Whether `POST /v1/streams/{id}/end` ended the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub enum EndOutcome {
    /// Ended by this request.
    #[serde(rename = "ended")]
    Ended,
    /// It had ended before.
    #[serde(rename = "already ended")]
    AlreadyEnded,
}

/// `POST /v1/streams/{id}/end`. `released` is there only when this request ended the
/// stream (kept from the first version).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct StreamEnd {
    /// The stream.
    pub stream: String,
    /// `ended` or `already ended`.
    pub result: EndOutcome,
    /// Segments the reorder window still held, handed to the decoder.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub released: Option<usize>,
}

/// Every stream route with its documentation (the one list both the router and the
/// OpenAPI document are made from).
pub fn api() -> OpenApiRouter<Arc<IngestState>> {
    OpenApiRouter::new()
        .routes(routes!(list, register))
        .routes(routes!(show, remove))
        .routes(routes!(put_segment))
        .routes(routes!(end))
}

/// The stream routes, with the body limit applied.
pub fn routes(state: Arc<IngestState>) -> Router {
    let limit = state.config.max_segment_bytes;
    let (router, _) = api().split_for_parts();
    router.layer(DefaultBodyLimit::max(limit)).with_state(state)
}

/// List streams.
///
/// Every stream of the caller's tenant (every tenant's for `admin`), with state,
/// counters and current tier.
#[utoipa::path(
    get,
    path = "/v1/streams",
    tag = "streams",
    operation_id = "list_streams",
    responses((status = 200, description = "The streams, by id.", body = StreamList))
)]
async fn list(
    State(state): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
) -> Json<StreamList> {
    let tenant = caller.tenant_filter();
    if let Some(f) = state.fleet.get() {
        return Json(StreamList {
            streams: f.list(tenant),
        });
    }
    let entries: Vec<(String, Arc<Entry>)> = {
        let streams = state.streams.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = streams
            .iter()
            .filter(|(_, e)| tenant.is_none_or(|t| e.owner == t))
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let streams = entries.iter().map(|(id, e)| state.view(id, e)).collect();
    Json(StreamList { streams })
}

/// One stream.
///
/// One stream of the caller's tenant (any for `admin`).
#[utoipa::path(
    get,
    path = "/v1/streams/{id}",
    tag = "streams",
    operation_id = "get_stream",
    params(("id" = String, Path, description = "The stream id.")),
    responses(
        (status = 200, description = "The stream.", body = StreamView),
        (status = 404, description = "No such stream for this tenant.", body = ErrorBody),
    )
)]
async fn show(
    State(state): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    if let Some(f) = state.fleet.get() {
        return match f
            .list(caller.tenant_filter())
            .into_iter()
            .find(|s| s.id == id)
        {
            Some(v) => Json(v).into_response(),
            None => error(StatusCode::NOT_FOUND, "no such stream"),
        };
    }
    match state.visible(&id, caller.tenant_filter()) {
        Some(p) => Json(state.view(&id, &p)).into_response(),
        None => error(StatusCode::NOT_FOUND, "no such stream"),
    }
}

/// Register a pulled stream.
///
/// Registers a pulled stream: an HLS playlist (`http`, `https`) or an `rtmp`/`srt` URL,
/// on an address the source policy (`[ingest] source_allowlist`) permits; the stream
/// connects to the address that was checked. The stream belongs to the credential's
/// tenant. Blocking work (name resolution) runs off the async runtime.
#[utoipa::path(
    post,
    path = "/v1/streams",
    tag = "streams",
    operation_id = "register_stream",
    request_body(content = StreamRegistration, description = "The stream."),
    responses(
        (status = 201, description = "Started.", body = StreamView,
            headers(("Location" = String, description = "`/v1/streams/{id}`"))),
        (status = 202, description = "Fleet mode: checked here and produced to the streams topic (acknowledged by the broker); the owner starts it.", body = FleetAccepted),
        (status = 400, description = "The body is not the JSON described or its fields have problems (`issues` lists every one), the source is not allowed, or `tenant` is not the credential's.", body = RegistrationInvalid),
        (status = 403, description = "A `file` source (config file only).", body = ErrorBody),
        (status = 409, description = "The id is taken (by a running stream, or by another tenant's).", body = ErrorBody),
        (status = 429, description = "The tenant runs as many streams as it may (`server.max_streams_per_tenant`).", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds (10)."))),
        (status = 503, description = "Over the stream limit (`server.max_streams`), shutting down, or holding back ingest (the outbox above its high-water mark, a full disk: `Retry-After` 5).", body = ErrorBody),
    )
)]
async fn register(
    State(state): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Response {
    let spec: StreamSpec = match crate::http::json_body::<StreamRegistration>(&body) {
        Ok(s) => s.into(),
        Err(r) => return *r,
    };
    if spec.tenant.as_ref().is_some_and(|t| *t != caller.tenant) {
        return error(
            StatusCode::BAD_REQUEST,
            "tenant: a stream belongs to the credential's tenant",
        );
    }
    if let Some(r) = state.held_back("new streams") {
        return r;
    }
    if let Some(f) = state.fleet.get() {
        return crate::fleet::register(f.clone(), state.clone(), spec, caller.tenant.clone()).await;
    }
    let id = spec.id.clone();
    let st = state.clone();
    let owner = caller.tenant.clone();
    let r = tokio::task::spawn_blocking(move || st.register_untrusted(&spec, &owner))
        .await
        .expect("register task");
    match r {
        Ok(created) => {
            let mut resp = (StatusCode::CREATED, Json(created)).into_response();
            if let Ok(loc) = format!("/v1/streams/{id}").parse() {
                resp.headers_mut().insert(axum::http::header::LOCATION, loc);
            }
            resp
        }
        Err(RegisterError::Invalid(issues)) => (
            StatusCode::BAD_REQUEST,
            Json(RegistrationInvalid {
                error: issues.join("; "),
                issues: Some(issues),
            }),
        )
            .into_response(),
        Err(RegisterError::Exists) => error(StatusCode::CONFLICT, "this stream id is taken"),
        Err(RegisterError::Full) => error(StatusCode::SERVICE_UNAVAILABLE, "too many streams"),
        Err(RegisterError::Quota) => quota_exceeded(),
        Err(RegisterError::FileForbidden) => error(
            StatusCode::FORBIDDEN,
            "file sources are configured in the config file only",
        ),
        Err(RegisterError::Refused) => error(
            StatusCode::BAD_REQUEST,
            "source not allowed: give an rtmp or srt URL (url) or an http(s) playlist (hls) \
             on an address this service may reach",
        ),
    }
}

/// Stop a stream.
///
/// Stops a stream (pushed or pulled) and forgets it once its threads have exited (10 s
/// at most); the id is free again after this answer.
#[utoipa::path(
    delete,
    path = "/v1/streams/{id}",
    tag = "streams",
    operation_id = "delete_stream",
    params(("id" = String, Path, description = "The stream id.")),
    responses(
        (status = 200, description = "Stopped: the stream as it was last.", body = StreamView),
        (status = 202, description = "Fleet mode: a tombstone produced to the streams topic; the owner stops the stream.", body = FleetAccepted),
        (status = 404, description = "No such stream for this tenant.", body = ErrorBody),
    )
)]
async fn remove(
    State(state): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    if let Some(f) = state.fleet.get() {
        return crate::fleet::stop(f.clone(), &caller, id).await;
    }
    let tenant = caller.tenant_filter().map(str::to_owned);
    let removed = tokio::task::spawn_blocking(move || state.remove(&id, tenant.as_deref()))
        .await
        .ok()
        .flatten();
    match removed {
        Some(last) => Json(last).into_response(),
        None => error(StatusCode::NOT_FOUND, "no such stream"),
    }
}

/// Push a segment of a pushed stream.
///
/// Pushes one segment of a pushed stream (MPEG-TS, or fMP4 with the init segment as
/// segment 0); the first segment creates the stream. Segments may arrive out of order
/// within the reorder window; a duplicate is harmless. When the decoder is behind, the
/// request waits (backpressure) rather than dropping accepted bytes. One segment
/// request per stream at a time.
#[utoipa::path(
    put,
    path = "/v1/streams/{id}/segments/{seq}",
    tag = "streams",
    operation_id = "put_segment",
    params(
        ("id" = String, Path, description = "The stream id: 1-128 of `A-Z a-z 0-9 - _ .`."),
        ("seq" = u64, Path, description = "The segment's sequence number, from 0, at most 2^53 - 1."),
    ),
    request_body(content = Vec<u8>, description = "The segment's bytes (not empty).", content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "Taken (or a harmless duplicate, or dropped as late).", body = SegmentResult),
        (status = 202, description = "Fleet mode: produced to the segments topic and acknowledged by the broker (acks=all); the stream's owner sequences it (duplicates and gaps show in its counters).", body = FleetAccepted),
        (status = 400, description = "A bad stream id, an empty body, or a sequence number out of range. (A sequence number that is not a number is refused by the router with a plain-text 400.)", body = ErrorBody),
        (status = 404, description = "The id belongs to another tenant's stream.", body = ErrorBody),
        (status = 409, description = "The stream has ended or stopped.", body = ErrorBody),
        (status = 429, description = "Another segment of this stream is being fed (retry after 1 s), or the tenant runs as many streams as it may (10 s).", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds."))),
        (status = 503, description = "A new stream over the stream limit, or shutting down; or the outbox is above its high-water mark or a disk write fails (retry after 5 s: decisions are never dropped, the ingest is held back instead).", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds (5), when the outbox or a disk is the reason."))),
    )
)]
async fn put_segment(
    State(state): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((id, seq)): Path<(String, u64)>,
    body: Bytes,
) -> Response {
    use tracing::Instrument;
    // Every log line about this segment carries the stream id and sequence number.
    let span = tracing::info_span!("segment", stream = %id, seq, bytes = body.len());
    put_segment_in_span(state, caller, id, seq, body)
        .instrument(span)
        .await
}

async fn put_segment_in_span(
    state: Arc<IngestState>,
    caller: Caller,
    id: String,
    seq: u64,
    body: Bytes,
) -> Response {
    if !valid_stream_id(&id) {
        return error(
            StatusCode::BAD_REQUEST,
            "stream id: 1-128 of A-Z a-z 0-9 - _ .",
        );
    }
    if body.is_empty() {
        return error(StatusCode::BAD_REQUEST, "empty segment");
    }
    if seq > MAX_SEQUENCE {
        return sequence_out_of_range();
    }
    if let Some(r) = state.held_back("segments") {
        return r;
    }
    if let Some(f) = state.fleet.get() {
        return crate::fleet::put_segment(f.clone(), &caller, id, seq, body).await;
    }
    let pushed = match state.pushed(&id, &caller.tenant) {
        Ok(p) => p,
        Err(PushError::Full) => return error(StatusCode::SERVICE_UNAVAILABLE, "too many streams"),
        Err(PushError::Foreign) => return error(StatusCode::NOT_FOUND, "no such stream"),
        Err(PushError::Quota) => return quota_exceeded(),
    };
    // One feeder per stream: a second concurrent push is told to retry, not queued
    // (the blocking pool it would wait in is shared with the whole daemon).
    let Ok(_feeding) = pushed.feeding.clone().try_lock_owned() else {
        if let Some(busy) = &state.config.on_feeder_busy {
            busy();
        }
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            "another segment of this stream is being fed; retry",
        );
        r.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("1"),
        );
        return r;
    };
    pushed.last_segment_ms.store(
        state.config.clock.now_ms(),
        std::sync::atomic::Ordering::Release,
    );
    let Some(feed) = pushed
        .feed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
    else {
        return error(StatusCode::CONFLICT, "the stream has ended");
    };
    let intake = pushed
        .sequencer
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(seq, body.to_vec());
    let (result, released, gap_before) = match intake {
        Intake::Released {
            segments,
            gap_before,
        } => {
            let n = segments.len();
            // Wait (off the async runtime) while the decoder catches up.
            let sent = tokio::task::spawn_blocking(move || {
                segments
                    .into_iter()
                    .try_for_each(|(_, b)| feed.send_blocking(FeedItem::Bytes(b)))
            })
            .await;
            if !matches!(sent, Ok(Ok(()))) {
                return error(StatusCode::CONFLICT, "the stream has stopped");
            }
            (SegmentOutcome::Released, n, gap_before)
        }
        Intake::Held => (SegmentOutcome::Held, 0, 0),
        Intake::Duplicate => (SegmentOutcome::Duplicate, 0, 0),
        Intake::Late => (SegmentOutcome::Late, 0, 0),
        Intake::OutOfRange => return sequence_out_of_range(),
    };
    Json(SegmentResult {
        stream: id,
        sequence: seq,
        result,
        released,
        gap_before,
    })
    .into_response()
}

impl IngestState {
    /// 503 with `Retry-After` while the daemon holds back its ingest (the outbox above
    /// its high-water mark, a full disk): no new `what` is taken, so no decision is
    /// dropped.
    fn held_back(&self, what: &str) -> Option<Response> {
        let why = self.config.refuse.as_ref().and_then(|f| f())?;
        tracing::warn!(reason = %why, "{what} refused: the daemon holds back its ingest");
        let mut r = error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("not taking {what} now: {why}; retry"),
        );
        r.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("5"),
        );
        Some(r)
    }
}

/// 429 with `Retry-After`: the tenant runs as many streams as it may.
pub(crate) fn quota_exceeded() -> Response {
    let mut r = error(
        StatusCode::TOO_MANY_REQUESTS,
        "this tenant runs as many streams as it may (server.max_streams_per_tenant)",
    );
    r.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("10"),
    );
    r
}

fn sequence_out_of_range() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        &format!("sequence number: at most {MAX_SEQUENCE} (2^53 - 1)"),
    )
}

/// Ends a pushed stream: the segments it holds go to the decoder, then its feed
/// closes (the decoder drains and ends). Blocking. `None` if it had ended already.
fn end_pushed(entry: &Entry) -> Option<usize> {
    let feed = entry
        .feed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()?;
    let rest = entry
        .sequencer
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .finish();
    let n = rest.len();
    for (_, b, _) in rest {
        if feed.send_blocking(FeedItem::Bytes(b)).is_err() {
            break;
        }
    }
    Some(n)
}

/// End a pushed stream.
///
/// Ends a pushed stream: no more segments; those the reorder window holds go to the
/// decoder, which drains and ends. Idempotent.
#[utoipa::path(
    post,
    path = "/v1/streams/{id}/end",
    tag = "streams",
    operation_id = "end_stream",
    params(("id" = String, Path, description = "The stream id.")),
    responses(
        (status = 200, description = "Ended (by this request or before).", body = StreamEnd),
        (status = 202, description = "Fleet mode: the end produced to the segments topic after the stream's segments; the owner ends it.", body = FleetAccepted),
        (status = 404, description = "No such stream for this tenant.", body = ErrorBody),
    )
)]
async fn end(
    State(state): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    if let Some(f) = state.fleet.get() {
        return crate::fleet::end(f.clone(), &caller, id).await;
    }
    let Some(pushed) = state.visible(&id, caller.tenant_filter()) else {
        return error(StatusCode::NOT_FOUND, "no such stream");
    };
    let ended = tokio::task::spawn_blocking(move || end_pushed(&pushed))
        .await
        .ok()
        .flatten();
    match ended {
        Some(n) => Json(StreamEnd {
            stream: id,
            result: EndOutcome::Ended,
            released: Some(n),
        })
        .into_response(),
        None => Json(StreamEnd {
            stream: id,
            result: EndOutcome::AlreadyEnded,
            released: None,
        })
        .into_response(),
    }
}

//! HLS pull: a thread that polls a playlist (local path or http(s) URL), fetches new
//! segments in order and feeds them to a stream's [`SegmentFeed`], as if the platform
//! had pushed them.
//!
//! - Live playlists are reloaded every half target duration; a live stream starts near
//!   its edge (the last three segments), a VOD or ended playlist from the start.
//! - A master playlist is followed to its highest-bandwidth variant.
//! - Playlist reload errors and segment errors (a 404 while the CDN catches up) are
//!   retried with capped exponential backoff; a segment that still fails is skipped and
//!   counted as missing, as are segments that slid out of the playlist unseen.
//! - `#EXT-X-DISCONTINUITY` becomes a feed discontinuity (the decoder starts afresh),
//!   and an fMP4 initialisation section (`#EXT-X-MAP`) is fed before the first segment
//!   that uses it.
//! - The playlist ending (`#EXT-X-ENDLIST`), too many consecutive reload failures, or
//!   cancellation closes the feed, which ends the stream.
//! - Only a playlist given as a local path (a trusted, configured stream) may name
//!   local files; a remote playlist's URIs must be http(s). With a [`NetPolicy`] (streams
//!   registered through the API), every connection, redirects included, goes only to
//!   addresses the policy permits (see [`super::guard`]).

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::feed::{FeedItem, SegmentFeed};
use super::guard::{NetPolicy, redact};
use super::playlist::{self, Playlist};

/// HLS poller settings.
#[derive(Debug, Clone)]
pub struct HlsConfig {
    /// Playlist URL or path.
    pub url: String,
    /// Largest segment or playlist accepted, in bytes.
    pub max_bytes: u64,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Retries: first delay, cap, and attempts per playlist reload or segment.
    pub retry: (Duration, Duration, u32),
    /// Consecutive failed reloads before giving up.
    pub max_reload_failures: u32,
    /// Where fetches may connect; `None` for trusted (configured) streams.
    pub policy: Option<Arc<NetPolicy>>,
}

impl HlsConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        HlsConfig {
            url: url.into(),
            max_bytes: 64 << 20,
            timeout: Duration::from_secs(10),
            retry: (Duration::from_millis(250), Duration::from_secs(4), 4),
            max_reload_failures: 10,
            policy: None,
        }
    }

    /// Whether the playlist is a local file (then its URIs may be local files too):
    /// never for a stream under a policy (registered through the API).
    fn local(&self) -> bool {
        self.policy.is_none() && url::Url::parse(&self.url).map_or(true, |u| u.scheme() == "file")
    }
}

/// HLS counters.
#[derive(Debug, Default)]
pub struct HlsCounters {
    /// Playlist loads that succeeded.
    pub reloads: AtomicU64,
    /// Playlist loads that failed (fetch or parse).
    pub reload_errors: AtomicU64,
    /// Segments fed.
    pub segments: AtomicU64,
    /// Segment fetches that failed (each retry counts).
    pub segment_errors: AtomicU64,
    /// Segments never fed (failed after retries, or slid out of the playlist unseen).
    pub missing: AtomicU64,
    /// Discontinuities fed.
    pub discontinuities: AtomicU64,
    /// Why polling stopped early (playlist unavailable or not a playlist), if it did.
    pub stopped: std::sync::Mutex<Option<String>>,
}

/// Starts polling `config.url` into `feed` until the playlist ends or `cancel` is set.
pub fn spawn(
    config: HlsConfig,
    feed: SegmentFeed,
    cancel: Arc<AtomicBool>,
    counters: Arc<HlsCounters>,
) -> JoinHandle<Option<String>> {
    std::thread::Builder::new()
        .name("hls-poll".into())
        .spawn(move || {
            let shared = counters.clone();
            let mut agent = ureq::AgentBuilder::new().redirects(5);
            if let Some(policy) = &config.policy {
                agent = agent.resolver(policy.resolver());
            }
            let end = Poller {
                agent: agent.build(),
                config,
                feed,
                cancel,
                counters,
            }
            .run();
            if let Some(why) = &end {
                tracing::warn!(error = %why, "HLS polling stopped");
                *shared.stopped.lock().unwrap_or_else(|e| e.into_inner()) = Some(why.clone());
            }
            end
        })
        .expect("spawn HLS poller")
}

struct Poller {
    agent: ureq::Agent,
    config: HlsConfig,
    feed: SegmentFeed,
    cancel: Arc<AtomicBool>,
    counters: Arc<HlsCounters>,
}

/// Resolves `uri` against the playlist location `base` (RFC 3986, with the `url`
/// crate, for http(s) playlists: `//cdn/x.ts` keeps the scheme and takes the host,
/// `../x.ts` climbs, a query is dropped from the base). A local playlist's relative
/// URIs are paths beside it.
pub fn resolve(base: &str, uri: &str) -> String {
    if let Ok(base_url) = url::Url::parse(base)
        && matches!(base_url.scheme(), "http" | "https")
    {
        return match base_url.join(uri) {
            Ok(u) => u.to_string(),
            // Not resolvable (bad characters): left as written, and the fetch refuses it.
            Err(_) => uri.to_owned(),
        };
    }
    if uri.contains("://") || uri.starts_with('/') {
        return uri.to_owned();
    }
    let dir = base.split(['?', '#']).next().unwrap_or(base);
    match dir.rfind('/') {
        Some(i) => format!("{}/{uri}", &dir[..i]),
        None => uri.to_owned(),
    }
}

impl Poller {
    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Acquire)
    }

    /// Sleeps up to `d`; true if cancelled.
    fn sleep(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        while Instant::now() < deadline {
            if self.cancelled() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20).min(deadline - Instant::now()));
        }
        self.cancelled()
    }

    fn fetch_once(&self, url: &str) -> Result<Vec<u8>, String> {
        let mut body = Vec::new();
        if url.starts_with("http://") || url.starts_with("https://") {
            let response = self
                .agent
                .get(url)
                .timeout(self.config.timeout)
                .call()
                .map_err(|e| match e {
                    ureq::Error::Status(code, _) => format!("{}: HTTP {code}", redact(url)),
                    // ureq's own text names the URL unredacted: only its kind.
                    ureq::Error::Transport(t) => format!("{}: {}", redact(url), t.kind()),
                })?;
            response
                .into_reader()
                .take(self.config.max_bytes + 1)
                .read_to_end(&mut body)
                .map_err(|e| format!("{}: {e}", redact(url)))?;
        } else if !self.config.local() {
            return Err(format!(
                "{}: a remote playlist may only name http(s) URIs",
                redact(url)
            ));
        } else {
            let path = url.strip_prefix("file://").unwrap_or(url);
            std::fs::File::open(path)
                .and_then(|f| f.take(self.config.max_bytes + 1).read_to_end(&mut body))
                .map_err(|e| format!("{path}: {e}"))?;
        }
        if body.len() as u64 > self.config.max_bytes {
            return Err(format!(
                "{}: larger than {} bytes",
                redact(url),
                self.config.max_bytes
            ));
        }
        Ok(body)
    }

    /// Fetches with retries; `None` when cancelled.
    fn fetch(&self, url: &str, errors: &AtomicU64) -> Option<Result<Vec<u8>, String>> {
        let (first, cap, attempts) = self.config.retry;
        let mut delay = first;
        let mut last = String::new();
        for attempt in 0..=attempts {
            if attempt > 0 && self.sleep(delay) {
                return None;
            }
            match self.fetch_once(url) {
                Ok(b) => return Some(Ok(b)),
                Err(e) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %e, attempt, "HLS fetch failed");
                    last = e;
                    delay = (delay * 2).min(cap);
                }
            }
            if self.cancelled() {
                return None;
            }
        }
        Some(Err(last))
    }

    /// Runs until the playlist ends, fails, or is cancelled; returns the reason it
    /// stopped early, if any.
    fn run(self) -> Option<String> {
        let mut url = self.config.url.clone();
        let mut last_seq: Option<u64> = None;
        let mut current_map: Option<std::sync::Arc<str>> = None;
        let mut failures = 0;
        loop {
            if self.cancelled() {
                return None;
            }
            let text = match self.fetch(&url, &self.counters.reload_errors) {
                None => return None,
                Some(Ok(b)) => String::from_utf8_lossy(&b).into_owned(),
                Some(Err(e)) => {
                    failures += 1;
                    if failures >= self.config.max_reload_failures {
                        return Some(format!("playlist unavailable: {e}"));
                    }
                    continue;
                }
            };
            let media = match playlist::parse(&text) {
                Ok(Playlist::Media(m)) => m,
                Ok(Playlist::Master(variants)) => {
                    let best = variants
                        .iter()
                        .max_by_key(|v| v.bandwidth)
                        .expect("a master lists variants");
                    url = resolve(&url, &best.uri);
                    continue;
                }
                Err(e) => {
                    self.counters.reload_errors.fetch_add(1, Ordering::Relaxed);
                    failures += 1;
                    if failures >= self.config.max_reload_failures {
                        return Some(format!("{}: {e}", redact(&url)));
                    }
                    if self.sleep(self.config.retry.0) {
                        return None;
                    }
                    continue;
                }
            };
            failures = 0;
            self.counters.reloads.fetch_add(1, Ordering::Relaxed);
            let start = match last_seq {
                Some(s) => s + 1,
                None if media.ended => media.media_sequence,
                None => media.segments.len().saturating_sub(3) as u64 + media.media_sequence,
            };
            for seg in media.segments.iter().filter(|s| s.sequence >= start) {
                if let Some(prev) = last_seq {
                    if seg.sequence > prev + 1 {
                        self.counters
                            .missing
                            .fetch_add(seg.sequence - prev - 1, Ordering::Relaxed);
                    }
                    if seg.discontinuity {
                        self.counters
                            .discontinuities
                            .fetch_add(1, Ordering::Relaxed);
                        if self.feed.send_blocking(FeedItem::Discontinuity).is_err() {
                            return None;
                        }
                        current_map = None;
                    }
                }
                if seg.map != current_map {
                    if let Some(map) = &seg.map {
                        match self.fetch(&resolve(&url, map), &self.counters.segment_errors) {
                            None => return None,
                            Some(Ok(init)) => {
                                if self.feed.send_blocking(FeedItem::Bytes(init)).is_err() {
                                    return None;
                                }
                            }
                            Some(Err(e)) => return Some(format!("initialisation section: {e}")),
                        }
                    }
                    current_map = seg.map.clone();
                }
                match self.fetch(&resolve(&url, &seg.uri), &self.counters.segment_errors) {
                    None => return None,
                    Some(Ok(bytes)) => {
                        if self.feed.send_blocking(FeedItem::Bytes(bytes)).is_err() {
                            return None;
                        }
                        self.counters.segments.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, sequence = seg.sequence, "HLS segment skipped");
                        self.counters.missing.fetch_add(1, Ordering::Relaxed);
                    }
                }
                last_seq = Some(seg.sequence);
            }
            if media.ended {
                return None;
            }
            let wait = Duration::from_secs_f64((media.target_duration / 2.0).clamp(0.1, 10.0));
            if self.sleep(wait) {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::resolve;

    #[test]
    fn resolves_relative_uris() {
        assert_eq!(
            resolve("http://h:1/a/b/live.m3u8?t=1", "seg1.ts"),
            "http://h:1/a/b/seg1.ts"
        );
        assert_eq!(
            resolve("http://h:1/a/b/live.m3u8", "/x/seg.ts"),
            "http://h:1/x/seg.ts"
        );
        assert_eq!(
            resolve("http://h:1/a/live.m3u8", "https://cdn/s.ts"),
            "https://cdn/s.ts"
        );
        assert_eq!(resolve("/tmp/x/live.m3u8", "seg.ts"), "/tmp/x/seg.ts");
        // Expected values from RFC 3986 section 5.4 (reference resolution examples).
        assert_eq!(
            resolve("http://h:1/a/b/live.m3u8", "//cdn/x.ts"),
            "http://cdn/x.ts"
        );
        assert_eq!(
            resolve("https://h/a/b/live.m3u8", "../c/x.ts"),
            "https://h/a/c/x.ts"
        );
        assert_eq!(
            resolve("http://h/a/live.m3u8?token=1", "x.ts?token=2"),
            "http://h/a/x.ts?token=2"
        );
        assert_eq!(resolve("http://h/a/b/live.m3u8", "/x.ts"), "http://h/x.ts");
        assert_eq!(
            resolve("http://h/a/live.m3u8", "file:///etc/passwd"),
            "file:///etc/passwd"
        );
    }
}

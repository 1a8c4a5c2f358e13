//! The decode thread: runs demuxer sessions ([`super::session`]) for its source until
//! the stream ends, fails or is cancelled; reconnects URL sources with [`Backoff`],
//! restarts pushed streams at discontinuities, and keeps the stream's state and last
//! error.
//!
//! [`Backoff`]: super::Backoff

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::session::Continuity;
use super::{
    Counters, LatestQueue, STATES, SampledFrame, Source, StreamConfig, StreamError, StreamState,
};

/// The decode thread's side of a [`super::LiveStream`].
pub(super) struct Worker {
    pub config: StreamConfig,
    pub counters: Arc<Counters>,
    pub error: Arc<Mutex<Option<StreamError>>>,
    pub frames: Arc<LatestQueue<SampledFrame>>,
    pub cancel: Arc<AtomicBool>,
    pub id: Arc<str>,
    /// For segment sources: when the bytes being read arrived.
    pub arrival: Option<Arc<crate::ingest::feed::ArrivalClock>>,
}

/// How one demuxer session ended.
pub(super) enum SessionEnd {
    /// End of input.
    Eof,
    /// Stopped by the caller.
    Cancelled,
    /// The read timed out or failed: reconnect (URL) or give up.
    Broken(StreamError),
    /// Unrecoverable for this stream.
    Fatal(StreamError),
}

impl Worker {
    pub(super) fn set_state(&self, s: StreamState) {
        self.counters.state.store(
            STATES.iter().position(|x| *x == s).unwrap_or(0) as u8,
            Ordering::Release,
        );
    }

    /// The stream is over, failed: the reason is kept, and the frame queue closes so the
    /// consumer drains it and reports the end.
    fn fail(&self, why: StreamError) {
        tracing::warn!(stream = %self.id, error = %why, "stream failed");
        *self.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
        self.set_state(StreamState::Failed);
        self.frames.close();
    }

    fn note_error(&self, why: StreamError) {
        tracing::warn!(stream = %self.id, error = %why, "stream error");
        *self.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
    }

    pub(super) fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Acquire)
    }

    pub(super) fn run(self, source: Source) {
        let _span = tracing::info_span!("stream", id = %self.id).entered();
        let mut cont = Continuity::new(&self.config);
        match source {
            Source::File(path) => {
                let end = self.session_url(&path.to_string_lossy(), &mut cont);
                self.finish(end);
            }
            Source::Url(url) => self.run_url(&url, &mut cont),
            Source::Hls(_) => unreachable!("LiveStream::start turns HLS into segments"),
            Source::Segments(reader) => self.run_segments(reader, &mut cont),
        }
    }

    /// A URL: sessions until cancelled or a fatal error; an ended or broken session
    /// reconnects after a backoff delay, and a session that decoded a frame restores
    /// the attempts.
    fn run_url(&self, url: &str, cont: &mut Continuity) {
        let mut retries = self.config.reconnect.start();
        loop {
            let frames_before = self.counters.decoded.load(Ordering::Relaxed);
            let end = self.session_url(url, cont);
            match end {
                SessionEnd::Cancelled | SessionEnd::Fatal(_) => return self.finish(end),
                SessionEnd::Eof | SessionEnd::Broken(_) => {
                    if let SessionEnd::Broken(why) = end {
                        self.note_error(why);
                    }
                    if self.counters.decoded.load(Ordering::Relaxed) > frames_before {
                        retries.reset();
                    }
                    let Some(delay) = retries.next_delay() else {
                        return self.fail(StreamError::GaveUp {
                            url: url.to_owned(),
                            attempts: self.config.reconnect.attempts,
                        });
                    };
                    self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(stream = %self.id, delay_ms = delay.as_millis() as u64, "reconnecting");
                    if self.sleep_cancellable(delay) {
                        return self.finish(SessionEnd::Cancelled);
                    }
                }
            }
        }
    }

    /// Pushed segments: a session per byte stream, a new one after each discontinuity,
    /// until the feed is finished.
    fn run_segments(&self, reader: super::SegmentReader, cont: &mut Continuity) {
        let reader = Arc::new(Mutex::new(reader));
        loop {
            let end = self.session_segments(&reader, cont);
            let mut r = reader.lock().unwrap_or_else(|e| e.into_inner());
            match end {
                SessionEnd::Cancelled => return self.finish(end),
                // A fatal reason (an oversized stream) is the reason, even when the
                // stream's bytes have all arrived meanwhile.
                SessionEnd::Fatal(why) => return self.fail(why),
                _ if r.finished() => {
                    let received = r.received();
                    drop(r);
                    // Bytes came, but not one frame: a misconfigured ingest (not
                    // video, an unsupported codec), which an operator must see.
                    if received > 0 && self.counters.decoded.load(Ordering::Relaxed) == 0 {
                        let last = self.error.lock().unwrap_or_else(|e| e.into_inner()).take();
                        return self.fail(StreamError::NoFrame {
                            received,
                            last: last.map(Box::new),
                        });
                    }
                    return self.finish(SessionEnd::Eof);
                }
                SessionEnd::Eof => {
                    self.counters
                        .discontinuities
                        .fetch_add(1, Ordering::Relaxed);
                    r.resume();
                }
                SessionEnd::Broken(why) => {
                    self.note_error(why);
                    self.counters.open_errors.fetch_add(1, Ordering::Relaxed);
                    r.resume();
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
            if self.is_cancelled() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10).min(deadline - Instant::now()));
        }
        self.is_cancelled()
    }
}

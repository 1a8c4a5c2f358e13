//! Pushed segments as one continuous byte stream for FFmpeg: the ingest hook (or the
//! HLS poller) hands segments to a [`SegmentFeed`]; the decode thread reads them through
//! a [`SegmentReader`] (an `io::Read` that FFmpeg's demuxer consumes via a custom
//! AVIOContext), so decoder state carries across segments and a GOP split over two
//! segments decodes as one.
//!
//! A discontinuity (new codec parameters, a new fMP4 initialisation section) ends the
//! current byte stream: the reader reports end-of-file there and the decode thread opens
//! a fresh demuxer for what follows. Reads wait in short slices so FFmpeg's interrupt
//! callback is polled and a stop never waits on an idle feed.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

/// What the feed carries.
#[derive(Debug)]
pub enum FeedItem {
    /// Bytes of the stream, in order.
    Bytes(Vec<u8>),
    /// The next bytes start a new, independent stream.
    Discontinuity,
}

/// The sending side.
#[derive(Debug, Clone)]
pub struct SegmentFeed {
    tx: SyncSender<(FeedItem, Stamp)>,
}

/// When fed bytes arrived (ms since the Unix epoch).
#[derive(Debug, Clone, Copy)]
struct Stamp {
    /// Handed to this feed.
    arrival: u64,
    /// First accepted anywhere: by the push hook of whichever worker took the segment
    /// (fleet mode), else the same as `arrival`.
    origin: u64,
}

impl Stamp {
    fn now(origin: Option<u64>) -> Stamp {
        let arrival = now_ms();
        Stamp {
            arrival,
            origin: origin.map_or(arrival, |o| o.min(arrival)),
        }
    }
}

/// When the bytes now being read arrived; 0 before any.
#[derive(Debug, Default)]
pub struct ArrivalClock {
    arrival: AtomicU64,
    origin: AtomicU64,
}

impl ArrivalClock {
    /// When the bytes now being read were handed to this process: the decoder's lag
    /// behind the live edge is now minus this.
    pub fn arrival_ms(&self) -> Option<u64> {
        Some(self.arrival.load(Ordering::Acquire)).filter(|&at| at != 0)
    }

    /// When those bytes were first accepted (by another worker's hook in fleet mode):
    /// the start of the end-to-end latency.
    pub fn origin_ms(&self) -> Option<u64> {
        Some(self.origin.load(Ordering::Acquire)).filter(|&at| at != 0)
    }

    fn set(&self, stamp: Stamp) {
        self.origin.store(stamp.origin, Ordering::Release);
        self.arrival.store(stamp.arrival, Ordering::Release);
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Why a segment could not be handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    /// The decoder is this many segments behind: the caller should drop or retry.
    #[error("the stream's decoder is behind; segment not queued")]
    Full,
    /// The stream has stopped.
    #[error("the stream has stopped")]
    Closed,
}

impl SegmentFeed {
    /// Hands over bytes without blocking.
    pub fn send(&self, item: FeedItem) -> Result<(), FeedError> {
        self.tx
            .try_send((item, Stamp::now(None)))
            .map_err(|e| match e {
                TrySendError::Full(_) => FeedError::Full,
                TrySendError::Disconnected(_) => FeedError::Closed,
            })
    }

    /// Hands over bytes, waiting while the decoder catches up (for pullers such as the
    /// HLS poller, whose pace the decoder may set).
    pub fn send_blocking(&self, item: FeedItem) -> Result<(), FeedError> {
        self.send_blocking_since(item, None)
    }

    /// Like [`send_blocking`](Self::send_blocking), for bytes first accepted at
    /// `origin_ms` elsewhere (a segment another worker's hook took, read back from
    /// Kafka).
    pub fn send_blocking_since(
        &self,
        item: FeedItem,
        origin_ms: Option<u64>,
    ) -> Result<(), FeedError> {
        self.tx
            .send((item, Stamp::now(origin_ms)))
            .map_err(|_| FeedError::Closed)
    }
}

/// The reading side: an `io::Read` over the fed bytes.
#[derive(Debug)]
pub struct SegmentReader {
    rx: Receiver<(FeedItem, Stamp)>,
    /// When the bytes being read arrived.
    arrival: Arc<ArrivalClock>,
    current: Vec<u8>,
    at: usize,
    /// A discontinuity was reached: reads return end-of-file until `resume`.
    at_boundary: bool,
    /// The feed is closed and drained.
    finished: bool,
    /// Bytes handed to the reader so far.
    received: u64,
}

/// A feed with room for `capacity` queued segments.
pub fn segment_channel(capacity: usize) -> (SegmentFeed, SegmentReader) {
    let (tx, rx) = sync_channel(capacity.max(1));
    (
        SegmentFeed { tx },
        SegmentReader {
            rx,
            arrival: Arc::default(),
            current: Vec::new(),
            at: 0,
            at_boundary: false,
            finished: false,
            received: 0,
        },
    )
}

/// How long one read waits before letting FFmpeg poll its interrupt callback.
const READ_SLICE: Duration = Duration::from_millis(50);

impl SegmentReader {
    /// After a discontinuity's end-of-file: continue with the next stream. Returns false
    /// when the feed is finished.
    pub fn resume(&mut self) -> bool {
        self.at_boundary = false;
        !self.finished
    }

    /// When the bytes now being read arrived.
    pub fn arrival_clock(&self) -> Arc<ArrivalClock> {
        self.arrival.clone()
    }

    /// Whether the feed is closed and every byte was read.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Bytes received from the feed so far.
    pub fn received(&self) -> u64 {
        self.received
    }
}

impl Read for SegmentReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.at_boundary || self.finished {
                return Ok(0);
            }
            if self.at < self.current.len() {
                let n = buf.len().min(self.current.len() - self.at);
                buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
                self.at += n;
                return Ok(n);
            }
            match self.rx.recv_timeout(READ_SLICE) {
                Ok((FeedItem::Bytes(b), at)) => {
                    self.received += b.len() as u64;
                    self.current = b;
                    self.at = 0;
                    self.arrival.set(at);
                }
                Ok((FeedItem::Discontinuity, _)) => self.at_boundary = true,
                // Let the caller (FFmpeg's read callback) poll its interrupt, then retry.
                Err(RecvTimeoutError::Timeout) => return Err(io::ErrorKind::Interrupted.into()),
                Err(RecvTimeoutError::Disconnected) => self.finished = true,
            }
        }
    }
}

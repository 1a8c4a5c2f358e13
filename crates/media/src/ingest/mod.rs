//! Live ingest: sources (files, FFmpeg URLs such as RTMP and SRT, pushed segments, HLS
//! playlists), decoding on dedicated threads, sampling, backpressure and lifecycle.
//!
//! - [`sequencer`]: orders pushed segments (duplicates, reorder window, gaps). Pure.
//! - [`playlist`]: HLS playlist parsing. Pure.
//! - [`guard`]: which network targets a pulled stream may reach (SSRF). Pure but for
//!   resolution.
//! - [`feed`]: pushed segments as one byte stream for FFmpeg.
//! - [`hls`]: HLS pull (live and VOD), feeding segments like a push.
//! - [`queue`]: the bounded latest-wins hand-over to the detectors.
//! - [`stream`]: a stream's decode thread, sampling (pure, [`stream::sampling`]),
//!   lifecycle, reconnect backoff and counters.

pub mod feed;
pub mod guard;
pub mod hls;
pub mod playlist;
pub mod queue;
pub mod sequencer;
pub mod stream;

pub use feed::{FeedError, FeedItem, SegmentFeed, SegmentReader, segment_channel};
pub use queue::LatestQueue;
pub use sequencer::{Intake, MAX_SEQUENCE, Sequencer, SequencerStats};
pub use stream::{
    Backoff, LiveStream, Pixels, PtsJump, SampledFrame, Sampling, Source, StreamConfig,
    StreamError, StreamState, StreamStats, yuv420_to_rgb24,
};

//! Why a stream session ended badly. Callers see the text
//! ([`super::StreamStats::error`]); the decode thread decides on the variant. URLs are
//! shown redacted ([`redact`]): stream keys and signed queries stay out of logs and
//! API answers.

use ffmpeg_next as ff;

use crate::ingest::guard::redact;

/// A stream error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StreamError {
    /// The URL's scheme is not one a stream may use.
    #[error("{}: unsupported protocol", redact(.url))]
    UnsupportedProtocol {
        /// The source.
        url: String,
    },
    /// FFmpeg could not open or probe the source.
    #[error("{}: cannot open: {error}", redact(.url))]
    Open {
        /// The source.
        url: String,
        /// FFmpeg's error.
        error: ff::Error,
    },
    /// The pushed bytes could not be opened as media.
    #[error("pushed segments: cannot open: {0}")]
    OpenSegments(ff::Error),
    /// FFmpeg's custom I/O for pushed segments could not be set up.
    #[error("custom I/O: {0}")]
    CustomIo(ff::Error),
    /// The input has no video stream.
    #[error("no video stream")]
    NoVideo,
    /// The video stream's codec parameters are unusable.
    #[error("codec parameters: {0}")]
    Parameters(ff::Error),
    /// No decoder for the codec in this FFmpeg build.
    #[error("unsupported codec {0:?}")]
    UnknownCodec(ff::codec::Id),
    /// The decoder refused to open.
    #[error("unsupported codec: {0}")]
    DecoderOpen(ff::Error),
    /// The video is larger than the stream's maximum input size.
    #[error("resolution {width}x{height} above the maximum {max_width}x{max_height}")]
    TooLarge {
        /// Declared or decoded width.
        width: u32,
        /// Declared or decoded height.
        height: u32,
        /// The maximum width.
        max_width: u32,
        /// The maximum height.
        max_height: u32,
    },
    /// libswscale could not be set up for the frame.
    #[error("pixel conversion: {0}")]
    Convert(ff::Error),
    /// No I/O progress for the read timeout.
    #[error("read timed out")]
    ReadTimeout,
    /// A read failed.
    #[error("read: {0}")]
    Read(ff::Error),
    /// A URL source failed this many times in a row.
    #[error("{}: gave up after {attempts} reconnects", redact(.url))]
    GaveUp {
        /// The source.
        url: String,
        /// Reconnects tried.
        attempts: u32,
    },
    /// Pushed bytes came, but not one frame could be decoded from them.
    #[error(
        "no video frame could be decoded from {received} pushed bytes{}",
        last.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default()
    )]
    NoFrame {
        /// Bytes received.
        received: u64,
        /// The last error seen, if any.
        last: Option<Box<StreamError>>,
    },
}

use std::path::PathBuf;

/// Why media could not be opened or decoded.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// FFmpeg could not open or probe the input.
    #[error("{path}: cannot open media: {source}")]
    Open {
        /// The input.
        path: PathBuf,
        /// FFmpeg's error.
        source: ffmpeg_next::Error,
    },
    /// The input has no video stream.
    #[error("{path}: no video stream")]
    NoVideo {
        /// The input.
        path: PathBuf,
    },
    /// The video stream has no usable frame rate.
    #[error("{path}: video stream has no frame rate")]
    NoFrameRate {
        /// The input.
        path: PathBuf,
    },
    /// The codec is not supported by this FFmpeg build, or the decoder failed to open.
    #[error("{path}: cannot decode video: {source}")]
    Decoder {
        /// The input.
        path: PathBuf,
        /// FFmpeg's error.
        source: ffmpeg_next::Error,
    },
    /// Decoding failed part-way.
    #[error("{path}: decoding failed: {source}")]
    Decode {
        /// The input.
        path: PathBuf,
        /// FFmpeg's error.
        source: ffmpeg_next::Error,
    },
    /// Pixel conversion failed.
    #[error("{path}: pixel conversion failed: {source}")]
    Convert {
        /// The input.
        path: PathBuf,
        /// FFmpeg's error.
        source: ffmpeg_next::Error,
    },
}

//! Video decoding for Firebreak, on FFmpeg through `ffmpeg-next`.
//!
//! This crate is the only one that links FFmpeg. It owns opening media, decoding, pixel
//! conversion with libswscale, and frame selection; hashing itself is `firebreak-hashing`.
//! Decoding is blocking, CPU-bound work: callers run it on dedicated threads, never on an
//! async runtime (the swscale context is not `Send`).

mod convert;
mod error;
pub mod frames;
pub mod ingest;
pub mod vpdq;

pub use error::MediaError;

/// Initialises FFmpeg once (registers formats, silences its log: errors are counted and reported by the callers).
pub fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        ffmpeg_next::init().expect("FFmpeg initialises");
        ffmpeg_next::util::log::set_level(ffmpeg_next::util::log::Level::Fatal);
    });
}

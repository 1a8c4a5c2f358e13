//! Perceptual hashing for Firebreak: Meta's PDQ (images) and vPDQ (video), bit-exact
//! with the reference C++ in facebook/ThreatExchange.
//!
//! This crate owns the hash arithmetic and formats, because a hash list shared between
//! platforms is only useful if every platform computes the same bits for the same frame.
//! It is pure Rust with no I/O of its own (image file decoding is behind the optional
//! `decode` feature); video decoding lives in `firebreak-media`.
//!
//! - [`Hash256`] / [`PdqHash`]: the 256-bit hash, reference hex text, Hamming distance.
//! - [`PdqHasher`]: hashing from RGB8, grey8 or f32 luma buffers, and the dihedral hashes.
//! - [`vpdq`]: per-frame video features, their text format, and video comparison.
//! - [`index`]: exact Hamming-range search over millions of hashes, updatable live.
//! - [`lists`] and [`bank`]: hash-list formats, banks, import hygiene, binary snapshots.
//! - [`matcher`]: PDQ, video and digest matching against banks, with negative banks.
//! - [`window`]: live vPDQ match percentages over a stream's rolling window.

pub mod bank;
mod hash;
mod hasher;
pub mod index;
mod jarosz;
pub mod lists;
pub mod matcher;
pub mod vpdq;
pub mod window;

#[cfg(feature = "decode")]
pub mod decode;

pub use hash::{HASH_BITS, Hash256, ParseHashError, PdqHash};
pub use hasher::{
    Dihedral, ImageError, ImageView, LumaView, MIN_HASHABLE_DIM, PdqHasher, PixelFormat,
};

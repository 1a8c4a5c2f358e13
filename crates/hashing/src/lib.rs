//! Perceptual hashing for Firebreak: Meta's PDQ (images) and vPDQ (video), bit-exact
//! with the reference C++ in facebook/ThreatExchange.
//!
//! This crate owns the hash arithmetic and formats, because a hash list shared between
//! platforms is only useful if every platform computes the same bits for the same frame.
//! It is pure Rust with no required dependencies and no I/O of its own, so a partner can
//! audit or vendor it alone: image file decoding is behind the optional `decode`
//! feature, video decoding lives in `firebreak-media`, and everything done *with* hashes
//! (lists, banks, the index, matching) lives in `firebreak-matching`.
//!
//! - [`Hash256`] / [`PdqHash`]: the 256-bit hash, reference hex text, Hamming distance.
//! - [`PdqHasher`]: hashing from RGB8, grey8 or f32 luma buffers, and the dihedral hashes.
//! - [`views`]: views of a frame (bars trimmed, centre crops, dihedral transforms)
//!   for matching edited copies.
//! - [`vpdq`]: per-frame video features, their text format, and video comparison.

#![forbid(unsafe_code)]

mod hash;
mod hasher;
mod jarosz;
pub mod views;
pub mod vpdq;

#[cfg(feature = "decode")]
pub mod decode;

pub use hash::{HASH_BITS, Hash256, ParseHashError, PdqHash};
pub use hasher::{
    Dihedral, ImageError, ImageView, LumaView, MIN_HASHABLE_DIM, PdqHasher, PixelFormat,
};

//! Exact Hamming-range search over PDQ hashes: "every stored hash within distance `d`
//! of this one", with the same answer as a linear scan, in well under a millisecond at
//! ten million hashes.
//!
//! - [`MihIndex`]: immutable multi-index hashing tables (see its module for the method).
//! - [`LiveIndex`]: additions and deletions while queries run (base + delta snapshots).

mod live;
mod mih;

pub use live::{LiveIndex, Snapshot};
pub(crate) use mih::advise_huge;
pub use mih::{DESIGN_DISTANCE, Hit, MihIndex, Strategy};

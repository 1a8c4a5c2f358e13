//! What Firebreak does *with* perceptual hashes: hash lists, banks, the exact match
//! index, matching, and live vPDQ windows over a stream.
//!
//! The hashes themselves come from `firebreak-hashing`; this crate adds the formats
//! platforms share lists in, the banks those lists become (with import hygiene,
//! negative banks and checksummed snapshots on disk), an index that answers "every
//! entry within distance d" exactly in well under a millisecond at ten million hashes,
//! and the per-stream window that turns frame matches into "this is N% of a known
//! video, live".
//!
//! - [`lists`]: hash-list formats (ThreatExchange, TCAP, CSV, vPDQ text), import and export.
//! - [`bank`]: a bank of entries, import hygiene, binary snapshots.
//! - [`store`]: the banks directory on disk (atomic, durable saves; corrupt files skipped).
//! - [`index`]: exact Hamming-range search over millions of hashes, updatable live.
//! - [`matcher`]: PDQ, video and digest matching against banks, with negative banks.
//! - [`mapfile`]: the matcher snapshot's file format (loaded in place, checked first).
//! - [`window`]: live vPDQ match percentages over a stream's rolling window.

pub mod bank;
pub mod index;
pub mod lists;
pub mod mapfile;
pub mod matcher;
pub mod store;
pub mod window;

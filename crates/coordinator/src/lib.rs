//! The crisis coordinator's logic: what turns escalations and per-frame signals from a
//! fleet of workers into incidents that span streams, and what a responder's
//! confirmation publishes back to every worker.
//!
//! Pure, like `firebreak-policy`: no I/O and no clock of its own. Every input carries its
//! wall time, so a coordinator rebuilt from the topics reaches the same state, and a
//! standby that replays them makes the same decisions (with the same deterministic ids)
//! as the active one did.
//!
//! - [`links`]: content links between live streams from their recent frame hashes
//!   ("the same unknown content is live on 7 streams").
//! - [`incidents`]: incidents across streams and workers, joined by stream, bank entry
//!   or content link, and the responder's actions on them.
//! - [`confirm`]: the guards that choose which frame hashes a confirmation publishes as
//!   bank entries.

#![forbid(unsafe_code)]

use std::fmt;

use firebreak_hashing::Hash256;
use serde::{Deserialize, Serialize};

pub mod confirm;
pub mod incidents;
pub mod links;

/// A stream, as the fleet names it: its owner tenant and its id. Two tenants may use the
/// same id for different streams.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StreamKey {
    /// The tenant that owns the stream.
    pub tenant: String,
    /// The stream's id within its tenant.
    pub stream: String,
}

impl StreamKey {
    /// A key.
    pub fn new(tenant: impl Into<String>, stream: impl Into<String>) -> StreamKey {
        StreamKey {
            tenant: tenant.into(),
            stream: stream.into(),
        }
    }
}

impl fmt::Display for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.stream)
    }
}

/// One sampled frame of a live stream, as a worker published it.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameSignal {
    /// The stream.
    pub stream: StreamKey,
    /// Wall time of the frame's analysis, ms since the Unix epoch.
    pub wall_ms: u64,
    /// The frame's media time, ms from the stream's start.
    pub media_ms: u64,
    /// Its PDQ hash.
    pub hash: Hash256,
    /// Its PDQ quality (0-100).
    pub quality: u8,
}

/// Serialises a hash as its 64-digit hex text.
pub(crate) fn hash_hex<S: serde::Serializer>(h: &Hash256, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&h.to_hex())
}

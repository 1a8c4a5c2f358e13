//! Test support shared by Firebreak's test suites (never a dependency of a production
//! crate): real parts, started and stopped for a test.
//!
//! - [`tansu`]: a local Kafka-protocol broker (tansu, installed by `scripts/tansu.sh`).
//! - [`kafka`]: reading a topic back.
//! - [`net`]: free loopback ports.
//! - [`media`]: encoding test clips with the ffmpeg CLI.
//! - [`daemon`]: `firebreak run` as a subprocess with a test config, and HTTP calls to it.

#![forbid(unsafe_code)]

pub mod daemon;
pub mod kafka;
pub mod media;
pub mod net;
pub mod tansu;

use std::path::{Path, PathBuf};

/// The repository's root (scripts, schemas and models are found from it).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Lower-case hex of the SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

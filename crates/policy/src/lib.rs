//! Firebreak's domain logic: the escalation policy and its configuration, and the
//! escalation events it produces.
//!
//! This crate is pure: no I/O and no clock of its own. Every input carries its media
//! time and wall time, so a policy can be replayed and tested exactly; the daemon feeds
//! it from detectors, and `firebreak-delivery` delivers what it decides.
//!
//! - [`config`]: the policy TOML (tiers, rules, activation types), validated as a whole.
//! - [`policy`]: per-stream state (windows, smoothing, hysteresis, cooldown) and
//!   decisions with their evidence.
//! - [`event`]: decisions as CloudEvents 1.0 JSON.

#![forbid(unsafe_code)]

pub mod config;
pub mod event;
pub mod policy;

pub use config::{Issue, PolicyConfig, PolicyError};
pub use policy::{
    Decision, DecisionKind, Evidence, FrameSignals, Policy, StreamEvent, StreamState,
};

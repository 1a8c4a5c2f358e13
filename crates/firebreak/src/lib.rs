//! The `firebreak` binary's library: the command line and the monitoring daemon
//! (`firebreak run`), usable in-process by tests ([`daemon::Daemon::build`]).
//!
//! This crate owns the wiring: argument parsing, the daemon's config, the detection
//! engine that joins ingest, matching, classifiers, policy and delivery, the HTTP API
//! with its auth, the dashboard and the metrics. Hashing is `firebreak-hashing`;
//! lists, banks and matching are `firebreak-matching`; decoding is `firebreak-media`;
//! models are `firebreak-classify`; the policy is `firebreak-policy`; delivery is
//! `firebreak-delivery`.
//!
//! - [`cli`]: the subcommands (hashing, lists and matching, classify, run, config check).
//! - [`config`]: the daemon's TOML config, every issue reported with its path.
//! - [`daemon`]: building the daemon from a config and serving it.
//! - [`engine`]: detection, policy, incidents and the audit log.
//! - [`evidence`]: evidence thumbnails, their retention and preservation.
//! - [`http`]: the push hook, the API, the dashboard, auth.
//! - [`metrics`]: the Prometheus registry.
//! - [`clock`]: wall time, injectable.
//! - [`signals`]: signal recording, labels, replay, sweeps and reports.

#![forbid(unsafe_code)]

pub mod cli;
pub mod clock;
pub mod config;
pub mod coordinator;
pub mod daemon;
pub mod engine;
pub mod evidence;
pub mod fleet;
pub mod http;
pub mod metrics;
pub mod signals;

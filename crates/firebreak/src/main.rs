//! The `firebreak` binary: the command line and the monitoring daemon (`firebreak run`).
//!
//! This crate owns the wiring: argument parsing, the daemon's config, the detection
//! engine that joins ingest, matching, classifiers, policy and delivery, the HTTP API
//! with its auth, the dashboard and the metrics. Hashing and matching are
//! `firebreak-pdq`; decoding is `firebreak-media`; models are `firebreak-classify`;
//! the policy is `firebreak-core`; delivery is `firebreak-kafka`.

mod api;
mod auth;
mod banks;
mod cli;
mod config;
mod daemon;
mod engine;
mod ingest_http;
mod metrics;

use std::process::ExitCode;

fn main() -> ExitCode {
    // `firebreak run` sets up logging from its config file (text or JSON).
    if std::env::args().nth(1).as_deref() == Some("run") {
        return cli::main();
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FIREBREAK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    cli::main()
}

//! The `firebreak` binary: the command line today, the monitoring daemon as it lands.
//!
//! This crate owns user-facing wiring only: argument parsing, output formats, exit
//! codes and progress display. Hashing is `firebreak-pdq`; decoding is `firebreak-media`.

mod banks;
mod cli;
mod ingest_http;

use std::process::ExitCode;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FIREBREAK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    cli::main()
}

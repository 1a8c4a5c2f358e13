//! The `firebreak` command; see the library crate for what it holds.

#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    // `firebreak run` sets up logging from its config file (text or JSON).
    if std::env::args().nth(1).as_deref() == Some("run") {
        return firebreak::cli::main();
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FIREBREAK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    firebreak::cli::main()
}

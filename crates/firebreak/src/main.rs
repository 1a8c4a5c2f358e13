//! The `firebreak` command; see the library crate for what it holds.

// Two unsafe calls, `limit_malloc_arenas` (glibc's mallopt) and `trim_heap`
// (glibc's malloc_trim).
#![deny(unsafe_code)]

use std::process::ExitCode;

/// Caps glibc's malloc arenas at two per core, before any thread starts. Every decode
/// thread otherwise gets an arena of its own whose freed frame buffers the next thread
/// rarely reuses, and RSS climbs with every stream that comes and goes. Measured on 2
/// cores with 8 pushed 720p streams per round, ended and replaced by new ids: RSS after
/// rounds 3 to 9 went 525 -> 665 MiB with glibc's default arenas, 423 -> 493 MiB with
/// this cap (4). An explicit `MALLOC_ARENA_MAX` in the environment wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let arenas = libc::c_int::try_from(2 * cores).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt only sets an allocator parameter; it is called first thing in
    // main, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

/// Returns the free pages inside glibc's arenas to the system (`malloc_trim`); the
/// daemon calls it after streams end. Measured with `scripts/soak.py` (19 real-time
/// 720p30 streams replaced as they end): see the README's memory figures.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim_heap() {
    // SAFETY: malloc_trim only gives free memory back; any thread may call it.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    let _ = firebreak::daemon::HEAP_TRIM.set(trim_heap);
    // `firebreak run` and `firebreak coordinator` set up logging from their config
    // file (text or JSON).
    if matches!(
        std::env::args().nth(1).as_deref(),
        Some("run" | "coordinator")
    ) {
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

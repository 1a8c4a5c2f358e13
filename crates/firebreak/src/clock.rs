//! Wall time, injected: the engine and the daemon read the time only through a
//! [`Clock`], so tests drive incidents, acknowledgements, stalls and cool-downs on a
//! [`ManualClock`] without sleeping, and the daemon's own timers on a [`TokioClock`]
//! under a paused runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A source of wall time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug, Default)]
pub struct ManualClock {
    ms: AtomicU64,
}

impl ManualClock {
    /// A clock showing `ms`.
    pub fn at(ms: u64) -> Arc<ManualClock> {
        Arc::new(ManualClock {
            ms: AtomicU64::new(ms),
        })
    }

    /// Moves the clock forward by `ms` and returns the new time.
    pub fn advance(&self, ms: u64) -> u64 {
        self.ms.fetch_add(ms, Ordering::SeqCst) + ms
    }

    /// Sets the time.
    pub fn set(&self, ms: u64) {
        self.ms.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.ms.load(Ordering::SeqCst)
    }
}

/// Wall time that follows tokio's clock from a starting point: under a paused test
/// runtime (`#[tokio::test(start_paused = true)]`) it moves only as the runtime's
/// timers advance, so the daemon's own once-a-second loop can be tested without
/// waiting.
#[derive(Debug)]
pub struct TokioClock {
    base_ms: u64,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock showing `ms` now (call it inside the runtime whose time it follows).
    pub fn starting_at(ms: u64) -> Arc<TokioClock> {
        Arc::new(TokioClock {
            base_ms: ms,
            start: tokio::time::Instant::now(),
        })
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> u64 {
        self.base_ms + self.start.elapsed().as_millis() as u64
    }
}

/// The clock the daemon uses unless a test injects another.
pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

//! Signal recording and replay: operators tune thresholds with evidence.
//!
//! ```text
//! engine (per sampled frame, stall, end, tick) ─▶ SignalSink ─┬▶ SignalLog (local segments)
//!                                                             └▶ firebreak.signals (fleet)
//! signal log + labels ─▶ replay (policies, sweep grid) ─▶ eval ─▶ text table, HTML report
//! ```
//!
//! - [`record`]: the versioned record and its block encoding (shared with fleet mode).
//! - [`log`]: the local, rotated, size-bounded log; reading it back.
//! - [`labels`]: operators' crisis / benign ranges (CSV import, API).
//! - [`replay`]: policies driven by recorded signals, in parallel over streams.
//! - [`eval`]: escalations against labels: precision, recall, time to detect.
//! - [`sweep`]: parameter grids and a recommendation for a target precision.
//! - [`report`]: the self-contained HTML report.
//! - [`synth`]: synthetic labelled logs (tests, speed measurements).

pub mod eval;
pub mod fleet;
pub mod labels;
pub mod log;
pub mod record;
pub mod replay;
pub mod report;
pub mod sweep;
pub mod synth;

pub use record::SignalRecord;

/// Where the engine sends each record: called on the stream's consumer thread for
/// frames and events (under the stream's detection lock, so a stream's records are in
/// its order) and on the tick's blocking task for ticks. It must not block on I/O:
/// queue and write elsewhere. The local log is [`log::SignalLog`]; fleet mode
/// publishes to `firebreak.signals`.
pub trait SignalSink: Send + Sync + std::fmt::Debug {
    /// Takes one record.
    fn record(&self, record: SignalRecord);

    /// Writes what is queued (blocking; at shutdown, and in tests).
    fn flush(&self) {}
}

/// Several sinks, each given every record (fleet mode with the local log on too).
#[derive(Debug)]
pub struct Tee(pub Vec<std::sync::Arc<dyn SignalSink>>);

impl SignalSink for Tee {
    fn record(&self, record: SignalRecord) {
        if let Some((last, rest)) = self.0.split_last() {
            for s in rest {
                s.record(record.clone());
            }
            last.record(record);
        }
    }

    fn flush(&self) {
        for s in &self.0 {
            s.flush();
        }
    }
}

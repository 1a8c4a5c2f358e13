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
//! - [`shadow`]: shadow policies evaluated live, their decisions kept apart.
//! - [`dryrun`]: a proposed policy against the active one over recent signals.

pub mod dryrun;
pub mod eval;
pub mod fleet;
pub mod labels;
pub mod log;
pub mod record;
pub mod replay;
pub mod report;
pub mod shadow;
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

/// Attaches the configured sinks to `engine`: the local log (if enabled), the shadow
/// policies (each file loaded and validated; an error names it) and, in fleet mode,
/// `fleet` (the `firebreak.signals` producer).
pub fn attach(
    engine: &std::sync::Arc<crate::engine::Engine>,
    config: &log::SignalLogConfig,
    data_dir: &std::path::Path,
    fleet: Option<std::sync::Arc<dyn SignalSink>>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::sync::Arc;
    let dir = config
        .dir
        .clone()
        .unwrap_or_else(|| data_dir.join("signals"));
    let mut sinks: Vec<Arc<dyn SignalSink>> = Vec::new();
    if config.enabled {
        let dropped = engine
            .metrics()
            .signal_drops(crate::metrics::SignalSinkKind::Log);
        let log = log::SignalLog::open(&dir, config, dropped)
            .with_context(|| format!("opening the signal log in {}", dir.display()))?;
        sinks.push(log);
        engine.set_signal_dir(dir.clone());
    }
    if !config.shadow.is_empty() {
        let mut policies = Vec::new();
        for (i, path) in config.shadow.iter().enumerate() {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("signals.shadow[{i}]: {}", path.display()))?;
            let policy = firebreak_policy::PolicyConfig::from_toml(&text)
                .map_err(|e| anyhow::anyhow!("signals.shadow[{i}]: {}: {e}", path.display()))?;
            policies.push(Arc::new(firebreak_policy::Policy::new(policy)));
        }
        let weak = Arc::downgrade(engine);
        let dropped = engine
            .metrics()
            .signal_drops(crate::metrics::SignalSinkKind::Shadow);
        let shadow = shadow::ShadowSink::new(policies, &dir, dropped, move |v| {
            if let Some(e) = weak.upgrade() {
                e.publish("shadow", v);
            }
        })?;
        sinks.push(Arc::new(shadow));
    }
    sinks.extend(fleet);
    match sinks.len() {
        0 => {}
        1 => {
            engine.set_signal_sink(sinks.pop().expect("one sink"));
        }
        _ => {
            engine.set_signal_sink(Arc::new(Tee(sinks)));
        }
    }
    Ok(())
}

//! Shadow policies: extra policies evaluated live on the same signals as the active
//! one, as a [`SignalSink`] (it sees exactly what the signal log records, in the same
//! order). Their decisions never reach the outbox or the escalation sink: they are
//! appended to `shadow.jsonl` in the signal log's directory (by the sink's own thread,
//! no fsync per decision) and published on the live feed as `shadow` events ("would
//! have escalated"), tenant-filtered like the rest. A decision the writer's queue
//! cannot hold (the disk stalls) is not written but is still published, and counted in
//! `firebreak_signal_records_dropped_total{sink="shadow"}`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use firebreak_policy::policy::{Decision, Policy, StreamEvent, StreamState};
use serde::Serialize;
use serde_json::Value;

use super::SignalSink;
use super::record::{EventKind, SignalRecord};
use crate::metrics::{SignalSinkKind, count_signal_drop};

/// The shadow decisions' file in the signal log's directory.
pub const SHADOW_FILE: &str = "shadow.jsonl";

/// Decisions waiting for the writer at most.
const QUEUE: usize = 4096;

/// A shadow decision, as written to `shadow.jsonl` and sent on the live feed.
#[derive(Debug, Clone, Serialize)]
pub struct ShadowDecision {
    /// The tenant the stream belongs to.
    pub tenant: String,
    /// Always true: this decision was not acted on.
    pub shadow: bool,
    /// The decision the shadow policy made.
    pub decision: Decision,
}

struct Stream {
    tenant: String,
    ended: bool,
    states: Vec<StreamState>,
}

type Publish = Box<dyn Fn(Value) + Send + Sync>;

enum Line {
    Text(String),
    Flush(SyncSender<()>),
}

/// See the module doc.
pub struct ShadowSink {
    policies: Vec<Arc<Policy>>,
    streams: Mutex<HashMap<String, Stream>>,
    writer: Mutex<Option<SyncSender<Line>>>,
    publish: Publish,
    path: PathBuf,
    /// Decisions the writer's queue could not hold.
    dropped: prometheus::IntCounter,
}

impl std::fmt::Debug for ShadowSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShadowSink")
            .field("policies", &self.policies.len())
            .finish_non_exhaustive()
    }
}

impl ShadowSink {
    /// Shadow `policies`, their decisions appended to `dir/shadow.jsonl` and handed to
    /// `publish` (the live feed); those the writer's queue cannot hold are counted in
    /// `dropped`.
    pub fn new(
        policies: Vec<Arc<Policy>>,
        dir: &Path,
        dropped: prometheus::IntCounter,
        publish: impl Fn(Value) + Send + Sync + 'static,
    ) -> std::io::Result<ShadowSink> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(SHADOW_FILE);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let (tx, rx) = sync_channel::<Line>(QUEUE);
        std::thread::Builder::new()
            .name("shadow-log".into())
            .spawn(move || {
                for line in rx {
                    match line {
                        Line::Text(t) => {
                            if let Err(e) = file.write_all(t.as_bytes()) {
                                tracing::error!(error = %e, "shadow decision not written");
                            }
                        }
                        Line::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })?;
        Ok(ShadowSink {
            policies,
            streams: Mutex::new(HashMap::new()),
            writer: Mutex::new(Some(tx)),
            publish: Box::new(publish),
            path,
            dropped,
        })
    }

    /// The shadow decisions' file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn fresh(&self, id: &str, tenant: &str) -> Stream {
        Stream {
            tenant: tenant.to_owned(),
            ended: false,
            states: self
                .policies
                .iter()
                .map(|p| StreamState::new(id, p))
                .collect(),
        }
    }

    fn emit(&self, tenant: &str, decisions: Vec<Decision>) {
        for d in decisions {
            let s = ShadowDecision {
                tenant: tenant.to_owned(),
                shadow: true,
                decision: d,
            };
            let value = serde_json::to_value(&s).expect("a decision is JSON");
            let mut line = value.to_string();
            line.push('\n');
            if let Some(tx) = self
                .writer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                && let Err(TrySendError::Full(_)) = tx.try_send(Line::Text(line))
            {
                count_signal_drop(&self.dropped, SignalSinkKind::Shadow, 1000);
            }
            (self.publish)(value);
        }
    }
}

impl SignalSink for ShadowSink {
    fn flush(&self) {
        let tx = self
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(tx) = tx {
            let (done, wait) = sync_channel(1);
            if tx.send(Line::Flush(done)).is_ok() {
                let _ = wait.recv();
            }
        }
    }

    fn record(&self, record: SignalRecord) {
        let mut out: Vec<(String, Vec<Decision>)> = Vec::new();
        {
            let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
            match &record {
                SignalRecord::Tick { wall_ms } => {
                    // Ended streams whose shadow incidents are closed are forgotten:
                    // memory follows the live streams.
                    streams.retain(|_, s| !(s.ended && s.states.iter().all(|st| st.is_idle())));
                    for s in streams.values_mut() {
                        for (i, state) in s.states.iter_mut().enumerate() {
                            if !state.is_idle() {
                                out.push((
                                    s.tenant.clone(),
                                    state.tick(&self.policies[i], *wall_ms),
                                ));
                            }
                        }
                    }
                }
                SignalRecord::Event(e) => {
                    let s = streams
                        .entry(e.stream.clone())
                        .or_insert_with(|| self.fresh(&e.stream, &e.tenant));
                    if s.tenant != e.tenant {
                        *s = self.fresh(&e.stream, &e.tenant);
                    }
                    let event = match e.kind {
                        EventKind::Stalled => StreamEvent::Stalled,
                        EventKind::Ended => {
                            s.ended = true;
                            StreamEvent::Ended
                        }
                    };
                    for (i, state) in s.states.iter_mut().enumerate() {
                        out.push((
                            s.tenant.clone(),
                            state.on_event(&self.policies[i], event, e.wall_ms),
                        ));
                    }
                }
                SignalRecord::Frame(f) => {
                    let s = streams
                        .entry(f.stream.clone())
                        .or_insert_with(|| self.fresh(&f.stream, &f.tenant));
                    if s.ended || s.tenant != f.tenant {
                        *s = self.fresh(&f.stream, &f.tenant);
                    }
                    for (i, state) in s.states.iter_mut().enumerate() {
                        out.push((
                            s.tenant.clone(),
                            state.on_frame(&self.policies[i], &f.signals),
                        ));
                    }
                }
            }
        }
        for (tenant, decisions) in out {
            self.emit(&tenant, decisions);
        }
    }
}

impl Drop for ShadowSink {
    fn drop(&mut self) {
        self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firebreak_policy::policy::DecisionKind;

    fn decision(i: u64) -> Decision {
        Decision {
            id: format!("d{i}"),
            stream_id: "s".into(),
            incident_id: "i".into(),
            sequence: i,
            kind: DecisionKind::Updated,
            tier: "review".into(),
            previous_tier: "review".into(),
            activation: None,
            media_start: 0.0,
            media_end: i as f64,
            wall_ms: i,
            rules: Vec::new(),
            evidence: Vec::new(),
            policy_version: "p".into(),
        }
    }

    /// With the writer stalled (as on a stuck disk), decisions beyond its queue are not
    /// written but counted, and every one is still published: once the writer resumes,
    /// the lines written plus the drops counted equal the decisions made.
    #[test]
    fn decisions_a_stalled_writer_cannot_take_are_counted_and_still_published() {
        let dir = tempfile::tempdir().unwrap();
        let dropped = prometheus::IntCounter::new("dropped", "dropped").unwrap();
        let published = Arc::new(Mutex::new(0usize));
        let p = published.clone();
        let sink = ShadowSink::new(Vec::new(), dir.path(), dropped.clone(), move |_| {
            *p.lock().unwrap() += 1;
        })
        .unwrap();
        // Stall the writer: it blocks handing this flush's answer over until it is read.
        let (hold, release) = sync_channel(0);
        let tx = sink.writer.lock().unwrap().clone().unwrap();
        tx.send(Line::Flush(hold)).unwrap();

        let made = QUEUE as u64 + 100;
        sink.emit("t", (0..made).map(decision).collect());
        assert_eq!(*published.lock().unwrap(), made as usize);
        // The queue holds QUEUE lines, one fewer if the writer had not yet taken the
        // flush that stalls it.
        assert!((100..=101).contains(&dropped.get()), "{}", dropped.get());

        release.recv().unwrap();
        sink.flush();
        let written = std::fs::read_to_string(sink.path())
            .unwrap()
            .lines()
            .count() as u64;
        assert_eq!(written + dropped.get(), made);
    }
}

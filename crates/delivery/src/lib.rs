//! Escalation delivery: every event goes into a durable [`outbox`] first, then a
//! [`Replayer`] delivers the outbox in order to a [`Sink`]: Kafka (through rdkafka) or,
//! in the embedded default with no Kafka configured, a local JSONL event log.
//!
//! This crate owns librdkafka (the bundled build) and nothing else does. Why an outbox:
//! a crisis-response coordinator must receive every escalation even if Kafka was down
//! when it was decided, or the worker crashed right after; the outbox makes "accepted"
//! mean "on disk", and the replayer turns that into "acknowledged by the broker".
//!
//! Delivery is at-least-once: after a crash or a retry an event can arrive twice, with
//! the same CloudEvents id, and consumers drop it by id. Errors are classified:
//! retryable ones (broker down, timeouts, queue full) are retried with capped
//! exponential backoff, forever, while the outbox holds the events; fatal ones (message
//! too large, an invalid record) are never retried: the event is written to
//! `dead-letter.jsonl` beside the outbox with its error and synced, counted, and logged
//! as an error, and only then acknowledged; delivery continues with the next event.
//! Errors that no event can get past (authentication or authorisation refused, a fatal
//! producer state, a missing topic, the event log's disk full or read-only) **pause**
//! delivery instead: nothing is dead-lettered, an alarm is raised
//! (`firebreak_delivery_paused` is 1, [`Pipeline::status`] says why, an `ALARM` log
//! line), the first waiting event is tried again as a probe (every 10 s at most, or at
//! once after [`Pipeline::resume`], which the daemon calls on SIGHUP after reloading
//! credentials), and delivery resumes, in order, as soon as a probe succeeds.

#![forbid(unsafe_code)]

pub mod compacted;
pub mod fleet;
pub mod kafka;
pub mod outbox;
pub mod telemetry;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use tokio::sync::Notify;

pub use kafka::{KafkaConfig, KafkaSink};
pub use outbox::{FileSync, Outbox, OutboxConfig, OutboxError, Record, Recovery, Syncer};

/// How a delivery attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryError {
    /// Worth retrying later (broker unavailable, timeout, full local queue).
    Retryable(String),
    /// This event will never succeed (too large, an invalid record): dead-letter it.
    Fatal(String),
    /// No event can be delivered until an operator acts (credentials or authorisation
    /// refused, a fatal producer state, a missing topic, the event log's disk full or
    /// read-only): pause delivery with an alarm and probe, dead-lettering nothing.
    Paused(String),
}

/// Where events go.
pub trait Sink: Send + Sync {
    /// Delivers records in order, returning one result per record, in order. A sink
    /// may stop early: missing results count as not attempted.
    fn deliver(
        &self,
        records: &[Record],
    ) -> impl std::future::Future<Output = Vec<Result<(), DeliveryError>>> + Send;
}

/// The embedded default sink: one JSON event per line, appended and synced on a
/// blocking thread (never on the async runtime).
///
/// After a failed write the file is opened again for the next attempt, so an event log
/// replaced by the operator (a full disk cleared, a read-only mount fixed) is picked up.
#[derive(Debug)]
pub struct JsonlSink {
    path: PathBuf,
    /// The open log; `None` after a failure (reopened by the next attempt).
    file: Arc<Mutex<Option<std::fs::File>>>,
}

/// Errors of the event log an operator must fix: delivery pauses on them.
fn needs_operator(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        e.kind(),
        ErrorKind::PermissionDenied
            | ErrorKind::StorageFull
            | ErrorKind::ReadOnlyFilesystem
            | ErrorKind::QuotaExceeded
            | ErrorKind::IsADirectory
    )
}

impl JsonlSink {
    /// Opens (appending to) the event log.
    pub fn open(path: &Path) -> std::io::Result<JsonlSink> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(JsonlSink {
            path: path.to_owned(),
            file: Arc::new(Mutex::new(Some(file))),
        })
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Sink for JsonlSink {
    async fn deliver(&self, records: &[Record]) -> Vec<Result<(), DeliveryError>> {
        let mut buf = Vec::new();
        for r in records {
            buf.extend_from_slice(&r.payload);
            buf.push(b'\n');
        }
        let (file, path) = (self.file.clone(), self.path.clone());
        let written = tokio::task::spawn_blocking(move || {
            let mut slot = file.lock().unwrap_or_else(|e| e.into_inner());
            let file = match slot.as_mut() {
                Some(f) => f,
                None => slot.insert(OpenOptions::new().create(true).append(true).open(&path)?),
            };
            let result = file.write_all(&buf).and_then(|()| file.sync_data());
            if result.is_err() {
                // Whatever part of the batch reached the file may be written again (at
                // least once); the file is opened afresh next time.
                *slot = None;
            }
            result
        })
        .await;
        let error = match written {
            Ok(Ok(())) => return records.iter().map(|_| Ok(())).collect(),
            Ok(Err(e)) if needs_operator(&e) => {
                return vec![Err(DeliveryError::Paused(format!(
                    "{}: {e}",
                    self.path.display()
                )))];
            }
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        vec![Err(DeliveryError::Retryable(format!(
            "{}: {error}",
            self.path.display()
        )))]
    }
}

/// Delivery metrics, registered by whoever owns the registry.
#[derive(Debug, Clone)]
pub struct DeliveryMetrics {
    /// Seconds from acceptance into the outbox to the sink's acknowledgement.
    pub decision_to_ack: Histogram,
    /// Seconds from the arrival of the media an event is about (a pushed or polled
    /// segment) to the sink's acknowledgement, for events that carry an origin.
    pub end_to_end: Histogram,
    /// Events delivered.
    pub delivered: IntCounter,
    /// Events given up on (fatal errors), by dead-lettering.
    pub dead_lettered: IntCounter,
    /// Delivery errors by kind (`retryable`, `fatal`).
    pub errors: IntCounterVec,
    /// Events accepted but not yet delivered.
    pub outbox_depth: IntGauge,
    /// Appends refused because the outbox was full.
    pub outbox_full: IntCounter,
    /// 1 while delivery is paused (an error no event can get past), else 0.
    pub paused: IntGauge,
    /// Appends that failed on a disk error (full disk, I/O error).
    pub outbox_write_errors: IntCounter,
    /// 1 while the outbox is above its high-water mark (new work is refused), else 0.
    pub outbox_pressure: IntGauge,
}

impl DeliveryMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<DeliveryMetrics> {
        let buckets = vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            60.0,
        ];
        let m = DeliveryMetrics {
            decision_to_ack: Histogram::with_opts(
                HistogramOpts::new(
                    "firebreak_delivery_decision_to_ack_seconds",
                    "Time from an escalation entering the outbox to its acknowledgement by the sink.",
                )
                .buckets(buckets.clone()),
            )?,
            end_to_end: Histogram::with_opts(
                HistogramOpts::new(
                    "firebreak_end_to_end_seconds",
                    "Seconds from a segment's acceptance (by this or, in fleet mode, another worker's hook) to the sink's acknowledgement of the escalation it led to.",
                )
                .buckets(buckets),
            )?,
            delivered: IntCounter::new("firebreak_delivery_delivered_total", "Escalation events delivered.")?,
            dead_lettered: IntCounter::new(
                "firebreak_delivery_dead_lettered_total",
                "Escalation events that failed fatally and were written to the dead-letter file.",
            )?,
            errors: IntCounterVec::new(
                Opts::new("firebreak_delivery_errors_total", "Delivery errors by kind."),
                &["kind"],
            )?,
            outbox_depth: IntGauge::new("firebreak_outbox_depth", "Escalation events accepted and not yet delivered.")?,
            outbox_full: IntCounter::new(
                "firebreak_outbox_full_total",
                "Escalation events refused because the outbox reached its size limit.",
            )?,
            paused: IntGauge::new(
                "firebreak_delivery_paused",
                "1 while delivery is paused by an error no event can get past (authentication, authorisation, a fatal producer state, the event log's disk).",
            )?,
            outbox_write_errors: IntCounter::new(
                "firebreak_outbox_write_errors_total",
                "Escalation events whose outbox write failed on a disk error (retried until written).",
            )?,
            outbox_pressure: IntGauge::new(
                "firebreak_outbox_pressure",
                "1 while the outbox is above its high-water mark (pushed segments are refused with 503), else 0.",
            )?,
        };
        registry.register(Box::new(m.decision_to_ack.clone()))?;
        registry.register(Box::new(m.end_to_end.clone()))?;
        registry.register(Box::new(m.delivered.clone()))?;
        registry.register(Box::new(m.dead_lettered.clone()))?;
        registry.register(Box::new(m.errors.clone()))?;
        registry.register(Box::new(m.outbox_depth.clone()))?;
        registry.register(Box::new(m.outbox_full.clone()))?;
        registry.register(Box::new(m.paused.clone()))?;
        registry.register(Box::new(m.outbox_write_errors.clone()))?;
        registry.register(Box::new(m.outbox_pressure.clone()))?;
        Ok(m)
    }
}

/// The outbox shared between the writers (accepting events) and the replayer.
#[derive(Debug, Clone)]
pub struct Pipeline {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// Shared by reference: writers queue inside it, readers never wait for them.
    outbox: Outbox,
    /// Held while reading the outbox's depth into the gauge, so the last setter
    /// leaves the latest depth.
    depth_gauge: Mutex<()>,
    /// Acceptance times of events accepted by this process, by sequence number.
    /// With the origin (media arrival, ms since the Unix epoch) when known.
    accepted_at: Mutex<std::collections::BTreeMap<u64, (Instant, Option<u64>)>>,
    wake: Notify,
    metrics: DeliveryMetrics,
    /// Every decision-to-ack latency (seconds), when a load test asked for them.
    latency_log: Mutex<Option<Vec<f64>>>,
    dead_letter: PathBuf,
    /// The alarms raised by delivery and by outbox writes.
    alarms: Mutex<Alarms>,
    /// Wakes a paused replayer for an immediate probe.
    resume: Notify,
    /// Notified after every ack: writers waiting for room try again.
    room: std::sync::Condvar,
    room_lock: Mutex<()>,
}

#[derive(Debug, Default)]
struct Alarms {
    paused: Option<String>,
    write_error: Option<String>,
}

/// What is wrong with delivery, if anything ([`Pipeline::status`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryStatus {
    /// Why delivery is paused (an error no event can get past), while it is.
    pub paused: Option<String>,
    /// The last outbox write's disk error, until a write succeeds again.
    pub write_error: Option<String>,
    /// Why the outbox refuses new work (above its high-water mark), while it does.
    pub pressure: Option<String>,
}

impl Pipeline {
    /// Wraps an opened outbox. Dead letters go to `dead-letter.jsonl` in `dir`.
    pub fn new(outbox: Outbox, dir: &Path, metrics: DeliveryMetrics) -> Pipeline {
        metrics.outbox_depth.set(outbox.depth() as i64);
        Pipeline {
            inner: Arc::new(Shared {
                outbox,
                depth_gauge: Mutex::new(()),
                accepted_at: Mutex::new(Default::default()),
                wake: Notify::new(),
                metrics,
                latency_log: Mutex::new(None),
                dead_letter: dir.join("dead-letter.jsonl"),
                alarms: Mutex::new(Alarms::default()),
                resume: Notify::new(),
                room: std::sync::Condvar::new(),
                room_lock: Mutex::new(()),
            }),
        }
    }

    fn alarms(&self) -> std::sync::MutexGuard<'_, Alarms> {
        self.inner.alarms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Delivery's alarms: paused, the outbox's disk, the outbox's pressure. Never waits
    /// for a write.
    pub fn status(&self) -> DeliveryStatus {
        let alarms = self.alarms();
        DeliveryStatus {
            paused: alarms.paused.clone(),
            write_error: alarms.write_error.clone(),
            pressure: self.inner.outbox.pressure(),
        }
    }

    /// Wakes a paused replayer so it probes the sink at once (after the operator fixed
    /// credentials, on SIGHUP).
    pub fn resume(&self) {
        self.inner.resume.notify_one();
    }

    /// [`Pipeline::accept_from`] that never gives up on a full outbox or a disk error:
    /// it waits for room (an ack) or retries the write once a second until the event
    /// is on disk, so no decision is dropped. Only a corrupt outbox is returned as an
    /// error. Blocking: call it from a blocking thread.
    pub fn accept_retrying(
        &self,
        key: &str,
        payload: &[u8],
        origin_ms: Option<u64>,
    ) -> Result<u64, OutboxError> {
        let mut attempts = 0u64;
        loop {
            match self.accept_from(key, payload, origin_ms) {
                Ok(seq) => {
                    if attempts > 0 {
                        tracing::warn!(
                            attempts,
                            key,
                            "escalation written to the outbox after waiting"
                        );
                    }
                    return Ok(seq);
                }
                Err(e @ OutboxError::Corrupt { .. }) => return Err(e),
                Err(_) => {
                    attempts += 1;
                    let guard = self
                        .inner
                        .room_lock
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    let _ = self
                        .inner
                        .room
                        .wait_timeout(guard, Duration::from_secs(1))
                        .unwrap_or_else(|e| e.into_inner());
                }
            }
        }
    }

    /// Accepts an event: it is on disk when this returns. Blocking (an fsync): call it
    /// from a blocking thread, or through `spawn_blocking` in async code. Nothing else
    /// of the pipeline (its depth, the replayer) waits for that fsync.
    pub fn accept(&self, key: &str, payload: &[u8]) -> Result<u64, OutboxError> {
        self.accept_from(key, payload, None)
    }

    /// [`Pipeline::accept`] for an event about media that arrived at `origin_ms` (ms
    /// since the Unix epoch): its acknowledgement also records the end-to-end latency.
    pub fn accept_from(
        &self,
        key: &str,
        payload: &[u8],
        origin_ms: Option<u64>,
    ) -> Result<u64, OutboxError> {
        // The acceptance time is recorded before the replayer can see the event, so
        // it cannot acknowledge the event before its acceptance time is known.
        let appended = self.inner.outbox.append_then(key, payload, |seq| {
            self.inner
                .accepted_at
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(seq, (Instant::now(), origin_ms));
        });
        let seq = match appended {
            Ok(seq) => seq,
            Err(e) => {
                match &e {
                    OutboxError::Full { .. } => {
                        self.inner.metrics.outbox_full.inc();
                        tracing::error!(error = %e, "ALARM: escalation outbox full; event refused");
                    }
                    OutboxError::Io { .. } => {
                        self.inner.metrics.outbox_write_errors.inc();
                        tracing::error!(error = %e, "ALARM: escalation outbox write failed (disk full?)");
                        self.alarms().write_error = Some(e.to_string());
                    }
                    OutboxError::Corrupt { .. } => {}
                }
                self.publish_depth();
                return Err(e);
            }
        };
        if self.alarms().write_error.take().is_some() {
            tracing::warn!("escalation outbox writable again");
        }
        self.publish_depth();
        self.inner.wake.notify_one();
        Ok(seq)
    }

    fn publish_depth(&self) {
        let _serial = self
            .inner
            .depth_gauge
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.inner
            .metrics
            .outbox_depth
            .set(self.inner.outbox.depth() as i64);
        self.inner
            .metrics
            .outbox_pressure
            .set(i64::from(self.inner.outbox.pressure().is_some()));
    }

    /// Starts keeping every decision-to-ack latency (for load tests; unbounded).
    pub fn log_latencies(&self) {
        *self
            .inner
            .latency_log
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Vec::new());
    }

    /// The latencies kept since [`Pipeline::log_latencies`], in seconds.
    pub fn latencies(&self) -> Vec<f64> {
        self.inner
            .latency_log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_default()
    }

    /// Events accepted and not yet delivered. Never waits for a write.
    pub fn depth(&self) -> usize {
        self.inner.outbox.depth()
    }

    /// The metrics.
    pub fn metrics(&self) -> &DeliveryMetrics {
        &self.inner.metrics
    }

    /// Delivers the outbox to `sink` in order until `shutdown` resolves, retrying
    /// retryable errors with capped exponential backoff (100 ms to 10 s). A
    /// [`DeliveryError::Paused`] pauses delivery (alarm, no dead letters) and probes
    /// with the same backoff, or at once after [`Pipeline::resume`].
    pub async fn run<S: Sink>(
        &self,
        sink: &S,
        batch: usize,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut backoff = Duration::from_millis(100);
        loop {
            let records = self.inner.outbox.pending(batch.max(1));
            if records.is_empty() {
                tokio::select! {
                    () = self.inner.wake.notified() => continue,
                    () = &mut shutdown => return,
                }
            }
            let results = tokio::select! {
                r = sink.deliver(&records) => r,
                () = &mut shutdown => return,
            };
            let mut done: Option<u64> = None;
            let mut retry = None;
            let mut paused = None;
            let mut dead = Vec::new();
            for (record, result) in records.iter().zip(&results) {
                match result {
                    Ok(()) => {
                        self.inner.metrics.delivered.inc();
                        done = Some(record.seq);
                        self.unpause();
                    }
                    Err(DeliveryError::Paused(why)) => {
                        self.inner
                            .metrics
                            .errors
                            .with_label_values(&["paused"])
                            .inc();
                        paused = Some(why.clone());
                        retry = Some(why.clone());
                        break;
                    }
                    Err(DeliveryError::Fatal(why)) => {
                        self.inner
                            .metrics
                            .errors
                            .with_label_values(&["fatal"])
                            .inc();
                        dead.push((record, why.as_str()));
                        done = Some(record.seq);
                        self.unpause();
                    }
                    Err(DeliveryError::Retryable(why)) => {
                        self.inner
                            .metrics
                            .errors
                            .with_label_values(&["retryable"])
                            .inc();
                        retry = Some(why.clone());
                        break;
                    }
                }
            }
            if retry.is_none() && results.len() < records.len() {
                retry = Some("sink stopped early".to_owned());
            }
            // Dead letters are on disk before their events are acknowledged: if they
            // cannot be written, only what precedes the first of them is acknowledged,
            // and the rest is tried again.
            if let Some((first, _)) = dead.first()
                && let Err(e) = self.dead_letter(&dead).await
            {
                done = Some(first.seq - 1).filter(|&s| s > 0);
                retry = Some(format!("dead-letter file: {e}"));
            }
            if let Some(seq) = done {
                self.ack(seq).await;
            }
            if let Some(why) = &paused {
                self.pause(why);
            }
            match retry {
                Some(why) => {
                    tracing::warn!(error = %why, backoff_ms = backoff.as_millis() as u64, paused = paused.is_some(), "delivery failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = self.inner.resume.notified(), if paused.is_some() => {
                            tracing::info!("delivery probe requested");
                        }
                        () = &mut shutdown => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
                None => backoff = Duration::from_millis(100),
            }
        }
    }

    fn pause(&self, why: &str) {
        let mut alarms = self.alarms();
        if alarms.paused.is_none() {
            tracing::error!(error = %why, "ALARM: delivery paused: the sink refuses every event until an operator acts (credentials, authorisation, topic, disk); nothing is dead-lettered, probing");
        }
        alarms.paused = Some(why.to_owned());
        self.inner.metrics.paused.set(1);
    }

    fn unpause(&self) {
        let mut alarms = self.alarms();
        if alarms.paused.take().is_some() {
            tracing::warn!("delivery resumed");
        }
        self.inner.metrics.paused.set(0);
    }

    async fn ack(&self, seq: u64) {
        let inner = self.inner.clone();
        let result = tokio::task::spawn_blocking(move || inner.outbox.ack(seq))
            .await
            .expect("ack task");
        self.publish_depth();
        {
            let _room = self
                .inner
                .room_lock
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            self.inner.room.notify_all();
        }
        if let Err(e) = result {
            // The events were delivered; failing to record it means they may be sent
            // again after a restart (dropped downstream by id), never lost.
            tracing::error!(error = %e, "could not persist the outbox ack");
        }
        let mut accepted = self
            .inner
            .accepted_at
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let rest = accepted.split_off(&(seq + 1));
        let mut log = self
            .inner
            .latency_log
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        for (_, (at, origin)) in std::mem::replace(&mut *accepted, rest) {
            if let Some(origin) = origin {
                let ms = now_ms.saturating_sub(origin);
                self.inner.metrics.end_to_end.observe(ms as f64 / 1000.0);
                tracing::info!(end_to_end_ms = ms, "escalation acknowledged by the sink");
            }
            let seconds = at.elapsed().as_secs_f64();
            self.inner.metrics.decision_to_ack.observe(seconds);
            if let Some(log) = log.as_mut() {
                log.push(seconds);
            }
        }
    }

    /// Writes fatally failed events to the dead-letter file, synced, on a blocking
    /// thread. Counted (and logged) as dead-lettered only once synced.
    async fn dead_letter(&self, dead: &[(&Record, &str)]) -> Result<(), String> {
        if dead.is_empty() {
            return Ok(());
        }
        let mut lines = String::new();
        for (record, why) in dead {
            let line = serde_json::json!({
                "seq": record.seq,
                "key": record.key,
                "error": why,
                "event": String::from_utf8_lossy(&record.payload),
            });
            lines.push_str(&format!("{line}\n"));
        }
        let path = self.inner.dead_letter.clone();
        let written = tokio::task::spawn_blocking(move || {
            let new = !path.exists();
            let mut f = OpenOptions::new().create(true).append(true).open(&path)?;
            f.write_all(lines.as_bytes())?;
            f.sync_data()?;
            if new {
                // The new file's directory entry, too.
                if let Some(dir) = path.parent() {
                    std::fs::File::open(dir)?.sync_all()?;
                }
            }
            Ok::<(), std::io::Error>(())
        })
        .await;
        let error = match written {
            Ok(Ok(())) => {
                for (record, why) in dead {
                    self.inner.metrics.dead_lettered.inc();
                    tracing::error!(seq = record.seq, key = %record.key, error = %why, "ALARM: escalation event failed fatally; dead-lettered");
                }
                return Ok(());
            }
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        tracing::error!(error, path = %self.inner.dead_letter.display(), "ALARM: could not write the dead-letter file; the events stay in the outbox");
        Err(error)
    }
}

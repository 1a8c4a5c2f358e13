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
//! too large, authorisation failure, invalid topic) are never retried: the event is
//! written to `dead-letter.jsonl` beside the outbox with its error, counted, and logged
//! as an error, so an operator sees it, and delivery continues with the next event.

#![forbid(unsafe_code)]

pub mod compacted;
pub mod fleet;
pub mod kafka;
pub mod outbox;

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
    /// Will never succeed (too large, not authorised, invalid topic): dead-letter it.
    Fatal(String),
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
#[derive(Debug)]
pub struct JsonlSink {
    path: PathBuf,
    file: Arc<Mutex<std::fs::File>>,
}

impl JsonlSink {
    /// Opens (appending to) the event log.
    pub fn open(path: &Path) -> std::io::Result<JsonlSink> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(JsonlSink {
            path: path.to_owned(),
            file: Arc::new(Mutex::new(file)),
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
        let file = self.file.clone();
        let written = tokio::task::spawn_blocking(move || {
            let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
            file.write_all(&buf).and_then(|()| file.sync_data())
        })
        .await;
        let error = match written {
            Ok(Ok(())) => return records.iter().map(|_| Ok(())).collect(),
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
                    "Seconds from segment arrival to the sink's acknowledgement of the escalation.",
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
        };
        registry.register(Box::new(m.decision_to_ack.clone()))?;
        registry.register(Box::new(m.end_to_end.clone()))?;
        registry.register(Box::new(m.delivered.clone()))?;
        registry.register(Box::new(m.dead_lettered.clone()))?;
        registry.register(Box::new(m.errors.clone()))?;
        registry.register(Box::new(m.outbox_depth.clone()))?;
        registry.register(Box::new(m.outbox_full.clone()))?;
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
            }),
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
                if matches!(e, OutboxError::Full { .. }) {
                    self.inner.metrics.outbox_full.inc();
                    tracing::error!(error = %e, "ALARM: escalation outbox full; event refused");
                }
                return Err(e);
            }
        };
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
    /// retryable errors with capped exponential backoff (100 ms to 10 s).
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
            let mut dead = Vec::new();
            for (record, result) in records.iter().zip(&results) {
                match result {
                    Ok(()) => {
                        self.inner.metrics.delivered.inc();
                        done = Some(record.seq);
                    }
                    Err(DeliveryError::Fatal(why)) => {
                        self.inner
                            .metrics
                            .errors
                            .with_label_values(&["fatal"])
                            .inc();
                        dead.push((record, why.as_str()));
                        done = Some(record.seq);
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
            // Dead letters are on disk before their events are acknowledged.
            self.dead_letter(&dead).await;
            if let Some(seq) = done {
                self.ack(seq).await;
            }
            match retry {
                Some(why) => {
                    tracing::warn!(error = %why, backoff_ms = backoff.as_millis() as u64, "delivery failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = &mut shutdown => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
                None => backoff = Duration::from_millis(100),
            }
        }
    }

    async fn ack(&self, seq: u64) {
        let inner = self.inner.clone();
        let result = tokio::task::spawn_blocking(move || inner.outbox.ack(seq))
            .await
            .expect("ack task");
        self.publish_depth();
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
    /// thread.
    async fn dead_letter(&self, dead: &[(&Record, &str)]) {
        if dead.is_empty() {
            return;
        }
        let mut lines = String::new();
        for (record, why) in dead {
            self.inner.metrics.dead_lettered.inc();
            tracing::error!(seq = record.seq, key = %record.key, error = %why, "ALARM: escalation event failed fatally; dead-lettered");
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
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut f| f.write_all(lines.as_bytes()).and_then(|()| f.sync_data()))
        })
        .await;
        let error = match written {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        tracing::error!(error, path = %self.inner.dead_letter.display(), "could not write the dead-letter file");
    }
}
